//! How the rest of the station talks to the Station: the [`Command`]s it
//! takes, the [`StationHandle`] that sends them and waits for answers, the
//! errors those answers carry, and the contracts `app` wires between
//! adapters ([`OutboxEncoder`], [`DeviceWatch`]).
//!
//! Invariants: a reply to a tap, an action or a binding comes only after
//! it is durable (or refused); adapters reach the log only through the
//! handle's reads, never the store itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::metrics::Metrics;
use super::ring::TapRing;
use super::view::{
    Event, HotplugStatus, IdentityState, NetworkStatus, PollState, ReaderState, ReaderStatus,
    RemoteTally, Snapshot, TapEvent, XmppState,
};
use crate::config::{Config, Protocol, ReaderConfig};
use crate::domain::herd::{Feed, Heads, HerdEvent};
use crate::domain::intake::Refusal;
use crate::domain::tally::TallyView;
use crate::domain::{ActionKind, BindingError, Person, PollDef, TagUid, Tap};
use crate::store::Store;
pub use crate::store::{CSV_HEADER, ExportFormat, OutboxItem, StoreError, export_line};

/// Why a tap was refused. Nothing refused is in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("no reader {0:?} is configured")]
    UnknownReader(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the tap could not be recorded: {0}")]
    Store(StoreError),
    /// An empty data dir under an id the herd knows: the station first
    /// restores its own feed from its peers, so it never reuses a number.
    #[error("the station is restoring its log from the herd; taps wait until it has")]
    Restoring,
    #[error("the station is shutting down")]
    ShuttingDown,
}

/// What became of events a peer sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HerdApplied {
    /// Stored (and applied) now.
    pub stored: usize,
    /// Held already.
    pub duplicates: usize,
    /// Out of order (an earlier one is missing): they come again.
    pub gaps: usize,
}

/// What a herd link tells the Station about itself.
#[derive(Debug, Clone)]
pub enum HerdReport {
    /// A link's state changed (keyed by its address).
    Peer {
        view: super::view::PeerView,
        /// The feeds it holds, when it said (hello, heads).
        heads: Option<Arc<Heads>>,
    },
    /// A link is gone for good (a peer that came in and left).
    Gone { address: String },
    /// A connection was refused: who, why.
    Refused(super::view::RefusedPeer),
    /// An origin sent two events under one key (`detail` says which).
    Forked { origin: String, detail: String },
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no poll {0:?} is configured")]
    UnknownPoll(String),
    #[error("the action could not be recorded: {0}")]
    Store(StoreError),
    #[error("the station is shutting down")]
    ShuttingDown,
}

/// Why binding a new reader was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("reader id {0:?} is already in use")]
    DuplicateId(String),
    #[error("device {0} is already read by reader {1:?}")]
    DeviceInUse(String, String),
    #[error(transparent)]
    Invalid(#[from] BindingError),
    #[error("the binding could not be recorded: {0}")]
    Store(StoreError),
    #[error("the station is shutting down")]
    ShuttingDown,
}

/// What the reader supervisor is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ReaderCtl {
    Start(ReaderConfig),
    Stop(String),
}

/// What a config reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Changes now in effect.
    pub applied: Vec<String>,
    /// Changes that take a restart (`systemctl restart pollstation`).
    pub needs_restart: Vec<String>,
}

/// What became of an accepted tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOutcome {
    pub tap: Tap,
    pub counted: bool,
    /// True when this was the same tag on the same reader inside the debounce
    /// window: `tap` is then the earlier tap, and nothing new was logged.
    pub repeat: bool,
}

/// What a reader task tells the Station about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderReport {
    pub reader: String,
    pub status: ReaderStatus,
    pub error: Option<String>,
    pub frames_ok: u64,
    pub frames_bad: u64,
    pub protocol: Option<Protocol>,
}

/// The reply to a tap, once it is durable or refused.
pub type TapReply = oneshot::Sender<Result<TapOutcome, TapError>>;

/// Messages to the Station.
#[derive(Debug)]
pub enum Command {
    /// A tag arrived on a reader. The reply comes once the tap is durable.
    Tap {
        reader: String,
        tag: TagUid,
        reply: Option<TapReply>,
    },
    /// An operator action on a poll.
    Poll {
        poll: String,
        action: ActionKind,
        reply: oneshot::Sender<Result<PollState, ActionError>>,
    },
    /// A reader's status changed.
    Reader(ReaderReport),
    /// NetworkManager's view changed.
    Network(NetworkStatus),
    /// The devices systemd knows changed (or whether it can be asked).
    Hotplug(HotplugStatus),
    /// Apply a re-read config (SIGHUP, `ctl reload`).
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<ReloadReport>,
    },
    /// Are you there? (the systemd watchdog)
    Ping(oneshot::Sender<()>),
    /// The XMPP link's state.
    Xmpp { state: XmppState, detail: String },
    /// The server acknowledged these outbox rows.
    Published(Vec<i64>),
    /// A result heard over XMPP.
    Remote(RemoteTally),
    /// A tag resolved (person `None`: unknown).
    Identity {
        tag: TagUid,
        person: Option<Person>,
        source: String,
    },
    /// How identity lookups are doing.
    IdentityStatus {
        state: IdentityState,
        detail: String,
    },
    /// Add a reader at runtime (the operator binds a plugged-in device).
    BindReader {
        reader: ReaderConfig,
        reply: oneshot::Sender<Result<ReaderState, BindError>>,
    },
    /// Events from a herd peer, in feed order: stored behind this batch's
    /// local taps, applied once durable. The reply says what was kept.
    Herd {
        events: Vec<HerdEvent>,
        reply: oneshot::Sender<Result<HerdApplied, StoreError>>,
    },
    /// How the herd's links are.
    HerdStatus(HerdReport),
}

/// A counted vote to publish, with what its item shows: the poll and its
/// tally once the vote's commit is applied, and the voter if known.
#[derive(Debug, Clone, Copy)]
pub struct Vote<'a> {
    pub tap: &'a Tap,
    pub poll: &'a PollDef,
    pub tally: &'a TallyView,
    pub person: Option<&'a Person>,
}

/// Turns counted votes into outbox items (the XMPP adapter's encoding,
/// handed to the Station by `app`, so the Station never builds XML).
pub trait OutboxEncoder: Send + Sync + std::fmt::Debug {
    /// The items that publish `votes`, in order. A vote that cannot be
    /// encoded is logged by the encoder and left out: it never stops the
    /// Station.
    fn encode(&self, votes: &[Vote<'_>]) -> Vec<OutboxItem>;
}

/// Whether a reader's device is plugged in, as systemd's device units say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePresence {
    /// Not watched (no bus, no systemd, or hotplug disabled).
    Unknown,
    Present,
    Absent,
}

/// One device followed for a reader: its presence, and the name systemd
/// knows it by (for messages). The hotplug adapter makes these; `app` hands
/// readers a [`WatchDevice`] so neither adapter imports the other.
#[derive(Debug)]
pub struct DeviceWatch {
    pub presence: watch::Receiver<DevicePresence>,
    pub unit: String,
}

/// Follows a device path.
pub type WatchDevice = Arc<dyn Fn(&Path) -> DeviceWatch + Send + Sync>;

/// The export, line by line: the CSV header first, then one line per tap
/// (no line breaks; the consumer frames them).
#[derive(Debug)]
pub struct ExportLines {
    rx: mpsc::Receiver<Result<Tap, StoreError>>,
    format: ExportFormat,
    header: bool,
}

impl ExportLines {
    /// The next line; `None` at the end. After an error nothing follows.
    pub async fn next(&mut self) -> Option<Result<String, StoreError>> {
        if std::mem::take(&mut self.header) {
            return Some(Ok(CSV_HEADER.to_string()));
        }
        match self.rx.recv().await? {
            Ok(tap) => Some(Ok(export_line(&tap, self.format))),
            Err(e) => {
                self.rx.close();
                Some(Err(e))
            }
        }
    }
}

/// Cloneable handle to the Station.
#[derive(Clone, Debug)]
pub struct StationHandle {
    /// Inputs → Station: taps, operator actions, reader reports.
    pub(super) tx: mpsc::Sender<Command>,
    /// Station → anyone: the latest state.
    pub(super) state: watch::Receiver<Arc<Snapshot>>,
    /// Station → subscribers (web SSE, screen, publishers): each change.
    pub(super) events: broadcast::Sender<Event>,
    /// The latest taps announced on `events` (sent under its lock).
    pub(super) tap_ring: Arc<std::sync::Mutex<TapRing<TapEvent>>>,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    /// Station → herd links: the feeds held, after each commit.
    pub(super) heads: watch::Receiver<Arc<Heads>>,
    /// Station → herd links: each commit's new events (with a herd).
    pub(super) herd_live: Option<broadcast::Sender<Arc<[HerdEvent]>>>,
}

impl StationHandle {
    /// The station's metrics (for `/metrics`).
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Send a tap and wait until it is durable (or refused).
    pub async fn tap(&self, reader: &str, tag: TagUid) -> Result<TapOutcome, TapError> {
        let since = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Tap {
                reader: reader.to_string(),
                tag,
                reply: Some(reply),
            })
            .await
            .map_err(|_| TapError::ShuttingDown)?;
        let answer = rx.await.map_err(|_| TapError::ShuttingDown)?;
        self.metrics
            .tap_seconds
            .observe(since.elapsed().as_secs_f64());
        answer
    }

    /// Apply an operator action and wait until it is durable.
    pub async fn poll_action(
        &self,
        poll: &str,
        action: ActionKind,
    ) -> Result<PollState, ActionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Poll {
                poll: poll.to_string(),
                action,
                reply,
            })
            .await
            .map_err(|_| ActionError::ShuttingDown)?;
        rx.await.map_err(|_| ActionError::ShuttingDown)?
    }

    /// Add a reader at runtime, durably; its task is started by whoever
    /// holds the receiver `start` returned.
    pub async fn bind_reader(&self, reader: ReaderConfig) -> Result<ReaderState, BindError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::BindReader { reader, reply })
            .await
            .map_err(|_| BindError::ShuttingDown)?;
        rx.await.map_err(|_| BindError::ShuttingDown)?
    }

    /// Apply a re-read config; says what was applied and what needs a restart.
    pub async fn reload(&self, config: Config) -> Option<ReloadReport> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload {
                config: Box::new(config),
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Whether the Station task answers within `limit` (the watchdog).
    pub async fn alive(&self, limit: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send_timeout(Command::Ping(reply), limit)
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::timeout(limit, rx)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Raw command sender, for input tasks that don't wait for replies.
    #[must_use]
    pub fn sender(&self) -> mpsc::Sender<Command> {
        self.tx.clone()
    }

    #[must_use]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.borrow().clone()
    }

    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.state.clone()
    }

    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Subscribe to events and take the taps announced after seq `last` in
    /// one step: none falls between the two, none comes twice. The taps are
    /// `None` when some are no longer kept (or `last` is not one of ours).
    /// Also returns the highest seq announced so far.
    #[must_use]
    pub fn subscribe_after(
        &self,
        last: Option<u64>,
    ) -> (broadcast::Receiver<Event>, Option<Vec<TapEvent>>, u64) {
        let ring = self
            .tap_ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            self.events.subscribe(),
            last.and_then(|l| ring.after(l)),
            ring.through(),
        )
    }

    /// The log's taps after `after` (all without), line by line.
    #[must_use]
    pub fn export(&self, after: Option<(String, u64)>, format: ExportFormat) -> ExportLines {
        ExportLines {
            rx: self.store.export(after),
            format,
            header: format == ExportFormat::Csv,
        }
    }

    /// The last `n` taps, oldest first.
    pub async fn tail(&self, n: usize) -> Result<Vec<Tap>, StoreError> {
        self.store.tail(n).await
    }

    /// Whether the log holds the tap `(station, seq)` (an export cursor).
    pub async fn tap_exists(&self, station: String, seq: u64) -> Result<bool, StoreError> {
        self.store.tap_exists(station, seq).await
    }

    /// The oldest outbox items above row `after` (the XMPP publisher).
    pub async fn outbox_peek(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.store.outbox_peek(after, limit).await
    }

    /// The feeds this station holds, updated after each commit (herd links
    /// send a peer what it lacks from this).
    #[must_use]
    pub fn heads(&self) -> watch::Receiver<Arc<Heads>> {
        self.heads.clone()
    }

    /// Each commit's new events, in feed order, from now on (`None`
    /// without a herd). A receiver that lags reads the log instead.
    #[must_use]
    pub fn herd_live(&self) -> Option<broadcast::Receiver<Arc<[HerdEvent]>>> {
        self.herd_live.as_ref().map(broadcast::Sender::subscribe)
    }

    /// Up to `limit` events of a feed numbered above `after`, in order.
    pub async fn feed_after(
        &self,
        origin: Arc<str>,
        feed: Feed,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HerdEvent>, StoreError> {
        self.store.feed_after(origin, feed, after, limit).await
    }

    /// Of events a peer sent again, those that differ from the logged ones.
    pub async fn mismatching(&self, events: Vec<HerdEvent>) -> Result<Vec<HerdEvent>, StoreError> {
        self.store.mismatching(events).await
    }

    /// Hand a peer's events to the Station and wait until they are durable.
    pub async fn herd_events(&self, events: Vec<HerdEvent>) -> Result<HerdApplied, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Herd { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Where the log is, and how big (database plus WAL), for operators.
    #[must_use]
    pub fn log_file(&self) -> (&Path, u64) {
        (self.store.path(), self.store.size_bytes())
    }
}
