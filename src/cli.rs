//! The command line: `serve`, `check`, `test`, `explain`, `schema`. Each command lives in its own file
//! under `cli/` and returns an [`ExitCode`]-like status; `main` only parses and dispatches.

mod check;
mod explain;
mod healthcheck;
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Status {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check { dir } => check::check(&policy_dir(dir)),
        Command::Test { dir, geoip } => match geoip.open() {
            Ok(db) => check::test(&policy_dir(dir), db.as_ref()),
            Err(status) => status,
        },
        Command::Explain(args) => explain::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Schema => schema(),
        Command::Healthcheck(args) => healthcheck::run(args),
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
