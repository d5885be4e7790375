//! Every fixture under `policies/tests/` and under each policy directory in `tests/fixtures/` runs through
//! the HTTP layer in-process, and must pass.

use std::path::Path;

use actix_web::test::TestRequest;
use dps_allocator::fixtures::{self, Observed};

use crate::helpers::{app, load, repo, send};

async fn run_dir(dir: &Path) -> usize {
    let rev = load(dir);
    let loaded = fixtures::load(&dir.join("tests")).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.broken.is_empty(), "{:?}", loaded.broken);
    let cases = loaded.fixtures;
    assert!(!cases.is_empty(), "{}: no fixtures", dir.display());
    let app = app(rev).await;
    let mut failures = Vec::new();
    for case in &cases {
        let reply = send(&app, TestRequest::post().uri("/api/allocate").set_payload(case.body())).await;
        // The decision's fields as a client reads them: from the x-dps-allocator-decision header.
        let field = |name: &str| {
            reply
                .decision
                .as_deref()?
                .split("; ")
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .filter(|v| *v != "-")
                .map(str::to_owned)
        };
        let got = Observed::from_wire(
            reply.status,
            &reply.body,
            field("rule"),
            field("strategy"),
            field("sticky").map(|s| s == "true"),
        );
        let diffs = case.check(&got);
        if !diffs.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n  {}",
                case.name(),
                dir.display(),
                case.description,
                diffs.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases.len()
}

#[actix_web::test]
async fn every_shipped_policy_fixture_passes_through_http() {
    let n = run_dir(&repo().join("policies")).await;
    assert!(n >= 10, "only {n} fixtures");
}

#[actix_web::test]
async fn every_fixture_directory_under_tests_fixtures_passes_through_http() {
    let mut dirs: Vec<_> = std::fs::read_dir(repo().join("tests/fixtures"))
        .expect("tests/fixtures exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    for dir in dirs {
        run_dir(&dir).await;
    }
}
