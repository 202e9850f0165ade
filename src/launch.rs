//! How a run is launched, as the command line says: its threads (`-j`, capped) and its worker
//! share (`--worker K/M`, or `--worker auto` from the launcher's variables). Binary only.

use std::num::NonZeroUsize;

use nemoconv::options::{Split, Worker};

/// The most `-j` accepts: beyond it a typo, not a wish (issue 11, item 4).
const MAX_THREADS: usize = 1024;
/// `-j` above this many threads per core is capped: more only adds contention.
const THREADS_PER_CORE: usize = 4;

/// Parses `-j N`: 1 to [`MAX_THREADS`].
pub fn parse_threads(text: &str) -> Result<NonZeroUsize, String> {
    let n: NonZeroUsize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of threads (1 to {MAX_THREADS})"))?;
    if n.get() > MAX_THREADS {
        return Err(format!(
            "{n} threads is more than the {MAX_THREADS} nemoconv allows; leave -j out to use every core"
        ));
    }
    Ok(n)
}

/// `-j N` capped to [`THREADS_PER_CORE`] times the cores, with a note on stderr.
pub fn capped_threads(threads: Option<NonZeroUsize>, quiet: bool) -> Option<NonZeroUsize> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let cap = NonZeroUsize::new(cores * THREADS_PER_CORE).expect("cores >= 1");
    match threads {
        Some(n) if n > cap => {
            if !quiet {
                crate::report::say(&format!(
                    "nemoconv: note: -j {n} capped to {cap} ({THREADS_PER_CORE} per core, {cores} cores)"
                ));
            }
            Some(cap)
        }
        other => other,
    }
}

/// `--worker` values: a share, or `auto` for the launcher's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerArg {
    /// `K/M`.
    Share(Worker),
    /// `auto`: RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS.
    Auto,
}

/// Parses `--worker`: `auto` or `K/M`.
pub fn parse_worker_arg(text: &str) -> Result<WorkerArg, String> {
    match text {
        "auto" => Ok(WorkerArg::Auto),
        _ => parse_worker(text).map(WorkerArg::Share),
    }
}

/// Parses `K/M` with K below M.
pub fn parse_worker(text: &str) -> Result<Worker, String> {
    let usage = || format!("{text:?} is not K/M; write e.g. 0/4 for the first of four workers");
    let (k, m) = text.split_once('/').ok_or_else(usage)?;
    let (index, count) = (
        k.trim().parse::<usize>().map_err(|_| usage())?,
        m.trim().parse::<usize>().map_err(|_| usage())?,
    );
    if count == 0 || index >= count {
        return Err(format!("worker {index}/{count}: K must be below M"));
    }
    Ok(Worker {
        index,
        count,
        split: Split::default(),
    })
}

/// Parses `--split`: `bytes` or `shards`.
pub fn parse_split(text: &str) -> Result<Split, String> {
    Split::parse(text)
        .ok_or_else(|| format!("{text:?} is not a split mode; write bytes (the default) or shards"))
}

/// The launcher variables that `--worker auto` reads: torchrun's, then Slurm's.
const LAUNCHER_VARS: [(&str, &str); 2] = [("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")];

/// The worker share from the launcher's variables (`--worker auto`); None for a world of one.
pub fn worker_from_env() -> Result<Option<Worker>, clap::Error> {
    for (rank, size) in LAUNCHER_VARS {
        if let (Ok(k), Ok(m)) = (std::env::var(rank), std::env::var(size)) {
            let worker = parse_worker(&format!("{k}/{m}"))
                .map_err(|e| crate::cli::usage_error(format!("environment {rank}/{size}: {e}")))?;
            return Ok((worker.count > 1).then_some(worker));
        }
    }
    Err(crate::cli::usage_error(
        "--worker auto: none of RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS is set; give --worker K/M"
            .to_string(),
    ))
}

/// A plain run ignores the launcher's variables (issue 11, item 15), and says so when they
/// would have split it.
pub fn note_ignored_launcher(quiet: bool) {
    for (rank, size) in LAUNCHER_VARS {
        if let (Ok(k), Ok(m)) = (std::env::var(rank), std::env::var(size))
            && m.trim() != "1"
            && !quiet
        {
            crate::report::say(&format!(
                "nemoconv: note: {rank}={k} {size}={m} are set but this is a plain run writing all of OUT; add --worker auto to write only this worker's share"
            ));
            return;
        }
    }
}
