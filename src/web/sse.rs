//! Server-Sent Events: `status`, `tally`, `tap` (with `id: STATION:SEQ`)
//! and `reader` frames. The first streams read the Station's events
//! directly; a crowd beyond [`DIRECT_STREAMS`] shares the [`SseHub`]'s
//! frames, encoded once for all and batched under load, served from the
//! fan-out runtime. A stream that lags or resumes gets exactly what it
//! missed when it is still kept, else the whole state.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::pages::station_json;
use crate::station::ring::TapRing;
use crate::station::{Event, Snapshot, StationHandle};

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
/// 10,000 clients, encoding per client cost more than the writes.) While no
/// stream takes its frames (the first [`DIRECT_STREAMS`] read the Station
/// directly) the hub is idle and not subscribed to the Station: a station
/// with a projector and a few operator pages does not wake its fan-out
/// thread for every tap.
#[derive(Clone, Debug)]
pub struct SseHub {
    /// Hub task → client streams: encoded frames.
    tx: broadcast::Sender<Bytes>,
    /// The taps of the frames sent (each encoded alone), for replay, and
    /// whether the hub is idle; frames are sent under its lock.
    shared: Arc<std::sync::Mutex<Shared>>,
    /// The highest tap seq the hub has sent (it trails the Station by a
    /// moment); `u64::MAX` after it lost some.
    sent_through: Arc<tokio::sync::watch::Sender<u64>>,
    /// A stream → the idle hub: take frames again.
    wake: Arc<tokio::sync::Notify>,
    /// Whether the hub is subscribed to the Station (set by the hub).
    active: Arc<tokio::sync::watch::Sender<bool>>,
}

#[derive(Debug)]
struct Shared {
    ring: TapRing<Bytes>,
    idle: bool,
}

impl SseHub {
    /// Subscribe to the frames and take the taps sent after `last`, in one
    /// step (see [`StationHandle::subscribe_after`]). An idle hub is woken
    /// first and waited for; what it sent before it slept is not replayed
    /// (the stream's first burst is the whole state anyway).
    async fn subscribe_after(
        &self,
        last: Option<u64>,
    ) -> (broadcast::Receiver<Bytes>, Option<Bytes>) {
        if let Some(l) = last
            && *self.active.borrow()
        {
            // A client may have seen a tap (from a direct stream) that the
            // hub has not sent yet: wait for the hub to catch up.
            let mut sent = self.sent_through.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), sent.wait_for(|t| *t >= l)).await;
        }
        let (rx, replay, woke) = {
            let mut shared = self
                .shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let rx = self.tx.subscribe();
            let woke = std::mem::replace(&mut shared.idle, false);
            let replay = last
                .filter(|_| !woke)
                .and_then(|l| shared.ring.after(l))
                .map(|taps| taps.concat().into());
            (rx, replay, woke)
        };
        if woke {
            self.wake.notify_one();
            let mut active = self.active.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), active.wait_for(|a| *a)).await;
        }
        (rx, replay)
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
        let shared = Arc::new(std::sync::Mutex::new(Shared {
            ring: TapRing::new(0),
            idle: true,
        }));
        let hub = Self {
            tx,
            shared,
            sent_through: Arc::new(tokio::sync::watch::Sender::new(0)),
            wake: Arc::new(tokio::sync::Notify::new()),
            active: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let me = hub.clone();
        let station = station.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = me.wake.notified() => {}
                }
                if me.serve(&station, &shutdown).await.is_break() {
                    return;
                }
            }
        });
        hub
    }

    /// Take the Station's events and send them as frames until no stream
    /// takes them any more (Continue: idle) or the Station or the server
    /// stops (Break).
    async fn serve(
        &self,
        station: &StationHandle,
        shutdown: &CancellationToken,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let (mut events, _, through) = station.subscribe_after(None);
        let own = station.snapshot().station.clone();
        self.lock().ring = TapRing::new(through);
        self.sent_through.send_replace(through);
        self.active.send_replace(true);
        let out = &self.tx;
        let mut last_send = tokio::time::Instant::now() - BATCH_WINDOW;
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return Break(()),
                e = events.recv() => e,
            };
            let mut batch = match first {
                Ok(e) => vec![e],
                Err(RecvError::Lagged(_)) => {
                    let mut shared = self.lock();
                    shared.ring.break_off();
                    self.sent_through.send_replace(u64::MAX);
                    let _ = out.send(resync_frames(&station.snapshot()));
                    continue;
                }
                Err(RecvError::Closed) => return Break(()),
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
            let parts = encode_batch(&batch, &own);
            let mut shared = self.lock();
            // No stream left: sleep until one comes (under the lock, so a
            // stream subscribing now sees the hub idle and wakes it).
            if out.receiver_count() == 0 {
                shared.idle = true;
                self.active.send_replace(false);
                return Continue(());
            }
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
            for (seq, part) in parts {
                if let Some(seq) = seq {
                    shared.ring.push(seq, part);
                }
            }
            let _ = out.send(frame);
            if lost {
                // Events were skipped: no replay across the gap, and
                // every stream gets the whole state.
                shared.ring.break_off();
                let _ = out.send(resync_frames(&station.snapshot()));
            }
            self.sent_through.send_replace(shared.ring.through());
            drop(shared);
            last_send = tokio::time::Instant::now();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Encode events in order, keeping only the newest tally of each poll; each
/// part with its seq if it is a tap.
fn encode_batch(batch: &[Event], own: &str) -> Vec<(Option<u64>, Bytes)> {
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
                // Only this station's taps resume by seq (`Last-Event-ID`).
                Event::Tap(t) if *t.station == *own => Some(t.seq),
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
/// served from the fan-out runtime (see [`super::serve`]).
pub fn crowd(station: &StationHandle) -> bool {
    station.metrics().sse_clients.get() >= DIRECT_STREAMS
}

/// The seq of this station's tap named by a `Last-Event-ID` ("station:seq").
fn last_tap(headers: &HeaderMap, station: &str) -> Option<u64> {
    tap_seq(headers.get("last-event-id")?.to_str().ok()?, station)
}

fn tap_seq(id: &str, station: &str) -> Option<u64> {
    let (from, seq) = id.trim().rsplit_once(':')?;
    (from == station).then(|| seq.parse().ok()).flatten()
}

/// The frames of one event stream: the taps missed since `last` (when
/// they are all still kept) and the whole state, then the live events and
/// a keep-alive comment every 15 s, until shutdown.
async fn frames(
    s: &AppState,
    last: Option<u64>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let crowd = s.station.metrics().sse_clients.inc() >= DIRECT_STREAMS;
    let open = OpenStream(s.station.clone());
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
            Some((frame, (rx, open)))
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
            Some((frame, (rx, open)))
        })
        .boxed();
        (live, replay)
    };
    // The missed taps (when they are all still kept), then the whole state.
    let mut first: Vec<u8> = replay.map(|b: Bytes| b.to_vec()).unwrap_or_default();
    first.extend_from_slice(&resync_frames(&s.station.snapshot()));
    let first = Bytes::from(first);
    let mut keepalive = tokio::time::interval(Duration::from_secs(15));
    keepalive.reset(); // the first tick after 15 s, not now
    let keepalive = tokio_stream::wrappers::IntervalStream::new(keepalive)
        .map(|_| Bytes::from_static(b": keep-alive\n\n"));
    futures_util::stream::once(async move { first })
        .chain(futures_util::stream::select(live, keepalive))
        .take_until(s.shutdown.clone().cancelled_owned())
}

#[utoipa::path(get, path = "/api/v1/events", tag = "public",
    params(("Last-Event-ID" = Option<String>, Header, description = "The last tap seen (`station:seq`): the taps missed are sent first")),
    responses((status = 200, description = "Server-Sent Events: `status`, `tally`, `tap` (with `id: station:seq`, no tag UID) and `reader`; the whole state first", body = StreamEvent, content_type = "text/event-stream")))]
pub(super) async fn events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let last = last_tap(&headers, &s.station.snapshot().station);
    if let Some(id) = headers.get("last-event-id") {
        tracing::debug!(last_event_id = ?id, "event stream resumed");
    }
    let stream = frames(&s, last).await.map(Ok::<_, Infallible>);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One event of `GET /api/v1/events`, as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the frames are written by `encode`
pub(super) struct StreamEvent {
    event: StreamEventName,
    /// JSON: the station (`status`, as `GET /api/v1/station`), a poll's
    /// tally (`tally`), a tap without its tag UID (`tap`), a reader's state
    /// (`reader`).
    data: String,
    /// `station:seq`, on `tap` events.
    id: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub(super) enum StreamEventName {
    Status,
    Tally,
    Tap,
    Reader,
}

/// The head of a raw event stream's response: the body is the frames, and
/// ends when the connection does.
const RAW_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n";

/// Serve a plain `GET /api/v1/events` on the connection itself, without
/// HTTP machinery: its response never ends, so keeping hyper's read and
/// write buffers (8 KiB each) for it cost more than the rest of the stream
/// (`cargo bench --bench sse_load`, memory per stream). `last_event_id` is
/// the request's `Last-Event-ID`.
pub(super) async fn serve_raw(
    io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    s: AppState,
    last_event_id: Option<&str>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let own = s.station.snapshot().station.clone();
    let last = last_event_id.and_then(|id| tap_seq(id, &own));
    if let Some(id) = last_event_id {
        tracing::debug!(last_event_id = id, "event stream resumed");
    }
    let stream = frames(&s, last).await;
    tokio::pin!(stream);
    let (mut from, mut to) = tokio::io::split(io);
    if to.write_all(RAW_HEAD).await.is_err() {
        return;
    }
    // The client sends nothing more; its end (or a reset) is read at once,
    // so a closed browser gives its place back without waiting for a write.
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(f) => if to.write_all(&f).await.is_err() { return },
                None => break,
            },
            r = from.read(&mut probe) => if matches!(r, Ok(0) | Err(_)) { return },
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tally::TallyView;

    fn tally(poll: &str, total: u64) -> Event {
        Event::Tally(TallyView {
            poll: poll.into(),
            total,
            answers: Vec::new(),
            last_tap: None,
            by_station: Default::default(),
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
        let parts: Vec<u8> = encode_batch(&batch, "s")
            .into_iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        let text = String::from_utf8(parts).unwrap();
        let totals: Vec<&str> = text.lines().filter(|l| l.starts_with("data:")).collect();
        assert_eq!(
            totals,
            [
                r#"data: {"poll":"a","total":3,"answers":[],"last_tap":null,"by_station":{}}"#,
                r#"data: {"poll":"b","total":2,"answers":[],"last_tap":null,"by_station":{}}"#
            ]
        );
    }
}
