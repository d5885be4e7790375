//! Hot reload under a running server and steady traffic: invalid revisions never activate, valid ones do
//! within 2 s, no request fails, and no answer mixes revisions; by rename-on-save, by plain writes, and by
//! a Kubernetes ConfigMap `..data` symlink swap.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::{Server, get, post, temp_dir};

fn policy(version: u32) -> String {
    format!(
        "[settings]\nhash_seed = \"reload\"\n[[rule]]\nname = \"r\"\npayload = {{ version = \"v{version}\", revision = \"${{revision}}\" }}\n"
    )
}

const BROKEN: &str = "[settings]\nhash_seed = \"reload\"\n[[rule]]\nname = \"r\"\nstrategy = \"nearest-ish\"\n";

const REQUEST: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"g"},"deviceRuntimeContext":{"registrationId":"d1"},"linkedHubs":["a.azure-devices.net","b.azure-devices.net"]}"#;

/// One answer as the traffic thread saw it.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    header_revision: Option<String>,
    body_revision: Option<String>,
    version: Option<String>,
}

fn ask(server: &Server) -> Seen {
    let r = post(server.addr, "/api/allocate", REQUEST, "");
    let header_revision = r
        .header("x-dps-allocator-decision")
        .and_then(|h| h.split("; ").find_map(|kv| kv.strip_prefix("revision=")))
        .map(str::to_owned);
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    Seen {
        status: r.status,
        header_revision,
        body_revision: body["payload"]["revision"].as_str().map(str::to_owned),
        version: body["payload"]["version"].as_str().map(str::to_owned),
    }
}

/// Sends requests back to back until stopped; returns what it saw.
fn traffic(server: Arc<Server>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Seen>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(ask(&server));
        }
        seen
    })
}

/// Waits until answers carry `version`; returns how long it took.
fn until_version(server: &Server, version: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ask(server).version.as_deref() == Some(version) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{version} not active after {limit:?}; log:\n{}", server.log());
}

fn save_by_rename(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn status(server: &Server) -> Value {
    serde_json::from_str(&get(server.addr, "/status").body).expect("status json")
}

fn check_traffic(seen: &[Seen]) {
    assert!(seen.len() > 50, "too little traffic: {}", seen.len());
    let mut last = 0u32;
    for s in seen {
        assert_eq!(s.status, 200, "a request failed during reloads: {s:?}");
        assert_eq!(
            s.header_revision, s.body_revision,
            "an answer mixed two revisions: {s:?}"
        );
        let v: u32 = s
            .version
            .as_deref()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse().ok())
            .expect("version");
        assert!(v >= last, "went back from v{last} to v{v}");
        last = v;
    }
}

#[test]
fn rewriting_the_policy_under_traffic_activates_valid_revisions_only_and_never_mixes_them() {
    let dir = temp_dir("rewrite");
    std::fs::write(dir.join("p.toml"), policy(1)).expect("write");
    let server = Arc::new(Server::start(&["--policies", dir.to_str().expect("utf-8")], &[]));
    assert_eq!(ask(&server).version.as_deref(), Some("v1"));
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(server.clone(), stop.clone());

    save_by_rename(&dir, "p.toml", BROKEN);
    std::thread::sleep(Duration::from_millis(1200));
    let st = status(&server);
    assert_eq!(st["policy"]["last_attempt"]["result"], "failed", "{st}");
    assert!(
        st["policy"]["last_failure"]["errors"][0]
            .as_str()
            .expect("error")
            .contains("p.toml:5:12"),
        "{st}"
    );
    assert_eq!(
        ask(&server).version.as_deref(),
        Some("v1"),
        "the last good revision keeps serving"
    );

    save_by_rename(&dir, "p.toml", &policy(2));
    let took = until_version(&server, "v2", Duration::from_secs(2));
    eprintln!("rename-on-save activated in {took:?}");

    std::fs::write(dir.join("p.toml"), BROKEN).expect("write in place");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ask(&server).version.as_deref(), Some("v2"));
    std::fs::write(dir.join("p.toml"), policy(3)).expect("write in place");
    until_version(&server, "v3", Duration::from_secs(2));

    // A new file joins the revision too.
    std::fs::write(
        dir.join("q.toml"),
        "[[hub]]\nhost = \"a.azure-devices.net\"\nweight = 7\n",
    )
    .expect("write");
    let started = Instant::now();
    while status(&server)["hubs"][0]["weight"] != 7 {
        assert!(started.elapsed() < Duration::from_secs(2), "new file not picked up");
        std::thread::sleep(Duration::from_millis(20));
    }

    stop.store(true, Ordering::Relaxed);
    let seen = load.join().expect("traffic thread");
    check_traffic(&seen);
    let metrics = get(server.addr, "/metrics").body;
    assert!(
        metrics.contains(r#"dps_allocator_policy_reloads_total{result="failed"}"#),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Kubernetes mounts a ConfigMap as `..data -> ..<timestamp>/` with each key a symlink `name ->
/// ..data/name`, and updates it by writing a new timestamped directory and renaming a new `..data` link
/// over the old one.
#[test]
fn a_configmap_symlink_swap_activates_the_new_revision() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("configmap");
        let gen1 = dir.join("..2026_11_27_10_00_00.000000001");
        std::fs::create_dir(&gen1).expect("mkdir");
        std::fs::write(gen1.join("policy.toml"), policy(1)).expect("write");
        symlink("..2026_11_27_10_00_00.000000001", dir.join("..data")).expect("link");
        symlink("..data/policy.toml", dir.join("policy.toml")).expect("link");
        let server = Arc::new(Server::start(&["--policies", dir.to_str().expect("utf-8")], &[]));
        assert_eq!(ask(&server).version.as_deref(), Some("v1"));
        let stop = Arc::new(AtomicBool::new(false));
        let load = traffic(server.clone(), stop.clone());

        let swap = |generation: &str, text: &str| {
            let g = dir.join(generation);
            std::fs::create_dir(&g).expect("mkdir");
            std::fs::write(g.join("policy.toml"), text).expect("write");
            symlink(generation, dir.join("..data_tmp")).expect("link");
            std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
        };
        swap("..2026_11_27_10_05_00.000000002", BROKEN);
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(
            ask(&server).version.as_deref(),
            Some("v1"),
            "a broken ConfigMap never activates"
        );
        swap("..2026_11_27_10_10_00.000000003", &policy(2));
        let took = until_version(&server, "v2", Duration::from_secs(2));
        eprintln!("ConfigMap swap activated in {took:?}");

        stop.store(true, Ordering::Relaxed);
        check_traffic(&load.join().expect("traffic thread"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn sighup_reloads_and_a_server_that_starts_with_a_broken_policy_is_not_ready_until_it_is_fixed() {
    let dir = temp_dir("sighup");
    std::fs::write(dir.join("p.toml"), BROKEN).expect("write");
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8"), "--no-watch"], &[]);
    let r = get(server.addr, "/readyz");
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")));
    let r = post(server.addr, "/api/allocate", REQUEST, "");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("not_ready"));
    std::fs::write(dir.join("p.toml"), policy(1)).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(server.addr, "/readyz").status,
        503,
        "--no-watch: only SIGHUP reloads"
    );
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    until_version(&server, "v1", Duration::from_secs(2));
    assert_eq!(get(server.addr, "/readyz").status, 200);
    let _ = std::fs::remove_dir_all(dir);
}
