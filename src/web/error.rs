//! The errors clients see (`{"error", "detail"}`, a status that says what
//! kind of failure it was) and the admin token check.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::domain::intake::Refusal;
use crate::station::{ActionError, BindError, StoreError, TapError};

/// An error's body, as every 4xx and 5xx answer carries it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What kind of failure, in a few words (`"unknown poll"`).
    #[schema(example = "unknown poll")]
    pub error: String,
    /// What exactly went wrong, and what to do about it.
    #[schema(example = "no poll \"lunch\" is configured")]
    pub detail: String,
}

/// An error as clients see it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.error.to_string(),
                detail: self.detail,
            }),
        )
            .into_response()
    }
}

impl From<TapError> for ApiError {
    fn from(e: TapError) -> Self {
        let (status, error) = match &e {
            TapError::UnknownReader(_) => (StatusCode::NOT_FOUND, "unknown reader"),
            TapError::Refused(Refusal::NoActivePoll | Refusal::EmptySlot { .. }) => {
                (StatusCode::CONFLICT, "no answer for this reader")
            }
            TapError::Refused(Refusal::PollClosed(_)) => (StatusCode::CONFLICT, "poll closed"),
            TapError::Store(s) => return not_recorded("the tap", s),
            TapError::Restoring => (StatusCode::SERVICE_UNAVAILABLE, "restoring"),
            TapError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let (status, error) = match &e {
            ActionError::UnknownPoll(_) => (StatusCode::NOT_FOUND, "unknown poll"),
            ActionError::Store(s) => return not_recorded("the action", s),
            ActionError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

impl From<BindError> for ApiError {
    fn from(e: BindError) -> Self {
        let (status, error) = match &e {
            BindError::DuplicateId(_) | BindError::DeviceInUse(..) => {
                (StatusCode::CONFLICT, "already bound")
            }
            BindError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad binding"),
            BindError::Store(s) => return not_recorded("the binding", s),
            BindError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        };
        Self::new(status, error, e.to_string())
    }
}

/// A write the log refused: the kind of failure, never the store's text
/// (operators find that in `/healthz` and the log).
fn not_recorded(what: &str, e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "{what} was not recorded");
    let why = match e {
        StoreError::Full(_) => "the disk is full",
        StoreError::ReadOnly(_) => "the data directory is read-only",
        StoreError::Closed => "the station is stopping",
        _ => "the log cannot be written",
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not recorded",
        format!("{what} could not be recorded: {why}; see /healthz"),
    )
}

/// A read of the log that failed.
pub(super) fn store_unavailable(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "store read failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
        "the log cannot be read right now; see /healthz",
    )
}

/// Every error a client gets is our JSON: the rejections axum makes itself
/// (413 body too large, 400 a query that does not parse, 405, a timeout's
/// 503) are plain text, so they are said again as `{"error", "detail"}`.
pub(super) async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let detail = if text.is_empty() {
        match status {
            StatusCode::SERVICE_UNAVAILABLE => "the request took too long; try again".to_string(),
            _ => error.clone(),
        }
    } else {
        text
    };
    let mut out = (status, Json(json!({ "error": error, "detail": detail }))).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found", "no such endpoint")
}

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        let Some(given) = given else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs `Authorization: Bearer <admin token>`",
            ));
        };
        use subtle::ConstantTimeEq;
        if bool::from(given.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin token is wrong",
            ))
        }
    }
}
