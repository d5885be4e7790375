//! Operations, in-process: the Functions envelope, keys, the decision cache, /status, /metrics.

use std::time::Duration;

use actix_web::test::TestRequest;
use dps_allocator::server::keys::ApiKeys;
use serde_json::{Value, json};

use crate::helpers::{allocate, app_with, send, service, shipped};

fn toaster() -> Value {
    let text =
        std::fs::read_to_string(crate::helpers::repo().join("policies/tests/tutorial-toaster.json")).expect("fixture");
    serde_json::from_str::<Value>(&text).expect("json")["request"].clone()
}

fn envelope(body: &Value, query: Value, headers: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Data": { "req": {
            "Url": "https://contoso-alloc.azurewebsites.net/api/allocate?code=should-not-matter",
            "Method": "POST", "Query": query, "Headers": headers, "Params": {},
            "Body": body.to_string(), "Identities": []
        } },
        "Metadata": { "sys": { "MethodName": "allocate", "UtcNow": "2026-11-27T12:00:00Z" } }
    }))
    .expect("json")
}

#[actix_web::test]
async fn envelope_mode_answers_200_with_the_dps_status_and_body_inside() {
    let app = app_with(service(shipped())).await;
    let ok = send(
        &app,
        TestRequest::post()
            .uri("/allocate")
            .set_payload(envelope(&toaster(), json!({}), json!({}))),
    )
    .await;
    assert_eq!(ok.status, 200);
    let out = ok.json();
    assert_eq!(out["Outputs"]["res"]["statusCode"], 200);
    let inner: Value =
        serde_json::from_str(out["Outputs"]["res"]["body"].as_str().expect("string body")).expect("json");
    assert_eq!(inner["iotHubHostName"], "contoso-toasters-hub-1098.azure-devices.net");
    assert_eq!(
        inner["initialTwin"]["properties"]["desired"]["darknessSetting"],
        "medium"
    );
    assert_eq!(out["ReturnValue"], Value::Null);
    assert!(out["Logs"][0].as_str().expect("log").contains("rule=toasters"));

    let mut revoked = toaster();
    revoked["deviceRuntimeContext"]["payload"] = json!({ "firmware": { "channel": "revoked" } });
    let rejected = send(
        &app,
        TestRequest::post()
            .uri("/allocate")
            .set_payload(envelope(&revoked, json!({}), json!({}))),
    )
    .await;
    assert_eq!(rejected.status, 200, "the outer status is always 200");
    let out = rejected.json();
    assert_eq!(out["Outputs"]["res"]["statusCode"], 403);
    let inner: Value = serde_json::from_str(out["Outputs"]["res"]["body"].as_str().expect("body")).expect("json");
    assert_eq!(inner["error"]["code"], "revoked_firmware");

    let garbage = send(
        &app,
        TestRequest::post().uri("/allocate").set_payload("not an envelope"),
    )
    .await;
    assert_eq!(
        (garbage.status, garbage.json()["Outputs"]["res"]["statusCode"].as_u64()),
        (200, Some(400))
    );
}

#[actix_web::test]
async fn with_keys_every_post_needs_one_as_code_or_header_or_inside_the_envelope() {
    let svc = service(shipped()).with_keys(ApiKeys::new(["k-one", "k-two"]));
    let app = app_with(svc).await;
    let body = toaster().to_string();
    let post = |uri: &str| TestRequest::post().uri(uri).set_payload(body.clone());
    assert_eq!(send(&app, post("/api/allocate")).await.status, 401);
    let r = send(&app, post("/api/allocate?code=wrong")).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    assert_eq!(send(&app, post("/api/allocate?code=k-one")).await.status, 200);
    assert_eq!(send(&app, post("/api/allocate?x=1&code=k-two")).await.status, 200);
    assert_eq!(
        send(&app, post("/api/allocate").insert_header(("x-functions-key", "k-two")))
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            &app,
            post("/api/allocate").insert_header(("x-functions-key", "k-three"))
        )
        .await
        .status,
        401
    );
    assert_eq!(send(&app, post("/api/explain?code=k-one")).await.status, 200);
    assert_eq!(send(&app, post("/api/explain")).await.status, 401);
    // The envelope may carry the key in its query object or string, or its headers.
    for (q, h) in [
        (json!({"code": "k-one"}), json!({})),
        (json!("code=k-two"), json!({})),
        (json!({}), json!({"x-functions-key": ["k-one"]})),
    ] {
        let r = send(
            &app,
            TestRequest::post()
                .uri("/allocate")
                .set_payload(envelope(&toaster(), q.clone(), h.clone())),
        )
        .await;
        assert_eq!(r.json()["Outputs"]["res"]["statusCode"], 200, "{q} {h}");
    }
    let r = send(
        &app,
        TestRequest::post()
            .uri("/allocate")
            .set_payload(envelope(&toaster(), json!({}), json!({}))),
    )
    .await;
    assert_eq!(r.json()["Outputs"]["res"]["statusCode"], 401);
    // Probes stay open; what describes the fleet needs a key (a scraper sends `?code=`).
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(send(&app, TestRequest::get().uri(path)).await.status, 200, "{path}");
    }
    for path in ["/metrics", "/status", "/openapi.json"] {
        assert_eq!(send(&app, TestRequest::get().uri(path)).await.status, 401, "{path}");
        let keyed = format!("{path}?code=k-two");
        assert_eq!(send(&app, TestRequest::get().uri(&keyed)).await.status, 200, "{keyed}");
    }
}

#[actix_web::test]
async fn the_cache_answers_repeats_with_the_same_bytes_and_counts_hits() {
    let svc = service(shipped()).with_cache(
        1024,
        dps_allocator::server::cache::DEFAULT_MAX_BYTES,
        Duration::from_secs(60),
    );
    let app = app_with(svc).await;
    let body = toaster().to_string();
    // The cache admits a key on its second sight (a doorkeeper keeps one-off
    // devices out), so the first two requests are misses and the third a hit.
    let first = allocate(&app, body.clone()).await;
    let second = allocate(&app, body.clone()).await;
    let status = send(&app, TestRequest::get().uri("/status")).await.json();
    assert_eq!(status["caches"]["decision_entries"], 1, "stored on second sight");
    let third = allocate(&app, body.clone()).await;
    for repeat in [&second, &third] {
        assert_eq!(
            (first.status, &first.body, &first.decision),
            (repeat.status, &repeat.body, &repeat.decision)
        );
    }
    let metrics = String::from_utf8(send(&app, TestRequest::get().uri("/metrics")).await.body).expect("utf-8");
    assert!(
        metrics.contains(r#"dps_allocator_cache_requests_total{cache="decision",result="hit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dps_allocator_cache_requests_total{cache="decision",result="miss"} 2"#),
        "{metrics}"
    );
    let status = send(&app, TestRequest::get().uri("/status")).await.json();
    assert_eq!(status["caches"]["decision_entries"], 1);
}

#[actix_web::test]
async fn metrics_count_outcomes_assignments_rejections_and_geoip_with_bounded_labels() {
    let app = app_with(service(shipped())).await;
    allocate(&app, toaster().to_string()).await;
    let mut revoked = toaster();
    revoked["deviceRuntimeContext"]["payload"] = json!({ "firmware": { "channel": "revoked" } });
    allocate(&app, revoked.to_string()).await;
    allocate(&app, "{").await;
    let vehicle = json!({
        "enrollmentGroup": { "enrollmentGroupId": "fabrikam-vehicles" },
        "deviceRuntimeContext": { "registrationId": "truck-1", "payload": { "ip": "198.51.100.7" } },
        "linkedHubs": ["fabrikam-weu-1.azure-devices.net", "fabrikam-neu-1.azure-devices.net", "stranger.azure-devices.net"]
    });
    allocate(&app, vehicle.to_string()).await;
    let unknown = json!({
        "enrollmentGroup": { "enrollmentGroupId": "nobody" },
        "deviceRuntimeContext": { "registrationId": "x" },
        "linkedHubs": ["stranger.azure-devices.net"]
    });
    allocate(&app, unknown.to_string()).await;
    let text = String::from_utf8(send(&app, TestRequest::get().uri("/metrics")).await.body).expect("utf-8");
    for line in [
        r#"dps_allocator_requests_total{outcome="assigned"} 3"#,
        r#"dps_allocator_requests_total{outcome="rejected"} 1"#,
        r#"dps_allocator_requests_total{outcome="bad_request"} 1"#,
        r#"dps_allocator_assignments_total{hub="contoso-toasters-hub-1098.azure-devices.net",rule="toasters",sticky="false",strategy="static"} 1"#,
        r#"dps_allocator_assignments_total{hub="fabrikam-neu-1.azure-devices.net",rule="fabrikam-vehicles",sticky="false",strategy="geo-latency"} 1"#,
        r#"dps_allocator_assignments_total{hub="uncatalogued",rule="spread",sticky="false",strategy="weighted-hash"} 1"#,
        r#"dps_allocator_rejections_total{reason="revoked_firmware",rule="quarantine"} 1"#,
        r#"dps_allocator_geoip_lookups_total{result="found"} 1"#,
        r#"dps_allocator_geoip_database_build_timestamp_seconds 1767225600"#,
        "dps_allocator_request_duration_seconds_count 5",
        "dps_allocator_policy_revision_info{revision=",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("truck-1") && !text.contains("198.51.100.7") && !text.contains("stranger"),
        "unbounded label"
    );
}

#[actix_web::test]
async fn status_reports_the_revision_hubs_geoip_and_caches() {
    let app = app_with(service(shipped())).await;
    let s = send(&app, TestRequest::get().uri("/status")).await.json();
    assert_eq!(s["ready"], true);
    assert_eq!(s["policy"]["revision"].as_str().map(str::len), Some(12));
    assert_eq!(s["hubs"][0]["host"], "contoso-toasters-hub-1098.azure-devices.net");
    assert_eq!(s["hubs"][0]["region"], "westus2");
    assert_eq!(s["geoip"]["database_type"], "DPS-Allocator-Test-City");
    assert_eq!(s["geoip"]["build_date"], "2026-01-01");
    assert_eq!(s["caches"]["decision_enabled"], false);
    assert_eq!(s["api_keys"], 0);
}

/// `tests/envelope/*.json`: `{description, envelope, expect: {statusCode, body}}`, each POSTed to
/// `/allocate` as the Functions host would.
#[actix_web::test]
async fn envelope_fixtures_pass() {
    let app = app_with(service(shipped())).await;
    let dir = crate::helpers::repo().join("tests/envelope");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    for f in files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        let r = send(
            &app,
            TestRequest::post()
                .uri("/allocate")
                .set_payload(case["envelope"].to_string()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", f.display());
        let out = r.json();
        let res = &out["Outputs"]["res"];
        assert_eq!(res["statusCode"], case["expect"]["statusCode"], "{}", f.display());
        let body: Value = serde_json::from_str(res["body"].as_str().expect("string")).expect("json body");
        assert_eq!(body, case["expect"]["body"], "{}", f.display());
        assert_eq!(res["headers"]["Content-Type"], "application/json");
    }
}
