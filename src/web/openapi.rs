//! The HTTP API described as OpenAPI 3.1, generated at build time from the
//! handlers' `#[utoipa::path]` annotations and the types they serialize
//! (`derive(ToSchema)` on the domain's and the Station's types, so the
//! document cannot drift from the JSON): `GET /api/v1/openapi.json`.
//!
//! Admin endpoints carry the `admin` security scheme (`Authorization:
//! Bearer <token>`); every 4xx and 5xx answer is an [`ErrorBody`].

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::ErrorBody;
use super::{admin, pages, room, sse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pollstation",
        description = "An RFID polling station: live results, operator actions, the log's export, reader binding.",
        license(name = "See the package's copyright file"),
    ),
    paths(
        pages::index,
        pages::operator,
        pages::asset,
        pages::healthz,
        pages::metrics,
        pages::station_info,
        pages::polls,
        pages::tally,
        pages::herd,
        room::room,
        room::qr,
        room::timeline,
        room::timeline_svg,
        room::tally_svg,
        sse::events,
        admin::poll_action,
        admin::export_taps,
        admin::inject_tap,
        admin::bind_reader,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Admin),
    tags(
        (name = "public", description = "Anyone on the LAN; no tag UID ever"),
        (name = "admin", description = "Needs the admin token"),
        (name = "pages", description = "The pages themselves"),
    ),
)]
struct Doc;

/// The `admin` security scheme: the token the station made at first start.
struct Admin;

impl utoipa::Modify for Admin {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: `<data_dir>/admin-token`, or the systemd credential",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as served.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "public",
    responses((status = 200, description = "This document", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_the_admin_scheme() {
        let doc = serde_json::to_value(document()).unwrap();
        if std::env::var_os("PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        }
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/",
            "/operator",
            "/assets/{name}",
            "/healthz",
            "/metrics",
            "/api/v1/station",
            "/api/v1/polls",
            "/api/v1/polls/{poll}/tally",
            "/api/v1/polls/{poll}/tally.svg",
            "/api/v1/polls/{poll}/timeline",
            "/api/v1/polls/{poll}/timeline.svg",
            "/api/v1/room",
            "/api/v1/qr.svg",
            "/api/v1/herd",
            "/api/v1/polls/{poll}/{action}",
            "/api/v1/taps",
            "/api/v1/readers",
            "/api/v1/events",
            "/api/v1/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["admin"]["scheme"],
            "bearer"
        );
        let post_taps = &doc["paths"]["/api/v1/taps"]["post"];
        assert_eq!(post_taps["security"][0]["admin"], serde_json::json!([]));
        assert!(post_taps["responses"]["401"].is_object());
    }
}
