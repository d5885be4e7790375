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
        crate::answer::ErrorBody,
        crate::dps::RawRequest,
        crate::dps::AllocationResponse
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn json() -> String {
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else {
        return String::new();
    };
    tighten(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Adds what the request parser enforces and the derive cannot say, so that a request valid by the
/// document is one the parser accepts and an invalid one is refused (schemathesis checks both ways):
/// required members are not nullable; a registration id follows DPS's rule; a linked hub is a host name;
/// exactly one enrollment is an object; at most one attestation member is present. `/api/explain` and
/// the Functions envelope take any body: they answer 200 whatever it holds, by design (the explanation,
/// or the DPS status inside the envelope).
fn tighten(doc: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    let request = &mut schemas["AllocationRequest"];
    request["properties"]["deviceRuntimeContext"] = json!({ "$ref": "#/components/schemas/DeviceRuntimeContext" });
    request["properties"]["linkedHubs"] = json!({
        "type": "array", "minItems": 1, "maxItems": crate::dps::LINKED_HUBS_MAX,
        "items": { "type": "string", "minLength": 1, "maxLength": crate::dps::HOST_NAME_MAX },
        "description": "The hubs the enrollment may use; the answer is one of them, spelled exactly."
    });
    let object = |name: &str| json!({ "required": [name], "properties": { name: { "type": "object" } } });
    request["oneOf"] = json!([object("enrollmentGroup"), object("individualEnrollment")]);
    let context = &mut schemas["DeviceRuntimeContext"];
    context["properties"]["registrationId"] = json!({
        "type": "string", "minLength": 1, "maxLength": crate::dps::REGISTRATION_ID_MAX,
        "pattern": "^[A-Za-z0-9._:-]+$",
        "description": "Case-insensitive in DPS: 1 to 128 letters, digits and `- . _ :`."
    });
    let present = json!({ "not": { "type": "null" } });
    let pairs = [("symmetricKey", "x509"), ("symmetricKey", "tpm"), ("x509", "tpm")];
    let both: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(a, b)| json!({ "required": [a, b], "properties": { *a: present, *b: present } }))
        .collect();
    context["not"] = json!({ "anyOf": both });
    // The attestation members are opaque: DPS documents only their presence, and x509's shape not at all.
    for member in ["symmetricKey", "x509", "tpm"] {
        let description = context["properties"][member]["description"].clone();
        context["properties"][member] = json!({ "description": description });
    }
    for path in ["/api/explain", "/allocate"] {
        let body = &mut doc["paths"][path]["post"]["requestBody"];
        let described = body["content"]["application/json"]["schema"].clone();
        body["content"] = json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } });
        body["required"] = json!(false);
        if let Some(reference) = described["$ref"].as_str() {
            let shape = reference.rsplit('/').next().unwrap_or_default();
            body["description"] = json!(format!("Any bytes; read as a `{shape}` JSON document."));
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json",
    params(("code" = Option<String>, Query, description = "API key, when keys are configured")),
    responses(
        (status = 200, description = "The OpenAPI 3 document", content_type = "application/json"),
        (status = 401, description = "Keys are configured and none was given (`unauthorized`)", body = crate::answer::ErrorBody),
    ))]
pub async fn serve(
    service: actix_web::web::Data<crate::server::Service>,
    gate: actix_web::web::Data<super::AdminGate>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    if let Err(e) = super::admin_caller(&service, &gate, &req) {
        return actix_web::ResponseError::error_response(&e);
    }
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
