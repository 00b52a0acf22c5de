//! One link to a peer, once TLS is up: the hellos (herd, station, polls,
//! what each holds), then two tasks until the link ends. The writer sends
//! each commit's new events as the Station broadcasts them (the live path)
//! and whatever the peer lacks beyond that straight from the log, feed by
//! feed in bounded batches (catch-up, and a link that lagged), plus heads,
//! pings and pongs. The reader hands each
//! batch to the Station (which stores it behind its local taps, applies it
//! once durable, and so forwards it on every other link) and checks copies
//! of events already held against the log (a forked origin).
//!
//! Invariants: the writer sends each feed in order from what the peer
//! holds, so the peer never sees a gap; nothing is forwarded before it is
//! durable here; a link silent for [`SILENT`] is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::wire::{self, Frame, Hello, VERSION};
use crate::domain::herd::{Heads, HerdEvent, clock_offset};
use crate::station::{HerdReport, LinkState, PeerView, StationHandle};
use crate::sys::clock::now_ms;

/// Events per batch: bounded frames, bounded commits.
pub const BATCH: usize = 2000;
/// Ping this often; a link that says nothing for [`SILENT`] is dropped.
const PING_EVERY: Duration = Duration::from_secs(2);
pub const SILENT: Duration = Duration::from_secs(8);
/// Frames already received are taken into one commit, up to this many.
const COALESCE: usize = 16;
/// Heads are told at most this often.
const HEADS_EVERY: Duration = Duration::from_millis(500);
/// How long the other side has to say hello.
pub const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// A peer's round trip and lag are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("the peer sent {0} where it should not")]
    Protocol(&'static str),
    #[error("the peer said nothing for {} s", SILENT.as_secs())]
    Silent,
    #[error("the peer closed the link")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("refused by the peer: {0}")]
    RefusedByPeer(String),
    #[error("the log cannot be read or written: {0}")]
    Store(#[from] crate::station::StoreError),
}

/// Who this station is in the herd.
#[derive(Debug, Clone)]
pub struct Me {
    pub herd: String,
    pub station: String,
    pub polls_hash: String,
}

type Reader<S> = FramedRead<tokio::io::ReadHalf<S>, LengthDelimitedCodec>;
type Writer<S> = FramedWrite<tokio::io::WriteHalf<S>, LengthDelimitedCodec>;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(wire::MAX_FRAME)
        .new_codec()
}

async fn send<S: AsyncWrite>(w: &mut Writer<S>, f: &Frame) -> Result<usize, LinkError> {
    let bytes = wire::encode(f)?;
    let n = bytes.len();
    w.send(bytes::Bytes::from(bytes)).await?;
    Ok(n)
}

async fn next<S: AsyncRead>(r: &mut Reader<S>) -> Result<Frame, LinkError> {
    match tokio::time::timeout(SILENT, r.next()).await {
        Err(_) => Err(LinkError::Silent),
        Ok(None) => Err(LinkError::Closed),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(b))) => Ok(wire::decode(&b)?),
    }
}

/// What the two sides said, checked: the peer's hello.
fn check(me: &Me, cert_names: &[String], theirs: &Hello) -> Result<(), String> {
    if theirs.version != VERSION {
        return Err(format!(
            "protocol version {} (this station speaks {VERSION}): run the same pollstation version",
            theirs.version
        ));
    }
    if theirs.herd != me.herd {
        return Err(format!(
            "herd {:?} is not this herd {:?}: check [herd] id",
            theirs.herd, me.herd
        ));
    }
    if !cert_names.contains(&theirs.station) {
        return Err(format!(
            "it claims to be station {:?} but its certificate names {}",
            theirs.station,
            cert_names.join(", ")
        ));
    }
    if theirs.station == me.station {
        return Err(format!(
            "it is station {:?} too: two stations must not share an id",
            me.station
        ));
    }
    if theirs.polls_hash != me.polls_hash {
        return Err(format!(
            "the polls differ (theirs {}, ours {}): poll ids, rules, open and answer ids must be the same on every station",
            theirs.polls_hash, me.polls_hash
        ));
    }
    Ok(())
}

/// Exchange hellos. Returns the peer's (checked) and the framed halves.
pub async fn hello<S: AsyncRead + AsyncWrite>(
    stream: S,
    me: &Me,
    heads: &Heads,
    cert_names: &[String],
) -> Result<(Hello, Reader<S>, Writer<S>), LinkError> {
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = FramedRead::new(rd, codec());
    let mut wr = FramedWrite::new(wr, codec());
    let ours = Hello {
        version: VERSION,
        herd: me.herd.clone(),
        station: me.station.clone(),
        polls_hash: me.polls_hash.clone(),
        heads: wire::heads_out(heads),
    };
    send(&mut wr, &Frame::Hello(ours)).await?;
    let theirs = match tokio::time::timeout(HELLO_WITHIN, next(&mut rd)).await {
        Err(_) => return Err(LinkError::Protocol("no hello in time")),
        Ok(r) => r?,
    };
    let theirs = match theirs {
        Frame::Hello(h) => h,
        Frame::Refuse(reason) => return Err(LinkError::RefusedByPeer(reason)),
        _ => return Err(LinkError::Protocol("something before its hello")),
    };
    if let Err(reason) = check(me, cert_names, &theirs) {
        let _ = send(&mut wr, &Frame::Refuse(reason.clone())).await;
        return Err(LinkError::Refused(reason));
    }
    Ok((theirs, rd, wr))
}

/// Frames the reader asks the writer to send, and what it learned.
#[derive(Debug)]
enum Ctl {
    Frame(Frame),
    /// The peer holds at least these: do not send them.
    PeerHeads(Heads),
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

/// What the link reports about its peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: String,
    pub station: String,
    pub since: i64,
}

impl Peer {
    fn view(&self, stats: &Stats, rtt: Option<u64>, offset: Option<i64>, skew: i64) -> PeerView {
        PeerView {
            address: self.address.clone(),
            station: Some(self.station.clone()),
            state: LinkState::Up,
            since: self.since,
            rtt_ms: rtt,
            clock_offset_ms: offset,
            skewed: offset.is_some_and(|o| o.abs() > skew),
            error: None,
            sent: stats.sent.load(Ordering::Relaxed),
            received: stats.received.load(Ordering::Relaxed),
            we_lack: 0,
            it_lacks: 0,
        }
    }
}

/// Run a link whose hellos are done until it fails or `stop`.
pub async fn run<S: AsyncRead + AsyncWrite + Send + 'static>(
    station: StationHandle,
    peer: Peer,
    theirs: Hello,
    (rd, wr): (Reader<S>, Writer<S>),
    max_skew_ms: i64,
    stop: CancellationToken,
) -> LinkError {
    let stats = Arc::new(Stats::default());
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    let peer_heads = wire::heads_in(&theirs.heads);
    let _ = station
        .sender()
        .send(crate::station::Command::HerdStatus(HerdReport::Peer {
            view: peer.view(&stats, None, None, max_skew_ms),
            heads: Some(Arc::new(peer_heads.clone())),
        }))
        .await;
    let writer = write_loop(station.clone(), wr, peer_heads, ctl_rx, stats.clone());
    let reader = read_loop(station, peer, rd, ctl_tx, stats, max_skew_ms);
    tokio::select! {
        () = stop.cancelled() => LinkError::Closed,
        e = writer => e,
        e = reader => e,
    }
}

/// Send the peer what it lacks, then keep it up to date: each commit's new
/// events as they come (the live path, no read of the log), and from the
/// log whatever the live path could not carry (a link that lagged, a feed
/// the peer is behind on).
async fn write_loop<S: AsyncWrite>(
    station: StationHandle,
    mut wr: Writer<S>,
    mut sent: Heads,
    mut ctl: mpsc::Receiver<Ctl>,
    stats: Arc<Stats>,
) -> LinkError {
    // Subscribed before the catch-up so nothing committed meanwhile is
    // missed; what both carry is sent once (`sent` decides).
    let mut live = station.herd_live();
    let mut heads = station.heads();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut told = Heads::default();
    let mut heads_due = tokio::time::interval(HEADS_EVERY);
    let mut ping_id = 0u64;
    let result: Result<(), LinkError> = async {
        loop {
            // What the log holds that the peer lacks, a feed at a time.
            let ours = heads.borrow_and_update().clone();
            let lacking = sent.behind(&ours);
            for (origin, feed, from, _) in lacking {
                while let Ok(c) = ctl.try_recv() {
                    control(&mut wr, &mut sent, c, &stats).await?;
                }
                let events = station
                    .feed_after(origin.clone(), feed, from, BATCH)
                    .await?;
                if events.is_empty() {
                    continue;
                }
                send_run(&mut wr, &mut sent, &events, &stats).await?;
            }
            if !sent.behind(&heads.borrow()).is_empty() {
                continue;
            }
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(c) => control(&mut wr, &mut sent, c, &stats).await?,
                    None => return Err(LinkError::Closed),
                },
                r = live_next(&mut live) => match r {
                    Ok(first) => {
                        // What the peer sent us must not go back to it.
                        while let Ok(c) = ctl.try_recv() {
                            control(&mut wr, &mut sent, c, &stats).await?;
                        }
                        let mut events = first.to_vec();
                        while let Ok(more) = live.as_mut().map_or(
                            Err(broadcast::error::TryRecvError::Closed),
                            broadcast::Receiver::try_recv,
                        ) {
                            events.extend(more.iter().cloned());
                        }
                        send_live(&mut wr, &mut sent, &events, &stats).await?;
                    }
                    // The log has it: the catch-up above sends it.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => live = None,
                },
                r = heads.changed() => if r.is_err() { return Err(LinkError::Closed) },
                _ = ping.tick() => {
                    ping_id += 1;
                    send(&mut wr, &Frame::Ping { id: ping_id, at: now_ms() }).await?;
                }
                _ = heads_due.tick() => {
                    let ours = heads.borrow().clone();
                    if *ours != told {
                        send(&mut wr, &Frame::Heads(wire::heads_out(&ours))).await?;
                        told = (*ours).clone();
                    }
                }
            }
        }
    }
    .await;
    result.err().unwrap_or(LinkError::Closed)
}

/// The next commit's events, or never without a live path.
async fn live_next(
    live: &mut Option<broadcast::Receiver<Arc<[HerdEvent]>>>,
) -> Result<Arc<[HerdEvent]>, broadcast::error::RecvError> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Send one feed's run of events, numbered on from what the peer holds.
async fn send_run<S: AsyncWrite>(
    wr: &mut Writer<S>,
    sent: &mut Heads,
    events: &[HerdEvent],
    stats: &Stats,
) -> Result<(), LinkError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let (origin, feed, n) = last.position();
    let batch = wire::pack(events)?;
    let bytes = send(wr, &Frame::Batch(batch)).await?;
    stats.sent.fetch_add(events.len() as u64, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    sent.set(origin.clone(), feed, n);
    Ok(())
}

/// Send the live events the peer lacks, run by run. A run that does not
/// follow on from what the peer holds is left to the catch-up from the
/// log, which the heads wake.
async fn send_live<S: AsyncWrite>(
    wr: &mut Writer<S>,
    sent: &mut Heads,
    events: &[HerdEvent],
    stats: &Stats,
) -> Result<(), LinkError> {
    for run in runs(events) {
        let (origin, feed, _) = run[0].position();
        let have = sent.get(origin, feed);
        let fresh = &run[run.partition_point(|e| e.position().2 <= have)..];
        if fresh.first().is_some_and(|e| e.position().2 == have + 1) {
            for chunk in fresh.chunks(BATCH) {
                send_run(wr, sent, chunk, stats).await?;
            }
        }
    }
    Ok(())
}

/// Split events into runs of one feed, numbered without a gap.
fn runs(events: &[HerdEvent]) -> impl Iterator<Item = &[HerdEvent]> {
    events.chunk_by(|a, b| {
        let (oa, fa, na) = a.position();
        let (ob, fb, nb) = b.position();
        oa == ob && fa == fb && nb == na + 1
    })
}

async fn control<S: AsyncWrite>(
    wr: &mut Writer<S>,
    sent: &mut Heads,
    c: Ctl,
    stats: &Stats,
) -> Result<(), LinkError> {
    match c {
        Ctl::Frame(f) => {
            let n = send(wr, &f).await?;
            stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ctl::PeerHeads(h) => {
            for (o, f, n) in h.iter() {
                if n > sent.get(o, f) {
                    sent.set(o.clone(), f, n);
                }
            }
        }
    }
    Ok(())
}

/// Take what the peer sends.
async fn read_loop<S: AsyncRead>(
    station: StationHandle,
    peer: Peer,
    mut rd: Reader<S>,
    ctl: mpsc::Sender<Ctl>,
    stats: Arc<Stats>,
    max_skew_ms: i64,
) -> LinkError {
    let mut rtt = None;
    let mut offset = None;
    let mut reported = tokio::time::Instant::now();
    let mut their_heads: Option<Arc<Heads>> = None;
    let result: Result<(), LinkError> = async {
        let mut fresh = Vec::new();
        loop {
            // Frames that came together are taken together: one commit for
            // all their events instead of one each.
            let mut frames = vec![next(&mut rd).await?];
            while frames.len() < COALESCE {
                match rd.next().now_or_never() {
                    Some(Some(Ok(b))) => frames.push(wire::decode(&b)?),
                    Some(Some(Err(e))) => return Err(e.into()),
                    Some(None) | None => break,
                }
            }
            for frame in frames {
                match frame {
                    Frame::Batch(b) => {
                        let events = wire::unpack(b)?;
                        if let Some(last) = events.last() {
                            // The peer holds these: the writer must not echo them.
                            let (o, f, n) = last.position();
                            let mut h = Heads::default();
                            h.set(o.clone(), f, n);
                            // Never blocks the reader: a full queue only costs an echo.
                            let _ = ctl.try_send(Ctl::PeerHeads(h));
                        }
                        stats
                            .received
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        let (held, new) = split_held(&station.heads().borrow(), events);
                        fresh.extend(new);
                        if !held.is_empty() {
                            for e in station.mismatching(held).await? {
                                let (origin, feed, n) = e.position();
                                let _ = station
                                    .sender()
                                    .send(crate::station::Command::HerdStatus(HerdReport::Forked {
                                        origin: origin.to_string(),
                                        detail: format!(
                                            "{feed} {n} from {} differs from the logged one",
                                            peer.station
                                        ),
                                    }))
                                    .await;
                            }
                        }
                    }
                    Frame::Heads(h) => {
                        let h = wire::heads_in(&h);
                        their_heads = Some(Arc::new(h.clone()));
                        let _ = ctl.try_send(Ctl::PeerHeads(h));
                    }
                    Frame::Ping { id, at } => {
                        // Answered as soon as the writer can; a full queue drops it.
                        let _ = ctl.try_send(Ctl::Frame(Frame::Pong {
                            id,
                            at: now_ms(),
                            echo: at,
                        }));
                    }
                    Frame::Pong { at, echo, .. } => {
                        let now = now_ms();
                        rtt = u64::try_from(now - echo).ok();
                        offset = Some(clock_offset(echo, at, now));
                    }
                    Frame::Hello(_) => return Err(LinkError::Protocol("a second hello")),
                    Frame::Refuse(r) => return Err(LinkError::RefusedByPeer(r)),
                }
            }
            if !fresh.is_empty() {
                station.herd_events(std::mem::take(&mut fresh)).await?;
            }
            if reported.elapsed() >= REPORT_EVERY {
                reported = tokio::time::Instant::now();
                let _ = station
                    .sender()
                    .send(crate::station::Command::HerdStatus(HerdReport::Peer {
                        view: peer.view(&stats, rtt, offset, max_skew_ms),
                        heads: their_heads.take(),
                    }))
                    .await;
            }
        }
    }
    .await;
    result.err().unwrap_or(LinkError::Closed)
}

/// Split a batch into the events this station holds already and the rest.
fn split_held(heads: &Heads, events: Vec<HerdEvent>) -> (Vec<HerdEvent>, Vec<HerdEvent>) {
    events.into_iter().partition(|e| {
        let (o, f, n) = e.position();
        n <= heads.get(o, f)
    })
}
