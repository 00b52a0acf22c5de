//! HTTP serving: one listener, three sides.
//!
//! Every connection is accepted on the main runtime, beside the Station and
//! the readers, and must first get a place from the [`Gate`] (the global and
//! per-address caps; refused ones get a 503 and are closed). The first bytes
//! of its first request decide where it is served:
//! - `POST /api/v1/taps` stays on the main runtime, with the intake's
//!   priority (nice −20): a tap posted by a reader goes first; so do the
//!   first few plain event streams (the projector, the screens): the
//!   Station's events wake them on its own thread;
//! - once a crowd of event streams is open (see
//!   [`DIRECT_STREAMS`](super::sse::DIRECT_STREAMS)), a new `GET /api/v1/events`
//!   goes to the *fan-out* runtime, whose threads run only when no other
//!   thread wants the CPU (`SCHED_IDLE`): ten thousand browsers watching
//!   the results cost the fan-out threads, and a tap arriving meanwhile does
//!   not queue behind their writes;
//! - everything else (pages, the public API, the admin side) goes to the
//!   *public* runtime, at normal priority: a LAN flooding `/metrics` competes
//!   with sshd and the compositor, not above them.
//!
//! Each side serves with the same router and the same deadlines
//! ([`conn::serve`](super::conn::serve)), but for a plain `GET
//! /api/v1/events` (whole head read, no body): its response never ends, so
//! it is written on the connection itself ([`sse::serve_raw`]), without
//! hyper's buffers. Accept errors (out of file descriptors) back off and
//! are logged once per run of failures.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{self, Guarded, MAX_HEAD};
use super::gate::{Gate, Refused};
use super::{AppState, sse};
use crate::config::HttpLimits;
use crate::domain::backoff::Backoff;

/// How long a new connection has at most to send the start of its request
/// line (or the header deadline, if shorter) before it is handed to the
/// public side as it is; that side's header deadline then starts, so a head
/// takes at most twice the deadline.
const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(5);
const ACCEPT_FIRST_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_MAX_BACKOFF: Duration = Duration::from_secs(2);

const EVENTS_REQUEST: &[u8] = b"GET /api/v1/events";
const TAPS_REQUEST: &[u8] = b"POST /api/v1/taps";

/// The runtimes HTTP is served on besides the main one. Dropping them stops
/// their threads without blocking (they may be dropped inside the main
/// runtime).
pub struct Sides {
    fanout: Option<Runtime>,
    public: Option<Runtime>,
}

impl Sides {
    /// Start the fan-out runtime's two threads at the lowest priority
    /// ([`crate::sys::priority::idle_this_thread`]) and the public one's two
    /// at normal priority ([`crate::sys::priority::normal_this_thread`]).
    ///
    /// # Errors
    /// When the threads cannot be started.
    pub fn start() -> io::Result<Self> {
        let fanout = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fanout")
            .on_thread_start(crate::sys::priority::idle_this_thread)
            .enable_all()
            .build()?;
        let public = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http")
            .on_thread_start(crate::sys::priority::normal_this_thread)
            .enable_all()
            .build()?;
        Ok(Self {
            fanout: Some(fanout),
            public: Some(public),
        })
    }

    /// The fan-out runtime (event streams of a crowd, the SSE hub).
    #[must_use]
    pub fn fanout(&self) -> Handle {
        handle(self.fanout.as_ref())
    }

    /// The public runtime (every request but taps and crowd streams; the
    /// herd links run here too).
    #[must_use]
    pub fn public(&self) -> Handle {
        handle(self.public.as_ref())
    }
}

fn handle(rt: Option<&Runtime>) -> Handle {
    rt.map_or_else(Handle::current, |rt| rt.handle().clone())
}

impl Drop for Sides {
    fn drop(&mut self) {
        for rt in [self.fanout.take(), self.public.take()]
            .into_iter()
            .flatten()
        {
            rt.shutdown_background();
        }
    }
}

/// Where a connection is served, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Intake,
    Stream,
    Public,
}

/// Serve `app` (on `state`) on `listener` until `shutdown`, with `limits`
/// and at most `max_connections` open; a new event stream goes to the
/// fan-out side once a crowd of them is open ([`sse::crowd`]). Returns the server task, which ends once every
/// connection has.
pub fn serve(
    listener: TcpListener,
    app: Router,
    state: AppState,
    sides: &Sides,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let gate = Gate::new(limits.max_connections, limits.max_per_address);
    let (fanout, public) = (sides.fanout(), sides.public());
    let tracker = TaskTracker::new();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(ACCEPT_FIRST_BACKOFF, ACCEPT_MAX_BACKOFF);
        let mut failures = 0u64;
        let mut refused = Refusals::default();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => {
                        if failures > 0 {
                            tracing::info!(failures, "HTTP: accepting connections again");
                            failures = 0;
                        }
                        backoff.reset();
                        a
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, and say
                        // so once per run of failures.
                        if failures == 0 {
                            tracing::warn!(error = %e, "HTTP: cannot accept a connection; retrying with back-off");
                        }
                        failures += 1;
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff.fail()) => {}
                        }
                        continue;
                    }
                },
            };
            let permit = match gate.admit(peer.ip()) {
                Ok(p) => p,
                Err(why) => {
                    refused.note(why, peer);
                    // Best effort, without waiting: the client learns why.
                    let _ = tcp.try_write(&refusal(why));
                    continue;
                }
            };
            // Small SSE writes must leave at once: without TCP_NODELAY, Nagle
            // holds a second event until the client ACKs the first (delayed
            // ACK: up to 40 ms).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let to_fanout = sse::crowd(&state.station);
            let (app, state, fanout, public, shutdown) = (
                app.clone(),
                state.clone(),
                fanout.clone(),
                public.clone(),
                shutdown.clone(),
            );
            let spawner = tracker.clone();
            tracker.spawn(async move {
                let mut tcp = tcp;
                let got = match first_bytes(&mut tcp, limits.header_timeout).await {
                    Ok((head, Side::Stream)) => whole_head(&mut tcp, head, limits.header_timeout)
                        .await
                        .map(|h| (h, Side::Stream)),
                    other => other,
                };
                let (head, side) = match got {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "connection lost before its request");
                        // The place first, then the socket (see `gate`).
                        drop(permit);
                        drop(tcp);
                        return;
                    }
                };
                let raw = (side == Side::Stream)
                    .then(|| plain_events_request(&head))
                    .flatten();
                let tcp = match tcp.into_std() {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "cannot hand a connection over");
                        return;
                    }
                };
                if side == Side::Stream {
                    bound_send_buffer(&tcp, peer);
                }
                let on = match side {
                    Side::Intake => Handle::current(),
                    Side::Stream if to_fanout => fanout,
                    // The first few plain streams (the projector, the
                    // screens) are written from the intake's own thread:
                    // the Station's events wake them there without a thread
                    // hand-off (0.209 → 0.173 cores at 1,000 taps/s, `cargo
                    // bench --bench intake`). Each write is non-blocking and
                    // a slow reader lags and resyncs, so none holds it up.
                    Side::Stream if raw.is_some() => Handle::current(),
                    Side::Stream | Side::Public => public,
                };
                spawner.spawn_on(
                    async move {
                        // Registers the socket with this runtime's reactor.
                        match TcpStream::from_std(tcp) {
                            Ok(tcp) => match raw {
                                Some(last_event_id) => {
                                    let io = Guarded::new(
                                        Bytes::new(),
                                        tcp,
                                        limits.idle_timeout,
                                        Some(permit),
                                    );
                                    sse::serve_raw(io, state, last_event_id.as_deref()).await;
                                }
                                None => {
                                    let io =
                                        Guarded::new(head, tcp, limits.idle_timeout, Some(permit));
                                    conn::serve(io, app, limits, shutdown).await;
                                }
                            },
                            Err(e) => {
                                tracing::debug!(error = %e, %peer, "cannot take over a connection");
                            }
                        }
                    },
                    &on,
                );
            });
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
    })
}

/// What the kernel buffers for an event stream's client at most (it
/// doubles the figure for its bookkeeping). Left to itself it grows a
/// socket's buffer up to `tcp_wmem`'s 4 MiB, so a browser that stopped
/// reading would hold megabytes of kernel memory and be sent every event
/// late instead of lagging: with this bound it lags within ~128 KiB and
/// gets a fresh snapshot when it reads again. That is still seconds of
/// events at a busy station's rate, for a client on Wi-Fi.
const STREAM_SEND_BUFFER: usize = 64 * 1024;

fn bound_send_buffer(tcp: &std::net::TcpStream, peer: SocketAddr) {
    if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(STREAM_SEND_BUFFER) {
        tracing::debug!(error = %e, %peer, "cannot bound an event stream's send buffer");
    }
}

/// Refusals, logged at most once a minute with how many there were.
#[derive(Default)]
struct Refusals {
    since_log: u64,
    logged: Option<tokio::time::Instant>,
}

impl Refusals {
    fn note(&mut self, why: Refused, peer: SocketAddr) {
        self.since_log += 1;
        let now = tokio::time::Instant::now();
        if self
            .logged
            .is_none_or(|t| now - t >= Duration::from_secs(60))
        {
            tracing::warn!(%peer, refused = self.since_log, "HTTP: connection refused: {why}");
            self.since_log = 0;
            self.logged = Some(now);
        }
    }
}

/// The 503 a refused connection gets, in the API's JSON error shape.
fn refusal(why: Refused) -> Vec<u8> {
    let body = serde_json::json!({
        "error": "too many connections",
        "detail": why.to_string(),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read the start of the first request (until its side is known), keeping
/// the bytes to replay them to the server.
async fn first_bytes(tcp: &mut TcpStream, within: Duration) -> io::Result<(Bytes, Side)> {
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within.min(FIRST_BYTES_WITHIN);
    let side = loop {
        if let Some(side) = side_of(&head) {
            break side;
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) => break Side::Public,
        }
    };
    Ok((Bytes::from(head), side))
}

/// Read on until `head` holds the request's whole head (or [`MAX_HEAD`]
/// bytes, or the deadline passes: then hyper answers what it got).
async fn whole_head(tcp: &mut TcpStream, head: Bytes, within: Duration) -> io::Result<Bytes> {
    let mut head = head.to_vec();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Bytes::from(head))
}

/// For a complete, plain `GET /api/v1/events` (HTTP/1.x, no body, nothing
/// after its head): its `Last-Event-ID`, if any. `None` for anything else
/// (hyper serves it).
fn plain_events_request(head: &[u8]) -> Option<Option<String>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let path = req.path?;
    if req.method? != "GET" || !(path == "/api/v1/events" || path.starts_with("/api/v1/events?")) {
        return None;
    }
    let mut last = None;
    for h in req.headers.iter() {
        let body = h.name.eq_ignore_ascii_case("content-length") && h.value != b"0"
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade");
        if body {
            return None;
        }
        if h.name.eq_ignore_ascii_case("last-event-id") {
            last = Some(std::str::from_utf8(h.value).ok()?.to_string());
        }
    }
    Some(last)
}

/// The side of a request starting with `head`, once it is known.
fn side_of(head: &[u8]) -> Option<Side> {
    let mut undecided = false;
    for (path, side) in [(EVENTS_REQUEST, Side::Stream), (TAPS_REQUEST, Side::Intake)] {
        if head.len() > path.len() {
            if head.starts_with(path) && matches!(head[path.len()], b' ' | b'?') {
                return Some(side);
            }
        } else if path.starts_with(head) {
            undecided = true;
        }
    }
    (!undecided).then_some(Side::Public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    async fn classify(parts: &[&[u8]]) -> (Side, Vec<u8>) {
        let (mut client, server) = pair().await;
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for p in parts {
                client.write_all(&p).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
        });
        let mut server = server;
        let (head, side) = first_bytes(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        let tcp = server.into_std().unwrap();
        writer.await.unwrap();
        let mut replay = Guarded::new(
            head,
            TcpStream::from_std(tcp).unwrap(),
            Duration::from_secs(60),
            None,
        );
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        (side, all)
    }

    #[tokio::test]
    async fn requests_are_told_apart_and_no_byte_is_lost() {
        let req = b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(classify(&[req]).await, (Side::Stream, req.to_vec()));
        // Split anywhere, with a query.
        let (s, all) = classify(&[b"GET /api/v", b"1/even", b"ts?x=1 HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(s, Side::Stream);
        assert_eq!(all, b"GET /api/v1/events?x=1 HTTP/1.1\r\n\r\n");
        let (s, all) = classify(&[b"PO", b"ST /api/v1/ta", b"ps HTTP/1.1\r\n\r\n{}"]).await;
        assert_eq!(s, Side::Intake);
        assert_eq!(all, b"POST /api/v1/taps HTTP/1.1\r\n\r\n{}");
        for req in [
            &b"GET /api/v1/eventsX HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /api/v1/taps HTTP/1.1\r\n\r\n",
            b"POST /api/v1/polls/p/open HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n\r\n",
        ] {
            let (s, all) = classify(&[req]).await;
            assert_eq!(s, Side::Public, "{}", String::from_utf8_lossy(req));
            assert_eq!(all, req);
        }
        // A client that closes after a few bytes: nothing to serve.
        let (mut client, server) = pair().await;
        client.write_all(b"GET /api").await.unwrap();
        client.shutdown().await.unwrap();
        let mut server = server;
        assert!(
            first_bytes(&mut server, Duration::from_secs(5))
                .await
                .is_err()
        );
    }

    #[test]
    fn a_refusal_is_a_json_503() {
        let r = String::from_utf8(refusal(Refused::PerAddress(3))).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["detail"],
            "this address holds its maximum of 3 connections"
        );
    }

    #[test]
    fn only_a_whole_plain_get_of_the_events_is_served_raw() {
        let plain = b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        assert_eq!(plain_events_request(plain), Some(None));
        let resumed = b"GET /api/v1/events?x=1 HTTP/1.1\r\nLast-Event-ID: hall-a:42\r\n\r\n";
        assert_eq!(
            plain_events_request(resumed),
            Some(Some("hall-a:42".to_string()))
        );
        for other in [
            // Not whole yet, or something after the head (pipelined).
            &b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /api/v1/events HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            // Another method or path, a body, an upgrade: hyper answers.
            b"HEAD /api/v1/events HTTP/1.1\r\n\r\n",
            b"GET /api/v1/eventsx HTTP/1.1\r\n\r\n",
            b"GET /api/v1/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"GET /api/v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /api/v1/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(
                plain_events_request(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
