//! The config file as written: serde structs with their defaults, spans
//! kept for every value a message may point at. Validation turns them into
//! the typed [`super::Config`].

use serde::Deserialize;
use toml::Spanned;

use super::{Protocol, UidOrder, XmppTls};
use crate::domain::{Display, Rule};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub station: RawStation,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default, rename = "poll")]
    pub polls: Vec<RawPoll>,
    #[serde(default, rename = "reader")]
    pub readers: Vec<RawReader>,
    #[serde(default)]
    pub screen: RawScreen,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub hotplug: RawHotplug,
    pub xmpp: Option<RawXmpp>,
    pub identity: Option<RawIdentity>,
    pub herd: Option<RawHerd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHerd {
    pub id: Spanned<String>,
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    #[serde(default = "default_max_skew_ms")]
    pub max_skew_ms: Spanned<u64>,
    #[serde(default = "default_carrier")]
    pub carrier: Spanned<String>,
    #[serde(default)]
    pub stations: Vec<Spanned<RawHerdStation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHerdStation {
    pub id: String,
    pub jid: String,
}

pub fn default_max_skew_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

pub fn default_carrier() -> Spanned<String> {
    Spanned::new(0..0, "direct".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub anymeta: Option<Spanned<String>>,
    pub credentials: Option<Spanned<String>>,
    #[serde(default = "default_signature")]
    pub signature: Spanned<String>,
    pub people: Option<Spanned<String>>,
    #[serde(default)]
    pub show_names: bool,
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    #[serde(default = "default_negative_ttl_s")]
    pub negative_ttl_s: u64,
    #[serde(default = "default_identity_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    #[serde(default = "default_identity_concurrency")]
    pub concurrency: Spanned<usize>,
    #[serde(default = "default_breaker_open_s")]
    pub breaker_open_s: u64,
}

pub fn default_breaker_open_s() -> u64 {
    30
}

pub fn default_signature() -> Spanned<String> {
    Spanned::new(0..0, "hmac-sha1".into())
}
pub fn default_ttl_s() -> u64 {
    86_400
}
pub fn default_negative_ttl_s() -> u64 {
    600
}
pub fn default_identity_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5000)
}
pub fn default_identity_concurrency() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawXmpp {
    pub jid: Spanned<String>,
    pub password_file: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    #[serde(default = "default_xmpp_tls")]
    pub tls: Spanned<XmppTls>,
    pub pubsub: Spanned<String>,
    #[serde(default = "default_node_prefix")]
    pub node_prefix: String,
    #[serde(default)]
    pub publish_tags: bool,
    #[serde(default)]
    pub subscribe: Vec<Spanned<String>>,
    #[serde(default = "default_max_items")]
    pub max_items: u32,
}

pub fn default_max_items() -> u32 {
    100
}

pub fn default_xmpp_tls() -> Spanned<XmppTls> {
    Spanned::new(0..0, XmppTls::Required)
}

pub fn default_node_prefix() -> String {
    "vote/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default = "yes")]
    pub watch: bool,
    #[serde(default = "default_network_debounce_ms")]
    pub debounce_ms: Spanned<u64>,
}

impl Default for RawNetwork {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: default_network_debounce_ms(),
        }
    }
}

pub fn default_network_debounce_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1500)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHotplug {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_hotplug_pattern")]
    pub pattern: Spanned<String>,
}

impl Default for RawHotplug {
    fn default() -> Self {
        Self {
            enabled: true,
            pattern: default_hotplug_pattern(),
        }
    }
}

pub fn default_hotplug_pattern() -> Spanned<String> {
    Spanned::new(0..0, "dev-rfid-*.device".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScreen {
    pub enabled: Option<bool>,
    #[serde(default = "yes")]
    pub fullscreen: bool,
    /// Seconds each open poll is shown before the next; 0: no rotation.
    #[serde(default = "no_rotation")]
    pub rotate_s: Spanned<u64>,
    #[serde(default = "yes")]
    pub qr: bool,
}

pub fn no_rotation() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}

impl Default for RawScreen {
    fn default() -> Self {
        Self {
            enabled: None,
            fullscreen: true,
            rotate_s: no_rotation(),
            qr: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStation {
    pub id: Spanned<String>,
    pub data_dir: Spanned<String>,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    pub active_poll: Option<Spanned<String>>,
    #[serde(default = "default_language")]
    pub language: Spanned<String>,
}

pub fn default_language() -> Spanned<String> {
    Spanned::new(0..0, "en".into())
}

pub fn default_debounce_ms() -> u64 {
    2000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    pub admin_token_file: Option<String>,
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: Spanned<u64>,
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: Spanned<u64>,
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: Spanned<u64>,
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: Spanned<usize>,
    /// The results page's address as visitors' phones reach it (the QR code).
    pub public_url: Option<Spanned<String>>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            public_url: None,
            listen: default_listen(),
            admin_token_file: None,
            request_timeout_s: default_request_timeout_s(),
            header_timeout_s: default_header_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
        }
    }
}

pub fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}

pub fn default_request_timeout_s() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

pub fn default_header_timeout_s() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

pub fn default_idle_timeout_s() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}

/// Room for 10,000 browsers following the results, and then some.
pub fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 16_384)
}

/// A browser opens about 6; a venue's NAT puts many phones behind one.
pub fn default_max_connections_per_address() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    pub id: Spanned<String>,
    pub question: Spanned<String>,
    pub rule: Rule,
    pub answers: Spanned<Vec<RawAnswer>>,
    #[serde(default = "yes")]
    pub open: bool,
    #[serde(default)]
    pub display: Display,
}

pub fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnswer {
    pub id: Spanned<String>,
    pub label: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReader {
    pub id: Spanned<String>,
    pub device: Spanned<String>,
    pub protocol: Protocol,
    pub baud: Option<Spanned<u32>>,
    pub poll: Option<Spanned<String>>,
    pub answer: Option<Spanned<String>>,
    pub slot: Option<Spanned<String>>,
    #[serde(default)]
    pub uid_order: UidOrder,
    #[serde(default = "default_absence_ms")]
    pub absence_ms: u64,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: Spanned<u64>,
    #[serde(default = "default_feedback_counted")]
    pub feedback_counted: String,
    #[serde(default = "default_feedback_refused")]
    pub feedback_refused: String,
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
}

pub fn default_absence_ms() -> u64 {
    300
}
pub fn default_poll_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}
pub fn default_feedback_counted() -> String {
    "OK".into()
}
pub fn default_feedback_refused() -> String {
    "NO".into()
}
pub fn default_pulse_ms() -> u64 {
    400
}
