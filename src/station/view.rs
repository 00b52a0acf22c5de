//! What the Station shows: the [`Snapshot`] on its `watch` (everything the
//! outputs need to draw the station at one moment) and the [`Event`]s on
//! its `broadcast` (each change, after it is durable), with the component
//! states they carry.
//!
//! Plain data: serialisable, cloneable, no behaviour beyond lookups. The
//! JSON of these types is the API's; field names and state words are
//! stable.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Protocol;
use crate::domain::tally::TallyView;
use crate::domain::{Binding, PollDef, TagUid};

/// Whether the station can reach the world, as NetworkManager says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NetworkStatus {
    pub state: NetState,
    pub detail: String,
    /// Since when (ms since the epoch).
    pub since: i64,
}

/// Whether reader hotplug is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// Hotplug as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HotplugView {
    pub state: HotplugState,
    pub detail: String,
    /// Plugged-in reader devices no reader is configured for.
    pub unbound: Vec<String>,
}

/// The XMPP link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum XmppState {
    /// No `[xmpp]` in the config.
    Disabled,
    Connecting,
    Online,
    /// NetworkManager says offline: votes wait in the outbox.
    Waiting,
    Error,
}

impl XmppState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            XmppState::Disabled => "disabled",
            XmppState::Connecting => "connecting",
            XmppState::Online => "online",
            XmppState::Waiting => "waiting",
            XmppState::Error => "error",
        }
    }
}

/// The XMPP link as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct XmppView {
    pub state: XmppState,
    pub detail: String,
    /// Votes waiting to be published.
    pub outbox: u64,
    /// Votes published since start.
    pub published: u64,
}

/// How identity lookups are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum IdentityState {
    #[serde(rename = "not configured")]
    NotConfigured,
    #[serde(rename = "starting")]
    Starting,
    #[serde(rename = "ok")]
    Ok,
    /// Answers come, but something is wrong (a broken people file, a
    /// refused signature).
    #[serde(rename = "degraded")]
    Degraded,
    /// Lookups wait (network offline, circuit breaker open).
    #[serde(rename = "offline")]
    Offline,
}

/// Identity lookups as the outputs show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    pub state: IdentityState,
    pub detail: String,
    /// Tags waiting for a lookup.
    pub pending: u64,
    /// Tags resolved to a person.
    pub known: u64,
}

/// Results heard from another station or site over XMPP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// A poll's definition and live state, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PollState {
    #[serde(flatten)]
    pub def: PollDef,
    pub active: bool,
}

/// Reader connection state, reported by the reader tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReaderStatus {
    Connected,
    Disconnected,
}

/// A reader as the API and the screens show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReaderState {
    // Shared strings: the Station's snapshot clones every reader's state
    // at each commit (a reader's counts move with each tap).
    #[schema(value_type = String)]
    pub id: Arc<str>,
    pub status: ReaderStatus,
    #[schema(value_type = Binding)]
    pub binding: Arc<Binding>,
    /// pn532, sm130, id12, rdm6300, text or auto.
    #[schema(value_type = String, example = "pn532")]
    pub protocol: Protocol,
    #[schema(value_type = String)]
    pub device: Arc<str>,
    #[schema(value_type = Option<String>)]
    pub last_error: Option<Arc<str>>,
    pub frames_ok: u64,
    pub frames_bad: u64,
    pub taps: u64,
}

/// Whether the log can be written.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StoreHealth {
    pub writable: bool,
    pub error: Option<String>,
    pub taps: u64,
    pub last_commit_ms: Option<f64>,
    pub startup: StartupReplay,
}

/// How the state was rebuilt at start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StartupReplay {
    /// Whether a checkpoint was used (the JSON keeps its old name).
    #[serde(rename = "from_snapshot")]
    pub from_checkpoint: bool,
    pub replayed_taps: usize,
    pub ms: f64,
}

/// A herd link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Up,
    Down,
}

/// One peer of the herd, as its link reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PeerView {
    /// The address dialled, or the one a peer came from.
    pub address: String,
    /// Its station id, once its certificate and hello said.
    pub station: Option<String>,
    pub state: LinkState,
    /// Since when (ms since the epoch).
    pub since: i64,
    pub rtt_ms: Option<u64>,
    /// Its clock minus ours, from the last ping.
    pub clock_offset_ms: Option<i64>,
    /// Whether that offset is beyond `[herd] max_skew_ms`.
    pub skewed: bool,
    pub error: Option<String>,
    /// Events sent to it and taken from it on this link.
    pub sent: u64,
    pub received: u64,
    /// How many events it holds that this station does not (and the reverse).
    pub we_lack: u64,
    pub it_lacks: u64,
}

/// One origin's feeds as this station holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OriginView {
    pub origin: String,
    pub taps: u64,
    pub actions: u64,
    pub identities: u64,
    /// Events of this origin the best-informed peer holds and we do not.
    pub lag: u64,
    /// The carriers ("direct", "xmpp") of the links up that hold it.
    pub via: Vec<&'static str>,
}

/// A connection the herd refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusedPeer {
    pub address: String,
    pub reason: String,
    pub at: i64,
}

/// The herd as the outputs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HerdView {
    pub id: String,
    pub polls_hash: String,
    /// This station restores its own feed from its peers (an empty data dir
    /// under a known id): taps wait until it has.
    pub restoring: bool,
    pub peers: Vec<PeerView>,
    pub origins: Vec<OriginView>,
    /// The last refusals, newest last, and how many in all.
    pub refused: Vec<RefusedPeer>,
    pub refused_total: u64,
    /// Origins that sent two different events under one key.
    pub forked: Vec<String>,
    /// Events taken from peers, and dropped as held already or out of order.
    pub received: u64,
    pub duplicates: u64,
    pub gaps: u64,
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
    /// `None`: no `[herd]`.
    pub herd: Option<HerdView>,
}

impl Snapshot {
    #[must_use]
    pub fn tally(&self, poll: &str) -> Option<&TallyView> {
        self.tallies.iter().find(|t| t.poll == poll)
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
