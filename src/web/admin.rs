//! The endpoints that need the admin token: inject a tap, bind a reader,
//! act on a poll, export the log. Each answers only after the Station says
//! the change is durable; rejected input stores nothing.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::error::{Admin, store_unavailable};
use super::{ApiError, AppState};
use crate::config::{Protocol, ReaderConfig, valid_id};
use crate::domain::tap::Counted;
use crate::domain::{ActionKind, Binding, TagUid, TapRecord};
use crate::station::{ExportFormat, TapOutcome};

/// Run `body` as a task that feeds a response stream through a small
/// channel; `body` stops when a send fails (the client went away).
fn channel_stream<T, F, Fut>(capacity: usize, body: F) -> impl Stream<Item = Result<T, Infallible>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(capacity);
    tokio::spawn(body(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

fn bad_request(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad request", detail)
}

/// `POST /api/v1/taps`: a tap as if read.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TapRequest {
    /// A configured reader's id.
    #[schema(
        example = "post-1",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$"
    )]
    reader: String,
    /// The tag's UID: hex (4, 7 or 10 bytes; `:`, `-` or spaces between
    /// bytes allowed) or decimal.
    #[schema(example = "04A1B2C3", min_length = 1, max_length = 64)]
    tag: String,
}

/// A tap as the admin API answers it: the export's shape with whether it
/// counted and whether it was a repeat.
fn tap_record(o: &TapOutcome) -> TapRecord<'_> {
    TapRecord {
        tap: &o.tap,
        counted: Counted::Known(o.counted),
        repeat: Some(o.repeat),
    }
}

#[utoipa::path(post, path = "/api/v1/taps", tag = "admin", security(("admin" = [])),
    request_body = TapRequest,
    responses(
        (status = 201, description = "Taken: durable, announced", body = crate::domain::TapRecord),
        (status = 200, description = "A repeat inside the debounce window: the earlier tap", body = crate::domain::TapRecord),
        (status = 400, description = "Not a tap request", body = super::error::ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = super::error::ErrorBody),
        (status = 404, description = "No such reader", body = super::error::ErrorBody),
        (status = 409, description = "The reader has no answer now (poll closed, no active poll)", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "Not a tag UID", body = super::error::ErrorBody),
        (status = 503, description = "Not recorded: the log cannot be written, or the station is restoring or stopping", body = super::error::ErrorBody),
    ))]
pub(super) async fn inject_tap(
    _: Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TapRequest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "expected {{\"reader\": \"...\", \"tag\": \"...\"}}: {e}"
        ))
    })?;
    let tag = TagUid::parse(&req.tag)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad tag", e.to_string()))?;
    let outcome = s.station.tap(&req.reader, tag).await?;
    let status = if outcome.repeat {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(tap_record(&outcome))).into_response())
}

/// Bind a plugged-in device as a new reader: `{"device": "/dev/rfid/x",
/// "slot": "A"}` or `{"device": …, "poll": …, "answer": …}`; optional `id`
/// (default: the device's file name) and `protocol` (default `auto`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BindRequest {
    /// A plugged-in reader device (as the hotplug watcher announced it) or
    /// a path under `/dev/`.
    #[schema(example = "/dev/rfid/post-3", pattern = "^/dev/[^/]+(/[^/]+)*$")]
    device: String,
    /// Default: the device's file name.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    id: Option<String>,
    /// pn532, sm130, id12, rdm6300, text or auto (default).
    #[schema(example = "auto")]
    protocol: Option<String>,
    /// An answer slot (A, B, …) of whichever poll is active; or give a
    /// fixed `poll` and `answer` instead.
    #[schema(example = "A", pattern = "^[A-Za-z]$")]
    slot: Option<String>,
    /// With `answer`: a fixed poll's answer (instead of `slot`).
    poll: Option<String>,
    answer: Option<String>,
}

/// Where a device to bind may be: one the hotplug watcher announced as
/// plugged in (`[hotplug] pattern`), or a path under `/dev/` that does not
/// leave it (`..`) — never any other file of the machine.
fn device_path(device: &str, announced: &[String]) -> Result<std::path::PathBuf, ApiError> {
    let path = std::path::Path::new(device);
    let inside_dev = path.starts_with("/dev/")
        && path.components().count() >= 3
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
    if !inside_dev && !announced.iter().any(|d| d == device) {
        return Err(bad_request(format!(
            "device {device:?} is neither a plugged-in reader device nor a path under /dev/ (e.g. /dev/rfid/post-3)"
        )));
    }
    Ok(path.to_path_buf())
}

#[utoipa::path(post, path = "/api/v1/readers", tag = "admin", security(("admin" = [])),
    request_body = BindRequest,
    responses(
        (status = 201, description = "Bound and started (kept until the next restart)", body = crate::station::ReaderState),
        (status = 400, description = "Not a binding request, a device outside /dev/, a bad id or protocol", body = super::error::ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = super::error::ErrorBody),
        (status = 409, description = "The id or the device is already a reader's", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "The binding names an unknown poll, answer or slot", body = super::error::ErrorBody),
        (status = 503, description = "The station is stopping", body = super::error::ErrorBody),
    ))]
pub(super) async fn bind_reader(
    _: Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: BindRequest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "expected {{\"device\": \"/dev/rfid/…\", \"slot\": \"A\"}} or poll + answer: {e}"
        ))
    })?;
    let snap = s.station.snapshot();
    // Plugged in and announced, or already a reader's (the Station then
    // says which one has it).
    let known: Vec<String> = snap
        .hotplug
        .unbound
        .iter()
        .cloned()
        .chain(snap.readers.iter().map(|r| r.device.to_string()))
        .collect();
    let device = device_path(&req.device, &known)?;
    let id = match req.id {
        Some(id) => id,
        None => device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !valid_id(&id) {
        return Err(bad_request(format!(
            "reader id {id:?} is not a valid id: use 1–64 letters, digits, '-', '_' or '.'"
        )));
    }
    let protocol = match req.protocol.as_deref() {
        None => Protocol::Auto,
        Some(p) => p
            .parse()
            .map_err(|e: crate::config::UnknownProtocol| bad_request(e.to_string()))?,
    };
    let binding = Binding::from_parts(
        req.poll.as_deref(),
        req.answer.as_deref(),
        req.slot.as_deref(),
    )
    .map_err(|e| bad_request(e.to_string()))?;
    let cfg = ReaderConfig::with_defaults(id, device, protocol, binding);
    let state = s.station.bind_reader(cfg).await?;
    Ok((StatusCode::CREATED, Json(state)).into_response())
}

#[utoipa::path(post, path = "/api/v1/polls/{poll}/{action}", tag = "admin", security(("admin" = [])),
    params(
        ("poll" = String, Path, description = "A poll's id"),
        ("action" = String, Path, description = "open, close, reset or activate"),
    ),
    responses(
        (status = 200, description = "Done and logged: the poll as it is now", body = crate::station::PollState),
        (status = 401, description = "No or a wrong admin token", body = super::error::ErrorBody),
        (status = 404, description = "No such poll or action", body = super::error::ErrorBody),
        (status = 503, description = "Not recorded: the log cannot be written, or the station is stopping", body = super::error::ErrorBody),
    ))]
pub(super) async fn poll_action(
    _: Admin,
    State(s): State<AppState>,
    UrlPath((poll, action)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let kind: ActionKind = action
        .parse()
        .map_err(|e: crate::domain::poll::UnknownAction| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown action", e.to_string())
        })?;
    let state = s.station.poll_action(&poll, kind).await?;
    Ok(Json(state).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$", example = "csv")]
    format: Option<String>,
    /// Only taps logged after this one (`station:seq`, a tap the log holds).
    #[param(example = "hall-a:42", pattern = "^[A-Za-z0-9._-]+:[0-9]+$")]
    after: Option<String>,
    /// Only the last N taps (JSON array, oldest first): the operator page.
    tail: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/taps", tag = "admin", security(("admin" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "Every tap (with tag UIDs), streamed in log order; `format=csv` as CSV", content(
            (Vec<crate::domain::TapRecord> = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A bad query", body = super::error::ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = super::error::ErrorBody),
        (status = 404, description = "`after` names a tap the log does not hold", body = super::error::ErrorBody),
        (status = 503, description = "The log cannot be read", body = super::error::ErrorBody),
    ))]
pub(super) async fn export_taps(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    if let Some(n) = q.tail {
        if q.after.is_some() || q.format.as_deref().is_some_and(|f| f != "json") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad query",
                "tail= goes alone (JSON only, no after=)",
            ));
        }
        let taps = s
            .station
            .tail(n.min(10_000))
            .await
            .map_err(|e| store_unavailable(&e))?;
        return Ok(Json(taps).into_response());
    }
    let format = match q.format.as_deref() {
        None | Some("json") => ExportFormat::Json,
        Some("csv") => ExportFormat::Csv,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad format",
                format!("format {other:?} is not json or csv"),
            ));
        }
    };
    let after = match q.after {
        None => None,
        Some(a) => {
            let parsed = a
                .rsplit_once(':')
                .and_then(|(st, seq)| Some((st.to_string(), seq.parse::<u64>().ok()?)));
            let Some((station, seq)) = parsed else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad cursor",
                    format!("after={a:?} is not STATION:SEQ"),
                ));
            };
            match s.station.tap_exists(station.clone(), seq).await {
                Ok(true) => Some((station, seq)),
                Ok(false) => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown cursor",
                        format!("no tap {station}:{seq} in the log"),
                    ));
                }
                Err(e) => return Err(store_unavailable(&e)),
            }
        }
    };
    let mut lines = s.station.export(after, format);
    let csv = format == ExportFormat::Csv;
    let stream = channel_stream(16, move |tx| async move {
        if !csv && tx.send(Bytes::from_static(b"[")).await.is_err() {
            return;
        }
        let mut first = true;
        while let Some(line) = lines.next().await {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "export aborted by a store error");
                    return; // the response is cut short: the client sees an incomplete body
                }
            };
            let chunk = match (csv, first) {
                (true, _) => line + "\n",
                (false, true) => line,
                (false, false) => format!(",\n{line}"),
            };
            first = false;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        if !csv {
            let _ = tx.send(Bytes::from_static(b"]\n")).await;
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if csv {
        resp.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"taps.csv\""),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_paths_can_be_bound() {
        assert!(device_path("/dev/rfid/post-3", &[]).is_ok());
        assert!(device_path("/dev/ttyUSB0", &[]).is_ok());
        for bad in [
            "rel",
            "/etc/shadow",
            "/dev/../etc/shadow",
            "/dev",
            "/devx/a",
        ] {
            assert!(device_path(bad, &[]).is_err(), "{bad}");
        }
        let plugged = ["/run/x/spare".to_string()];
        assert!(device_path("/run/x/spare", &plugged).is_ok());
        assert!(device_path("/run/x/other", &plugged).is_err());
    }
}
