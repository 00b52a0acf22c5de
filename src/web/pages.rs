//! The pages (embedded at build time from `ui/web/`) and the public JSON:
//! all read from the Station's snapshot, none carries a tag UID.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::station::metrics::Format;
use crate::station::{
    HerdView, HotplugView, IdentityView, NetworkStatus, ReaderState, ReaderStatus, RemoteTally,
    Snapshot, StoreHealth, XmppView, health,
};

/// Content-Security-Policy of our pages: everything from the station itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "The live results page (`?kiosk=1`: the projector view)", content_type = "text/html")))]
pub(super) async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../../ui/web/index.html"),
    )
}

#[utoipa::path(get, path = "/operator", tag = "pages",
    responses((status = 200, description = "The operator page (signs in with the admin token)", content_type = "text/html")))]
pub(super) async fn operator() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../../ui/web/operator.html"),
    )
}

#[utoipa::path(get, path = "/assets/{name}", tag = "pages",
    params(("name" = String, Path, description = "app.js, operator.js, style.css, …")),
    responses(
        (status = 200, description = "A script or stylesheet of the pages", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such asset", body = super::error::ErrorBody),
    ))]
pub(super) async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match name.as_str() {
        "operator.js" => page(
            "text/javascript; charset=utf-8",
            include_str!("../../ui/web/operator.js"),
        ),
        "app.js" => page(
            "text/javascript; charset=utf-8",
            include_str!("../../ui/web/app.js"),
        ),
        "style.css" => page(
            "text/css; charset=utf-8",
            include_str!("../../ui/web/style.css"),
        ),
        _ => super::error::not_found().await.into_response(),
    }
}

/// The Prometheus text format, or OpenMetrics when the scraper's `Accept`
/// names it.
#[utoipa::path(get, path = "/metrics", tag = "public",
    responses((status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics when `Accept` names `application/openmetrics-text`", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = s.station.metrics().render(&s.station.snapshot(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// `GET /healthz`: the overall state, 200 while the log can be written.
#[derive(Serialize, ToSchema)]
pub(super) struct Health<'a> {
    /// `ok` while the log can be written, else `error` (and a 503).
    #[schema(example = "ok")]
    status: &'static str,
    level: health::Level,
    components: Vec<health::Component>,
    store: &'a StoreHealth,
    readers: ReaderCount,
    network: &'a NetworkStatus,
    hotplug: &'a HotplugView,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ReaderCount {
    connected: usize,
    total: usize,
}

#[utoipa::path(get, path = "/healthz", tag = "public",
    responses(
        (status = 200, description = "The log can be written", body = Health),
        (status = 503, description = "The log cannot be written (the rest still answers)", body = Health),
    ))]
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    let snap = s.station.snapshot();
    let connected = snap
        .readers
        .iter()
        .filter(|r| r.status == ReaderStatus::Connected)
        .count();
    let ok = snap.store.writable;
    let overview = health::overview(&snap);
    let body = Health {
        status: if ok { "ok" } else { "error" },
        level: overview.level,
        components: overview.components,
        store: &snap.store,
        readers: ReaderCount {
            connected,
            total: snap.readers.len(),
        },
        network: &snap.network,
        hotplug: &snap.hotplug,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /api/v1/station`, and the event stream's `status` event.
#[derive(Serialize, ToSchema)]
pub(super) struct StationInfo<'a> {
    #[schema(example = "hall-a")]
    id: &'a str,
    /// ms since the epoch.
    started_at: i64,
    active_poll: Option<&'a str>,
    readers: &'a [ReaderState],
    network: &'a NetworkStatus,
    hotplug: &'a HotplugView,
    xmpp: &'a XmppView,
    /// Results heard over XMPP from other stations' nodes.
    remote: &'a [RemoteTally],
    identity: &'a IdentityView,
    /// Absent without `[herd]`.
    herd: Option<&'a HerdView>,
    store: &'a StoreHealth,
    health: health::Overview,
}

pub(super) fn station_json(snap: &Snapshot) -> StationInfo<'_> {
    StationInfo {
        id: &snap.station,
        started_at: snap.started_at,
        active_poll: snap.active_poll.as_deref(),
        readers: &snap.readers,
        network: &snap.network,
        hotplug: &snap.hotplug,
        xmpp: &snap.xmpp,
        remote: &snap.remote,
        identity: &snap.identity,
        herd: snap.herd.as_ref(),
        store: &snap.store,
        health: health::overview(snap),
    }
}

#[utoipa::path(get, path = "/api/v1/station", tag = "public",
    responses((status = 200, description = "The station: readers, network, XMPP, identity, herd, store, health", body = StationInfo)))]
pub(super) async fn station_info(State(s): State<AppState>) -> Response {
    Json(station_json(&s.station.snapshot())).into_response()
}

#[utoipa::path(get, path = "/api/v1/polls", tag = "public",
    responses((status = 200, description = "Every configured poll", body = Vec<crate::station::PollState>)))]
pub(super) async fn polls(State(s): State<AppState>) -> Response {
    Json(s.station.snapshot().polls.clone()).into_response()
}

#[utoipa::path(get, path = "/api/v1/polls/{poll}/tally", tag = "public",
    params(("poll" = String, Path, description = "A poll's id")),
    responses(
        (status = 200, description = "The poll's tally (herd-wide, with a per-station breakdown)", body = crate::domain::tally::TallyView),
        (status = 404, description = "No such poll", body = super::error::ErrorBody),
    ))]
pub(super) async fn tally(State(s): State<AppState>, UrlPath(poll): UrlPath<String>) -> Response {
    match s.station.snapshot().tally(&poll) {
        Some(t) => Json(t.clone()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown poll",
            format!("no poll {poll:?} is configured"),
        )
        .into_response(),
    }
}

/// `GET /api/v1/herd`.
#[derive(Serialize, ToSchema)]
pub(super) struct HerdInfo<'a> {
    station: &'a str,
    herd: &'a HerdView,
}

/// The herd: this station, its links, its feeds; 404 without `[herd]`.
#[utoipa::path(get, path = "/api/v1/herd", tag = "public",
    responses(
        (status = 200, description = "This station's herd: its links and every origin's feeds", body = HerdInfo),
        (status = 404, description = "Not in a herd (no `[herd]`)", body = super::error::ErrorBody),
    ))]
pub(super) async fn herd(State(s): State<AppState>) -> Response {
    let snap = s.station.snapshot();
    match &snap.herd {
        Some(h) => Json(HerdInfo {
            station: &snap.station,
            herd: h,
        })
        .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "no herd",
            "this station is not in a herd (no [herd] in its config)",
        )
        .into_response(),
    }
}
