//! The pieces of one tensor of a DCP checkpoint: the full shape they imply (DCP-FORMAT §3.2:
//! the element-wise maximum of offset + shape) and the checks the reference skips: no two
//! pieces overlap and together they cover every element (§3.4 zero-fills gaps and lets the
//! last writer win). Knows no tensor names.

use std::path::{Path, PathBuf};

use super::{Piece, numel};
use crate::error::{Error, Result};

/// Most cells of the boundary grid searched for an uncovered block; beyond it the message
/// gives counts only.
const MAX_GAP_CELLS: u64 = 1 << 20;

/// The full shape the pieces imply: per dimension, the largest `offset + shape`.
/// Offsets were checked not to overflow when the pieces were read.
pub fn full_shape(pieces: &[Piece]) -> Vec<u64> {
    let rank = pieces.first().map_or(0, |p| p.shape.len());
    (0..rank)
        .map(|d| {
            pieces
                .iter()
                .map(|p| p.offset[d] + p.shape[d])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// A block of a tensor's elements: where it starts and its extent in every dimension; shown
/// as `[start:end, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The elements held in every dimension.
    pub dims: Vec<std::ops::Range<u64>>,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| format!("{}:{}", d.start, d.end))
            .collect();
        write!(f, "[{}]", dims.join(", "))
    }
}

/// The elements of a tensor that no piece holds: a block, or only their count where no
/// single block is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncovered {
    /// A block no piece covers.
    Block(Slot),
    /// How many elements of how many are missing.
    Count {
        /// Elements no piece holds.
        missing: u64,
        /// Elements of the full shape.
        total: u64,
    },
}

impl std::fmt::Display for Uncovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uncovered::Block(slot) => slot.fmt(f),
            Uncovered::Count { missing, total } => {
                write!(
                    f,
                    "{missing} of {total} (only {} are held)",
                    total - missing
                )
            }
        }
    }
}

fn slot(offset: &[u64], shape: &[u64]) -> Slot {
    Slot {
        dims: offset.iter().zip(shape).map(|(&o, &s)| o..o + s).collect(),
    }
}

/// Checks that the pieces of `tensor` (full shape `shape`) neither overlap nor leave a gap.
/// `path_of` names a piece's shard file; `dir` is the checkpoint, named for gaps.
///
/// # Errors
/// [`Error::PieceOverlap`] naming both pieces, [`Error::PieceGap`] naming an uncovered block.
pub fn check(
    dir: &Path,
    tensor: &str,
    shape: &[u64],
    pieces: &[Piece],
    path_of: &dyn Fn(&Piece) -> PathBuf,
) -> Result<()> {
    if let Some((a, b)) = find_overlap(pieces) {
        return Err(Error::PieceOverlap {
            path: path_of(b),
            tensor: tensor.to_string(),
            range: slot(&b.offset, &b.shape),
            other: path_of(a),
            other_range: slot(&a.offset, &a.shape),
        });
    }
    // Without overlaps, and every piece inside the full shape, the pieces cover it exactly
    // when their sizes add up.
    let covered: u128 = pieces.iter().map(|p| u128::from(numel(&p.shape))).sum();
    let total = u128::from(numel(shape));
    if covered == total {
        return Ok(());
    }
    let range = find_gap(shape, pieces).map_or(
        Uncovered::Count {
            missing: u64::try_from(total.saturating_sub(covered)).unwrap_or(u64::MAX),
            total: numel(shape),
        },
        Uncovered::Block,
    );
    let mut held: Vec<PathBuf> = pieces.iter().map(path_of).collect();
    held.dedup();
    Err(Error::PieceGap {
        path: dir.to_path_buf(),
        tensor: tensor.to_string(),
        range,
        shape: shape.to_vec(),
        held,
    })
}

/// Whether two pieces share an element (empty pieces share none).
fn overlaps(a: &Piece, b: &Piece) -> bool {
    numel(&a.shape) > 0
        && numel(&b.shape) > 0
        && (0..a.shape.len()).all(|d| {
            a.offset[d] < b.offset[d] + b.shape[d] && b.offset[d] < a.offset[d] + a.shape[d]
        })
}

/// The first overlapping pair, found by a sweep along the first dimension so the usual row
/// pieces cost one comparison each.
fn find_overlap(pieces: &[Piece]) -> Option<(&Piece, &Piece)> {
    let mut order: Vec<&Piece> = pieces.iter().filter(|p| numel(&p.shape) > 0).collect();
    order.sort_by_key(|p| p.offset.first().copied().unwrap_or(0));
    let end0 = |p: &Piece| p.offset.first().map_or(1, |o| o + p.shape[0]);
    let start0 = |p: &Piece| p.offset.first().copied().unwrap_or(0);
    let mut active: Vec<&Piece> = Vec::new();
    for p in order {
        active.retain(|a| end0(a) > start0(p));
        if let Some(a) = active.iter().find(|a| overlaps(a, p)) {
            return Some((a, p));
        }
        active.push(p);
    }
    None
}

/// An uncovered block: the first cell, in row-major order, of the grid that the pieces'
/// boundaries cut the tensor into that no piece holds. None when the grid is too large.
fn find_gap(shape: &[u64], pieces: &[Piece]) -> Option<Slot> {
    let bounds: Vec<Vec<u64>> = (0..shape.len())
        .map(|d| {
            let mut b = vec![0, shape[d]];
            for p in pieces {
                b.extend([p.offset[d], p.offset[d] + p.shape[d]]);
            }
            b.sort_unstable();
            b.dedup();
            b
        })
        .collect();
    let cells = bounds
        .iter()
        .try_fold(1u64, |a, b| a.checked_mul(b.len() as u64 - 1))?;
    if cells > MAX_GAP_CELLS {
        return None;
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..cells {
        let start: Vec<u64> = index
            .iter()
            .enumerate()
            .map(|(d, &i)| bounds[d][i])
            .collect();
        let held = pieces.iter().any(|p| {
            numel(&p.shape) > 0
                && (0..shape.len())
                    .all(|d| p.offset[d] <= start[d] && start[d] < p.offset[d] + p.shape[d])
        });
        if !held {
            let size: Vec<u64> = index
                .iter()
                .enumerate()
                .map(|(d, &i)| bounds[d][i + 1] - bounds[d][i])
                .collect();
            return Some(slot(&start, &size));
        }
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] + 1 < bounds[d].len() {
                break;
            }
            index[d] = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ShardId;

    fn piece(shard: u32, offset: &[u64], shape: &[u64]) -> Piece {
        Piece {
            shard: ShardId(shard),
            bytes: 0..0,
            shape: shape.to_vec(),
            offset: offset.to_vec(),
        }
    }

    fn run(pieces: &[Piece]) -> Result<Vec<u64>> {
        let paths = [
            PathBuf::from("r0"),
            PathBuf::from("r1"),
            PathBuf::from("r2"),
        ];
        let shape = full_shape(pieces);
        check(Path::new("dir"), "t", &shape, pieces, &|p| {
            paths[p.shard.0 as usize].clone()
        })?;
        Ok(shape)
    }

    #[test]
    fn row_pieces_uneven_and_empty_tile_the_tensor() {
        let pieces = [
            piece(0, &[0, 0], &[2, 4]),
            piece(1, &[2, 0], &[1, 4]),
            piece(2, &[3, 0], &[0, 4]),
        ];
        assert_eq!(run(&pieces).unwrap(), vec![3, 4]);
    }

    #[test]
    fn column_pieces_tile_the_tensor() {
        let pieces = [piece(1, &[0, 8], &[8, 8]), piece(0, &[0, 0], &[8, 8])];
        assert_eq!(run(&pieces).unwrap(), vec![8, 16]);
    }

    #[test]
    fn a_missing_first_half_is_a_gap_naming_the_block() {
        let err = run(&[piece(1, &[32, 0], &[32, 16])]).unwrap_err();
        assert!(
            matches!(&err, Error::PieceGap { range, shape, .. } if range.to_string() == "[0:32, 0:16]" && *shape == vec![64, 16]),
            "{err}"
        );
    }

    #[test]
    fn a_missing_column_block_is_a_gap() {
        let pieces = [piece(0, &[0, 0], &[4, 4]), piece(1, &[0, 8], &[4, 4])];
        let err = run(&pieces).unwrap_err();
        assert!(
            matches!(&err, Error::PieceGap { range, .. } if range.to_string() == "[0:4, 4:8]"),
            "{err}"
        );
    }

    #[test]
    fn overlapping_pieces_name_both_files_and_ranges() {
        let pieces = [piece(0, &[0, 0], &[3, 4]), piece(1, &[2, 0], &[2, 4])];
        let err = run(&pieces).unwrap_err();
        assert!(
            matches!(&err, Error::PieceOverlap { path, range, other, other_range, .. }
                if path == Path::new("r1") && range.to_string() == "[2:4, 0:4]"
                && other == Path::new("r0") && other_range.to_string() == "[0:3, 0:4]"),
            "{err}"
        );
    }

    #[test]
    fn two_copies_of_a_scalar_overlap() {
        let err = run(&[piece(0, &[], &[]), piece(1, &[], &[])]).unwrap_err();
        assert!(matches!(err, Error::PieceOverlap { .. }), "{err}");
    }

    #[test]
    fn an_empty_piece_overlaps_nothing() {
        let pieces = [
            piece(0, &[0], &[3]),
            piece(1, &[3], &[0]),
            piece(2, &[1], &[0]),
        ];
        assert_eq!(run(&pieces).unwrap(), vec![3]);
    }
}
