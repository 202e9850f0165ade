//! The `nemoconv` binary: parse arguments, run the library, print errors, set the exit code.

mod cli;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use std::path::{Path, PathBuf};

use nemoconv::{Direction, Error, Options};

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
            let options = cli::from_hf_options(&args)?;
            convert(
                Direction::FromHf,
                std::slice::from_ref(&args.input),
                &args.output,
                &options,
                args.common.quiet,
                cancel,
            )
        }
        Command::ToHf(args) => {
            let options = cli::to_hf_options(&args)?;
            let (output, inputs) = args.paths.split_last().expect("clap requires two paths");
            convert(
                Direction::ToHf,
                inputs,
                output,
                &options,
                args.common.quiet,
                cancel,
            )
        }
        Command::Finalize(args) => nemoconv::execute::finalize(&args.output)
            .with_context(|| format!("finalize {}", args.output.display())),
    }
}

fn convert(
    direction: Direction,
    inputs: &[PathBuf],
    output: &Path,
    options: &Options,
    quiet: bool,
    cancel: &AtomicBool,
) -> anyhow::Result<()> {
    let progress = report::Bar::new(quiet);
    let name = if direction == Direction::FromHf {
        "from-hf"
    } else {
        "to-hf"
    };
    let result = nemoconv::convert(direction, inputs, output, options, &progress, cancel)
        .with_context(|| {
            let ins: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
            format!("{name} {} -> {}", ins.join(" "), output.display())
        })?;
    report::finish(&result, options.worker, quiet);
    Ok(())
}
