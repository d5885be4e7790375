//! `check` (validate a policy directory) and `test` (run its fixtures through the answer path the server
//! uses).

use std::path::Path;

use super::Status;
use crate::answer;
use crate::fixtures::{self, Observed};
use crate::geo::GeoIp;
use crate::policy::{self, Revision};

/// `dps-allocator check DIR`.
pub fn check(dir: &Path) -> Status {
    match policy::load_dir(dir) {
        Ok(rev) => {
            println!("{}", describe(&rev, dir));
            Status::Ok
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            let n = errors.0.len();
            eprintln!(
                "error: {n} problem{} in {}",
                if n == 1 { "" } else { "s" },
                dir.display()
            );
            Status::Failed
        }
    }
}

fn describe(rev: &Revision, dir: &Path) -> String {
    let mut out = format!(
        "ok: {}: revision {}: {} hub(s), {} tenant(s), {} rule(s)",
        dir.display(),
        rev.id,
        rev.hubs.len(),
        rev.tenants.len(),
        rev.rules.len()
    );
    if !rev.fences.is_empty() {
        out.push_str(&format!(", {} fence(s)", rev.fences.len()));
    }
    for f in &rev.fences {
        out.push_str(&format!(
            "\n  fence {}: {} polygon(s), {} vertices",
            f.name, f.polygons, f.vertices
        ));
    }
    out
}

/// `dps-allocator test DIR [--geoip FILE]`.
pub fn test(dir: &Path, geoip: Option<&GeoIp>) -> Status {
    let rev = match policy::load_dir(dir) {
        Ok(rev) => rev,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("error: the policy in {} does not load", dir.display());
            return Status::Failed;
        }
    };
    let (cases, broken) = match fixtures::load(&dir.join("tests")) {
        Ok(l) => (l.fixtures, l.broken),
        Err(e) => {
            eprintln!("error: {e}");
            return Status::Error;
        }
    };
    if cases.is_empty() && broken.is_empty() {
        eprintln!("error: no fixtures in {}", dir.join("tests").display());
        return Status::Failed;
    }
    // A fixture that does not read fails alone; the others still run.
    for e in &broken {
        println!("FAIL  {e}");
    }
    let mut failed = broken.len();
    for case in &cases {
        let got = run_case(&rev, geoip, &case.body());
        let diffs = case.check(&got);
        if diffs.is_empty() {
            println!("ok    {}: {}", case.name(), case.description);
        } else {
            failed += 1;
            println!("FAIL  {}: {}", case.name(), case.description);
            for d in diffs {
                println!("  {d}");
            }
        }
    }
    println!(
        "{} passed, {failed} failed (revision {})",
        cases.len() + broken.len() - failed,
        rev.id
    );
    if failed == 0 { Status::Ok } else { Status::Failed }
}

/// Runs one request body through the server's answer path and observes it as a client would.
pub fn run_case(rev: &Revision, geoip: Option<&GeoIp>, body: &[u8]) -> Observed {
    Observed::from_answer(&answer::allocate(body, rev, geoip))
}
