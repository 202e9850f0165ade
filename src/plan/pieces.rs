//! Planning from a training checkpoint, whose tensors may be split over rank files: a family
//! plans as for whole tensors, then every copy or cast of a split tensor becomes an
//! [`Recipe::Assemble`] of its pieces. Transposing recipes need whole sources; a split one is
//! refused with the way out (consolidate first). Knows no tensor names.

use super::{OutputTensor, Recipe, Slot, Source};
use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// `tensors` with every copy or cast of a split input tensor replaced by the assembly of
/// its pieces (converted to the output dtype).
///
/// # Errors
/// [`Error::Checkpoint`] naming the tensor when a transposing recipe reads a split tensor.
pub fn assemble_split(catalog: &Catalog, tensors: Vec<OutputTensor>) -> Result<Vec<OutputTensor>> {
    tensors
        .into_iter()
        .map(|mut t| {
            let split = |s: &Source| !catalog.tensor(s.tensor).is_whole();
            match &t.recipe {
                Recipe::Copy(s) | Recipe::Cast(s) if split(s) => {
                    t.recipe = assembly(catalog, s);
                }
                recipe => {
                    if let Some(s) = recipe.sources().iter().find(|s| split(s)) {
                        let input = catalog.tensor(s.tensor);
                        return Err(Error::Checkpoint {
                            path: catalog.path_of(s.tensor).to_path_buf(),
                            reason: format!(
                                "tensor {:?} is split over rank files and must be transposed (expert parallel with ep_shard > 1 splits experts); run nemoconv consolidate first, then from-hf on its output",
                                input.name
                            ),
                        });
                    }
                }
            }
            Ok(t)
        })
        .collect()
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
