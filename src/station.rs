//! The Station: the one task that owns the polling state.
//!
//! Inputs (readers, the admin API, later identity, XMPP and the herd) send it
//! [`Command`]s over a bounded channel. It applies them in batches: whatever
//! arrived while the previous batch was being committed becomes the next
//! batch, written in one transaction (group commit). Only after the commit
//! does it apply the taps to the tallies, answer the senders and announce the
//! change: the latest [`Snapshot`] on a `watch`, each [`Event`] on a
//! `broadcast`. Subscribers that fall behind lag and resync from the
//! snapshot; they never hold the Station up.
//!
//! It does no I/O of its own except through the [`Store`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Binding, Config, Protocol, ReaderConfig};
use crate::metrics::{Metrics, TapLabels};
use crate::poll::{PollDef, TagUid, Tap, TapKey};
use crate::store::{
    Action, ActionKind, BoundReader, CommitStats, OutboxItem, Record, Store, StoreError,
};
use crate::tally::{Applied, Tallies, TallyView};

/// Most commands taken into one batch.
const MAX_BATCH: usize = 4096;

/// Records that follow taps (publications for the outbox, resolved
/// identities) wait at most this long for a tap commit to ride with.
const RIDERS_IDLE: Duration = Duration::from_millis(10);

/// Counters that change without a status change of their own (the XMPP
/// outbox, identity lookups) are announced in a `status` event at most this
/// often, so a watcher need not poll for them.
const COUNTERS_EVERY: Duration = Duration::from_millis(250);

/// Taps between two snapshots of the tally state: bounds the replay at start.
const SNAPSHOT_EVERY: u64 = 50_000;

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why a tap was refused. Nothing refused is in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("no reader {0:?} is configured")]
    UnknownReader(String),
    #[error("no poll is active, so slot readers have nothing to vote on")]
    NoActivePoll,
    #[error("the active poll {poll:?} has no answer in slot {slot}")]
    EmptySlot { poll: String, slot: char },
    #[error("poll {0:?} is closed")]
    PollClosed(String),
    #[error("the tap could not be recorded: {0}")]
    Store(StoreError),
    #[error("the station is shutting down")]
    ShuttingDown,
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no poll {0:?} is configured")]
    UnknownPoll(String),
    #[error("the action could not be recorded: {0}")]
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

/// Why binding a new reader was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("reader id {0:?} is already in use")]
    DuplicateId(String),
    #[error("device {0} is already read by reader {1:?}")]
    DeviceInUse(String, String),
    #[error("{0}")]
    Invalid(String),
    #[error("the binding could not be recorded: {0}")]
    Store(StoreError),
    #[error("the station is shutting down")]
    ShuttingDown,
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

/// Reader connection state, reported by the reader tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaderStatus {
    Connected,
    Disconnected,
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

/// Messages to the Station.
#[derive(Debug)]
pub enum Command {
    /// A tag arrived on a reader. The reply comes once the tap is durable.
    Tap {
        reader: String,
        tag: TagUid,
        reply: Option<oneshot::Sender<Result<TapOutcome, TapError>>>,
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
    Xmpp { state: String, detail: String },
    /// The server acknowledged these outbox rows.
    Published(Vec<i64>),
    /// A result heard over XMPP.
    Remote(RemoteTally),
    /// A tag resolved (person `None`: unknown).
    Identity {
        tag: TagUid,
        person: Option<crate::identity::Person>,
        source: String,
    },
    /// How identity lookups are doing.
    IdentityStatus { state: String, detail: String },
    /// Add a reader at runtime (the operator binds a plugged-in device).
    BindReader {
        reader: ReaderConfig,
        reply: oneshot::Sender<Result<ReaderState, BindError>>,
    },
}

/// Whether the station can reach the world, as NetworkManager says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetState {
    Online,
    /// Connected, but only locally or behind a portal.
    Limited,
    Offline,
    /// No NetworkManager, no system bus, or not watched.
    Unknown,
}

impl NetState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NetState::Online => "online",
            NetState::Limited => "limited",
            NetState::Offline => "offline",
            NetState::Unknown => "unknown",
        }
    }
}

/// The network as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkStatus {
    pub state: NetState,
    pub detail: String,
    /// Since when (ms since the epoch).
    pub since: i64,
}

/// Whether reader hotplug is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HotplugState {
    Watching,
    Unavailable,
    Disabled,
}

/// What the hotplug watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotplugStatus {
    pub state: HotplugState,
    pub detail: String,
    /// Device paths matching `[hotplug] pattern` that are plugged in.
    pub devices: Vec<String>,
}

/// The XMPP link as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XmppView {
    /// `disabled`, `connecting`, `online`, `waiting` (network offline), `error`.
    pub state: String,
    pub detail: String,
    /// Votes waiting to be published.
    pub outbox: u64,
    /// Votes published since start.
    pub published: u64,
}

/// Identity lookups as the outputs show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityView {
    /// `not configured`, `ok`, `degraded`, `offline`.
    pub state: String,
    pub detail: String,
    /// Tags waiting for a lookup.
    pub pending: u64,
    /// Tags resolved to a person.
    pub known: u64,
}

/// Results heard from another station or site over XMPP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteTally {
    /// `xmpp:<service>?;node=<node>`
    pub source: String,
    pub question_id: String,
    pub question: String,
    /// (answer id, title, count)
    pub answers: Vec<(String, String, u64)>,
    pub total: u64,
    /// When it was heard (ms since the epoch).
    pub at: i64,
}

/// Hotplug as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotplugView {
    pub state: HotplugState,
    pub detail: String,
    /// Plugged-in reader devices no reader is configured for.
    pub unbound: Vec<String>,
}

/// A poll's definition and live state, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollState {
    #[serde(flatten)]
    pub def: PollDef,
    pub active: bool,
}

/// A reader as the API and the screens show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReaderState {
    pub id: String,
    pub status: ReaderStatus,
    pub binding: Binding,
    pub protocol: Protocol,
    pub device: String,
    pub last_error: Option<String>,
    pub frames_ok: u64,
    pub frames_bad: u64,
    pub taps: u64,
}

/// Whether the log can be written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreHealth {
    pub writable: bool,
    pub error: Option<String>,
    pub taps: u64,
    pub last_commit_ms: Option<f64>,
    pub startup: StartupReplay,
}

/// How the state was rebuilt at start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StartupReplay {
    pub from_snapshot: bool,
    pub replayed_taps: usize,
    pub ms: f64,
}

/// Everything the outputs need to draw the station, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub station: String,
    pub started_at: i64,
    pub active_poll: Option<String>,
    pub polls: Vec<PollState>,
    pub tallies: Vec<TallyView>,
    pub readers: Vec<ReaderState>,
    pub store: StoreHealth,
    pub network: NetworkStatus,
    pub hotplug: HotplugView,
    pub xmpp: XmppView,
    pub remote: Vec<RemoteTally>,
    pub identity: IdentityView,
}

impl Snapshot {
    #[must_use]
    pub fn tally(&self, poll: &str) -> Option<&TallyView> {
        self.tallies.iter().find(|t| t.poll == poll)
    }
}

/// The latest taps announced, for event streams that reconnect with
/// `Last-Event-ID`: every tap with a seq in `(base, through]` is here, where
/// `base` is the seq before the oldest kept (or `through` when empty).
#[derive(Debug)]
pub struct TapRing<T> {
    items: std::collections::VecDeque<(u64, T)>,
    through: u64,
}

/// Taps kept for replay: a client away for longer gets the whole state.
pub const TAP_RING: usize = 1024;

impl<T: Clone> TapRing<T> {
    /// A ring that has seen every tap up to `through`, and keeps none.
    #[must_use]
    pub fn new(through: u64) -> Self {
        Self {
            items: std::collections::VecDeque::new(),
            through,
        }
    }

    pub fn push(&mut self, seq: u64, item: T) {
        self.items.push_back((seq, item));
        self.through = seq;
        if self.items.len() > TAP_RING {
            self.items.pop_front();
        }
    }

    /// The highest seq seen (`u64::MAX` after [`Self::break_off`], until
    /// the next push).
    #[must_use]
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Some taps were lost on the way here: nothing before the next one can
    /// be replayed.
    pub fn break_off(&mut self) {
        self.items.clear();
        self.through = u64::MAX;
    }

    /// The taps after `last`, or `None` when some of them are not kept.
    #[must_use]
    pub fn after(&self, last: u64) -> Option<Vec<T>> {
        let base = self.items.front().map_or(self.through, |(seq, _)| seq - 1);
        (base <= last && last <= self.through).then(|| {
            self.items
                .iter()
                .filter(|(seq, _)| *seq > last)
                .map(|(_, t)| t.clone())
                .collect()
        })
    }
}

/// A tap as announced publicly: no tag UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapEvent {
    pub station: Arc<str>,
    pub seq: u64,
    pub reader: Arc<str>,
    pub poll: Arc<str>,
    pub answer: Arc<str>,
    pub at: i64,
    pub counted: bool,
    /// For authenticated consumers (operator page, screen thanks); never serialised.
    #[serde(skip)]
    pub tag: TagUid,
    /// The voter's first name when known: for the screen's thanks.
    #[serde(skip)]
    pub first_name: Option<Arc<str>>,
    /// The voter's name, public only with `[identity] show_names = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Arc<str>>,
}

/// A tap's voter became known after the tap (for the screen's thanks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonEvent {
    pub tag: TagUid,
    pub first_name: Arc<str>,
}

/// A change, announced after it is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Tap(TapEvent),
    Tally(TallyView),
    Reader(ReaderState),
    /// Store health or poll state changed; the payload is the new snapshot.
    Status(Arc<Snapshot>),
    /// A recent voter's name arrived.
    Person(PersonEvent),
}

/// Cloneable handle to the Station.
#[derive(Clone, Debug)]
pub struct StationHandle {
    /// Inputs → Station: taps, operator actions, reader reports.
    tx: mpsc::Sender<Command>,
    /// Station → anyone: the latest state.
    state: watch::Receiver<Arc<Snapshot>>,
    /// Station → subscribers (web SSE, screen, publishers): each change.
    events: broadcast::Sender<Event>,
    /// The latest taps announced on `events` (sent under its lock).
    tap_ring: Arc<std::sync::Mutex<TapRing<TapEvent>>>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl StationHandle {
    /// The station's metrics (for `/metrics`).
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
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
            ring.through,
        )
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The state the Station task owns.
struct Station {
    id: Arc<str>,
    polls: Vec<PollDef>,
    open: HashMap<String, bool>,
    active: Option<String>,
    tallies: Tallies,
    readers: Vec<ReaderState>,
    reader_index: HashMap<String, usize>,
    debounce: Duration,
    recent: HashMap<(Arc<str>, TagUid), (Tap, bool, Instant)>,
    next_seq: u64,
    last_at: i64,
    taps_logged: u64,
    /// A change not yet in the published snapshot (reader reports).
    unpublished: bool,
    /// `taps_logged` at the last snapshot; `None` when the stored snapshot
    /// (if any) is behind the state.
    snapshot_taps: Option<u64>,
    store: Store,
    store_health: StoreHealth,
    network: NetworkStatus,
    hotplug: HotplugStatus,
    /// Reader tasks to start or stop (runtime binding, reload).
    reader_ctl: mpsc::UnboundedSender<ReaderCtl>,
    /// Every reader's settings (config and bound), by id.
    reader_cfgs: HashMap<String, ReaderConfig>,
    /// The config as last loaded.
    config: Config,
    xmpp: XmppView,
    remote: Vec<RemoteTally>,
    identity: IdentityView,
    /// Resolved tags: person (None = unknown) and when.
    people: HashMap<TagUid, (Option<crate::identity::Person>, i64)>,
    /// Tags queued for a lookup.
    lookups_pending: std::collections::HashSet<TagUid>,
    lookups: mpsc::UnboundedSender<TagUid>,
    /// Publications not yet in the outbox, and resolved identities not yet
    /// logged: they ride with the next tap commit, or go alone once the
    /// Station has been idle for [`RIDERS_IDLE`] (since `riders_since`).
    outbox_pending: Vec<OutboxItem>,
    outbox_through: u64,
    identities_pending: Vec<ResolvedIdentity>,
    riders_since: Option<Instant>,
    /// The counters as last announced, when, and when they are due again.
    counters_announced: Counters,
    /// A snapshot went out (on the watch, which a stream reads when it
    /// connects) with counters that no status event carried: a client may
    /// hold them, so the next move must be announced even if the counters
    /// are back where the last announcement left them.
    counters_unannounced: bool,
    status_at: Instant,
    counters_due: Option<Instant>,
    started_at: i64,
    state_tx: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Event>,
    tap_ring: Arc<std::sync::Mutex<TapRing<TapEvent>>>,
    metrics: Arc<Metrics>,
}

type TapReply = oneshot::Sender<Result<TapOutcome, TapError>>;

/// XMPP outbox, published; identity lookups pending, people known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters(u64, u64, u64, u64);

/// What a snapshot saves: the tally state, and the tags whose lookup was
/// still pending (a logged tap is its own lookup request; taps before the
/// snapshot are not replayed, so their pending lookups are kept here).
#[derive(Serialize, serde::Deserialize)]
struct SavedState {
    #[serde(flatten)]
    tallies: crate::tally::TallyState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_lookups: Vec<TagUid>,
}

/// An identity answer waiting to be logged.
struct ResolvedIdentity {
    tag: TagUid,
    person: Option<crate::identity::Person>,
    source: String,
    at: i64,
}

impl ResolvedIdentity {
    fn record(&self) -> Record {
        Record::Identity {
            tag: self.tag.clone(),
            person: self.person.clone(),
            source: self.source.clone(),
            at: self.at,
        }
    }
}

/// A reply owed once the current batch commits.
enum Waiter {
    /// The batch's tap at this index.
    New(usize, Option<TapReply>),
    /// A repeat of the batch's tap at this index.
    Repeat(usize, TapReply),
}

/// A started Station.
pub struct Started {
    pub handle: StationHandle,
    pub task: tokio::task::JoinHandle<()>,
    /// Reader tasks to start or stop beyond the config's readers: those
    /// bound at runtime (the logged ones arrive at once), and reloads.
    pub reader_ctl: mpsc::UnboundedReceiver<ReaderCtl>,
    /// Tags to resolve (identity); the queued ones arrive at once.
    pub lookups: mpsc::UnboundedReceiver<TagUid>,
}

/// Open the store, rebuild the state from the log, and start the Station.
pub fn start(
    config: &Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<Started, StoreError> {
    std::fs::create_dir_all(&config.station.data_dir).map_err(|e| {
        StoreError::Io(format!(
            "cannot create the data directory {}: {e}",
            config.station.data_dir.display()
        ))
    })?;
    check_writable(&config.station.data_dir)?;
    let db = config.station.data_dir.join("pollstation.db");
    let mut open: HashMap<String, bool> = config
        .polls
        .iter()
        .map(|p| (p.id.clone(), p.open))
        .collect();
    let mut active = config.station.active_poll.clone().or_else(|| {
        config
            .polls
            .iter()
            .find(|p| p.open)
            .or(config.polls.first())
            .map(|p| p.id.clone())
    });
    let started = std::time::Instant::now();
    let tallies = std::cell::RefCell::new(Tallies::new(&config.polls));
    let mut bound: Vec<BoundReader> = Vec::new();
    let publishing = config.xmpp.is_some();
    let mut outbox_mark: Option<u64> = None;
    let mut people: HashMap<TagUid, (Option<crate::identity::Person>, i64)> = HashMap::new();
    // Tags whose lookup is pending: from the snapshot, the replayed taps,
    // and logs written before taps were the queue.
    let queued: std::cell::RefCell<std::collections::HashSet<TagUid>> = Default::default();
    let resolving = config.identity.is_some();
    // Taps committed but not enqueued for publishing (a crash in between).
    let mut unenqueued: Vec<Tap> = Vec::new();
    let restore = |data: &[u8]| match serde_json::from_slice::<SavedState>(data) {
        Ok(state) => match Tallies::from_state(&config.polls, state.tallies) {
            Some(t) => {
                *tallies.borrow_mut() = t;
                queued.borrow_mut().extend(state.pending_lookups);
                true
            }
            None => false,
        },
        Err(e) => {
            tracing::warn!(error = %e, "snapshot unreadable; replaying the whole log");
            false
        }
    };
    let (store, rec) = Store::open(&db, &config.station.id, restore, |record| match record {
        Record::Action(a) => match a.kind {
            ActionKind::Open | ActionKind::Close => {
                if let Some(o) = open.get_mut(&a.poll) {
                    *o = a.kind == ActionKind::Open;
                }
            }
            ActionKind::Activate => {
                if config.polls.iter().any(|p| p.id == a.poll) {
                    active = Some(a.poll);
                }
            }
            ActionKind::Reset => {
                if let Some(c) = a.cutoff {
                    tallies.borrow_mut().reset(&a.poll, c);
                }
            }
        },
        Record::Tap(tap) => {
            if resolving {
                queued.borrow_mut().insert(tap.tag.clone());
            }
            let applied = tallies.borrow_mut().apply(&tap);
            if applied == Applied::Unknown {
                tracing::warn!(station = %tap.station, seq = tap.seq, poll = %tap.poll, answer = %tap.answer,
                    "logged tap names a poll or answer no longer in the config; kept in the log, not counted");
            }
            if publishing
                && applied.counted()
                && *tap.station == *config.station.id
                && outbox_mark.is_some_and(|m| tap.seq > m)
            {
                unenqueued.push(tap);
            }
        }
        Record::OutboxMark(m) => outbox_mark = m,
        Record::Identity {
            tag, person, at, ..
        } => {
            // The engine is order-independent: identities may come first.
            tallies
                .borrow_mut()
                .assign(&tag, person.as_ref().map(|p| Arc::from(p.id.as_str())));
            people.insert(tag, (person, at));
        }
        Record::Reader(b) => bound.push(b),
        Record::Snapshot { .. } | Record::Outbox { .. } | Record::Published(_) => {}
    })?;
    let tallies = tallies.into_inner();
    let mut queued = queued.into_inner();
    queued.extend(rec.legacy_lookups.iter().cloned());
    if resolving {
        // Every tag a poll counts by person and nobody has answered for yet
        // (also those tapped before identity was configured).
        queued.extend(tallies.tags().into_iter().cloned());
    }
    queued.retain(|t| !people.contains_key(t));
    let queued: Vec<TagUid> = queued.into_iter().collect();
    let startup_info = StartupReplay {
        from_snapshot: rec.from_snapshot,
        replayed_taps: rec.replayed,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    tracing::info!(
        taps = rec.taps,
        replayed = rec.replayed,
        actions = rec.actions,
        from_snapshot = rec.from_snapshot,
        next_seq = rec.next_seq,
        elapsed_ms = started.elapsed().as_millis(),
        db = %db.display(),
        "log replayed"
    );

    let mut readers: Vec<ReaderState> = config.readers.iter().map(reader_state).collect();
    let mut reader_cfgs: HashMap<String, ReaderConfig> = config
        .readers
        .iter()
        .map(|r| (r.id.clone(), r.clone()))
        .collect();
    let (reader_ctl_tx, reader_ctl) = mpsc::unbounded_channel();
    let (lookups_tx, lookups) = mpsc::unbounded_channel();
    for b in bound {
        let cfg = b.into_config();
        if let Some(r) = readers
            .iter()
            .find(|r| r.id == cfg.id || r.device == cfg.device.display().to_string())
        {
            tracing::info!(reader = %cfg.id, configured = %r.id, "a reader bound at runtime is now in the config; the config wins");
            continue;
        }
        if let Err(e) = validate_binding(&cfg.binding, &config.polls) {
            tracing::warn!(reader = %cfg.id, error = %e, "a reader bound at runtime no longer fits the polls; not started");
            continue;
        }
        readers.push(reader_state(&cfg));
        reader_cfgs.insert(cfg.id.clone(), cfg.clone());
        let _ = reader_ctl_tx.send(ReaderCtl::Start(cfg));
    }
    let reader_index = readers
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();

    let (events, _) = broadcast::channel(4096);
    let placeholder = Arc::new(Snapshot {
        station: config.station.id.clone(),
        started_at: now_ms(),
        active_poll: None,
        polls: Vec::new(),
        tallies: Vec::new(),
        readers: Vec::new(),
        store: StoreHealth {
            writable: true,
            error: None,
            taps: 0,
            last_commit_ms: None,
            startup: startup_info,
        },
        network: unknown_network(),
        hotplug: HotplugView {
            state: HotplugState::Unavailable,
            detail: String::new(),
            unbound: Vec::new(),
        },
        xmpp: XmppView {
            state: "disabled".into(),
            detail: String::new(),
            outbox: 0,
            published: 0,
        },
        remote: Vec::new(),
        identity: IdentityView {
            state: "not configured".into(),
            detail: String::new(),
            pending: 0,
            known: 0,
        },
    });
    let (state_tx, state_rx) = watch::channel(placeholder);
    let mut station = Station {
        id: config.station.id.as_str().into(),
        polls: config.polls.clone(),
        open,
        active,
        tallies,
        readers,
        reader_index,
        debounce: config.station.debounce,
        recent: HashMap::new(),
        next_seq: rec.next_seq,
        last_at: rec.last_at,
        taps_logged: rec.taps as u64,
        unpublished: false,
        snapshot_taps: (rec.from_snapshot && rec.replayed == 0).then_some(rec.taps as u64),
        store: store.clone(),
        store_health: StoreHealth {
            writable: true,
            error: None,
            taps: rec.taps as u64,
            last_commit_ms: None,
            startup: startup_info,
        },
        network: unknown_network(),
        hotplug: HotplugStatus {
            state: HotplugState::Unavailable,
            detail: "not started yet".into(),
            devices: Vec::new(),
        },
        reader_ctl: reader_ctl_tx,
        reader_cfgs,
        config: config.clone(),
        xmpp: XmppView {
            state: if publishing { "connecting" } else { "disabled" }.into(),
            detail: String::new(),
            outbox: rec.outbox_depth,
            published: 0,
        },
        remote: Vec::new(),
        identity: IdentityView {
            state: if config.identity.is_some() {
                "starting"
            } else {
                "not configured"
            }
            .into(),
            detail: String::new(),
            pending: queued.len() as u64,
            known: people.values().filter(|(p, _)| p.is_some()).count() as u64,
        },
        people,
        lookups_pending: queued.iter().cloned().collect(),
        lookups: lookups_tx,
        outbox_pending: Vec::new(),
        outbox_through: 0,
        identities_pending: Vec::new(),
        riders_since: None,
        counters_announced: Counters::default(),
        counters_unannounced: false,
        status_at: Instant::now(),
        counters_due: None,
        started_at: now_ms(),
        state_tx,
        events: events.clone(),
        tap_ring: Arc::new(std::sync::Mutex::new(TapRing::new(
            rec.next_seq.saturating_sub(1),
        ))),
        metrics: metrics.clone(),
    };
    station.publish_snapshot();
    for tag in queued {
        let _ = station.lookups.send(tag);
    }
    let recovered = if publishing {
        if outbox_mark.is_none() {
            // Publishing starts now: the log so far is not backfilled.
            Some((Vec::new(), rec.next_seq.saturating_sub(1)))
        } else if unenqueued.is_empty() {
            None
        } else {
            tracing::info!(
                taps = unenqueued.len(),
                "enqueueing counted taps that were logged but not yet enqueued for XMPP"
            );
            let through = unenqueued.last().map_or(0, |t| t.seq);
            Some((station.outbox_items(&unenqueued), through))
        }
    } else {
        None
    };

    let (tx, rx) = mpsc::channel(MAX_BATCH);
    let handle = StationHandle {
        tx,
        state: state_rx,
        events,
        tap_ring: station.tap_ring.clone(),
        store,
        metrics,
    };
    let task = tokio::spawn(async move {
        if let Some((items, through)) = recovered {
            station.enqueue(items, through).await;
        }
        station.run(rx, shutdown).await;
    });
    Ok(Started {
        handle,
        task,
        reader_ctl,
        lookups,
    })
}

fn unknown_network() -> NetworkStatus {
    NetworkStatus {
        state: NetState::Unknown,
        detail: "not watched yet".into(),
        since: now_ms(),
    }
}

fn reader_state(r: &ReaderConfig) -> ReaderState {
    ReaderState {
        id: r.id.clone(),
        status: ReaderStatus::Disconnected,
        binding: r.binding.clone(),
        protocol: r.protocol,
        device: r.device.display().to_string(),
        last_error: Some("not opened yet".into()),
        frames_ok: 0,
        frames_bad: 0,
        taps: 0,
    }
}

/// Whether a binding names what the polls have.
fn validate_binding(binding: &Binding, polls: &[PollDef]) -> Result<(), String> {
    match binding {
        Binding::Slot { slot } if slot.is_ascii_uppercase() => Ok(()),
        Binding::Slot { slot } => Err(format!(
            "slot {slot:?} is not one answer letter (A, B, C, …)"
        )),
        Binding::Fixed { poll, answer } => match polls.iter().find(|p| &p.id == poll) {
            None => Err(format!("no poll {poll:?} is configured")),
            Some(p) if p.answer_index(answer).is_none() => {
                Err(format!("poll {poll:?} has no answer {answer:?}"))
            }
            Some(_) => Ok(()),
        },
    }
}

/// Fail early and clearly if the data directory cannot be written: SQLite
/// would only say "unable to open database file".
fn check_writable(dir: &std::path::Path) -> Result<(), StoreError> {
    let probe = dir.join(".pollstation-write-test");
    let result = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
    result.map_err(|e| {
        let msg = format!("the data directory {} is not writable: {e}", dir.display());
        match e.raw_os_error() {
            Some(30) => StoreError::ReadOnly(msg), // EROFS
            Some(28) => StoreError::Full(msg),     // ENOSPC
            _ => StoreError::Io(msg),
        }
    })
}

impl Station {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        if self.snapshot_due() {
            // A long replay just happened: don't make the next start repeat it.
            self.snapshot().await;
        }
        loop {
            let riders_due = self.riders_since.map(|t| t + RIDERS_IDLE);
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(c) => c,
                    None => break,
                },
                () = async {
                    match riders_due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.flush_riders().await;
                    if self.unpublished {
                        self.publish_snapshot();
                    }
                    self.counters_moved();
                    continue;
                }
                () = async {
                    match self.counters_due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.counters_due = None;
                    self.counters_moved();
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.handle_batch(batch).await;
            if self.snapshot_due() {
                self.snapshot().await;
            }
            self.counters_moved();
        }
        // Stop intake, then finish what was already accepted into the queue.
        rx.close();
        let mut rest = Vec::new();
        while let Some(c) = rx.recv().await {
            rest.push(c);
        }
        if !rest.is_empty() {
            tracing::info!(
                commands = rest.len(),
                "draining queued commands before exit"
            );
            self.handle_batch(rest).await;
        }
        self.flush_riders().await;
        if self.snapshot_taps != Some(self.taps_logged) {
            self.snapshot().await;
        }
        self.store.close().await;
        tracing::info!(taps = self.taps_logged, "station stopped; log is flushed");
    }

    /// Whether enough has happened since the last snapshot to take another.
    fn snapshot_due(&self) -> bool {
        let since = self
            .snapshot_taps
            .map_or(u64::MAX, |s| self.taps_logged - s);
        since >= SNAPSHOT_EVERY
    }

    /// Save the tally state so the next start replays only what follows.
    async fn snapshot(&mut self) {
        // A snapshot covers taps: their publications must be in the outbox
        // first, or a crash would skip them (replay starts after it).
        self.flush_riders().await;
        if !self.outbox_pending.is_empty() {
            // Not written (the store refused): no snapshot past them.
            return;
        }
        let started = std::time::Instant::now();
        let saved = SavedState {
            tallies: self.tallies.to_state(),
            pending_lookups: self.lookups_pending.iter().cloned().collect(),
        };
        let data = match serde_json::to_vec(&saved) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the tally state; no snapshot");
                return;
            }
        };
        let bytes = data.len();
        let record = Record::Snapshot {
            data,
            at: now_ms(),
            taps: self.taps_logged,
        };
        match self.store.append(vec![record]).await {
            Ok(_) => {
                self.snapshot_taps = Some(self.taps_logged);
                tracing::debug!(
                    taps = self.taps_logged,
                    bytes,
                    elapsed_ms = started.elapsed().as_millis(),
                    "snapshot saved"
                );
            }
            // Only a cache: the next start replays more of the log.
            Err(e) => tracing::warn!(error = %e, "snapshot not saved"),
        }
    }

    async fn handle_batch(&mut self, batch: Vec<Command>) {
        let mut taps: Vec<Tap> = Vec::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut in_batch: HashMap<(Arc<str>, TagUid), usize> = HashMap::new();
        let now = Instant::now();
        for cmd in batch {
            match cmd {
                Command::Tap { reader, tag, reply } => {
                    match self.prepare_tap(&reader, tag, now, &taps, &in_batch) {
                        Err(e) => {
                            tracing::info!(reader = %reader, error = %e, "tap refused");
                            if let Some(r) = reply {
                                let _ = r.send(Err(e));
                            }
                        }
                        Ok(Prepared::RepeatDurable(outcome)) => {
                            if let Some(r) = reply {
                                let _ = r.send(Ok(outcome));
                            }
                        }
                        Ok(Prepared::RepeatInBatch(i)) => {
                            if let Some(r) = reply {
                                waiters.push(Waiter::Repeat(i, r));
                            }
                        }
                        Ok(Prepared::New(tap)) => {
                            in_batch.insert((tap.reader.clone(), tap.tag.clone()), taps.len());
                            waiters.push(Waiter::New(taps.len(), reply));
                            taps.push(tap);
                        }
                    }
                }
                Command::Poll {
                    poll,
                    action,
                    reply,
                } => {
                    // Actions change what later taps mean: commit what came before first.
                    self.commit_taps(std::mem::take(&mut taps), std::mem::take(&mut waiters))
                        .await;
                    in_batch.clear();
                    let result = self.apply_action(&poll, action).await;
                    let _ = reply.send(result);
                }
                Command::Reader(report) => self.apply_reader_report(report),
                Command::Network(n) => {
                    if n.state != self.network.state || n.detail != self.network.detail {
                        self.network = n;
                        self.announce_status();
                    }
                }
                Command::Hotplug(h) => {
                    if h != self.hotplug {
                        self.hotplug = h;
                        self.announce_status();
                    }
                }
                Command::Ping(reply) => {
                    let _ = reply.send(());
                }
                Command::Xmpp { state, detail } => {
                    if state != self.xmpp.state || detail != self.xmpp.detail {
                        self.xmpp.state = state;
                        self.xmpp.detail = detail;
                        self.announce_status();
                    }
                }
                Command::Published(ids) => {
                    let n = ids.len() as u64;
                    match self.store.append(vec![Record::Published(ids)]).await {
                        Ok(stats) => {
                            self.store_ok(stats);
                            self.xmpp.outbox = self.xmpp.outbox.saturating_sub(n);
                            self.xmpp.published += n;
                            self.unpublished = true;
                        }
                        // Published again later: same item ids, no duplicates.
                        Err(e) => self.store_failed(&e),
                    }
                }
                Command::IdentityStatus { state, detail } => {
                    if state != self.identity.state || detail != self.identity.detail {
                        self.identity.state = state;
                        self.identity.detail = detail;
                        self.announce_status();
                    }
                }
                Command::Identity {
                    tag,
                    person,
                    source,
                } => {
                    if !self.people.contains_key(&tag) && !self.lookups_pending.contains(&tag) {
                        // A changed people file names a tag never tapped here.
                        continue;
                    }
                    // Logged with the next tap commit (or alone when idle):
                    // an fsync of its own would hold up the taps behind it.
                    self.identities_pending.push(ResolvedIdentity {
                        tag,
                        person,
                        source,
                        at: now_ms(),
                    });
                    self.riders_since.get_or_insert_with(Instant::now);
                }
                Command::Remote(r) => {
                    self.remote
                        .retain(|x| !(x.source == r.source && x.question_id == r.question_id));
                    self.remote.push(r);
                    self.announce_status();
                }
                Command::Reload { config, reply } => {
                    let report = self.reload(*config);
                    let _ = reply.send(report);
                }
                Command::BindReader { reader, reply } => {
                    let result = self.bind_reader(reader).await;
                    let _ = reply.send(result);
                }
            }
        }
        self.commit_taps(taps, waiters).await;
        // Commits and actions publish as they happen; only reader reports wait.
        if self.unpublished {
            self.publish_snapshot();
        }
    }

    fn prepare_tap(
        &mut self,
        reader: &str,
        tag: TagUid,
        now: Instant,
        batch: &[Tap],
        in_batch: &HashMap<(Arc<str>, TagUid), usize>,
    ) -> Result<Prepared, TapError> {
        let idx = *self
            .reader_index
            .get(reader)
            .ok_or_else(|| TapError::UnknownReader(reader.to_string()))?;
        let reader_id: Arc<str> = self.readers[idx].id.as_str().into();
        let key = (reader_id.clone(), tag.clone());
        if let Some(&i) = in_batch.get(&key) {
            return Ok(Prepared::RepeatInBatch(i));
        }
        if let Some((tap, counted, when)) = self.recent.get(&key)
            && now.duration_since(*when) < self.debounce
        {
            return Ok(Prepared::RepeatDurable(TapOutcome {
                tap: tap.clone(),
                counted: *counted,
                repeat: true,
            }));
        }
        let (poll, answer) = match &self.readers[idx].binding {
            Binding::Fixed { poll, answer } => (poll.clone(), answer.clone()),
            Binding::Slot { slot } => {
                let active = self.active.clone().ok_or(TapError::NoActivePoll)?;
                let def = self
                    .polls
                    .iter()
                    .find(|p| p.id == active)
                    .ok_or(TapError::NoActivePoll)?;
                let answer = def
                    .answer_for_slot(*slot)
                    .ok_or_else(|| TapError::EmptySlot {
                        poll: active.clone(),
                        slot: *slot,
                    })?;
                (active, answer.id.clone())
            }
        };
        if !self.open.get(&poll).copied().unwrap_or(false) {
            return Err(TapError::PollClosed(poll));
        }
        let at = now_ms().max(self.last_at);
        self.last_at = at;
        let seq = self.next_seq + batch.len() as u64;
        Ok(Prepared::New(Tap {
            station: self.id.clone(),
            seq,
            reader: reader_id,
            tag,
            at,
            poll: poll.into(),
            answer: answer.into(),
        }))
    }

    async fn commit_taps(&mut self, taps: Vec<Tap>, waiters: Vec<Waiter>) {
        if taps.is_empty() && waiters.is_empty() {
            return;
        }
        self.commit(taps, waiters).await;
    }

    /// Log what waits to ride with a tap commit, now (idle, snapshot, stop).
    async fn flush_riders(&mut self) {
        self.riders_since = None;
        if self.outbox_pending.is_empty() && self.identities_pending.is_empty() {
            return;
        }
        self.commit(Vec::new(), Vec::new()).await;
    }

    /// One transaction: the taps, their lookups, and the riders.
    async fn commit(&mut self, taps: Vec<Tap>, waiters: Vec<Waiter>) {
        let mut records: Vec<Record> = taps.iter().cloned().map(Record::Tap).collect();
        // A tap is its own durable lookup request: after a crash, every
        // logged tag without an answer is looked up again (see `start`).
        let now_wall = now_ms();
        let mut to_look_up: Vec<TagUid> = Vec::new();
        for t in &taps {
            if self.needs_lookup(&t.tag, now_wall) && !to_look_up.contains(&t.tag) {
                to_look_up.push(t.tag.clone());
            }
        }
        // Earlier publications and identities ride with this commit (no
        // fsync of their own).
        let riding = std::mem::take(&mut self.outbox_pending);
        let riding_n = riding.len() as u64;
        if !riding.is_empty() {
            records.push(Record::Outbox {
                items: riding.clone(),
                through: self.outbox_through,
            });
        }
        let identities = std::mem::take(&mut self.identities_pending);
        records.extend(identities.iter().map(ResolvedIdentity::record));
        let result = self.store.append(records).await;
        match result {
            Err(e) => {
                self.store_failed(&e);
                // Not written: try them again with the next commit.
                self.outbox_pending.splice(0..0, riding);
                self.identities_pending.splice(0..0, identities);
                for w in waiters {
                    let reply = match w {
                        Waiter::New(_, r) => r,
                        Waiter::Repeat(_, r) => Some(r),
                    };
                    if let Some(r) = reply {
                        let _ = r.send(Err(TapError::Store(e.clone())));
                    }
                }
            }
            Ok(stats) => {
                self.store_ok(stats);
                if riding_n > 0 {
                    self.xmpp.outbox += riding_n;
                    self.unpublished = true;
                }
                self.riders_since = None;
                for tag in to_look_up {
                    self.lookups_pending.insert(tag.clone());
                    let _ = self.lookups.send(tag);
                }
                self.next_seq += taps.len() as u64;
                self.taps_logged += taps.len() as u64;
                let now = Instant::now();
                let mut counted = Vec::with_capacity(taps.len());
                let mut announce = Vec::with_capacity(taps.len() + 1);
                let mut changed: Vec<Arc<str>> = Vec::new();
                for tap in &taps {
                    let applied = self.tallies.apply(tap);
                    let c = applied.counted();
                    counted.push(c);
                    if applied != Applied::Unknown && !changed.contains(&tap.poll) {
                        changed.push(tap.poll.clone());
                    }
                    if let Some(&i) = self.reader_index.get(&*tap.reader) {
                        self.readers[i].taps += 1;
                    }
                    self.metrics
                        .taps
                        .get_or_create(&TapLabels {
                            reader: tap.reader.to_string(),
                            counted: c.to_string(),
                        })
                        .inc();
                    self.recent
                        .insert((tap.reader.clone(), tap.tag.clone()), (tap.clone(), c, now));
                    let person = self.person_of(&tap.tag);
                    let show = self.config.identity.as_ref().is_some_and(|i| i.show_names);
                    announce.push(Event::Tap(TapEvent {
                        station: tap.station.clone(),
                        seq: tap.seq,
                        reader: tap.reader.clone(),
                        poll: tap.poll.clone(),
                        answer: tap.answer.clone(),
                        at: tap.at,
                        counted: c,
                        tag: tap.tag.clone(),
                        first_name: person
                            .filter(|p| !p.first.is_empty())
                            .map(|p| p.first.as_str().into()),
                        name: person.filter(|_| show).map(|p| p.name.as_str().into()),
                    }));
                }
                for id in identities {
                    let polls = self.apply_identity(id, &mut announce);
                    changed.extend(polls.into_iter().map(Arc::from));
                }
                changed.sort();
                changed.dedup();
                for poll in changed {
                    if let Some(view) = self.tallies.view(&poll) {
                        announce.push(Event::Tally(view));
                    }
                }
                self.prune_recent(now);
                // The state first (a sender that reads back after its 201
                // sees its tap), then the senders (one wake-up each), then
                // the announcements (possibly thousands of SSE clients).
                self.publish_snapshot();
                for w in waiters {
                    let (i, reply, repeat) = match w {
                        Waiter::New(i, r) => (i, r, false),
                        Waiter::Repeat(i, r) => (i, Some(r), true),
                    };
                    if let Some(r) = reply {
                        let _ = r.send(Ok(TapOutcome {
                            tap: taps[i].clone(),
                            counted: counted[i],
                            repeat,
                        }));
                    }
                }
                // Taps go into the ring and out under its lock, so a stream
                // that reconnects sees each exactly once (`subscribe_after`).
                let mut ring = self
                    .tap_ring
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for e in announce {
                    if let Event::Tap(t) = &e {
                        ring.push(t.seq, t.clone());
                    }
                    let _ = self.events.send(e);
                }
                drop(ring);
                if self.config.xmpp.is_some() {
                    let counted_taps: Vec<Tap> = taps
                        .iter()
                        .zip(&counted)
                        .filter(|(_, c)| **c)
                        .map(|(t, _)| t.clone())
                        .collect();
                    if !counted_taps.is_empty() {
                        self.outbox_through = counted_taps.last().map_or(0, |t| t.seq);
                        let items = self.outbox_items(&counted_taps);
                        self.outbox_pending.extend(items);
                        self.riders_since.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
    }

    /// Apply an identity that is now in the log: names, and tallies when two
    /// tags turn out to be one person. Returns the polls whose tally changed;
    /// the thanks for a known name goes to `announce`.
    fn apply_identity(&mut self, id: ResolvedIdentity, announce: &mut Vec<Event>) -> Vec<String> {
        let ResolvedIdentity {
            tag, person, at, ..
        } = id;
        self.lookups_pending.remove(&tag);
        let changed = self
            .tallies
            .assign(&tag, person.as_ref().map(|p| Arc::from(p.id.as_str())));
        if let Some(p) = &person
            && !p.first.is_empty()
        {
            announce.push(Event::Person(PersonEvent {
                tag: tag.clone(),
                first_name: p.first.as_str().into(),
            }));
        }
        let known_now = person.is_some();
        let known_before = self
            .people
            .insert(tag, (person, at))
            .is_some_and(|(p, _)| p.is_some());
        // Kept as a count: it is read with every snapshot.
        match (known_before, known_now) {
            (false, true) => self.identity.known += 1,
            (true, false) => self.identity.known -= 1,
            _ => {}
        }
        self.unpublished = true;
        changed
    }

    /// Whether a tag needs a (new) lookup.
    fn needs_lookup(&self, tag: &TagUid, now: i64) -> bool {
        let Some(cfg) = &self.config.identity else {
            return false;
        };
        if self.lookups_pending.contains(tag) {
            return false;
        }
        match self.people.get(tag) {
            None => true,
            Some((p, at)) => {
                let ttl = if p.is_some() {
                    cfg.ttl
                } else {
                    cfg.negative_ttl
                };
                now - at > i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
            }
        }
    }

    /// The known person of a tag.
    fn person_of(&self, tag: &TagUid) -> Option<&crate::identity::Person> {
        self.people.get(tag).and_then(|(p, _)| p.as_ref())
    }

    /// The publications of counted taps, with their polls' counts now.
    fn outbox_items(&self, taps: &[Tap]) -> Vec<OutboxItem> {
        let Some(x) = &self.config.xmpp else {
            return Vec::new();
        };
        let mut questions: HashMap<&str, crate::xmpp::payload::Question> = HashMap::new();
        let mut items = Vec::with_capacity(taps.len());
        for tap in taps {
            if !questions.contains_key(&*tap.poll) {
                let (Some(def), Some(view)) = (
                    self.polls.iter().find(|p| *p.id == *tap.poll),
                    self.tallies.view(&tap.poll),
                ) else {
                    continue;
                };
                questions.insert(&tap.poll, crate::xmpp::payload::question(def, &view));
            }
            let q = &questions[&*tap.poll];
            let vote = crate::xmpp::payload::Vote {
                station: tap.station.to_string(),
                seq: tap.seq,
                reader: tap.reader.to_string(),
                tag: x.publish_tags.then(|| tap.tag.as_str().to_string()),
                poll: tap.poll.to_string(),
                answer: tap.answer.to_string(),
                at: tap.at,
                person_title: self.person_of(&tap.tag).map(|p| p.name.clone()),
                person_image: None,
                person_id: self.person_of(&tap.tag).map(|p| p.id.clone()),
            };
            items.push(OutboxItem {
                id: 0,
                seq: tap.seq,
                node: format!("{}{}", x.node_prefix, tap.poll),
                item_id: crate::xmpp::payload::item_id(&tap.station, tap.seq),
                payload: String::from(&crate::xmpp::payload::build(&vote, q)),
                at: tap.at,
            });
        }
        items
    }

    /// Write publications to the outbox (after the taps are durable).
    async fn enqueue(&mut self, items: Vec<OutboxItem>, through: u64) {
        let n = items.len() as u64;
        match self
            .store
            .append(vec![Record::Outbox { items, through }])
            .await
        {
            Ok(_) => {
                self.xmpp.outbox += n;
                self.unpublished = true;
            }
            // The taps are in the log above the mark: the next start enqueues them.
            Err(e) => {
                tracing::warn!(error = %e, items = n, "cannot enqueue votes for XMPP now; they are enqueued at the next start")
            }
        }
    }

    fn prune_recent(&mut self, now: Instant) {
        if self.recent.len() > 10_000 {
            let window = self.debounce;
            self.recent
                .retain(|_, (_, _, when)| now.duration_since(*when) < window);
        }
    }

    fn store_ok(&mut self, stats: CommitStats) {
        self.metrics
            .commit_seconds
            .observe(stats.duration.as_secs_f64());
        self.metrics.batch_size.observe(stats.records as f64);
        let was_failing = !self.store_health.writable;
        self.store_health.writable = true;
        self.store_health.error = None;
        self.store_health.last_commit_ms = Some(stats.duration.as_secs_f64() * 1000.0);
        if was_failing {
            tracing::info!("store: writing again");
            self.announce_status();
        }
    }

    fn store_failed(&mut self, e: &StoreError) {
        let changed = self.store_health.error.as_deref() != Some(&e.to_string());
        self.store_health.writable = false;
        self.store_health.error = Some(e.to_string());
        if changed {
            self.announce_status();
        }
    }

    fn announce_status(&mut self) {
        let snap = self.publish_snapshot();
        self.counters_announced = self.counters();
        self.counters_unannounced = false;
        self.status_at = Instant::now();
        let _ = self.events.send(Event::Status(snap));
    }

    fn counters(&self) -> Counters {
        Counters(
            self.xmpp.outbox,
            self.xmpp.published,
            self.lookups_pending.len() as u64,
            self.identity.known,
        )
    }

    /// Announce the status if the counters moved, at most every
    /// [`COUNTERS_EVERY`] (a timer catches the last change).
    fn counters_moved(&mut self) {
        if self.counters_due.is_some()
            || (self.counters() == self.counters_announced && !self.counters_unannounced)
        {
            return;
        }
        let next = self.status_at + COUNTERS_EVERY;
        if Instant::now() >= next {
            self.announce_status();
        } else {
            self.counters_due = Some(next);
        }
    }

    async fn apply_action(
        &mut self,
        poll: &str,
        kind: ActionKind,
    ) -> Result<PollState, ActionError> {
        if !self.polls.iter().any(|p| p.id == poll) {
            return Err(ActionError::UnknownPoll(poll.to_string()));
        }
        let at = now_ms().max(self.last_at);
        let cutoff = (kind == ActionKind::Reset).then(|| {
            self.tallies.reset_cutoff(
                poll,
                TapKey {
                    at,
                    station: self.id.clone(),
                    seq: self.next_seq.saturating_sub(1),
                },
            )
        });
        let action = Action {
            at,
            kind,
            poll: poll.to_string(),
            cutoff: cutoff.clone(),
        };
        match self.store.append(vec![Record::Action(action)]).await {
            Err(e) => {
                self.store_failed(&e);
                return Err(ActionError::Store(e));
            }
            Ok(stats) => self.store_ok(stats),
        }
        self.last_at = at;
        match kind {
            ActionKind::Open | ActionKind::Close => {
                self.open.insert(poll.to_string(), kind == ActionKind::Open);
            }
            ActionKind::Activate => self.active = Some(poll.to_string()),
            ActionKind::Reset => {
                if let Some(c) = cutoff {
                    self.tallies.reset(poll, c);
                }
                // Debounce memory would answer "repeat" for taps of the old round.
                self.recent.clear();
                if let Some(view) = self.tallies.view(poll) {
                    let _ = self.events.send(Event::Tally(view));
                }
            }
        }
        tracing::info!(poll, action = kind.as_str(), "operator action logged");
        self.announce_status();
        Ok(self.poll_state(poll).expect("poll existence checked above"))
    }

    async fn bind_reader(&mut self, cfg: ReaderConfig) -> Result<ReaderState, BindError> {
        if self.reader_index.contains_key(&cfg.id) {
            return Err(BindError::DuplicateId(cfg.id));
        }
        let device = cfg.device.display().to_string();
        if let Some(r) = self.readers.iter().find(|r| r.device == device) {
            return Err(BindError::DeviceInUse(device, r.id.clone()));
        }
        validate_binding(&cfg.binding, &self.polls).map_err(BindError::Invalid)?;
        let record = Record::Reader(BoundReader::from_config(&cfg, now_ms()));
        match self.store.append(vec![record]).await {
            Err(e) => {
                self.store_failed(&e);
                return Err(BindError::Store(e));
            }
            Ok(stats) => self.store_ok(stats),
        }
        let state = reader_state(&cfg);
        self.reader_index.insert(cfg.id.clone(), self.readers.len());
        self.readers.push(state.clone());
        tracing::info!(reader = %cfg.id, device = %device, "reader bound by the operator");
        self.reader_cfgs.insert(cfg.id.clone(), cfg.clone());
        let _ = self.reader_ctl.send(ReaderCtl::Start(cfg));
        self.announce_status();
        Ok(state)
    }

    /// Apply what can be applied of a new config; say what cannot.
    fn reload(&mut self, new: Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let old = std::mem::replace(&mut self.config, new.clone());
        let restart = |r: &mut ReloadReport, what: &str| {
            r.needs_restart
                .push(format!("{what} changed: restart to apply"));
        };
        if new.station.id != old.station.id {
            restart(&mut report, "[station] id");
        }
        if new.station.data_dir != old.station.data_dir {
            restart(&mut report, "[station] data_dir");
        }
        if new.http.listen != old.http.listen
            || new.http.admin_token_file != old.http.admin_token_file
            || new.http.request_timeout != old.http.request_timeout
        {
            restart(&mut report, "[http]");
        }
        if new.network.watch != old.network.watch
            || new.network.debounce != old.network.debounce
            || new.hotplug.enabled != old.hotplug.enabled
            || new.hotplug.pattern != old.hotplug.pattern
        {
            restart(&mut report, "[network] / [hotplug]");
        }
        if new.station.debounce != self.debounce {
            self.debounce = new.station.debounce;
            report
                .applied
                .push(format!("debounce now {} ms", self.debounce.as_millis()));
        }
        // Polls: new ones are added, labels and questions change live; a
        // changed rule or answer list, or a removed poll, takes a restart.
        for def in &new.polls {
            match self.polls.iter().position(|p| p.id == def.id) {
                None => {
                    self.tallies.add_poll(def);
                    self.open.insert(def.id.clone(), def.open);
                    self.polls.push(def.clone());
                    report.applied.push(format!("poll {} added", def.id));
                }
                Some(i) => {
                    let mut current = self.polls[i].clone();
                    current.open = def.open;
                    if &current == def {
                        continue;
                    }
                    if self.tallies.relabel(def) {
                        let open = self.polls[i].open;
                        self.polls[i] = def.clone();
                        self.polls[i].open = open;
                        report
                            .applied
                            .push(format!("poll {}: question and labels updated", def.id));
                        if let Some(view) = self.tallies.view(&def.id) {
                            let _ = self.events.send(Event::Tally(view));
                        }
                    } else {
                        restart(&mut report, &format!("poll {}: rule or answer ids", def.id));
                    }
                }
            }
        }
        for p in &self.polls {
            if !new.polls.iter().any(|n| n.id == p.id) {
                restart(&mut report, &format!("poll {} removed", p.id));
            }
        }
        // Readers named by the old config: removed, rebound or restarted.
        let old_ids: Vec<String> = old.readers.iter().map(|r| r.id.clone()).collect();
        for id in &old_ids {
            if !new.readers.iter().any(|r| &r.id == id) {
                self.remove_reader(id);
                let _ = self.reader_ctl.send(ReaderCtl::Stop(id.clone()));
                report.applied.push(format!("reader {id} removed"));
            }
        }
        for r in &new.readers {
            let existing = self.reader_cfgs.get(&r.id).cloned();
            match existing {
                Some(cur) if cur == *r => {}
                Some(cur) => {
                    let only_binding = ReaderConfig {
                        binding: r.binding.clone(),
                        ..cur.clone()
                    } == *r;
                    if let Some(&i) = self.reader_index.get(&r.id) {
                        self.readers[i].binding = r.binding.clone();
                        self.readers[i].device = r.device.display().to_string();
                        self.readers[i].protocol = r.protocol;
                    }
                    self.reader_cfgs.insert(r.id.clone(), r.clone());
                    if only_binding {
                        report.applied.push(format!("reader {} rebound", r.id));
                    } else {
                        let _ = self.reader_ctl.send(ReaderCtl::Stop(r.id.clone()));
                        let _ = self.reader_ctl.send(ReaderCtl::Start(r.clone()));
                        report
                            .applied
                            .push(format!("reader {} reopened with new settings", r.id));
                    }
                }
                None => {
                    let device = r.device.display().to_string();
                    if let Some(other) = self.readers.iter().find(|x| x.device == device) {
                        report.needs_restart.push(format!(
                            "reader {} not added: device {device} is used by reader {}",
                            r.id, other.id
                        ));
                        continue;
                    }
                    self.reader_index.insert(r.id.clone(), self.readers.len());
                    self.readers.push(reader_state(r));
                    self.reader_cfgs.insert(r.id.clone(), r.clone());
                    let _ = self.reader_ctl.send(ReaderCtl::Start(r.clone()));
                    report.applied.push(format!("reader {} added", r.id));
                }
            }
        }
        tracing::info!(applied = ?report.applied, needs_restart = ?report.needs_restart, "config reloaded");
        self.announce_status();
        report
    }

    fn remove_reader(&mut self, id: &str) {
        self.readers.retain(|r| r.id != id);
        self.reader_cfgs.remove(id);
        self.reader_index = self
            .readers
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
    }

    fn apply_reader_report(&mut self, r: ReaderReport) {
        let Some(&i) = self.reader_index.get(&r.reader) else {
            return;
        };
        let state = &mut self.readers[i];
        // Reader tasks report at most once a second each, so every report
        // may be announced.
        let changed = state.status != r.status
            || state.last_error != r.error
            || state.frames_ok != r.frames_ok
            || state.frames_bad != r.frames_bad;
        state.status = r.status;
        state.last_error = r.error;
        state.frames_ok = r.frames_ok;
        state.frames_bad = r.frames_bad;
        if let Some(p) = r.protocol {
            state.protocol = p;
        }
        if changed {
            let _ = self.events.send(Event::Reader(state.clone()));
            self.unpublished = true;
        }
    }

    fn poll_state(&self, poll: &str) -> Option<PollState> {
        let def = self.polls.iter().find(|p| p.id == poll)?;
        let mut def = def.clone();
        def.open = self.open.get(poll).copied().unwrap_or(false);
        Some(PollState {
            active: self.active.as_deref() == Some(poll),
            def,
        })
    }

    fn publish_snapshot(&mut self) -> Arc<Snapshot> {
        self.unpublished = false;
        if self.counters() != self.counters_announced {
            self.counters_unannounced = true;
        }
        self.store_health.taps = self.taps_logged;
        let snap = Arc::new(Snapshot {
            station: self.id.to_string(),
            started_at: self.started_at,
            active_poll: self.active.clone(),
            polls: self
                .polls
                .iter()
                .filter_map(|p| self.poll_state(&p.id))
                .collect(),
            tallies: self.tallies.views(),
            readers: self.readers.clone(),
            store: self.store_health.clone(),
            network: self.network.clone(),
            xmpp: self.xmpp.clone(),
            remote: self.remote.clone(),
            identity: IdentityView {
                pending: self.lookups_pending.len() as u64,
                ..self.identity.clone()
            },
            hotplug: HotplugView {
                state: self.hotplug.state,
                detail: self.hotplug.detail.clone(),
                unbound: self
                    .hotplug
                    .devices
                    .iter()
                    .filter(|d| !self.readers.iter().any(|r| &r.device == *d))
                    .cloned()
                    .collect(),
            },
        });
        self.state_tx.send_replace(snap.clone());
        snap
    }
}

enum Prepared {
    New(Tap),
    RepeatInBatch(usize),
    RepeatDurable(TapOutcome),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_ring_replays_only_what_it_holds_whole() {
        let mut r: TapRing<u64> = TapRing::new(5);
        assert_eq!(r.after(5), Some(vec![]), "nothing missed");
        assert_eq!(r.after(4), None, "seq 5 is not kept");
        assert_eq!(r.after(6), None, "not announced yet");
        r.push(6, 6);
        r.push(7, 7);
        assert_eq!(r.after(5), Some(vec![6, 7]));
        assert_eq!(r.after(6), Some(vec![7]));
        assert_eq!(r.after(7), Some(vec![]));
        assert_eq!(r.after(4), None);
        for s in 8..8 + TAP_RING as u64 {
            r.push(s, s);
        }
        let oldest = 8 + TAP_RING as u64 - TAP_RING as u64;
        assert_eq!(r.after(oldest - 2), None, "fell out");
        assert_eq!(r.after(oldest - 1).map(|v| v.len()), Some(TAP_RING));
        // Taps lost on the way: nothing before the next one replays.
        r.break_off();
        let next = 8 + TAP_RING as u64;
        assert_eq!(r.after(next - 1), None);
        r.push(next, next);
        assert_eq!(r.after(next - 1), Some(vec![next]));
        assert_eq!(r.after(next - 2), None);
    }
}
