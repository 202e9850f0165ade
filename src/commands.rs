//! What each subcommand does in the binary: build options, call the library, print results.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::CommandFactory;
use nemoconv::options::{ConsolidateOptions, ConvertOptions};

use crate::cli::{Cli, Command, CommonArgs, ConsolidateArgs};
use crate::report;

/// Runs the parsed command line; the exit code for outcomes that are not errors.
pub fn run(cli: Cli, cancel: &AtomicBool) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::FromHf(args) => {
            let options = crate::cli::from_hf_options(&args).unwrap_or_else(|e| e.exit());
            convert(
                std::slice::from_ref(&args.input),
                &args.output,
                &options.into(),
                &args.common,
                cancel,
            )
        }
        Command::ToHf(args) => {
            let options = crate::cli::to_hf_options(&args).unwrap_or_else(|e| e.exit());
            let (output, inputs) = args.paths.split_last().expect("clap requires two paths");
            convert(inputs, output, &options.into(), &args.common, cancel)
        }
        Command::Finalize(args) if args.abandon => {
            let removed = nemoconv::execute::abandon(&args.output)
                .with_context(|| format!("finalize --abandon {}", args.output.display()))?;
            report::say(&format!("nemoconv: removed {}", removed.display()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Consolidate(args) => {
            let options = crate::cli::consolidate_options(&args).unwrap_or_else(|e| e.exit());
            consolidate(&args, &options, cancel)
        }
        Command::Finalize(args) => {
            nemoconv::execute::finalize(&args.output, cancel)
                .with_context(|| format!("finalize {}", args.output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            // Into memory first: clap_complete panics on a failed write (issue 11, item 10).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "nemoconv", &mut script);
            print_stdout(&script)
        }
        Command::Inspect(args) => {
            let found = nemoconv::inspect::inspect(&args.dir)
                .with_context(|| format!("inspect {}", args.dir.display()))?;
            print_stdout(&report::show(&found, args.json))
        }
        Command::Verify(args) => {
            let progress = report::Bar::new(args.quiet);
            let options = crate::cli::verify_options(&args);
            let found = nemoconv::verify::verify(&args.a, &args.b, &options, &progress, cancel)
                .with_context(|| format!("verify {} {}", args.a.display(), args.b.display()))?;
            print_stdout(&report::show(&found, args.json))?;
            Ok(match found.identical {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(crate::EXIT_DIFFERENT),
            })
        }
        Command::Man => {
            let page = man_page().context("render the man page")?;
            print_stdout(&page)
        }
    }
}

fn convert(
    inputs: &[PathBuf],
    output: &Path,
    options: &ConvertOptions,
    common: &CommonArgs,
    cancel: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let name = match options {
        ConvertOptions::FromHf(_) => "from-hf",
        ConvertOptions::ToHf(_) => "to-hf",
    };
    let context = || {
        let ins: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        format!("{name} {} -> {}", ins.join(" "), output.display())
    };
    let run = &common.run;
    if run.dry_run {
        let planned = nemoconv::plan(inputs, options).with_context(context)?;
        return print_stdout(&report::dry_run(&planned, run.json));
    }
    let progress = report::Bar::new(run.quiet);
    let result =
        nemoconv::convert(inputs, output, options, &progress, cancel).with_context(context)?;
    report::finish(&result, options.run().worker, run.quiet || run.json);
    if run.json {
        let summary = report::json_summary(name, inputs, output, &result);
        return print_stdout(&report::json_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn consolidate(
    args: &ConsolidateArgs,
    options: &ConsolidateOptions,
    cancel: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let (input, output, run) = (&args.input, &args.output, &args.run);
    let context = || format!("consolidate {} -> {}", input.display(), output.display());
    if run.dry_run {
        let planned = nemoconv::consolidate::plan(input, options).with_context(context)?;
        report::completed(&planned.completed, run.quiet || run.json);
        return print_stdout(&report::dry_run(&planned.planned, run.json));
    }
    let progress = report::Bar::new(run.quiet);
    let done = nemoconv::consolidate::consolidate(input, output, options, &progress, cancel)
        .with_context(context)?;
    report::completed(&done.completed, run.quiet || run.json);
    report::finish(&done.report, options.run.worker, run.quiet || run.json);
    if run.json {
        let inputs = std::slice::from_ref(input);
        let mut summary = report::json_summary("consolidate", inputs, output, &done.report);
        summary["completed_dtypes"] = done.completed.len().into();
        return print_stdout(&report::json_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// The man page: the top-level page, then each subcommand's synopsis, options and example.
fn man_page() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("nemoconv {}", sub.get_name());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        if let Some(about) = sub.get_about() {
            writeln!(page, "{about}")?;
        }
        let man = clap_mangen::Man::new(sub.clone().bin_name(name));
        man.render_synopsis_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_extra_section(&mut page)?;
    }
    Ok(page)
}

/// Writes to stdout; a closed pipe (`| head`) is a success, as in other Unix tools.
pub fn print_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    match std::io::stdout()
        .lock()
        .write_all(bytes)
        .and_then(|()| std::io::stdout().flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}
