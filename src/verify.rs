//! `nemoconv verify`: compare two checkpoints tensor by tensor (names, dtypes, shapes, bytes)
//! whatever their sharding, streaming each tensor from the maps in parallel chunks and
//! releasing the pages after, so no checkpoint is ever loaded whole. Never prints: the binary
//! shows the [`VerifyReport`] as text or JSON.

mod compare;
mod pair;
mod render;
mod segments;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use self::compare::Stats;
use self::pair::{Entry, Rule};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::execute::Progress;

/// The version of the JSON schema of [`VerifyReport`]; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
/// Differences listed when `--max-diffs` is not given.
pub const DEFAULT_MAX_DIFFS: usize = 20;
/// Bytes of one side compared per parallel work item.
const CHUNK_BYTES: u64 = 8 << 20;

/// Differences `verify` may accept as equal (`--allow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// `...mixer.A_log|D|dt_bias`: F32 on one side, BF16/F16 on the other, equal once widened.
    pub fp32_params: bool,
    /// Per-expert or merged expert tensors: equal once the wider side is narrowed (RNE).
    pub expert_dtype: bool,
    /// `P embedding.weight` and `P embeddings.weight` are the same tensor.
    pub embedding_name: bool,
}

/// Settings of one comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accepted differences.
    pub allow: Allow,
    /// How many differences the report lists (all are counted).
    pub max_diffs: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            allow: Allow::default(),
            max_diffs: DEFAULT_MAX_DIFFS,
        }
    }
}

/// The result of a comparison. `--json` prints it as one object, schema version 1:
///
/// ```text
/// schema          1
/// a, b            the two directories, as given
/// identical       bool: no difference (differences accepted by --allow do not count)
/// n_tensors_a, n_tensors_b
/// n_compared      tensor pairs whose values were compared
/// compared_bytes  bytes of A read for them
/// allowed         {fp32_params, expert_dtype, embedding_name}: pairs equal only under that rule
/// n_differences   all differences found
/// counts          {only_in_a, only_in_b, dtype, shape, data}
/// differences     the first max_diffs, in name order, each {kind, ...}
/// ```
///
/// Each difference is an object whose `kind` is a [`Difference`] variant in snake case:
/// `only_in_a` / `only_in_b` {name}; `dtype` {name, b_name, a, b, hint}; `shape` {name,
/// b_name, a, b}; `data` {name, b_name, dtype, n_elements, differing_elements,
/// first_differing_element, max_abs_diff, nonfinite_differences}. New fields may be added
/// within schema 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The first checkpoint.
    pub a: String,
    /// The second checkpoint.
    pub b: String,
    /// True when there is no difference.
    pub identical: bool,
    /// Tensors in A.
    pub n_tensors_a: usize,
    /// Tensors in B.
    pub n_tensors_b: usize,
    /// Pairs whose values were compared.
    pub n_compared: usize,
    /// Bytes of A compared.
    pub compared_bytes: u64,
    /// Pairs equal only thanks to an `--allow` rule.
    pub allowed: AllowedCounts,
    /// Number of differences, listed or not.
    pub n_differences: usize,
    /// Differences by kind.
    pub counts: DiffCounts,
    /// The first `max_diffs` differences, in name order.
    pub differences: Vec<Difference>,
}

/// Pairs accepted by each `--allow` rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AllowedCounts {
    /// `--allow fp32-params`.
    pub fp32_params: usize,
    /// `--allow expert-dtype`.
    pub expert_dtype: usize,
    /// `--allow embedding-name`.
    pub embedding_name: usize,
}

/// Differences by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffCounts {
    /// Names only A has.
    pub only_in_a: usize,
    /// Names only B has.
    pub only_in_b: usize,
    /// Pairs whose dtypes differ (and no `--allow` accepts it).
    pub dtype: usize,
    /// Pairs whose shapes differ.
    pub shape: usize,
    /// Pairs whose values differ.
    pub data: usize,
}

/// One difference; `kind` in JSON is the variant name in snake case. `b_name` is B's name
/// when it differs from A's (`--allow embedding-name`), else null.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// A tensor only A has.
    OnlyInA {
        /// Its name.
        name: String,
    },
    /// A tensor only B has.
    OnlyInB {
        /// Its name.
        name: String,
    },
    /// Same name, different dtype.
    Dtype {
        /// Name in A.
        name: String,
        /// Name in B, when different.
        b_name: Option<String>,
        /// dtype in A.
        a: String,
        /// dtype in B.
        b: String,
        /// The `--allow` value that would compare the values instead, if one applies.
        hint: Option<String>,
    },
    /// Same name, different shape.
    Shape {
        /// Name in A.
        name: String,
        /// Name in B, when different.
        b_name: Option<String>,
        /// Shape in A.
        a: Vec<u64>,
        /// Shape in B.
        b: Vec<u64>,
    },
    /// Same name, dtype and shape (or dtypes an `--allow` rule reconciles), different values.
    Data {
        /// Name in A.
        name: String,
        /// Name in B, when different.
        b_name: Option<String>,
        /// The dtype values were compared in (after an `--allow` rule's cast).
        dtype: String,
        /// Elements (bytes for sub-byte dtypes) compared.
        n_elements: u64,
        /// Elements whose bytes differ.
        differing_elements: u64,
        /// Index of the first one, in row-major order.
        first_differing_element: u64,
        /// Largest |a - b| over differing elements where both are finite, both widened to
        /// F64; null for dtypes that cannot be widened or when there is no such element.
        max_abs_diff: Option<f64>,
        /// Differing elements where either side is NaN or infinite.
        nonfinite_differences: u64,
    },
}

/// Compares the checkpoints in `a` and `b`. `progress` hears of the bytes read (both sides);
/// setting `cancel` stops the comparison.
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::atomic::AtomicBool;
/// use nemoconv::NoProgress;
/// use nemoconv::verify::{VerifyOptions, verify};
///
/// let mut options = VerifyOptions::default();
/// options.allow.fp32_params = true;
/// let report = verify(Path::new("orig/"), Path::new("roundtrip/"), &options,
///                     &NoProgress, &AtomicBool::new(false))?;
/// assert!(report.identical, "{report}");
/// # Ok::<(), nemoconv::Error>(())
/// ```
///
/// # Errors
/// Unreadable input (either checkpoint), or [`Error::Interrupted`] when `cancel` was set.
pub fn verify(
    a: &Path,
    b: &Path,
    options: &VerifyOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VerifyReport> {
    let stop = || match cancel.load(Ordering::Relaxed) {
        true => Err(Error::Interrupted),
        false => Ok(()),
    };
    let cat_a = Catalog::open_any(a)?;
    stop()?;
    let cat_b = Catalog::open_any(b)?;
    stop()?;
    let (entries, jobs) = pair::pair(&cat_a, &cat_b, options.allow);
    stop()?;
    let stats = compare_all(&cat_a, &cat_b, &jobs, progress, cancel)?;
    let mut report = VerifyReport {
        schema: SCHEMA_VERSION,
        a: a.display().to_string(),
        b: b.display().to_string(),
        identical: true,
        n_tensors_a: cat_a.tensors.len(),
        n_tensors_b: cat_b.tensors.len(),
        n_compared: jobs.len(),
        compared_bytes: jobs.iter().map(|j| j.a_bytes()).sum(),
        allowed: AllowedCounts::default(),
        n_differences: 0,
        counts: DiffCounts::default(),
        differences: Vec::new(),
    };
    for entry in entries {
        let diff = match entry {
            Entry::Diff(diff) => diff,
            Entry::Compare(j) => {
                let (job, s) = (&jobs[j], &stats[j]);
                if s.differing == 0 {
                    for rule in &job.rules {
                        *match rule {
                            Rule::Fp32Params => &mut report.allowed.fp32_params,
                            Rule::ExpertDtype => &mut report.allowed.expert_dtype,
                            Rule::EmbeddingName => &mut report.allowed.embedding_name,
                        } += 1;
                    }
                    continue;
                }
                job.data_difference(s)
            }
        };
        *match &diff {
            Difference::OnlyInA { .. } => &mut report.counts.only_in_a,
            Difference::OnlyInB { .. } => &mut report.counts.only_in_b,
            Difference::Dtype { .. } => &mut report.counts.dtype,
            Difference::Shape { .. } => &mut report.counts.shape,
            Difference::Data { .. } => &mut report.counts.data,
        } += 1;
        report.n_differences += 1;
        if report.differences.len() < options.max_diffs {
            report.differences.push(diff);
        }
    }
    report.identical = report.n_differences == 0;
    Ok(report)
}

/// Compares every job's bytes in chunks, in parallel, and merges the chunks' stats per job.
fn compare_all(
    cat_a: &Catalog,
    cat_b: &Catalog,
    jobs: &[pair::Job],
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Vec<Stats>> {
    let chunks: Vec<(usize, std::ops::Range<u64>)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| {
            let step = (CHUNK_BYTES / job.unit_a.max(job.unit_b) as u64).max(1);
            job.chunks(step).into_iter().map(move |r| (j, r))
        })
        .collect();
    progress.start(jobs.iter().map(|j| j.a_bytes() + j.b_bytes()).sum());
    let results: Result<Vec<(usize, Stats)>> = chunks
        .par_iter()
        .filter(|_| !cancel.load(Ordering::Relaxed))
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf_a, buf_b), (j, units)| {
                let (j, start) = (*j, units.start);
                let job = &jobs[j];
                let (shard_a, range_a) = job.a_range(cat_a, units);
                let (shard_b, range_b) = job.b_range(cat_b, units);
                buf_a.resize((range_a.end - range_a.start) as usize, 0);
                buf_b.resize((range_b.end - range_b.start) as usize, 0);
                shard_a.read_at(&range_a, buf_a)?;
                shard_b.read_at(&range_b, buf_b)?;
                let stats = compare::compare_chunk(buf_a, buf_b, &job.kinds, start);
                progress.advance((range_a.end - range_a.start) + (range_b.end - range_b.start));
                Ok((j, stats))
            },
        )
        .collect();
    progress.finish();
    let results = results?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let mut merged = vec![Stats::default(); jobs.len()];
    for (j, s) in results {
        merged[j].merge(&s);
    }
    Ok(merged)
}
