//! The comparison kernel: two byte slices holding the same elements, each cast to a common
//! dtype where needed, compared block by block; only blocks that differ are widened to F64
//! for the difference statistics. Pure functions on bytes; knows no tensor names.

use crate::dtype::{self, Dtype};

/// Elements handled per block, bounding the scratch buffers of one chunk.
const BLOCK_UNITS: usize = 1 << 16;

/// The dtypes of a pair: A's, B's, and the one both are compared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kinds {
    /// A's stored dtype.
    pub a: Dtype,
    /// B's stored dtype.
    pub b: Dtype,
    /// The dtype both sides are cast to (equal to `a` and/or `b`).
    pub common: Dtype,
}

/// What differs in a run of elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Stats {
    /// Elements whose bytes differ in the common dtype.
    pub differing: u64,
    /// The first of them.
    pub first: Option<u64>,
    /// Largest |a - b| among differing finite pairs, widened to F64.
    pub max_abs: Option<f64>,
    /// Differing pairs with a NaN or infinity on either side.
    pub nonfinite: u64,
}

impl Stats {
    /// Adds the stats of another run.
    pub fn merge(&mut self, other: &Stats) {
        self.differing += other.differing;
        self.first = match (self.first, other.first) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.max_abs = match (self.max_abs, other.max_abs) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        self.nonfinite += other.nonfinite;
    }
}

/// Bytes per comparison unit: the element size, or one byte for sub-byte dtypes.
pub(super) fn unit(dtype: Dtype) -> usize {
    dtype::size_bytes(dtype).unwrap_or(1)
}

/// Compares `a` and `b` (the same elements in `kinds.a` and `kinds.b`) in `kinds.common`;
/// `first_index` is the index of the first element, for [`Stats::first`].
pub(super) fn compare_chunk(a: &[u8], b: &[u8], kinds: &Kinds, first_index: u64) -> Stats {
    let (ua, ub, uc) = (unit(kinds.a), unit(kinds.b), unit(kinds.common));
    let n = a.len() / ua;
    debug_assert_eq!(n, b.len() / ub, "both sides hold the same element count");
    let mut stats = Stats::default();
    let (mut cast_a, mut cast_b) = (Vec::new(), Vec::new());
    let (mut wide_a, mut wide_b) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(BLOCK_UNITS) {
        let m = BLOCK_UNITS.min(n - start);
        let xa = as_common(
            &a[start * ua..(start + m) * ua],
            kinds.a,
            kinds.common,
            &mut cast_a,
        );
        let xb = as_common(
            &b[start * ub..(start + m) * ub],
            kinds.b,
            kinds.common,
            &mut cast_b,
        );
        if xa == xb {
            continue;
        }
        let widened = dtype::can_cast(kinds.common, Dtype::F64);
        if widened {
            widen(xa, kinds.common, &mut wide_a);
            widen(xb, kinds.common, &mut wide_b);
        }
        for (i, (ea, eb)) in xa.chunks_exact(uc).zip(xb.chunks_exact(uc)).enumerate() {
            if ea == eb {
                continue;
            }
            stats.differing += 1;
            stats.first.get_or_insert(first_index + (start + i) as u64);
            if !widened {
                continue;
            }
            let (x, y) = (wide_a[i], wide_b[i]);
            if x.is_finite() && y.is_finite() {
                let d = (x - y).abs();
                stats.max_abs = Some(stats.max_abs.map_or(d, |m| m.max(d)));
            } else {
                stats.nonfinite += 1;
            }
        }
    }
    stats
}

/// `src` in `common`: itself when already so, else cast into `buf`.
fn as_common<'a>(src: &'a [u8], from: Dtype, common: Dtype, buf: &'a mut Vec<u8>) -> &'a [u8] {
    if from == common {
        return src;
    }
    let n = src.len() / unit(from);
    buf.resize(n * unit(common), 0);
    dtype::cast_into(from, common, src, buf);
    buf
}

/// Widens `src` (elements of `from`, which [`dtype::can_cast`] to F64) into `out`.
fn widen(src: &[u8], from: Dtype, out: &mut Vec<f64>) {
    let n = src.len() / unit(from);
    let mut bytes = vec![0u8; n * 8];
    dtype::cast_into(from, Dtype::F64, src, &mut bytes);
    out.clear();
    out.extend(
        bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8 bytes"))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bf16s, f32s};

    fn same(dtype: Dtype) -> Kinds {
        Kinds {
            a: dtype,
            b: dtype,
            common: dtype,
        }
    }

    #[test]
    fn equal_bytes_give_empty_stats() {
        let a = bf16s(&[1.0, 2.0, 3.0]);
        assert_eq!(
            compare_chunk(&a, &a, &same(Dtype::BF16), 0),
            Stats::default()
        );
    }

    #[test]
    fn differing_elements_are_counted_with_first_index_and_max_abs() {
        let a = f32s(&[1.0, 2.0, 3.0, 4.0]);
        let b = f32s(&[1.0, 2.5, 3.0, 1.0]);
        let s = compare_chunk(&a, &b, &same(Dtype::F32), 10);
        assert_eq!(s.differing, 2);
        assert_eq!(s.first, Some(11));
        assert_eq!(s.max_abs, Some(3.0));
        assert_eq!(s.nonfinite, 0);
    }

    #[test]
    fn nan_against_a_number_counts_as_nonfinite() {
        let a = f32s(&[f32::NAN, 1.0]);
        let b = f32s(&[0.0, 1.0]);
        let s = compare_chunk(&a, &b, &same(Dtype::F32), 0);
        assert_eq!((s.differing, s.nonfinite, s.max_abs), (1, 1, None));
    }

    #[test]
    fn narrow_side_is_widened_to_the_common_dtype() {
        let kinds = Kinds {
            a: Dtype::BF16,
            b: Dtype::F32,
            common: Dtype::F32,
        };
        let s = compare_chunk(&bf16s(&[1.5, -2.0]), &f32s(&[1.5, -2.0]), &kinds, 0);
        assert_eq!(s, Stats::default());
        let s = compare_chunk(&bf16s(&[1.5, -2.0]), &f32s(&[1.5, -2.001]), &kinds, 0);
        assert_eq!(s.differing, 1);
    }

    #[test]
    fn integer_dtypes_compare_bytes_without_max_abs() {
        let s = compare_chunk(&[1, 2, 3], &[1, 9, 3], &same(Dtype::U8), 0);
        assert_eq!((s.differing, s.first, s.max_abs), (1, Some(1), None));
    }
}
