//! The executor: runs a [`Plan`] into an output directory. It splits recipes into jobs of
//! bounded size and runs them in order on every thread, reading ahead of them in large
//! requests, with positioned reads and writes into preallocated shards, and commits the
//! directory atomically. It knows no tensor names and no model rules.

mod assemble;
mod claim;
mod jobs;
pub mod kernels;
mod marker;
mod owner;
mod prefetch;
mod run;
mod share;
mod spread;
mod staging;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

pub use spread::{Split, Worker, abandon, finalize};
pub use staging::Staging;

use crate::catalog::{Catalog, INDEX_FILE};
use crate::error::{Error, Result};
use crate::plan::Plan;

pub use jobs::CHUNK_BYTES;
pub(crate) use jobs::ranges;

/// Receives progress from the executor; the binary draws it, the library never prints.
pub trait Progress: Sync {
    /// Called once with the bytes the run will write.
    fn start(&self, _total_bytes: u64) {}
    /// Called as output bytes are written.
    fn advance(&self, _bytes: u64) {}
    /// Called once when the writing is over, successful or not.
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a finished run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Output tensors written (by a worker: those it wrote at least one byte of).
    pub tensors: usize,
    /// Output tensor bytes written (headers not counted).
    pub bytes: u64,
    /// Output shard files written (by a worker: those it wrote at least one byte of).
    pub shards: usize,
    /// Bytes of the non-weight files copied beside the shards (config, tokenizer, ...).
    pub copied_bytes: u64,
    /// Wall time of the execution, seconds.
    pub seconds: f64,
    /// Things the user should know that did not stop the run (e.g. temporary directories of
    /// other runs left alone).
    pub notes: Vec<String>,
}

/// One output checkpoint of a run: a plan and the subdirectory of the output it goes to
/// (empty for the output itself; `rank-...` for each slice of a multi-slice run).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Where below the output directory.
    pub subdir: &'a Path,
    /// What to write there.
    pub plan: &'a Plan,
}

/// Runs `targets` (planned from `catalog`) into `output`. Alone, the output appears only when
/// complete; as a [`Worker`], it writes its shards into a shared work directory that
/// [`finalize`] later makes visible.
///
/// # Errors
/// [`crate::error::OutputError`] for an unusable target, [`Error::Io`] naming the file on any read or
/// write failure (a full disk included), [`Error::Interrupted`] when `cancel` is set.
pub fn execute(
    targets: &[Target],
    catalog: &Catalog,
    output: &Path,
    force: bool,
    worker: Option<Worker>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary> {
    let started = Instant::now();
    let inputs: Vec<&Path> = catalog.parts.iter().map(|p| p.dir.as_path()).collect();
    let staging = match worker {
        None => Staging::new(output, &inputs, force)?,
        Some(_) => Staging::shared(output, &inputs)?,
    };
    let copies_files = worker.is_none_or(|w| w.index == 0);
    // Every file to copy is opened before the first byte is written (issue 11, item 8).
    let copied_bytes = match copies_files {
        true => targets
            .iter()
            .map(|t| {
                let from = catalog.dir.join(&t.plan.copy_from);
                writer::check_copies(&from, &t.plan.copy_files, &[INDEX_FILE])
            })
            .sum::<Result<u64>>()?,
        false => 0,
    };
    let files = shard_files(targets, staging.dir());
    let bases = targets.iter().scan(0, |next, t| {
        let base = *next;
        *next += t.plan.shards.len();
        Some(base)
    });
    let all: Vec<jobs::Job> = targets
        .iter()
        .zip(bases)
        .flat_map(|(target, base)| jobs::jobs(target.plan, base))
        .collect();
    let header_lens: Vec<u64> = files.iter().map(|f| f.shard.header.len() as u64).collect();
    let share = share::Share::of(worker, &header_lens, all);
    let touched: Vec<bool> = (0..files.len()).map(|f| share.touches(f)).collect();
    // A file is this process's alone in a plain run or in shard mode: it may remove it on
    // failure. Files shared by byte ranges stay: other workers are writing them.
    let whole = worker.is_none_or(|w| w.split == Split::Shards);
    let guard = PartialFiles {
        files: &files,
        mine: if whole {
            touched.clone()
        } else {
            vec![false; files.len()]
        },
    };
    // Every shard is made (and its space reserved) before the first byte, then closed: a
    // batch opens its one file, so descriptors stay bounded by the threads (issue 11, item 8).
    for (f, _) in files.iter().zip(&touched).filter(|(_, t)| **t) {
        match worker {
            None => drop(writer::create_shard(&f.partial, f.shard)?),
            Some(_) => writer::open_shared_shard(&f.partial, f.shard, share.headers[f.index])?,
        }
    }
    let total: u64 = share.jobs.iter().map(jobs::Job::out_len).sum();
    let tensors = tensors_touched(targets, &share);
    let ranges = share.ranges;
    let batches = jobs::batches(share.jobs);
    progress.start(total + copied_bytes);
    let result = run_in_order(&batches, catalog, &files, progress, cancel);
    progress.finish();
    result?;
    for (f, _) in files.iter().zip(&touched).filter(|(_, t)| **t) {
        let out = writer::open_shard(&f.partial)?;
        out.file.sync_all().map_err(Error::io(&f.partial, "sync"))?;
        // A worker's shards are renamed by `finalize`, once every worker wrote its part.
        if worker.is_none() {
            std::fs::rename(&f.partial, &f.path)
                .map_err(Error::io(&f.path, "rename finished shard"))?;
        }
    }
    std::mem::forget(guard);
    if copies_files {
        for target in targets {
            let dir = staging.dir().join(target.subdir);
            // A plan may bring its own index (consolidate writes the reference's).
            if !target
                .plan
                .written_files
                .contains_key(Path::new(INDEX_FILE))
            {
                writer::write_index(&dir, target.plan)?;
            }
            let advance = |n| progress.advance(n);
            writer::copy_files(
                &catalog.dir.join(&target.plan.copy_from),
                &dir,
                &target.plan.copy_files,
                &[INDEX_FILE],
                &advance,
                cancel,
            )?;
            for (rel, bytes) in &target.plan.written_files {
                writer::write_synced(&dir.join(rel), bytes)?;
            }
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let notes = staging.notes().to_vec();
    match worker {
        None => staging.commit()?,
        Some(worker) => {
            let out_files = (files.iter())
                .map(|f| marker::OutFile {
                    path: f.rel.to_string_lossy().into_owned(),
                    len: f.shard.len_bytes,
                })
                .collect();
            let written = (ranges.iter())
                .map(|(file, r)| marker::Written {
                    file: *file,
                    offset: r.start,
                    len: r.end - r.start,
                })
                .collect();
            spread::mark_done(staging.dir(), worker, targets, out_files, written)?;
            staging.keep();
        }
    }
    Ok(Summary {
        tensors,
        bytes: total,
        shards: touched.iter().filter(|t| **t).count(),
        copied_bytes,
        seconds: started.elapsed().as_secs_f64(),
        notes,
    })
}

/// The output tensors of which `share` writes at least one byte (a tensor split between
/// workers counts for each of them; an empty tensor for whoever writes its shard's header).
fn tensors_touched(targets: &[Target], share: &share::Share) -> usize {
    let mut base = 0;
    let mut count = 0;
    for target in targets {
        for (t, p) in target.plan.tensors.iter().zip(&target.plan.placements) {
            let file = base + p.shard;
            let len = t.len_bytes().unwrap_or(0);
            let hit = match len {
                0 => share.headers[file],
                _ => (share.ranges.iter())
                    .any(|(f, r)| *f == file && r.start < p.offset + len && p.offset < r.end),
            };
            count += usize::from(hit);
        }
        base += target.plan.shards.len();
    }
    count
}

/// Runs `batches` on every thread of the current pool, each thread taking the next batch in
/// order (so input is read roughly in the order the prefetch schedule expects), and stops at
/// the first failure or when `cancel` is set.
fn run_in_order(
    batches: &[Vec<jobs::Job>],
    catalog: &Catalog,
    files: &[ShardFile],
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    let schedule = prefetch::Prefetch::new(batches);
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    rayon::broadcast(|_| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = batches.get(i) else { break };
            if cancel.load(Ordering::Relaxed) {
                fail(Error::Interrupted);
                break;
            }
            if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                break;
            }
            schedule.advance(catalog, i);
            let path = &files[batch[0].file].partial;
            let written =
                writer::open_shard(path).and_then(|out| run::run_batch(batch, catalog, &out, path));
            match written {
                Ok(written) => {
                    schedule.finish(catalog, i);
                    progress.advance(written);
                }
                Err(e) => {
                    fail(e);
                    break;
                }
            }
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One output shard file of a run, with where it is written.
struct ShardFile<'a> {
    /// Index in the run's list of output files.
    index: usize,
    shard: &'a crate::plan::OutputShard,
    /// Below the work directory.
    rel: std::path::PathBuf,
    path: std::path::PathBuf,
    partial: std::path::PathBuf,
}

/// Removes the unfinished `.partial` shards this process alone writes if the run fails.
struct PartialFiles<'a, 'b> {
    files: &'a [ShardFile<'b>],
    mine: Vec<bool>,
}

impl Drop for PartialFiles<'_, '_> {
    fn drop(&mut self) {
        for (f, _) in self.files.iter().zip(&self.mine).filter(|(_, m)| **m) {
            let _ = std::fs::remove_file(&f.partial);
        }
    }
}

/// Every shard of every target in one deterministic order: the run's output files.
fn shard_files<'a>(targets: &[Target<'a>], dir: &Path) -> Vec<ShardFile<'a>> {
    let mut files = Vec::new();
    for target in targets {
        for shard in &target.plan.shards {
            let rel = target.subdir.join(&shard.file_name);
            let path = dir.join(&rel);
            files.push(ShardFile {
                index: files.len(),
                shard,
                partial: marker::partial(&path),
                rel,
                path,
            });
        }
    }
    files
}

/// The index's `weight_map`: tensor name → shard file name.
pub fn weight_map(plan: &Plan) -> BTreeMap<&str, &str> {
    plan.tensors
        .iter()
        .zip(&plan.placements)
        .map(|(t, p)| (t.name.as_str(), plan.shards[p.shard].file_name.as_str()))
        .collect()
}
