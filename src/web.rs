//! HTTP: the results page, the JSON API, Server-Sent Events and the admin
//! endpoints (axum).
//!
//! A client of the Station like any other: reads come from the Station's
//! snapshot, changes from its broadcast, writes go through its handle. It
//! never touches the store except to stream an export. Errors are JSON
//! `{"error", "detail"}` and never carry internals; public responses never
//! carry tag UIDs.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::poll::TagUid;
use crate::station::{
    ActionError, BindError, Event, ReaderStatus, Snapshot, StationHandle, TapError, TapOutcome,
    TapRing,
};
use crate::store::{ActionKind, StoreError};

/// Largest request body accepted.
const BODY_LIMIT: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub station: StationHandle,
    pub admin_token: Arc<str>,
    /// Cancelled at shutdown: ends the event streams so the server can drain.
    pub shutdown: CancellationToken,
    pub hub: SseHub,
}

/// Build the router; tests call this directly.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route("/", get(index))
        .route("/operator", get(operator))
        .route("/assets/{name}", get(asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/station", get(station_info))
        .route("/api/v1/polls", get(polls))
        .route("/api/v1/polls/{poll}/tally", get(tally))
        .route("/api/v1/polls/{poll}/{action}", post(poll_action))
        .route("/api/v1/taps", get(export_taps).post(inject_tap))
        .route("/api/v1/readers", post(bind_reader))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ));
    // The event stream lives as long as the client wants: no request timeout.
    let streams = Router::new().route("/api/v1/events", get(events));
    api.merge(streams)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

// ---- errors ---------------------------------------------------------------

/// An error as clients see it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}

impl From<TapError> for ApiError {
    fn from(e: TapError) -> Self {
        let (status, error) = match &e {
            TapError::UnknownReader(_) => (StatusCode::NOT_FOUND, "unknown reader"),
            TapError::NoActivePoll | TapError::EmptySlot { .. } => {
                (StatusCode::CONFLICT, "no answer for this reader")
            }
            TapError::PollClosed(_) => (StatusCode::CONFLICT, "poll closed"),
            TapError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "not recorded"),
            TapError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let (status, error) = match &e {
            ActionError::UnknownPoll(_) => (StatusCode::NOT_FOUND, "unknown poll"),
            ActionError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "not recorded"),
            ActionError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

impl From<BindError> for ApiError {
    fn from(e: BindError) -> Self {
        let (status, error) = match &e {
            BindError::DuplicateId(_) | BindError::DeviceInUse(..) => {
                (StatusCode::CONFLICT, "already bound")
            }
            BindError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad binding"),
            BindError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "not recorded"),
            BindError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found", "no such endpoint")
}

// ---- admin ----------------------------------------------------------------

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs `Authorization: Bearer <admin token>`",
            ));
        };
        use subtle::ConstantTimeEq;
        if bool::from(given.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin token is wrong",
            ))
        }
    }
}

/// The admin token: a systemd credential, the configured file, or
/// `<data_dir>/admin-token` (created with mode 0600 on first start).
pub fn admin_token(data_dir: &Path, configured: Option<&Path>) -> anyhow::Result<String> {
    use anyhow::Context;
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("admin-token");
        if p.exists() {
            return read_token(&p);
        }
    }
    if let Some(p) = configured {
        return read_token(p);
    }
    let p = data_dir.join("admin-token");
    if p.exists() {
        return read_token(&p);
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    let token = hex::encode(bytes);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("cannot create the admin token file {}", p.display()))?;
        writeln!(f, "{token}").with_context(|| format!("cannot write {}", p.display()))?;
        f.sync_all()?;
    }
    tracing::info!(path = %p.display(), "created a new admin token");
    Ok(token)
}

fn read_token(p: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let t = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read the admin token {}", p.display()))?;
    let t = t.trim().to_string();
    anyhow::ensure!(
        t.len() >= 16,
        "the admin token in {} is shorter than 16 characters",
        p.display()
    );
    Ok(t)
}

// ---- public endpoints -----------------------------------------------------

/// Content-Security-Policy of our pages: everything from the station itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../ui/web/index.html"),
    )
}

async fn operator() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../ui/web/operator.html"),
    )
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match name.as_str() {
        "operator.js" => page(
            "text/javascript; charset=utf-8",
            include_str!("../ui/web/operator.js"),
        ),
        "app.js" => page(
            "text/javascript; charset=utf-8",
            include_str!("../ui/web/app.js"),
        ),
        "style.css" => page(
            "text/css; charset=utf-8",
            include_str!("../ui/web/style.css"),
        ),
        _ => not_found().await.into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.station.metrics().render(&s.station.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    let snap = s.station.snapshot();
    let connected = snap
        .readers
        .iter()
        .filter(|r| r.status == ReaderStatus::Connected)
        .count();
    let ok = snap.store.writable;
    let overview = crate::health::overview(&snap);
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "level": overview.level,
        "components": overview.components,
        "store": snap.store,
        "readers": { "connected": connected, "total": snap.readers.len() },
        "network": snap.network,
        "hotplug": snap.hotplug,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

fn station_json(snap: &Snapshot) -> serde_json::Value {
    json!({
        "id": snap.station,
        "started_at": snap.started_at,
        "active_poll": snap.active_poll,
        "readers": snap.readers,
        "network": snap.network,
        "hotplug": snap.hotplug,
        "xmpp": snap.xmpp,
        "remote": snap.remote,
        "identity": snap.identity,
        "store": snap.store,
        "health": crate::health::overview(snap),
    })
}

async fn station_info(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(station_json(&s.station.snapshot()))
}

async fn polls(State(s): State<AppState>) -> Response {
    Json(s.station.snapshot().polls.clone()).into_response()
}

async fn tally(State(s): State<AppState>, UrlPath(poll): UrlPath<String>) -> Response {
    match s.station.snapshot().tally(&poll) {
        Some(t) => Json(t.clone()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown poll",
            format!("no poll {poll:?} is configured"),
        )
        .into_response(),
    }
}

/// One SSE frame, encoded once however many clients get it.
fn sse_frame(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// The whole state as a burst of frames, for a new or lagging client.
fn resync_frames(snap: &Snapshot) -> Bytes {
    let mut out = sse_frame("status", &station_json(snap)).to_vec();
    for t in &snap.tallies {
        out.extend_from_slice(&sse_frame("tally", t));
    }
    Bytes::from(out)
}

fn encode(event: &Event) -> Bytes {
    match event {
        // Taps carry an id ("station:seq"): a client that reconnects with
        // `Last-Event-ID` is sent the taps it missed.
        Event::Tap(t) => {
            let mut f = format!("id: {}:{}\n", t.station, t.seq).into_bytes();
            f.extend_from_slice(&sse_frame("tap", t));
            Bytes::from(f)
        }
        Event::Tally(t) => sse_frame("tally", t),
        Event::Reader(r) => sse_frame("reader", r),
        Event::Status(snap) => sse_frame("status", &station_json(snap)),
        // Names are for the screen; public streams carry them only in
        // `tap` events, and only with show_names.
        Event::Person(_) => Bytes::new(),
    }
}

/// Fan-out for the event streams: one task turns each Station event into
/// SSE bytes once; every client stream just forwards those bytes. (With
/// 10,000 clients, encoding per client cost more than the writes.)
#[derive(Clone, Debug)]
pub struct SseHub {
    /// Hub task → client streams: encoded frames.
    tx: broadcast::Sender<Bytes>,
    /// The taps of the frames sent (each encoded alone), for replay; frames
    /// are sent under its lock.
    ring: Arc<std::sync::Mutex<TapRing<Bytes>>>,
    /// The highest tap seq the hub has sent (it trails the Station by a
    /// moment); `u64::MAX` after it lost some.
    sent_through: Arc<tokio::sync::watch::Sender<u64>>,
}

impl SseHub {
    /// Subscribe to the frames and take the taps sent after `last`, in one
    /// step (see [`StationHandle::subscribe_after`]).
    async fn subscribe_after(
        &self,
        last: Option<u64>,
    ) -> (broadcast::Receiver<Bytes>, Option<Bytes>) {
        if let Some(l) = last {
            // A client may have seen a tap (from a direct stream) that the
            // hub has not sent yet: wait for the hub to catch up.
            let mut sent = self.sent_through.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), sent.wait_for(|t| *t >= l)).await;
        }
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let replay = last
            .and_then(|l| ring.after(l))
            .map(|taps| taps.concat().into());
        (self.tx.subscribe(), replay)
    }
}

/// Above this many open streams the hub batches: events that arrive within
/// [`BATCH_WINDOW`] of the previous send go out together, and of several
/// tallies of one poll only the newest. With few listeners every event
/// leaves at once; with thousands, each stream gets at most ~20 writes a
/// second instead of two per tap, which is what keeps the intake responsive.
const BATCH_ABOVE: usize = 100;
const BATCH_WINDOW: Duration = Duration::from_millis(50);

impl SseHub {
    #[must_use]
    pub fn start(station: &StationHandle, shutdown: CancellationToken, rt: &Handle) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (mut events, _, through) = station.subscribe_after(None);
        let ring = Arc::new(std::sync::Mutex::new(TapRing::new(through)));
        let sent_through = Arc::new(tokio::sync::watch::Sender::new(through));
        let sent = sent_through.clone();
        let out = tx.clone();
        let out_ring = ring.clone();
        let station = station.clone();
        rt.spawn(async move {
            let mut last_send = tokio::time::Instant::now() - BATCH_WINDOW;
            loop {
                let first = tokio::select! {
                    () = shutdown.cancelled() => return,
                    e = events.recv() => e,
                };
                let mut batch = match first {
                    Ok(e) => vec![e],
                    Err(RecvError::Lagged(_)) => {
                        let mut ring = out_ring
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        ring.break_off();
                        sent.send_replace(u64::MAX);
                        let _ = out.send(resync_frames(&station.snapshot()));
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let mut lost = false;
                if out.receiver_count() > BATCH_ABOVE {
                    let until = last_send + BATCH_WINDOW;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            e = events.recv() => match e {
                                Ok(e) => batch.push(e),
                                Err(e) => {
                                    lost = matches!(e, RecvError::Lagged(_));
                                    break;
                                }
                            },
                        }
                    }
                }
                // Whatever else is already waiting goes out in the same write:
                // a tap and its tally are one wake-up per client.
                while batch.len() < 4096 {
                    match events.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(e) => {
                            lost |= matches!(e, broadcast::error::TryRecvError::Lagged(_));
                            break;
                        }
                    }
                }
                let parts = encode_batch(&batch);
                // Only events that are not for public streams (names).
                if parts.is_empty() {
                    continue;
                }
                let frame: Bytes = parts
                    .iter()
                    .map(|(_, b)| &b[..])
                    .collect::<Vec<_>>()
                    .concat()
                    .into();
                let mut ring = out_ring
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (seq, part) in parts {
                    if let Some(seq) = seq {
                        ring.push(seq, part);
                    }
                }
                let _ = out.send(frame);
                if lost {
                    // Events were skipped: no replay across the gap, and
                    // every stream gets the whole state.
                    ring.break_off();
                    let _ = out.send(resync_frames(&station.snapshot()));
                }
                sent.send_replace(ring.through());
                drop(ring);
                last_send = tokio::time::Instant::now();
            }
        });
        Self {
            tx,
            ring,
            sent_through,
        }
    }
}

/// Encode events in order, keeping only the newest tally of each poll; each
/// part with its seq if it is a tap.
fn encode_batch(batch: &[Event]) -> Vec<(Option<u64>, Bytes)> {
    // Walk backwards so the newest tally of a poll is the one kept.
    let mut seen_polls: Vec<&str> = Vec::new();
    let mut keep: Vec<&Event> = Vec::with_capacity(batch.len());
    for e in batch.iter().rev() {
        if let Event::Tally(t) = e {
            if seen_polls.contains(&t.poll.as_str()) {
                continue;
            }
            seen_polls.push(&t.poll);
        }
        keep.push(e);
    }
    keep.into_iter()
        .rev()
        .map(|e| {
            let seq = match e {
                Event::Tap(t) => Some(t.seq),
                _ => None,
            };
            (seq, encode(e))
        })
        .filter(|(_, b)| !b.is_empty())
        .collect()
}

/// Too slow to keep up: skip what was missed, send the whole state.
fn lagged(open: &OpenStream, missed: u64) -> Bytes {
    tracing::debug!(missed, "SSE client lagged; sending a fresh snapshot");
    resync_frames(&open.0.snapshot())
}

/// Counts a client stream while it exists.
struct OpenStream(StationHandle);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.metrics().sse_clients.dec();
    }
}

/// The first streams (the projector, the screens) read the Station's events
/// directly, one hop less; beyond this many open streams a new one takes the
/// hub's shared, batched frames instead.
pub(crate) const DIRECT_STREAMS: i64 = 8;

/// Whether a new event stream joins the crowd: the hub's batched frames,
/// served from the fan-out runtime (see [`crate::serve`]).
pub(crate) fn crowd(station: &StationHandle) -> bool {
    station.metrics().sse_clients.get() >= DIRECT_STREAMS
}

/// The seq of this station's tap named by a `Last-Event-ID` ("station:seq").
fn last_tap(headers: &HeaderMap, station: &str) -> Option<u64> {
    let id = headers.get("last-event-id")?.to_str().ok()?;
    let (from, seq) = id.trim().rsplit_once(':')?;
    (from == station).then(|| seq.parse().ok()).flatten()
}

async fn events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let crowd = s.station.metrics().sse_clients.inc() >= DIRECT_STREAMS;
    let open = OpenStream(s.station.clone());
    let last = last_tap(&headers, &s.station.snapshot().station);
    // Subscribe before taking the snapshot, so nothing falls between them;
    // the missed taps (if any) are taken in the same step.
    let (live, replay) = if crowd {
        let (rx, replay) = s.hub.subscribe_after(last).await;
        let live = futures_util::stream::unfold((rx, open), |(mut rx, open)| async move {
            let frame = match rx.recv().await {
                Ok(b) => b,
                Err(RecvError::Lagged(n)) => lagged(&open, n),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(frame), (rx, open)))
        })
        .boxed();
        (live, replay)
    } else {
        let (rx, replay, _) = s.station.subscribe_after(last);
        let replay = replay.map(|taps| {
            taps.into_iter()
                .map(|t| encode(&Event::Tap(t)))
                .collect::<Vec<_>>()
                .concat()
                .into()
        });
        let live = futures_util::stream::unfold((rx, open), |(mut rx, open)| async move {
            let frame = loop {
                match rx.recv().await {
                    // Skip events that are not for public streams (names).
                    Ok(e) => match encode(&e) {
                        f if f.is_empty() => {}
                        f => break f,
                    },
                    Err(RecvError::Lagged(n)) => break lagged(&open, n),
                    Err(RecvError::Closed) => return None,
                }
            };
            Some((Ok::<_, Infallible>(frame), (rx, open)))
        })
        .boxed();
        (live, replay)
    };
    if let Some(id) = headers.get("last-event-id") {
        tracing::debug!(last_event_id = ?id, replayed = replay.is_some(), "event stream resumed");
    }
    // The missed taps (when they are all still kept), then the whole state.
    let mut first: Vec<u8> = replay.map(|b: Bytes| b.to_vec()).unwrap_or_default();
    first.extend_from_slice(&resync_frames(&s.station.snapshot()));
    let first = Bytes::from(first);
    let mut keepalive = tokio::time::interval(Duration::from_secs(15));
    keepalive.reset(); // the first tick after 15 s, not now
    let keepalive = tokio_stream::wrappers::IntervalStream::new(keepalive)
        .map(|_| Ok(Bytes::from_static(b": keep-alive\n\n")));
    let stream = futures_util::stream::once(async move { Ok(first) })
        .chain(futures_util::stream::select(live, keepalive))
        .take_until(s.shutdown.clone().cancelled_owned());
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Run `body` as a task that feeds a response stream through a small
/// channel; `body` stops when a send fails (the client went away).
fn channel_stream<T, F, Fut>(capacity: usize, body: F) -> impl Stream<Item = Result<T, Infallible>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(capacity);
    tokio::spawn(body(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

// ---- admin endpoints ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TapRequest {
    reader: String,
    tag: String,
}

/// A tap as admin responses show it (with the tag).
#[derive(Serialize)]
struct TapResponse<'a> {
    station: &'a str,
    seq: u64,
    reader: &'a str,
    tag: &'a str,
    poll: &'a str,
    answer: &'a str,
    at: i64,
    counted: bool,
    repeat: bool,
}

fn tap_response(o: &TapOutcome) -> TapResponse<'_> {
    TapResponse {
        station: &o.tap.station,
        seq: o.tap.seq,
        reader: &o.tap.reader,
        tag: o.tap.tag.as_str(),
        poll: &o.tap.poll,
        answer: &o.tap.answer,
        at: o.tap.at,
        counted: o.counted,
        repeat: o.repeat,
    }
}

async fn inject_tap(
    _: Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TapRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad request",
            format!("expected {{\"reader\": \"...\", \"tag\": \"...\"}}: {e}"),
        )
    })?;
    let tag = TagUid::parse(&req.tag)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad tag", e.to_string()))?;
    let outcome = s.station.tap(&req.reader, tag).await?;
    let status = if outcome.repeat {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(tap_response(&outcome))).into_response())
}

/// Bind a plugged-in device as a new reader: `{"device": "/dev/rfid/x",
/// "slot": "A"}` or `{"device": …, "poll": …, "answer": …}`; optional `id`
/// (default: the device's file name) and `protocol` (default `auto`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindRequest {
    device: String,
    id: Option<String>,
    protocol: Option<String>,
    slot: Option<String>,
    poll: Option<String>,
    answer: Option<String>,
}

async fn bind_reader(
    _: Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let bad = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "bad request", detail);
    let req: BindRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"device\": \"/dev/rfid/…\", \"slot\": \"A\"}} or poll + answer: {e}"
        ))
    })?;
    if !req.device.starts_with('/') {
        return Err(bad(format!(
            "device {:?} is not an absolute path",
            req.device
        )));
    }
    let device = std::path::PathBuf::from(&req.device);
    let id = match req.id {
        Some(id) => id,
        None => device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !crate::config::valid_id(&id) {
        return Err(bad(format!(
            "reader id {id:?} is not a valid id: use 1–64 letters, digits, '-', '_' or '.'"
        )));
    }
    let protocol = match req.protocol.as_deref() {
        None => crate::config::Protocol::Auto,
        Some(p) => p.parse().map_err(bad)?,
    };
    let binding = match (req.slot, req.poll, req.answer) {
        (Some(slot), None, None) => {
            let mut c = slot.chars();
            match (c.next(), c.next()) {
                (Some(l), None) if l.is_ascii_alphabetic() => crate::config::Binding::Slot {
                    slot: l.to_ascii_uppercase(),
                },
                _ => return Err(bad(format!("slot {slot:?} is not one answer letter"))),
            }
        }
        (None, Some(poll), Some(answer)) => crate::config::Binding::Fixed { poll, answer },
        _ => {
            return Err(bad(
                "give either \"slot\" or both \"poll\" and \"answer\"".into()
            ));
        }
    };
    let cfg = crate::config::ReaderConfig::with_defaults(id, device, protocol, binding);
    let state = s.station.bind_reader(cfg).await?;
    Ok((StatusCode::CREATED, Json(state)).into_response())
}

async fn poll_action(
    _: Admin,
    State(s): State<AppState>,
    UrlPath((poll, action)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = match action.as_str() {
        "open" => ActionKind::Open,
        "close" => ActionKind::Close,
        "reset" => ActionKind::Reset,
        "activate" => ActionKind::Activate,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown action",
                format!("{other:?} is not one of open, close, reset, activate"),
            ));
        }
    };
    let state = s.station.poll_action(&poll, kind).await?;
    Ok(Json(state).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
    after: Option<String>,
    /// Only the last N taps (JSON array, oldest first): the operator page.
    tail: Option<usize>,
}

async fn export_taps(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    if let Some(n) = q.tail {
        if q.after.is_some() || q.format.as_deref().is_some_and(|f| f != "json") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad query",
                "tail= goes alone (JSON only, no after=)",
            ));
        }
        let taps = s
            .station
            .store()
            .tail(n.min(10_000))
            .await
            .map_err(|e| store_unavailable(&e))?;
        return Ok(Json(taps).into_response());
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad format",
                format!("format {other:?} is not json or csv"),
            ));
        }
    };
    let after = match q.after {
        None => None,
        Some(a) => {
            let parsed = a
                .rsplit_once(':')
                .and_then(|(st, seq)| Some((st.to_string(), seq.parse::<u64>().ok()?)));
            let Some((st, seq)) = parsed else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad cursor",
                    format!("after={a:?} is not STATION:SEQ"),
                ));
            };
            let path = s.station.store().path().to_path_buf();
            let (st2, exists) = tokio::task::spawn_blocking(move || {
                let r = crate::store::tap_exists(&path, &st, seq);
                (st, r)
            })
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "export failed",
                )
            })?;
            match exists {
                Ok(true) => Some((st2, seq)),
                Ok(false) => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown cursor",
                        format!("no tap {st2}:{seq} in the log"),
                    ));
                }
                Err(e) => return Err(store_unavailable(&e)),
            }
        }
    };
    let mut rx = s.station.store().export(after);
    let stream = channel_stream(16, move |tx| async move {
        if csv {
            if tx
                .send(Bytes::from_static(crate::store::CSV_HEADER.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
        } else if tx.send(Bytes::from_static(b"[")).await.is_err() {
            return;
        }
        let mut first = true;
        while let Some(row) = rx.recv().await {
            let Ok(tap) = row else {
                tracing::error!("export aborted by a store error");
                return; // the response is cut short: the client sees an incomplete body
            };
            let chunk = if csv {
                crate::store::csv_line(&tap)
            } else {
                let mut s = if first {
                    String::new()
                } else {
                    ",\n".to_string()
                };
                s.push_str(&serde_json::to_string(&tap).unwrap_or_default());
                s
            };
            first = false;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        if !csv {
            let _ = tx.send(Bytes::from_static(b"]\n")).await;
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if csv {
        resp.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"taps.csv\""),
        );
    }
    Ok(resp)
}

fn store_unavailable(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "store read failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
        "the log cannot be read right now; see /healthz",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::TallyView;

    fn tally(poll: &str, total: u64) -> Event {
        Event::Tally(TallyView {
            poll: poll.into(),
            total,
            answers: Vec::new(),
            last_tap: None,
        })
    }

    #[test]
    fn a_batch_keeps_every_other_event_and_the_newest_tally_per_poll() {
        let batch = vec![
            tally("a", 1),
            tally("b", 1),
            tally("a", 2),
            tally("a", 3),
            tally("b", 2),
        ];
        let parts: Vec<u8> = encode_batch(&batch)
            .into_iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        let text = String::from_utf8(parts).unwrap();
        let totals: Vec<&str> = text.lines().filter(|l| l.starts_with("data:")).collect();
        assert_eq!(
            totals,
            [
                r#"data: {"poll":"a","total":3,"answers":[],"last_tap":null}"#,
                r#"data: {"poll":"b","total":2,"answers":[],"last_tap":null}"#
            ]
        );
    }
}
