//! Prometheus metrics (OpenMetrics text, which Prometheus scrapes).
//!
//! Counters and histograms are updated where things happen (the Station
//! records commits and taps, the web layer counts SSE clients); gauges that
//! mirror state (readers, store) are read from the Station's snapshot at
//! scrape time, so they never disagree with `/api/v1/station`.

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
    pub reader: String,
    pub counted: String,
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
    frames_ok: Family<ReaderLabels, Gauge<u64, AtomicU64>>,
    frames_bad: Family<ReaderLabels, Gauge<u64, AtomicU64>>,
    store_writable: Gauge,
    taps_logged: Gauge<u64, AtomicU64>,
    network: Family<StateLabels, Gauge>,
    unbound_devices: Gauge,
    xmpp_online: Gauge,
    xmpp_outbox: Gauge<u64, AtomicU64>,
    xmpp_published: Gauge<u64, AtomicU64>,
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
        let frames_ok = Family::<ReaderLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "reader_frames_ok",
            "Valid frames read from the reader since start",
            frames_ok.clone(),
        );
        let frames_bad = Family::<ReaderLabels, Gauge<u64, AtomicU64>>::default();
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
        let xmpp_published = Gauge::<u64, AtomicU64>::default();
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

    /// The exposition, with state gauges taken from `snap`.
    #[must_use]
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut connected = 0;
        for r in &snap.readers {
            let l = ReaderLabels {
                reader: r.id.clone(),
            };
            let up = i64::from(r.status == ReaderStatus::Connected);
            connected += up;
            self.reader_connected.get_or_create(&l).set(up);
            self.frames_ok.get_or_create(&l).set(r.frames_ok);
            self.frames_bad.get_or_create(&l).set(r.frames_bad);
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
        self.xmpp_published.set(snap.xmpp.published);
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
        out
    }
}
