//! The pages (embedded at build time from `ui/web/`) and the public JSON:
//! all read from the Station's snapshot, none carries a tag UID.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};
use crate::station::metrics::Format;
use crate::station::{ReaderStatus, Snapshot, health};

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

pub(super) async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../../ui/web/index.html"),
    )
}

pub(super) async fn operator() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../../ui/web/operator.html"),
    )
}

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
pub(super) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = s.station.metrics().render(&s.station.snapshot(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    let snap = s.station.snapshot();
    let connected = snap
        .readers
        .iter()
        .filter(|r| r.status == ReaderStatus::Connected)
        .count();
    let ok = snap.store.writable;
    let overview = health::overview(&snap);
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "level": overview.level,
        "components": overview.components,
        "store": snap.store,
        "readers": { "connected": connected, "total": snap.readers.len() },
        "network": snap.network,
        "hotplug": snap.hotplug,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub(super) fn station_json(snap: &Snapshot) -> serde_json::Value {
    json!({
        "id": snap.station,
        "started_at": snap.started_at,
        "active_poll": snap.active_poll,
        "readers": snap.readers,
        "network": snap.network,
        "hotplug": snap.hotplug,
        "xmpp": snap.xmpp,
        "remote": snap.remote,
        "identity": snap.identity,
        "herd": snap.herd,
        "store": snap.store,
        "health": health::overview(snap),
    })
}

pub(super) async fn station_info(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(station_json(&s.station.snapshot()))
}

pub(super) async fn polls(State(s): State<AppState>) -> Response {
    Json(s.station.snapshot().polls.clone()).into_response()
}

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

/// The herd: this station, its links, its feeds; 404 without `[herd]`.
pub(super) async fn herd(State(s): State<AppState>) -> Response {
    let snap = s.station.snapshot();
    match &snap.herd {
        Some(h) => Json(json!({ "station": snap.station, "herd": h })).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "no herd",
            "this station is not in a herd (no [herd] in its config)",
        )
        .into_response(),
    }
}
