//! What the room sees beyond the bars: the language's words and the
//! public address for the pages (`/api/v1/room`), the QR code of that
//! address, a poll's votes over time (JSON and SVG) and its results as an
//! image.

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, svg};
use crate::domain::Language;
use crate::station::timeline::{Timeline, TimelineError};

/// What the room's pages and the screen are told about their setting.
#[derive(Debug, Clone)]
pub struct Room {
    pub language: Language,
    /// The results page's address as phones reach it.
    pub public_url: String,
    pub qr: bool,
    /// Seconds per poll when the kiosk view rotates (0: it does not).
    pub rotate_s: u64,
}

impl Room {
    /// The QR code of the public address, as SVG.
    #[must_use]
    pub fn qr_svg(&self) -> Option<String> {
        let code = qrcode::QrCode::new(self.public_url.as_bytes()).ok()?;
        Some(
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .quiet_zone(true)
                .build(),
        )
    }
}

/// `GET /api/v1/room`: what the pages show besides the polls.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct RoomInfo<'a> {
    language: crate::domain::words::Language,
    /// Every visitor text of the pages, in that language.
    words: &'a crate::domain::words::Words,
    /// The address the QR code carries.
    public_url: &'a str,
    /// Whether the kiosk shows the QR code.
    qr: bool,
    /// Seconds each open poll is shown before the next (0: no rotation).
    rotate_s: u64,
}

#[utoipa::path(get, path = "/api/v1/room", tag = "public",
    responses((status = 200, description = "Language, texts, public address, QR code and rotation of the pages", body = RoomInfo)))]
pub(super) async fn room(State(s): State<AppState>) -> Response {
    let r = &s.room;
    Json(RoomInfo {
        language: r.language,
        words: r.language.words(),
        public_url: &r.public_url,
        qr: r.qr,
        rotate_s: r.rotate_s,
    })
    .into_response()
}

fn svg_response(body: String, download: Option<&str>) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    if let Some(name) = download
        && let Ok(v) = format!("inline; filename=\"{name}.svg\"").parse()
    {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[utoipa::path(get, path = "/api/v1/qr.svg", tag = "public",
    responses(
        (status = 200, description = "The QR code of the public address", body = String, content_type = "image/svg+xml"),
        (status = 404, description = "The address is too long for a QR code", body = super::error::ErrorBody),
    ))]
pub(super) async fn qr(State(s): State<AppState>) -> Response {
    match s.room.qr_svg() {
        Some(svg) => svg_response(svg, None),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "no QR code",
            "the public address is too long for a QR code",
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TimelineQuery {
    /// Seconds per bucket, 0.001–2592000 (default: a round size giving at
    /// most ~120 points; at most 2,000 buckets are served, else 400).
    #[param(value_type = Option<f64>, minimum = 0.001, maximum = 2592000, example = 60)]
    bucket: Option<String>,
}

/// `bucket=SECONDS` (a decimal, at least 0.001) as milliseconds.
fn bucket_ms(q: &TimelineQuery) -> Result<Option<i64>, ApiError> {
    let Some(b) = q.bucket.as_deref() else {
        return Ok(None);
    };
    match b.trim().parse::<f64>() {
        Ok(s) if (0.001..=86_400.0 * 30.0).contains(&s) => Ok(Some((s * 1000.0).round() as i64)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad query",
            format!(
                "bucket={b:?} is not a number of seconds between 0.001 and 2592000 (e.g. bucket=60)"
            ),
        )),
    }
}

async fn timeline_of(s: &AppState, poll: &str, q: &TimelineQuery) -> Result<Timeline, ApiError> {
    let bucket = bucket_ms(q)?;
    s.station.timeline(poll, bucket).await.map_err(|e| match e {
        TimelineError::UnknownPoll(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown poll", e.to_string())
        }
        TimelineError::TooMany(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad query", e.to_string())
        }
        TimelineError::Store(e) => super::error::store_unavailable(&e),
    })
}

#[utoipa::path(get, path = "/api/v1/polls/{poll}/timeline", tag = "public",
    params(("poll" = String, Path, description = "A poll's id"), TimelineQuery),
    responses(
        (status = 200, description = "Votes over time, folded from the log", body = Timeline),
        (status = 400, description = "A bad bucket, or too many buckets", body = super::error::ErrorBody),
        (status = 404, description = "No such poll", body = super::error::ErrorBody),
        (status = 503, description = "The log cannot be read", body = super::error::ErrorBody),
    ))]
pub(super) async fn timeline(
    State(s): State<AppState>,
    UrlPath(poll): UrlPath<String>,
    Query(q): Query<TimelineQuery>,
) -> Response {
    match timeline_of(&s, &poll, &q).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/polls/{poll}/timeline.svg", tag = "public",
    params(("poll" = String, Path, description = "A poll's id"), TimelineQuery),
    responses(
        (status = 200, description = "Votes over time as a chart", body = String, content_type = "image/svg+xml"),
        (status = 400, description = "A bad bucket, or too many buckets", body = super::error::ErrorBody),
        (status = 404, description = "No such poll", body = super::error::ErrorBody),
        (status = 503, description = "The log cannot be read", body = super::error::ErrorBody),
    ))]
pub(super) async fn timeline_svg(
    State(s): State<AppState>,
    UrlPath(poll): UrlPath<String>,
    Query(q): Query<TimelineQuery>,
) -> Response {
    match timeline_of(&s, &poll, &q).await {
        Ok(t) => svg_response(svg::timeline(&t, s.room.language.words()), None),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/polls/{poll}/tally.svg", tag = "public",
    params(("poll" = String, Path, description = "A poll's id")),
    responses(
        (status = 200, description = "The tally as an image (bars, counts, percentages)", body = String, content_type = "image/svg+xml"),
        (status = 404, description = "No such poll", body = super::error::ErrorBody),
    ))]
pub(super) async fn tally_svg(
    State(s): State<AppState>,
    UrlPath(poll): UrlPath<String>,
) -> Response {
    let snap = s.station.snapshot();
    let (Some(def), Some(t)) = (
        snap.polls.iter().find(|p| p.def.id == poll),
        snap.tally(&poll),
    ) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown poll",
            format!("no poll {poll:?} is configured"),
        )
        .into_response();
    };
    let body = svg::tally(
        &def.def.question,
        t,
        s.room.language.words(),
        crate::sys::clock::now_ms(),
    );
    svg_response(body, Some(&poll))
}
