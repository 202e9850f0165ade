//! Deterministic tensor values, generated fast and at any byte offset.
//!
//! Tensor bytes are a stream of little-endian 64-bit words; word `w` of a tensor is
//! `splitmix64(key + (w + 1) * GOLDEN)` with the key hashed from (seed, name), so
//! element `i` depends only on (seed, name, i). Each 16- or 32-bit lane of a word is then
//! masked into a finite, normal float of either sign with magnitude in [2^-7, 2):
//! the sign, the low 3 exponent bits and the mantissa stay random, the top exponent
//! bits are fixed to `0b0_1111`.

use crate::model::DType;
use rayon::prelude::*;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Pieces that large fills are split into for rayon.
const PAR_PIECE: usize = 256 * 1024;

fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream key of one tensor: FNV-1a of its name, mixed with the seed.
pub fn tensor_key(seed: u64, name: &str) -> u64 {
    let fnv = name.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    splitmix64(splitmix64(seed) ^ fnv)
}

/// `(and, or)` masks turning random lanes into floats of the given dtype.
fn masks(dtype: DType) -> (u64, u64) {
    match dtype {
        DType::Bf16 => (0x83FF_83FF_83FF_83FF, 0x3C00_3C00_3C00_3C00),
        DType::F16 => (0x9FFF_9FFF_9FFF_9FFF, 0x2000_2000_2000_2000),
        DType::F32 => (0x83FF_FFFF_83FF_FFFF, 0x3C00_0000_3C00_0000),
    }
}

/// Generator of one tensor's word stream.
#[derive(Clone, Copy)]
pub struct Stream {
    key: u64,
    and: u64,
    or: u64,
}

impl Stream {
    pub fn new(seed: u64, name: &str, dtype: DType) -> Self {
        let (and, or) = masks(dtype);
        Stream {
            key: tensor_key(seed, name),
            and,
            or,
        }
    }

    fn word(self, index: usize) -> [u8; 8] {
        let state = self
            .key
            .wrapping_add((index as u64 + 1).wrapping_mul(GOLDEN));
        ((splitmix64(state) & self.and) | self.or).to_le_bytes()
    }

    /// Fills `out` with the tensor bytes starting at byte `offset`, in parallel when large.
    pub fn fill(self, offset: usize, out: &mut [u8]) {
        if out.len() < 2 * PAR_PIECE {
            self.fill_serial(offset, out);
        } else {
            out.par_chunks_mut(PAR_PIECE)
                .enumerate()
                .for_each(|(i, piece)| self.fill_serial(offset + i * PAR_PIECE, piece));
        }
    }

    fn fill_serial(self, offset: usize, out: &mut [u8]) {
        let skip = offset % 8;
        let head = ((8 - skip) % 8).min(out.len());
        out[..head].copy_from_slice(&self.word(offset / 8)[skip..skip + head]);
        let first = offset.div_ceil(8);
        let last = (offset + out.len()) / 8;
        let mut words = out[head..].chunks_exact_mut(8);
        for (i, chunk) in words.by_ref().enumerate() {
            chunk.copy_from_slice(&self.word(first + i));
        }
        let tail = words.into_remainder();
        let n = tail.len();
        tail.copy_from_slice(&self.word(last)[..n]);
    }
}
