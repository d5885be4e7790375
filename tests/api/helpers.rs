//! Builds the app in-process exactly as `serve` does, and talks to it.

use std::path::{Path, PathBuf};

use actix_web::body::MessageBody;
use actix_web::dev::{Service as Service_, ServiceResponse};
use actix_web::{test, web};
use dps_allocator::geo::GeoIp;
use dps_allocator::geo::mmdb::{NetworkRecord, write_city_db};
use dps_allocator::http::{self, DECISION_HEADER};
use dps_allocator::policy::{self, Revision};
use dps_allocator::server::Service;
use dps_allocator::server::cache::DecisionCache;
use dps_allocator::server::keys::ApiKeys;
use dps_allocator::server::reload::PolicySource;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads a policy directory, failing the test with every error.
pub fn load(dir: &Path) -> Revision {
    match policy::load_dir(dir) {
        Ok(r) => r,
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// The shipped `policies/`.
pub fn shipped() -> Revision {
    load(&repo().join("policies"))
}

/// The test GeoIP database (a MaxMind City database) built from `testdata/geoip/networks.json`.
pub fn test_geoip_bytes() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("testdata/geoip/networks.json")).expect("test networks");
    let records: Vec<NetworkRecord> = serde_json::from_str(&text).expect("valid networks");
    write_city_db(&records, "DPS-Allocator-Test-City", 1_767_225_600).expect("writes")
}

/// Builds the test GeoIP database from `testdata/geoip/networks.json` into a file of its own and opens it.
pub fn test_geoip() -> GeoIp {
    let db = test_geoip_bytes();
    let path = std::env::temp_dir().join(format!(
        "dps-allocator-test-city-{}-{:?}.mmdb",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, db).expect("writes the database");
    let geoip = GeoIp::open(&path).expect("opens");
    let _ = std::fs::remove_file(&path);
    geoip
}

/// The service the in-process apps run: the revision, the test GeoIP database, no cache, no keys.
pub fn service(rev: Revision) -> Service {
    Service::for_revision(rev)
        .expect("metrics register")
        .with_geoip(Some(test_geoip()))
}

/// An in-process app serving a revision, with the test GeoIP database.
pub async fn app(
    rev: Revision,
) -> impl Service_<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    app_with(service(rev)).await
}

/// An in-process app around a prepared service.
pub async fn app_with(
    service: Service,
) -> impl Service_<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    test::init_service(http::app(web::Data::new(service))).await
}

/// An in-process app with no policy loaded yet.
pub async fn app_not_ready()
-> impl Service_<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    let service =
        Service::new(PolicySource::Embedded, None, DecisionCache::disabled(), ApiKeys::none()).expect("metrics");
    app_with(service).await
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub decision: Option<String>,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a request and collects the reply.
pub async fn send<S, B>(app: &S, req: test::TestRequest) -> Reply
where
    S: Service_<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, decision, content_type, retry_after) = (
        res.status().as_u16(),
        header(DECISION_HEADER),
        header("content-type"),
        header("retry-after"),
    );
    let body = test::read_body(res).await.to_vec();
    Reply {
        status,
        body,
        decision,
        content_type,
        retry_after,
    }
}

/// POSTs a body to `/api/allocate`.
pub async fn allocate<S, B>(app: &S, body: impl Into<Vec<u8>>) -> Reply
where
    S: Service_<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    send(
        app,
        test::TestRequest::post().uri("/api/allocate").set_payload(body.into()),
    )
    .await
}
