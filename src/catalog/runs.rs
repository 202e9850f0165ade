//! The contiguous runs of a piece inside its full tensor: the whole piece when it spans every
//! dimension after its first partial one, else one run per index of the dimensions before it
//! (a strided placement). Shared by the executor (assembling) and `verify` (comparing).

/// `len` elements from element `src` of a piece (its own row-major order) to element `out`
/// of the full tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First element in the piece.
    pub src: u64,
    /// First element in the full tensor.
    pub out: u64,
    /// Elements.
    pub len: u64,
}

/// The runs of a piece of shape `piece` at `offset` in a tensor of shape `full`, in the
/// piece's storage order; none for an empty piece.
pub fn runs(piece: &[u64], offset: &[u64], full: &[u64]) -> Vec<Run> {
    let numel: u64 = piece.iter().product();
    if numel == 0 {
        return Vec::new();
    }
    // Dims after the last partial one are whole, so each run spans from there to the end.
    let Some(k) = (0..full.len()).rev().find(|&d| piece[d] != full[d]) else {
        return vec![Run {
            src: 0,
            out: 0,
            len: numel,
        }];
    };
    let len: u64 = piece[k..].iter().product();
    let strides = row_major_strides(full);
    let mut index = vec![0u64; k];
    let mut out = Vec::with_capacity((numel / len) as usize);
    for n in 0..numel / len {
        let start = (0..k)
            .map(|d| (offset[d] + index[d]) * strides[d])
            .sum::<u64>()
            + offset[k] * strides[k];
        out.push(Run {
            src: n * len,
            out: start,
            len,
        });
        for d in (0..k).rev() {
            index[d] += 1;
            if index[d] < piece[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// Elements between consecutive indices of each dimension of a row-major tensor.
fn row_major_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triples(piece: &[u64], offset: &[u64], full: &[u64]) -> Vec<(u64, u64, u64)> {
        runs(piece, offset, full)
            .iter()
            .map(|r| (r.src, r.out, r.len))
            .collect()
    }

    #[test]
    fn a_row_piece_is_one_run_at_its_row() {
        assert_eq!(triples(&[2, 4], &[3, 0], &[5, 4]), vec![(0, 12, 8)]);
    }

    #[test]
    fn a_column_piece_is_one_run_per_row() {
        assert_eq!(
            triples(&[3, 2], &[0, 2], &[3, 4]),
            vec![(0, 2, 2), (2, 6, 2), (4, 10, 2)]
        );
    }

    #[test]
    fn a_middle_block_of_a_3d_tensor_runs_over_its_outer_indices() {
        // [2, 3, 4] tensor, piece [2, 1, 4] at [0, 1, 0]: rows (0,1) and (1,1).
        assert_eq!(
            triples(&[2, 1, 4], &[0, 1, 0], &[2, 3, 4]),
            vec![(0, 4, 4), (4, 16, 4)]
        );
    }

    #[test]
    fn scalars_and_empty_pieces() {
        assert_eq!(triples(&[], &[], &[]), vec![(0, 0, 1)]);
        assert_eq!(triples(&[0, 4], &[5, 0], &[5, 4]), vec![]);
    }
}
