//! Runs spread over processes or machines: each worker writes its share of the run into a
//! shared work directory and leaves a marker (see `marker`) with a digest of the plan and the
//! byte ranges it wrote; `finalize` checks that every worker finished the same plan and that
//! together they wrote every byte of every shard, then publishes.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Target;
use super::marker::{self, Marker, OutFile, Written};
use super::staging::Staging;
use super::writer;
use crate::catalog::{Catalog, INDEX_FILE};
use crate::error::{Error, OutputError, Result};

/// How the workers of a spread run divide it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The run's units of work (jobs of at most 32 MiB and shard headers), in run order, cut
    /// into M contiguous parts of about equal bytes; workers write into the same shard files.
    #[default]
    Bytes,
    /// Whole shard files dealt round-robin: worker K writes shards K, K + M, ...; for file
    /// systems where several hosts must not write one file.
    Shards,
}

impl Split {
    /// The name `--split` takes.
    pub fn name(self) -> &'static str {
        match self {
            Split::Bytes => "bytes",
            Split::Shards => "shards",
        }
    }

    /// Parses a name of [`Split::name`].
    pub fn parse(text: &str) -> Option<Split> {
        [Split::Bytes, Split::Shards]
            .into_iter()
            .find(|s| s.name() == text)
    }
}

/// One worker's share of a run spread over processes or machines: worker `index` of `count`,
/// dividing the run as `split` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker, `< count`.
    pub index: usize,
    /// How many workers share the run.
    pub count: usize,
    /// How the workers divide the run.
    pub split: Split,
}

/// Records that `worker` has written (and synced) `ranges` of the run's output `files`.
///
/// # Errors
/// [`Error::Io`] naming the marker.
pub fn mark_done(
    dir: &Path,
    worker: Worker,
    targets: &[Target],
    files: Vec<OutFile>,
    ranges: Vec<Written>,
) -> Result<()> {
    let marker = Marker::new(digest(targets), worker, files, ranges);
    let path = dir.join(Marker::file_name(worker.index, worker.count));
    writer::write_synced(&path, &marker.to_bytes())
}

/// A digest of everything the workers must agree on: every shard's name and header (names,
/// dtypes, shapes, offsets, metadata) and the files written beside them.
fn digest(targets: &[Target]) -> u64 {
    let mut canon = Canonical(Sha256::new());
    for target in targets {
        canon.field(target.subdir.as_os_str().as_bytes());
        canon.count(target.plan.shards.len());
        for shard in &target.plan.shards {
            canon.field(shard.file_name.as_bytes());
            canon.field(&shard.header);
        }
        canon.field(target.plan.copy_from.as_os_str().as_bytes());
        canon.count(target.plan.copy_files.len());
        for file in &target.plan.copy_files {
            canon.field(file.as_os_str().as_bytes());
        }
        canon.count(target.plan.written_files.len());
        for (path, bytes) in &target.plan.written_files {
            canon.field(path.as_os_str().as_bytes());
            canon.field(bytes);
        }
    }
    let sum = canon.0.finalize();
    u64::from_be_bytes(sum[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// A SHA-256 over length-prefixed fields: the same plan gives the same digest whatever the
/// toolchain that built each worker (the standard library's hasher promises no such thing).
struct Canonical(Sha256);

impl Canonical {
    fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }
}

/// Checks that every worker of a spread run finished the same plan and that together they
/// wrote every byte of every shard, then makes the output visible at once.
///
/// # Errors
/// [`OutputError`] when the work directory is missing, a worker has not finished, workers
/// ran different plans or split modes, a byte of a shard was written by no worker, a shard
/// is incomplete, or an output appeared meanwhile; [`Error::Interrupted`] when `cancel` is
/// set before the output is published.
pub fn finalize(output: &Path, cancel: &AtomicBool) -> Result<()> {
    Staging::finalize(output, |dir| {
        let (files, markers) = marker::check(dir)?;
        for file in &files {
            let path = dir.join(&file.path);
            let partial = marker::partial(&path);
            if partial.exists() {
                std::fs::rename(&partial, &path)
                    .map_err(Error::io(&path, "rename finished shard"))?;
            }
        }
        check_shards(dir, cancel)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        for path in markers {
            std::fs::remove_file(&path).map_err(Error::io(&path, "remove worker marker"))?;
        }
        Ok(())
    })
}

/// Removes the work directory of a spread run on `output`, so its workers can start over;
/// gives its path.
///
/// # Errors
/// [`OutputError`] when there is none.
pub fn abandon(output: &Path) -> Result<std::path::PathBuf> {
    Staging::abandon(output)
}

/// The OUT whose work directory is `dir` (`.OUT.nemoconv-tmp-work` beside it).
pub(super) fn output_of(dir: &Path) -> std::path::PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".nemoconv-tmp-work"))
        .unwrap_or(&name);
    dir.with_file_name(out)
}

/// Every output checkpoint below `dir` opens, with every shard its index names complete.
fn check_shards(dir: &Path, cancel: &AtomicBool) -> Result<()> {
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        for entry in std::fs::read_dir(&d)
            .map_err(Error::io(&d, "list directory"))?
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "partial") {
                return Err(OutputError::StillWriting { path }.into());
            }
        }
        if d.join(INDEX_FILE).exists() {
            Catalog::open(&d).map_err(|e| OutputError::Incomplete {
                path: d.clone(),
                source: Box::new(e),
            })?;
        }
    }
    Ok(())
}
