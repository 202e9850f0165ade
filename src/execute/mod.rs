//! The executor: runs a [`Plan`] into an output directory. It splits recipes into jobs of
//! bounded size, runs them in parallel with positioned writes into preallocated shards,
//! releases input pages once read, and commits the directory atomically. It knows no tensor
//! names and no model rules.

pub mod kernels;
mod staging;
mod writer;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

pub use staging::Staging;

use crate::catalog::{Catalog, INDEX_FILE};
use crate::dtype::{self, Dtype};
use crate::error::{Error, Result};
use crate::plan::{Plan, Recipe, Source};

/// Most bytes one job produces through a buffer (casts and transposes); bounds memory.
pub const CHUNK_BYTES: u64 = 16 << 20;
/// Most bytes one kernel-side copy job moves, so big tensors still spread over threads.
const COPY_CHUNK_BYTES: u64 = 256 << 20;

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
    /// Output tensors.
    pub tensors: usize,
    /// Output tensor bytes.
    pub bytes: u64,
    /// Output shard files.
    pub shards: usize,
    /// Wall time of the execution, seconds.
    pub seconds: f64,
}

/// How an output tensor's bytes are made from part of one source.
#[derive(Debug, Clone)]
enum Op {
    /// Copy source bytes `[start, end)` (relative to the source) unchanged.
    Copy(std::ops::Range<u64>),
    /// Convert source elements `[start, end)` to the output dtype.
    Cast(std::ops::Range<u64>),
    /// Write source columns `band` of a `[rows, cols]` matrix as output rows.
    Transpose {
        rows: u64,
        cols: u64,
        band: std::ops::Range<u64>,
    },
}

/// One unit of parallel work: part of one source into one place of one shard.
#[derive(Debug, Clone)]
struct Job<'p> {
    source: &'p Source,
    out_dtype: Dtype,
    /// Index into the run's shard files.
    file: usize,
    offset: u64,
    op: Op,
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

/// One worker's share of a run spread over processes or machines: worker `index` of `count`
/// writes shards `index, index + count, ...` of the run's one deterministic list of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker, `< count`.
    pub index: usize,
    /// How many workers share the run.
    pub count: usize,
}

/// Runs `targets` (planned from `catalog`) into `output`. Alone, the output appears only when
/// complete; as a [`Worker`], it writes its shards into a shared work directory that
/// [`finalize`] later makes visible.
///
/// # Errors
/// [`Error::Output`] for an unusable target, [`Error::Io`] naming the file on any read or
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
    let files = shard_files(targets, staging.dir(), worker);
    let mut outs = Vec::with_capacity(files.len());
    for f in &files {
        if f.mine {
            outs.push(Some(writer::create_shard(&f.partial, f.shard)?));
        } else {
            outs.push(None);
        }
    }
    let guard = PartialFiles(&files);
    let bases = targets.iter().scan(0, |next, t| {
        let base = *next;
        *next += t.plan.shards.len();
        Some(base)
    });
    let jobs: Vec<Job> = targets
        .iter()
        .zip(bases)
        .flat_map(|(target, base)| jobs(target.plan, base))
        .filter(|j| files[j.file].mine)
        .collect();
    let total: u64 = files
        .iter()
        .filter(|f| f.mine)
        .map(|f| f.shard.len_bytes - f.shard.header.len() as u64)
        .sum();
    progress.start(total);
    let result = jobs.par_iter().try_for_each(|job| {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let out = outs[job.file]
            .as_ref()
            .expect("jobs are filtered to this worker's files");
        let written = run(job, catalog, out, &files[job.file].partial)?;
        progress.advance(written);
        Ok(())
    });
    progress.finish();
    result?;
    for (f, out) in files.iter().zip(&outs) {
        if let Some(out) = out {
            out.sync_all().map_err(Error::io(&f.partial, "sync"))?;
            std::fs::rename(&f.partial, &f.path)
                .map_err(Error::io(&f.path, "rename finished shard"))?;
        }
    }
    std::mem::forget(guard);
    if worker.is_none_or(|w| w.index == 0) {
        for target in targets {
            let dir = staging.dir().join(target.subdir);
            writer::write_index(&dir, target.plan)?;
            writer::copy_files(&catalog.dir, &dir, &target.plan.copy_files, &[INDEX_FILE])?;
            for (rel, bytes) in &target.plan.written_files {
                writer::write_synced(&dir.join(rel), bytes)?;
            }
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    match worker {
        None => staging.commit()?,
        Some(_) => staging.keep(),
    }
    Ok(Summary {
        tensors: targets.iter().map(|t| t.plan.tensors.len()).sum(),
        bytes: total,
        shards: files.iter().filter(|f| f.mine).count(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks that every worker of a spread run has finished, then makes the output visible.
///
/// # Errors
/// [`Error::Output`] when the work directory is missing or a shard is absent or incomplete.
pub fn finalize(output: &Path) -> Result<()> {
    Staging::finalize(output, |dir| {
        let mut dirs = vec![dir.to_path_buf()];
        let mut checked = 0;
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d)
                .map_err(Error::io(&d, "list directory"))?
                .flatten()
            {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "partial") {
                    return Err(Error::Output { path, reason: "is still being written (a worker is running or died); wait for it or rerun it".to_string() });
                }
            }
            if d.join(INDEX_FILE).exists() {
                Catalog::open(&d).map_err(|e| Error::Output {
                    path: d.clone(),
                    reason: format!("not complete: {e}; rerun the worker that writes it"),
                })?;
                checked += 1;
            }
        }
        if checked == 0 {
            return Err(Error::Output {
                path: dir.to_path_buf(),
                reason: "has no index yet; worker 0 has not finished".to_string(),
            });
        }
        Ok(())
    })
}

/// One output shard file of a run, with where it is written and whether this process writes it.
struct ShardFile<'a> {
    shard: &'a crate::plan::OutputShard,
    path: std::path::PathBuf,
    partial: std::path::PathBuf,
    mine: bool,
}

/// Removes this process's unfinished `.partial` shards if the run fails.
struct PartialFiles<'a, 'b>(&'a [ShardFile<'b>]);

impl Drop for PartialFiles<'_, '_> {
    fn drop(&mut self) {
        for f in self.0.iter().filter(|f| f.mine) {
            let _ = std::fs::remove_file(&f.partial);
        }
    }
}

/// Every shard of every target in one deterministic order, dealt round-robin to workers.
fn shard_files<'a>(
    targets: &[Target<'a>],
    dir: &Path,
    worker: Option<Worker>,
) -> Vec<ShardFile<'a>> {
    let mut files = Vec::new();
    for target in targets {
        for shard in &target.plan.shards {
            let i = files.len();
            let path = dir.join(target.subdir).join(&shard.file_name);
            let mut partial = path.clone().into_os_string();
            partial.push(".partial");
            files.push(ShardFile {
                shard,
                path,
                partial: partial.into(),
                mine: worker.is_none_or(|w| i % w.count == w.index),
            });
        }
    }
    files
}

/// Splits every recipe into jobs of at most [`CHUNK_BYTES`] of output (copies: more).
fn jobs(plan: &Plan, base: usize) -> Vec<Job<'_>> {
    let mut jobs = Vec::new();
    for (t, place) in plan.tensors.iter().zip(&plan.placements) {
        let job = |source, offset, op| Job {
            source,
            out_dtype: t.dtype,
            file: base + place.shard,
            offset,
            op,
        };
        match &t.recipe {
            Recipe::Copy(s) => {
                let len = s.bytes.end - s.bytes.start;
                for part in ranges(len, COPY_CHUNK_BYTES) {
                    jobs.push(job(s, place.offset + part.start, Op::Copy(part)));
                }
            }
            Recipe::Cast(s) => {
                let (from, to) = (elem_bytes(s.dtype), elem_bytes(t.dtype));
                let numel = (s.bytes.end - s.bytes.start) / from;
                for part in ranges(numel, CHUNK_BYTES / from.max(to)) {
                    jobs.push(job(s, place.offset + part.start * to, Op::Cast(part)));
                }
            }
            Recipe::StackTransposed {
                sources,
                rows,
                cols,
            } => {
                let slot_bytes = rows * cols * elem_bytes(t.dtype);
                for (k, s) in sources.iter().enumerate() {
                    push_transpose(
                        &mut jobs,
                        job(s, place.offset + k as u64 * slot_bytes, Op::Copy(0..0)),
                        *rows,
                        *cols,
                    );
                }
            }
            Recipe::TransposeSlice { source, rows, cols } => push_transpose(
                &mut jobs,
                job(source, place.offset, Op::Copy(0..0)),
                *rows,
                *cols,
            ),
        }
    }
    jobs
}

/// Adds the transpose of one `[rows, cols]` source at `base.offset`, in bands of output rows.
fn push_transpose<'p>(jobs: &mut Vec<Job<'p>>, base: Job<'p>, rows: u64, cols: u64) {
    let widest = elem_bytes(base.source.dtype).max(elem_bytes(base.out_dtype));
    let out_row_bytes = rows * elem_bytes(base.out_dtype);
    let band_rows = (CHUNK_BYTES / (rows * widest).max(1)).max(1);
    for band in ranges(cols, band_rows) {
        jobs.push(Job {
            offset: base.offset + band.start * out_row_bytes,
            op: Op::Transpose { rows, cols, band },
            ..base.clone()
        });
    }
}

fn ranges(len: u64, step: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    let step = step.max(1);
    (0..len.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(len))
}

fn elem_bytes(dtype: Dtype) -> u64 {
    dtype::size_bytes(dtype).expect("plans only cast or transpose byte-sized dtypes") as u64
}

thread_local! {
    /// Per-thread buffer for transposed bytes, reused across jobs.
    static TRANSPOSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffers for F32 values while dequantizing, and for converted bytes.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The decoded scales of a job's source, if it has any.
fn read_scales(job: &Job, catalog: &Catalog) -> Option<Scales> {
    let scale = job.source.scale.as_ref()?;
    let raw = catalog.shard(scale.shard).bytes(&scale.bytes);
    let mut wide = vec![0u8; raw.len() / elem_bytes(scale.dtype) as usize * 4];
    dtype::cast_into(scale.dtype, Dtype::F32, raw, &mut wide);
    let values = wide
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let scale_cols = scale.cols.div_ceil(scale.block[1]);
    Some(Scales {
        values,
        scale_cols,
        block: scale.block,
    })
}

/// Block scales of a matrix, decoded to F32.
struct Scales {
    values: Vec<f32>,
    scale_cols: u64,
    block: [u64; 2],
}

/// Converts `src` elements to `to`: through F32 multiplied by their scales when the source is
/// quantized, else directly (no copy when the dtypes agree). Element `k`'s matrix position is `at(k)`.
fn convert<'b>(
    from: Dtype,
    to: Dtype,
    src: &'b [u8],
    scales: Option<&Scales>,
    at: &dyn Fn(u64) -> (u64, u64),
    wide: &'b mut Vec<u8>,
    out: &'b mut Vec<u8>,
) -> &'b [u8] {
    let n = src.len() / elem_bytes(from) as usize;
    let Some(scales) = scales else {
        if from == to {
            return src;
        }
        out.resize(n * elem_bytes(to) as usize, 0);
        dtype::cast_into(from, to, src, out);
        return out;
    };
    wide.resize(n * 4, 0);
    dtype::cast_into(from, Dtype::F32, src, wide);
    for (k, value) in wide.chunks_exact_mut(4).enumerate() {
        let (r, c) = at(k as u64);
        let index = (r / scales.block[0]) * scales.scale_cols + c / scales.block[1];
        let scaled = f32::from_le_bytes([value[0], value[1], value[2], value[3]])
            * scales.values[index as usize];
        value.copy_from_slice(&scaled.to_le_bytes());
    }
    out.resize(n * elem_bytes(to) as usize, 0);
    dtype::cast_into(Dtype::F32, to, wide, out);
    out
}

/// Runs one job; returns the output bytes written.
fn run(job: &Job, catalog: &Catalog, out: &File, out_path: &Path) -> Result<u64> {
    let shard = catalog.shard(job.source.shard);
    let src_all = shard.bytes(&job.source.bytes);
    let from = job.source.dtype;
    let written = match &job.op {
        Op::Copy(part) => {
            let abs = job.source.bytes.start + part.start..job.source.bytes.start + part.end;
            writer::copy_range(shard, &abs, out, job.offset, out_path)?;
            return Ok(part.end - part.start);
        }
        Op::Cast(part) => {
            let size = elem_bytes(from);
            let src = &src_all[(part.start * size) as usize..(part.end * size) as usize];
            let scales = read_scales(job, catalog);
            let at = |k: u64| {
                let i = part.start + k;
                let cols = job.source.scale.as_ref().map_or(1, |s| s.cols);
                (i / cols, i % cols)
            };
            SCRATCH.with_borrow_mut(|(wide, buf)| {
                let bytes = convert(from, job.out_dtype, src, scales.as_ref(), &at, wide, buf);
                writer::write_at(out, bytes, job.offset, out_path).map(|()| bytes.len() as u64)
            })?
        }
        Op::Transpose { rows, cols, band } => {
            let scales = read_scales(job, catalog);
            let at = |k: u64| (k % rows, band.start + k / rows);
            TRANSPOSED.with_borrow_mut(|transposed| {
                let size = elem_bytes(from) as usize;
                transposed.resize(((band.end - band.start) * rows) as usize * size, 0);
                kernels::transpose_band(
                    src_all,
                    *rows as usize,
                    *cols as usize,
                    size,
                    band.start as usize..band.end as usize,
                    transposed,
                );
                SCRATCH.with_borrow_mut(|(wide, buf)| {
                    let bytes = convert(
                        from,
                        job.out_dtype,
                        transposed,
                        scales.as_ref(),
                        &at,
                        wide,
                        buf,
                    );
                    writer::write_at(out, bytes, job.offset, out_path).map(|()| bytes.len() as u64)
                })
            })?
        }
    };
    if let Some(range) = read_range(job) {
        shard.release(&range);
    }
    Ok(written)
}

/// The input bytes a buffered job has finished reading, whose pages can leave memory: a cast's
/// own part, or a whole transposed source after its last band.
fn read_range(job: &Job) -> Option<std::ops::Range<u64>> {
    let start = job.source.bytes.start;
    match &job.op {
        Op::Copy(_) => None,
        Op::Cast(part) => {
            let size = elem_bytes(job.source.dtype);
            Some(start + part.start * size..start + part.end * size)
        }
        Op::Transpose { cols, band, .. } => (band.end == *cols).then(|| job.source.bytes.clone()),
    }
}

/// The index's `weight_map`: tensor name → shard file name.
pub fn weight_map(plan: &Plan) -> BTreeMap<&str, &str> {
    plan.tensors
        .iter()
        .zip(&plan.placements)
        .map(|(t, p)| (t.name.as_str(), plan.shards[p.shard].file_name.as_str()))
        .collect()
}
