//! NemotronV3 experts: grouping per-expert tensors by layer and projection, checking each group
//! is complete and uniform, and the recipes that merge (SPEC §3.3) and split (SPEC §4.1) them.

use std::collections::BTreeMap;
use std::ops::Range;

use super::names::{self, HfPrefix, MergedName, Proj, Scope};
use crate::catalog::{Catalog, TensorId};
use crate::dtype::Dtype;
use crate::error::{Error, ExpectedMerged, ExpertProblem, Result};
use crate::plan::{OutputTensor, Recipe, Source};

/// Identifies one merge group: scope, layer, projection.
pub type GroupKey = (Scope, u64, Proj);

/// Per-expert tensors of each group, by expert id.
pub type Groups = BTreeMap<GroupKey, BTreeMap<u64, TensorId>>;

/// The figures every merge and split is checked against.
#[derive(Debug, Clone)]
pub struct ExpertShape {
    /// `moe_intermediate_size` (I).
    pub inter: u64,
    /// The ids this output holds: all, or one rank's slice (SPEC §5).
    pub ids: Range<u64>,
}

/// The [`Source`] reading all of tensor `id`.
pub fn source_of(catalog: &Catalog, id: TensorId) -> Source {
    let t = catalog.tensor(id);
    Source {
        tensor: id,
        shard: t.shard(),
        bytes: t.bytes().clone(),
        dtype: t.dtype,
        scale: None,
    }
}

/// SPEC §3.3: one merged tensor per group, experts transposed and stacked by numeric id.
///
/// # Errors
/// [`Error::MissingExperts`] when an id of the range is absent (for either projection of a
/// layer that has experts), [`Error::ExpertMismatch`] for shapes or dtypes that disagree.
pub fn merge(
    catalog: &Catalog,
    groups: &Groups,
    shape: &ExpertShape,
    out_dtype: Dtype,
    prefix: HfPrefix,
) -> Result<Vec<OutputTensor>> {
    let mut layers: Vec<(Scope, u64)> = groups.keys().map(|&(s, l, _)| (s, l)).collect();
    layers.dedup();
    let mut out = Vec::new();
    for (scope, layer) in layers {
        let mut hidden = None;
        for proj in [Proj::Up, Proj::Down] {
            let empty = BTreeMap::new();
            let members = groups.get(&(scope, layer, proj)).unwrap_or(&empty);
            let ids = complete_ids(catalog, members, shape, &|id| {
                names::hf_expert_name(prefix, scope, layer, id, proj)
            })?;
            let (rows, cols, dtype) = uniform_shape(catalog, &ids)?;
            let (inter_dim, hidden_dim) = if proj == Proj::Up {
                (rows, cols)
            } else {
                (cols, rows)
            };
            let first = ids[0];
            if inter_dim != shape.inter {
                return Err(mismatch(
                    catalog,
                    first,
                    ExpertProblem::NoIntermediateDim {
                        rows,
                        cols,
                        inter: shape.inter,
                        proj: proj.hf_word(),
                    },
                ));
            }
            if *hidden.get_or_insert(hidden_dim) != hidden_dim {
                return Err(mismatch(
                    catalog,
                    first,
                    ExpertProblem::Width {
                        width: hidden_dim,
                        up_width: hidden.unwrap_or(0),
                    },
                ));
            }
            if !crate::dtype::can_cast(dtype, out_dtype) {
                return Err(Error::UnsupportedCast {
                    path: catalog.path_of(first).to_path_buf(),
                    tensor: catalog.tensor(first).name.clone(),
                    from: crate::dtype::short_name(dtype).to_string(),
                    to: crate::dtype::short_name(out_dtype).to_string(),
                });
            }
            out.push(OutputTensor {
                name: names::merged_name(scope, layer, proj),
                dtype: out_dtype,
                shape: vec![ids.len() as u64, cols, rows],
                recipe: Recipe::StackTransposed {
                    sources: ids.iter().map(|&id| source_of(catalog, id)).collect(),
                    rows,
                    cols,
                },
            });
        }
    }
    Ok(out)
}

/// The tensors of `members` for every id of the range, in id order.
fn complete_ids(
    catalog: &Catalog,
    members: &BTreeMap<u64, TensorId>,
    shape: &ExpertShape,
    name_of: &dyn Fn(u64) -> String,
) -> Result<Vec<TensorId>> {
    // Counted, never listed: n_routed_experts comes from the config and may be huge.
    let wanted = shape.ids.end - shape.ids.start;
    let present = members.range(shape.ids.clone()).count() as u64;
    if present < wanted {
        let first = shape
            .ids
            .clone()
            .find(|id| !members.contains_key(id))
            .expect("fewer present than wanted");
        return Err(Error::MissingExperts {
            path: catalog.dir.clone(),
            tensor: name_of(first),
            n_missing: usize::try_from(wanted - present).unwrap_or(usize::MAX),
        });
    }
    Ok(shape.ids.clone().map(|id| members[&id]).collect())
}

/// The common 2-D shape and dtype of a group's experts.
fn uniform_shape(catalog: &Catalog, ids: &[TensorId]) -> Result<(u64, u64, Dtype)> {
    let first = catalog.tensor(ids[0]);
    let [rows, cols] = first.shape[..] else {
        return Err(mismatch(
            catalog,
            ids[0],
            ExpertProblem::NotAMatrix {
                shape: first.shape.clone(),
            },
        ));
    };
    for &id in &ids[1..] {
        let t = catalog.tensor(id);
        if t.shape != first.shape || t.dtype != first.dtype {
            return Err(mismatch(
                catalog,
                id,
                ExpertProblem::Differs {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    first_dtype: first.dtype,
                    first_shape: first.shape.clone(),
                    first: first.name.clone(),
                },
            ));
        }
    }
    Ok((rows, cols, first.dtype))
}

/// SPEC §4.1: one per-expert HF tensor per row of a merged tensor, each row transposed.
/// Returns (HF name, tensor) pairs; `ids.start` is the global id of row 0.
///
/// # Errors
/// [`Error::MergedShape`] when the tensor is not `[n, *, I]` (up) or `[n, I, *]` (down) with
/// n the number of ids (SPEC §4.5).
pub fn split(
    catalog: &Catalog,
    id: TensorId,
    merged: &MergedName,
    shape: &ExpertShape,
    prefix: HfPrefix,
) -> Result<Vec<OutputTensor>> {
    let t = catalog.tensor(id);
    let n = shape.ids.end - shape.ids.start;
    let ok = match (merged.proj, &t.shape[..]) {
        (Proj::Down, &[e, i, _]) => e == n && i == shape.inter,
        (_, &[e, _, i]) => e == n && i == shape.inter,
        _ => false,
    };
    if !ok {
        let (n_experts, inter) = (n, shape.inter);
        let expected = match merged.proj {
            Proj::Down => ExpectedMerged::Down { n_experts, inter },
            _ => ExpectedMerged::GateAndUp { n_experts, inter },
        };
        return Err(Error::MergedShape {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
            shape: t.shape.clone(),
            expected,
        });
    }
    let (rows, cols) = (t.shape[1], t.shape[2]);
    let row_bytes = (t.bytes().end - t.bytes().start) / n.max(1);
    Ok(shape
        .ids
        .clone()
        .enumerate()
        .map(|(k, global)| {
            let start = t.bytes().start + k as u64 * row_bytes;
            OutputTensor {
                name: merged.expert_hf_name(prefix, global),
                dtype: t.dtype,
                shape: vec![cols, rows],
                recipe: Recipe::TransposeSlice {
                    source: Source {
                        tensor: id,
                        shard: t.shard(),
                        bytes: start..start + row_bytes,
                        dtype: t.dtype,
                        scale: None,
                    },
                    rows,
                    cols,
                },
            }
        })
        .collect())
}

fn mismatch(catalog: &Catalog, id: TensorId, problem: ExpertProblem) -> Error {
    Error::ExpertMismatch {
        path: catalog.path_of(id).to_path_buf(),
        tensor: catalog.tensor(id).name.clone(),
        problem: Box::new(problem),
    }
}
