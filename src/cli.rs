//! The command line: `serve`, `check`, `test`, `explain`, `schema`. Each command lives in its own file
//! under `cli/` and returns an [`ExitCode`]-like status; `main` only parses and dispatches.

mod check;
mod explain;
mod healthcheck;
mod plan;
mod rollout;
pub mod serve;
mod simulate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::geo::GeoIp;
use crate::policy;
use crate::server::reload::PolicySource;
pub use crate::telemetry::LogFormat;

/// Custom allocation webhook for Azure IoT Hub Device Provisioning Service.
#[derive(Debug, Parser)]
#[command(name = "dps-allocator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook.
    Serve(serve::ServeArgs),
    /// Validate a policy directory and report every error at once (exit 1 on errors).
    Check {
        /// Policy directory [default: ./policies].
        dir: Option<PathBuf>,
    },
    /// Run the fixtures in DIR/tests against the policy in DIR (exit 1 on any failure).
    Test {
        /// Policy directory [default: ./policies].
        dir: Option<PathBuf>,
        /// GeoIP database for fixtures that locate devices by IP.
        #[command(flatten)]
        geoip: GeoIpArg,
    },
    /// Decide one AllocationRequest and print every step of the decision.
    Explain(explain::ExplainArgs),
    /// Run a fleet through a policy change: devices per hub, moves, rejections, reprovisioning time.
    Simulate(simulate::SimulateArgs),
    /// Plan the moves of `simulate --moves` in waves under DPS and IoT Hub limits; write the schedule.
    Plan(plan::PlanArgs),
    /// Trigger the scheduled moves through IoT Hub (resumable with --state).
    Rollout(rollout::RolloutArgs),
    /// Ask DPS where each device of a schedule landed.
    Verify(rollout::VerifyArgs),
    /// Print the JSON Schema of a policy file (for editor completion).
    Schema,
    /// Exit 0 when the local server answers /healthz (container health checks without a shell).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// The `--geoip FILE` option shared by `serve`, `test` and `explain`.
#[derive(Debug, Clone, Args, Default)]
pub struct GeoIpArg {
    /// MaxMind GeoIP2/GeoLite2 City database (.mmdb) for locating devices by the IP in their payload.
    #[arg(long = "geoip", env = "DPS_ALLOCATOR_GEOIP", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl GeoIpArg {
    /// Opens and verifies the database; a bad file prints one line and yields exit status 2.
    pub fn open(&self) -> Result<Option<GeoIp>, Status> {
        match &self.path {
            None => Ok(None),
            Some(p) => GeoIp::open(p).map(Some).map_err(|e| {
                eprintln!("error: {e}");
                Status::Error
            }),
        }
    }
}

/// Output format of `simulate`, `plan`, `rollout` and `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Readable lines for people.
    #[default]
    Table,
    /// One JSON object.
    Json,
}

/// What a command reports back to `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success: exit 0.
    Ok,
    /// The command ran and found problems (policy errors, failing fixtures): exit 1.
    Failed,
    /// The command could not run (bad input, start-up failure): exit 2.
    Error,
}

/// Parses the command line; on an error, exits as clap does (2, or 0 for `--help`), except that an
/// invalid value that came from an environment variable is named as that variable: the user never typed
/// the flag clap would name.
pub fn parse() -> Cli {
    use clap::{CommandFactory, Parser};
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(message) = env_value_error(&e, &Cli::command()) {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            e.exit()
        }
    }
}

/// The message for an invalid value read from an environment variable, when that is what happened.
fn env_value_error(e: &clap::Error, cmd: &clap::Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = flag.split_whitespace().next()?.trim_start_matches("--");
    let typed = std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed {
        return None;
    }
    let commands = std::iter::once(cmd).chain(cmd.get_subcommands());
    let arg = commands
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long) && a.get_env().is_some())?;
    let var = arg.get_env()?.to_string_lossy().into_owned();
    let value = std::env::var(&var).ok()?;
    let accepted = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) => format!(" (accepted: {})", values.join(", ")),
        _ if arg.get_action().takes_values() => String::new(),
        _ => " (accepted: 1/0, true/false, yes/no, on/off)".to_owned(),
    };
    Some(format!("{var}={value:?} is not a valid value for --{long}{accepted}"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Status {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check { dir } => match existing(policy_dir(dir)) {
            Ok(dir) => check::check(&dir),
            Err(status) => status,
        },
        Command::Test { dir, geoip } => match (existing(policy_dir(dir)), geoip.open()) {
            (Ok(dir), Ok(db)) => check::test(&dir, db.as_ref()),
            (Err(status), _) | (_, Err(status)) => status,
        },
        Command::Explain(args) => explain::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Verify(args) => rollout::verify(args),
        Command::Schema => schema(),
        Command::Healthcheck(args) => healthcheck::run(args),
    }
}

/// The directory when it exists; else one line on stderr and exit status 2.
fn existing(dir: PathBuf) -> Result<PathBuf, Status> {
    match PolicySource::Dir(dir.clone()).check_exists() {
        Ok(()) => Ok(dir),
        Err(e) => {
            eprintln!("error: {e}");
            Err(Status::Error)
        }
    }
}

fn policy_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from(crate::server::reload::DEFAULT_POLICY_DIR))
}

fn schema() -> Status {
    let schema = schemars::schema_for!(policy::raw::RawFile);
    match serde_json::to_string_pretty(&schema) {
        Ok(s) => {
            println!("{s}");
            Status::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Status::Error
        }
    }
}
