//! Running a batch of jobs: produce each job's bytes into a reusable per-thread buffer (or
//! copy in the kernel), write the batch with one positioned write, then release the input
//! pages it read. Pure byte moving; knows no tensor names.

use std::cell::RefCell;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use super::jobs::{Job, Op, elem_bytes};
use super::{kernels, writer};
use crate::catalog::{Catalog, ShardId};
use crate::dtype::{self, Dtype};
use crate::error::Result;

thread_local! {
    /// Per-thread output buffer of a batch, reused across batches.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffer of transposed source bytes before conversion.
    static TRANSPOSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffer of F32 values while dequantizing.
    static WIDE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs one batch (jobs writing one contiguous run of `out`); returns the bytes written.
///
/// # Errors
/// [`crate::Error::Io`] naming `out_path` when a write fails.
pub fn run_batch(batch: &[Job], catalog: &Catalog, out: &File, out_path: &Path) -> Result<u64> {
    if let [
        job @ Job {
            op: Op::Copy(part), ..
        },
    ] = batch
    {
        let abs = job.source.bytes.start + part.start..job.source.bytes.start + part.end;
        writer::copy_range(
            catalog.shard(job.source.shard),
            &abs,
            out,
            job.offset,
            out_path,
        )?;
        return Ok(part.end - part.start);
    }
    let total: u64 = batch.iter().map(Job::out_len).sum();
    OUTPUT.with_borrow_mut(|buf| {
        buf.resize(total as usize, 0);
        let mut at = 0usize;
        for job in batch {
            let len = job.out_len() as usize;
            produce(job, catalog, &mut buf[at..at + len]);
            at += len;
        }
        writer::write_at(out, buf, batch[0].offset, out_path)
    })?;
    release(batch, catalog);
    Ok(total)
}

/// Makes one job's output bytes into `dst`.
fn produce(job: &Job, catalog: &Catalog, dst: &mut [u8]) {
    let src_all = catalog.shard(job.source.shard).bytes(&job.source.bytes);
    let from = job.source.dtype;
    let scales = read_scales(job, catalog);
    match &job.op {
        Op::Copy(part) => dst.copy_from_slice(&src_all[part.start as usize..part.end as usize]),
        Op::Cast(part) => {
            let size = elem_bytes(from);
            let src = &src_all[(part.start * size) as usize..(part.end * size) as usize];
            let cols = job.source.scale.as_ref().map_or(1, |s| s.cols);
            let at = |k: u64| ((part.start + k) / cols, (part.start + k) % cols);
            convert(from, job.out_dtype, src, scales.as_ref(), &at, dst);
        }
        Op::Transpose { rows, cols, band } => {
            let size = elem_bytes(from) as usize;
            let band_usize = band.start as usize..band.end as usize;
            if from == job.out_dtype && scales.is_none() {
                kernels::transpose_band(
                    src_all,
                    *rows as usize,
                    *cols as usize,
                    size,
                    band_usize,
                    dst,
                );
                return;
            }
            let at = |k: u64| (k % rows, band.start + k / rows);
            TRANSPOSED.with_borrow_mut(|transposed| {
                transposed.resize(dst.len() / elem_bytes(job.out_dtype) as usize * size, 0);
                kernels::transpose_band(
                    src_all,
                    *rows as usize,
                    *cols as usize,
                    size,
                    band_usize,
                    transposed,
                );
                convert(from, job.out_dtype, transposed, scales.as_ref(), &at, dst);
            });
        }
    }
}

/// Block scales of a matrix, decoded to F32.
struct Scales {
    values: Vec<f32>,
    scale_cols: u64,
    block: [u64; 2],
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
    Some(Scales {
        values,
        scale_cols: scale.cols.div_ceil(scale.block[1]),
        block: scale.block,
    })
}

/// Converts `src` elements into `dst` in the output dtype: through F32 multiplied by their
/// block scales when the source is quantized. Element `k` sits at matrix position `at(k)`.
fn convert(
    from: Dtype,
    to: Dtype,
    src: &[u8],
    scales: Option<&Scales>,
    at: &dyn Fn(u64) -> (u64, u64),
    dst: &mut [u8],
) {
    let Some(scales) = scales else {
        if from == to {
            dst.copy_from_slice(src);
        } else {
            dtype::cast_into(from, to, src, dst);
        }
        return;
    };
    WIDE.with_borrow_mut(|wide| {
        wide.resize(src.len() / elem_bytes(from) as usize * 4, 0);
        dtype::cast_into(from, Dtype::F32, src, wide);
        for (k, value) in wide.chunks_exact_mut(4).enumerate() {
            let (r, c) = at(k as u64);
            let index = (r / scales.block[0]) * scales.scale_cols + c / scales.block[1];
            let scaled = f32::from_le_bytes([value[0], value[1], value[2], value[3]])
                * scales.values[index as usize];
            value.copy_from_slice(&scaled.to_le_bytes());
        }
        dtype::cast_into(Dtype::F32, to, wide, dst);
    });
}

/// Drops the input pages a batch has finished reading, one call per contiguous span: a cast's
/// own part, or a whole transposed source after its last band. Copies through the kernel
/// never map their pages.
fn release(batch: &[Job], catalog: &Catalog) {
    let mut spans: Vec<(ShardId, Range<u64>)> = batch
        .iter()
        .filter_map(|job| read_range(job).map(|r| (job.source.shard, r)))
        .collect();
    spans.sort_by_key(|(shard, r)| (*shard, r.start));
    let mut merged: Vec<(ShardId, Range<u64>)> = Vec::with_capacity(spans.len());
    for (shard, r) in spans {
        match merged.last_mut() {
            Some((s, last)) if *s == shard && r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push((shard, r)),
        }
    }
    for (shard, r) in merged {
        catalog.shard(shard).release(&r);
    }
}

fn read_range(job: &Job) -> Option<Range<u64>> {
    let start = job.source.bytes.start;
    match &job.op {
        Op::Copy(part) => Some(start + part.start..start + part.end),
        Op::Cast(part) => {
            let size = elem_bytes(job.source.dtype);
            Some(start + part.start * size..start + part.end * size)
        }
        Op::Transpose { cols, band, .. } => (band.end == *cols).then(|| job.source.bytes.clone()),
    }
}
