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
    /// Output format.
    #[arg(long, env = "DPS_ALLOCATOR_FORMAT", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write `registration_id,to_hub,assigned_hub,status,substatus,verdict` for every device.
    #[arg(long, env = "DPS_ALLOCATOR_OUT")]
    pub out: Option<PathBuf>,
}

/// The HTTPS transport: one awc client and runtime per worker thread; `DPS_ALLOCATOR_IOTHUB_ENDPOINT` /
/// `DPS_ALLOCATOR_DPS_ENDPOINT` replace `https://{host}` (the tests' local stand-in).
struct Https {
    base: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

thread_local! {
    static CLIENT: RefCell<Option<(actix_web::rt::Runtime, awc::Client)>> = const { RefCell::new(None) };
}

impl Https {
    fn new(base: Option<String>) -> Result<Https, String> {
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
        Ok(Https {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            tls: Arc::new(tls),
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
                    .timeout(Duration::from_secs(90))
                    .disable_redirects()
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
            rt.block_on(async {
                let mut res = match &call.body {
                    Some(b) => req.send_body(b.clone()).await,
                    None => req.send().await,
                }
                .map_err(|e| format!("{}: {e}", call.host))?;
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let body = res
                    .body()
                    .limit(1 << 20)
                    .await
                    .map_err(|e| format!("{}: {e}", call.host))?;
                Ok(Reply {
                    status: res.status().as_u16(),
                    retry_after,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            })
        })
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
    let entries = rollout::read_schedule(&args.schedule)?;
    let hubs = credentials(&args.hubs)?;
    let settings = Settings {
        rate_per_s: args.rate,
        max_tries: args.max_tries.max(1),
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
    let transport = Https::new(std::env::var("DPS_ALLOCATOR_IOTHUB_ENDPOINT").ok())?;
    let mut state = State::open(&args.state)?;
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
    let entries = rollout::read_schedule(&args.schedule)?;
    let dps = Credentials::parse(&args.dps)?;
    let transport = Https::new(std::env::var("DPS_ALLOCATOR_DPS_ENDPOINT").ok())?;
    let settings = Settings {
        rate_per_s: args.rate,
        ..Settings::default()
    };
    let (landings, stopped) = rollout::verify(&entries, &dps, &settings, &transport);
    if let Some(why) = stopped {
        eprintln!("error: {why}");
        return Ok(Status::Failed);
    }
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
