//! `dps-allocator`: parse the command line, run the command, map its status to an exit code.

use std::process::ExitCode;

use clap::Parser;
use dps_allocator::cli::{self, Cli, Status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Status::Ok => ExitCode::SUCCESS,
        Status::Failed => ExitCode::from(1),
        Status::Error => ExitCode::from(2),
    }
}
