//! The HTTP layer (actix-web): routes, thin handlers, the body limit.
//!
//! [`configure`] registers every route; `serve` and the in-process tests both use it. Handlers extract the
//! body, load the active revision once (a request sees exactly one revision from start to end), call
//! [`answer`] and map the result. Error statuses and bodies come from [`ApiError`] alone.

pub mod answer;
mod error;

use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use arc_swap::ArcSwapOption;

pub use answer::Answer;
pub use error::ApiError;

use crate::geo::GeoIp;
use crate::policy::Revision;

/// Request bodies larger than this get 413 (DPS messages are at most 96 KB).
pub const BODY_LIMIT: usize = 128 * 1024;

/// The response header carrying the decision: `rule=...; strategy=...; sticky=...; revision=...`.
pub const DECISION_HEADER: &str = "x-dps-allocator-decision";

/// State shared by every worker: the active policy revision (swapped atomically on reload) and the GeoIP
/// database.
#[derive(Clone, Default)]
pub struct AppState {
    /// The active revision; `None` until one has loaded.
    pub policy: Arc<ArcSwapOption<Revision>>,
    /// The GeoIP database, when configured.
    pub geoip: Option<Arc<GeoIp>>,
}

impl AppState {
    /// State serving this revision.
    pub fn with_revision(rev: Revision) -> Self {
        AppState {
            policy: Arc::new(ArcSwapOption::from_pointee(rev)),
            geoip: None,
        }
    }

    /// The same state with a GeoIP database.
    pub fn with_geoip(mut self, geoip: Option<GeoIp>) -> Self {
        self.geoip = geoip.map(Arc::new);
        self
    }
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .service(
            web::resource("/api/allocate")
                .route(web::post().to(allocate))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/explain")
                .route(web::post().to(explain))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn root() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("dps-allocator\n")
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.policy.load().as_ref() {
        Some(rev) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ready: revision {}\n", rev.id)),
        None => actix_web::ResponseError::error_response(&ApiError::not_ready()),
    }
}

async fn method_not_allowed() -> HttpResponse {
    let e = ApiError::new(405, "method_not_allowed", "use POST with an AllocationRequest body");
    actix_web::ResponseError::error_response(&e)
}

/// Reads the whole body, refusing more than [`BODY_LIMIT`] bytes without buffering them.
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::payload_too_large(BODY_LIMIT));
    }
    match payload.to_bytes_limited(BODY_LIMIT).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Err(_) => Err(ApiError::payload_too_large(BODY_LIMIT)),
    }
}

/// The body and the one revision that answers it from start to end.
async fn body_and_revision(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(web::Bytes, Arc<Revision>), ApiError> {
    let body = read_body(req, payload).await?;
    let rev = state.policy.load_full().ok_or_else(ApiError::not_ready)?;
    Ok((body, rev))
}

async fn allocate(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (body, rev) = body_and_revision(&state, &req, payload).await?;
    Ok(respond(answer::allocate(&body, &rev, state.geoip.as_deref()), &rev))
}

async fn explain(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (body, rev) = body_and_revision(&state, &req, payload).await?;
    let (answer, trace) = answer::explain(&body, &rev, state.geoip.as_deref());
    let report = serde_json::to_vec(&ExplainReport::new(&answer, &trace, &rev)).map_err(|_| ApiError::internal())?;
    Ok(HttpResponse::Ok().content_type("application/json").body(report))
}

/// The `explain` document: what allocate would answer, the decision and the trace.
#[derive(serde::Serialize)]
pub struct ExplainReport<'a> {
    /// The status allocate would answer.
    pub status: u16,
    /// The body allocate would answer.
    pub response: serde_json::Value,
    /// The decision.
    pub decision: answer::Summary<'a>,
    /// The chosen hub.
    pub hub: Option<&'a str>,
    /// Every step.
    pub trace: &'a crate::engine::Trace,
}

impl<'a> ExplainReport<'a> {
    /// Builds the report of one explained request.
    pub fn new(answer: &'a Answer, trace: &'a crate::engine::Trace, rev: &'a Revision) -> Self {
        ExplainReport {
            status: answer.status,
            response: serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null),
            decision: answer.summary(rev),
            hub: answer.hub.as_deref(),
            trace,
        }
    }
}

fn respond(answer: Answer, rev: &Revision) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    if answer.decision.is_some()
        && let Ok(v) = HeaderValue::from_str(&answer.summary(rev).header())
    {
        res.insert_header((HeaderName::from_static(DECISION_HEADER), v));
    }
    res.body(answer.body)
}
