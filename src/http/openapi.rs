//! The OpenAPI 3 document of the HTTP surface, generated from the handlers and wire types (utoipa) and
//! served at `/openapi.json`; `docs/openapi.json` is the same document kept in the repository, and a test
//! fails when they differ.

use actix_web::HttpResponse;
use utoipa::OpenApi;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dps-allocator",
        description = "Custom allocation webhook for Azure IoT Hub DPS."
    ),
    paths(super::status::status, super::status::metrics),
    components(schemas(super::status::StatusDoc))
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `GET /openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(json())
}
