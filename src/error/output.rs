//! Why an output location cannot be used, or a spread run cannot be finished: one variant per
//! failure, each naming the path.

use std::path::PathBuf;

use crate::execute::Worker;

/// The output location cannot be used, or a spread run's work directory is not ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output is the input.
    #[error(
        "{path}: the output is the input checkpoint itself; choose another directory, the input is never modified"
    )]
    IsTheInput {
        /// The output path.
        path: PathBuf,
    },
    /// The output lies inside the input.
    #[error("{path}: the output is inside the input checkpoint; choose a directory outside it")]
    InsideTheInput {
        /// The output path.
        path: PathBuf,
    },
    /// The input lies inside the output.
    #[error("{path}: the input checkpoint is inside the output directory; choose another output")]
    HoldsTheInput {
        /// The output path.
        path: PathBuf,
    },
    /// `.` or `..`, which cannot be renamed into place.
    #[error(
        "{path}: is . or ..; the output is a new directory renamed into place, name one (e.g. ./out)"
    )]
    DotPath {
        /// The output path.
        path: PathBuf,
    },
    /// A mount point, which cannot be renamed into place.
    #[error(
        "{path}: is a mount point; the output is renamed into place, which a mount point cannot be; name a new directory inside it"
    )]
    MountPoint {
        /// The output path.
        path: PathBuf,
    },
    /// A file, link or other non-directory is in the way.
    #[error("{path}: exists and is not a directory; remove it or choose another output")]
    NotADirectory {
        /// The output path.
        path: PathBuf,
    },
    /// A non-empty directory is in the way and `--force` was not given.
    #[error(
        "{path}: exists and is not empty; use --force to replace it once the new output is complete"
    )]
    NotEmpty {
        /// The output path.
        path: PathBuf,
    },
    /// A path with no last component to name the output by.
    #[error("{path}: has no directory name; give a path such as out/")]
    NoName {
        /// The output path.
        path: PathBuf,
    },
    /// Another run holds the output's lock.
    #[error(
        "{path}: another nemoconv run is writing this output ({owner}; lock {}); wait for it to end, or remove the lock if that run is gone",
        lock.display()
    )]
    Locked {
        /// The output path.
        path: PathBuf,
        /// Who holds the lock, as its owner marker says.
        owner: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock reappears each time a stale one is removed.
    #[error("{path}: lock {} keeps reappearing; is another run starting?", lock.display())]
    LockReappears {
        /// The output path.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Something changed at the output path during the run.
    #[error(
        "{path}: changed while this run was writing (something was created, removed or replaced there); nothing there was touched and the new output was discarded; look at it, then run again"
    )]
    Changed {
        /// The output path.
        path: PathBuf,
    },
    /// `finalize` or `finalize --abandon` without a work directory.
    #[error("{path}: no work directory {} to {action}{}", work.display(), if *action == "finalize" { "; run the workers first (--worker K/M)" } else { "" })]
    NoWorkDirectory {
        /// The output path.
        path: PathBuf,
        /// The work directory looked for.
        work: PathBuf,
        /// `finalize` or `abandon`.
        action: &'static str,
    },
    /// An output appeared while the workers ran.
    #[error(
        "{path}: appeared since the workers started; finalize never replaces an output, move it away and run finalize again"
    )]
    AppearedMeanwhile {
        /// The output path.
        path: PathBuf,
    },
    /// No worker has left its marker.
    #[error("{path}: no worker has finished yet; run the workers (--worker K/M) first")]
    NoWorkerFinished {
        /// The work directory.
        path: PathBuf,
    },
    /// Workers' markers disagree on the plan, the worker count or the split mode.
    #[error(
        "{path}: workers ran with different options, worker counts or split modes (worker {}/{} --split {}, worker {}/{} --split {}); to start over run `nemoconv finalize --abandon {}` (it removes {}), then rerun every worker with one command",
        first.index, first.count, first.split.name(), other.index, other.count, other.split.name(),
        output.display(),
        work_dir.display()
    )]
    WorkersDisagree {
        /// The marker that disagrees with the first one.
        path: PathBuf,
        /// The work directory.
        work_dir: PathBuf,
        /// The output the workers write.
        output: PathBuf,
        /// The first worker's share.
        first: Worker,
        /// The disagreeing worker's share.
        other: Worker,
    },
    /// A worker's marker cannot be read as one.
    #[error("{path}: damaged worker marker ({problem}); rerun that worker")]
    DamagedMarker {
        /// The marker.
        path: PathBuf,
        /// What is wrong with it.
        problem: MarkerProblem,
    },
    /// The workers' markers leave bytes of an output file unwritten.
    #[error(
        "{path}: bytes {from}..{to} of {len} were written by no worker (no marker lists them); rerun the workers or start over with `nemoconv finalize --abandon`"
    )]
    BytesUnwritten {
        /// The output file.
        path: PathBuf,
        /// First byte no marker lists.
        from: u64,
        /// End of the gap.
        to: u64,
        /// The file's planned size.
        len: u64,
    },
    /// Two markers list the same bytes of an output file.
    #[error(
        "{path}: bytes {from}..{to} are listed twice (again by worker {worker}); the markers disagree, start over with `nemoconv finalize --abandon`"
    )]
    BytesTwice {
        /// The output file.
        path: PathBuf,
        /// First byte listed twice.
        from: u64,
        /// End of the overlap.
        to: u64,
        /// The worker listing them again.
        worker: usize,
    },
    /// An output file the markers list has another size than planned.
    #[error("{path}: has {len} bytes where the plan says {planned}")]
    WrongSize {
        /// The output file (or its `.partial`).
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The planned size.
        planned: u64,
    },
    /// An output file the markers list is not there.
    #[error("{path}: is missing although the workers' markers list it; rerun the workers")]
    FileMissing {
        /// The output file.
        path: PathBuf,
    },
    /// Some workers have not left their marker.
    #[error(
        "{path}: workers {missing:?}{} of {count} have not finished; run them, then finalize again",
        more(*unfinished, missing.len())
    )]
    WorkersUnfinished {
        /// The work directory.
        path: PathBuf,
        /// The first workers without a marker.
        missing: Vec<usize>,
        /// How many workers have no marker.
        unfinished: usize,
        /// How many workers the run has.
        count: usize,
    },
    /// A shard still has its `.partial` name.
    #[error(
        "{path}: is still being written (a worker is running or died); wait for it or rerun it"
    )]
    StillWriting {
        /// The partial shard.
        path: PathBuf,
    },
    /// A written checkpoint of the work directory does not read back.
    #[error("{path}: not complete; rerun the worker that writes it")]
    Incomplete {
        /// The checkpoint directory.
        path: PathBuf,
        /// What reading it found.
        #[source]
        source: Box<crate::Error>,
    },
}

/// `" and N more"` when only `shown` of `all` are listed.
fn more(all: usize, shown: usize) -> String {
    if all > shown {
        format!(" and {} more", all - shown)
    } else {
        String::new()
    }
}

/// What makes a worker's marker unreadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkerProblem {
    /// Not the marker's JSON.
    #[error("not a marker")]
    Json(#[source] serde_json::Error),
    /// Written by another marker format.
    #[error("format {found} where this nemoconv writes {expected}")]
    Format {
        /// The marker's format.
        found: u32,
        /// This build's format.
        expected: u32,
    },
    /// Its digest does not match its contents.
    #[error("its digest does not match its contents")]
    Digest,
    /// Its contents name another worker than its file name.
    #[error("it says worker {index}/{count}")]
    Misnamed {
        /// The worker it names.
        index: usize,
        /// The worker count it names.
        count: usize,
    },
    /// A range names an output file the marker does not list.
    #[error("it names output file {file} of {files}")]
    NoSuchFile {
        /// The file index.
        file: usize,
        /// How many files it lists.
        files: usize,
    },
}
