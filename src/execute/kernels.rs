//! Byte-moving kernels: cache-blocked transposes into a destination slot. Pure functions on
//! byte slices; they know nothing of tensors, files or names.

/// Side of the square tiles the transpose walks, in elements: two 64x64 tiles of 4-byte
/// elements fit in a 32 KiB L1 cache.
const TILE: usize = 64;

/// Writes columns `band` of the row-major `[rows, cols]` matrix `src` (elements of
/// `elem_bytes` bytes) as the rows of `dst`: `dst[c - band.start][r] = src[r][c]`.
/// `dst` must hold `band.len() * rows` elements.
pub fn transpose_band(
    src: &[u8],
    rows: usize,
    cols: usize,
    elem_bytes: usize,
    band: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    debug_assert_eq!(src.len(), rows * cols * elem_bytes);
    debug_assert_eq!(dst.len(), band.len() * rows * elem_bytes);
    match elem_bytes {
        1 => transpose_fixed::<1>(src, rows, cols, band, dst),
        2 => transpose_fixed::<2>(src, rows, cols, band, dst),
        4 => transpose_fixed::<4>(src, rows, cols, band, dst),
        8 => transpose_fixed::<8>(src, rows, cols, band, dst),
        n => transpose_any(src, rows, cols, n, band, dst),
    }
}

fn transpose_fixed<const N: usize>(
    src: &[u8],
    rows: usize,
    cols: usize,
    band: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    let (src, _) = src.as_chunks::<N>();
    let (dst, _) = dst.as_chunks_mut::<N>();
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in band.clone().step_by(TILE) {
            let c1 = (c0 + TILE).min(band.end);
            for c in c0..c1 {
                let out_row = &mut dst[(c - band.start) * rows..][r0..r1];
                for (r, out) in (r0..r1).zip(out_row) {
                    *out = src[r * cols + c];
                }
            }
        }
    }
}

fn transpose_any(
    src: &[u8],
    rows: usize,
    cols: usize,
    n: usize,
    band: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    for c in band.clone() {
        for r in 0..rows {
            let from = (r * cols + c) * n;
            let to = ((c - band.start) * rows + r) * n;
            dst[to..to + n].copy_from_slice(&src[from..from + n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], rows: usize, cols: usize, n: usize) -> Vec<u8> {
        let mut out = vec![0; src.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[(c * rows + r) * n..][..n].copy_from_slice(&src[(r * cols + c) * n..][..n]);
            }
        }
        out
    }

    #[test]
    fn transpose_matches_the_definition_for_every_element_size_and_odd_shapes() {
        for n in [1, 2, 3, 4, 8] {
            for (rows, cols) in [(1, 1), (3, 5), (65, 130), (130, 7)] {
                let src: Vec<u8> = (0..rows * cols * n)
                    .map(|i| (i * 7 + i / 251) as u8)
                    .collect();
                let mut dst = vec![0; src.len()];
                transpose_band(&src, rows, cols, n, 0..cols, &mut dst);
                assert_eq!(
                    dst,
                    naive(&src, rows, cols, n),
                    "n={n} rows={rows} cols={cols}"
                );
            }
        }
    }

    #[test]
    fn a_band_is_the_matching_rows_of_the_full_transpose() {
        let (rows, cols, n) = (70, 90, 2);
        let src: Vec<u8> = (0..rows * cols * n).map(|i| (i % 253) as u8).collect();
        let full = naive(&src, rows, cols, n);
        let mut band = vec![0; 20 * rows * n];
        transpose_band(&src, rows, cols, n, 30..50, &mut band);
        assert_eq!(band, full[30 * rows * n..50 * rows * n]);
    }
}
