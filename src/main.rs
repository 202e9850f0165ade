//! The `nemoconv` binary: parse arguments, run the library, print errors, set the exit code.

mod cli;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use nemoconv::{Direction, Error};

use cli::{Cli, Command};

/// Exit code for a failed conversion (bad input, I/O).
const EXIT_FAILURE: u8 = 1;
/// Exit code after SIGINT or SIGTERM, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // A failure to install the handler only loses the clean-up on Ctrl-C.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    match run(cli, &cancel) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nemoconv: error: {err:#}");
            match err.downcast_ref::<Error>() {
                Some(Error::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

fn run(cli: Cli, cancel: &AtomicBool) -> anyhow::Result<()> {
    match cli.command {
        Command::FromHf(args) => {
            let options = cli::from_hf_options(&args);
            let progress = report::Bar::new(args.common.quiet);
            let result = nemoconv::convert(
                Direction::FromHf,
                &args.input,
                &args.output,
                &options,
                &progress,
                cancel,
            )
            .with_context(|| {
                format!(
                    "from-hf {} -> {}",
                    args.input.display(),
                    args.output.display()
                )
            })?;
            report::finish(&result, args.common.quiet);
        }
        Command::ToHf(args) => {
            let options = cli::to_hf_options(&args);
            let (output, inputs) = args.paths.split_last().expect("clap requires two paths");
            let [input] = inputs else {
                anyhow::bail!(
                    "to-hf takes one input directory; merging several slices is not supported yet"
                );
            };
            let progress = report::Bar::new(args.common.quiet);
            let result =
                nemoconv::convert(Direction::ToHf, input, output, &options, &progress, cancel)
                    .with_context(|| {
                        format!("to-hf {} -> {}", input.display(), output.display())
                    })?;
            report::finish(&result, args.common.quiet);
        }
    }
    Ok(())
}
