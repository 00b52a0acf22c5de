//! HTTP: the results page, the JSON API, Server-Sent Events and the admin
//! endpoints (axum), and the listener that serves them.
//!
//! - [`pages`]: the pages and the public JSON (snapshot reads);
//! - [`room`]: words, QR code, timeline and results as an image; `svg`
//!   draws the charts;
//! - [`sse`]: the event streams and their shared fan-out hub;
//! - `admin`: the endpoints that need the admin token;
//! - `error`: the JSON errors clients see, and the token check;
//! - [`serve`]: one listener, three sides (the intake's runtime for taps,
//!   the public one, the crowd's for event streams);
//! - `conn`: one connection with its deadlines; [`gate`]: the connection caps.
//!
//! A client of the Station like any other: reads come from the Station's
//! snapshot, changes from its broadcast, writes go through its handle, the
//! export through its reads. Invariants: errors are JSON `{"error",
//! "detail"}` and never carry internals (no SQLite or OS text); public
//! responses never carry tag UIDs; axum is used nowhere else.

mod admin;
mod conn;
mod error;
pub mod gate;
pub mod openapi;
pub mod pages;
pub mod room;
pub mod serve;
pub mod sse;
mod svg;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::station::StationHandle;
pub use error::ApiError;
pub use sse::{SseHub, crowd};

/// Largest request body accepted.
const BODY_LIMIT: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub station: StationHandle,
    pub admin_token: Arc<str>,
    /// Cancelled at shutdown: ends the event streams so the server can drain.
    pub shutdown: CancellationToken,
    pub hub: SseHub,
    /// Language, public address, QR code and rotation of the pages.
    pub room: Arc<room::Room>,
}

/// Build the router; tests call this directly.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route("/", get(pages::index))
        .route("/operator", get(pages::operator))
        .route("/assets/{name}", get(pages::asset))
        .route("/healthz", get(pages::healthz))
        .route("/metrics", get(pages::metrics))
        .route("/api/v1/station", get(pages::station_info))
        .route("/api/v1/polls", get(pages::polls))
        .route("/api/v1/polls/{poll}/tally", get(pages::tally))
        .route("/api/v1/polls/{poll}/tally.svg", get(room::tally_svg))
        .route("/api/v1/polls/{poll}/timeline", get(room::timeline))
        .route("/api/v1/polls/{poll}/timeline.svg", get(room::timeline_svg))
        .route("/api/v1/room", get(room::room))
        .route("/api/v1/qr.svg", get(room::qr))
        .route("/api/v1/herd", get(pages::herd))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/polls/{poll}/{action}", post(admin::poll_action))
        .route(
            "/api/v1/taps",
            get(admin::export_taps).post(admin::inject_tap),
        )
        .route("/api/v1/readers", post(admin::bind_reader))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ));
    // The event stream lives as long as the client wants: no request timeout.
    let streams = Router::new().route("/api/v1/events", get(sse::events));
    api.merge(streams)
        .fallback(error::not_found)
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}
