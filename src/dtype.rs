//! Dtype helpers and element-cast kernels.
//!
//! Owns element sizes, dtype spellings and the float casts over little-endian
//! byte slices. Casts match PyTorch's CPU `tensor.to(dtype)` bit for bit for
//! non-NaN values: narrowing rounds to nearest, ties to even; widening is exact.
//! This module knows nothing about tensor names or checkpoint layout.

use half::{bf16, f16};

pub use safetensors::Dtype;

/// Bytes per element, or `None` for sub-byte dtypes (F4, F6_*), which the
/// converter only copies and never casts.
pub fn size_bytes(dtype: Dtype) -> Option<usize> {
    let bits = dtype.bitsize();
    bits.is_multiple_of(8).then_some(bits / 8)
}

/// True for floating-point dtypes (F64, F32, F16, BF16 and every F8/F6/F4
/// kind), i.e. tensors a dtype conversion may apply to.
pub fn is_float(dtype: Dtype) -> bool {
    use Dtype::*;
    matches!(
        dtype,
        F64 | F32
            | F16
            | BF16
            | F8_E4M3
            | F8_E5M2
            | F8_E8M0
            | F8_E4M3FNUZ
            | F8_E5M2FNUZ
            | F6_E2M3
            | F6_E3M2
            | F4
    )
}

/// True when [`cast_into`] supports the pair: `from` is one of F64, F32, F16,
/// BF16, F8_E4M3, F8_E5M2 and `to` is one of F64, F32, F16, BF16 (or
/// `from == to`, which is a plain copy).
pub fn can_cast(from: Dtype, to: Dtype) -> bool {
    use Dtype::*;
    let from_ok = matches!(from, F64 | F32 | F16 | BF16 | F8_E4M3 | F8_E5M2);
    from_ok && (from == to || matches!(to, F64 | F32 | F16 | BF16))
}

/// Converts `src` (little-endian elements of `from`) into `dst` (little-endian
/// elements of `to`), with PyTorch CPU rounding semantics (see module docs).
///
/// Precondition, checked by the caller (only `debug_assert!`ed here):
/// `can_cast(from, to)` and both slices hold the same number of elements.
/// F64 narrows to BF16/F16 through F32, as torch does. NaN stays a quiet NaN
/// with its sign. Identity casts copy bytes.
pub fn cast_into(from: Dtype, to: Dtype, src: &[u8], dst: &mut [u8]) {
    debug_assert!(can_cast(from, to), "unsupported cast {from} -> {to}");
    debug_assert_eq!(
        src.len() / size_bytes(from).unwrap_or(1),
        dst.len() / size_bytes(to).unwrap_or(1),
        "element count mismatch for cast {from} -> {to}"
    );
    if from == to {
        dst.copy_from_slice(src);
        return;
    }
    match from {
        Dtype::F32 => via_f32(to, src, dst, f32::from_le_bytes),
        Dtype::F64 => via_f32(to, src, dst, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => via_f32(to, src, dst, |b| f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => via_f32(to, src, dst, |b| bf16_to_f32(u16::from_le_bytes(b))),
        Dtype::F8_E4M3 => via_f32(to, src, dst, |[b]| f32::from_bits(E4M3_TO_F32[b as usize])),
        Dtype::F8_E5M2 => via_f32(to, src, dst, |[b]| {
            f16::from_bits(u16::from(b) << 8).to_f32()
        }),
        _ => unreachable!("cast_into: unsupported source dtype {from}"),
    }
}

/// Parses a torch dtype spelling as found in config.json (`"bfloat16"`,
/// `"torch.float16"`, `"bf16"`, `"half"`, `"float"`, `"double"`, ...) so the
/// converter can honour the checkpoint's declared dtype; `None` if unknown.
pub fn from_torch_name(name: &str) -> Option<Dtype> {
    let lower = name.trim().to_ascii_lowercase();
    let short = lower.strip_prefix("torch.").unwrap_or(&lower);
    Some(match short {
        "bfloat16" | "bf16" => Dtype::BF16,
        "float16" | "fp16" | "f16" | "half" => Dtype::F16,
        "float32" | "fp32" | "f32" | "float" => Dtype::F32,
        "float64" | "fp64" | "f64" | "double" => Dtype::F64,
        "float8_e4m3fn" => Dtype::F8_E4M3,
        "float8_e5m2" => Dtype::F8_E5M2,
        _ => return None,
    })
}

/// Lower-case short name for messages and the CLI: `"bf16"`, `"f16"`,
/// `"f32"`, `"f64"`; any other dtype gets its safetensors name (e.g. `"F8_E4M3"`).
pub fn short_name(dtype: Dtype) -> &'static str {
    use Dtype::*;
    match dtype {
        BF16 => "bf16",
        F16 => "f16",
        F32 => "f32",
        F64 => "f64",
        BOOL => "BOOL",
        F4 => "F4",
        F6_E2M3 => "F6_E2M3",
        F6_E3M2 => "F6_E3M2",
        U8 => "U8",
        I8 => "I8",
        F8_E5M2 => "F8_E5M2",
        F8_E4M3 => "F8_E4M3",
        F8_E8M0 => "F8_E8M0",
        F8_E4M3FNUZ => "F8_E4M3FNUZ",
        F8_E5M2FNUZ => "F8_E5M2FNUZ",
        I16 => "I16",
        U16 => "U16",
        I32 => "I32",
        U32 => "U32",
        C64 => "C64",
        I64 => "I64",
        U64 => "U64",
        _ => "unknown",
    }
}

/// Decodes each `S`-byte source element to f32 and encodes it as `to`.
#[inline(always)]
fn via_f32<const S: usize>(to: Dtype, src: &[u8], dst: &mut [u8], dec: impl Fn([u8; S]) -> f32) {
    match to {
        Dtype::F64 => map_elems(src, dst, |b| f64::from(dec(b)).to_le_bytes()),
        Dtype::F32 => map_elems(src, dst, |b| dec(b).to_le_bytes()),
        Dtype::F16 => map_elems(src, dst, |b| f16::from_f32(dec(b)).to_le_bytes()),
        Dtype::BF16 => map_elems(src, dst, |b| bf16::from_f32(dec(b)).to_le_bytes()),
        _ => unreachable!("cast_into: unsupported target dtype {to}"),
    }
}

/// Applies `f` to every `S`-byte element of `src`, writing `D`-byte elements.
#[inline(always)]
fn map_elems<const S: usize, const D: usize>(
    src: &[u8],
    dst: &mut [u8],
    f: impl Fn([u8; S]) -> [u8; D],
) {
    let (src, _) = src.as_chunks::<S>();
    let (dst, _) = dst.as_chunks_mut::<D>();
    for (s, d) in src.iter().zip(dst) {
        *d = f(*s);
    }
}

/// Exact bf16 to f32 widening (bf16 is the top half of an f32), NaN payloads included
/// (`half`'s `to_f32` quiets signalling NaNs).
#[inline(always)]
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// F8_E4M3 (the "fn" variant) code to f32 bits, for all 256 codes.
static E4M3_TO_F32: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = e4m3_to_f32_bits(code as u8);
        code += 1;
    }
    table
};

/// F8_E4M3FN decode: bias 7, 3 mantissa bits, subnormals at exponent 0, no
/// infinities, S.1111.111 is NaN (max finite 448).
const fn e4m3_to_f32_bits(code: u8) -> u32 {
    let sign = ((code as u32) & 0x80) << 24;
    let exp = ((code >> 3) & 0xF) as u32;
    let man = (code & 0x7) as u32;
    if exp == 0xF && man == 0x7 {
        return sign | 0x7FC0_0000;
    }
    if exp == 0 {
        if man == 0 {
            return sign;
        }
        // value = man * 2^-9; normalise around man's leading bit `p`.
        let p = 31 - man.leading_zeros();
        return sign | ((p + 127 - 9) << 23) | ((man ^ (1 << p)) << (23 - p));
    }
    sign | ((exp + 127 - 7) << 23) | (man << 20)
}

#[cfg(test)]
mod tests;
