//! `GET /status` (what is running: version, active revision, last reload and its errors, the hub
//! catalogue, the GeoIP database, cache sizes) and `GET /metrics` (Prometheus text exposition).

use std::collections::BTreeMap;
use std::path::Path;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;

use crate::answer::ApiError;
use crate::geo::LatLon;
use crate::policy::HubState;
use crate::server::Service;
use crate::server::reload::{Attempt, PolicySource};

/// The `/status` document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusDoc {
    /// The crate version.
    pub version: &'static str,
    /// When the process started, in seconds since the Unix epoch.
    pub started_at_unix: f64,
    /// Whether a policy revision is active.
    pub ready: bool,
    /// The policy.
    pub policy: PolicyStatus,
    /// The hub catalogue of the active revision.
    pub hubs: Vec<HubStatus>,
    /// The GeoIP database, when configured.
    pub geoip: Option<GeoIpStatus>,
    /// Cache sizes.
    pub caches: CacheStatus,
    /// How many API keys are configured (the keys themselves are never shown).
    pub api_keys: usize,
}

/// The policy part of `/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus {
    /// The policy directory (or the embedded default).
    pub source: String,
    /// The active revision id.
    pub revision: Option<String>,
    /// When it was activated, in seconds since the Unix epoch.
    pub loaded_at_unix: Option<f64>,
    /// The files it was built from.
    pub files: Vec<String>,
    /// Rule count.
    pub rules: usize,
    /// Tenant count.
    pub tenants: usize,
    /// The last reload attempt.
    #[schema(value_type = Option<Object>)]
    pub last_attempt: Option<Attempt>,
    /// The last failed attempt, with every error.
    #[schema(value_type = Option<Object>)]
    pub last_failure: Option<Attempt>,
}

/// One hub of the catalogue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HubStatus {
    /// Host name.
    pub host: String,
    /// Region.
    pub region: Option<&'static str>,
    /// Coordinates used by geo-latency.
    #[schema(value_type = Option<Object>)]
    pub location: Option<LatLon>,
    /// Weight.
    pub weight: u32,
    /// State.
    #[schema(value_type = String)]
    pub state: HubState,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Capacity.
    pub capacity: Option<u64>,
}

/// The GeoIP part of `/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GeoIpStatus {
    /// The database file.
    pub path: String,
    /// Its type (`GeoLite2-City`, …).
    pub database_type: String,
    /// When MaxMind built it, `YYYY-MM-DD`.
    pub build_date: String,
    /// The same, in seconds since the Unix epoch.
    pub build_epoch: u64,
}

/// Cache sizes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheStatus {
    /// Whether the decision cache is on.
    pub decision_enabled: bool,
    /// Decision cache entries.
    pub decision_entries: u64,
    /// Decision cache capacity.
    pub decision_capacity: u64,
    /// Bytes the decision cache's entries weigh now.
    pub decision_bytes: u64,
    /// The decision cache's byte budget.
    pub decision_max_bytes: u64,
    /// Decision cache time to live, in seconds.
    pub decision_ttl_secs: u64,
    /// GeoIP lookup cache entries.
    pub geoip_entries: u64,
}

impl StatusDoc {
    /// The same document with every path on the host's file system made relative to the policy directory
    /// (the directory itself named by its last component, the GeoIP database by its file name).
    pub fn without_host_paths(mut self, service: &Service) -> Self {
        let dir = match service.policy.source() {
            PolicySource::Dir(d) => Some(d.display().to_string().trim_end_matches('/').to_owned()),
            PolicySource::Embedded => None,
        };
        let name = match service.policy.source() {
            PolicySource::Dir(d) => d.file_name().map(|n| n.to_string_lossy().into_owned()),
            PolicySource::Embedded => None,
        };
        // Paths inside the directory lose its prefix; the directory itself becomes its last component.
        let relative = |s: &str| -> String {
            match (&dir, &name) {
                (Some(d), Some(n)) if !d.is_empty() => s
                    .replace(&format!("{d}//"), "")
                    .replace(&format!("{d}/"), "")
                    .replace(d.as_str(), n),
                _ => s.to_owned(),
            }
        };
        if let PolicySource::Dir(d) = service.policy.source() {
            self.policy.source = d
                .file_name()
                .map_or_else(|| ".".to_owned(), |n| n.to_string_lossy().into_owned());
        }
        self.policy.files = self.policy.files.iter().map(|f| relative(f)).collect();
        for attempt in [&mut self.policy.last_attempt, &mut self.policy.last_failure]
            .into_iter()
            .flatten()
        {
            attempt.errors = attempt.errors.iter().map(|e| relative(e)).collect();
        }
        if let Some(g) = &mut self.geoip {
            g.path = Path::new(&g.path)
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        }
        self
    }

    /// Gathers the status of a service.
    pub fn of(service: &Service) -> Self {
        let rev = service.policy.active();
        let st = service.policy.status();
        StatusDoc {
            version: env!("CARGO_PKG_VERSION"),
            started_at_unix: service.started_unix,
            ready: rev.is_some(),
            policy: PolicyStatus {
                source: service.policy.source().describe(),
                revision: rev.as_ref().map(|r| r.id.clone()),
                loaded_at_unix: st.loaded_at_unix,
                files: rev
                    .as_ref()
                    .map(|r| r.files.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                rules: rev.as_ref().map_or(0, |r| r.rules.len()),
                tenants: rev.as_ref().map_or(0, |r| r.tenants.len()),
                last_attempt: st.last_attempt,
                last_failure: st.last_failure,
            },
            hubs: rev
                .iter()
                .flat_map(|r| r.hubs.iter())
                .map(|h| HubStatus {
                    host: h.host.clone(),
                    region: h.region.map(|r| r.name),
                    location: h.location,
                    weight: h.weight,
                    state: h.state,
                    tags: h.tags.clone(),
                    capacity: h.capacity,
                })
                .collect(),
            geoip: service.geoip.as_ref().map(|g| GeoIpStatus {
                path: g.path().display().to_string(),
                database_type: g.database_type().to_owned(),
                build_date: g.build_date(),
                build_epoch: g.build_epoch(),
            }),
            caches: CacheStatus {
                decision_enabled: service.cache.enabled(),
                decision_entries: service.cache.entries(),
                decision_capacity: service.cache.capacity(),
                decision_bytes: service.cache.bytes(),
                decision_max_bytes: service.cache.max_bytes(),
                decision_ttl_secs: service.cache.ttl().as_secs(),
                geoip_entries: service.geoip.as_ref().map_or(0, |g| g.cache_entries()),
            },
            api_keys: service.keys.len(),
        }
    }
}

/// `GET /status`. A caller without a key sees paths relative to the policy directory, never the host's.
#[utoipa::path(get, path = "/status",
    params(("code" = Option<String>, Query, description = "API key, when keys are configured")),
    responses(
        (status = 200, description = "What is running", body = StatusDoc),
        (status = 401, description = "Keys are configured and none was given (`unauthorized`)", body = crate::answer::ErrorBody),
    ))]
pub async fn status(service: web::Data<Service>, gate: web::Data<super::AdminGate>, req: HttpRequest) -> HttpResponse {
    match super::admin_caller(&service, &gate, &req) {
        Ok(true) => HttpResponse::Ok().json(StatusDoc::of(&service)),
        Ok(false) => HttpResponse::Ok().json(StatusDoc::of(&service).without_host_paths(&service)),
        Err(e) => e.error_response(),
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics",
    params(("code" = Option<String>, Query, description = "API key, when keys are configured")),
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
        (status = 401, description = "Keys are configured and none was given (`unauthorized`)", body = crate::answer::ErrorBody),
    ))]
pub async fn metrics(service: web::Data<Service>, gate: web::Data<super::AdminGate>, req: HttpRequest) -> HttpResponse {
    if let Err(e) = super::admin_caller(&service, &gate, &req) {
        return e.error_response();
    }
    service.metrics.sync_geoip(service.geoip.as_ref());
    // Runs moka's pending evictions first.
    service
        .metrics
        .sync_cache_bytes("decision", service.cache.bytes(), service.cache.max_bytes());
    let evicted = service.cache.evictions();
    service.metrics.sync_evictions(
        "decision",
        evicted.size.load(std::sync::atomic::Ordering::Relaxed),
        evicted.expired.load(std::sync::atomic::Ordering::Relaxed),
    );
    match service.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(_) => ApiError::internal().error_response(),
    }
}
