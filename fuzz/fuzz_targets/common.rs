//! Shared by the fuzz targets: the shipped policy, the geo fixture policy with the project's own test
//! GeoIP database, and the invariants every answer must keep.

use std::path::{Path, PathBuf};

use dps_allocator::dps::AllocationRequest;
use dps_allocator::geo::geoip::GeoIp;
use dps_allocator::geo::mmdb::{NetworkRecord, write_city_db};
use dps_allocator::answer::{Answer, allocate};
use dps_allocator::policy::{Revision, load_dir};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn shipped() -> Revision {
    load_dir(&repo().join("policies")).expect("policies/ compiles")
}

pub fn geo() -> (Revision, GeoIp) {
    let rev = load_dir(&repo().join("tests/fixtures/geo")).expect("geo fixture policy compiles");
    let text = std::fs::read_to_string(repo().join("testdata/geoip/networks.json")).expect("networks.json");
    let records: Vec<NetworkRecord> = serde_json::from_str(&text).expect("networks.json parses");
    let db = write_city_db(&records, "DPS-Allocator-Test-City", 1_767_225_600).expect("test database");
    let path = std::env::temp_dir().join(format!("dps-allocator-fuzz-{}.mmdb", std::process::id()));
    std::fs::write(&path, db).expect("write test database");
    let geoip = GeoIp::open(&path).expect("open test database");
    (rev, geoip)
}

/// Answers `body` twice and checks the invariants: never a 5xx, a 200 names a hub from the request's
/// linkedHubs in both the body and the answer, and the same body gives the same bytes.
pub fn check(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>) {
    let a = allocate(body, rev, geoip);
    assert!(
        a.status < 500,
        "status {} for {:?}: {:?}",
        a.status,
        String::from_utf8_lossy(body),
        a.body
    );
    if a.status == 200 {
        assert_in_linked_hubs(body, &a);
    } else {
        let err: serde_json::Value = serde_json::from_slice(&a.body).expect("error bodies are JSON");
        assert!(
            err["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
            "error body without code: {err}"
        );
    }
    let b = allocate(body, rev, geoip);
    assert_eq!(
        (a.status, &a.body),
        (b.status, &b.body),
        "same request, different answer"
    );
}

fn assert_in_linked_hubs(body: &[u8], a: &Answer) {
    // The request's own parser: a body may be valid for it yet not for serde_json::Value (a lone
    // surrogate escape in a member the parser skips).
    let req = AllocationRequest::parse(body).expect("a 200 came from a request that parses");
    let out: serde_json::Value = serde_json::from_slice(&a.body).expect("a 200 body is JSON");
    let host = out["iotHubHostName"].as_str().expect("iotHubHostName");
    assert_eq!(Some(host), a.hub());
    assert!(
        req.linked_hubs.iter().any(|h| h.as_str() == host),
        "{host} not in {:?}",
        req.linked_hubs
    );
}
