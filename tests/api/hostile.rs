//! Regression tests for issue 24 (hardening against hostile peers), server side: what an anonymous
//! client can make a keyed server hold, what the decision cache holds whatever the answers, and the
//! admin probes under a connection flood. Memory is read from the real process (`VmHWM`, its peak
//! resident set), never timed.

use std::time::Duration;

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

/// A HOSTILE PEER for `rollout` and `verify`, not a stand-in of IoT Hub or DPS: a raw HTTP/1.1 listener on
/// 127.0.0.1 that reads each request and answers with whatever `answer` writes for the n-th request
/// (from 0) and its request line: a trickled body, a huge one, absurd headers. It checks nothing.
/// Bounded: it stops accepting when dropped, and every answer it writes ends within 60 s.
pub struct HostilePeer {
    pub addr: std::net::SocketAddr,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl HostilePeer {
    pub fn start(answer: fn(usize, &str, &mut std::net::TcpStream)) -> HostilePeer {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    loop {
                        let mut first = String::new();
                        if reader.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        let _ = reader.read_exact(&mut body);
                        let n = {
                            let mut s = seen.lock().expect("lock");
                            s.push(first.trim().to_owned());
                            s.len() - 1
                        };
                        answer(n, first.trim(), &mut stream);
                    }
                });
            }
        });
        HostilePeer { addr, requests, stop }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

const HUB: &str = "hub-a.azure-devices.net";
const HUB_CONN: &str =
    "HostName=hub-a.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=a2V5LWZvci1odWItYS1pbi10aGUtdGVzdHM=";
const DPS_CONN: &str = "HostName=contoso-dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=a2V5LWZvci10aGUtZHBzLWluLXRoZS10ZXN0cw==";

/// A schedule of these devices, all on [`HUB`], due at once.
fn one_hub_schedule(dir: &std::path::Path, ids: &[&str]) -> std::path::PathBuf {
    let p = dir.join("schedule.csv");
    let mut text = String::from("registration_id,from_hub,to_hub,wave,not_before_s\n");
    for id in ids {
        text.push_str(&format!("{id},{HUB},new.azure-devices.net,1,0\n"));
    }
    std::fs::write(&p, text).expect("schedule");
    p
}

/// Runs a fleet command against a peer, killed if it is still running after `limit`: exit code (None when
/// killed), stdout, stderr.
fn fleet_command(args: &[&str], peer: &std::net::SocketAddr, limit: Duration) -> (Option<i32>, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::live::BIN)
        .args(args)
        .env("DPS_ALLOCATOR_IOTHUB_ENDPOINT", format!("http://{peer}"))
        .env("DPS_ALLOCATOR_DPS_ENDPOINT", format!("http://{peer}"))
        .env("DPS_ALLOCATOR_HUB_CONNECTION_STRINGS", HUB_CONN)
        .env("DPS_ALLOCATOR_DPS_CONNECTION_STRING", DPS_CONN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let started = std::time::Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rollout --format json` of these devices (on [`HUB`], due at once) against a peer, with extra flags,
/// killed after `limit`: the exit code (None when killed), the summary (null when none) and stderr.
fn rollout_json(peer: &HostilePeer, ids: &[&str], extra: &[&str], limit: Duration) -> (Option<i32>, Value, String) {
    let dir = temp_dir("rollout");
    let sched = one_hub_schedule(&dir, ids);
    let state = dir.join("state.jsonl");
    let mut args = vec![
        "rollout",
        "--schedule",
        sched.to_str().expect("utf-8"),
        "--state",
        state.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = fleet_command(&args, &peer.addr, limit);
    let _ = std::fs::remove_dir_all(dir);
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

fn write(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    use std::io::Write;
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
}

#[test]
fn a_trickled_body_ends_at_the_call_deadline_and_the_status_decides() {
    // A 200 whose body comes one byte every 200 ms (50 minutes for all of it): before, the run waited
    // for it (only the head had a deadline).
    let peer = HostilePeer::start(|_, _, s| {
        write(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15000\r\n\r\n{",
        );
        for _ in 0..300 {
            std::thread::sleep(Duration::from_millis(200));
            if std::io::Write::write_all(s, b" ").is_err() {
                return;
            }
        }
    });
    let (code, summary, err) = rollout_json(&peer, &["ok-1"], &["--call-timeout", "2"], Duration::from_secs(40));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(summary["triggered"], 1, "the 200 decides: {summary}");
    assert_eq!(peer.count(), 1, "called once");

    // verify: the same peer trickling a registration state; the status stands, the unread body makes
    // the verdict unknown, and the run ends.
    let dir = temp_dir("trickle");
    let sched = one_hub_schedule(&dir, &["ok-1"]);
    let (code, _, err) = fleet_command(
        &[
            "verify",
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--call-timeout",
            "2",
        ],
        &peer.addr,
        Duration::from_secs(40),
    );
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_peer_that_never_answers_is_no_answer_at_the_deadline() {
    let peer = HostilePeer::start(|_, _, _| std::thread::sleep(Duration::from_secs(30)));
    let (code, summary, err) = rollout_json(
        &peer,
        &["ok-1"],
        &["--call-timeout", "1", "--max-tries", "1"],
        Duration::from_secs(25),
    );
    assert_eq!(code, Some(1), "a failed device: {err}");
    assert_eq!(summary["failed"], 1, "{summary}");
}

#[test]
fn a_200_with_an_unreadable_body_is_triggered_once() {
    // 2 MiB of body: over the read limit. Before, the device was counted as no answer, called again up
    // to --max-tries and recorded failed.
    let peer = HostilePeer::start(|_, _, s| {
        let body = vec![b'x'; 2 << 20];
        write(
            s,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        write(s, &body);
    });
    let (code, summary, err) = rollout_json(&peer, &["ok-1"], &[], Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!((summary["triggered"].as_u64(), peer.count()), (Some(1), 1), "{summary}");
}

#[test]
fn retry_after_beyond_reason_is_capped_and_reported() {
    // The first call to each device: 429 with a Retry-After no clock can add (before: exit 101, the
    // summary lost) or one of 317 years (before: slept); then 200.
    let peer = HostilePeer::start(|n, _, s| {
        let wait = ["18446744073709551615", "9999999999"];
        if n < 2 {
            write(
                s,
                format!(
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Length: 0\r\n\r\n",
                    wait[n]
                )
                .as_bytes(),
            );
        } else {
            write(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        }
    });
    let (code, summary, err) = rollout_json(&peer, &["ok-1"], &["--max-retry-after", "1"], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(summary["triggered"], 1, "{summary}");
    assert!(
        err.contains("asked to wait up to 18446744073709551615 s (Retry-After) 2 time(s): waited 1 s each time"),
        "{err}"
    );
    assert!(!err.contains("internal error"), "{err}");
}

#[test]
fn a_not_before_time_beyond_the_clock_is_a_located_error() {
    let dir = temp_dir("not-before");
    let sched = dir.join("schedule.csv");
    std::fs::write(
        &sched,
        format!("registration_id,from_hub,to_hub,wave,not_before_s\nok-1,{HUB},b,1,18446744073709551615\n"),
    )
    .expect("schedule");
    let state = dir.join("state.jsonl");
    let peer = HostilePeer::start(|_, _, _| {});
    let (code, _, err) = fleet_command(
        &[
            "rollout",
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
        ],
        &peer.addr,
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("row 2: not_before_s `18446744073709551615`"), "{err}");
    assert_eq!(peer.count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_rollouts_on_one_state_file_are_refused_and_foreign_files_are_never_adopted() {
    let peer = HostilePeer::start(|_, _, s| write(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"));
    let dir = temp_dir("two-runs");
    // The first run waits 4 s for its device's not-before time, holding the state.
    let sched = dir.join("schedule.csv");
    std::fs::write(
        &sched,
        format!("registration_id,from_hub,to_hub,wave,not_before_s\nok-1,{HUB},b,1,4\n"),
    )
    .expect("schedule");
    let state = dir.join("state.jsonl");
    let args = [
        "rollout",
        "--schedule",
        sched.to_str().expect("utf-8"),
        "--state",
        state.to_str().expect("utf-8"),
    ];
    let first = std::thread::scope(|s| {
        let first = s.spawn(|| fleet_command(&args, &peer.addr, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(1_500));
        let (code, _, err) = fleet_command(&args, &peer.addr, Duration::from_secs(30));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("is in use by another rollout"), "{err}");
        first.join().expect("first run")
    });
    assert_eq!(first.0, Some(0), "{}", first.2);
    assert_eq!(peer.count(), 1, "the device was triggered once, not once per run");
    // The schedule, or any other file that is not a state file, is refused and left as it was.
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "my notes\n").expect("notes");
    for foreign in [&sched, &notes] {
        let before = std::fs::read(foreign).expect("read");
        let (code, _, err) = fleet_command(
            &[
                "rollout",
                "--schedule",
                sched.to_str().expect("utf-8"),
                "--state",
                foreign.to_str().expect("utf-8"),
            ],
            &peer.addr,
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("is the schedule itself") || err.contains("is not a rollout state file"),
            "{err}"
        );
        assert_eq!(std::fs::read(foreign).expect("read"), before);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_device_listed_many_times_is_triggered_once() {
    let peer = HostilePeer::start(|_, _, s| write(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"));
    let (code, summary, err) = rollout_json(
        &peer,
        &["ok-1", "ok-2", "ok-1", "OK-1"],
        &["--rate", "50"],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("2 row(s) listed a registration id already listed"),
        "{err}"
    );
    assert_eq!((summary["triggered"].as_u64(), peer.count()), (Some(2), 2), "{summary}");
}

/// `GET path` with a deadline for the whole exchange: the status, or None when no answer came in time.
fn probe(addr: std::net::SocketAddr, path: &str, deadline: Duration) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, deadline).ok()?;
    s.set_read_timeout(Some(deadline)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Holds `n` idle connections to `addr` (no request on them) from 30 threads, opening a new one for each
/// the server closes, until `stop`; at most `limit` in all.
fn flood(addr: std::net::SocketAddr, n: usize, stop: &std::sync::atomic::AtomicBool, limit: Duration) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..30 {
            s.spawn(|| {
                let mut held: Vec<Option<std::net::TcpStream>> = (0..n / 30).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                    for slot in held.iter_mut() {
                        // Closed by the server (read 0 or an error); alive while a read would block.
                        let alive = slot.as_mut().is_some_and(|c| {
                            let mut b = [0u8; 1];
                            matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                        });
                        if !alive {
                            *slot = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                                .ok()
                                .inspect(|c| {
                                    let _ = c.set_nonblocking(true);
                                });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
}

#[test]
fn the_admin_probes_answer_under_a_flood_of_idle_connections() {
    // 1,500 connections held open to the admin port without a request (a scanner, a broken client, a
    // slow-loris), reopened as the server closes them. Before: one admin worker capped at 256
    // connections, so the kubelet's probes (2 s timeout) waited behind them and 6 of 6 failed.
    let _ = rlimit::increase_nofile_limit(8_192);
    let server = Server::start(&["--admin-listen", "127.0.0.1:0", "--workers", "1"], &[]);
    let admin = server.admin.expect("admin address");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::thread::scope(|s| {
        s.spawn(|| flood(admin, 1_500, &stop, Duration::from_secs(40)));
        std::thread::sleep(Duration::from_secs(3));
        let answered: Vec<Option<u16>> = ["/healthz", "/readyz", "/healthz", "/readyz", "/healthz", "/readyz"]
            .iter()
            .map(|p| {
                let r = probe(admin, p, Duration::from_secs(2));
                std::thread::sleep(Duration::from_millis(500));
                r
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        answered
    });
    assert_eq!(answered, vec![Some(200); 6], "probes beside 1,500 idle connections");
}
