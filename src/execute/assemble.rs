//! Cutting an [`Recipe::Assemble`](crate::plan::Recipe::Assemble) into jobs: each piece
//! goes into its row-major block of the output as its contiguous runs ([`runs`]: the whole
//! piece when it spans every trailing dimension, else one run per row, a strided placement).
//! A run is a copy, or a cast when the dtypes differ, cut to the usual job sizes. Runs are
//! ordered by output offset, so the runs of neighbouring pieces batch into one write. Knows
//! no tensor names.

use super::jobs::{CHUNK_BYTES, COPY_CHUNK_BYTES, Job, Op, elem_bytes, ranges};
use crate::catalog::{Run, runs};
use crate::dtype::Dtype;
use crate::plan::{Slot, Source};

/// Where the assembled tensor goes.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The output tensor's shape.
    pub shape: &'a [u64],
    /// The output dtype.
    pub out_dtype: Dtype,
    /// Index of the output file.
    pub file: usize,
    /// Absolute offset of the tensor's first byte.
    pub offset: u64,
}

/// Adds the jobs placing every piece of `sources`/`slots` into the tensor `at`.
pub fn push_jobs<'p>(jobs: &mut Vec<Job<'p>>, sources: &'p [Source], slots: &[Slot], at: At) {
    let mut all: Vec<(usize, Run)> = Vec::new();
    for (piece, slot) in slots.iter().enumerate() {
        let piece_runs = runs(&slot.shape, &slot.offset, at.shape);
        all.extend(piece_runs.into_iter().map(|r| (piece, r)));
    }
    all.sort_by_key(|(_, r)| r.out);
    let out_size = elem_bytes(at.out_dtype);
    for (piece, run) in all {
        let source = &sources[piece];
        let in_size = elem_bytes(source.dtype);
        let job = |offset, op| Job {
            source,
            out_dtype: at.out_dtype,
            file: at.file,
            offset,
            op,
        };
        let out_start = at.offset + run.out * out_size;
        if source.dtype == at.out_dtype {
            let src = run.src * in_size..(run.src + run.len) * in_size;
            for part in ranges(src.end - src.start, COPY_CHUNK_BYTES) {
                let op = Op::Copy(src.start + part.start..src.start + part.end);
                jobs.push(job(out_start + part.start, op));
            }
        } else {
            for part in ranges(run.len, CHUNK_BYTES / in_size.max(out_size)) {
                let op = Op::Cast(run.src + part.start..run.src + part.end);
                jobs.push(job(out_start + part.start * out_size, op));
            }
        }
    }
}
