//! `rollout` (trigger the scheduled moves through IoT Hub) and `verify` (ask DPS where the devices landed):
//! the command lines, the HTTPS transport (awc with rustls and the system's roots), and the output. The
//! rules live in [`crate::rollout`].

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::{Format, Status};
use crate::rollout::{
    self, Call, Credentials, Entry, Landing, Reply, Settings, State, Summary, Transport, Trigger, Verdict,
};
use crate::simulate::report::group;

/// Arguments of `rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The schedule (`plan --schedule`): registration_id,from_hub,to_hub,wave,not_before_s[,device_id].
    #[arg(long, env = "DPS_ALLOCATOR_SCHEDULE")]
    pub schedule: PathBuf,
    /// The state file: progress, appended as it happens; a rerun with it resumes.
    #[arg(long, env = "DPS_ALLOCATOR_STATE")]
    pub state: PathBuf,
    /// A source hub's service connection string (repeatable; the environment variable holds one per line).
    #[arg(
        long = "hub-connection-string",
        env = "DPS_ALLOCATOR_HUB_CONNECTION_STRINGS",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    pub hubs: Vec<String>,
    /// How devices are told: `method:NAME` (a direct method) or `desired:PATH` (a desired property).
    #[arg(long, env = "DPS_ALLOCATOR_TRIGGER", default_value = "method:reprovision")]
    pub trigger: Trigger,
    /// Trigger calls per second per hub, at most (IoT Hub S1's jobs pace).
    #[arg(long, env = "DPS_ALLOCATOR_RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Tries before a device whose calls keep failing (5xx, no answer) is `failed`.
    #[arg(long, env = "DPS_ALLOCATOR_MAX_TRIES", default_value_t = 5)]
    pub max_tries: u32,
    /// Seconds one call may take, connect, head and body together (a trickled body is cut off).
    #[arg(long, env = "DPS_ALLOCATOR_CALL_TIMEOUT", default_value_t = rollout::DEFAULT_CALL_TIMEOUT_S)]
    pub call_timeout: u64,
    /// The longest wait a Retry-After may ask for, in seconds; a longer one waits this long and is
    /// reported.
    #[arg(long, env = "DPS_ALLOCATOR_MAX_RETRY_AFTER", default_value_t = rollout::DEFAULT_MAX_RETRY_AFTER_S)]
    pub max_retry_after: u64,
    /// Go on when the state file has corrupt lines (their devices are tried again); without it the run
    /// stops and names the lines.
    #[arg(long, env = "DPS_ALLOCATOR_ACCEPT_CORRUPT_STATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub accept_corrupt_state: bool,
    /// Print the calls that would be made; make none.
    #[arg(long, env = "DPS_ALLOCATOR_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, env = "DPS_ALLOCATOR_FORMAT", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The schedule (`plan --schedule`).
    #[arg(long, env = "DPS_ALLOCATOR_SCHEDULE")]
    pub schedule: PathBuf,
    /// The DPS service connection string (a policy with registration status read).
    #[arg(
        long = "dps-connection-string",
        env = "DPS_ALLOCATOR_DPS_CONNECTION_STRING",
        hide_env_values = true
    )]
    pub dps: String,
    /// Lookups per second, at most: they count against the DPS quota, so the default is low.
    #[arg(long, env = "DPS_ALLOCATOR_RATE", default_value_t = 2.0)]
    pub rate: f64,
    /// Seconds one lookup may take, connect, head and body together.
    #[arg(long, env = "DPS_ALLOCATOR_CALL_TIMEOUT", default_value_t = rollout::DEFAULT_CALL_TIMEOUT_S)]
    pub call_timeout: u64,
    /// The longest wait a Retry-After may ask for, in seconds; a longer one waits this long and is
    /// reported.
    #[arg(long, env = "DPS_ALLOCATOR_MAX_RETRY_AFTER", default_value_t = rollout::DEFAULT_MAX_RETRY_AFTER_S)]
    pub max_retry_after: u64,
    /// Output format.
    #[arg(long, env = "DPS_ALLOCATOR_FORMAT", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write `registration_id,to_hub,assigned_hub,status,substatus,verdict` for every device.
    #[arg(long, env = "DPS_ALLOCATOR_OUT")]
    pub out: Option<PathBuf>,
}

/// The HTTPS transport: one awc client and runtime per worker thread; `DPS_ALLOCATOR_IOTHUB_ENDPOINT` /
/// `DPS_ALLOCATOR_DPS_ENDPOINT` replace `https://{host}` (the tests' local stand-in). One deadline covers
/// a whole call (connect, head and body): a peer that never answers is no answer; one whose body is
/// trickled, too large or broken has still answered, and its status stands with whatever body was read.
struct Https {
    base: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    deadline: Duration,
}

thread_local! {
    static CLIENT: RefCell<Option<(actix_web::rt::Runtime, awc::Client)>> = const { RefCell::new(None) };
}

impl Https {
    fn new(base: Option<String>, deadline_s: u64) -> Result<Https, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        if deadline_s == 0 {
            return Err("--call-timeout must be at least 1 second".to_owned());
        }
        Ok(Https {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            tls: Arc::new(tls),
            // Bounded so that `Instant + deadline` cannot overflow.
            deadline: Duration::from_secs(deadline_s.min(86_400)),
        })
    }
}

impl Transport for Https {
    fn send(&self, call: &Call, authorization: &str) -> Result<Reply, String> {
        let url = match &self.base {
            Some(b) => format!("{b}{}", call.path),
            None => format!("https://{}{}", call.host, call.path),
        };
        CLIENT.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                let rt = actix_web::rt::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
                let client = awc::Client::builder()
                    .connector(awc::Connector::new().rustls_0_23(self.tls.clone()))
                    .timeout(self.deadline)
                    .disable_redirects()
                    .add_default_header(("User-Agent", concat!("dps-allocator/", env!("CARGO_PKG_VERSION"))))
                    .finish();
                *cell = Some((rt, client));
            }
            let Some((rt, client)) = cell.as_ref() else {
                return Err("no HTTP client".to_owned());
            };
            let method = awc::http::Method::from_bytes(call.method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = client
                .request(method, &url)
                .insert_header(("Authorization", authorization));
            for (k, v) in &call.headers {
                req = req.insert_header((*k, v.as_str()));
            }
            let deadline = tokio::time::Instant::now() + self.deadline;
            rt.block_on(async {
                let sent = match &call.body {
                    Some(b) => tokio::time::timeout_at(deadline, req.send_body(b.clone())).await,
                    None => tokio::time::timeout_at(deadline, req.send()).await,
                };
                let mut res = match sent {
                    Err(_) => return Err(format!("{}: no answer within {} s", call.host, self.deadline.as_secs())),
                    Ok(r) => r.map_err(|e| format!("{}: {e}", call.host))?,
                };
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| rollout::retry_after(v, std::time::SystemTime::now()));
                // The status has arrived: it decides. The body is read within what is left of the
                // deadline and up to the limit; one that is cut off, too large or broken reads as empty.
                let body = match tokio::time::timeout_at(deadline, res.body().limit(rollout::REPLY_BODY_LIMIT)).await {
                    Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                };
                Ok(Reply {
                    status: res.status().as_u16(),
                    retry_after,
                    body,
                })
            })
        })
    }
}

/// A schedule's rows, each device once; a warning counts the rows that listed a device again.
fn read_schedule(path: &std::path::Path) -> Result<Vec<Entry>, String> {
    let schedule = rollout::read_schedule(path)?;
    if schedule.duplicates > 0 {
        eprintln!(
            "warning: {}: {} row(s) listed a registration id already listed: each device is taken once, at its first row",
            path.display(),
            group(schedule.duplicates)
        );
    }
    Ok(schedule.entries)
}

/// Whether two paths name one existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Runs `rollout`.
pub fn run(args: RolloutArgs) -> Status {
    match execute(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            Status::Error
        }
    }
}

fn credentials(strings: &[String]) -> Result<Vec<Credentials>, String> {
    strings
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Credentials::parse(s))
        .collect()
}

fn execute(args: &RolloutArgs) -> Result<Status, String> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be above 0".to_owned());
    }
    let entries = read_schedule(&args.schedule)?;
    let hubs = credentials(&args.hubs)?;
    let settings = Settings {
        rate_per_s: args.rate,
        max_tries: args.max_tries.max(1),
        max_retry_after: Duration::from_secs(args.max_retry_after),
        ..Settings::default()
    };
    if args.dry_run {
        let mut out = String::new();
        for e in &entries {
            let c = rollout::trigger_call(e, &args.trigger, &settings);
            match hubs.iter().any(|h| h.host == e.from_hub) {
                true => {
                    let _ = writeln!(
                        out,
                        "{:>6}s  {} https://{}{}  {}",
                        e.not_before_s,
                        c.method,
                        c.host,
                        c.path,
                        c.body.unwrap_or_default()
                    );
                }
                false => {
                    let _ = writeln!(
                        out,
                        "{:>6}s  skip {}: no connection string for {}",
                        e.not_before_s, e.registration_id, e.from_hub
                    );
                }
            }
        }
        print!("{out}");
        eprintln!("dry run: {} calls printed, none made", entries.len());
        return Ok(Status::Ok);
    }
    let transport = Https::new(std::env::var("DPS_ALLOCATOR_IOTHUB_ENDPOINT").ok(), args.call_timeout)?;
    if same_file(&args.state, &args.schedule) {
        return Err(format!(
            "--state {} is the schedule itself: give the state its own file",
            args.state.display()
        ));
    }
    let (mut state, notes) = State::open(&args.state, args.accept_corrupt_state)?;
    for note in State::describe(&notes, &args.state) {
        eprintln!("warning: {note}");
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = |done: u64, total: u64| {
        if terminal && (done.is_multiple_of(100) || done == total) {
            eprint!("\r{} of {} devices done", group(done), group(total));
        }
    };
    let summary = rollout::rollout(
        &entries,
        &hubs,
        &args.trigger,
        &settings,
        &mut state,
        &transport,
        &progress,
    )?;
    if terminal {
        eprintln!();
    }
    for why in &summary.stopped {
        eprintln!("error: {why}");
    }
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    print!("{}", render(&summary, args.format));
    Ok(if summary.failed == 0 && summary.stopped.is_empty() {
        Status::Ok
    } else {
        Status::Failed
    })
}

fn render(s: &Summary, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(s).unwrap_or_default() + "\n",
        Format::Table => format!(
            "triggered {}\noffline   {}\nfailed    {}\nnot_found {}\nskipped   {}\nremaining {} (offline, failed, skipped: rerun with the same --state)\n",
            group(s.triggered),
            group(s.offline),
            group(s.failed),
            group(s.not_found),
            group(s.skipped),
            group(s.remaining)
        ),
    }
}

/// Totals of a verification.
#[derive(Debug, Serialize)]
struct Report<'a> {
    landed: u64,
    pending: u64,
    elsewhere: u64,
    unknown: u64,
    per_wave: std::collections::BTreeMap<u32, std::collections::BTreeMap<&'a str, u64>>,
    per_hub: std::collections::BTreeMap<&'a str, std::collections::BTreeMap<&'a str, u64>>,
}

/// Runs `verify`.
pub fn verify(args: VerifyArgs) -> Status {
    match verify_execute(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            Status::Error
        }
    }
}

fn verify_execute(args: &VerifyArgs) -> Result<Status, String> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be above 0".to_owned());
    }
    let entries = read_schedule(&args.schedule)?;
    let dps = Credentials::parse(&args.dps)?;
    let transport = Https::new(std::env::var("DPS_ALLOCATOR_DPS_ENDPOINT").ok(), args.call_timeout)?;
    let settings = Settings {
        rate_per_s: args.rate,
        max_retry_after: Duration::from_secs(args.max_retry_after),
        ..Settings::default()
    };
    let verified = rollout::verify(&entries, &dps, &settings, &transport);
    for note in &verified.notes {
        eprintln!("note: {note}");
    }
    if let Some(why) = verified.stopped {
        eprintln!("error: {why}");
        return Ok(Status::Failed);
    }
    let landings = verified.landings;
    if let Some(path) = &args.out {
        write_out(path, &entries, &landings)?;
    }
    let report = tally(&entries, &landings);
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        Format::Table => {
            let mut o = format!(
                "landed    {}\npending   {}\nelsewhere {} (the policy and the plan disagree)\nunknown   {}\n",
                group(report.landed),
                group(report.pending),
                group(report.elsewhere),
                group(report.unknown)
            );
            for (wave, counts) in &report.per_wave {
                let _ = writeln!(o, "wave {wave:<4} {}", line(counts));
            }
            for (hub, counts) in &report.per_hub {
                let _ = writeln!(o, "to {hub:<48} {}", line(counts));
            }
            o
        }
    };
    print!("{text}");
    Ok(Status::Ok)
}

fn line(counts: &std::collections::BTreeMap<&str, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k} {}", group(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn tally<'a>(entries: &'a [Entry], landings: &[Landing]) -> Report<'a> {
    let mut r = Report {
        landed: 0,
        pending: 0,
        elsewhere: 0,
        unknown: 0,
        per_wave: Default::default(),
        per_hub: Default::default(),
    };
    for (e, l) in entries.iter().zip(landings) {
        match l.verdict {
            Verdict::Landed => r.landed += 1,
            Verdict::Pending => r.pending += 1,
            Verdict::Elsewhere => r.elsewhere += 1,
            Verdict::Unknown => r.unknown += 1,
        }
        *r.per_wave
            .entry(e.wave)
            .or_default()
            .entry(l.verdict.as_str())
            .or_default() += 1;
        *r.per_hub
            .entry(e.to_hub.as_str())
            .or_default()
            .entry(l.verdict.as_str())
            .or_default() += 1;
    }
    r
}

fn write_out(path: &PathBuf, entries: &[Entry], landings: &[Landing]) -> Result<(), String> {
    let err = |e: csv::Error| format!("{}: {e}", path.display());
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record([
        "registration_id",
        "to_hub",
        "assigned_hub",
        "status",
        "substatus",
        "verdict",
    ])
    .map_err(err)?;
    for (e, l) in entries.iter().zip(landings) {
        w.write_record([
            e.registration_id.as_str(),
            e.to_hub.as_str(),
            l.assigned_hub.as_str(),
            l.status.as_str(),
            l.substatus.as_str(),
            l.verdict.as_str(),
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}
