//! `dps-allocator`: parse the command line, run the command, map its status to an exit code.

use std::process::ExitCode;

use dps_allocator::cli::{self, Status};

fn main() -> ExitCode {
    // Panics are caught where they can happen on input (the policy compiler, the reloader) and become
    // errors; should one still occur, it is one line on stderr, never a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        let message = dps_allocator::policy::panic_message(info.payload(), 300);
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("internal error{at}: {message} (please report it)");
    }));
    let cli = cli::parse();
    match cli::run(cli) {
        Status::Ok => ExitCode::SUCCESS,
        Status::Failed => ExitCode::from(1),
        Status::Error => ExitCode::from(2),
    }
}
