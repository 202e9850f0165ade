//! Tests of the casts at every rounding edge, against `half` and an independent rounding.
use super::*;
use Dtype::{BF16, BOOL, C64, F4, F6_E2M3, F8_E4M3, F8_E5M2, F8_E8M0, F16, F32, F64, I8, I32, U8};
use half::bf16;
use proptest::prelude::*;

const WIDE: [Dtype; 4] = [F64, F32, F16, BF16];

/// Casts `from` bit patterns into `to` bit patterns through `cast_into`.
fn cast_bits(from: Dtype, to: Dtype, bits: &[u64]) -> Vec<u64> {
    let (fs, ts) = (size_bytes(from).unwrap(), size_bytes(to).unwrap());
    let src: Vec<u8> = bits
        .iter()
        .flat_map(|b| b.to_le_bytes().into_iter().take(fs))
        .collect();
    let mut dst = vec![0xAB; bits.len() * ts];
    cast_into(from, to, &src, &mut dst);
    let word = |c: &[u8]| c.iter().rev().fold(0, |acc, &b| acc << 8 | u64::from(b));
    dst.chunks_exact(ts).map(word).collect()
}

/// Asserts the exact output bits of every `(input bits, expected bits)` case.
fn check(from: Dtype, to: Dtype, cases: &[(u64, u64)]) {
    let input: Vec<u64> = cases.iter().map(|c| c.0).collect();
    for ((x, want), got) in cases.iter().zip(cast_bits(from, to, &input)) {
        assert_eq!(
            got, *want,
            "{from} -> {to} of {x:#x}: got {got:#x}, want {want:#x}"
        );
    }
}

fn f(x: f32) -> u64 {
    x.to_bits().into()
}

/// Bits of `x` (exactly representable) in format `d`.
fn enc(d: Dtype, x: f64) -> u64 {
    match d {
        F64 => x.to_bits(),
        F32 => f(x as f32),
        F16 => f16::from_f64(x).to_bits().into(),
        _ => bf16::from_f64(x).to_bits().into(),
    }
}

/// Value of bits `b` in format `d` (exact).
fn dec(d: Dtype, b: u64) -> f64 {
    match d {
        F64 => f64::from_bits(b),
        F32 => f32::from_bits(b as u32).into(),
        F16 => f16::from_bits(b as u16).into(),
        _ => bf16::from_bits(b as u16).into(),
    }
}

/// Same value bit for bit (including -0.0), or both NaN with the same sign.
fn same(got: f64, want: f64) -> bool {
    let nans = got.is_nan() && want.is_nan() && got.is_sign_negative() == want.is_sign_negative();
    nans || got.to_bits() == want.to_bits()
}

/// Independent oracle: rounds `x` to nearest even in a binary format with
/// `mant` fraction bits, minimum normal exponent `emin`, largest finite `max`.
fn round_ref(x: f64, mant: i32, emin: i32, max: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let ulp = 2f64.powi((((x.to_bits() >> 52) & 0x7FF) as i32 - 1023).max(emin) - mant);
    let r = (x / ulp).round_ties_even() * ulp;
    if r.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        r
    }
}

/// `check!(FROM, TO; input bits => expected bits, ...)`
macro_rules! check {
    ($from:expr, $to:expr; $($x:expr => $want:expr),+ $(,)?) => {
        check($from, $to, &[$(($x, $want)),+])
    };
}

#[test]
fn bf16_tie_rounds_to_even() {
    check!(F32, BF16;
        0x3F80_8000 => 0x3F80, 0x3F81_8000 => 0x3F82, // even mantissa stays, odd goes up
        0xBF80_8000 => 0xBF80, 0xBF81_8000 => 0xBF82, // same for negatives
    );
}

#[test]
fn bf16_just_below_half_rounds_down_just_above_rounds_up() {
    check!(F32, BF16;
        0x3F80_7FFF => 0x3F80, 0x3F81_7FFF => 0x3F81, // just below half-way
        0x3F80_8001 => 0x3F81, 0xC001_8001 => 0xC002, // just above half-way
    );
}

#[test]
fn bf16_max_finite_kept_and_overflow_edge_becomes_inf() {
    check!(F32, BF16;
        0x7F7F_0000 => 0x7F7F, 0x7F7F_7FFF => 0x7F7F, 0xFF7F_7FFF => 0xFF7F, // max finite
        0x7F7F_8000 => 0x7F80, 0xFF7F_8000 => 0xFF80, f(f32::MAX) => 0x7F80, // round to inf
    );
}

#[test]
fn f32_subnormals_round_to_even_in_bf16() {
    check!(F32, BF16;
        1 => 0, 0x8000 => 0, 0x8001 => 1, 0x1_8000 => 2, 0x8000_8001 => 0x8001,
        0x7F_FFFF => 0x80, // largest subnormal rounds up to the smallest normal
    );
}

#[test]
fn f16_max_finite_kept_and_overflow_edge_becomes_inf() {
    check!(F32, F16;
        f(65504.0) => 0x7BFF, f(65519.99) => 0x7BFF, f(-65519.99) => 0xFBFF,
        f(65520.0) => 0x7C00, f(-65520.0) => 0xFC00, f(f32::MAX) => 0x7C00,
    );
}

#[test]
fn f16_subnormals_round_to_even_and_tiny_values_to_zero() {
    let t = 2f32.powi(-24); // smallest f16 subnormal; t / 2 is the tie with zero
    let above_tie = f32::from_bits((t / 2.0).to_bits() + 1);
    check!(F32, F16;
        f(t) => 1, f(-t) => 0x8001, f(above_tie) => 1, f(1.5 * t) => 2,
        f(t / 2.0) => 0, f(-t / 2.0) => 0x8000, f(t / 4.0) => 0,
        f(1023.0 * t) => 0x3FF, f(1023.5 * t) => 0x400, // largest subnormal, tie to normal
    );
}

#[test]
fn f16_tie_rounds_to_even() {
    let u = 2f32.powi(-11); // half an f16 ulp at 1.0
    check!(F32, F16; f(1.0 + u) => 0x3C00, f(1.0 + 3.0 * u) => 0x3C02, f(-1.0 - u) => 0xBC00);
}

#[test]
fn signed_zero_and_infinities_survive_every_cast() {
    for (from, to) in WIDE.into_iter().flat_map(|a| WIDE.map(|b| (a, b))) {
        let specials = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY];
        check(from, to, &specials.map(|v| (enc(from, v), enc(to, v))));
    }
}

#[test]
fn nan_stays_quiet_nan_with_sign() {
    check!(F32, BF16;
        0x7FC0_0000 => 0x7FC0, 0x7F80_0001 => 0x7FC0, 0xFF80_0001 => 0xFFC0,
        0x7FFF_FFFF => 0x7FFF,
    );
    check!(F32, F16; 0x7F80_0001 => 0x7E00, 0xFF80_0001 => 0xFE00);
    for (from, to) in WIDE.into_iter().flat_map(|a| WIDE.map(|b| (a, b))) {
        let quiet_bit = match to {
            F64 => 1 << 51,
            F32 => 1 << 22,
            F16 => 1 << 9,
            _ => 1 << 6,
        };
        let out = cast_bits(from, to, &[enc(from, f64::NAN), enc(from, -f64::NAN)]);
        let signs_kept = same(dec(to, out[0]), f64::NAN) && same(dec(to, out[1]), -f64::NAN);
        let quiet = out.iter().all(|o| o & quiet_bit != 0);
        assert!(signs_kept && quiet, "{from} -> {to}: {out:#x?}");
    }
}

#[test]
fn f64_narrows_to_bf16_and_f16_through_f32() {
    // Rounding directly would go up; via f32 each value first becomes an exact tie -> even.
    let tiny = 2f64.powi(-28); // less than half an f32 ulp
    check!(F64, BF16; (1.0 + 2f64.powi(-8) + tiny).to_bits() => 0x3F80);
    check!(F64, F16; (1.0 + 2f64.powi(-11) + tiny).to_bits() => 0x3C00);
}

#[test]
fn f64_to_f32_rounds_to_nearest_even() {
    let (u, d) = (2f64.powi(-24), f64::to_bits); // half an f32 ulp at 1.0
    check!(F64, F32;
        d(1.0 + u) => 0x3F80_0000, d(1.0 + 3.0 * u) => 0x3F80_0002, // ties to even
        d(1.0 + u + u * u) => 0x3F80_0001, d(1.0 + u - u * u) => 0x3F80_0000, // off-tie
        d(3.5e38) => 0x7F80_0000, d(-1e-50) => 0x8000_0000,
    );
}

/// Every code of an 8-bit format widened to each wide dtype equals `reference`.
fn check_all_f8_codes(from: Dtype, reference: impl Fn(u64) -> f64) {
    let codes: Vec<u64> = (0..256).collect();
    for to in WIDE {
        for (code, got) in codes.iter().zip(cast_bits(from, to, &codes)) {
            let (got, want) = (dec(to, got), reference(*code));
            assert!(
                same(got, want),
                "{from} -> {to} of {code:#04x}: {got} != {want}"
            );
        }
    }
}

#[test]
fn f8_e4m3_all_256_codes_widen_exactly() {
    check_all_f8_codes(F8_E4M3, |c| {
        let sign = if c >= 0x80 { -1.0 } else { 1.0 };
        let (e, m) = ((c >> 3) & 0xF, (c & 7) as f64);
        match (e, m) {
            (15, 7.0) => f64::NAN.copysign(sign),
            (0, _) => sign * m / 8.0 * 2f64.powi(-6),
            _ => sign * (1.0 + m / 8.0) * 2f64.powi(e as i32 - 7),
        }
    });
    check!(F8_E4M3, F32;
        0x7E => f(448.0), 0xFE => f(-448.0), 0x01 => f(2f32.powi(-9)), 0x80 => f(-0.0),
    );
}

#[test]
fn f8_e5m2_all_256_codes_widen_exactly() {
    check_all_f8_codes(F8_E5M2, |c| {
        let sign = if c >= 0x80 { -1.0 } else { 1.0 };
        let (e, m) = ((c >> 2) & 0x1F, (c & 3) as f64);
        match (e, m) {
            (31, 0.0) => sign * f64::INFINITY,
            (31, _) => f64::NAN.copysign(sign),
            (0, _) => sign * m / 4.0 * 2f64.powi(-14),
            _ => sign * (1.0 + m / 4.0) * 2f64.powi(e as i32 - 15),
        }
    });
    check!(F8_E5M2, F32;
        0x7C => 0x7F80_0000, 0xFC => 0xFF80_0000, 0x7B => f(57344.0), 0x01 => f(2f32.powi(-16)),
    );
}

#[test]
fn bf16_and_f16_convert_via_f32_with_one_rounding() {
    check!(BF16, F16;
        0x3F80 => 0x3C00, 0xC040 => 0xC200, 0x477F => 0x7BF8, // 1.0, -3.0, 65280 exact
        0x4780 => 0x7C00, 0x3380 => 1, 0x3000 => 0, // 65536 -> inf, 2^-24, 2^-31 -> 0
    );
    check!(F16, BF16;
        0x3C01 => 0x3F80, 0x3C04 => 0x3F80, 0x3C0C => 0x3F82, // 1+2^-10 down, ties to even
        0x7BFF => 0x4780, 1 => 0x3380, // 65504 -> 65536, 2^-24 exact
    );
}

#[test]
fn all_bf16_and_f16_codes_widen_exactly_and_cross_cast_like_half() {
    let codes: Vec<u64> = (0..=0xFFFF).collect();
    for (from, to) in WIDE.into_iter().flat_map(|a| WIDE.map(|b| (a, b))) {
        if size_bytes(from) != Some(2) || from == to {
            continue;
        }
        for (&c, got) in codes.iter().zip(cast_bits(from, to, &codes)) {
            let x = dec(from, c);
            let want = if size_bytes(to) == Some(2) {
                dec(to, enc(to, x))
            } else {
                x
            };
            assert!(
                same(dec(to, got), want),
                "{from} -> {to} of {c:#06x}: {got:#x}"
            );
        }
    }
    assert_eq!(
        cast_bits(BF16, F32, &codes),
        codes.iter().map(|c| c << 16).collect::<Vec<_>>()
    );
}

#[test]
fn f32_sweep_every_4099th_pattern_matches_half_and_reference() {
    let bits: Vec<u64> = (0..=u64::from(u32::MAX))
        .step_by(4099)
        .chain([0x7F7F_8000, 0x477F_F000])
        .collect();
    let (b, h) = (cast_bits(F32, BF16, &bits), cast_bits(F32, F16, &bits));
    for (i, &x) in bits.iter().enumerate() {
        let v = f32::from_bits(x as u32);
        if v.is_nan() {
            assert_eq!(b[i], (x >> 16) | 0x0040);
            assert!(f16::from_bits(h[i] as u16).is_nan());
            continue;
        }
        let half_bits = [bf16::from_f32(v).to_bits(), f16::from_f32(v).to_bits()];
        assert_eq!(
            [b[i], h[i]],
            half_bits.map(u64::from),
            "half oracle for {x:#010x}"
        );
        let (bf_ref, h_ref) = (
            round_ref(v.into(), 7, -126, bf16::MAX.into()),
            round_ref(v.into(), 10, -14, 65504.0),
        );
        let ok = same(dec(BF16, b[i]), bf_ref) && same(dec(F16, h[i]), h_ref);
        assert!(ok, "reference for {x:#010x}");
    }
}

#[test]
fn identity_casts_copy_bytes_verbatim() {
    let seq = (1..=64u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 0x7F80_7C00_7FF0_0001);
    for d in [F64, F32, F16, BF16, F8_E4M3, F8_E5M2] {
        let bits: Vec<u64> = seq
            .clone()
            .map(|b| b >> (64 - 8 * size_bytes(d).unwrap()))
            .collect();
        assert_eq!(cast_bits(d, d, &bits), bits, "{d}");
    }
}

#[test]
fn dtype_helpers_answer_as_documented() {
    let sizes = [F64, BF16, F8_E4M3, F4, F6_E2M3].map(size_bytes);
    assert_eq!(sizes, [Some(8), Some(2), Some(1), None, None]);
    assert_eq!(
        [F8_E5M2, F4, BF16, I32, U8].map(is_float),
        [true, true, true, false, false]
    );
    assert!(can_cast(F8_E4M3, BF16) && can_cast(F8_E4M3, F8_E4M3) && can_cast(F64, F16));
    assert!(!can_cast(BF16, F8_E4M3) && !can_cast(I32, F32) && !can_cast(I8, I8));
    let names = [
        ("bfloat16 torch.bfloat16 bf16", BF16),
        ("float16 torch.float16 fp16 half", F16),
        ("float32 float fp32", F32),
        ("float64 double", F64),
    ];
    for (name, want) in names
        .iter()
        .flat_map(|(n, d)| n.split(' ').map(move |n| (n, *d)))
    {
        assert_eq!(from_torch_name(name), Some(want), "{name}");
    }
    assert_eq!(from_torch_name("int8"), None);
    assert_eq!(WIDE.map(short_name), ["f64", "f32", "f16", "bf16"]);
    for d in [F8_E4M3, F8_E5M2, I32, BOOL, F4, C64, F8_E8M0] {
        assert_eq!(short_name(d), d.to_string());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn bf16_kernel_matches_half_for_non_nan_bits(x in any::<u32>()) {
        prop_assume!(!f32::from_bits(x).is_nan());
        let want = bf16::from_f32(f32::from_bits(x)).to_bits();
        prop_assert_eq!(cast_bits(F32, BF16, &[x.into()]), vec![u64::from(want)]);
    }

    #[test]
    fn slices_of_any_length_cast_elementwise(
        bits in proptest::collection::vec(any::<u32>().prop_filter("NaN", |x| {
            !f32::from_bits(*x).is_nan()
        }), 0..70)
    ) {
        let bits: Vec<u64> = bits.into_iter().map(u64::from).collect();
        let (b, h) = (cast_bits(F32, BF16, &bits), cast_bits(F32, F16, &bits));
        prop_assert_eq!(b.len(), bits.len());
        prop_assert_eq!(h.len(), bits.len());
        for (i, &x) in bits.iter().enumerate() {
            let v = f32::from_bits(x as u32);
            prop_assert_eq!(b[i], u64::from(bf16::from_f32(v).to_bits()));
            prop_assert_eq!(h[i], u64::from(f16::from_f32(v).to_bits()));
        }
        let widened: Vec<u64> = b.iter().map(|v| v << 16).collect();
        prop_assert_eq!(cast_bits(BF16, F32, &b), widened);
    }
}
