//! Serial RFID readers: one task per configured reader.
//!
//! Each task owns its device: it opens it with tokio-serial, turns bytes into
//! frames with the protocol's codec, frames into arrivals with [`Presence`],
//! and sends each arrival to the Station as a tap. Once the Station answers
//! (after the tap is durable), it gives the voter feedback where the reader
//! can (SM130 outputs, a line back to a text sketch). A device that is
//! missing, unplugged or failing is reported `disconnected` with the error
//! and retried with capped back-off; it is re-attached without a restart.
//! When systemd's device units are followed (the hotplug adapter's
//! [`DeviceWatch`], handed in by `app`), a device that goes away is dropped
//! at once, and a missing one is waited for instead of retried.
//!
//! It must not interpret taps (what they mean is the Station's business) and
//! never blocks on the Station: replies are awaited in their own tasks.

pub mod em4100;
pub mod pn532;
mod polled;
pub mod presence;
#[cfg(test)]
mod proptests;
pub mod sm130;
#[cfg(test)]
mod testutil;
pub mod text;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::config::{Protocol, ReaderConfig, UidOrder};
use crate::domain::backoff::Backoff;
use crate::domain::{TagError, TagUid};
use crate::station::metrics::Metrics;
use crate::station::{
    Command, DevicePresence, DeviceWatch, ReaderCtl, ReaderReport, ReaderStatus, WatchDevice,
};

pub use presence::Presence;

/// First and longest wait between two attempts to open a missing device.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Frame counters are reported at most this often.
const COUNTER_EVERY: Duration = Duration::from_secs(1);

/// Why a reader stopped working (it will be retried).
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: tokio_serial::Error,
    },
    #[error("device error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the device was closed (unplugged?)")]
    Closed,
    #[error("the reader does not answer: {0}")]
    Silent(&'static str),
    #[error("unplugged (systemd removed {0})")]
    Unplugged(String),
}

/// What the Station said about a tap, for the voter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Counted,
    NotCounted,
}

/// Run one task per reader: the configured ones, then as `ctl` says
/// (readers bound at runtime, config reloads). Returns once every task has
/// stopped after `shutdown`.
pub async fn supervise(
    readers: Vec<ReaderConfig>,
    mut ctl: mpsc::UnboundedReceiver<ReaderCtl>,
    station: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    devices: WatchDevice,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let start = |tasks: &mut tokio::task::JoinSet<()>,
                 running: &mut HashMap<String, CancellationToken>,
                 r: ReaderConfig| {
        let device = devices(&r.device);
        let stop = shutdown.child_token();
        if let Some(old) = running.insert(r.id.clone(), stop.clone()) {
            old.cancel();
        }
        tasks.spawn(run(r, station.clone(), metrics.clone(), device, stop));
    };
    for r in readers {
        start(&mut tasks, &mut running, r);
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(c) = ctl.recv() => match c {
                ReaderCtl::Start(r) => start(&mut tasks, &mut running, r),
                ReaderCtl::Stop(id) => {
                    if let Some(stop) = running.remove(&id) {
                        tracing::info!(reader = %id, "reader stopped");
                        stop.cancel();
                    }
                }
            },
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a reader task failed");
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// The shared state of one reader's task.
struct Ctx {
    cfg: ReaderConfig,
    /// Reader → Station: taps and status reports.
    station: mpsc::Sender<Command>,
    /// Where the time each tap took goes (`tap_seconds`).
    metrics: Arc<Metrics>,
    /// Tap-reply tasks → driver: feedback to give.
    feedback_tx: mpsc::Sender<Feedback>,
    presence: Presence,
    frames_ok: u64,
    frames_bad: u64,
    status: Option<(ReaderStatus, Option<String>)>,
    protocol: Protocol,
    last_counters: Instant,
    /// (frames_ok, frames_bad) as last reported.
    reported: (u64, u64),
}

impl Ctx {
    /// Tell the Station the reader's state, if it changed.
    async fn report(&mut self, status: ReaderStatus, error: Option<String>) {
        let now = (status, error);
        if self.status.as_ref() == Some(&now) {
            return;
        }
        match &now {
            (ReaderStatus::Connected, _) => {
                tracing::info!(reader = %self.cfg.id, protocol = %self.protocol, device = %self.cfg.device.display(), "reader connected");
            }
            (ReaderStatus::Disconnected, e) => {
                tracing::warn!(reader = %self.cfg.id, device = %self.cfg.device.display(), error = e.as_deref().unwrap_or(""), "reader disconnected");
            }
        }
        self.status = Some(now.clone());
        self.send_report().await;
    }

    async fn send_report(&mut self) {
        let Some((status, error)) = self.status.clone() else {
            return;
        };
        self.last_counters = Instant::now();
        self.reported = (self.frames_ok, self.frames_bad);
        let _ = self
            .station
            .send(Command::Reader(ReaderReport {
                reader: self.cfg.id.clone(),
                status,
                error,
                frames_ok: self.frames_ok,
                frames_bad: self.frames_bad,
                protocol: Some(self.protocol),
            }))
            .await;
    }

    /// Changed counters go to the Station, at most once a second.
    async fn maybe_send_counters(&mut self) {
        let changed = self.reported != (self.frames_ok, self.frames_bad);
        if changed && self.last_counters.elapsed() >= COUNTER_EVERY {
            self.send_report().await;
        }
    }

    fn bad_frame(&mut self, reason: &str, skipped: usize) {
        self.frames_bad += 1;
        tracing::debug!(reader = %self.cfg.id, reason, skipped, "skipped bytes that are not a valid frame");
    }

    /// A UID was read (maybe for the hundredth time while the tag is held).
    async fn uid(&mut self, mut raw: Vec<u8>) {
        self.frames_ok += 1;
        if self.cfg.uid_order == UidOrder::Reversed {
            raw.reverse();
        }
        if !self.presence.seen(&raw, Instant::now()) {
            return;
        }
        tracing::debug!(reader = %self.cfg.id, uid = %hex::encode_upper(&raw), "tag arrived");
        let tag = match TagUid::from_bytes(&raw) {
            Ok(t) => t,
            Err(e @ TagError::RandomId(_)) => {
                tracing::warn!(reader = %self.cfg.id, error = %e, "tap not counted: a phone or a card with a random ID");
                let _ = self.feedback_tx.try_send(Feedback::NotCounted);
                return;
            }
            Err(e) => {
                tracing::warn!(reader = %self.cfg.id, error = %e, "unusable UID");
                self.frames_bad += 1;
                return;
            }
        };
        let since = Instant::now();
        let (reply, rx) = oneshot::channel();
        let sent = self
            .station
            .send(Command::Tap {
                reader: self.cfg.id.clone(),
                tag,
                reply: Some(reply),
            })
            .await;
        if sent.is_err() {
            return; // shutting down
        }
        let feedback = self.feedback_tx.clone();
        let reader = self.cfg.id.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let answer = rx.await;
            metrics.tap_seconds.observe(since.elapsed().as_secs_f64());
            let fb = match answer {
                Ok(Ok(o)) if o.counted => Feedback::Counted,
                Ok(Ok(_)) => Feedback::NotCounted,
                Ok(Err(e)) => {
                    tracing::info!(reader = %reader, error = %e, "tap refused");
                    Feedback::NotCounted
                }
                Err(_) => return,
            };
            let _ = feedback.send(fb).await;
        });
    }
}

/// Open a serial device at `baud`, 8N1, no flow control.
fn open(path: &std::path::Path, baud: u32) -> Result<SerialStream, ReaderError> {
    tokio_serial::new(path.to_string_lossy(), baud)
        .timeout(Duration::from_millis(100))
        .open_native_async()
        .map_err(|source| ReaderError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// Resolves when the device unit goes away (never, if it is not followed).
async fn unplugged(presence: &mut watch::Receiver<DevicePresence>) {
    loop {
        if presence.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *presence.borrow_and_update() == DevicePresence::Absent {
            return;
        }
    }
}

/// Wait before opening the device again: until its unit appears when systemd
/// says it is absent, else for `backoff` (cut short when it appears).
/// False when the station stops.
async fn wait_to_retry(
    presence: &mut watch::Receiver<DevicePresence>,
    backoff: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let absent = *presence.borrow_and_update() == DevicePresence::Absent;
    let appeared = async {
        loop {
            if presence.changed().await.is_err() {
                return std::future::pending().await;
            }
            if *presence.borrow_and_update() == DevicePresence::Present {
                return;
            }
        }
    };
    let timer = async {
        if absent {
            std::future::pending().await
        } else {
            tokio::time::sleep(backoff).await;
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = appeared => true,
        () = timer => true,
    }
}

/// One reader, for as long as the station runs. `device` is its device as
/// systemd sees it.
pub async fn run(
    cfg: ReaderConfig,
    station: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    device: DeviceWatch,
    shutdown: CancellationToken,
) {
    let DeviceWatch { mut presence, unit } = device;
    let (feedback_tx, mut feedback_rx) = mpsc::channel(16);
    let mut ctx = Ctx {
        presence: Presence::new(cfg.absence),
        protocol: cfg.protocol,
        cfg,
        station,
        metrics,
        feedback_tx,
        frames_ok: 0,
        frames_bad: 0,
        status: None,
        last_counters: Instant::now(),
        reported: (0, 0),
    };
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        let baud = ctx
            .cfg
            .baud
            .unwrap_or_else(|| ctx.cfg.protocol.default_baud());
        presence.borrow_and_update();
        let result = match open(&ctx.cfg.device, baud) {
            Err(e) => Err(e),
            Ok(port) => {
                backoff.reset();
                tokio::select! {
                    r = drive(&mut ctx, port, &mut feedback_rx, &shutdown) => r,
                    () = unplugged(&mut presence) => Err(ReaderError::Unplugged(unit.clone())),
                }
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        let waiting = *presence.borrow() == DevicePresence::Absent;
        let error = if waiting && !matches!(err, ReaderError::Unplugged(_)) {
            format!("not plugged in (waiting for {unit})")
        } else {
            err.to_string()
        };
        ctx.report(ReaderStatus::Disconnected, Some(error)).await;
        let wait = if waiting {
            backoff.reset();
            FIRST_BACKOFF
        } else {
            backoff.fail()
        };
        if !wait_to_retry(&mut presence, wait, &shutdown).await {
            return;
        }
    }
}

/// Drive an open device until it fails (Err) or the station stops (Ok).
async fn drive(
    ctx: &mut Ctx,
    port: SerialStream,
    feedback: &mut mpsc::Receiver<Feedback>,
    shutdown: &CancellationToken,
) -> Result<(), ReaderError> {
    let (rd, wr) = tokio::io::split(port);
    let protocol = match ctx.cfg.protocol {
        Protocol::Auto => {
            // A reader that probes as something else would keep its old
            // guess on the next plug-in without this.
            ctx.protocol = Protocol::Auto;
            let found = polled::probe(rd, wr, ctx).await?;
            return match found {
                polled::Probed::Pn532(rd, wr) => {
                    ctx.protocol = Protocol::Pn532;
                    polled::pn532(ctx, rd, wr, feedback, shutdown).await
                }
                polled::Probed::Sm130(rd, wr) => {
                    ctx.protocol = Protocol::Sm130;
                    polled::sm130(ctx, rd, wr, feedback, shutdown).await
                }
                polled::Probed::Other(rd, wr) => {
                    ctx.protocol = Protocol::Text;
                    push_text(ctx, rd, wr, feedback, shutdown).await
                }
            };
        }
        p => p,
    };
    match protocol {
        Protocol::Pn532 => polled::pn532(ctx, rd, wr, feedback, shutdown).await,
        Protocol::Sm130 => polled::sm130(ctx, rd, wr, feedback, shutdown).await,
        Protocol::Id12 | Protocol::Rdm6300 => push_em4100(ctx, rd, feedback, shutdown).await,
        Protocol::Text | Protocol::Auto => push_text(ctx, rd, wr, feedback, shutdown).await,
    }
}

type Rd = ReadHalf<SerialStream>;
type Wr = WriteHalf<SerialStream>;

async fn push_em4100(
    ctx: &mut Ctx,
    rd: Rd,
    feedback: &mut mpsc::Receiver<Feedback>,
    shutdown: &CancellationToken,
) -> Result<(), ReaderError> {
    ctx.report(ReaderStatus::Connected, None).await;
    let mut frames = FramedRead::new(rd, em4100::Em4100Codec);
    let mut tick = tokio::time::interval(COUNTER_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
            item = frames.next() => match item {
                None => return Err(ReaderError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(em4100::Frame::Id(id))) => ctx.uid(id.to_vec()).await,
                Some(Ok(em4100::Frame::Corrupt { skipped, reason })) => ctx.bad_frame(reason, skipped),
            },
            // These readers beep by themselves; the host cannot drive them.
            Some(_) = feedback.recv() => {}
        }
        ctx.maybe_send_counters().await;
    }
}

async fn push_text(
    ctx: &mut Ctx,
    rd: Rd,
    mut wr: Wr,
    feedback: &mut mpsc::Receiver<Feedback>,
    shutdown: &CancellationToken,
) -> Result<(), ReaderError> {
    ctx.report(ReaderStatus::Connected, None).await;
    let mut lines = FramedRead::new(rd, text::TextCodec::default());
    let mut tick = tokio::time::interval(COUNTER_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
            item = lines.next() => match item {
                None => return Err(ReaderError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(text::Line::Uid(uid))) => ctx.uid(uid).await,
                Some(Ok(text::Line::Removed)) => ctx.presence.removed_all(),
                Some(Ok(text::Line::Ignored(line))) => {
                    if !line.is_empty() {
                        tracing::debug!(reader = %ctx.cfg.id, line, "ignored a line from the reader");
                    }
                }
                Some(Ok(text::Line::Rejected { line, reason })) => {
                    tracing::warn!(reader = %ctx.cfg.id, line, reason, "a UID line that cannot be read unambiguously; check the sketch");
                    ctx.frames_bad += 1;
                }
                Some(Ok(text::Line::Corrupt { skipped })) => ctx.bad_frame("over-long line", skipped),
            },
            Some(fb) = feedback.recv() => {
                let line = match fb {
                    Feedback::Counted => ctx.cfg.feedback_counted.clone(),
                    Feedback::NotCounted => ctx.cfg.feedback_refused.clone(),
                };
                if let Some(line) = line {
                    wr.write_all(format!("{line}\n").as_bytes()).await?;
                }
            }
        }
        ctx.maybe_send_counters().await;
    }
}
