//! The HTTP layer (actix-web): routes, thin handlers, the body limit, keys, the Functions envelope.
//!
//! [`configure`] registers every route and [`app`] wraps them with the request span; `serve` and the
//! in-process tests both use them. An allocation handler checks the key, reads the body, loads the active
//! revision once (a request sees exactly one revision from start to end), asks the service for the answer
//! (the decision cache, else [`crate::answer`]), and emits one decision event. Error statuses and bodies
//! come from [`ApiError`] alone; this layer only turns them into responses.

pub mod envelope;
mod error;
pub mod openapi;
mod span;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Condition;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use tracing_actix_web::{RequestId, TracingLogger};

pub use span::RequestSpan;

use crate::answer::{ApiError, ErrorBody, ErrorCode, ExplainReport};
use crate::policy::Revision;
use crate::server::keys::KEY_HEADER;
use crate::server::{Served, Service};
use crate::telemetry::events::{self, DecisionEvent};

/// Request bodies larger than this get 413 (DPS messages are at most 96 KB).
pub const BODY_LIMIT: usize = 128 * 1024;

/// A body must arrive whole within this time after the headers, or the request gets 408 and the
/// connection is closed. DPS sends its small body at once; a client that stalls or trickles (1 byte every
/// half second, say) would otherwise hold a connection and a file descriptor for ever.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The response header carrying the decision: `rule=...; strategy=...; sticky=...; revision=...`.
pub const DECISION_HEADER: &str = "x-dps-allocator-decision";

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// One listener for everything (no `--admin-listen`): `/status`, `/metrics` and `/openapi.json` need
    /// a key when keys are configured.
    Single,
    /// The public listener beside an admin one: the DPS routes and the probes only.
    Public,
    /// The admin listener: `/status`, `/metrics`, `/openapi.json` and the probes. `keyed`: they need a key
    /// (keys are configured and `--allow-unauthenticated` was not given).
    Admin {
        /// Whether a key is required.
        keyed: bool,
    },
}

/// Whether the admin routes of an app need a key (app data of every app).
#[derive(Debug, Clone, Copy)]
pub struct AdminGate {
    /// A key is required.
    pub keyed: bool,
}

/// The application of a single listener: every route (with the request span around them when debug
/// logging is on).
pub fn app(
    service: web::Data<Service>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_for(service, Listener::Single)
}

/// The application of one listener: its routes; any other path 404. The request span
/// (tracing-actix-web, one span per request, at debug level) is there only when debug logging is on: at
/// the default level it would cost a request id string, a route string and a span per request that
/// nothing reads (docs/performance.md). Every log line a request writes carries its request id either way.
pub fn app_for(
    service: web::Data<Service>,
    listener: Listener,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let keyed = match listener {
        Listener::Single => !service.keys.is_empty(),
        Listener::Admin { keyed } => keyed,
        Listener::Public => true,
    };
    App::new()
        .app_data(service)
        .app_data(web::Data::new(AdminGate { keyed }))
        .wrap(Condition::new(
            tracing::enabled!(tracing::Level::DEBUG),
            TracingLogger::<RequestSpan>::new(),
        ))
        .configure(|cfg| configure(cfg, listener))
        .default_service(web::to(not_found))
}

/// Registers the routes of a listener: probes everywhere, the DPS routes on the public one, the admin
/// routes on the admin one, everything on a single one. The router tries routes in this order (the paths
/// are distinct, so the order changes nothing else): the DPS routes, which carry the load, first.
pub fn configure(cfg: &mut web::ServiceConfig, listener: Listener) {
    if !matches!(listener, Listener::Admin { .. }) {
        cfg.service(only("POST", "/api/allocate", allocate))
            .service(only("POST", "/allocate", envelope))
            .service(only("POST", "/api/explain", explain));
    }
    cfg.service(only("GET", "/", root))
        .service(only("GET", "/healthz", healthz))
        .service(only("GET", "/readyz", readyz));
    if listener != Listener::Public {
        cfg.service(only("GET", "/metrics", status::metrics))
            .service(only("GET", "/status", status::status))
            .service(only("GET", "/openapi.json", openapi::serve));
    }
}

/// Who asks for an admin route: `Ok(true)` when the caller showed a valid key, `Ok(false)` when none is
/// needed and none was shown, 401 (logged; not an allocation request, so not counted as one) when one is
/// needed.
fn admin_caller(service: &Service, gate: &AdminGate, req: &HttpRequest) -> Result<bool, ApiError> {
    let has_key = !service.keys.is_empty() && key_allows(service, req);
    if gate.keyed && !has_key {
        tracing::info!(target: "admin", path = req.path(), status = 401, "refused: a key is required");
        return Err(ApiError::unauthorized());
    }
    Ok(has_key)
}

/// A resource answering one method; any other gets 405 with a JSON reason and `Allow`.
fn only<F, Args>(method: &'static str, path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let route = if method == "GET" { web::get() } else { web::post() };
    web::resource(path)
        .route(route.to(handler))
        .default_service(web::to(move || std::future::ready(method_not_allowed(method))))
}

/// Any path no route serves: 404 with a JSON reason.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found().error_response()
}

/// The Functions host polls it for readiness.
#[utoipa::path(get, path = "/", responses((status = 200, description = "The service name", content_type = "text/plain")))]
async fn root() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("dps-allocator\n")
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process serves", content_type = "text/plain")))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Readiness: a policy revision is active.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "A revision is active", content_type = "text/plain"),
    (status = 503, description = "No valid revision has loaded yet (`not_ready`, with Retry-After)", body = ErrorBody),
))]
async fn readyz(service: web::Data<Service>) -> HttpResponse {
    match service.policy.active() {
        Some(rev) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("ready: revision {}\n", rev.id)),
        None => ApiError::not_ready().error_response(),
    }
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut res = ApiError::method_not_allowed(allow).error_response();
    res.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// Reads the whole body, refusing more than `limit` bytes without buffering them.
async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut read = std::pin::pin!(payload.to_bytes_limited(limit));
    // A body usually arrives with its headers: a first poll reads it without arming the deadline's
    // timer (a timer entry per request costs more than the rest of a cached answer's body read).
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let outcome = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(BODY_DEADLINE, read).await,
    };
    match outcome {
        Err(_) => Err(ApiError::request_timeout(BODY_DEADLINE.as_secs())),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(_))) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Err(_)) => Err(ApiError::payload_too_large(limit)),
    }
}

/// Checks the key and reads the body; a refusal is logged and counted here.
async fn admit(service: &Service, req: &HttpRequest, payload: web::Payload, id: &str) -> Result<web::Bytes, ApiError> {
    let admitted = if key_allows(service, req) {
        read_body(req, payload, BODY_LIMIT).await
    } else {
        Err(ApiError::unauthorized())
    };
    admitted.inspect_err(|e| events::refused(id, e.code(), e.status(), &e.message, &service.metrics))
}

/// Whether the request's `x-functions-key` header or `?code=` carries a valid key (or none is needed).
fn key_allows(service: &Service, req: &HttpRequest) -> bool {
    let header = req.headers().get(KEY_HEADER).and_then(|v| v.to_str().ok());
    service.keys.allows(header, req.query_string())
}

/// The active revision, or 503 (logged and counted).
fn active(service: &Service, id: &str) -> Result<Arc<Revision>, ApiError> {
    service.policy.active().ok_or_else(|| {
        let e = ApiError::not_ready();
        events::refused(id, e.code(), e.status(), &e.message, &service.metrics);
        e
    })
}

/// The id of a request: the request span's, when debug logging installed it, else a new UUID (v4),
/// written without allocating.
pub struct ReqId([u8; 36]);

impl ReqId {
    fn of(req: &HttpRequest) -> ReqId {
        let uuid = match req.extensions().get::<RequestId>() {
            Some(id) => **id,
            None => uuid::Uuid::new_v4(),
        };
        let mut buf = [0u8; 36];
        uuid.hyphenated().encode_lower(&mut buf);
        ReqId(buf)
    }

    fn as_str(&self) -> &str {
        // Always ASCII hex and hyphens.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// [`Service::answer`], and the decision event.
fn decide(service: &Service, rev: &Revision, body: &[u8], request_id: &str, started: Instant) -> Arc<Served> {
    let (served, cache) = service.answer(rev, body);
    DecisionEvent {
        request_id,
        prepared: &served.prepared,
        cache,
        elapsed: started.elapsed(),
    }
    .emit(&service.metrics);
    served
}

/// The DPS custom allocation webhook.
#[utoipa::path(
    post,
    path = "/api/allocate",
    request_body(content = crate::dps::RawRequest, description = "The AllocationRequest, parsed as JSON whatever the Content-Type", content_type = "application/json"),
    params(("code" = Option<String>, Query, description = "API key, when keys are configured"),
           ("x-functions-key" = Option<String>, Header, description = "API key, when keys are configured")),
    responses(
        (status = 200, description = "Assigned; header x-dps-allocator-decision names the rule", body = crate::dps::AllocationResponse),
        (status = 400, description = "Malformed AllocationRequest (`bad_request`), or a rule's rejection", body = ErrorBody),
        (status = 401, description = "Missing or wrong key (`unauthorized`)", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 5 s (`request_timeout`; the connection is closed)", body = ErrorBody),
        (status = 403, description = "Rejected by a rule (default `rejected`; a rule may set another 4xx and code)", body = ErrorBody),
        (status = 413, description = "Body over 128 KiB (`payload_too_large`)", body = ErrorBody),
        (status = 422, description = "No eligible hub (`no_eligible_hub`) or twin over IoT Hub limits (`twin_too_large`)", body = ErrorBody),
        (status = 503, description = "No valid policy revision yet (`not_ready`, with Retry-After)", body = ErrorBody),
    )
)]
async fn allocate(
    service: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = ReqId::of(&req);
    let id = id.as_str();
    let body = admit(&service, &req, payload, id).await?;
    let started = Instant::now();
    let rev = active(&service, id)?;
    let served = decide(&service, &rev, &body, id, started);
    Ok(respond(&served))
}

/// The decision allocate would make, with every step; changes nothing.
#[utoipa::path(
    post,
    path = "/api/explain",
    request_body(content = crate::dps::RawRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The explanation (its `status` is what allocate would answer)", body = ExplainReport),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 5 s", body = ErrorBody),
        (status = 413, description = "Body over 128 KiB", body = ErrorBody),
        (status = 503, description = "No valid policy revision yet", body = ErrorBody),
    )
)]
async fn explain(
    service: web::Data<Service>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = ReqId::of(&req);
    let id = id.as_str();
    let body = admit(&service, &req, payload, id).await?;
    let rev = active(&service, id)?;
    let (answer, trace) = crate::answer::explain(&body, &rev, service.geoip.as_ref());
    let report = serde_json::to_vec(&ExplainReport::new(&answer, &trace, &rev)).map_err(|_| ApiError::internal())?;
    Ok(HttpResponse::Ok().content_type("application/json").body(report))
}

/// `POST /allocate`: the Azure Functions envelope. Always HTTP 200; the DPS status is inside.
#[utoipa::path(
    post,
    path = "/allocate",
    request_body(content = envelope::EnvelopeRequest, content_type = "application/json"),
    responses((status = 200, description = "Always 200: the DPS status is Outputs.res.statusCode", body = envelope::EnvelopeResponse))
)]
async fn envelope(service: web::Data<Service>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let id = ReqId::of(&req);
    let id = id.as_str();
    let started = Instant::now();
    let outcome = async {
        // A key on the request itself is checked before anything is read; else the key is inside, and the
        // envelope is opened without building anything but its keys (`envelope::open`): an anonymous
        // envelope on a keyed server costs its bytes (at most `ENVELOPE_LIMIT`) and nothing more.
        let outer = key_allows(&service, &req);
        let raw = read_body(&req, payload, envelope::ENVELOPE_LIMIT).await?;
        let unopened = envelope::open(&raw)?;
        if !(outer || unopened.has_key(&service.keys)) {
            return Err(ApiError::unauthorized());
        }
        let body = unopened.body()?;
        let rev = active(&service, id)?;
        Ok(decide(&service, &rev, &body, id, started))
    }
    .await;
    let (status, body, log) = match outcome {
        Ok(served) => {
            let line = format!(
                "dps-allocator: {} {} decision {} ({})",
                served.status,
                served.hub().unwrap_or("-"),
                served.decision_id,
                served.header().unwrap_or_default()
            );
            (served.status, served.body.clone(), line)
        }
        Err(e) => {
            if e.code != ErrorCode::NotReady {
                events::refused(id, e.code(), e.status(), &e.message, &service.metrics);
            }
            let line = format!("dps-allocator: {} {}: {}", e.status(), e.code(), e.message);
            (e.status(), web::Bytes::from(e.body()), line)
        }
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(envelope::wrap(status, &body, &[log]))
}

fn respond(served: &Served) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(served.status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    if let Some(h) = served.header().and_then(|h| HeaderValue::from_str(h).ok()) {
        res.insert_header((HeaderName::from_static(DECISION_HEADER), h));
    }
    if let Some(secs) = served.retry_after {
        res.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    res.body(served.body.clone())
}
