//! A printable view of a plan for `--dry-run`: each output tensor with its dtype, shape, shard
//! and the input tensors its recipe reads.

use serde::Serialize;

use super::{Plan, Recipe};
use crate::catalog::Catalog;
use crate::dtype;

/// One planned output tensor, as `--dry-run` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedTensor {
    /// Output name.
    pub name: String,
    /// Output dtype (`bf16`, `f32`, ...).
    pub dtype: &'static str,
    /// Output shape.
    pub shape: Vec<u64>,
    /// Output shard file name.
    pub shard: String,
    /// `copy`, `cast`, `stack-transposed`, `transpose-slice` or `assemble`.
    pub op: &'static str,
    /// The input tensor names read, in order.
    pub inputs: Vec<String>,
}

/// The tensors of `plan` in output order, with the input names from `catalog`.
pub fn describe(plan: &Plan, catalog: &Catalog) -> Vec<PlannedTensor> {
    plan.tensors
        .iter()
        .zip(&plan.placements)
        .map(|(t, place)| PlannedTensor {
            name: t.name.clone(),
            dtype: dtype::short_name(t.dtype),
            shape: t.shape.clone(),
            shard: plan.shards[place.shard].file_name.clone(),
            op: match t.recipe {
                Recipe::Copy(_) => "copy",
                Recipe::Cast(_) => "cast",
                Recipe::StackTransposed { .. } => "stack-transposed",
                Recipe::TransposeSlice { .. } => "transpose-slice",
                Recipe::Assemble { .. } => "assemble",
            },
            inputs: t
                .recipe
                .sources()
                .iter()
                .map(|s| catalog.tensor(s.tensor).name.clone())
                .collect(),
        })
        .collect()
}
