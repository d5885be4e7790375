//! `simulate`: run a fleet (or N synthetic devices) through the new policy, and the baseline when given,
//! and report devices per hub, moves, rejections, reprovisioning time and rebalance waves.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{Format, PolicySource, Status};
use crate::simulate::fleet::Fleet;
use crate::simulate::report::Rate;
use crate::simulate::{self, Setup, Sinks, html};

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The new policy directory [default: ./policies, else the embedded default].
    #[arg(long, env = "DPS_ALLOCATOR_POLICIES")]
    pub policies: Option<PathBuf>,
    /// The policy in production, to compare against.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The fleet: JSON lines of AllocationRequests, or a `.csv` of
    /// registration_id,current_hub,enrollment_group,payload_json.
    #[arg(long, conflicts_with = "synthetic", required_unless_present = "synthetic")]
    pub fleet: Option<PathBuf>,
    /// N synthetic devices, linked to every catalogued hub.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<u64>,
    /// Seed of synthetic registration ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Enrollment group of synthetic devices (default: individual enrollments).
    #[arg(long)]
    pub enrollment_group: Option<String>,
    /// GeoIP database.
    #[command(flatten)]
    pub geoip: super::GeoIpArg,
    /// DPS registrations per minute per unit.
    #[arg(long, default_value_t = 1000.0)]
    pub dps_rate: f64,
    /// DPS units.
    #[arg(long, default_value_t = 1)]
    pub dps_units: u32,
    /// Write `registration_id,from_hub,to_hub` for every device that moves.
    #[arg(long)]
    pub moves: Option<PathBuf>,
    /// Write `registration_id,status,hub,rule` for every device's decision under the new policy.
    #[arg(long)]
    pub decisions: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Worker threads [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `simulate`.
pub fn run(args: SimulateArgs) -> Status {
    match execute(args) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            Status::Error
        }
    }
}

fn load(source: &PolicySource) -> Result<crate::policy::Revision, String> {
    source.check_exists()?;
    source
        .load()
        .map_err(|e| format!("{e}\nthe policy in {} does not load", source.describe()))
}

fn create(path: &PathBuf) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn execute(args: SimulateArgs) -> Result<Status, String> {
    if let Some(n) = args.threads {
        // Only the first call configures rayon's global pool; a second run in one process keeps it.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
    }
    let geoip = match args.geoip.open() {
        Ok(db) => db,
        Err(status) => return Ok(status),
    };
    let source = PolicySource::resolve(args.policies.clone());
    let policy = load(&source)?;
    let baseline_source = args.baseline.clone().map(PolicySource::Dir);
    let baseline = baseline_source.as_ref().map(load).transpose()?;
    let mut fleet = match (&args.fleet, args.synthetic) {
        (Some(path), _) => Fleet::open(path).map_err(|e| e.0)?,
        (None, Some(n)) => Fleet::synthetic(n),
        (None, None) => return Err("give --fleet FILE or --synthetic N".to_owned()),
    };
    let setup = Setup {
        policy: &policy,
        baseline: baseline.as_ref(),
        geoip: geoip.as_ref(),
        synthetic_group: args.enrollment_group.clone(),
        seed: args.seed,
    };
    let mut moves = args.moves.as_ref().map(create).transpose()?;
    let mut decisions = args.decisions.as_ref().map(create).transpose()?;
    let bar = Progress::new(fleet.len_hint());
    let summary = {
        let mut sinks = Sinks::new(
            moves.as_mut().map(|w| w as &mut dyn Write),
            decisions.as_mut().map(|w| w as &mut dyn Write),
        );
        let summary = simulate::run(&setup, &mut fleet, &mut sinks, &|done| bar.update(done)).map_err(|e| e.0)?;
        sinks.flush().map_err(|e| format!("writing output: {e}"))?;
        summary
    };
    bar.finish();
    if summary.duplicates > 0 {
        eprintln!(
            "warning: the fleet: {} row(s) listed a registration id already listed: each device is simulated once, at its first row",
            summary.duplicates
        );
    }
    for w in [moves.as_mut(), decisions.as_mut()].into_iter().flatten() {
        w.flush().map_err(|e| format!("writing output: {e}"))?;
    }
    let summary = summary
        .with_rate(&Rate {
            per_minute: args.dps_rate,
            units: args.dps_units,
        })
        .with_sources(source.describe(), baseline_source.map(|b| b.describe()));
    if let Some(path) = &args.report {
        std::fs::write(path, html::render(&summary)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    match args.format {
        Format::Table => print!("{}", summary.table()),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?);
        }
    }
    Ok(Status::Ok)
}

/// A progress bar on standard error, shown only on a terminal and only once a run passes one second.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    shown: std::cell::Cell<bool>,
    terminal: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::with_draw_target(Some(n), indicatif::ProgressDrawTarget::hidden()),
            None => indicatif::ProgressBar::hidden(),
        };
        let style =
            indicatif::ProgressStyle::with_template("{spinner} {human_pos}/{human_len} devices  {rate}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(
                            w,
                            "{} devices/s",
                            crate::simulate::report::group(state.per_sec() as u64)
                        );
                    },
                );
        bar.set_style(style);
        Progress {
            bar,
            started: Instant::now(),
            shown: std::cell::Cell::new(false),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, done: u64) {
        if self.terminal && !self.shown.get() && self.started.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.shown.set(true);
        }
        self.bar.set_position(done);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
