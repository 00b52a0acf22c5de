//! The one TOML config file: parsed into typed structs, then validated as a
//! whole so every mistake is reported at once, each pointing at its line.
//!
//! Owns parsing and validation only; the config is never written at
//! runtime. [`raw`] is the file as written, [`validate`] turns it into the
//! typed [`Config`] (one function per section), [`people`] reads the people
//! file it names.
//!
//! Invariants: every problem is reported at once, each with its line;
//! wording of messages is stable (operators and tests read it).

pub mod people;
mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::domain::Binding;
use crate::domain::PollDef;

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
    /// `None`: a station on its own.
    pub herd: Option<HerdConfig>,
}

/// The herd: stations of one event sharing their logs.
#[derive(Debug, Clone, PartialEq)]
pub struct HerdConfig {
    /// The herd's name; peers of another herd are refused.
    pub id: String,
    /// Where peers connect (none: this station only dials).
    pub listen: Option<SocketAddr>,
    /// host:port of the peers to dial.
    pub peers: Vec<String>,
    /// The herd CA (PEM), this station's certificate (SAN = station id) and
    /// key (empty with `carrier = "xmpp"`: no direct links).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How far ahead of this station's clock a peer's taps may pull its own.
    pub max_skew: Duration,
    /// What carries the feeds between stations.
    pub carrier: Carrier,
    /// The herd's stations as the XMPP server knows them (this one may be
    /// listed too): whose nodes to read, who may read this one's.
    pub stations: Vec<HerdStation>,
}

/// What carries a herd's feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// TLS links between the stations.
    Direct,
    /// The XMPP server's publish-subscribe service.
    Xmpp,
    /// Both: an event may come twice and is dropped by key.
    Both,
}

impl Carrier {
    #[must_use]
    pub fn direct(self) -> bool {
        self != Carrier::Xmpp
    }
    #[must_use]
    pub fn xmpp(self) -> bool {
        self != Carrier::Direct
    }
}

/// A station of the herd, for the XMPP carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HerdStation {
    pub id: String,
    pub jid: String,
}

/// Resolving tags to people.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// anyMeta's REST entrypoint, `https://<site>/services/rest/`.
    pub anymeta: Option<String>,
    /// TOML with c_key, c_sec, t_key, t_sec (mode 0600); else the credential.
    pub credentials: Option<PathBuf>,
    pub signature: Signature,
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

/// How anyMeta requests are signed (OAuth 1.0a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    HmacSha1,
    /// Sends the secrets as they are: only over https.
    Plaintext,
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
    /// Cycle through the open polls, this long each (`rotate_s`).
    pub rotate: Option<Duration>,
    /// Show the QR code of the public results address.
    pub qr: bool,
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
    /// The language of what people read.
    pub language: crate::domain::Language,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub admin_token_file: Option<PathBuf>,
    pub request_timeout: Duration,
    pub limits: HttpLimits,
    /// Where visitors' phones reach the results page (`public_url`); `None`:
    /// derived from the listen address and the host's name.
    pub public_url: Option<String>,
}

/// What one client may hold of the station's HTTP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's head (line and headers) must arrive within this; also
    /// how long a kept-alive connection may wait for its next request.
    pub header_timeout: Duration,
    /// A connection on which nothing moved either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_address: usize,
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

/// A protocol name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of pn532, sm130, id12, rdm6300, text, auto")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, UnknownProtocol> {
        Ok(match s {
            "pn532" => Protocol::Pn532,
            "sm130" => Protocol::Sm130,
            "id12" => Protocol::Id12,
            "rdm6300" => Protocol::Rdm6300,
            "text" => Protocol::Text,
            "auto" => Protocol::Auto,
            other => return Err(UnknownProtocol(other.to_string())),
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
            absence: Duration::from_millis(raw::default_absence_ms()),
            poll_interval: Duration::from_millis(*raw::default_poll_interval_ms().get_ref()),
            feedback_counted: Some(raw::default_feedback_counted()),
            feedback_refused: Some(raw::default_feedback_refused()),
            pulse: Duration::from_millis(raw::default_pulse_ms()),
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

impl Config {
    /// The other accounts that may publish votes to the nodes this station
    /// creates: the herd's stations (their JIDs, from `[herd] stations`),
    /// so that every station of a herd publishes its votes to the same
    /// `vote/<poll>` nodes, whoever made them first.
    #[must_use]
    pub fn vote_publishers(&self) -> Vec<String> {
        let own = self.xmpp.as_ref().map(|x| x.jid.as_str());
        self.herd
            .iter()
            .flat_map(|h| &h.stations)
            .filter(|s| s.id != self.station.id && Some(s.jid.as_str()) != own)
            .map(|s| s.jid.clone())
            .collect()
    }

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
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            vec![Problem {
                span: e.span(),
                message: e.message().trim().to_string(),
            }]
        })?;
        validate::config(raw, base)
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

impl Config {
    /// A digest of what stations of a herd must agree on: poll ids, rules,
    /// whether they start open, and answer ids, in order. Questions and
    /// labels may differ (a Dutch and an English hall).
    #[must_use]
    pub fn polls_hash(&self) -> String {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        for p in &self.polls {
            h.update(format!("poll {} {} {}\n", p.id, p.rule, p.open));
            for a in &p.answers {
                h.update(format!("  {}\n", a.id));
            }
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// `xmpp:<service>?;node=<node>` → (service, node).
#[must_use]
pub fn parse_node_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("xmpp:")?;
    let (service, query) = rest.split_once("?;node=")?;
    (!service.is_empty() && !query.is_empty()).then(|| (service.to_string(), query.to_string()))
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
            let binding = r.binding.describe();
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
    use crate::domain::Rule;

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
