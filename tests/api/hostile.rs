//! Regression tests for issue 24 (hardening against hostile peers), server side: what an anonymous
//! client can make a keyed server hold, what the decision cache holds whatever the answers, and the
//! admin probes under a connection flood. Memory is read from the real process (`VmHWM`, its peak
//! resident set), never timed.

use serde_json::{Value, json};

use crate::live::{Server, get, post, temp_dir};

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

/// The value of an unlabelled-but-for-`cache` metric line in a Prometheus exposition.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
}

#[test]
fn the_decision_cache_is_bounded_in_bytes_whatever_the_answers_weigh() {
    // A policy that copies a device's payload field into the twin: each answer carries ~30 KB.
    let dir = temp_dir("heavy-answers");
    std::fs::write(
        dir.join("p.toml"),
        "[settings]\nhash_seed = \"h\"\n[[rule]]\nname = \"copy\"\ntwin.desired = { notes = \"${payload.notes}\" }\n",
    )
    .expect("policy");
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8"), "--workers", "2"], &[]);
    let notes = "n".repeat(30_000);
    // 3,000 devices, each twice (an answer is stored on its second sight): 90 MB of answers offered to
    // a cache whose entry bound alone (65,536) would keep them all; the default byte budget is 64 MiB.
    std::thread::scope(|s| {
        for part in 0..4 {
            let (server, notes) = (&server, &notes);
            s.spawn(move || {
                for i in (part..3_000).step_by(4) {
                    let body = json!({
                        "enrollmentGroup": {"enrollmentGroupId": "g"},
                        "deviceRuntimeContext": {"registrationId": format!("heavy-{i}"), "payload": {"notes": notes}},
                        "linkedHubs": ["a.azure-devices.net"]
                    })
                    .to_string();
                    for _ in 0..2 {
                        let r = post(server.addr, "/api/allocate", &body, "");
                        assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
                    }
                }
            });
        }
    });
    let status: Value = serde_json::from_str(&get(server.addr, "/status").body).expect("status");
    let entries = status["caches"]["decision_entries"].as_u64().expect("entries");
    eprintln!("decision cache: {entries} entries: {}", status["caches"]);
    assert!(entries < 2_300, "{entries} entries of 30 KB kept");
    let m = get(server.addr, "/metrics").body;
    let held = metric(&m, "dps_allocator_cache_bytes{cache=\"decision\"}");
    let max = metric(&m, "dps_allocator_cache_max_bytes{cache=\"decision\"}");
    assert_eq!(max, 64 << 20);
    assert!(held <= max, "held {held} of {max}");
    assert!(
        status["caches"]["decision_bytes"].as_u64().expect("bytes") <= max,
        "{status}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
