//! Pairs the tensors of A and B by name (with the `--allow embedding-name` alias) and decides,
//! per pair, whether it differs in dtype or shape or needs its values compared, and in which
//! dtype (the `--allow` rules). The only part of `verify` that asks the NemotronV3 family what
//! a name is; it matches on the family's typed keys and knows no name text itself.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::compare::{Kinds, Stats, unit};
use super::segments::{self, Segment};
use super::{Allow, Difference};
use crate::catalog::{Catalog, Shard, TensorId};
use crate::dtype::{self, Dtype};
use crate::family::nemotron_v3::key::{Role, TensorKey};
use crate::family::nemotron_v3::names;

/// An `--allow` rule that made a pair comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// `--allow fp32-params`.
    Fp32Params,
    /// `--allow expert-dtype`.
    ExpertDtype,
    /// `--allow embedding-name`.
    EmbeddingName,
}

impl Rule {
    fn flag(self) -> &'static str {
        match self {
            Rule::Fp32Params => "fp32-params",
            Rule::ExpertDtype => "expert-dtype",
            Rule::EmbeddingName => "embedding-name",
        }
    }

    fn is_allowed(self, allow: Allow) -> bool {
        match self {
            Rule::Fp32Params => allow.fp32_params,
            Rule::ExpertDtype => allow.expert_dtype,
            Rule::EmbeddingName => allow.embedding_name,
        }
    }
}

/// One name's outcome before any byte is read: a difference, or a job to run.
#[derive(Debug)]
pub(super) enum Entry {
    /// Known different already.
    Diff(Difference),
    /// Compare the values of job `n`.
    Compare(usize),
}

/// A pair whose values are compared: which tensors, in which dtype, in how many units.
#[derive(Debug)]
pub(super) struct Job {
    name: String,
    b_name: Option<String>,
    /// Stored and common dtypes.
    pub kinds: Kinds,
    /// Bytes per unit in A.
    pub unit_a: usize,
    /// Bytes per unit in B.
    pub unit_b: usize,
    /// Units (elements, or bytes for sub-byte dtypes) on each side.
    pub units: u64,
    /// Where A's units are stored, in element order.
    a_segs: Vec<Segment>,
    /// Where B's units are stored.
    b_segs: Vec<Segment>,
    /// The `--allow` rules this pair needed.
    pub rules: Vec<Rule>,
}

impl Job {
    /// A's tensor bytes.
    pub fn a_bytes(&self) -> u64 {
        self.units * self.unit_a as u64
    }

    /// B's tensor bytes.
    pub fn b_bytes(&self) -> u64 {
        self.units * self.unit_b as u64
    }

    /// The unit ranges compared one at a time: at most `step` units, each stored
    /// contiguously on both sides.
    pub fn chunks(&self, step: u64) -> Vec<Range<u64>> {
        segments::chunks(&self.a_segs, &self.b_segs, self.units, step)
    }

    /// A's shard and the file range of `units` (one of [`Job::chunks`]).
    pub fn a_range<'c>(&self, cat: &'c Catalog, units: &Range<u64>) -> (&'c Shard, Range<u64>) {
        let (shard, range) = segments::locate(&self.a_segs, units, self.unit_a);
        (cat.shard(shard), range)
    }

    /// B's shard and the file range of `units` (one of [`Job::chunks`]).
    pub fn b_range<'c>(&self, cat: &'c Catalog, units: &Range<u64>) -> (&'c Shard, Range<u64>) {
        let (shard, range) = segments::locate(&self.b_segs, units, self.unit_b);
        (cat.shard(shard), range)
    }

    /// The difference a pair with non-empty `stats` makes.
    pub fn data_difference(&self, stats: &Stats) -> Difference {
        Difference::Data {
            name: self.name.clone(),
            b_name: self.b_name.clone(),
            dtype: self.kinds.common.to_string(),
            n_elements: self.units,
            differing_elements: stats.differing,
            first_differing_element: stats.first.unwrap_or(0),
            max_abs_diff: stats.max_abs,
            nonfinite_differences: stats.nonfinite,
        }
    }
}

/// Every name of A and B, in name order, as a difference or a job.
pub(super) fn pair(cat_a: &Catalog, cat_b: &Catalog, allow: Allow) -> (Vec<Entry>, Vec<Job>) {
    let by_a: BTreeMap<&str, TensorId> = cat_a.iter().map(|(id, t)| (&*t.name, id)).collect();
    let by_b: BTreeMap<&str, TensorId> = cat_b.iter().map(|(id, t)| (&*t.name, id)).collect();
    let mut alias: BTreeMap<&str, &str> = BTreeMap::new();
    if allow.embedding_name {
        for &name in by_a.keys().filter(|n| !by_b.contains_key(*n)) {
            let Some(other) = names::embedding_alias(name) else {
                continue;
            };
            if let Some((&b_name, _)) = by_b.get_key_value(other.as_str())
                && !by_a.contains_key(b_name)
            {
                alias.insert(name, b_name);
            }
        }
    }
    let aliased: BTreeSet<&str> = alias.values().copied().collect();
    let all: BTreeSet<&str> = by_a.keys().chain(by_b.keys()).copied().collect();
    let (mut entries, mut jobs) = (Vec::new(), Vec::new());
    for name in all {
        let (ia, ib, b_name) = match (by_a.get(name), by_b.get(name)) {
            (Some(&ia), Some(&ib)) => (ia, ib, None),
            (Some(&ia), None) => match alias.get(name) {
                Some(&b_name) => (ia, by_b[b_name], Some(b_name)),
                None => {
                    let name = name.to_string();
                    entries.push(Entry::Diff(Difference::OnlyInA { name }));
                    continue;
                }
            },
            (None, _) if aliased.contains(name) => continue,
            (None, _) => {
                let name = name.to_string();
                entries.push(Entry::Diff(Difference::OnlyInB { name }));
                continue;
            }
        };
        let entry = match classify(cat_a, cat_b, name, b_name, ia, ib, allow) {
            Ok(job) => {
                jobs.push(job);
                Entry::Compare(jobs.len() - 1)
            }
            Err(diff) => Entry::Diff(diff),
        };
        entries.push(entry);
    }
    (entries, jobs)
}

/// A job for a pair, or its dtype or shape difference.
fn classify(
    cat_a: &Catalog,
    cat_b: &Catalog,
    name: &str,
    b_name: Option<&str>,
    ia: TensorId,
    ib: TensorId,
    allow: Allow,
) -> Result<Job, Difference> {
    let (ta, tb) = (cat_a.tensor(ia), cat_b.tensor(ib));
    let b_name = b_name.map(str::to_string);
    let mut rules = Vec::new();
    if b_name.is_some() {
        rules.push(Rule::EmbeddingName);
    }
    let common = if ta.dtype == tb.dtype {
        ta.dtype
    } else {
        match dtype_rule(name, ta.dtype, tb.dtype) {
            Some((rule, common)) if rule.is_allowed(allow) => {
                rules.push(rule);
                common
            }
            rule => {
                return Err(Difference::Dtype {
                    name: name.to_string(),
                    b_name,
                    a: ta.dtype.to_string(),
                    b: tb.dtype.to_string(),
                    hint: rule
                        .filter(|(r, _)| !r.is_allowed(allow))
                        .map(|(r, _)| format!("--allow {}", r.flag())),
                });
            }
        }
    };
    if ta.shape != tb.shape {
        return Err(Difference::Shape {
            name: name.to_string(),
            b_name,
            a: ta.shape.clone(),
            b: tb.shape.clone(),
        });
    }
    let (unit_a, unit_b) = (unit(ta.dtype), unit(tb.dtype));
    Ok(Job {
        name: name.to_string(),
        b_name,
        kinds: Kinds {
            a: ta.dtype,
            b: tb.dtype,
            common,
        },
        unit_a,
        unit_b,
        units: ta
            .pieces
            .iter()
            .map(|p| p.bytes.end - p.bytes.start)
            .sum::<u64>()
            / unit_a as u64,
        a_segs: segments::segments(cat_a, ia, unit_a),
        b_segs: segments::segments(cat_b, ib, unit_b),
        rules,
    })
}

/// The rule that compares the values of a tensor stored as `a` and `b`, and the dtype both
/// are compared in: F32 for `A_log`/`D`/`dt_bias`, the narrower one for experts.
fn dtype_rule(name: &str, a: Dtype, b: Dtype) -> Option<(Rule, Dtype)> {
    let key = TensorKey::parse(name);
    let half = |d| matches!(d, Dtype::BF16 | Dtype::F16);
    if matches!(key.role, Role::Fp32Param { .. })
        && ((a == Dtype::F32 && half(b)) || (b == Dtype::F32 && half(a)))
    {
        return Some((Rule::Fp32Params, Dtype::F32));
    }
    let (wide, narrow) = if a.bitsize() > b.bitsize() {
        (a, b)
    } else {
        (b, a)
    };
    (key.is_expert_matrix() && wide.bitsize() > narrow.bitsize() && dtype::can_cast(wide, narrow))
        .then_some((Rule::ExpertDtype, narrow))
}
