//! `plan`: a move list (`simulate --moves`) into waves under DPS and IoT Hub limits: when, how fast, what
//! binds; the schedule the rollout executes, and the same thing triggered all at once for comparison.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use clap::Args;

use super::{Format, Status};
use crate::plan::{self, Limits, Plan, PlanError, duration_words};
use crate::simulate::report::group;

/// Arguments of `plan`. Every flag has a `DPS_ALLOCATOR_` environment twin.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The move list: `registration_id,from_hub,to_hub` with its header (`simulate --moves` writes it).
    #[arg(long, env = "DPS_ALLOCATOR_MOVES")]
    pub moves: PathBuf,
    /// DPS registrations per minute per unit.
    #[arg(long, env = "DPS_ALLOCATOR_DPS_RATE", default_value_t = 1000.0)]
    pub dps_rate: f64,
    /// DPS units.
    #[arg(long, env = "DPS_ALLOCATOR_DPS_UNITS", default_value_t = 1)]
    pub dps_units: u32,
    /// Share of the DPS rate kept free for other registrations.
    #[arg(long, env = "DPS_ALLOCATOR_HEADROOM", default_value_t = 0.2)]
    pub headroom: f64,
    /// Each mover looks its registration status up first (a lookup costs a registration).
    #[arg(long, env = "DPS_ALLOCATOR_LOOKUPS", value_parser = clap::builder::BoolishValueParser::new())]
    pub lookups: bool,
    /// Trigger calls per second per source hub (IoT Hub S1's jobs and direct-method pace).
    #[arg(long, env = "DPS_ALLOCATOR_TRIGGER_RATE", default_value_t = 10.0)]
    pub trigger_rate: f64,
    /// New device connections per second per destination hub.
    #[arg(long, env = "DPS_ALLOCATOR_CONNECT_RATE", default_value_t = 100.0)]
    pub connect_rate: f64,
    /// Devices that re-provision through DPS on every restart (with --restart-interval).
    #[arg(long, env = "DPS_ALLOCATOR_FLEET", requires = "restart_interval")]
    pub fleet: Option<u64>,
    /// How often each of those devices restarts (`1d`, `12h`, `30m`).
    #[arg(long, env = "DPS_ALLOCATOR_RESTART_INTERVAL", requires = "fleet", value_parser = humantime::parse_duration)]
    pub restart_interval: Option<std::time::Duration>,
    /// Length of one wave, in minutes.
    #[arg(long, env = "DPS_ALLOCATOR_WAVE_MINUTES", default_value_t = 60.0)]
    pub wave_minutes: f64,
    /// Output format.
    #[arg(long, env = "DPS_ALLOCATOR_FORMAT", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the schedule: `registration_id,from_hub,to_hub,wave,not_before_s`, every mover once.
    #[arg(long, env = "DPS_ALLOCATOR_SCHEDULE")]
    pub schedule: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long, env = "DPS_ALLOCATOR_REPORT")]
    pub report: Option<PathBuf>,
}

/// Runs `plan`.
pub fn run(args: PlanArgs) -> Status {
    match execute(&args) {
        Ok(status) => status,
        Err(PlanError::BackgroundExceedsQuota { background, quota }) => {
            eprintln!("error: {}", PlanError::BackgroundExceedsQuota { background, quota });
            Status::Failed
        }
        Err(e) => {
            eprintln!("error: {e}");
            Status::Error
        }
    }
}

fn open(path: &PathBuf) -> Result<BufReader<File>, PlanError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|e| PlanError::Input(format!("{}: {e}", path.display())))
}

fn execute(args: &PlanArgs) -> Result<Status, PlanError> {
    let limits = Limits {
        dps_rate_per_min: args.dps_rate,
        dps_units: args.dps_units,
        headroom: args.headroom,
        lookups: args.lookups,
        trigger_rate_per_s: args.trigger_rate,
        connect_rate_per_s: args.connect_rate,
        background: args
            .fleet
            .zip(args.restart_interval)
            .map(|(n, every)| (n, every.as_secs_f64())),
        wave_minutes: args.wave_minutes,
    };
    let progress = Progress::new();
    let (census, seen) = plan::count(open(&args.moves)?, |c| progress.tick(c.movers, "counted"))?;
    if census.duplicates > 0 {
        eprintln!(
            "warning: {}: {} row(s) listed a registration id already listed: each device is planned once, at its first row",
            args.moves.display(),
            group(census.duplicates)
        );
    }
    let plan = plan::plan(&census, &limits)?;
    if let Some(path) = &args.schedule {
        let out = File::create(path).map_err(|e| PlanError::Input(format!("{}: {e}", path.display())))?;
        plan::write_schedule(
            open(&args.moves)?,
            &census,
            &plan,
            &limits,
            seen,
            BufWriter::with_capacity(1 << 20, out),
        )?;
        progress.tick(census.movers, "scheduled");
    }
    if let Some(path) = &args.report {
        std::fs::write(path, plan::html::render(&plan))
            .map_err(|e| PlanError::Input(format!("{}: {e}", path.display())))?;
    }
    progress.done();
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&plan).map_err(|e| PlanError::Input(e.to_string()))? + "\n",
        Format::Table => table(&plan, &limits),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .map_err(|e| PlanError::Input(format!("standard output: {e}")))?;
    Ok(Status::Ok)
}

/// The readable form.
pub fn table(p: &Plan, l: &Limits) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "plan        {} movers in {} at {} devices/min ({} started per minute)",
        group(p.movers),
        duration_words(p.duration_s),
        group(p.rate_per_min.round() as u64),
        group(p.per_minute)
    );
    let why = match p.binding_limit.as_str() {
        "dps" | "dps-lookups" => format!(
            "the DPS quota: {} registrations/min x {} unit(s) x (1 - {} headroom){}{}",
            group(l.dps_rate_per_min.round() as u64),
            l.dps_units,
            l.headroom,
            if p.background_per_min > 0.0 {
                format!(" - {} background", group(p.background_per_min.round() as u64))
            } else {
                String::new()
            },
            if l.lookups {
                ", halved for the status lookups"
            } else {
                ""
            }
        ),
        name if name.starts_with("trigger:") => format!(
            "{} triggers its movers at {}/s, so the plan can go no faster",
            &name["trigger:".len()..],
            l.trigger_rate_per_s
        ),
        name => format!(
            "{} takes new connections at {}/s, so the plan can go no faster",
            name.trim_start_matches("connect:"),
            l.connect_rate_per_s
        ),
    };
    let _ = writeln!(o, "binding     {} ({why})", p.binding_limit);
    let _ = writeln!(o, "limits");
    for b in &p.limits {
        let _ = writeln!(
            o,
            "  {:<52} {:>12} devices/min",
            b.name,
            group(b.per_min.round() as u64)
        );
    }
    let _ = writeln!(o, "waves");
    for w in &p.waves {
        let _ = writeln!(
            o,
            "  {:>4}  {:>12} devices  from {} to {}",
            w.wave,
            group(w.devices),
            duration_words(w.start_s as f64),
            duration_words(w.end_s as f64)
        );
    }
    let _ = writeln!(
        o,
        "hubs                                                   leaving     arriving"
    );
    for h in &p.hubs {
        let _ = writeln!(o, "  {:<48} {:>12} {:>12}", h.hub, group(h.leaving), group(h.arriving));
    }
    let a = &p.all_at_once;
    let _ = writeln!(
        o,
        "all at once {} ({} throttled requests, peak {} attempts/min): every mover triggered together, DPS answering 429 past its rate",
        duration_words(a.duration_s),
        group(a.throttled),
        group(a.peak_per_min)
    );
    o
}

/// Progress on standard error, only on a terminal and only for long runs.
struct Progress {
    terminal: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            started: std::time::Instant::now(),
        }
    }

    fn tick(&self, n: u64, what: &str) {
        if self.terminal && n.is_multiple_of(1_000_000) && n > 0 {
            eprint!(
                "\r{} movers {what} ({:.0} s)",
                group(n),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn done(&self) {
        if self.terminal && self.started.elapsed().as_secs() >= 1 {
            eprintln!();
        }
    }
}
