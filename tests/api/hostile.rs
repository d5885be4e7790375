//! Regression tests for issue 24 (hardening against hostile peers), server side: what an anonymous
//! client can make a keyed server hold, what the decision cache holds whatever the answers, and the
//! admin probes under a connection flood. Memory is read from the real process (`VmHWM`, its peak
//! resident set), never timed.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::live::{Server, post};

/// A process's peak resident set, in bytes (`VmHWM` in `/proc/PID/status`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// An envelope of about `bytes` whose `Metadata` is what `serde_json::Value` expands most (an array of
/// empty objects: 3 bytes of text, about 80 of value each), carrying no key.
fn anonymous_envelope(bytes: usize) -> String {
    let items = vec!["{}"; bytes / 3].join(",");
    format!(
        r#"{{"Data":{{"req":{{"Body":"{{}}","Headers":{{"Content-Type":["application/json"]}}}}}},"Metadata":{{"sys":[{items}]}}}}"#
    )
}

#[test]
fn anonymous_envelopes_on_a_keyed_server_are_not_expanded() {
    // Eight workers, so that the sixteen requests are read and parsed at once.
    let server = Server::start(&["--api-key", "k1", "--workers", "8"], &[]);
    let pid = server.child.id();
    // Warm up: one real answer, so the baseline includes what any request costs.
    let r = post(server.addr, "/api/allocate?code=k1", "{}", "");
    assert_ne!(r.status, 0);
    let before = peak_rss(pid);
    // 16 at once, each just under the envelope limit (512 KiB). Before the fix (2 MiB limit, Metadata
    // parsed as a JSON value before the key check) one such request took the process from 11 to 135 MB.
    let body = anonymous_envelope(500 * 1024);
    let replies: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| post(server.addr, "/allocate", &body, "")))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200, "the envelope is always 200");
        let out: Value = serde_json::from_str(&r.body).expect("envelope answer");
        assert_eq!(out["Outputs"]["res"]["statusCode"], 401, "{}", r.body);
    }
    let grew = peak_rss(pid).saturating_sub(before);
    eprintln!("peak RSS grew {} KiB for 16 anonymous 500 KiB envelopes", grew / 1024);
    // Their bytes (8 MiB) and the buffers around them, nothing proportional to Metadata's values.
    assert!(grew < 32 << 20, "grew {} MiB", grew >> 20);
    // Over the envelope limit: 413 inside, not read.
    let r = post(server.addr, "/allocate", &anonymous_envelope(600 * 1024), "");
    let out: Value = serde_json::from_str(&r.body).expect("envelope answer");
    assert_eq!(out["Outputs"]["res"]["statusCode"], 413, "{}", r.body);
}
