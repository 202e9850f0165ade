//! Cutting an [`Recipe::Assemble`](crate::plan::Recipe::Assemble) into jobs: each piece
//! goes into its row-major block of the output as contiguous runs (the whole piece when it
//! spans every trailing dimension, else one run per row of the partial dimension, a strided
//! placement). A run is a copy, or a cast when the dtypes differ, cut to the usual job sizes.
//! Runs are ordered by output offset, so the runs of neighbouring pieces batch into one write.
//! Knows no tensor names.

use super::jobs::{CHUNK_BYTES, COPY_CHUNK_BYTES, Job, Op, elem_bytes, ranges};
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

/// One contiguous run: `len` elements from element `src` of a piece to element `out` of
/// the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    piece: usize,
    src: u64,
    out: u64,
    len: u64,
}

/// Adds the jobs placing every piece of `sources`/`slots` into the tensor `at`.
pub fn push_jobs<'p>(jobs: &mut Vec<Job<'p>>, sources: &'p [Source], slots: &[Slot], at: At) {
    let mut runs: Vec<Run> = Vec::new();
    for (piece, slot) in slots.iter().enumerate() {
        piece_runs(piece, slot, at.shape, &mut runs);
    }
    runs.sort_by_key(|r| r.out);
    let out_size = elem_bytes(at.out_dtype);
    for run in runs {
        let source = &sources[run.piece];
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

/// The contiguous runs of one piece, in its storage order.
fn piece_runs(piece: usize, slot: &Slot, shape: &[u64], runs: &mut Vec<Run>) {
    let numel: u64 = slot.shape.iter().product();
    if numel == 0 {
        return;
    }
    // Dims after the last partial one are whole, so each run spans from there to the end.
    let Some(k) = (0..shape.len()).rev().find(|&d| slot.shape[d] != shape[d]) else {
        runs.push(Run {
            piece,
            src: 0,
            out: 0,
            len: numel,
        });
        return;
    };
    let len: u64 = slot.shape[k..].iter().product();
    let strides = row_major_strides(shape);
    let outer = &slot.shape[..k];
    let mut index = vec![0u64; k];
    for n in 0..numel / len {
        let out = (0..k)
            .map(|d| (slot.offset[d] + index[d]) * strides[d])
            .sum::<u64>()
            + slot.offset[k] * strides[k];
        runs.push(Run {
            piece,
            src: n * len,
            out,
            len,
        });
        for d in (0..k).rev() {
            index[d] += 1;
            if index[d] < outer[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Elements between consecutive indices of each dimension of a row-major tensor.
fn row_major_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_of(slot_shape: &[u64], offset: &[u64], shape: &[u64]) -> Vec<(u64, u64, u64)> {
        let slot = Slot {
            shape: slot_shape.to_vec(),
            offset: offset.to_vec(),
        };
        let mut runs = Vec::new();
        piece_runs(0, &slot, shape, &mut runs);
        runs.iter().map(|r| (r.src, r.out, r.len)).collect()
    }

    #[test]
    fn a_row_piece_is_one_run_at_its_row() {
        assert_eq!(runs_of(&[2, 4], &[3, 0], &[5, 4]), vec![(0, 12, 8)]);
    }

    #[test]
    fn a_column_piece_is_one_run_per_row() {
        assert_eq!(
            runs_of(&[3, 2], &[0, 2], &[3, 4]),
            vec![(0, 2, 2), (2, 6, 2), (4, 10, 2)]
        );
    }

    #[test]
    fn a_middle_block_of_a_3d_tensor_runs_over_its_outer_indices() {
        // [2, 3, 4] tensor, piece [2, 1, 4] at [0, 1, 0]: rows (0,1) and (1,1).
        assert_eq!(
            runs_of(&[2, 1, 4], &[0, 1, 0], &[2, 3, 4]),
            vec![(0, 4, 4), (4, 16, 4)]
        );
    }

    #[test]
    fn scalars_and_empty_pieces() {
        assert_eq!(runs_of(&[], &[], &[]), vec![(0, 0, 1)]);
        assert_eq!(runs_of(&[0, 4], &[5, 0], &[5, 4]), vec![]);
    }
}
