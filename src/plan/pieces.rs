//! Planning from a training checkpoint, whose tensors may be split over rank files and whose
//! catalog carries the dtypes of the consolidated checkpoint: a family plans as for whole
//! tensors, then every source reads its stored dtype (a copy that changes dtype becomes a
//! cast) and every copy or cast of a split tensor becomes an [`Recipe::Assemble`] of its
//! pieces. Transposing recipes need whole sources; a split one is refused with the way out
//! (consolidate first). Knows no tensor names.

use super::{OutputTensor, Recipe, Slot, Source};
use crate::catalog::Catalog;
use crate::error::{CheckpointError, Result};

/// `tensors` with every source reading `stored[tensor]` (the dtype of the bytes, indexed by
/// tensor id) and every copy or cast of a split input tensor replaced by the assembly of its
/// pieces (converted to the output dtype).
///
/// # Errors
/// [`CheckpointError::SplitTransposed`] naming the tensor when a transposing recipe reads a split tensor.
pub fn assemble_split(
    catalog: &Catalog,
    tensors: Vec<OutputTensor>,
    stored: &[crate::dtype::Dtype],
) -> Result<Vec<OutputTensor>> {
    tensors
        .into_iter()
        .map(|mut t| {
            read_stored(&mut t, stored);
            let split = |s: &Source| !catalog.tensor(s.tensor).is_whole();
            match &t.recipe {
                Recipe::Copy(s) | Recipe::Cast(s) if split(s) => {
                    t.recipe = assembly(catalog, s);
                }
                recipe => {
                    if let Some(s) = recipe.sources().iter().find(|s| split(s)) {
                        let input = catalog.tensor(s.tensor);
                        return Err(CheckpointError::SplitTransposed {
                            path: catalog.path_of(s.tensor).to_path_buf(),
                            tensor: input.name.clone(),
                        }
                        .into());
                    }
                }
            }
            Ok(t)
        })
        .collect()
}

/// Makes `t`'s sources read their stored dtype; a copy whose dtype then differs becomes a cast.
fn read_stored(t: &mut OutputTensor, stored: &[crate::dtype::Dtype]) {
    let fix = |s: &mut Source| s.dtype = stored[s.tensor.0 as usize];
    match &mut t.recipe {
        Recipe::Copy(s) | Recipe::Cast(s) | Recipe::TransposeSlice { source: s, .. } => fix(s),
        Recipe::StackTransposed { sources, .. } | Recipe::Assemble { sources, .. } => {
            sources.iter_mut().for_each(fix)
        }
    }
    if let Recipe::Copy(s) = &t.recipe
        && s.dtype != t.dtype
    {
        t.recipe = Recipe::Cast(s.clone());
    }
}

/// The pieces of `source`'s tensor placed into their slots.
fn assembly(catalog: &Catalog, source: &Source) -> Recipe {
    let t = catalog.tensor(source.tensor);
    Recipe::Assemble {
        sources: t
            .pieces
            .iter()
            .map(|p| Source {
                shard: p.shard,
                bytes: p.bytes.clone(),
                ..source.clone()
            })
            .collect(),
        slots: t
            .pieces
            .iter()
            .map(|p| Slot {
                shape: p.shape.clone(),
                offset: p.offset.clone(),
            })
            .collect(),
    }
}
