//! The real binary, started on port 0: it serves the shipped policy, answers the tutorial, refuses a
//! chunked oversized body, and `check` and `test` behave as documented.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::repo;

const BIN: &str = env!("CARGO_BIN_EXE_dps-allocator");

/// Kills the server when the test ends, however it ends.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads the listening line");
    let addr = line.trim().rsplit("http://").next().and_then(|a| a.parse().ok());
    let addr = addr.unwrap_or_else(|| panic!("no address in {line:?}"));
    Server { child, addr }
}

/// One HTTP/1.1 exchange over a fresh connection; returns status and body.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request).expect("writes");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, req.as_bytes())
}

#[test]
fn the_binary_serves_the_shipped_policy_on_port_zero() {
    let server = start(&[]);
    assert_eq!(get(server.addr, "/").0, 200);
    assert_eq!(get(server.addr, "/healthz").0, 200);
    assert_eq!(get(server.addr, "/readyz").0, 200);
    let body = std::fs::read_to_string(repo().join("policies/tests/tutorial-toaster.json")).expect("fixture");
    let fixture: serde_json::Value = serde_json::from_str(&body).expect("json");
    let (status, answer) = post(server.addr, "/api/allocate", &fixture["request"].to_string());
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net""#),
        "{answer}"
    );
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let server = start(&[]);
    let mut req =
        b"POST /api/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = exchange(server.addr, &req);
    assert_eq!(status, 413, "{body}");
    assert_eq!(get(server.addr, "/healthz").0, 200, "still serving");
}

#[test]
fn without_a_policies_directory_the_embedded_default_serves() {
    let empty = std::env::temp_dir().join(format!("dps-allocator-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&empty)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let addr: SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address");
    let server = Server { child, addr };
    let (status, body) = post(
        server.addr,
        "/api/allocate",
        r#"{"enrollmentGroup":{},"deviceRuntimeContext":{"registrationId":"x"},"linkedHubs":["only.azure-devices.net"]}"#,
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"iotHubHostName":"only.azure-devices.net"}"#)
    );
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
    let dir = std::env::temp_dir().join(format!("dps-allocator-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
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
        text.contains(&format!("{b}:3:12: rule: unknown variant `fastest`")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_corrupt_geoip_database_stops_start_up_with_one_line_and_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("dps-allocator-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
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
