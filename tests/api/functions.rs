//! Under the Azure Functions host, as its code builds requests (azure-functions-host v4,
//! `HttpRequestExtensions.GetRequestAsJObject` and `HttpScriptInvocationContext`): the envelope carries the
//! DPS body as a string in `Data.req.Body`, `Query` as an object (or, before PR #6621, as JSON text), and
//! `Metadata` repeating the query, the headers and each top-level object of the body. The host logs a
//! custom handler's stdout at Information and its stderr at Error, so the service writes its log to stdout.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::repo;
use crate::live::{BIN, Server, event_addr, get, post};

/// A DPS request of about `size` bytes (a large payload string).
fn dps_body(size: usize) -> Value {
    json!({
        "enrollmentGroup": { "enrollmentGroupId": "contoso-custom-allocated-devices", "attestation": { "type": "symmetricKey" } },
        "deviceRuntimeContext": {
            "registrationId": "breakroom499-contoso-tstrsd-007",
            "symmetricKey": {},
            "payload": { "pad": "p".repeat(size) }
        },
        "linkedHubs": ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]
    })
}

/// The envelope as the host builds it for an HTTP trigger named `req`.
fn host_envelope(body: &Value, query: Value) -> String {
    let text = body.to_string();
    let mut metadata = json!({
        "Query": {"code": "k1"},
        "Headers": {"Content-Type": "application/json", "Content-Length": text.len().to_string()},
        "sys": {"MethodName": "allocate", "UtcNow": "2026-12-02T01:00:00Z", "RandGuid": "0f4b6c1e-1111-2222-3333-444455556666"},
        "code": "\"k1\""
    });
    // Each top-level object of a JSON body is repeated in Metadata.
    for (k, v) in body.as_object().into_iter().flatten() {
        if v.is_object() {
            metadata[k] = v.clone();
        }
    }
    json!({
        "Data": { "req": {
            "Url": "http://127.0.0.1:7071/api/allocate?code=k1",
            "Method": "POST",
            "Query": query,
            "Headers": {"Content-Type": ["application/json"], "Content-Length": [text.len().to_string()]},
            "Params": {},
            "Identities": [],
            "Body": text
        }},
        "Metadata": metadata
    })
    .to_string()
}

fn inner_status(r: &crate::live::Response) -> Value {
    let out: Value = serde_json::from_str(&r.body).expect("envelope answer");
    out["Outputs"]["res"]["statusCode"].clone()
}

#[test]
fn a_90_kb_dps_body_is_answered_inside_the_envelope_and_the_limit_applies_to_the_dps_body() {
    let server = Server::start(&["--api-key", "k1"], &[]);
    let big = dps_body(90_000);
    let envelope = host_envelope(&big, json!({"code": "k1"}));
    assert!(envelope.len() > 2 * 90_000, "{} bytes", envelope.len());
    let r = post(server.addr, "/allocate", &envelope, "");
    assert_eq!(r.status, 200);
    assert_eq!(inner_status(&r), 200, "{}", &r.body[..r.body.len().min(400)]);
    // The same DPS body straight to /api/allocate is answered too.
    assert_eq!(
        post(server.addr, "/api/allocate?code=k1", &big.to_string(), "").status,
        200
    );
    // Over 128 KiB of DPS body: 413 inside the envelope, as on /api/allocate.
    let r = post(
        server.addr,
        "/allocate",
        &host_envelope(&dps_body(140_000), json!({"code": "k1"})),
        "",
    );
    assert_eq!(inner_status(&r), 413);
}

#[test]
fn both_query_shapes_carry_the_key() {
    let server = Server::start(&["--api-key", "k1"], &[]);
    let body = dps_body(10);
    for query in [json!({"code": "k1"}), json!("{\"code\":\"k1\"}")] {
        let r = post(server.addr, "/allocate", &host_envelope(&body, query.clone()), "");
        assert_eq!(inner_status(&r), 200, "Query {query}");
    }
    let r = post(server.addr, "/allocate", &host_envelope(&body, json!("{}")), "");
    assert_eq!(inner_status(&r), 401);
}

#[test]
fn under_the_functions_port_the_log_is_json_on_stdout_and_stderr_stays_empty() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(BIN)
        .args(["serve", "--policies", "policies"])
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env_remove("RUST_LOG")
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        lines.push(line.trim().to_owned());
        if event_addr(line.trim(), "listening").is_some() {
            break;
        }
        line.clear();
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(addr, "/").status, 200);
    let toaster = std::fs::read_to_string(repo().join("policies/tests/tutorial-toaster.json")).expect("fixture");
    let request: Value = serde_json::from_str(&toaster).expect("json");
    assert_eq!(
        post(addr, "/api/allocate", &request["request"].to_string(), "").status,
        200
    );
    // A refused request's line says why, and whose request it was as far as the body got.
    let bad =
        r#"{"enrollmentGroup":{"enrollmentGroupId":"grp-1"},"deviceRuntimeContext":{"registrationId":"dev-400"}}"#;
    assert_eq!(post(addr, "/api/allocate", bad, "").status, 400);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let mut stderr = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut stderr);
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    lines.extend(rest.lines().map(str::to_owned));
    assert!(stderr.is_empty(), "stderr (logged at Error by the host): {stderr}");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["message"] == "listening"), "{lines:?}");
    assert!(
        events
            .iter()
            .any(|e| e["target"] == "decision" && e["outcome"] == "assigned"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "terminal escapes in a log file"
    );
    let refused = events
        .iter()
        .find(|e| e["target"] == "decision" && e["status"] == 400)
        .expect("the 400 is logged");
    assert_eq!(refused["registration_id"], "dev-400", "{refused}");
    assert_eq!(refused["enrollment"], "grp-1", "{refused}");
    assert!(
        refused["reasons"].as_str().unwrap_or("").contains("linkedHubs"),
        "{refused}"
    );
}

#[test]
fn a_fatal_start_up_error_is_one_line_on_stderr() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--geoip", "/nonexistent/City.mmdb"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/City.mmdb"), "{stderr}");
}
