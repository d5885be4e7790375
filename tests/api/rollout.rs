//! `rollout` and `verify` against the local stand-in of the IoT Hub and DPS REST APIs (tests/api/standin.rs):
//! outcomes, rate per hub, not-before, Retry-After, 5xx back-off, skipped hubs, secrets never printed, a kill
//! in the middle and a rerun, the dry run, and where devices landed.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::live::{BIN, temp_dir};
use crate::standin::{Config, Seen, StandIn};

const KEY_A: &str = "a2V5LWZvci1odWItYS1pbi10aGUtdGVzdHM=";
const KEY_B: &str = "a2V5LWZvci1odWItYi1pbi10aGUtdGVzdHM=";
const KEY_DPS: &str = "a2V5LWZvci10aGUtZHBzLWluLXRoZS10ZXN0cw==";
const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";

fn conn(host: &str, key: &str) -> String {
    format!("HostName={host};SharedAccessKeyName=service;SharedAccessKey={key}")
}

fn config() -> Config {
    Config {
        keys: HashMap::from([
            (HUB_A.to_owned(), KEY_A.to_owned()),
            (HUB_B.to_owned(), KEY_B.to_owned()),
            (
                "contoso-dps.azure-devices-provisioning.net".to_owned(),
                KEY_DPS.to_owned(),
            ),
        ]),
        assigned: HashMap::new(),
    }
}

fn schedule(dir: &std::path::Path, rows: &[(&str, &str, u64)]) -> std::path::PathBuf {
    let p = dir.join("schedule.csv");
    let mut text = String::from("registration_id,from_hub,to_hub,wave,not_before_s\n");
    for (id, from, at) in rows {
        text.push_str(&format!("{id},{from},new.azure-devices.net,{},{at}\n", at / 60 + 1));
    }
    std::fs::write(&p, text).expect("schedule");
    p
}

fn rollout(standin: &StandIn, args: &[&str], hubs: &[String]) -> (Option<i32>, String, String, f64) {
    let started = standin.elapsed();
    let out = Command::new(BIN)
        .arg("rollout")
        .args(args)
        .env("DPS_ALLOCATOR_IOTHUB_ENDPOINT", format!("http://{}", standin.addr))
        .env("DPS_ALLOCATOR_HUB_CONNECTION_STRINGS", hubs.join("\n"))
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started,
    )
}

fn calls_for<'a>(seen: &'a [Seen], id: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.id == id).collect()
}

#[test]
fn outcomes_rate_not_before_and_retries_follow_the_rules() {
    let s = StandIn::start(config());
    let dir = temp_dir("rollout");
    let mut rows = vec![
        ("offline-1", HUB_A, 0),
        ("ghost-1", HUB_A, 0),
        ("busy-1", HUB_A, 0),
        ("flaky-1", HUB_B, 0),
        ("broken-1", HUB_B, 0),
        ("bad-1", HUB_B, 0),
        ("ok-late", HUB_B, 3),
        ("ok-elsewhere", "hub-c.azure-devices.net", 0),
    ];
    let oks: Vec<String> = (0..12).map(|i| format!("ok-{i}")).collect();
    for id in &oks {
        rows.push((id.as_str(), HUB_A, 0));
    }
    let sched = schedule(&dir, &rows);
    let state = dir.join("state.jsonl");
    let (code, out, err, t0) = rollout(
        &s,
        &[
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--rate",
            "5",
            "--max-tries",
            "2",
            "--format",
            "json",
        ],
        &[conn(HUB_A, KEY_A), conn(HUB_B, KEY_B)],
    );
    assert_eq!(code, Some(1), "a failed device makes exit 1\n{out}\n{err}");
    let summary: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(summary["triggered"], 12 + 3, "{summary}"); // the oks, busy, flaky, ok-late
    assert_eq!(summary["offline"], 1);
    assert_eq!(summary["not_found"], 1);
    assert_eq!(summary["failed"], 2, "broken after 2 tries, bad at once");
    assert_eq!(summary["skipped"], 1, "no connection string for hub-c");
    assert_eq!(summary["remaining"], 4, "offline, broken, bad, and the skipped one");
    let seen = s.seen();
    assert!(seen.iter().all(|c| c.status != 401), "every token verified");
    assert!(seen.iter().all(|c| c.host != "hub-c.azure-devices.net"));
    // Rate: at most 5 calls in any one-second window per hub (20 % tolerance).
    for hub in [HUB_A, HUB_B] {
        let times: Vec<f64> = seen.iter().filter(|c| c.host == hub).map(|c| c.at).collect();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < t + 1.0).count();
            assert!(in_window <= 6, "{hub}: {in_window} calls within a second of {t}");
        }
    }
    // Not before: ok-late no earlier than 3 s after the start.
    let late = calls_for(&seen, "ok-late");
    assert!(late[0].at - t0 >= 2.9, "ok-late at {} (start {t0})", late[0].at);
    // 429: the retry no sooner than Retry-After (2 s).
    let busy = calls_for(&seen, "busy-1");
    assert_eq!(busy.len(), 2);
    assert!(busy[1].at - busy[0].at >= 1.95, "{busy:?}");
    // 5xx: the first retry at least 5 s later; broken gives up after --max-tries.
    let flaky = calls_for(&seen, "flaky-1");
    assert_eq!(flaky.len(), 2);
    assert!(flaky[1].at - flaky[0].at >= 4.95, "{flaky:?}");
    assert_eq!(calls_for(&seen, "broken-1").len(), 2);
    assert_eq!(calls_for(&seen, "bad-1").len(), 1, "a 4xx is not retried");
    // The call itself: a direct method naming the destination.
    let body: Value = serde_json::from_str(&calls_for(&seen, "ok-0")[0].body).expect("json");
    assert_eq!(body["methodName"], "reprovision");
    assert_eq!(body["payload"]["toHub"], "new.azure-devices.net");
    // No secret in any output.
    for secret in [KEY_A, KEY_B] {
        assert!(!out.contains(secret) && !err.contains(secret), "a key was printed");
    }
    assert!(!err.contains("sig="), "a signature was printed: {err}");

    // A rerun retries offline and failed devices only.
    let before = s.seen().len();
    let (_, out, _, _) = rollout(
        &s,
        &[
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--rate",
            "50",
            "--max-tries",
            "1",
            "--format",
            "json",
        ],
        &[conn(HUB_A, KEY_A), conn(HUB_B, KEY_B)],
    );
    let again: Vec<String> = s.seen()[before..].iter().map(|c| c.id.clone()).collect();
    let mut sorted = again.clone();
    sorted.sort();
    assert_eq!(sorted, ["bad-1", "broken-1", "offline-1"], "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_kill_in_the_middle_and_a_rerun_trigger_every_device_once_but_for_the_call_in_flight() {
    let s = StandIn::start(config());
    let dir = temp_dir("rollout-kill");
    let ids: Vec<String> = (0..30).map(|i| format!("ok-{i:02}")).collect();
    let rows: Vec<(&str, &str, u64)> = ids.iter().map(|id| (id.as_str(), HUB_A, 0)).collect();
    let sched = schedule(&dir, &rows);
    let state = dir.join("state.jsonl");
    let args = [
        "rollout",
        "--schedule",
        sched.to_str().expect("utf-8"),
        "--state",
        state.to_str().expect("utf-8"),
        "--rate",
        "6",
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .env("DPS_ALLOCATOR_IOTHUB_ENDPOINT", format!("http://{}", s.addr))
        .env("DPS_ALLOCATOR_HUB_CONNECTION_STRINGS", conn(HUB_A, KEY_A))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_millis(2_500));
    let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
    let first_run = s.seen().len();
    assert!(first_run > 5 && first_run < 30, "{first_run} calls before the kill");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .args(["--format", "json"])
        .env("DPS_ALLOCATOR_IOTHUB_ENDPOINT", format!("http://{}", s.addr))
        .env("DPS_ALLOCATOR_HUB_CONNECTION_STRINGS", conn(HUB_A, KEY_A))
        .output()
        .expect("reruns");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["triggered"], 30);
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for c in s.seen() {
        *per.entry(c.id).or_default() += 1;
    }
    assert_eq!(per.len(), 30, "every device triggered");
    let twice = per.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= 1,
        "{twice} devices triggered twice: at most the one call in flight at the kill"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_hub_that_refuses_the_credentials_is_not_called_further() {
    let s = StandIn::start(config());
    let dir = temp_dir("rollout-401");
    let rows: Vec<(String, &str, u64)> = (0..20).map(|i| (format!("ok-{i}"), HUB_A, 0)).collect();
    let rows: Vec<(&str, &str, u64)> = rows.iter().map(|(id, h, t)| (id.as_str(), *h, *t)).collect();
    let sched = schedule(&dir, &rows);
    let state = dir.join("state.jsonl");
    let (code, _, err, _) = rollout(
        &s,
        &[
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--rate",
            "50",
        ],
        &[conn(HUB_A, KEY_B)],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("hub-a.azure-devices.net refused the credentials (401)"),
        "{err}"
    );
    assert_eq!(s.seen().len(), 1, "one refused call, then no more");
    assert!(!err.contains(KEY_B));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dry_run_prints_the_calls_and_makes_none() {
    let s = StandIn::start(config());
    let dir = temp_dir("rollout-dry");
    let sched = schedule(&dir, &[("ok-1", HUB_A, 0), ("ok-2", "hub-c.azure-devices.net", 60)]);
    let state = dir.join("state.jsonl");
    let (code, out, err, _) = rollout(
        &s,
        &[
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--state",
            state.to_str().expect("utf-8"),
            "--dry-run",
            "--trigger",
            "desired:ops.reprovision",
        ],
        &[conn(HUB_A, KEY_A)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("PATCH https://hub-a.azure-devices.net/twins/ok%2D1?api-version=2021-04-12"),
        "{out}"
    );
    assert!(
        out.contains("skip ok-2: no connection string for hub-c.azure-devices.net"),
        "{out}"
    );
    assert!(s.seen().is_empty(), "a dry run called the service");
    assert!(!state.exists(), "a dry run writes no state");
    assert!(!out.contains(KEY_A) && !err.contains(KEY_A));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_reports_where_each_device_landed() {
    let mut c = config();
    c.assigned = HashMap::from([
        ("ok-landed".to_owned(), "new.azure-devices.net".to_owned()),
        ("ok-pending".to_owned(), HUB_A.to_owned()),
        ("ok-elsewhere".to_owned(), "other.azure-devices.net".to_owned()),
    ]);
    let s = StandIn::start(c);
    let dir = temp_dir("verify");
    let sched = schedule(
        &dir,
        &[
            ("ok-landed", HUB_A, 0),
            ("ok-pending", HUB_A, 0),
            ("ok-elsewhere", HUB_A, 60),
            ("ok-unknown", HUB_A, 60),
        ],
    );
    let out_csv = dir.join("verify.csv");
    let out = Command::new(BIN)
        .args([
            "verify",
            "--schedule",
            sched.to_str().expect("utf-8"),
            "--format",
            "json",
            "--rate",
            "20",
            "--out",
        ])
        .arg(&out_csv)
        .env("DPS_ALLOCATOR_DPS_ENDPOINT", format!("http://{}", s.addr))
        .env(
            "DPS_ALLOCATOR_DPS_CONNECTION_STRING",
            conn("contoso-dps.azure-devices-provisioning.net", KEY_DPS),
        )
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            &report["landed"],
            &report["pending"],
            &report["elsewhere"],
            &report["unknown"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1), &Value::from(1)),
        "{report}"
    );
    assert_eq!(report["per_wave"]["2"]["unknown"], 1);
    let csv = std::fs::read_to_string(&out_csv).expect("out");
    assert!(csv.starts_with("registration_id,to_hub,assigned_hub,status,substatus,verdict\n"));
    assert!(
        csv.contains("ok-landed,new.azure-devices.net,new.azure-devices.net,assigned,reprovisionedToNewHub,landed"),
        "{csv}"
    );
    assert!(s.seen().iter().all(|c| c.method == "GET" && c.status != 401));
    let _ = std::fs::remove_dir_all(dir);
}
