//! The real binary on port 0: it serves the shipped policy, refuses a chunked oversized body, falls back
//! to the embedded policy, stops on a bad GeoIP file, `check` and `test` behave as documented, keys never
//! reach the log, the Functions port and forwarding mode work, TLS serves, SIGTERM exits 0.

use std::process::Command;

use serde_json::Value;

use crate::helpers::repo;
use crate::live::{BIN, Server, exchange, fixture_request, get, post, temp_dir};

#[test]
fn the_binary_serves_the_shipped_policy_on_port_zero() {
    let server = Server::start(&[], &[]);
    for path in ["/", "/healthz", "/readyz", "/metrics", "/status", "/openapi.json"] {
        assert_eq!(get(server.addr, path).status, 200, "{path}");
    }
    let r = post(
        server.addr,
        "/api/allocate",
        &fixture_request(&repo().join("policies/tests/tutorial-toaster.json")),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(r#""iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net""#),
        "{}",
        r.body
    );
    assert!(
        r.header("x-dps-allocator-decision")
            .is_some_and(|h| h.starts_with("rule=toasters;"))
    );
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let server = Server::start(&[], &[]);
    let mut req =
        b"POST /api/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(server.addr, &req);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(get(server.addr, "/healthz").status, 200, "still serving");
}

#[test]
fn without_a_policies_directory_the_embedded_default_serves() {
    let empty = temp_dir("empty");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&empty)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let log = empty.join("server.log");
    let (addr, _) = crate::live::read_addresses(child.stdout.take().expect("stdout"), &log, false);
    let server = Server {
        child,
        admin: None,
        addr: addr.expect("address"),
        log,
    };
    let r = post(
        server.addr,
        "/api/allocate",
        r#"{"enrollmentGroup":{},"deviceRuntimeContext":{"registrationId":"x"},"linkedHubs":["only.azure-devices.net"]}"#,
        "",
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"iotHubHostName":"only.azure-devices.net"}"#)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn check_reports_every_error_and_exits_1_and_test_passes_the_shipped_fixtures() {
    let ok = Command::new(BIN)
        .args(["test", "policies"])
        .current_dir(repo())
        .output()
        .expect("runs");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let dir = temp_dir("bad");
    std::fs::write(
        dir.join("a.toml"),
        "[[hub]]\nhost = \"h\"\nregion = \"westeurop\"\nweight = 0\n",
    )
    .expect("write");
    std::fs::write(dir.join("b.toml"), "[[rule]]\nname = \"r\"\nstrategy = \"fastest\"\n").expect("write");
    let out = Command::new(BIN).arg("check").arg(&dir).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let a = dir.join("a.toml").display().to_string();
    let b = dir.join("b.toml").display().to_string();
    assert!(
        text.contains(&format!("{a}:3:10: hub `h`: unknown region `westeurop`")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{a}:4:10: hub `h`: weight 0 is out of range 1..=1000")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{b}:3:12: rule `r`: unknown variant `fastest`")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_corrupt_geoip_database_stops_start_up_with_one_line_and_exit_code_2() {
    let dir = temp_dir("geoip");
    let truncated = dir.join("truncated.mmdb");
    std::fs::write(&truncated, b"\xAB\xCD\xEFMaxMind.com not really").expect("write");
    let garbage = dir.join("garbage.mmdb");
    std::fs::write(&garbage, vec![7u8; 4096]).expect("write");
    for db in [dir.join("missing.mmdb"), truncated, garbage] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--geoip"])
            .arg(&db)
            .current_dir(repo())
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", db.display());
        assert_eq!(err.lines().count(), 1, "{}: {err}", db.display());
        assert!(err.starts_with("error: GeoIP database `"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_never_reach_the_log_and_each_decision_is_one_json_line() {
    let secret = "Zk3y-SECRET-7f1a";
    let wrong = "wr0ng-KEY-9b2c";
    let server = Server::start(&["--api-key", secret, "--log-format", "json"], &[]);
    let body = fixture_request(&repo().join("policies/tests/tutorial-toaster.json"));
    assert_eq!(
        post(server.addr, &format!("/api/allocate?code={secret}"), &body, "").status,
        200
    );
    assert_eq!(
        post(
            server.addr,
            "/api/allocate",
            &body,
            &format!("x-functions-key: {secret}\r\n")
        )
        .status,
        200
    );
    assert_eq!(
        post(server.addr, &format!("/api/allocate?code={wrong}"), &body, "").status,
        401
    );
    assert_eq!(
        post(
            server.addr,
            "/api/allocate",
            &body,
            &format!("x-functions-key: {wrong}\r\n")
        )
        .status,
        401
    );
    assert_eq!(
        post(server.addr, &format!("/api/explain?code={secret}"), &body, "").status,
        200
    );
    assert_eq!(get(server.addr, &format!("/status?code={secret}")).status, 200);
    assert_eq!(get(server.addr, "/status").status, 401);
    let env = serde_json::json!({"Data": {"req": {"Url": format!("https://x/api/allocate?code={secret}"), "Query": {"code": secret}, "Body": body}}});
    assert_eq!(post(server.addr, "/allocate", &env.to_string(), "").status, 200);
    let status = get(server.addr, &format!("/status?code={secret}")).body;
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    for text in [&log, &status] {
        assert!(
            !text.contains(secret) && !text.contains(wrong),
            "a key reached the output:\n{text}"
        );
    }
    let decisions: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "decision")
        .collect();
    // Two assignments, two refusals, one envelope; explain decides nothing and logs no decision.
    assert_eq!(decisions.len(), 5, "one line per allocation request:\n{log}");
    let d = decisions
        .iter()
        .find(|d| d["outcome"] == "assigned")
        .expect("an assignment");
    for field in [
        "request_id",
        "decision_id",
        "registration_id",
        "enrollment",
        "rule",
        "strategy",
        "hub",
        "sticky",
        "reasons",
        "revision",
        "duration_us",
    ] {
        assert!(d.get(field).is_some(), "decision log lacks {field}: {d}");
    }
    assert_eq!(d["rule"], "toasters");
    assert_eq!(d["registration_id"], "breakroom499-contoso-tstrsd-007");
    assert!(
        !log.contains("MyDeviceFirmwareVersion") && !log.contains("12.0.2.5"),
        "payload values reached the log"
    );
    assert!(decisions.iter().any(|d| d["outcome"] == "unauthorized"));
}

#[test]
fn under_azure_functions_the_port_comes_from_the_environment_and_forwarded_requests_keep_their_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let server = Server::start(&[], &[("FUNCTIONS_CUSTOMHANDLER_PORT", &port.to_string())]);
    assert_eq!(server.addr.to_string(), format!("127.0.0.1:{port}"));
    assert_eq!(get(server.addr, "/").status, 200);
    // Forwarding mode: the host passes the request to /api/allocate with its query string, key included;
    // the host has checked the key, so the service (configured without keys) ignores it.
    let body = fixture_request(&repo().join("policies/tests/tutorial-heatpump.json"));
    let r = post(
        server.addr,
        "/api/allocate?code=function-key-from-webhookUrl",
        &body,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("contoso-heatpumps-hub-1098"));
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(!log.contains("function-key-from-webhookUrl"), "{log}");
}

#[test]
fn a_public_address_without_keys_is_refused_unless_explicitly_allowed() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .current_dir(repo())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve 0.0.0.0:0 without API keys"), "{err}");
    for extra in [&["--api-key", "k"][..], &["--allow-unauthenticated"][..]] {
        let mut args = vec!["--listen", "0.0.0.0:0"];
        args.extend_from_slice(extra);
        let server = Server::start(&args, &[]);
        let probe = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
        assert_eq!(get(probe, "/healthz").status, 200, "{extra:?}");
    }
}

#[test]
fn tls_serves_https_with_the_given_certificate() {
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    assert!(
        made.as_ref().is_ok_and(|o| o.status.success()),
        "openssl is needed for this test: {made:?}"
    );
    let server = Server::start(
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
        &[],
    );
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cert)
        .arg(format!("https://127.0.0.1:{}/healthz", server.addr.port()))
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = get(server.addr, "/healthz");
    assert_ne!(plain.status, 200, "plain HTTP must not be served on the TLS port");
    let bad = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("missing.pem"))
        .arg("--tls-key")
        .arg(&key)
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether tests that need an external tool must fail (rather than skip) when it is missing; the test
/// script sets it after installing the tools.
fn tools_required() -> bool {
    std::env::var_os("DPS_ALLOCATOR_REQUIRE_TOOLS").is_some()
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(!tools_required(), "promtool is missing (Debian package `prometheus`)");
        eprintln!("skipped: promtool not installed (scripts/test.sh installs it)");
        return;
    }
    let server = Server::start(&[], &[]);
    for fixture in [
        "tutorial-toaster.json",
        "tutorial-unrecognized.json",
        "rejection-revoked-firmware.json",
        "vehicles-geo.json",
    ] {
        let path = repo().join("policies/tests").join(fixture);
        let text = std::fs::read_to_string(&path).expect("fixture");
        let v: Value = serde_json::from_str(&text).expect("json");
        let request = if v.is_array() {
            v[0]["request"].to_string()
        } else {
            v["request"].to_string()
        };
        post(server.addr, "/api/allocate", &request, "");
    }
    post(server.addr, "/api/allocate", "{", "");
    let metrics = get(server.addr, "/metrics").body;
    assert!(metrics.contains("dps_allocator_assignments_total"), "{metrics}");
    assert!(metrics.contains("process_resident_memory_bytes"), "{metrics}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), metrics.as_bytes()).expect("writes");
    let out = check.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
