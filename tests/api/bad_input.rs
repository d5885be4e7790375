//! Malformed requests: each gets its 4xx and a JSON error naming the problem, and the service keeps
//! answering good requests after every one.

use actix_web::test::TestRequest;

use crate::corpus::{self, GOOD};
use crate::helpers::{allocate, app, send, shipped};

#[actix_web::test]
async fn every_malformed_request_gets_its_4xx_and_a_json_error_and_the_service_keeps_serving() {
    let app = app(shipped()).await;
    for corpus::Case {
        what,
        body,
        status,
        code,
        needle,
    } in corpus::requests()
    {
        let r = allocate(&app, body).await;
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{what}");
        let ok = allocate(&app, GOOD).await;
        assert_eq!(ok.status, 200, "after {what}");
        if status == 200 {
            continue;
        }
        let doc = r.json();
        assert_eq!(doc["error"]["code"], code, "{what}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: message {message:?} lacks {needle:?}");
        assert!(!message.contains('\n'), "{what}: one line");
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
