//! The policy compiler: any bytes as a policy directory (files separated by a line `%%%`). It must never
//! panic; every error must render; a revision that compiles must answer the fixture requests of the
//! shipped policy without a 5xx and with a hub from linkedHubs.
#![no_main]

mod common;

use std::sync::LazyLock;

use dps_allocator::policy::{Source, compile};
use libfuzzer_sys::fuzz_target;

/// Request bodies from policies/tests/*.json.
static REQUESTS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut out = Vec::new();
    let dir = common::repo().join("policies/tests");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("policies/tests")
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).expect("fixture");
        let cases: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        let cases = match cases {
            serde_json::Value::Array(list) => list,
            one => vec![one],
        };
        for case in &cases {
            out.push(serde_json::to_vec(&case["request"]).expect("request"));
        }
    }
    out
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let sources: Vec<Source> = text
        .split("\n%%%\n")
        .take(8)
        .enumerate()
        .map(|(i, t)| Source::new(format!("fuzz/{i:02}.toml"), t))
        .collect();
    match compile(sources) {
        Ok(rev) => {
            for body in REQUESTS.iter() {
                common::check(body, &rev, None);
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result with no errors");
            for e in &errors.0 {
                let _ = e.to_string();
            }
        }
    }
});
