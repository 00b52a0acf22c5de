//! XMPP publish-subscribe (XEP-0060).
//!
//! Every counted vote is written to the outbox in the store by the Station
//! (after the tap is durable, never before it is acknowledged). This task
//! drains the outbox in order: it publishes each item to
//! `<node_prefix><poll id>` on the pubsub service with the ikPoll payload
//! ([`payload`]), under the deterministic item id `<station>-<seq>` (so a
//! republish after a crash overwrites instead of duplicating), creates the
//! node when the server answers item-not-found, and deletes the row once the
//! server has acknowledged it. Up to [`WINDOW`] publishes are in flight.
//!
//! It logs in with SASL over STARTTLS with certificate verification (plain
//! TCP only when `tls = "none"`, for loopback), wraps every IQ in a timeout,
//! pings the server (XEP-0199), and reconnects with capped back-off. While
//! NetworkManager says offline it does not try: votes wait in the outbox.
//! It also subscribes to the configured nodes and hands their vote items to
//! the Station as remote results.
//!
//! tokio-xmpp stays inside this module (its API changes between versions):
//! the rest of the station sees [`run`], the [`outbox::Encoder`] `app`
//! hands the Station, and Station commands.

pub mod herd;
pub mod outbox;
pub mod payload;
mod requests;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse, Stanza};

use crate::config::{XmppConfig, XmppTls};
use crate::domain::backoff::Backoff;
use crate::station::{Command, NetState, OutboxItem, StationHandle, XmppState};
use crate::sys::secret::{SecretError, SecretSource};
use requests::{Affiliation, IqError, affiliate, create_node, publish, remote_results, subscribe};

/// Publishes in flight at once: tokio-xmpp's stanza queue is 16 deep; with
/// 64 in flight its client stalled for the 10 s IQ timeout again and again
/// (36 votes/s); 8 gave 218/s, 16 gives ~660/s (`cargo bench --bench xmpp`).
pub const WINDOW: usize = 16;
/// An IQ not answered in this time fails the session (and is retried).
const IQ_TIMEOUT: Duration = Duration::from_secs(10);
/// XEP-0199 ping interval. tokio-xmpp reconnects by itself without telling
/// (only a fresh `Online` shows it); an unanswered ping or IQ is how a dead
/// link is noticed when nothing is being published.
const PING_EVERY: Duration = Duration::from_secs(15);
/// First and longest wait between two connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Giving up on one login attempt.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused subscription (the other station has not published yet, so its
/// node does not exist) is tried again after this, doubling up to 60 s.
const RESUBSCRIBE_FIRST: Duration = Duration::from_secs(2);

/// The password: `password_file`, else the systemd credential (either
/// refused when other users may read it).
fn password(cfg: &XmppConfig) -> Result<String, SecretError> {
    SecretSource {
        what: "XMPP password",
        setting: "[xmpp] password_file",
        credential: "pollstation-xmpp-password",
        file: cfg.password_file.as_deref(),
    }
    .read()
}

/// Why a client could not be made from the config.
#[derive(Debug, thiserror::Error)]
#[error("[xmpp] server {0:?} is not host:port")]
struct BadServer(String);

fn client(cfg: &XmppConfig, jid: &BareJid, password: &str) -> Result<Client, BadServer> {
    let dns = match &cfg.server {
        Some(s) => {
            let (host, port) = s
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| BadServer(s.clone()))?;
            DnsConfig::no_srv(host, port)
        }
        None => DnsConfig::srv_default_client(jid.domain().as_str()),
    };
    let timeouts = Timeouts::default();
    Ok(match cfg.tls {
        XmppTls::Required => Client::new_starttls(jid.clone(), password, dns, timeouts),
        XmppTls::None => Client::new_plaintext(jid.clone(), password, dns, timeouts),
    })
}

/// Tells the Station how the link is.
struct Reporter {
    station: StationHandle,
    last: Option<(XmppState, String)>,
}

impl Reporter {
    async fn set(&mut self, state: XmppState, detail: impl Into<String>) {
        let detail = detail.into();
        if self
            .last
            .as_ref()
            .is_some_and(|(s, d)| *s == state && *d == detail)
        {
            return;
        }
        if self.last.as_ref().is_none_or(|(s, _)| *s != state) {
            tracing::info!(state = ?state, detail, "xmpp");
        }
        self.last = Some((state, detail.clone()));
        let _ = self
            .station
            .sender()
            .send(Command::Xmpp { state, detail })
            .await;
    }
}

/// How a session ended.
enum Ended {
    Shutdown,
    /// NetworkManager says offline: wait for it, no back-off.
    Offline,
    Failed(String),
}

/// Publish and listen for as long as the station runs. `publishers`: the
/// other accounts (JIDs) that may publish to the vote nodes this station
/// creates (the herd's other stations).
pub async fn run(
    cfg: XmppConfig,
    publishers: Vec<String>,
    station: StationHandle,
    shutdown: CancellationToken,
) {
    // Exactly one rustls provider is compiled in; make it the default.
    let _ = tokio_xmpp::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut reporter = Reporter {
        station: station.clone(),
        last: None,
    };
    let jid: BareJid = match cfg.jid.parse() {
        Ok(j) => j,
        Err(e) => {
            reporter
                .set(XmppState::Error, format!("jid {:?}: {e}", cfg.jid))
                .await;
            return;
        }
    };
    let password = match password(&cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("xmpp: {e}");
            reporter.set(XmppState::Error, e.to_string()).await;
            return;
        }
    };
    let publishers: Vec<BareJid> = publishers
        .iter()
        .filter_map(|j| match j.parse() {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(
                    jid = j,
                    "xmpp: not a JID ({e}); it may not publish votes here"
                );
                None
            }
        })
        .collect();
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        if !wait_for_network(&station, &mut reporter, &shutdown).await {
            return;
        }
        reporter
            .set(XmppState::Connecting, format!("logging in as {jid}"))
            .await;
        let c = match client(&cfg, &jid, &password) {
            Ok(c) => c,
            Err(e) => {
                reporter.set(XmppState::Error, e.to_string()).await;
                return;
            }
        };
        let ended = session(
            c,
            &cfg,
            &publishers,
            &station,
            &mut reporter,
            &mut backoff,
            &shutdown,
        )
        .await;
        match ended {
            Ended::Shutdown => return,
            Ended::Offline => {}
            Ended::Failed(e) => {
                let depth = station.snapshot().xmpp.outbox;
                let wait = backoff.fail();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis(), queued = depth, "xmpp: session ended");
                reporter
                    .set(
                        XmppState::Error,
                        format!("{e}; retrying in {} s, {depth} queued", wait.as_secs()),
                    )
                    .await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Wait while NetworkManager says offline. False on shutdown.
async fn wait_for_network(
    station: &StationHandle,
    reporter: &mut Reporter,
    shutdown: &CancellationToken,
) -> bool {
    let mut watch = station.watch();
    loop {
        let (offline, depth) = {
            let s = watch.borrow_and_update();
            (s.network.state == NetState::Offline, s.xmpp.outbox)
        };
        if !offline {
            return true;
        }
        reporter
            .set(
                XmppState::Waiting,
                format!("network offline; {depth} queued"),
            )
            .await;
        tokio::select! {
            () = shutdown.cancelled() => return false,
            r = watch.changed() => if r.is_err() { return false },
        }
    }
}

/// Make the vote node `node` (if it is not there) and, if this station owns
/// it, make the herd's other stations its publishers. A service that does
/// not let this account create nodes, or a node owned by another station,
/// is not an error here: publishing says what is wrong, if anything.
async fn share_vote_node(
    sender: &tokio_xmpp::ClientSender,
    service: &Jid,
    node: &str,
    max_items: u32,
    publishers: &[BareJid],
) -> Result<(), IqError> {
    match create_node(sender, service, node, max_items, Vec::new()).await {
        Ok(_) => {}
        Err(e @ IqError::CreateRefused { .. }) => {
            tracing::debug!(node, "xmpp: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    match affiliate(sender, service, node, publishers, Affiliation::Publisher).await {
        Ok(()) => {
            tracing::info!(
                node,
                publishers = publishers.len(),
                "xmpp: the herd's stations may publish votes here"
            );
            Ok(())
        }
        Err(e @ IqError::Refused { .. }) => {
            tracing::debug!(node, "xmpp: {e} (another station owns it)");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

type Publishing =
    std::pin::Pin<Box<dyn Future<Output = (OutboxItem, Result<IqResponse, IqError>)> + Send>>;

async fn session(
    client: Client,
    cfg: &XmppConfig,
    publishers: &[BareJid],
    station: &StationHandle,
    reporter: &mut Reporter,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Ended {
    let (sender, mut events) = client.split();
    let bound = match login(&mut events, shutdown).await {
        Ok(j) => j,
        Err(e) => return e,
    };
    backoff.reset();
    let service: Jid = match cfg.pubsub.parse() {
        Ok(j) => j,
        Err(e) => return Ended::Failed(format!("pubsub service {:?}: {e}", cfg.pubsub)),
    };
    // Listen to the configured nodes; the refused ones are tried again.
    let mut unsubscribed: Vec<&(String, String)> = Vec::new();
    for sub in &cfg.subscribe {
        match subscribe(&sender, &bound, sub).await {
            Ok(true) => {}
            Ok(false) => unsubscribed.push(sub),
            Err(e) => return Ended::Failed(e.to_string()),
        }
    }
    // A herd shares the vote nodes: each exists before anyone publishes
    // (ejabberd would make it on the first publish, with only that station
    // as publisher), and the one who owns it lets the others publish.
    if !publishers.is_empty() {
        let nodes: Vec<String> = station
            .snapshot()
            .polls
            .iter()
            .map(|p| format!("{}{}", cfg.node_prefix, p.def.id))
            .collect();
        for node in nodes {
            if let Err(e) =
                share_vote_node(&sender, &service, &node, cfg.max_items, publishers).await
            {
                return Ended::Failed(e.to_string());
            }
        }
    }
    let online = |unsubscribed: usize| {
        let mut s = format!("logged in as {bound}, publishing to {service}");
        if !cfg.subscribe.is_empty() {
            let n = cfg.subscribe.len();
            s.push_str(&format!("; listening to {} of {n} nodes", n - unsubscribed));
        }
        s
    };
    reporter
        .set(XmppState::Online, online(unsubscribed.len()))
        .await;
    let mut resubscribe_every = RESUBSCRIBE_FIRST;
    let mut resubscribe =
        tokio::time::interval_at(Instant::now() + resubscribe_every, resubscribe_every);

    let mut watch = station.watch();
    let mut inflight: FuturesOrdered<Publishing> = FuturesOrdered::new();
    // Highest outbox row id handed to the server in this session.
    let mut sent_through = 0i64;
    // Rows sent and not yet acknowledged.
    let mut unacked: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    let mut done: Vec<i64> = Vec::new();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut more = true; // the outbox may hold rows not sent yet
    let own_source = format!("pollstation:{}", station.snapshot().station);
    let ended = loop {
        let mut stalled = None;
        if more && inflight.len() < WINDOW / 2 {
            match station
                .outbox_peek(sent_through, WINDOW - inflight.len())
                .await
            {
                Err(e) => break Ended::Failed(format!("cannot read the outbox: {e}")),
                Ok(items) => {
                    more = items.len() == WINDOW - inflight.len();
                    for item in items {
                        tracing::debug!(row = item.id, node = %item.node, item = %item.item_id, "xmpp: publishing");
                        sent_through = item.id;
                        let id = item.id;
                        match publish(&sender, &service, item).await {
                            Ok(f) => {
                                unacked.insert(id);
                                inflight.push_back(f);
                            }
                            Err(e @ IqError::Stalled) => {
                                stalled = Some(e.to_string());
                                break;
                            }
                            Err(e) => {
                                // Cannot happen with rows the Station wrote;
                                // a corrupt row must not block the rest.
                                tracing::error!("{e}; dropping it from the outbox");
                                done.push(id);
                            }
                        }
                    }
                }
            }
        }
        if let Some(e) = stalled {
            break Ended::Failed(e);
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            r = watch.changed() => {
                if r.is_err() {
                    break Ended::Shutdown;
                }
                let s = watch.borrow_and_update();
                if s.network.state == NetState::Offline {
                    break Ended::Offline;
                }
                // New rows are enqueued as the outbox grows.
                more = true;
            }
            Some((item, result)) = inflight.next(), if !inflight.is_empty() => {
                tracing::debug!(row = item.id, ok = result.is_ok(), "xmpp: publish answered");
                match result {
                    Ok(IqResponse::Result(_)) => {
                        unacked.remove(&item.id);
                        done.push(item.id);
                    }
                    Ok(IqResponse::Error(e)) if e.defined_condition == DefinedCondition::ItemNotFound => {
                        tracing::info!(node = %item.node, "xmpp: node does not exist; creating it");
                        let made = match create_node(&sender, &service, &item.node, cfg.max_items, Vec::new()).await {
                            Ok(made) => made,
                            Err(e) => break Ended::Failed(e.to_string()),
                        };
                        // The herd's other stations publish their votes here too.
                        if made && let Err(e) = affiliate(&sender, &service, &item.node, publishers, Affiliation::Publisher).await {
                            break Ended::Failed(e.to_string());
                        }
                        // Publish this one again; later items of the same
                        // node fail the same way and follow it, in order.
                        match publish(&sender, &service, item).await {
                            Ok(f) => inflight.push_back(f),
                            Err(e) => break Ended::Failed(e.to_string()),
                        }
                    }
                    Ok(IqResponse::Error(e)) => {
                        break Ended::Failed(format!(
                            "publishing to {} refused: {:?} {}",
                            item.node,
                            e.defined_condition,
                            e.texts.values().next().map_or("", String::as_str)
                        ));
                    }
                    Err(e) => break Ended::Failed(e.to_string()),
                }
                if inflight.is_empty() || done.len() >= WINDOW {
                    flush(station, &mut done).await;
                }
            }
            ev = events.next() => match ev {
                None => break Ended::Failed("the client stopped".into()),
                Some(Event::Disconnected(e)) => break Ended::Failed(format!("connection lost: {e}")),
                Some(Event::Online { bound_jid, .. }) => {
                    // tokio-xmpp reconnected on its own: what was in flight
                    // may be lost; publish it again (same item ids).
                    tracing::info!(jid = %bound_jid, "xmpp: the connection was re-established");
                    inflight = FuturesOrdered::new();
                    if let Some(first) = unacked.first() {
                        sent_through = first - 1;
                    }
                    unacked.clear();
                    more = true;
                }
                Some(Event::Stanza(Stanza::Message(m))) => {
                    for r in remote_results(&m, &own_source) {
                        let _ = station.sender().send(Command::Remote(r)).await;
                    }
                }
                Some(Event::Stanza(_)) => {}
            },
            _ = resubscribe.tick(), if !unsubscribed.is_empty() => {
                let mut still = Vec::new();
                for &sub in &unsubscribed {
                    match subscribe(&sender, &bound, sub).await {
                        Ok(true) => {}
                        Ok(false) => still.push(sub),
                        Err(e) => return Ended::Failed(e.to_string()),
                    }
                }
                if still.len() < unsubscribed.len() {
                    reporter.set(XmppState::Online, online(still.len())).await;
                }
                unsubscribed = still;
                resubscribe_every = (resubscribe_every * 2).min(MAX_BACKOFF);
                resubscribe = tokio::time::interval_at(Instant::now() + resubscribe_every, resubscribe_every);
            }
            _ = ping.tick() => {
                let token = sender
                    .send_iq(Some(Jid::from(bound.domain().to_owned())), IqRequest::Get(Ping.into()))
                    .await;
                match tokio::time::timeout(IQ_TIMEOUT, token).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Ended::Failed(format!("ping failed: {e:?}")),
                    Err(_) => break Ended::Failed("the server did not answer a ping".into()),
                }
            }
        }
    };
    flush(station, &mut done).await;
    // Not answered yet: stays in the outbox, published again next session.
    drop(inflight);
    let client = Client::reunite(sender, events);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.send_end()).await;
    ended
}

/// Wait (bounded) for the session to come up: the JID it is bound to.
async fn login(
    events: &mut tokio_xmpp::ClientReceiver,
    shutdown: &CancellationToken,
) -> Result<Jid, Ended> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return Err(Ended::Shutdown),
            ev = tokio::time::timeout_at(deadline, events.next()) => ev,
        };
        match ev {
            Err(_) => return Err(Ended::Failed(
                "no session within 10 s (server down, wrong password or certificate refused? see the log)"
                    .into(),
            )),
            Ok(None) => return Err(Ended::Failed("the client stopped".into())),
            Ok(Some(Event::Online { bound_jid, .. })) => return Ok(bound_jid),
            Ok(Some(Event::Disconnected(e))) => {
                return Err(Ended::Failed(format!("cannot log in: {e}")));
            }
            Ok(Some(Event::Stanza(_))) => {}
        }
    }
}

async fn flush(station: &StationHandle, done: &mut Vec<i64>) {
    if done.is_empty() {
        return;
    }
    let _ = station
        .sender()
        .send(Command::Published(std::mem::take(done)))
        .await;
}
