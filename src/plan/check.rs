//! Model-free checks of a planned tensor: its recipe reads exactly as many elements as the
//! tensor holds, in dtypes the kernels can convert, and assembled pieces fit their slots.

use super::{OutputTensor, Recipe, Slot, Source};
use crate::dtype::{self, Dtype};

/// Model-free checks: the recipe reads exactly as many elements as the tensor holds, in
/// dtypes the kernels can convert.
pub(super) fn check_recipe(t: &OutputTensor) -> std::result::Result<(), String> {
    let out_bytes = t.len_bytes().ok_or("its size overflows")?;
    let out_size = dtype::size_bytes(t.dtype);
    let numel_of = |s: &Source| -> Option<u64> {
        Some((s.bytes.end - s.bytes.start) / dtype::size_bytes(s.dtype)? as u64)
    };
    let numel = out_size.map(|s| out_bytes / s as u64);
    match &t.recipe {
        Recipe::Copy(s) => {
            if s.dtype != t.dtype || s.bytes.end - s.bytes.start != out_bytes {
                return Err(format!(
                    "copy of {} bytes of {:?} into {out_bytes} bytes of {:?}",
                    s.bytes.end - s.bytes.start,
                    s.dtype,
                    t.dtype
                ));
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
                return Err(format!(
                    "{} slots of {rows}x{cols} do not fill shape {:?}",
                    sources.len(),
                    t.shape
                ));
            }
        }
        Recipe::Assemble { sources, slots } => check_assemble(t, sources, slots)?,
        Recipe::TransposeSlice { source, rows, cols } => {
            check_cast(source, t.dtype, Some(rows * cols), numel_of(source))?;
            if numel != Some(rows * cols) {
                return Err(format!(
                    "a {rows}x{cols} slice does not fill shape {:?}",
                    t.shape
                ));
            }
        }
    }
    Ok(())
}

/// Pieces fit their sources and lie inside the tensor, and their sizes add up to it (the
/// catalog already checked that they do not overlap).
fn check_assemble(
    t: &OutputTensor,
    sources: &[Source],
    slots: &[Slot],
) -> std::result::Result<(), String> {
    if sources.len() != slots.len() {
        return Err(format!(
            "{} sources for {} slots",
            sources.len(),
            slots.len()
        ));
    }
    let mut covered = 0u64;
    for (s, slot) in sources.iter().zip(slots) {
        let size =
            dtype::size_bytes(s.dtype).ok_or("pieces of a sub-byte dtype cannot be placed")?;
        if s.dtype != t.dtype && !dtype::can_cast(s.dtype, t.dtype) {
            return Err(format!(
                "cannot convert {} to {}",
                dtype::short_name(s.dtype),
                dtype::short_name(t.dtype)
            ));
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
            return Err(format!(
                "piece {:?} at {:?} does not fit shape {:?} or its {} bytes",
                slot.shape,
                slot.offset,
                t.shape,
                s.bytes.end - s.bytes.start
            ));
        }
        covered = covered.saturating_add(numel);
    }
    if covered != crate::catalog::numel(&t.shape) {
        return Err(format!(
            "its pieces hold {covered} elements, shape {:?} needs {}",
            t.shape,
            crate::catalog::numel(&t.shape)
        ));
    }
    Ok(())
}

fn check_cast(
    s: &Source,
    to: Dtype,
    want: Option<u64>,
    have: Option<u64>,
) -> std::result::Result<(), String> {
    if !dtype::can_cast(s.dtype, to) {
        return Err(format!(
            "cannot convert {} to {}",
            dtype::short_name(s.dtype),
            dtype::short_name(to)
        ));
    }
    if want.is_none() || want != have {
        return Err(format!("source holds {have:?} elements, {want:?} expected"));
    }
    Ok(())
}
