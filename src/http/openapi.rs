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
    paths(
        super::allocate,
        super::explain,
        super::envelope,
        super::root,
        super::healthz,
        super::readyz,
        super::status::status,
        super::status::metrics,
        serve,
    ),
    components(schemas(
        super::status::StatusDoc,
        super::ErrorBody,
        crate::dps::RawRequest,
        crate::dps::AllocationResponse
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(json())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` must be exactly what the code generates. After changing the HTTP surface, run
    /// `UPDATE_OPENAPI=1 cargo test openapi` to rewrite it, and review the diff.
    #[test]
    fn the_openapi_document_in_the_repository_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = format!("{}\n", json());
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("writes docs/openapi.json");
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == generated,
            "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test openapi"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(&json()).expect("json");
        for path in [
            "/api/allocate",
            "/api/explain",
            "/allocate",
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/status",
            "/openapi.json",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
        }
        let req = &doc["components"]["schemas"]["AllocationRequest"];
        assert_eq!(
            req["required"],
            serde_json::json!(["deviceRuntimeContext", "linkedHubs"])
        );
    }
}
