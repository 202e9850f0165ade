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
        #[cfg(target_arch = "x86_64")]
        2 => transpose_2_sse2(src, rows, cols, band, dst),
        #[cfg(not(target_arch = "x86_64"))]
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

/// Side of the register blocks of the SSE2 transpose: eight 2-byte elements fill a register.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 8;

/// The 2-byte case (BF16, F16: nearly every expert) with 8x8 register blocks inside each
/// cache tile; the edges that do not fill a block are moved one element at a time.
#[cfg(target_arch = "x86_64")]
fn transpose_2_sse2(
    src: &[u8],
    rows: usize,
    cols: usize,
    band: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    assert!(src.len() >= rows * cols * 2 && dst.len() >= band.len() * rows * 2 && band.end <= cols);
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in band.clone().step_by(TILE) {
            let c1 = (c0 + TILE).min(band.end);
            let full_r = r0 + (r1 - r0) / BLOCK * BLOCK;
            let full_c = c0 + (c1 - c0) / BLOCK * BLOCK;
            for r in (r0..full_r).step_by(BLOCK) {
                for c in (c0..full_c).step_by(BLOCK) {
                    // SAFETY: r + 8 <= rows and c + 8 <= band.end <= cols, so the eight row
                    // loads src[(r+i)*cols + c ..][..8] and the eight stores
                    // dst[(c+j-band.start)*rows + r ..][..8] lie in the slices checked above.
                    unsafe {
                        block_8x8_u16(
                            src.as_ptr().add((r * cols + c) * 2),
                            cols,
                            dst.as_mut_ptr().add(((c - band.start) * rows + r) * 2),
                            rows,
                        );
                    }
                }
            }
            for c in c0..c1 {
                let first_r = if c < full_c { full_r } else { r0 };
                for r in first_r..r1 {
                    let (from, to) = ((r * cols + c) * 2, ((c - band.start) * rows + r) * 2);
                    dst[to..to + 2].copy_from_slice(&src[from..from + 2]);
                }
            }
        }
    }
}

/// Transposes one 8x8 block of 2-byte elements: rows `src_stride` elements apart in, rows
/// `dst_stride` elements apart out, with SSE2 unpacks (always present on x86_64).
///
/// # Safety
/// The eight 16-byte rows at `src + i * src_stride * 2` must be readable and the eight at
/// `dst + j * dst_stride * 2` writable.
#[cfg(target_arch = "x86_64")]
unsafe fn block_8x8_u16(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the rows; loads and stores are unaligned.
    unsafe {
        let row = |i: usize| _mm_loadu_si128(src.add(i * src_stride * 2).cast());
        let (a0, a1, a2, a3, a4, a5, a6, a7) = (
            row(0),
            row(1),
            row(2),
            row(3),
            row(4),
            row(5),
            row(6),
            row(7),
        );
        let (b0, b1) = (_mm_unpacklo_epi16(a0, a1), _mm_unpackhi_epi16(a0, a1));
        let (b2, b3) = (_mm_unpacklo_epi16(a2, a3), _mm_unpackhi_epi16(a2, a3));
        let (b4, b5) = (_mm_unpacklo_epi16(a4, a5), _mm_unpackhi_epi16(a4, a5));
        let (b6, b7) = (_mm_unpacklo_epi16(a6, a7), _mm_unpackhi_epi16(a6, a7));
        let (c0, c1) = (_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2));
        let (c2, c3) = (_mm_unpacklo_epi32(b1, b3), _mm_unpackhi_epi32(b1, b3));
        let (c4, c5) = (_mm_unpacklo_epi32(b4, b6), _mm_unpackhi_epi32(b4, b6));
        let (c6, c7) = (_mm_unpacklo_epi32(b5, b7), _mm_unpackhi_epi32(b5, b7));
        let column = |j: usize, v: __m128i| _mm_storeu_si128(dst.add(j * dst_stride * 2).cast(), v);
        column(0, _mm_unpacklo_epi64(c0, c4));
        column(1, _mm_unpackhi_epi64(c0, c4));
        column(2, _mm_unpacklo_epi64(c1, c5));
        column(3, _mm_unpackhi_epi64(c1, c5));
        column(4, _mm_unpacklo_epi64(c2, c6));
        column(5, _mm_unpackhi_epi64(c2, c6));
        column(6, _mm_unpacklo_epi64(c3, c7));
        column(7, _mm_unpackhi_epi64(c3, c7));
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
    fn two_byte_blocks_and_edges_match_the_definition_for_every_band() {
        let (rows, cols) = (19, 37);
        let src: Vec<u8> = (0..rows * cols * 2).map(|i| (i * 13 % 251) as u8).collect();
        let full = naive(&src, rows, cols, 2);
        for band in [0..cols, 0..8, 3..11, 8..37, 36..37] {
            let mut out = vec![0; band.len() * rows * 2];
            transpose_band(&src, rows, cols, 2, band.clone(), &mut out);
            assert_eq!(
                out,
                full[band.start * rows * 2..band.end * rows * 2],
                "band {band:?}"
            );
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
