//! Cutting a plan into jobs: each job makes one contiguous run of output bytes from part of
//! one source, small enough to bound memory; runs of small jobs are batched so each batch is
//! one positioned write. Knows recipes, not tensor names.

use std::ops::Range;

use crate::dtype::{self, Dtype};
use crate::plan::{Plan, Recipe, Source};

/// Most bytes one job or batch produces through a buffer: bounds memory per thread, and small
/// enough to stay in cache until the kernel copies it (pwrites of 4 MiB ran 2-5x slower
/// here than of 1 MiB, `dd bs=4M` vs `bs=1M` likewise).
pub const CHUNK_BYTES: u64 = 1 << 20;
/// Most bytes one kernel-side copy job moves: big tensors spread over threads, and the
/// prefetch window (see `prefetch`) stays ahead of each copy.
pub(super) const COPY_CHUNK_BYTES: u64 = 16 << 20;
/// Most source bytes one transpose job reads at once: a whole expert matrix (10 MiB for
/// Nano) in one read, so the disk sees one large request instead of strided pages. Larger
/// matrices are read in bands of whole columns, one row segment at a time.
pub const READ_BAND_BYTES: u64 = 32 << 20;
/// Jobs smaller than this are batched with their neighbours to save system calls.
const SMALL_JOB_BYTES: u64 = 1 << 20;

/// How a job makes its output bytes from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy source bytes `[start, end)` (relative to the source) unchanged.
    Copy(Range<u64>),
    /// Convert source elements `[start, end)` to the output dtype.
    Cast(Range<u64>),
    /// Write source columns `band` of a `[rows, cols]` matrix as output rows; the band's
    /// source bytes are read at once, so it spans at most [`READ_BAND_BYTES`].
    Transpose {
        /// Rows of the source matrix.
        rows: u64,
        /// Columns of the source matrix.
        cols: u64,
        /// The source columns this job writes.
        band: Range<u64>,
    },
}

/// One unit of work: part of one source into one place of one output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job<'p> {
    /// What is read.
    pub source: &'p Source,
    /// The output dtype.
    pub out_dtype: Dtype,
    /// Index into the run's output files.
    pub file: usize,
    /// Absolute offset of the first output byte.
    pub offset: u64,
    /// How the bytes are made.
    pub op: Op,
}

impl Job<'_> {
    /// Output bytes this job writes.
    pub fn out_len(&self) -> u64 {
        match &self.op {
            Op::Copy(part) => part.end - part.start,
            Op::Cast(part) => (part.end - part.start) * elem_bytes(self.out_dtype),
            Op::Transpose { rows, band, .. } => {
                (band.end - band.start) * rows * elem_bytes(self.out_dtype)
            }
        }
    }
}

/// The jobs of `plan`, whose shard `i` is the run's output file `base + i`, in output order.
pub fn jobs(plan: &Plan, base: usize) -> Vec<Job<'_>> {
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
                for part in ranges(s.bytes.end - s.bytes.start, COPY_CHUNK_BYTES) {
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
                    let whole = Op::Transpose {
                        rows: *rows,
                        cols: *cols,
                        band: 0..*cols,
                    };
                    push_bands(
                        &mut jobs,
                        job(s, place.offset + k as u64 * slot_bytes, whole),
                    );
                }
            }
            Recipe::TransposeSlice { source, rows, cols } => {
                let whole = Op::Transpose {
                    rows: *rows,
                    cols: *cols,
                    band: 0..*cols,
                };
                push_bands(&mut jobs, job(source, place.offset, whole));
            }
            Recipe::Assemble { sources, slots } => {
                let at = super::assemble::At {
                    shape: &t.shape,
                    out_dtype: t.dtype,
                    file: base + place.shard,
                    offset: place.offset,
                };
                super::assemble::push_jobs(&mut jobs, sources, slots, at);
            }
        }
    }
    jobs
}

/// Groups consecutive small jobs that write one contiguous run of the same file, up to
/// [`CHUNK_BYTES`] a group; every other job stands alone.
pub fn batches<'p>(jobs: Vec<Job<'p>>) -> Vec<Vec<Job<'p>>> {
    let mut out: Vec<Vec<Job<'p>>> = Vec::new();
    let mut open_bytes = 0u64;
    for job in jobs {
        let len = job.out_len();
        let joins = out.last().and_then(|b| b.last()).is_some_and(|last| {
            len < SMALL_JOB_BYTES
                && last.out_len() < SMALL_JOB_BYTES
                && last.file == job.file
                && last.offset + last.out_len() == job.offset
                && open_bytes + len <= CHUNK_BYTES
        });
        match out.last_mut() {
            Some(batch) if joins => {
                batch.push(job);
                open_bytes += len;
            }
            _ => {
                out.push(vec![job]);
                open_bytes = len;
            }
        }
    }
    out
}

/// Adds a whole-matrix transpose job as bands of source columns of at most
/// [`READ_BAND_BYTES`]: one band, the whole matrix, unless the matrix is larger.
fn push_bands<'p>(jobs: &mut Vec<Job<'p>>, base: Job<'p>) {
    let Op::Transpose { rows, cols, .. } = base.op else {
        unreachable!("push_bands is given transpose jobs only")
    };
    let out_row_bytes = rows * elem_bytes(base.out_dtype);
    let band_cols = (READ_BAND_BYTES / (rows * elem_bytes(base.source.dtype)).max(1)).max(1);
    for band in ranges(cols, band_cols) {
        jobs.push(Job {
            offset: base.offset + band.start * out_row_bytes,
            op: Op::Transpose { rows, cols, band },
            ..base.clone()
        });
    }
}

/// The source bytes a job reads, as absolute ranges of its source's shard: one range, or
/// one per row for a band of a matrix too large to read whole.
pub fn reads(job: &Job) -> Vec<Range<u64>> {
    let start = job.source.bytes.start;
    match &job.op {
        Op::Copy(part) => std::iter::once(start + part.start..start + part.end).collect(),
        Op::Cast(part) => {
            let size = elem_bytes(job.source.dtype);
            std::iter::once(start + part.start * size..start + part.end * size).collect()
        }
        Op::Transpose { cols, band, .. } if band.start == 0 && band.end == *cols => {
            std::iter::once(job.source.bytes.clone()).collect()
        }
        Op::Transpose { rows, cols, band } => {
            let size = elem_bytes(job.source.dtype);
            (0..*rows)
                .map(|r| {
                    let row = start + r * cols * size;
                    row + band.start * size..row + band.end * size
                })
                .collect()
        }
    }
}

/// `0..len` cut into consecutive ranges of `step` (at least 1), the last one shorter: the one
/// chunk splitter of the crate (jobs here, compared chunks in `verify`).
pub(crate) fn ranges(len: u64, step: u64) -> impl Iterator<Item = Range<u64>> {
    let step = step.max(1);
    (0..len.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(len))
}

/// Bytes per element of a dtype the plan converts or transposes.
pub fn elem_bytes(dtype: Dtype) -> u64 {
    dtype::size_bytes(dtype).expect("plans only cast or transpose byte-sized dtypes") as u64
}
