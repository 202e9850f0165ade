//! The `nemoconv` binary: parse arguments, run the library, print errors, set the exit code.

mod cli;
mod commands;
mod launch;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use nemoconv::Error;

use cli::{Cli, Command};

/// Exit code for a failed conversion (bad input, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit code of `verify` when the checkpoints differ.
const EXIT_DIFFERENT: u8 = 1;
/// Exit code of `verify` when it cannot compare (unreadable input), apart from "different".
const EXIT_TROUBLE: u8 = 2;
/// Exit code after SIGINT or SIGTERM, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let failure = match cli.command {
        Command::Verify(_) => EXIT_TROUBLE,
        _ => EXIT_FAILURE,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // Only commands that look at the flag in every long phase catch SIGINT/SIGTERM; the
    // others write nothing and die of the signal at once (issue 11, item 5). A failure to
    // install the handler only loses the clean-up on Ctrl-C.
    if matches!(
        cli.command,
        Command::FromHf(_) | Command::ToHf(_) | Command::Verify(_) | Command::Finalize(_)
    ) {
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    }
    match commands::run(cli, &cancel) {
        Ok(code) => code,
        Err(err) => {
            report::say(&format!("nemoconv: error: {err:#}"));
            match err.downcast_ref::<Error>() {
                Some(Error::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
                _ => ExitCode::from(failure),
            }
        }
    }
}
