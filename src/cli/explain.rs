//! `explain`: decide one AllocationRequest offline and print every step: the tenant, each rule tried and
//! the condition that failed, each linked hub and why it was or was not a candidate, scores, the answer.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;

use clap::Args;

use super::{PolicySource, Status};
use crate::answer::{self, ExplainReport};

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy directory [default: ./policies, else the embedded default].
    #[arg(long, env = "DPS_ALLOCATOR_POLICIES")]
    pub policies: Option<PathBuf>,
    /// GeoIP database.
    #[command(flatten)]
    pub geoip: super::GeoIpArg,
    /// Print the JSON document `/api/explain` serves instead of text.
    #[arg(long)]
    pub json: bool,
    /// AllocationRequest JSON file (or a fixture file: its `request` is used), or `-` for standard input.
    pub file: PathBuf,
}

/// Runs `explain`.
pub fn run(args: ExplainArgs) -> Status {
    let geoip = match args.geoip.open() {
        Ok(db) => db,
        Err(status) => return status,
    };
    let source = PolicySource::resolve(args.policies);
    if let Err(e) = source.check_exists() {
        eprintln!("error: {e}");
        return Status::Error;
    }
    let rev = match source.load() {
        Ok(r) => r,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("error: the policy in {} does not load", source.describe());
            return Status::Failed;
        }
    };
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.file)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Status::Error;
        }
    };
    let body = fixture_request(&body).unwrap_or(body);
    let (answer, trace) = answer::explain(&body, &rev, geoip.as_ref());
    let report = ExplainReport::new(&answer, &trace, &rev);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return Status::Error;
            }
        }
    } else {
        print!("{}", render_text(&report, &source.describe()));
    }
    Status::Ok
}

/// A fixture file (`{"description", "request", "expect"}`) explains its request.
fn fixture_request(body: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    if obj.contains_key("expect") {
        serde_json::to_vec(obj.get("request")?).ok()
    } else {
        None
    }
}

/// The human-readable form of an explain report.
pub fn render_text(r: &ExplainReport<'_>, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "policy    {source} (revision {})", r.decision.revision);
    let _ = writeln!(out, "tenant    {}", r.trace.tenant.as_deref().unwrap_or("(none)"));
    let _ = writeln!(out, "rules");
    for rule in &r.trace.rules {
        match &rule.failed {
            None => {
                let _ = writeln!(out, "  + {:<24} matched            {}", rule.rule, rule.at);
            }
            Some(cond) => {
                let _ = writeln!(out, "  - {:<24} no: {cond}    {}", rule.rule, rule.at);
            }
        }
    }
    if let Some(p) = &r.trace.place {
        let mut facts = Vec::new();
        for (name, code, source) in [
            ("country", &p.country, p.country_source),
            ("continent", &p.continent, p.continent_source),
        ] {
            match (code, source) {
                (Some(c), Some(s)) => facts.push(format!("{name} {c} ({})", s.as_str())),
                _ => facts.push(format!("{name} unknown")),
            }
        }
        match (p.location.source, p.location.lat, p.location.lon) {
            (Some(src), Some(lat), Some(lon)) => facts.push(format!("at {lat:.4}, {lon:.4} ({})", src.as_str())),
            _ => facts.push("coordinates unknown".to_owned()),
        }
        let _ = writeln!(out, "place     {}", facts.join(", "));
        if !p.within.is_empty() {
            let _ = writeln!(out, "  within {}", p.within.join(", "));
        }
    }
    if let Some(d) = &r.trace.default_rule {
        let _ = writeln!(out, "  = {d:<24} default_rule (no rule matched)");
    }
    if !r.trace.candidates.is_empty() {
        let _ = writeln!(out, "linked hubs");
        for c in &r.trace.candidates {
            let mut line = format!(
                "  {:<48} {:<8} weight {:<4}",
                c.host,
                format!("{:?}", c.state).to_lowercase(),
                c.weight
            );
            if let Some(region) = c.region {
                let _ = write!(line, " {region:<18}");
            }
            match &c.excluded {
                Some(why) => {
                    let _ = write!(line, " excluded: {why}");
                }
                None => line.push_str(" candidate"),
            }
            if let Some(d) = c.distance_km {
                let _ = write!(line, "  {d:.0} km");
            }
            if let Some(s) = c.score {
                let _ = write!(line, "  score {s:.6}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    if let Some(l) = &r.trace.location {
        match (l.source, l.lat, l.lon) {
            (Some(src), Some(lat), Some(lon)) => {
                let acc = l.accuracy_km.map(|a| format!(", accuracy {a} km")).unwrap_or_default();
                let _ = writeln!(out, "location  {lat:.4}, {lon:.4} (from {}{acc})", src.as_str());
            }
            _ => {
                let _ = writeln!(out, "location  unknown");
            }
        }
        for miss in &l.misses {
            let _ = writeln!(out, "  skipped: {miss}");
        }
    }
    let d = &r.decision;
    let _ = writeln!(
        out,
        "decision  {} {} (rule {}, strategy {}, sticky {})",
        r.status,
        r.hub.unwrap_or("-"),
        d.rule.as_deref().unwrap_or("-"),
        d.strategy.unwrap_or("-"),
        d.sticky
    );
    for reason in &d.reasons {
        let _ = writeln!(out, "  because {reason}");
    }
    let _ = writeln!(out, "response");
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&r.response).unwrap_or_default());
    out
}
