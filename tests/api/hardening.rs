//! Regression tests for what a hostile client or a careless operator found (issue "Hardening"): a glob
//! that panicked the compiler, request bodies that never time out, stalled connections that lock out real
//! requests, blank API keys, host names in `--listen`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::{BIN, Server, get, post, temp_dir};

const REQUEST: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"g"},"deviceRuntimeContext":{"registrationId":"d1"},"linkedHubs":["a.azure-devices.net","b.azure-devices.net"]}"#;

fn policy(version: u32) -> String {
    format!("[settings]\nhash_seed = \"h\"\n[[rule]]\nname = \"r\"\npayload = {{ version = \"v{version}\" }}\n")
}

fn stars() -> String {
    format!(
        "[[rule]]\nname = \"stars\"\nwhen = {{ registration_id = {{ glob = \"{}x\" }} }}\n",
        "*".repeat(100_000)
    )
}

fn version(server: &Server) -> Option<String> {
    let r = post(server.addr, "/api/allocate", REQUEST, "");
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    body["payload"]["version"].as_str().map(str::to_owned)
}

fn status(server: &Server) -> Value {
    serde_json::from_str(&get(server.addr, "/status").body).expect("status json")
}

#[test]
fn a_glob_that_panicked_the_compiler_is_a_located_error_for_check_serve_and_the_reloader() {
    let dir = temp_dir("glob");
    std::fs::write(dir.join("p.toml"), stars()).expect("write");

    let out = Command::new(BIN).arg("check").arg(&dir).output().expect("check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("p.toml:3:") && stdout.contains("too large or complex"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("panicked") && stdout.len() + stderr.len() < 2_000,
        "{stderr}"
    );

    // At start-up: the server runs and answers 503 until a valid policy loads.
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8")], &[]);
    assert_eq!(get(server.addr, "/readyz").status, 503);
    std::fs::write(dir.join("p.toml"), policy(1)).expect("write");
    let started = Instant::now();
    while version(&server).as_deref() != Some("v1") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "v1 never loaded:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Added to a running server: a failed reload on record, the reloader alive for the next edit.
    std::fs::write(dir.join("q.toml"), stars()).expect("write");
    let started = Instant::now();
    loop {
        let st = status(&server);
        if st["policy"]["last_attempt"]["result"] == "failed" {
            let error = st["policy"]["last_failure"]["errors"][0].as_str().unwrap_or("");
            assert!(error.contains("q.toml:3:") && error.contains("too large"), "{st}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no failure recorded: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(version(&server).as_deref(), Some("v1"), "the last good revision serves");
    std::fs::remove_file(dir.join("q.toml")).expect("remove");
    std::fs::write(dir.join("p.toml"), policy(2)).expect("write");
    let started = Instant::now();
    while version(&server).as_deref() != Some("v2") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "later edits ignored:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let _ = std::fs::remove_dir_all(dir);
}

/// Headers of a POST whose body (declared 500 bytes) has not all come.
fn stalled(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.write_all(b"POST /api/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"deviceRu")
        .expect("writes");
    s
}

#[test]
fn a_stalled_or_trickled_body_gets_408_and_the_connection_is_closed() {
    let server = Server::start(&[], &[]);
    let mut s = stalled(server.addr);
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // One byte every half second is cut off too.
    let mut s = stalled(server.addr);
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        if s.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "trickle not cut off: {text:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_thousand_stalled_connections_do_not_lock_out_a_real_request() {
    let server = Server::start(&[], &[]);
    let held: Vec<TcpStream> = (0..1000).map(|_| stalled(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = post(server.addr, "/api/allocate", REQUEST, "");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    eprintln!("answered in {took:?} beside 1,000 stalled connections");
    // Not waiting for the stalled ones to be cut off (5 s) is the property; the figure is in the log.
    assert!(took < Duration::from_secs(4), "{took:?}");
    drop(held);
}

#[test]
fn a_blank_api_key_is_refused_at_start_up() {
    for key in [" ", ""] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--api-key", key])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key:?}: {stderr}");
        assert!(stderr.contains("blank key is refused"), "{stderr}");
    }
}

#[test]
fn listen_takes_a_host_name_that_resolves_to_loopback() {
    let server = Server::start(&["--listen", "localhost:0"], &[]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(get(server.addr, "/healthz").status, 200);
    let out = Command::new(BIN)
        .args(["serve", "--listen", "localhost"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("IP:PORT"), "{stderr}");
}
