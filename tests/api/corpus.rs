//! The bad-input corpus: requests and policy directories built to break the service, each with the status
//! and error code (or the policy error) it must get. `bad_input.rs` sends the requests to the app
//! in-process; the live test here sends them over a socket to the real binary, then churns its policy
//! directory through every bad policy, and checks after each case that good requests are still answered
//! by the last good revision.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::repo;
use crate::live::{Server, exchange, get, post, temp_dir};

/// A request that must get `status`; for an error, `code` and a message containing `needle`.
pub struct Case {
    pub what: &'static str,
    pub body: Vec<u8>,
    pub status: u16,
    pub code: &'static str,
    pub needle: &'static str,
}

/// A request the shipped policy answers 200.
pub const GOOD: &str = r#"{"enrollmentGroup":{"enrollmentGroupId":"fabrikam-x"},"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":["fabrikam-weu-1.azure-devices.net"]}"#;

const HUBS: &str = r#""linkedHubs":["fabrikam-weu-1.azure-devices.net","fabrikam-neu-1.azure-devices.net"]"#;
const CTX: &str = r#""deviceRuntimeContext":{"registrationId":"d"}"#;
const GROUP: &str = r#""enrollmentGroup":{}"#;

fn obj(parts: &[&str]) -> Vec<u8> {
    format!("{{{}}}", parts.join(",")).into_bytes()
}

fn ctx(inner: &str) -> String {
    format!(r#""deviceRuntimeContext":{{{inner}}}"#)
}

fn group(inner: &str) -> String {
    format!(r#""enrollmentGroup":{{{inner}}}"#)
}

fn case(what: &'static str, body: Vec<u8>, status: u16, code: &'static str, needle: &'static str) -> Case {
    Case {
        what,
        body,
        status,
        code,
        needle,
    }
}

fn bad(what: &'static str, body: Vec<u8>, needle: &'static str) -> Case {
    case(what, body, 400, "bad_request", needle)
}

/// The request corpus.
pub fn requests() -> Vec<Case> {
    let fabrikam = r#""enrollmentGroup":{"enrollmentGroupId":"fabrikam-sensors"}"#;
    let gateway = r#""enrollmentGroup":{"enrollmentGroupId":"fabrikam-gw","capabilities":{"iotEdge":true}}"#;
    let long_id = "a".repeat(129);
    let huge_id = "a".repeat(100_000);
    let many_hubs: Vec<String> = (0..257).map(|i| format!("\"h{i}.azure-devices.net\"")).collect();
    let long_host = format!("{}.azure-devices.net", "h".repeat(240));
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let zeros = vec!["0"; 60_000].join(",");
    vec![
        // Not JSON, or not a JSON object.
        bad("empty body", b"".to_vec(), "not valid JSON"),
        bad("whitespace only", b"  \n\t".to_vec(), "not valid JSON"),
        bad("truncated JSON", GOOD.as_bytes()[..40].to_vec(), "not valid JSON"),
        bad("trailing garbage", format!("{GOOD}x").into_bytes(), "not valid JSON"),
        bad("two documents", format!("{GOOD}{GOOD}").into_bytes(), "not valid JSON"),
        bad(
            "invalid UTF-8 in a string",
            b"{\"deviceRuntimeContext\":{\"registrationId\":\"\xc3\x28\"}}".to_vec(),
            "JSON",
        ),
        bad(
            "invalid UTF-8 outside strings",
            b"{\xff\xfe}".to_vec(),
            "not valid JSON",
        ),
        bad(
            "UTF-8 byte order mark",
            [b"\xef\xbb\xbf".as_slice(), GOOD.as_bytes()].concat(),
            "not valid JSON",
        ),
        bad(
            "UTF-16 body",
            GOOD.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            "not valid JSON",
        ),
        bad(
            "lone surrogate escape",
            obj(&[&ctx(r#""registrationId":"\ud800""#), HUBS, GROUP]),
            "not valid JSON",
        ),
        bad(
            "raw control character in a string",
            obj(&[&ctx("\"registrationId\":\"a\nb\""), HUBS, GROUP]),
            "not valid JSON",
        ),
        bad(
            "number out of range",
            obj(&[&ctx(r#""registrationId":"d","payload":{"n":1e999}"#), HUBS, GROUP]),
            "not valid JSON",
        ),
        bad(
            "single quotes",
            b"{'deviceRuntimeContext':{}}".to_vec(),
            "not valid JSON",
        ),
        bad("top-level array", b"[1,2]".to_vec(), "JSON object"),
        bad("top-level string", b"\"hello\"".to_vec(), "JSON object"),
        bad("top-level number", b"42".to_vec(), "JSON object"),
        bad("top-level true", b"true".to_vec(), "JSON object"),
        bad("top-level null", b"null".to_vec(), "JSON object"),
        // Missing and empty fields.
        bad("empty object", b"{}".to_vec(), "deviceRuntimeContext"),
        bad("no registrationId", obj(&[&ctx(""), HUBS, GROUP]), "registrationId"),
        bad(
            "empty registrationId",
            obj(&[&ctx(r#""registrationId":"""#), HUBS, GROUP]),
            "must not be empty",
        ),
        bad("no linkedHubs", obj(&[CTX, GROUP]), "linkedHubs"),
        bad(
            "linkedHubs null",
            obj(&[CTX, r#""linkedHubs":null"#, GROUP]),
            "linkedHubs",
        ),
        bad(
            "empty linkedHubs",
            obj(&[CTX, r#""linkedHubs":[]"#, GROUP]),
            "must not be empty",
        ),
        bad(
            "linkedHubs with an empty host",
            obj(&[CTX, r#""linkedHubs":[""]"#, GROUP]),
            "empty host",
        ),
        bad("no enrollment", obj(&[CTX, HUBS]), "enrollmentGroup"),
        bad(
            "both enrollments",
            obj(&[CTX, HUBS, GROUP, r#""individualEnrollment":{}"#]),
            "not both",
        ),
        // Wrong types, field by field.
        bad(
            "deviceRuntimeContext a string",
            obj(&[r#""deviceRuntimeContext":"d""#, HUBS, GROUP]),
            "deviceRuntimeContext",
        ),
        bad(
            "registrationId a number",
            obj(&[&ctx(r#""registrationId":7"#), HUBS, GROUP]),
            "deviceRuntimeContext.registrationId",
        ),
        bad(
            "registrationId an object",
            obj(&[&ctx(r#""registrationId":{}"#), HUBS, GROUP]),
            "deviceRuntimeContext.registrationId",
        ),
        bad(
            "linkedHubs a string",
            obj(&[CTX, r#""linkedHubs":"h""#, GROUP]),
            "linkedHubs",
        ),
        bad(
            "linkedHubs of numbers",
            obj(&[CTX, r#""linkedHubs":[1]"#, GROUP]),
            "linkedHubs[0]",
        ),
        bad(
            "linkedHubs of objects",
            obj(&[CTX, r#""linkedHubs":[{"host":"h"}]"#, GROUP]),
            "linkedHubs[0]",
        ),
        bad(
            "enrollmentGroup a list",
            obj(&[CTX, HUBS, r#""enrollmentGroup":[]"#]),
            "enrollmentGroup",
        ),
        bad(
            "individualEnrollment a string",
            obj(&[CTX, HUBS, r#""individualEnrollment":"x""#]),
            "individualEnrollment",
        ),
        bad(
            "enrollmentGroupId a number",
            obj(&[CTX, HUBS, &group(r#""enrollmentGroupId":5"#)]),
            "enrollmentGroupId",
        ),
        bad(
            "capabilities a string",
            obj(&[CTX, HUBS, &group(r#""capabilities":"edge""#)]),
            "capabilities",
        ),
        bad(
            "iotEdge a string",
            obj(&[CTX, HUBS, &group(r#""capabilities":{"iotEdge":"yes"}"#)]),
            "iotEdge",
        ),
        bad(
            "reprovisionPolicy a list",
            obj(&[CTX, HUBS, &group(r#""reprovisionPolicy":[]"#)]),
            "reprovisionPolicy",
        ),
        bad(
            "updateHubAssignment a number",
            obj(&[CTX, HUBS, &group(r#""reprovisionPolicy":{"updateHubAssignment":1}"#)]),
            "updateHubAssignment",
        ),
        bad(
            "attestation type a number",
            obj(&[CTX, HUBS, &group(r#""attestation":{"type":3}"#)]),
            "attestation",
        ),
        bad(
            "payload an array",
            obj(&[&ctx(r#""registrationId":"d","payload":[1]"#), HUBS, GROUP]),
            "payload",
        ),
        bad(
            "payload a string",
            obj(&[&ctx(r#""registrationId":"d","payload":"p""#), HUBS, GROUP]),
            "payload",
        ),
        bad(
            "currentIotHubHostName a number",
            obj(&[&ctx(r#""registrationId":"d","currentIotHubHostName":3"#), HUBS, GROUP]),
            "currentIotHubHostName",
        ),
        bad(
            "currentDeviceId a list",
            obj(&[&ctx(r#""registrationId":"d","currentDeviceId":[]"#), HUBS, GROUP]),
            "currentDeviceId",
        ),
        bad(
            "two attestations",
            obj(&[&ctx(r#""registrationId":"d","tpm":{},"x509":{}"#), HUBS, GROUP]),
            "at most one",
        ),
        bad(
            "duplicate key",
            obj(&[&ctx(r#""registrationId":"d","registrationId":"e""#), HUBS, GROUP]),
            "duplicate field",
        ),
        bad(
            "duplicate top-level key",
            obj(&[CTX, HUBS, HUBS, GROUP]),
            "duplicate field",
        ),
        // Values DPS never sends.
        bad(
            "registrationId over 128 characters",
            obj(&[&ctx(&format!(r#""registrationId":"{long_id}""#)), HUBS, GROUP]),
            "128 characters",
        ),
        bad(
            "huge registrationId (100,000 characters)",
            obj(&[&ctx(&format!(r#""registrationId":"{huge_id}""#)), HUBS, GROUP]),
            "128 characters",
        ),
        bad(
            "registrationId with a path",
            obj(&[&ctx(r#""registrationId":"../../etc/passwd""#), HUBS, GROUP]),
            "letters, digits",
        ),
        bad(
            "registrationId with a newline (log injection)",
            obj(&[&ctx(r#""registrationId":"d\n{\"level\":\"ERROR\"}""#), HUBS, GROUP]),
            "letters, digits",
        ),
        bad(
            "registrationId with a NUL",
            obj(&[&ctx(r#""registrationId":"d\u0000""#), HUBS, GROUP]),
            "letters, digits",
        ),
        bad(
            "registrationId with a template",
            obj(&[&ctx(r#""registrationId":"${revision}""#), HUBS, GROUP]),
            "letters, digits",
        ),
        bad(
            "huge linkedHubs (257 hosts)",
            obj(&[CTX, &format!(r#""linkedHubs":[{}]"#, many_hubs.join(",")), GROUP]),
            "more than 256",
        ),
        bad(
            "linked host over 253 characters",
            obj(&[CTX, &format!(r#""linkedHubs":["{long_host}"]"#), GROUP]),
            "253 characters",
        ),
        bad(
            "deep nesting (200 levels)",
            obj(&[
                &ctx(&format!(r#""registrationId":"d","payload":{{"a":{}}}"#, deep(200))),
                HUBS,
                GROUP,
            ]),
            "recursion limit",
        ),
        bad(
            "deep nesting (60,000 levels)",
            obj(&[
                &ctx(&format!(r#""registrationId":"d","payload":{{"a":{}}}"#, deep(60_000))),
                HUBS,
                GROUP,
            ]),
            "recursion limit",
        ),
        case(
            "oversized body (200 KiB)",
            vec![b' '; 200 * 1024],
            413,
            "payload_too_large",
            "131072",
        ),
        // Hostile payloads against the shipped templates: bounded output, never a 5xx.
        case(
            "payload that renders a payload over 32 KiB",
            obj(&[
                &ctx(&format!(
                    r#""registrationId":"d","payload":{{"model":"{}"}}"#,
                    "m".repeat(40_000)
                )),
                HUBS,
                fabrikam,
            ]),
            422,
            "twin_too_large",
            "over the limit",
        ),
        case(
            "payload that renders twin tags over 8 KiB",
            obj(&[
                &ctx(&format!(
                    r#""registrationId":"gw","x509":{{}},"payload":{{"certificateName":"{}"}}"#,
                    "c".repeat(9_000)
                )),
                r#""linkedHubs":["fabrikam-gateways-weu.azure-devices.net"]"#,
                gateway,
            ]),
            422,
            "twin_too_large",
            "twin tags",
        ),
        case(
            "payload with template syntax is copied, not expanded",
            obj(&[
                &ctx(r#""registrationId":"d","payload":{"model":"${revision}$${hub}"}"#),
                HUBS,
                fabrikam,
            ]),
            200,
            "",
            "",
        ),
        // Found by the fuzzer: members the parser skips are not decoded, so an escape serde_json::Value
        // would refuse is accepted there, as any unknown member is.
        case(
            "lone surrogate escape in an unknown member",
            obj(&[CTX, HUBS, GROUP, r#""note":"\ud800""#]),
            200,
            "",
            "",
        ),
        case(
            "huge array in the payload (60,000 numbers)",
            obj(&[
                &ctx(&format!(r#""registrationId":"d","payload":{{"a":[{zeros}]}}"#)),
                HUBS,
                GROUP,
            ]),
            200,
            "",
            "",
        ),
    ]
}

/// What a policy file of a bad-policy case holds.
pub enum Content {
    Text(String),
    Bytes(Vec<u8>),
    /// A symbolic link to this target (relative to the directory).
    Link(&'static str),
}

/// A policy directory (the shipped one plus `files`) that must fail to load with an error containing
/// every `needle` (a location is written `file:line:col`).
pub struct PolicyCase {
    pub what: &'static str,
    pub files: Vec<(&'static str, Content)>,
    pub needles: Vec<&'static str>,
}

fn policy(what: &'static str, name: &'static str, text: impl Into<String>, needles: &[&'static str]) -> PolicyCase {
    file(what, name, Content::Text(text.into()), needles)
}

fn file(what: &'static str, name: &'static str, content: Content, needles: &[&'static str]) -> PolicyCase {
    PolicyCase {
        what,
        files: vec![(name, content)],
        needles: needles.to_vec(),
    }
}

/// The shipped settings file with a default rule that does not exist.
fn missing_default_rule() -> PolicyCase {
    let settings = std::fs::read_to_string(repo().join("policies/00-settings.toml")).expect("settings");
    let text = settings.replace("default_rule = \"spread\"", "default_rule = \"no-such-rule\"");
    assert_ne!(text, settings, "the shipped settings name a default rule");
    policy(
        "default_rule naming no rule",
        "00-settings.toml",
        text,
        &["00-settings.toml:", "no-such-rule"],
    )
}

/// The bad-policy corpus.
pub fn policies() -> Vec<PolicyCase> {
    let rule = |body: &str| format!("[[rule]]\nname = \"corpus\"\n{body}\n");
    vec![
        policy(
            "TOML syntax error",
            "25-corpus.toml",
            "[[rule]\nname = \"x\"\n",
            &["25-corpus.toml:1:"],
        ),
        policy(
            "duplicate TOML key",
            "25-corpus.toml",
            rule("strategy = \"static\"\nstrategy = \"weighted-hash\""),
            &["25-corpus.toml:4:", "duplicate key"],
        ),
        policy(
            "unknown variable in a template",
            "25-corpus.toml",
            rule("twin.tags = { a = \"${secret}\" }"),
            &["25-corpus.toml:3:", "secret"],
        ),
        policy(
            "unterminated template",
            "25-corpus.toml",
            rule("payload = { a = \"${hub\" }"),
            &["25-corpus.toml:3:"],
        ),
        policy(
            "template of a nested table 64 deep",
            "25-corpus.toml",
            rule(&format!(
                "payload = {{ a = {}\"${{hub}}\"{} }}",
                "{ b = ".repeat(64),
                " }".repeat(64)
            )),
            &["25-corpus.toml:"],
        ),
        policy(
            "TOML nested 100,000 deep",
            "25-corpus.toml",
            format!("a = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            &["25-corpus.toml:1:"],
        ),
        policy(
            "regex over the size limit",
            "25-corpus.toml",
            rule(r#"when = { registration_id = { regex = "(\\w{100}){100}" } }"#),
            &["25-corpus.toml:3:", "regex"],
        ),
        policy(
            "invalid regex",
            "25-corpus.toml",
            rule(r#"when = { registration_id = { regex = "(a" } }"#),
            &["25-corpus.toml:3:", "regex"],
        ),
        policy(
            "rule naming an unknown hub tag value type",
            "25-corpus.toml",
            rule("hubs = 5"),
            &["25-corpus.toml:3:"],
        ),
        policy(
            "hub weight negative",
            "15-corpus.toml",
            "[[hub]]\nhost = \"neg.azure-devices.net\"\nweight = -1\n",
            &["15-corpus.toml:3:"],
        ),
        policy(
            "duplicate hub",
            "15-corpus.toml",
            "[[hub]]\nhost = \"fabrikam-weu-1.azure-devices.net\"\n",
            &["15-corpus.toml:", "fabrikam-weu-1"],
        ),
        policy(
            "second [settings]",
            "05-corpus.toml",
            "[settings]\nhash_seed = \"x\"\n",
            &["05-corpus.toml:", "settings"],
        ),
        missing_default_rule(),
        file(
            "invalid UTF-8 in a policy file",
            "25-corpus.toml",
            Content::Bytes(b"# caf\xe9\n".to_vec()),
            &["25-corpus.toml", "UTF-8"],
        ),
        file(
            "symlink loop",
            "25-loop.toml",
            Content::Link("25-loop.toml"),
            &["25-loop.toml"],
        ),
        file(
            "symlink to a directory loop",
            "25-dir.toml",
            Content::Link("."),
            &["25-dir.toml", "not a regular file"],
        ),
        file(
            "dangling symlink",
            "25-gone.toml",
            Content::Link("does-not-exist.toml"),
            &["25-gone.toml"],
        ),
    ]
}

/// Writes the shipped policy plus a case's files into `dir` (emptied first).
pub fn write_policy_dir(dir: &Path, files: &[(&'static str, Content)]) {
    // Emptied file by file: the watcher watches the directory itself, which must stay.
    std::fs::create_dir_all(dir).expect("dir");
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        std::fs::remove_file(entry.path()).expect("remove");
    }
    for entry in std::fs::read_dir(repo().join("policies")).expect("policies").flatten() {
        if entry.path().extension().is_some_and(|e| e == "toml") {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
    }
    for (name, content) in files {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        match content {
            Content::Text(t) => std::fs::write(&path, t).expect("write"),
            Content::Bytes(b) => std::fs::write(&path, b).expect("write"),
            Content::Link(target) => std::os::unix::fs::symlink(target, &path).expect("symlink"),
        }
    }
}

#[test]
fn the_corpus_is_at_least_forty_cases_with_distinct_names() {
    let mut names: Vec<&str> = requests().iter().map(|c| c.what).collect();
    names.extend(policies().iter().map(|c| c.what));
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "case names are distinct");
    assert!(n >= 40, "{n} cases");
}

#[test]
fn every_bad_policy_fails_to_load_with_its_location_and_reason() {
    let dir = temp_dir("corpus-check");
    for case in policies() {
        write_policy_dir(&dir, &case.files);
        let started = Instant::now();
        let errors = match dps_allocator::policy::load_dir(&dir) {
            Ok(_) => panic!("{}: loaded", case.what),
            Err(e) => e.to_string(),
        };
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}: took {:?}",
            case.what,
            started.elapsed()
        );
        for needle in &case.needles {
            assert!(errors.contains(needle), "{}: {needle:?} not in:\n{errors}", case.what);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_regex_built_to_be_slow_answers_in_linear_time() {
    // `(a+)+$` backtracks exponentially in engines that backtrack; Rust's regex does not.
    let dir = temp_dir("corpus-slow-regex");
    let rule = "[[rule]]\nname = \"slow\"\nwhen = { registration_id = { regex = \"^(a+)+$\" } }\nstrategy = \"weighted-hash\"\n";
    write_policy_dir(&dir, &[("25-corpus.toml", Content::Text(rule.to_owned()))]);
    let rev = crate::helpers::load(&dir);
    let id = format!("{}-", "a".repeat(127));
    let body = obj(&[&ctx(&format!(r#""registrationId":"{id}""#)), HUBS, GROUP]);
    let started = Instant::now();
    for _ in 0..1000 {
        let a = dps_allocator::answer::allocate(&body, &rev, None);
        assert_eq!(a.status, 200);
        assert_ne!(a.summary.as_ref().and_then(|s| s.rule.as_deref()), Some("slow"));
    }
    // A thousand adversarial matches take microseconds each; a backtracking engine would not finish.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

fn raw_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn revision(server: &Server) -> String {
    let status: Value = serde_json::from_str(&get(server.addr, "/status").body).expect("status JSON");
    status["policy"]["revision"].as_str().unwrap_or_default().to_owned()
}

fn good_answer(server: &Server, revision: &str, after: &str) {
    let r = post(server.addr, "/api/allocate", GOOD, "");
    assert_eq!(r.status, 200, "after {after}: {}", r.body);
    let header = r.header("x-dps-allocator-decision").unwrap_or_default();
    assert!(
        header.ends_with(&format!("revision={revision}")),
        "after {after}: {header}"
    );
}

#[test]
fn the_real_server_answers_every_bad_input_and_keeps_serving_its_last_good_revision() {
    let dir = temp_dir("corpus-live");
    write_policy_dir(&dir, &[]);
    let server = Server::start(&["--policies", dir.to_str().expect("utf-8 path")], &[]);
    let good = revision(&server);
    assert!(!good.is_empty());

    for c in requests() {
        let r = exchange(server.addr, &raw_post("/api/allocate", &c.body));
        assert_eq!(r.status, c.status, "{}: {}", c.what, r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{}", c.what);
        if c.status != 200 {
            let doc: Value = serde_json::from_str(&r.body).expect("JSON error");
            assert_eq!(doc["error"]["code"], c.code, "{}", c.what);
        }
        good_answer(&server, &good, c.what);
    }

    // Wire-level abuse the in-process app cannot see.
    let chunked = {
        let mut req =
            b"POST /api/allocate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        for _ in 0..20 {
            req.extend_from_slice(format!("{:x}\r\n{}\r\n", 10_000, " ".repeat(10_000)).as_bytes());
        }
        req.extend_from_slice(b"0\r\n\r\n");
        req
    };
    let wire: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversized chunked body", chunked, 413),
        (
            "declared length over the limit",
            b"POST /api/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{}"
                .to_vec(),
            413,
        ),
        (
            "GET on the allocate route",
            b"GET /api/allocate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        ("unknown path", raw_post("/api/nothing", GOOD.as_bytes()), 404),
        ("malformed request line", b"POST\r\n\r\n".to_vec(), 400),
    ];
    for (what, req, status) in wire {
        let r = exchange(server.addr, &req);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        good_answer(&server, &good, what);
    }

    // Every bad policy revision is refused; the good one keeps serving.
    for case in policies() {
        let before = attempts(&server);
        write_policy_dir(&dir, &case.files);
        let deadline = Instant::now() + Duration::from_secs(15);
        while attempts(&server) == before {
            assert!(Instant::now() < deadline, "{}: no reload attempt", case.what);
            std::thread::sleep(Duration::from_millis(50));
        }
        let status: Value = serde_json::from_str(&get(server.addr, "/status").body).expect("status");
        let errors = status["policy"]["last_failure"]["errors"].to_string();
        assert!(
            errors.contains(case.needles.first().copied().unwrap_or("")),
            "{}: {errors}",
            case.what
        );
        good_answer(&server, &good, case.what);
    }
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The number of reload attempts so far (from /status).
fn attempts(server: &Server) -> String {
    let status: Value = serde_json::from_str(&get(server.addr, "/status").body).expect("status");
    status["policy"]["last_attempt"]["at_unix"].to_string()
}
