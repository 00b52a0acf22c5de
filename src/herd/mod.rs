//! The herd over direct links: TCP with mutual TLS from the herd CA
//! ([`tls`]), length-delimited postcard frames ([`wire`]), one link per
//! pair of stations ([`link`]). This station listens on `[herd] listen`
//! and dials each of `[herd] peers`, redialling with capped back-off; when
//! two stations dial each other, the link the lower id dialled is kept.
//! Every refusal (no certificate, another CA, a name that is not the claimed
//! id, other polls, another herd) is logged with the address and reason,
//! counted, and reported to the Station for `/api/v1/herd` — on both sides,
//! as far as the other side can tell.
//!
//! `pollstation herd init` makes the CA and the certificates ([`init`]).
//!
//! Invariants: nothing a refused peer sent is stored; a link only ever
//! hands the Station events, it never writes the log itself.

pub mod init;
pub mod link;
pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::HerdConfig;
use crate::domain::backoff::Backoff;
use crate::station::{Command, HerdReport, LinkState, PeerView, RefusedPeer, StationHandle};
use crate::sys::clock::now_ms;
use link::{LinkError, Me, Peer};
use tls::HerdTls;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A redial is one SYN; a healed network is used within a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a TCP connect and a TLS handshake may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// A failed TLS handshake, said for an operator.
fn tls_reason(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "TLS: the peer refused the handshake ({alert:?}): it does not trust this herd's CA, or this station's certificate"
        ),
        Some(rustls::Error::NoCertificatesPresented) => {
            "TLS: peer sent no certificates (every member needs one from the herd CA)".to_string()
        }
        Some(other) => format!("TLS: {other}"),
        None => format!("TLS: {e}"),
    }
}

/// The links up, by peer station id: which station dialled each, and how
/// to stop it (one link per pair).
#[derive(Default)]
struct Registry(Mutex<HashMap<String, (String, u64, CancellationToken)>>);

impl Registry {
    /// Register a link to `peer` dialled by `dialer`. Another link to the
    /// same peer is kept if the lower station id dialled it, else replaced.
    fn register(
        &self,
        me: &str,
        peer: &str,
        dialer: &str,
        id: u64,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut links = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let preferred = me.min(peer);
        if let Some((other_dialer, _, other_stop)) = links.get(peer) {
            if other_dialer == preferred || dialer != preferred {
                return Err(format!(
                    "a link with {peer} is up already (the one {other_dialer} dialled is kept)"
                ));
            }
            other_stop.cancel();
        }
        links.insert(peer.to_string(), (dialer.to_string(), id, stop.clone()));
        Ok(())
    }

    fn unregister(&self, peer: &str, id: u64) {
        let mut links = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if links.get(peer).is_some_and(|(_, i, _)| *i == id) {
            links.remove(peer);
        }
    }

    fn is_up(&self, peer: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(peer)
    }
}

struct Herd {
    station: StationHandle,
    me: Me,
    tls: HerdTls,
    max_skew_ms: i64,
    links: Registry,
    next_id: std::sync::atomic::AtomicU64,
    metrics: Arc<crate::station::metrics::Metrics>,
}

impl Herd {
    async fn report(&self, r: HerdReport) {
        let _ = self.station.sender().send(Command::HerdStatus(r)).await;
    }

    async fn down(
        &self,
        address: &str,
        station: Option<String>,
        state: LinkState,
        error: Option<String>,
    ) {
        self.report(HerdReport::Peer {
            view: PeerView {
                address: address.to_string(),
                station,
                state,
                since: now_ms(),
                rtt_ms: None,
                clock_offset_ms: None,
                skewed: false,
                error,
                sent: 0,
                received: 0,
                we_lack: 0,
                it_lacks: 0,
            },
            heads: None,
        })
        .await;
    }

    async fn refused(&self, address: &str, reason: String) {
        tracing::warn!(peer = %address, reason, "herd: link refused");
        self.metrics.herd_refused.inc();
        self.report(HerdReport::Refused(RefusedPeer {
            address: address.to_string(),
            reason,
            at: now_ms(),
        }))
        .await;
    }

    /// Hellos, registration, then the link until it ends. `dialer`: the
    /// station that opened the connection. Returns the peer's id once known.
    async fn link<S>(
        &self,
        stream: S,
        address: &str,
        cert_names: Vec<String>,
        dialer: Option<&str>,
        stop: &CancellationToken,
    ) -> (Option<String>, LinkError)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let heads = self.station.heads().borrow().clone();
        let (theirs, rd, wr) = match link::hello(stream, &self.me, &heads, &cert_names).await {
            Ok(h) => h,
            Err(e) => {
                if matches!(e, LinkError::Refused(_) | LinkError::RefusedByPeer(_)) {
                    self.refused(address, e.to_string()).await;
                }
                return (None, e);
            }
        };
        let peer_id = theirs.station.clone();
        let dialer = dialer.map_or_else(|| peer_id.clone(), str::to_string);
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stop = stop.child_token();
        if let Err(e) = self
            .links
            .register(&self.me.station, &peer_id, &dialer, id, &stop)
        {
            tracing::info!(peer = %peer_id, address, "herd: {e}");
            return (Some(peer_id), LinkError::Refused(e));
        }
        tracing::info!(peer = %peer_id, address, "herd: link up");
        self.metrics.herd_links_up.inc();
        let peer = Peer {
            address: address.to_string(),
            station: peer_id.clone(),
            since: now_ms(),
        };
        let ended = link::run(
            self.station.clone(),
            peer,
            theirs,
            (rd, wr),
            self.max_skew_ms,
            stop,
        )
        .await;
        self.links.unregister(&peer_id, id);
        self.metrics.herd_links_up.dec();
        tracing::info!(peer = %peer_id, address, error = %ended, "herd: link down");
        (Some(peer_id), ended)
    }

    /// Dial `address` for as long as the station runs.
    async fn dial(self: Arc<Self>, address: String, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut known: Option<String> = None;
        loop {
            // The peer dialled us and that link is kept: wait for it to end.
            if let Some(p) = &known
                && self.links.is_up(p)
            {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff.fail()) => {}
                }
                continue;
            }
            self.down(&address, known.clone(), LinkState::Connecting, None)
                .await;
            let (peer, error) = match self.connect(&address).await {
                Err(e) => (None, e),
                Ok((stream, names)) => {
                    backoff.reset();
                    let (peer, e) = self
                        .link(stream, &address, names, Some(&self.me.station), &shutdown)
                        .await;
                    (peer, e.to_string())
                }
            };
            if peer.is_some() {
                known = peer;
            }
            if shutdown.is_cancelled() {
                return;
            }
            self.down(&address, known.clone(), LinkState::Down, Some(error))
                .await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.fail()) => {}
            }
        }
    }

    async fn connect(
        &self,
        address: &str,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<String>), String> {
        let tcp = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(address))
            .await
            .map_err(|_| format!("no answer from {address} in {} s", CONNECT_WITHIN.as_secs()))?
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.tls.client.clone());
        let name = rustls::pki_types::ServerName::try_from("pollstation-herd")
            .expect("a constant DNS name");
        let tls = match tokio::time::timeout(CONNECT_WITHIN, connector.connect(name, tcp)).await {
            Err(_) => return Err("the TLS handshake did not finish in time".into()),
            Ok(Err(e)) => {
                let reason = tls_reason(&e);
                self.refused(address, reason.clone()).await;
                return Err(reason);
            }
            Ok(Ok(t)) => t,
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(tls::names)
            .unwrap_or_default();
        Ok((tls, names))
    }

    /// Take peers' connections for as long as the station runs.
    async fn listen(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.server.clone());
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            let (tcp, from) = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => { backoff.reset(); a }
                    Err(e) => {
                        tracing::warn!(error = %e, "herd: cannot accept a connection");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff.fail()) => {}
                        }
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let herd = self.clone();
            let acceptor = acceptor.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                herd.incoming(acceptor, tcp, from, shutdown).await;
            });
        }
    }

    async fn incoming(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
        from: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let address = from.to_string();
        let tls = match tokio::time::timeout(CONNECT_WITHIN, acceptor.accept(tcp)).await {
            Err(_) => {
                self.refused(&address, "no TLS handshake in time".into())
                    .await;
                return;
            }
            Ok(Err(e)) => {
                self.refused(&address, tls_reason(&e)).await;
                return;
            }
            Ok(Ok(t)) => t,
        };
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(tls::names)
            .unwrap_or_default();
        let (peer, e) = self.link(tls, &address, names, None, &shutdown).await;
        if peer.is_some() {
            self.report(HerdReport::Gone { address }).await;
        }
        tracing::debug!(error = %e, "herd: incoming link ended");
    }
}

/// Run the herd's links for as long as the station runs.
pub async fn run(cfg: HerdConfig, me: Me, station: StationHandle, shutdown: CancellationToken) {
    let tls = match HerdTls::load(&cfg, &me.station) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("herd: {e}");
            let herd_address = cfg
                .listen
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            let _ = station
                .sender()
                .send(Command::HerdStatus(HerdReport::Refused(RefusedPeer {
                    address: herd_address,
                    reason: format!("this station cannot join: {e}"),
                    at: now_ms(),
                })))
                .await;
            return;
        }
    };
    let herd = Arc::new(Herd {
        metrics: station.metrics().clone(),
        station,
        me,
        tls,
        max_skew_ms: i64::try_from(cfg.max_skew.as_millis()).unwrap_or(i64::MAX),
        links: Registry::default(),
        next_id: std::sync::atomic::AtomicU64::new(1),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.listen {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(listen = %addr, "herd: listening for peers");
                tasks.spawn(herd.clone().listen(l, shutdown.clone()));
            }
            Err(e) => tracing::error!(listen = %addr, error = %e, "herd: cannot listen for peers"),
        }
    }
    for p in cfg.peers {
        tasks.spawn(herd.clone().dial(p, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_link_per_pair_the_lower_id_dialled() {
        let r = Registry::default();
        let stop = CancellationToken::new();
        // b dialled a: kept for now.
        assert!(r.register("a", "b", "b", 1, &stop).is_ok());
        // a dials b: the lower id's link replaces it (and stops the other).
        let stop2 = CancellationToken::new();
        assert!(r.register("a", "b", "a", 2, &stop2).is_ok());
        assert!(stop.is_cancelled());
        // b dials again: refused, a's is kept.
        assert!(
            r.register("a", "b", "b", 3, &CancellationToken::new())
                .is_err()
        );
        r.unregister("b", 3);
        assert!(r.is_up("b"), "only the registered link unregisters");
        r.unregister("b", 2);
        assert!(!r.is_up("b"));
    }
}
