//! The admin surface off the public port (issue "Admin surface"): with `--admin-listen`, `/metrics`,
//! `/status` and `/openapi.json` live on the admin listener only; without it, they need a key when keys
//! are configured; probes answer everywhere; `/status` shows no host paths to a caller without a key.

use std::process::Command;

use serde_json::Value;

use crate::live::{BIN, Server, get, post, temp_dir};

const REQUEST: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"g"},"deviceRuntimeContext":{"registrationId":"d1"},"linkedHubs":["a.azure-devices.net"]}"#;

#[test]
fn with_an_admin_listener_the_public_port_serves_dps_and_probes_only() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0", "--api-key", "k1"], &[]);
    let admin = server.admin.expect("admin address");
    for path in ["/metrics", "/status", "/openapi.json"] {
        assert_eq!(get(server.addr, path).status, 404, "public {path}");
        assert_eq!(
            get(server.addr, &format!("{path}?code=k1")).status,
            404,
            "public {path} with a key"
        );
        assert_eq!(get(admin, path).status, 401, "admin {path} without a key");
        assert_eq!(get(admin, &format!("{path}?code=k1")).status, 200, "admin {path}");
    }
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(get(server.addr, path).status, 200, "public {path}");
        assert_eq!(get(admin, path).status, 200, "admin {path}");
    }
    assert_eq!(post(server.addr, "/api/allocate?code=k1", REQUEST, "").status, 200);
    assert_eq!(post(admin, "/api/allocate?code=k1", REQUEST, "").status, 404);
    let metrics = get(admin, "/metrics?code=k1").body;
    assert!(
        metrics.contains("dps_allocator_requests_total{outcome=\"assigned\"} 1"),
        "{metrics}"
    );
}

#[test]
fn allow_unauthenticated_opens_the_admin_listener_only() {
    let server = Server::start(
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--api-key",
            "k1",
            "--allow-unauthenticated",
        ],
        &[],
    );
    let admin = server.admin.expect("admin address");
    assert_eq!(get(admin, "/metrics").status, 200);
    assert_eq!(get(admin, "/status").status, 200);
    assert_eq!(
        post(server.addr, "/api/allocate", REQUEST, "").status,
        401,
        "the public port keeps its keys"
    );
}

#[test]
fn without_an_admin_listener_a_keyed_server_asks_for_a_key_on_status_and_metrics() {
    let server = Server::start(&["--api-key", "k1"], &[]);
    for path in ["/metrics", "/status", "/openapi.json"] {
        assert_eq!(get(server.addr, path).status, 401, "{path}");
        assert_eq!(get(server.addr, &format!("{path}?code=k1")).status, 200, "{path}");
    }
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(get(server.addr, path).status, 200, "{path}");
    }
}

#[test]
fn status_shows_no_host_paths_without_a_key() {
    let dir = temp_dir("admin-paths");
    std::fs::write(dir.join("p.toml"), "[[rule]]\nname = \"a\"\n").expect("write");
    let abs = dir.to_str().expect("utf-8");
    let open = Server::start(&["--policies", abs], &[]);
    std::fs::write(dir.join("q.toml"), "[[rule]]\nname = \"b\"\nstrategy = \"nope\"\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = get(open.addr, "/status").body;
    let st: Value = serde_json::from_str(&text).expect("json");
    assert!(
        !text.contains(abs),
        "an absolute path reached a caller without a key: {text}"
    );
    assert_eq!(st["policy"]["files"][0], "p.toml", "{st}");
    let error = st["policy"]["last_failure"]["errors"][0].as_str().unwrap_or("");
    assert!(error.starts_with("q.toml:3:"), "{st}");
    drop(open);
    // With keys, a caller with one sees the real paths.
    std::fs::remove_file(dir.join("q.toml")).expect("remove");
    let keyed = Server::start(&["--policies", abs, "--api-key", "k1"], &[]);
    assert!(get(keyed.addr, "/status?code=k1").body.contains(abs));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_public_admin_address_without_keys_is_refused() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin listener"), "{stderr}");
}
