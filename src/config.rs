//! The one TOML config file: parsed into typed structs, then validated as a
//! whole so every mistake is reported at once, each pointing at its line.
//!
//! Owns parsing and validation only; the config is never written at runtime.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::poll::{Answer, PollDef, Rule};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub station: StationConfig,
    pub http: HttpConfig,
    pub polls: Vec<PollDef>,
    pub readers: Vec<ReaderConfig>,
    pub screen: ScreenConfig,
    pub network: NetworkConfig,
    pub hotplug: HotplugConfig,
    /// `None`: no XMPP publishing.
    pub xmpp: Option<XmppConfig>,
    /// `None`: tags are not resolved to people.
    pub identity: Option<IdentityConfig>,
}

/// Resolving tags to people.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// anyMeta's REST entrypoint, `https://<site>/services/rest/`.
    pub anymeta: Option<String>,
    /// TOML with c_key, c_sec, t_key, t_sec (mode 0600); else the credential.
    pub credentials: Option<PathBuf>,
    pub signature: crate::identity::oauth::Method,
    /// `tag,name,person_id` per line.
    pub people: Option<PathBuf>,
    /// Names on public pages and API responses.
    pub show_names: bool,
    /// How long a resolved person is trusted before it is looked up again.
    pub ttl: Duration,
    /// How long "unknown" is trusted.
    pub negative_ttl: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    /// How long the circuit breaker stays open before a trial lookup.
    pub breaker_open: Duration,
}

/// Whether the XMPP connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XmppTls {
    /// STARTTLS with certificate verification (the default).
    Required,
    /// Plain TCP: only for a server on loopback (tests).
    None,
}

/// XMPP publish-subscribe.
#[derive(Debug, Clone, PartialEq)]
pub struct XmppConfig {
    pub jid: String,
    /// Read at start; else the systemd credential `pollstation-xmpp-password`.
    pub password_file: Option<PathBuf>,
    /// host:port; else the JID's domain via SRV.
    pub server: Option<String>,
    pub tls: XmppTls,
    /// The pubsub service's JID, e.g. `pubsub.example.org`.
    pub pubsub: String,
    /// Votes go to `<node_prefix><poll id>`.
    pub node_prefix: String,
    /// Put the tag URN in published votes.
    pub publish_tags: bool,
    /// Nodes to listen to: `xmpp:<service>?;node=<node>`.
    pub subscribe: Vec<(String, String)>,
    /// Items a node this station creates keeps (`pubsub#max_items`).
    pub max_items: u32,
}

/// NetworkManager over the system bus.
#[derive(Debug, Clone, Copy)]
pub struct NetworkConfig {
    pub watch: bool,
    /// A new network state counts once it has held this long.
    pub debounce: Duration,
}

/// Reader hotplug through systemd's device units over the system bus.
#[derive(Debug, Clone)]
pub struct HotplugConfig {
    pub enabled: bool,
    /// Device units of readers the config does not name yet (shown to the
    /// operator, who can bind them): our udev rule's `/dev/rfid/*` names.
    pub pattern: String,
}

/// The GTK screen (built with the `gtk` feature).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScreenConfig {
    /// `None`: open the screen when a display is present.
    pub enabled: Option<bool>,
    pub fullscreen: bool,
}

#[derive(Debug, Clone)]
pub struct StationConfig {
    pub id: String,
    pub data_dir: PathBuf,
    /// The same tag on the same reader inside this window is one tap.
    pub debounce: Duration,
    /// The poll whose answer slots the `slot` readers vote on, until an
    /// operator activates another one.
    pub active_poll: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub admin_token_file: Option<PathBuf>,
    pub request_timeout: Duration,
}

/// The serial protocol a reader speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pn532,
    Sm130,
    Id12,
    Rdm6300,
    Text,
    Auto,
}

impl Protocol {
    /// The serial speed the protocol's devices use out of the box.
    #[must_use]
    pub fn default_baud(self) -> u32 {
        match self {
            Protocol::Pn532 => 115_200,
            Protocol::Sm130 => 19_200,
            Protocol::Id12 | Protocol::Rdm6300 | Protocol::Text | Protocol::Auto => 9_600,
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pn532" => Protocol::Pn532,
            "sm130" => Protocol::Sm130,
            "id12" => Protocol::Id12,
            "rdm6300" => Protocol::Rdm6300,
            "text" => Protocol::Text,
            "auto" => Protocol::Auto,
            other => {
                return Err(format!(
                    "{other:?} is not one of pn532, sm130, id12, rdm6300, text, auto"
                ));
            }
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pn532 => "pn532",
            Protocol::Sm130 => "sm130",
            Protocol::Id12 => "id12",
            Protocol::Rdm6300 => "rdm6300",
            Protocol::Text => "text",
            Protocol::Auto => "auto",
        })
    }
}

/// The order in which a reader's UID bytes are turned into the canonical tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UidOrder {
    #[default]
    AsRead,
    Reversed,
}

/// What a tap on a reader means.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Binding {
    /// Always this answer of this poll.
    Fixed { poll: String, answer: String },
    /// Answer number `slot` (A = first) of whichever poll is active.
    Slot { slot: char },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReaderConfig {
    pub id: String,
    pub device: PathBuf,
    pub protocol: Protocol,
    pub baud: Option<u32>,
    pub binding: Binding,
    pub uid_order: UidOrder,
    /// A tag not seen for this long has left the reader.
    pub absence: Duration,
    /// How often polled readers (PN532, SM130) ask for a tag.
    pub poll_interval: Duration,
    /// Line sent to a `text` reader after a counted tap (None: send nothing).
    pub feedback_counted: Option<String>,
    /// Line sent to a `text` reader after a tap that did not count.
    pub feedback_refused: Option<String>,
    /// How long SM130 outputs are pulsed (output 1 counted, output 2 not).
    pub pulse: Duration,
}

impl ReaderConfig {
    /// A reader with every optional setting at its default (as a config
    /// entry naming only id, device, protocol and binding would give).
    #[must_use]
    pub fn with_defaults(
        id: String,
        device: PathBuf,
        protocol: Protocol,
        binding: Binding,
    ) -> Self {
        Self {
            id,
            device,
            protocol,
            baud: None,
            binding,
            uid_order: UidOrder::AsRead,
            absence: Duration::from_millis(default_absence_ms()),
            poll_interval: Duration::from_millis(*default_poll_interval_ms().get_ref()),
            feedback_counted: Some(default_feedback_counted()),
            feedback_refused: Some(default_feedback_refused()),
            pulse: Duration::from_millis(default_pulse_ms()),
        }
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// Every problem found in one file, printable as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub source_text: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, col) = p
                .span
                .as_ref()
                .map_or((1, 1), |s| line_col(&self.source_text, s.start));
            write!(f, "{}:{line}:{col}: {}", self.file.display(), p.message)?;
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

// ---- the file as written -------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    station: RawStation,
    #[serde(default)]
    http: RawHttp,
    #[serde(default, rename = "poll")]
    polls: Vec<RawPoll>,
    #[serde(default, rename = "reader")]
    readers: Vec<RawReader>,
    #[serde(default)]
    screen: RawScreen,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    hotplug: RawHotplug,
    xmpp: Option<RawXmpp>,
    identity: Option<RawIdentity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    anymeta: Option<Spanned<String>>,
    credentials: Option<String>,
    #[serde(default = "default_signature")]
    signature: Spanned<String>,
    people: Option<Spanned<String>>,
    #[serde(default)]
    show_names: bool,
    #[serde(default = "default_ttl_s")]
    ttl_s: u64,
    #[serde(default = "default_negative_ttl_s")]
    negative_ttl_s: u64,
    #[serde(default = "default_identity_timeout_ms")]
    timeout_ms: Spanned<u64>,
    #[serde(default = "default_identity_concurrency")]
    concurrency: Spanned<usize>,
    #[serde(default = "default_breaker_open_s")]
    breaker_open_s: u64,
}

fn default_breaker_open_s() -> u64 {
    30
}

fn default_signature() -> Spanned<String> {
    Spanned::new(0..0, "hmac-sha1".into())
}
fn default_ttl_s() -> u64 {
    86_400
}
fn default_negative_ttl_s() -> u64 {
    600
}
fn default_identity_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5000)
}
fn default_identity_concurrency() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXmpp {
    jid: Spanned<String>,
    password_file: Option<String>,
    server: Option<Spanned<String>>,
    #[serde(default = "default_xmpp_tls")]
    tls: XmppTls,
    pubsub: Spanned<String>,
    #[serde(default = "default_node_prefix")]
    node_prefix: String,
    #[serde(default)]
    publish_tags: bool,
    #[serde(default)]
    subscribe: Vec<Spanned<String>>,
    #[serde(default = "default_max_items")]
    max_items: u32,
}

fn default_max_items() -> u32 {
    100
}

fn default_xmpp_tls() -> XmppTls {
    XmppTls::Required
}

fn default_node_prefix() -> String {
    "vote/".into()
}

/// `xmpp:<service>?;node=<node>` → (service, node).
#[must_use]
pub fn parse_node_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("xmpp:")?;
    let (service, query) = rest.split_once("?;node=")?;
    (!service.is_empty() && !query.is_empty()).then(|| (service.to_string(), query.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default = "yes")]
    watch: bool,
    #[serde(default = "default_network_debounce_ms")]
    debounce_ms: Spanned<u64>,
}

impl Default for RawNetwork {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: default_network_debounce_ms(),
        }
    }
}

fn default_network_debounce_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1500)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHotplug {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_hotplug_pattern")]
    pattern: Spanned<String>,
}

impl Default for RawHotplug {
    fn default() -> Self {
        Self {
            enabled: true,
            pattern: default_hotplug_pattern(),
        }
    }
}

fn default_hotplug_pattern() -> Spanned<String> {
    Spanned::new(0..0, "dev-rfid-*.device".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScreen {
    enabled: Option<bool>,
    #[serde(default = "yes")]
    fullscreen: bool,
}

impl Default for RawScreen {
    fn default() -> Self {
        Self {
            enabled: None,
            fullscreen: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    id: Spanned<String>,
    data_dir: Spanned<String>,
    #[serde(default = "default_debounce_ms")]
    debounce_ms: u64,
    active_poll: Option<Spanned<String>>,
}

fn default_debounce_ms() -> u64 {
    2000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    admin_token_file: Option<String>,
    #[serde(default = "default_request_timeout_s")]
    request_timeout_s: Spanned<u64>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_token_file: None,
            request_timeout_s: default_request_timeout_s(),
        }
    }
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}

fn default_request_timeout_s() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    id: Spanned<String>,
    question: Spanned<String>,
    rule: Rule,
    answers: Spanned<Vec<RawAnswer>>,
    #[serde(default = "yes")]
    open: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    id: Spanned<String>,
    label: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReader {
    id: Spanned<String>,
    device: Spanned<String>,
    protocol: Protocol,
    baud: Option<Spanned<u32>>,
    poll: Option<Spanned<String>>,
    answer: Option<Spanned<String>>,
    slot: Option<Spanned<String>>,
    #[serde(default)]
    uid_order: UidOrder,
    #[serde(default = "default_absence_ms")]
    absence_ms: u64,
    #[serde(default = "default_poll_interval_ms")]
    poll_interval_ms: Spanned<u64>,
    #[serde(default = "default_feedback_counted")]
    feedback_counted: String,
    #[serde(default = "default_feedback_refused")]
    feedback_refused: String,
    #[serde(default = "default_pulse_ms")]
    pulse_ms: u64,
}

fn default_absence_ms() -> u64 {
    300
}
fn default_poll_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}
fn default_feedback_counted() -> String {
    "OK".into()
}
fn default_feedback_refused() -> String {
    "NO".into()
}
fn default_pulse_ms() -> u64 {
    400
}

// ---- loading and validation ---------------------------------------------

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            source_text: String::new(),
            problems: vec![Problem {
                span: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|problems| ConfigError {
            file: path.to_path_buf(),
            source_text: text,
            problems,
        })
    }

    /// Parse and validate config text. Relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            vec![Problem {
                span: e.span(),
                message: e.message().trim().to_string(),
            }]
        })?;
        validate(raw, base)
    }
}

/// Whether `s` is usable as an id (station, poll, answer, reader).
#[must_use]
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[allow(clippy::too_many_lines)] // one check after another; splitting hides the list
fn validate(raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |span: Range<usize>, message: String| {
        problems.push(Problem {
            span: Some(span),
            message,
        });
    };
    let id_rule = "use 1–64 letters, digits, '-', '_' or '.'";

    // [station]
    if !valid_id(raw.station.id.get_ref()) {
        problem(
            raw.station.id.span(),
            format!(
                "station id {:?} is not a valid id: {id_rule}",
                raw.station.id.get_ref()
            ),
        );
    }
    if raw.station.data_dir.get_ref().is_empty() {
        problem(raw.station.data_dir.span(), "data_dir is empty".into());
    }

    // [http]
    let listen = match raw.http.listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problem(
                raw.http.listen.span(),
                format!(
                    "listen address {:?} is not IP:PORT (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
                    raw.http.listen.get_ref()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    if raw.http.request_timeout_s.get_ref() == &0 {
        problem(
            raw.http.request_timeout_s.span(),
            "request_timeout_s must be at least 1".into(),
        );
    }

    // [[poll]]
    let mut polls = Vec::new();
    let mut poll_ids = HashSet::new();
    for p in &raw.polls {
        let id = p.id.get_ref();
        if !valid_id(id) {
            problem(
                p.id.span(),
                format!("poll id {id:?} is not a valid id: {id_rule}"),
            );
        } else if !poll_ids.insert(id.clone()) {
            problem(p.id.span(), format!("duplicate poll id {id:?}"));
        }
        if p.question.get_ref().trim().is_empty() {
            problem(
                p.question.span(),
                format!("poll {id:?} has an empty question"),
            );
        }
        if p.answers.get_ref().is_empty() {
            problem(p.answers.span(), format!("poll {id:?} has no answers"));
        }
        let mut answer_ids = HashSet::new();
        for a in p.answers.get_ref() {
            let aid = a.id.get_ref();
            if !valid_id(aid) {
                problem(
                    a.id.span(),
                    format!("answer id {aid:?} in poll {id:?} is not a valid id: {id_rule}"),
                );
            } else if !answer_ids.insert(aid.clone()) {
                problem(
                    a.id.span(),
                    format!("duplicate answer id {aid:?} in poll {id:?}"),
                );
            }
        }
        polls.push(PollDef {
            id: id.clone(),
            question: p.question.get_ref().clone(),
            rule: p.rule,
            answers: p
                .answers
                .get_ref()
                .iter()
                .map(|a| Answer {
                    id: a.id.get_ref().clone(),
                    label: if a.label.trim().is_empty() {
                        a.id.get_ref().clone()
                    } else {
                        a.label.clone()
                    },
                })
                .collect(),
            open: p.open,
        });
    }
    let find_poll = |id: &str| polls.iter().find(|p| p.id == id);

    let active_poll = match &raw.station.active_poll {
        Some(a) if find_poll(a.get_ref()).is_none() => {
            problem(
                a.span(),
                format!("active_poll {:?} is not a configured poll", a.get_ref()),
            );
            None
        }
        Some(a) => Some(a.get_ref().clone()),
        None => None,
    };

    // [[reader]]
    let mut readers = Vec::new();
    let mut reader_ids = HashSet::new();
    let mut devices = HashSet::new();
    for r in &raw.readers {
        let id = r.id.get_ref();
        if !valid_id(id) {
            problem(
                r.id.span(),
                format!("reader id {id:?} is not a valid id: {id_rule}"),
            );
        } else if !reader_ids.insert(id.clone()) {
            problem(r.id.span(), format!("duplicate reader id {id:?}"));
        }
        let device = absolute(base, r.device.get_ref());
        if r.device.get_ref().is_empty() {
            problem(
                r.device.span(),
                format!("reader {id:?} has an empty device"),
            );
        } else if !devices.insert(device.clone()) {
            problem(
                r.device.span(),
                format!(
                    "reader {id:?} uses device {:?}, which another reader already uses",
                    r.device.get_ref()
                ),
            );
        }
        if let Some(b) = &r.baud
            && !matches!(
                b.get_ref(),
                1200 | 2400 | 4800 | 9600 | 19200 | 38400 | 57600 | 115_200 | 230_400
            )
        {
            problem(
                b.span(),
                format!("reader {id:?}: baud {} is not a standard rate", b.get_ref()),
            );
        }
        let binding = match (&r.poll, &r.answer, &r.slot) {
            (Some(_), _, Some(slot)) | (_, Some(_), Some(slot)) => {
                problem(
                    slot.span(),
                    format!("reader {id:?} has both a fixed poll/answer and a slot: choose one"),
                );
                None
            }
            (None, None, Some(slot)) => {
                let s = slot.get_ref();
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => Some(Binding::Slot {
                        slot: c.to_ascii_uppercase(),
                    }),
                    _ => {
                        problem(
                            slot.span(),
                            format!(
                                "reader {id:?}: slot {s:?} is not one answer letter (A, B, C, …)"
                            ),
                        );
                        None
                    }
                }
            }
            (Some(poll), Some(answer), None) => match find_poll(poll.get_ref()) {
                None => {
                    problem(
                        poll.span(),
                        format!(
                            "reader {id:?} names poll {:?}, which is not configured",
                            poll.get_ref()
                        ),
                    );
                    None
                }
                Some(p) if p.answer_index(answer.get_ref()).is_none() => {
                    problem(
                        answer.span(),
                        format!(
                            "reader {id:?} names answer {:?}, which poll {:?} does not have",
                            answer.get_ref(),
                            poll.get_ref()
                        ),
                    );
                    None
                }
                Some(_) => Some(Binding::Fixed {
                    poll: poll.get_ref().clone(),
                    answer: answer.get_ref().clone(),
                }),
            },
            (Some(poll), None, None) => {
                problem(
                    poll.span(),
                    format!("reader {id:?} names a poll but no answer"),
                );
                None
            }
            (None, Some(answer), None) => {
                problem(
                    answer.span(),
                    format!("reader {id:?} names an answer but no poll"),
                );
                None
            }
            (None, None, None) => {
                problem(
                    r.id.span(),
                    format!("reader {id:?} is bound to nothing: give poll + answer, or slot"),
                );
                None
            }
        };
        if !(10..=5000).contains(r.poll_interval_ms.get_ref()) {
            problem(
                r.poll_interval_ms.span(),
                format!("reader {id:?}: poll_interval_ms must be between 10 and 5000"),
            );
        }
        let line = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if let Some(binding) = binding {
            readers.push(ReaderConfig {
                id: id.clone(),
                device,
                protocol: r.protocol,
                baud: r.baud.as_ref().map(|b| *b.get_ref()),
                binding,
                uid_order: r.uid_order,
                absence: Duration::from_millis(r.absence_ms),
                poll_interval: Duration::from_millis(*r.poll_interval_ms.get_ref()),
                feedback_counted: line(&r.feedback_counted),
                feedback_refused: line(&r.feedback_refused),
                pulse: Duration::from_millis(r.pulse_ms),
            });
        }
    }

    // [network], [hotplug]
    if *raw.network.debounce_ms.get_ref() > 60_000 {
        problem(
            raw.network.debounce_ms.span(),
            "network debounce_ms must be at most 60000".into(),
        );
    }
    if !raw.hotplug.pattern.get_ref().ends_with(".device") {
        problem(
            raw.hotplug.pattern.span(),
            format!(
                "hotplug pattern {:?} must match device units (end in \".device\")",
                raw.hotplug.pattern.get_ref()
            ),
        );
    }

    // [xmpp]
    let xmpp = raw.xmpp.as_ref().map(|x| {
        let jid = x.jid.get_ref();
        let at = jid.find('@');
        if at.is_none_or(|i| i == 0 || i + 1 == jid.len()) || jid.contains(' ') {
            problem(x.jid.span(), format!("xmpp jid {jid:?} is not user@domain"));
        }
        if let Some(server) = &x.server
            && server
                .get_ref()
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            problem(
                server.span(),
                format!("xmpp server {:?} is not host:port", server.get_ref()),
            );
        }
        if x.pubsub.get_ref().trim().is_empty() || x.pubsub.get_ref().contains(['@', '/', ' ']) {
            problem(
                x.pubsub.span(),
                format!(
                    "xmpp pubsub {:?} is not a service JID like pubsub.example.org",
                    x.pubsub.get_ref()
                ),
            );
        }
        let mut subscribe = Vec::new();
        for s in &x.subscribe {
            match parse_node_uri(s.get_ref()) {
                Some(n) => subscribe.push(n),
                None => problem(
                    s.span(),
                    format!(
                        "{:?} is not a node URI like \"xmpp:pubsub.example.org?;node=vote/lunch\"",
                        s.get_ref()
                    ),
                ),
            }
        }
        XmppConfig {
            jid: jid.clone(),
            password_file: x.password_file.as_ref().map(|f| absolute(base, f)),
            server: x.server.as_ref().map(|s| s.get_ref().clone()),
            tls: x.tls,
            pubsub: x.pubsub.get_ref().clone(),
            node_prefix: x.node_prefix.clone(),
            publish_tags: x.publish_tags,
            subscribe,
            max_items: x.max_items.max(1),
        }
    });

    // [identity]
    let identity = raw.identity.as_ref().map(|i| {
        if let Some(url) = &i.anymeta
            && !(url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://"))
        {
            problem(
                url.span(),
                format!("anymeta {:?} is not an http(s) URL like https://www.example.org/services/rest/", url.get_ref()),
            );
        }
        let signature = match i.signature.get_ref().as_str() {
            "hmac-sha1" => crate::identity::oauth::Method::HmacSha1,
            "plaintext" => crate::identity::oauth::Method::Plaintext,
            other => {
                problem(
                    i.signature.span(),
                    format!("signature {other:?} is not hmac-sha1 or plaintext"),
                );
                crate::identity::oauth::Method::HmacSha1
            }
        };
        if !(100..=60_000).contains(i.timeout_ms.get_ref()) {
            problem(i.timeout_ms.span(), "identity timeout_ms must be between 100 and 60000".into());
        }
        if !(1..=64).contains(i.concurrency.get_ref()) {
            problem(i.concurrency.span(), "identity concurrency must be between 1 and 64".into());
        }
        let people = i.people.as_ref().map(|p| absolute(base, p.get_ref()));
        if let (Some(p), Some(span)) = (&people, i.people.as_ref().map(toml::Spanned::span))
            && let Err(e) = crate::identity::load_people(p)
        {
            problem(span, format!("people file: {e}"));
        }
        if i.anymeta.is_none() && people.is_none() {
            problem(0..0, "[identity] needs anymeta or people (or leave the section out)".into());
        }
        IdentityConfig {
            anymeta: i.anymeta.as_ref().map(|u| u.get_ref().clone()),
            credentials: i.credentials.as_ref().map(|c| absolute(base, c)),
            signature,
            people,
            show_names: i.show_names,
            ttl: Duration::from_secs(i.ttl_s),
            negative_ttl: Duration::from_secs(i.negative_ttl_s),
            timeout: Duration::from_millis(*i.timeout_ms.get_ref()),
            concurrency: *i.concurrency.get_ref(),
            breaker_open: Duration::from_secs(i.breaker_open_s.max(1)),
        }
    });

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        station: StationConfig {
            id: raw.station.id.into_inner(),
            data_dir: absolute(base, raw.station.data_dir.get_ref()),
            debounce: Duration::from_millis(raw.station.debounce_ms),
            active_poll,
        },
        http: HttpConfig {
            listen,
            admin_token_file: raw.http.admin_token_file.map(|f| absolute(base, &f)),
            request_timeout: Duration::from_secs(*raw.http.request_timeout_s.get_ref()),
        },
        polls,
        readers,
        screen: ScreenConfig {
            enabled: raw.screen.enabled,
            fullscreen: raw.screen.fullscreen,
        },
        network: NetworkConfig {
            watch: raw.network.watch,
            debounce: Duration::from_millis(*raw.network.debounce_ms.get_ref()),
        },
        hotplug: HotplugConfig {
            enabled: raw.hotplug.enabled,
            pattern: raw.hotplug.pattern.into_inner(),
        },
        xmpp,
        identity,
    })
}

fn absolute(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Config {
    /// A one-paragraph summary for `check-config`.
    #[must_use]
    pub fn summary(&self) -> String {
        let answers: usize = self.polls.iter().map(|p| p.answers.len()).sum();
        let mut s = format!(
            "station {:?}: {} poll(s), {} answer(s), {} reader(s); data in {}; HTTP on {}",
            self.station.id,
            self.polls.len(),
            answers,
            self.readers.len(),
            self.station.data_dir.display(),
            self.http.listen
        );
        for p in &self.polls {
            s.push_str(&format!(
                "\n  poll {} ({}, {}): {}",
                p.id,
                p.rule,
                if p.open { "open" } else { "closed" },
                p.answers
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for r in &self.readers {
            let binding = match &r.binding {
                Binding::Fixed { poll, answer } => format!("{poll}/{answer}"),
                Binding::Slot { slot } => format!("slot {slot} of the active poll"),
            };
            s.push_str(&format!(
                "\n  reader {} ({} on {}): {binding}",
                r.id,
                r.protocol,
                r.device.display()
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[station]
id = "hall-a"
data_dir = "/var/lib/pollstation"

[http]
listen = "0.0.0.0:8080"

[[poll]]
id = "lunch"
question = "What should we have for lunch?"
rule = "one-per-person"
answers = [{ id = "pizza", label = "Pizza" }, { id = "sushi", label = "Sushi" }]

[[reader]]
id = "post-1"
device = "/dev/rfid/post-1"
protocol = "pn532"
poll = "lunch"
answer = "pizza"

[[reader]]
id = "post-2"
device = "/dev/rfid/post-2"
protocol = "text"
slot = "b"
"#;

    fn errors(text: &str) -> Vec<String> {
        let problems = Config::parse(text, Path::new("/etc")).unwrap_err();
        let err = ConfigError {
            file: "c.toml".into(),
            source_text: text.into(),
            problems,
        };
        err.to_string().lines().map(str::to_string).collect()
    }

    #[test]
    fn parses_the_design_sketch() {
        let c = Config::parse(GOOD, Path::new("/etc")).unwrap();
        assert_eq!(c.station.id, "hall-a");
        assert_eq!(c.station.debounce, Duration::from_secs(2));
        assert_eq!(c.polls[0].rule, Rule::OnePerPerson);
        assert_eq!(
            c.readers[0].binding,
            Binding::Fixed {
                poll: "lunch".into(),
                answer: "pizza".into()
            }
        );
        assert_eq!(c.readers[1].binding, Binding::Slot { slot: 'B' });
    }

    #[test]
    fn points_at_the_line_of_each_mistake() {
        let bad = GOOD
            .replace("answer = \"pizza\"", "answer = \"pasta\"")
            .replace("\"0.0.0.0:8080\"", "\"nowhere\"")
            .replace("slot = \"b\"", "slot = \"b\"\npoll = \"lunch\"");
        let e = errors(&bad);
        assert!(
            e.iter()
                .any(|l| l.starts_with("c.toml:7:10: listen address \"nowhere\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("c.toml:20:10: reader \"post-1\" names answer \"pasta\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("c.toml:26:8: reader \"post-2\" has both")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let e = errors(&GOOD.replace("rule = ", "rules = "));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("c.toml:12:1: unknown field `rules`"),
            "{e:?}"
        );
    }
}
