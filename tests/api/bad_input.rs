//! Malformed requests: each gets its 4xx and a JSON error naming the problem, and the service keeps
//! answering good requests after every one.

use actix_web::test::TestRequest;

use crate::helpers::{allocate, app, send, shipped};

const GOOD: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"fabrikam-x"},"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":["fabrikam-weu-1.azure-devices.net"]}"#;

/// (what, body, status, code, text the message must contain)
fn cases() -> Vec<(&'static str, Vec<u8>, u16, &'static str, &'static str)> {
    let ctx_ok = r#""deviceRuntimeContext":{"registrationId":"d"}"#;
    let hubs_ok = r#""linkedHubs":["h"]"#;
    let group_ok = r#""enrollmentGroup":{}"#;
    let with = |a: &str, b: &str, c: &str| format!("{{{a},{b},{c}}}").into_bytes();
    vec![
        ("empty body", b"".to_vec(), 400, "bad_request", "not valid JSON"),
        ("whitespace", b"  \n".to_vec(), 400, "bad_request", "not valid JSON"),
        ("truncated JSON", GOOD.as_bytes()[..40].to_vec(), 400, "bad_request", "not valid JSON"),
        ("trailing garbage", format!("{GOOD}x").into_bytes(), 400, "bad_request", "not valid JSON"),
        ("invalid UTF-8", b"{\"deviceRuntimeContext\":{\"registrationId\":\"\xc3\x28\"}}".to_vec(), 400, "bad_request", "JSON"),
        ("an array", b"[1,2]".to_vec(), 400, "bad_request", "JSON object"),
        ("a string", b"\"hello\"".to_vec(), 400, "bad_request", "JSON object"),
        ("null", b"null".to_vec(), 400, "bad_request", "JSON object"),
        ("empty object", b"{}".to_vec(), 400, "bad_request", "deviceRuntimeContext"),
        ("no registrationId", with(r#""deviceRuntimeContext":{}"#, hubs_ok, group_ok), 400, "bad_request", "registrationId"),
        ("empty registrationId", with(r#""deviceRuntimeContext":{"registrationId":""}"#, hubs_ok, group_ok), 400, "bad_request", "must not be empty"),
        ("numeric registrationId", with(r#""deviceRuntimeContext":{"registrationId":7}"#, hubs_ok, group_ok), 400, "bad_request", "deviceRuntimeContext.registrationId"),
        ("deviceRuntimeContext a string", with(r#""deviceRuntimeContext":"d""#, hubs_ok, group_ok), 400, "bad_request", "deviceRuntimeContext"),
        ("no linkedHubs", format!("{{{ctx_ok},{group_ok}}}").into_bytes(), 400, "bad_request", "linkedHubs"),
        ("empty linkedHubs", with(ctx_ok, r#""linkedHubs":[]"#, group_ok), 400, "bad_request", "must not be empty"),
        ("linkedHubs a string", with(ctx_ok, r#""linkedHubs":"h""#, group_ok), 400, "bad_request", "linkedHubs"),
        ("linkedHubs of numbers", with(ctx_ok, r#""linkedHubs":[1]"#, group_ok), 400, "bad_request", "linkedHubs[0]"),
        ("linkedHubs with an empty host", with(ctx_ok, r#""linkedHubs":[""]"#, group_ok), 400, "bad_request", "empty host"),
        ("no enrollment", format!("{{{ctx_ok},{hubs_ok}}}").into_bytes(), 400, "bad_request", "enrollmentGroup"),
        ("both enrollments", format!("{{{ctx_ok},{hubs_ok},{group_ok},\"individualEnrollment\":{{}}}}").into_bytes(), 400, "bad_request", "not both"),
        ("enrollment a list", with(ctx_ok, hubs_ok, r#""enrollmentGroup":[]"#), 400, "bad_request", "enrollmentGroup"),
        ("iotEdge a string", with(ctx_ok, hubs_ok, r#""enrollmentGroup":{"capabilities":{"iotEdge":"yes"}}"#), 400, "bad_request", "iotEdge"),
        ("updateHubAssignment a number", with(ctx_ok, hubs_ok, r#""enrollmentGroup":{"reprovisionPolicy":{"updateHubAssignment":1}}"#), 400, "bad_request", "updateHubAssignment"),
        ("enrollmentGroupId a number", with(ctx_ok, hubs_ok, r#""enrollmentGroup":{"enrollmentGroupId":5}"#), 400, "bad_request", "enrollmentGroupId"),
        ("payload an array", with(r#""deviceRuntimeContext":{"registrationId":"d","payload":[1]}"#, hubs_ok, group_ok), 400, "bad_request", "payload"),
        ("current hub a number", with(r#""deviceRuntimeContext":{"registrationId":"d","currentIotHubHostName":3}"#, hubs_ok, group_ok), 400, "bad_request", "currentIotHubHostName"),
        ("two attestations", with(r#""deviceRuntimeContext":{"registrationId":"d","tpm":{},"x509":{}}"#, hubs_ok, group_ok), 400, "bad_request", "at most one"),
        ("duplicate key", with(r#""deviceRuntimeContext":{"registrationId":"d","registrationId":"e"}"#, hubs_ok, group_ok), 400, "bad_request", "duplicate field"),
        ("deep nesting", format!("{{\"deviceRuntimeContext\":{{\"registrationId\":\"d\",\"payload\":{{\"a\":{}1{}}}}},{hubs_ok},{group_ok}}}", "[".repeat(200), "]".repeat(200)).into_bytes(), 400, "bad_request", "recursion limit"),
        ("oversized body", vec![b' '; 200 * 1024], 413, "payload_too_large", "131072"),
    ]
}

#[actix_web::test]
async fn every_malformed_request_gets_its_4xx_and_a_json_error_and_the_service_keeps_serving() {
    let app = app(shipped()).await;
    for (what, body, status, code, needle) in cases() {
        let r = allocate(&app, body).await;
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{what}");
        let doc = r.json();
        assert_eq!(doc["error"]["code"], code, "{what}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: message {message:?} lacks {needle:?}");
        assert!(!message.contains('\n'), "{what}: one line");
        let ok = allocate(&app, GOOD).await;
        assert_eq!(ok.status, 200, "after {what}");
    }
}

#[actix_web::test]
async fn the_body_is_json_whatever_the_content_type() {
    let app = app(shipped()).await;
    for ct in [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        let r = send(
            &app,
            TestRequest::post()
                .uri("/api/allocate")
                .insert_header(("content-type", ct))
                .set_payload(GOOD),
        )
        .await;
        assert_eq!(r.status, 200, "{ct}");
    }
}

#[actix_web::test]
async fn a_body_just_under_the_limit_is_read_and_one_just_over_is_refused() {
    let app = app(shipped()).await;
    let pad = |n: usize| {
        let head = GOOD.trim_end_matches('}');
        let mut body = format!("{head},\"pad\":\"");
        body.push_str(&"x".repeat(n - body.len() - 2));
        body.push_str("\"}");
        assert_eq!(body.len(), n);
        body
    };
    assert_eq!(allocate(&app, pad(128 * 1024)).await.status, 200);
    assert_eq!(allocate(&app, pad(128 * 1024 + 1)).await.status, 413);
}
