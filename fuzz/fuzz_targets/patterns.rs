//! Extreme patterns in the policy compiler: a `glob` or `regex` condition built from the input, repeated
//! up to 200,000 characters, on any string fact. Compiling must never panic (globset once did on a glob of
//! 100,000 stars); a pattern over the limits is a located error; a policy that compiles must answer the
//! shipped fixtures' requests without a 5xx.
#![no_main]

mod common;

use dps_allocator::policy::{Source, compile};
use libfuzzer_sys::fuzz_target;

const FACTS: [&str; 4] = ["registration_id", "device_id", "enrollment_group", "current_hub"];

fuzz_target!(|data: &[u8]| {
    let [kind, fact, reps_hi, reps_lo, rest @ ..] = data else { return };
    let unit = String::from_utf8_lossy(rest);
    if unit.is_empty() {
        return;
    }
    let reps = usize::from(u16::from_be_bytes([*reps_hi, *reps_lo]));
    let pattern: String = unit.repeat(reps.max(1)).chars().take(200_000).collect();
    let op = if kind & 1 == 0 { "glob" } else { "regex" };
    let value = toml_string(&pattern);
    let fact = FACTS[usize::from(*fact) % FACTS.len()];
    let text = format!("[[rule]]\nname = \"p\"\nwhen = {{ {fact} = {{ {op} = {value} }} }}\n[[rule]]\nname = \"rest\"\n");
    match compile(vec![Source::new("fuzz/p.toml", text)]) {
        Ok(rev) => {
            let body = br#"{"enrollmentGroup":{"enrollmentGroupId":"g-1"},"deviceRuntimeContext":{"registrationId":"dev-1","currentIotHubHostName":"a.azure-devices.net"},"linkedHubs":["a.azure-devices.net","b.azure-devices.net"]}"#;
            common::check(body, &rev, None);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result with no errors");
            for e in &errors.0 {
                let line = e.to_string();
                assert!(line.len() < 4_096, "an error line of {} bytes", line.len());
            }
        }
    }
});

/// A TOML basic string holding `s` exactly.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
