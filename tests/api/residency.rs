//! Data residency beyond the fixtures: point-in-polygon agrees with an independent implementation on real
//! country borders; a fence edited under a running server is a new revision within seconds; `simulate`
//! decides fleets with location conditions as the server does.

use std::process::Command;
use std::time::{Duration, Instant};

use dps_allocator::geo::{Fence, LatLon};
use serde_json::Value;

use crate::helpers::repo;
use crate::live::{BIN, Server, post, temp_dir};

/// Even-odd ray casting over one polygon's rings (shell and holes), written from the definition: an
/// implementation that shares nothing with the `geo` crate's winding numbers and interval tree.
fn in_polygon(rings: &[Value], x: f64, y: f64) -> bool {
    let mut inside = false;
    for ring in rings {
        let pts: Vec<(f64, f64)> = ring
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        for w in pts.windows(2) {
            let ((x1, y1), (x2, y2)) = (w[0], w[1]);
            if (y1 > y) != (y2 > y) && x < x1 + (y - y1) * (x2 - x1) / (y2 - y1) {
                inside = !inside;
            }
        }
    }
    inside
}

/// Inside any polygon of any feature of a FeatureCollection.
fn oracle(fc: &Value, x: f64, y: f64) -> bool {
    fc["features"].as_array().into_iter().flatten().any(|f| {
        let g = &f["geometry"];
        let polys: Vec<&Value> = match g["type"].as_str() {
            Some("Polygon") => vec![&g["coordinates"]],
            Some("MultiPolygon") => g["coordinates"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        polys
            .iter()
            .any(|p| in_polygon(p.as_array().map_or(&[][..], Vec::as_slice), x, y))
    })
}

#[test]
fn point_in_polygon_agrees_with_an_independent_implementation_on_real_borders() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for name in ["eu.geojson", "nordics.geojson"] {
        let text = std::fs::read_to_string(repo().join("tests/fixtures/residency/fences").join(name)).expect("fence");
        let fc: Value = serde_json::from_str(&text).expect("json");
        let fence = Fence::parse(name, &text).expect("valid fence");
        let (mut inside, mut total) = (0, 0);
        for _ in 0..5_000 {
            // Europe and around it, where the borders are.
            let (lon, lat) = (-25.0 + 70.0 * next(), 33.0 + 40.0 * next());
            let want = oracle(&fc, lon, lat);
            assert_eq!(
                fence.contains(LatLon { lat, lon }),
                want,
                "{name}: ({lat}, {lon}): geo says {}, even-odd says {want}",
                !want
            );
            inside += usize::from(want);
            total += 1;
        }
        // A test that only ever sees one answer would prove nothing.
        assert!(
            inside > total / 20 && inside < total - total / 20,
            "{name}: {inside} of {total} inside"
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

const ATLANTIC: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"g"},"deviceRuntimeContext":{"registrationId":"buoy-1","payload":{"location":{"lat":45.0,"lon":-30.0}}},"linkedHubs":["eu-weu.azure-devices.net","eu-frc.azure-devices.net","nordic.azure-devices.net","world-eus.azure-devices.net","world-sea.azure-devices.net","quarantine.azure-devices.net"]}"#;

fn rule_of(server: &Server) -> String {
    let r = post(server.addr, "/api/allocate", ATLANTIC, "");
    r.header("x-dps-allocator-decision")
        .and_then(|h| h.split("; ").find_map(|kv| kv.strip_prefix("rule=")))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_fence_edited_under_a_running_server_is_a_new_revision_within_seconds() {
    let dir = temp_dir("residency");
    copy_dir(&repo().join("tests/fixtures/residency"), &dir);
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8")], &[]);
    assert_eq!(rule_of(&server), "rest", "a buoy in the Atlantic is in no fence");
    // Rewrite the Nordic fence (in its subdirectory) as a box around the buoy.
    let boxed = r#"{"type": "Polygon", "coordinates": [[[-31, 44], [-29, 44], [-29, 46], [-31, 46], [-31, 44]]]}"#;
    let tmp = dir.join("fences/.nordics.tmp");
    std::fs::write(&tmp, boxed).expect("write");
    std::fs::rename(&tmp, dir.join("fences/nordics.geojson")).expect("rename");
    let started = Instant::now();
    while rule_of(&server) != "nordic" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the fence edit was not picked up:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn simulate_decides_location_conditions_as_the_server_does() {
    let fixtures: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/residency/tests/residency.json")).expect("fixtures"),
    )
    .expect("json");
    let dir = temp_dir("residency-sim");
    let fleet = dir.join("fleet.jsonl");
    let lines: Vec<String> = fixtures
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["request"].to_string())
        .collect();
    std::fs::write(&fleet, lines.join("\n") + "\n").expect("fleet");
    let db = dir.join("city.mmdb");
    std::fs::write(&db, crate::helpers::test_geoip_bytes()).expect("db");
    let decisions = dir.join("decisions.csv");
    let out = Command::new(BIN)
        .args(["simulate", "--policies"])
        .arg(repo().join("tests/fixtures/residency"))
        .arg("--geoip")
        .arg(&db)
        .arg("--fleet")
        .arg(&fleet)
        .arg("--decisions")
        .arg(&decisions)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(&decisions).expect("decisions");
    let rules: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap_or(""))
        .collect();
    let expected: Vec<&str> = fixtures
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["expect"]["rule"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(rules, expected, "{csv}");
    let _ = std::fs::remove_dir_all(dir);
}
