//! Model-free checks of a planned tensor: its recipe reads exactly as many elements as the
//! tensor holds, in dtypes the kernels can convert, and assembled pieces fit their slots.

use super::{OutputTensor, Recipe, Slot, Source};
use crate::dtype::{self, Dtype};

/// Why a recipe does not fit its output tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The tensor's byte size does not fit in 64 bits.
    #[error("its size overflows")]
    SizeOverflow,
    /// A copy whose source and output differ in dtype or size.
    #[error("copy of {from_bytes} bytes of {from:?} into {to_bytes} bytes of {to:?}")]
    CopySize {
        /// Source bytes.
        from_bytes: u64,
        /// Source dtype.
        from: Dtype,
        /// Output bytes.
        to_bytes: u64,
        /// Output dtype.
        to: Dtype,
    },
    /// Stacked slots that do not fill the output shape.
    #[error("{n_slots} slots of {rows}x{cols} do not fill shape {shape:?}")]
    SlotsDoNotFill {
        /// How many slots.
        n_slots: usize,
        /// Rows of each.
        rows: u64,
        /// Columns of each.
        cols: u64,
        /// The output shape.
        shape: Vec<u64>,
    },
    /// A transposed slice that does not fill the output shape.
    #[error("a {rows}x{cols} slice does not fill shape {shape:?}")]
    SliceDoesNotFill {
        /// Rows of the slice.
        rows: u64,
        /// Columns of the slice.
        cols: u64,
        /// The output shape.
        shape: Vec<u64>,
    },
    /// An assembly with a different number of sources and slots.
    #[error("{n_sources} sources for {n_slots} slots")]
    SlotCount {
        /// How many sources.
        n_sources: usize,
        /// How many slots.
        n_slots: usize,
    },
    /// Pieces of a sub-byte dtype, which cannot be placed by element.
    #[error("pieces of a sub-byte dtype cannot be placed")]
    SubBytePieces,
    /// A dtype conversion the kernels do not do.
    #[error("cannot convert {} to {}", dtype::short_name(*from), dtype::short_name(*to))]
    CannotConvert {
        /// The source dtype.
        from: Dtype,
        /// The output dtype.
        to: Dtype,
    },
    /// A piece outside the tensor, or whose size disagrees with its bytes.
    #[error("piece {piece:?} at {offset:?} does not fit shape {shape:?} or its {len_bytes} bytes")]
    PieceDoesNotFit {
        /// The piece's shape.
        piece: Vec<u64>,
        /// Its offset in the tensor.
        offset: Vec<u64>,
        /// The tensor's shape.
        shape: Vec<u64>,
        /// The piece's bytes.
        len_bytes: u64,
    },
    /// Pieces that do not cover the tensor.
    #[error("its pieces hold {covered} elements, shape {shape:?} needs {needed}")]
    PiecesDoNotCover {
        /// Elements the pieces hold.
        covered: u64,
        /// The tensor's shape.
        shape: Vec<u64>,
        /// Elements it needs.
        needed: u64,
    },
    /// A source with another element count than its slot.
    #[error("source holds {have:?} elements, {want:?} expected")]
    SourceNumel {
        /// Elements the source holds (None: not a whole number).
        have: Option<u64>,
        /// Elements expected (None: not computable).
        want: Option<u64>,
    },
}

/// Model-free checks: the recipe reads exactly as many elements as the tensor holds, in
/// dtypes the kernels can convert.
pub(super) fn check_recipe(t: &OutputTensor) -> Result<(), RecipeError> {
    let out_bytes = t.len_bytes().ok_or(RecipeError::SizeOverflow)?;
    let out_size = dtype::size_bytes(t.dtype);
    let numel_of = |s: &Source| -> Option<u64> {
        Some((s.bytes.end - s.bytes.start) / dtype::size_bytes(s.dtype)? as u64)
    };
    let numel = out_size.map(|s| out_bytes / s as u64);
    match &t.recipe {
        Recipe::Copy(s) => {
            if s.dtype != t.dtype || s.bytes.end - s.bytes.start != out_bytes {
                return Err(RecipeError::CopySize {
                    from_bytes: s.bytes.end - s.bytes.start,
                    from: s.dtype,
                    to_bytes: out_bytes,
                    to: t.dtype,
                });
            }
        }
        Recipe::Cast(s) => check_cast(s, t.dtype, numel, numel_of(s))?,
        Recipe::StackTransposed {
            sources,
            rows,
            cols,
        } => {
            for s in sources {
                check_cast(s, t.dtype, Some(rows * cols), numel_of(s))?;
            }
            if numel != Some(rows * cols * sources.len() as u64) {
                return Err(RecipeError::SlotsDoNotFill {
                    n_slots: sources.len(),
                    rows: *rows,
                    cols: *cols,
                    shape: t.shape.clone(),
                });
            }
        }
        Recipe::Assemble { sources, slots } => check_assemble(t, sources, slots)?,
        Recipe::TransposeSlice { source, rows, cols } => {
            check_cast(source, t.dtype, Some(rows * cols), numel_of(source))?;
            if numel != Some(rows * cols) {
                return Err(RecipeError::SliceDoesNotFill {
                    rows: *rows,
                    cols: *cols,
                    shape: t.shape.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Pieces fit their sources and lie inside the tensor, and their sizes add up to it (the
/// catalog already checked that they do not overlap).
fn check_assemble(t: &OutputTensor, sources: &[Source], slots: &[Slot]) -> Result<(), RecipeError> {
    if sources.len() != slots.len() {
        return Err(RecipeError::SlotCount {
            n_sources: sources.len(),
            n_slots: slots.len(),
        });
    }
    let mut covered = 0u64;
    for (s, slot) in sources.iter().zip(slots) {
        let size = dtype::size_bytes(s.dtype).ok_or(RecipeError::SubBytePieces)?;
        if s.dtype != t.dtype && !dtype::can_cast(s.dtype, t.dtype) {
            return Err(RecipeError::CannotConvert {
                from: s.dtype,
                to: t.dtype,
            });
        }
        let inside = slot.shape.len() == t.shape.len()
            && slot.offset.len() == t.shape.len()
            && (0..t.shape.len()).all(|d| {
                slot.offset[d]
                    .checked_add(slot.shape[d])
                    .is_some_and(|end| end <= t.shape[d])
            });
        let numel = crate::catalog::numel(&slot.shape);
        if !inside || numel.checked_mul(size as u64) != Some(s.bytes.end - s.bytes.start) {
            return Err(RecipeError::PieceDoesNotFit {
                piece: slot.shape.clone(),
                offset: slot.offset.clone(),
                shape: t.shape.clone(),
                len_bytes: s.bytes.end - s.bytes.start,
            });
        }
        covered = covered.saturating_add(numel);
    }
    if covered != crate::catalog::numel(&t.shape) {
        return Err(RecipeError::PiecesDoNotCover {
            covered,
            shape: t.shape.clone(),
            needed: crate::catalog::numel(&t.shape),
        });
    }
    Ok(())
}

fn check_cast(
    s: &Source,
    to: Dtype,
    want: Option<u64>,
    have: Option<u64>,
) -> Result<(), RecipeError> {
    if !dtype::can_cast(s.dtype, to) {
        return Err(RecipeError::CannotConvert { from: s.dtype, to });
    }
    if want.is_none() || want != have {
        return Err(RecipeError::SourceNumel { have, want });
    }
    Ok(())
}
