//! Prometheus metrics: the Prometheus text format (0.0.4) by default, and
//! OpenMetrics for a scraper that asks for it ([`Format`]).
//!
//! Conventions: totals are counters named `…_total`, durations in
//! `_seconds`; labels are bounded (readers, peers and origins are
//! configured, states are enums).
//!
//! Counters and histograms are updated where things happen (the Station
//! records commits and taps, the web layer counts SSE clients); gauges that
//! mirror state (readers, store) are read from the Station's snapshot at
//! scrape time, so they never disagree with `/api/v1/station`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::view::{NetState, ReaderStatus, Snapshot, XmppState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TapLabels {
    // Not `String`s: a label set is made for each tap (`true`/`false` as
    // before, from the bool).
    pub reader: Arc<str>,
    pub counted: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    pub reader: String,
}

/// All metrics of one station.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub taps: Family<TapLabels, Counter>,
    pub commit_seconds: Histogram,
    pub tap_seconds: Histogram,
    pub batch_size: Histogram,
    pub sse_clients: Gauge,
    readers_connected: Gauge,
    reader_connected: Family<ReaderLabels, Gauge>,
    frames_ok: Family<ReaderLabels, Counter<u64, AtomicU64>>,
    frames_bad: Family<ReaderLabels, Counter<u64, AtomicU64>>,
    store_writable: Gauge,
    taps_logged: Gauge<u64, AtomicU64>,
    network: Family<StateLabels, Gauge>,
    unbound_devices: Gauge,
    xmpp_online: Gauge,
    xmpp_outbox: Gauge<u64, AtomicU64>,
    xmpp_published: Counter<u64, AtomicU64>,
    /// Herd: links up now, connections refused, events taken from peers
    /// and dropped as held already.
    pub herd_links_up: Gauge,
    pub herd_refused: Counter,
    pub herd_received: Counter,
    pub herd_duplicates: Counter,
    herd_peer_up: Family<PeerLabels, Gauge>,
    herd_origin_lag: Family<OriginLabels, Gauge<u64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    pub origin: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pollstation");
        let taps = Family::<TapLabels, Counter>::default();
        registry.register(
            "taps",
            "Taps recorded, by reader and whether they counted",
            taps.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch to the log (including fsync)",
            commit_seconds.clone(),
        );
        let tap_seconds = Histogram::new(exponential_buckets(0.000_1, 1.5, 22));
        registry.register(
            "tap_seconds",
            "Time from a tap reaching the Station to its durable answer (queue, commit, reply)",
            tap_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "store_batch_size",
            "Records per committed batch",
            batch_size.clone(),
        );
        let sse_clients = Gauge::default();
        registry.register(
            "sse_clients",
            "Open Server-Sent Events streams",
            sse_clients.clone(),
        );
        let readers_connected = Gauge::default();
        registry.register(
            "readers_connected",
            "Readers currently connected",
            readers_connected.clone(),
        );
        let reader_connected = Family::<ReaderLabels, Gauge>::default();
        registry.register(
            "reader_connected",
            "1 if the reader is connected",
            reader_connected.clone(),
        );
        let frames_ok = Family::<ReaderLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "reader_frames",
            "Valid frames read from the reader since start",
            frames_ok.clone(),
        );
        let frames_bad = Family::<ReaderLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "reader_decoder_errors",
            "Junk or corrupt frames skipped on the reader since start",
            frames_bad.clone(),
        );
        let store_writable = Gauge::default();
        registry.register(
            "store_writable",
            "1 if the log can be written",
            store_writable.clone(),
        );
        let taps_logged = Gauge::<u64, AtomicU64>::default();
        registry.register("log_taps", "Taps in the log", taps_logged.clone());
        let network = Family::<StateLabels, Gauge>::default();
        registry.register(
            "network_state",
            "1 for the network state NetworkManager reports (online, limited, offline, unknown)",
            network.clone(),
        );
        let unbound_devices = Gauge::default();
        registry.register(
            "hotplug_unbound_devices",
            "Plugged-in reader devices that no reader is bound to",
            unbound_devices.clone(),
        );
        let xmpp_online = Gauge::default();
        registry.register(
            "xmpp_online",
            "1 while logged in to the XMPP server",
            xmpp_online.clone(),
        );
        let xmpp_outbox = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "xmpp_outbox",
            "Votes waiting to be published over XMPP",
            xmpp_outbox.clone(),
        );
        let xmpp_published = Counter::<u64, AtomicU64>::default();
        registry.register(
            "xmpp_published",
            "Votes published over XMPP since start",
            xmpp_published.clone(),
        );
        let herd_links_up = Gauge::default();
        registry.register(
            "herd_links_up",
            "Herd links to other stations that are up",
            herd_links_up.clone(),
        );
        let herd_refused = Counter::default();
        registry.register(
            "herd_refused",
            "Herd connections refused (certificate, herd, polls)",
            herd_refused.clone(),
        );
        let herd_received = Counter::default();
        registry.register(
            "herd_events_received",
            "Events taken from herd peers and stored",
            herd_received.clone(),
        );
        let herd_duplicates = Counter::default();
        registry.register(
            "herd_events_duplicate",
            "Events from herd peers dropped as held already",
            herd_duplicates.clone(),
        );
        let herd_peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "herd_peer_up",
            "1 while the link to this peer is up",
            herd_peer_up.clone(),
        );
        let herd_origin_lag = Family::<OriginLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "herd_origin_lag",
            "Events of this origin a peer holds and this station does not",
            herd_origin_lag.clone(),
        );
        Self {
            herd_links_up,
            herd_refused,
            herd_received,
            herd_duplicates,
            herd_peer_up,
            herd_origin_lag,
            xmpp_online,
            xmpp_outbox,
            xmpp_published,
            registry,
            taps,
            commit_seconds,
            tap_seconds,
            batch_size,
            sse_clients,
            readers_connected,
            reader_connected,
            frames_ok,
            frames_bad,
            store_writable,
            taps_logged,
            network,
            unbound_devices,
        }
    }

    /// The exposition in `format`, with state gauges taken from `snap`.
    #[must_use]
    pub fn render(&self, snap: &Snapshot, format: Format) -> String {
        let mut connected = 0;
        for r in &snap.readers {
            let l = ReaderLabels {
                reader: r.id.to_string(),
            };
            let up = i64::from(r.status == ReaderStatus::Connected);
            connected += up;
            self.reader_connected.get_or_create(&l).set(up);
            catch_up(&self.frames_ok.get_or_create(&l), r.frames_ok);
            catch_up(&self.frames_bad.get_or_create(&l), r.frames_bad);
        }
        self.readers_connected.set(connected);
        self.store_writable.set(i64::from(snap.store.writable));
        self.taps_logged.set(snap.store.taps);
        for state in [
            NetState::Online,
            NetState::Limited,
            NetState::Offline,
            NetState::Unknown,
        ] {
            self.network
                .get_or_create(&StateLabels {
                    state: state.as_str().into(),
                })
                .set(i64::from(snap.network.state == state));
        }
        self.xmpp_online
            .set(i64::from(snap.xmpp.state == XmppState::Online));
        self.xmpp_outbox.set(snap.xmpp.outbox);
        catch_up(&self.xmpp_published, snap.xmpp.published);
        if let Some(h) = &snap.herd {
            for p in &h.peers {
                let peer = p.station.clone().unwrap_or_else(|| p.address.clone());
                self.herd_peer_up
                    .get_or_create(&PeerLabels { peer })
                    .set(i64::from(p.state == super::view::LinkState::Up));
            }
            for o in &h.origins {
                self.herd_origin_lag
                    .get_or_create(&OriginLabels {
                        origin: o.origin.clone(),
                    })
                    .set(o.lag);
            }
        }
        self.unbound_devices
            .set(i64::try_from(snap.hotplug.unbound.len()).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => prometheus_text(&out),
        }
    }
}

/// Move a counter that mirrors a total kept elsewhere up to `total` (it
/// never goes down: a total that restarted lower is followed from there).
fn catch_up(c: &Counter<u64, AtomicU64>, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The two expositions a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what Prometheus and most tools read.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics only when named.
    #[must_use]
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The Prometheus text format of an OpenMetrics exposition (the encoder
/// writes only the latter). They differ, for what this station exports,
/// in three things: a counter's family is named with its `_total` suffix,
/// there are no `# UNIT` lines, and no `# EOF`. Samples are the same lines.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Written once the family's type (and so its name) is known.
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                k => (name.to_string(), k),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_openmetrics_only_when_asked() {
        let om = "# HELP p_taps Taps recorded.\n# TYPE p_taps counter\np_taps_total{reader=\"a\"} 3\n\
                  # HELP p_up 1 if up.\n# TYPE p_up gauge\np_up 1\n# HELP p_s Seconds.\n# TYPE p_s histogram\n# UNIT p_s seconds\n\
                  p_s_bucket{le=\"+Inf\"} 1\np_s_sum 0.5\np_s_count 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP p_taps_total Taps recorded.\n# TYPE p_taps_total counter\np_taps_total{reader=\"a\"} 3\n\
             # HELP p_up 1 if up.\n# TYPE p_up gauge\np_up 1\n# HELP p_s Seconds.\n# TYPE p_s histogram\n\
             p_s_bucket{le=\"+Inf\"} 1\np_s_sum 0.5\np_s_count 1\n"
        );
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    }
}
