//! Runs spread over processes or machines: each worker writes its share of the shards into a
//! shared work directory and leaves a marker with a digest of the plan; `finalize` checks that
//! every worker finished the same plan and that every shard is complete, then publishes.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::Target;
use super::staging::Staging;
use super::writer;
use crate::catalog::{Catalog, INDEX_FILE};
use crate::error::{Error, OutputError, Result};

/// Names of the markers workers leave: `.nemoconv-worker-K-of-M`.
const MARKER_PREFIX: &str = ".nemoconv-worker-";

/// One worker's share of a run spread over processes or machines: worker `index` of `count`
/// writes shards `index, index + count, ...` of the run's one deterministic list of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker, `< count`.
    pub index: usize,
    /// How many workers share the run.
    pub count: usize,
}

/// Records that `worker` has written all its shards of `targets`.
///
/// # Errors
/// [`Error::Io`] naming the marker.
pub fn mark_done(dir: &Path, worker: Worker, targets: &[Target]) -> Result<()> {
    let path = dir.join(format!(
        "{MARKER_PREFIX}{}-of-{}",
        worker.index, worker.count
    ));
    writer::write_synced(&path, format!("{:016x}\n", digest(targets)).as_bytes())
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

/// Checks that every worker of a spread run finished the same plan and every shard is
/// complete, then makes the output visible at once.
///
/// # Errors
/// [`OutputError`] when the work directory is missing, a worker has not finished, workers
/// ran different plans, a shard is incomplete, or an output appeared meanwhile;
/// [`Error::Interrupted`] when `cancel` is set before the output is published.
pub fn finalize(output: &Path, cancel: &AtomicBool) -> Result<()> {
    Staging::finalize(output, |dir| {
        let markers = check_markers(dir)?;
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

/// Every worker 0..M left a marker, all with one M and one digest; gives the markers' paths.
fn check_markers(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut markers = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(Error::io(dir, "list work directory"))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((k, m)) = name
            .strip_prefix(MARKER_PREFIX)
            .and_then(|r| r.split_once("-of-"))
        {
            let text =
                std::fs::read_to_string(entry.path()).map_err(Error::io(entry.path(), "read"))?;
            markers.push((k.parse::<usize>().ok(), m.parse::<usize>().ok(), text));
        }
    }
    let path = || dir.to_path_buf();
    let Some((_, Some(count), digest)) = markers.first().cloned() else {
        return Err(OutputError::NoWorkerFinished { path: path() }.into());
    };
    if markers
        .iter()
        .any(|(_, m, d)| *m != Some(count) || *d != digest)
    {
        return Err(OutputError::WorkersDisagree {
            path: path(),
            output: output_of(dir),
        }
        .into());
    }
    let missing: Vec<usize> = (0..count)
        .filter(|k| !markers.iter().any(|(i, _, _)| *i == Some(*k)))
        .collect();
    if !missing.is_empty() {
        return Err(OutputError::WorkersUnfinished {
            path: path(),
            missing,
            count,
        }
        .into());
    }
    Ok((0..count)
        .map(|k| dir.join(format!("{MARKER_PREFIX}{k}-of-{count}")))
        .collect())
}

/// The OUT whose work directory is `dir` (`.OUT.nemoconv-tmp-work` beside it).
fn output_of(dir: &Path) -> std::path::PathBuf {
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
