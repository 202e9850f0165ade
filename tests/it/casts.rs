//! Expert dtypes (SPEC §2, §3.3, §6): merged experts take `--dtype`, else the config's
//! `torch_dtype` (or `dtype`), else BF16, converted with round-to-nearest-even; NaN stays NaN;
//! nothing else is ever cast. Edge values are patched into one expert and their expected bits
//! worked out by hand (and checked against the `half` crate).

use half::{bf16, f16};

use crate::builder::{Checkpoint, CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::from_hf::{Converted, back_to_hf, convert};
use crate::harness::{Tensor, assert_same_tensors};

/// The expert the edge values are patched into: `[I, H]` = `[3, 4]`, 12 elements.
const UP0: &str = "backbone.layers.1.mixer.experts.0.up_proj.weight";
const MERGED_UP: &str = "model.layers.1.mixer.experts.gate_and_up_projs";

/// An F32 checkpoint with `torch_dtype` whose expert [`UP0`] starts with `bits`, converted
/// with `options`.
fn patched(torch_dtype: &'static str, bits: &[u32], options: &[&str]) -> (Checkpoint, Converted) {
    let mut ck = CheckpointBuilder {
        dtype: Dt::F32,
        torch_dtype: Some(torch_dtype),
        ..Default::default()
    }
    .build();
    let tensor = ck.get_mut(UP0);
    assert_eq!(tensor.shape, vec![3, 4]);
    for (i, b) in bits.iter().enumerate() {
        tensor.data[i * 4..i * 4 + 4].copy_from_slice(&b.to_le_bytes());
    }
    let c = convert(&ck, Files::Indexed(2), options);
    (ck, c)
}

/// The output element index (in slot 0) of input element `i` of [`UP0`]: input (r, c) of
/// `[3, 4]` lands at (c, r) of `[4, 3]`.
fn merged_index(i: usize) -> usize {
    (i % 4) * 3 + i / 4
}

/// The 16-bit output element that input element `i` of [`UP0`] becomes.
fn merged_bits(merged: &Tensor, i: usize) -> u16 {
    let at = merged_index(i) * 2;
    u16::from_le_bytes([merged.data[at], merged.data[at + 1]])
}

/// F32 values at a rounding edge and the BF16 bits round-to-nearest-even gives them.
const BF16_CASES: [(u32, u16); 8] = [
    (0x3F80_8000, 0x3F80), // 1 + 2^-8: a tie, down to the even 1.0
    (0x3F81_8000, 0x3F82), // 1 + 3*2^-8: a tie, up to the even neighbour
    (0x3F80_8001, 0x3F81), // just above a tie: up
    (0x3F80_7FFF, 0x3F80), // just below a tie: down
    (0xBF80_8000, 0xBF80), // -(1 + 2^-8): ties to even for negatives too
    (0x7F7F_FFFF, 0x7F80), // f32::MAX rounds up to +inf
    (0x0000_8000, 0x0000), // a subnormal tie, down to +0
    (0x0001_8000, 0x0002), // a subnormal tie, up to even
];

/// F32 values at a rounding edge and the F16 bits round-to-nearest-even gives them.
const F16_CASES: [(u32, u16); 8] = [
    (0x3F80_1000, 0x3C00), // 1 + 2^-11: a tie, down to the even 1.0
    (0x3F80_3000, 0x3C02), // 1 + 3*2^-11: a tie, up to the even neighbour
    (0x477F_F000, 0x7C00), // 65520: a tie above the largest F16, to +inf
    (0x477F_EF00, 0x7BFF), // 65519: down to 65504
    (0x3300_0000, 0x0000), // 2^-25: half the smallest subnormal, a tie, down to +0
    (0x33C0_0000, 0x0002), // 3*2^-25: a subnormal tie, up to even
    (0x3380_0000, 0x0001), // 2^-24: the smallest subnormal, exact
    (0xB880_0000, 0x8400), // -2^-14: the smallest negative normal, exact
];

fn check_cases(cases: &[(u32, u16)], torch_dtype: &'static str, options: &[&str], dt: Dt) {
    let bits: Vec<u32> = cases.iter().map(|c| c.0).collect();
    let (ck, c) = patched(torch_dtype, &bits, options);
    let merged = &c.tensors[MERGED_UP];
    assert_eq!(
        (merged.dtype.as_str(), &merged.shape[..]),
        (dt.word(), &[4, 4, 3][..])
    );
    for (i, (from, want)) in cases.iter().enumerate() {
        let by_half = match dt {
            Dt::Bf16 => bf16::from_f32(f32::from_bits(*from)).to_bits(),
            _ => f16::from_f32(f32::from_bits(*from)).to_bits(),
        };
        assert_eq!(by_half, *want, "the half crate agrees on {from:#010x}");
        let got = merged_bits(merged, i);
        assert_eq!(
            got,
            *want,
            "F32 {from:#010x} must become {} {want:#06x}, got {got:#06x}",
            dt.word()
        );
    }
    // Everything but the experts keeps its F32 bytes.
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), dt));
    assert_eq!(c.tensors["model.layers.1.mixer.gate.weight"].dtype, "F32");
}

#[test]
fn f32_experts_are_cast_rne_to_bf16_for_torch_dtype_bfloat16() {
    check_cases(&BF16_CASES, "bfloat16", &[], Dt::Bf16);
}

#[test]
fn f32_experts_are_cast_rne_to_f16_for_torch_dtype_float16() {
    check_cases(&F16_CASES, "float16", &[], Dt::F16);
}

#[test]
fn dtype_option_f16_casts_f32_experts_rne() {
    check_cases(&F16_CASES, "bfloat16", &["--dtype", "f16"], Dt::F16);
}

/// NaNs that naive rounding of the bits turns into an infinity or a zero.
const NANS: [u32; 4] = [0x7F80_0001, 0x7FFF_FFFF, 0xFF80_0001, 0x7FC0_0000];

#[test]
fn nan_experts_stay_nan_when_cast() {
    for (torch_dtype, dt) in [("bfloat16", Dt::Bf16), ("float16", Dt::F16)] {
        let (ck, c) = patched(torch_dtype, &NANS, &[]);
        let merged = &c.tensors[MERGED_UP];
        for (i, from) in NANS.iter().enumerate() {
            let got = merged_bits(merged, i);
            let value = dt.decode(&got.to_le_bytes())[0];
            assert!(
                value.is_nan(),
                "F32 NaN {from:#010x} became {} {got:#06x}",
                dt.word()
            );
        }
        // The rest of the tensor and every other tensor are as expected, NaN payloads aside.
        let mut expected = expect::from_hf(&ck.map(), dt);
        let want = expected.remove(MERGED_UP).unwrap();
        let mut actual = c.tensors.clone();
        actual.remove(MERGED_UP);
        assert_same_tensors(&actual, &expected);
        let nan_at: Vec<usize> = (0..NANS.len()).map(merged_index).collect();
        for e in (0..merged.data.len() / 2).filter(|e| !nan_at.contains(e)) {
            let at = 2 * e;
            assert_eq!(
                merged.data[at..at + 2],
                want.data[at..at + 2],
                "{MERGED_UP} element {e}"
            );
        }
    }
}

#[test]
fn f16_experts_are_cast_to_bf16_for_torch_dtype_bfloat16() {
    let ck = CheckpointBuilder {
        dtype: Dt::F16,
        torch_dtype: Some("bfloat16"),
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    let expected = expect::from_hf(&ck.map(), Dt::Bf16);
    assert_eq!(
        expected["model.layers.3.mixer.experts.down_projs"].dtype,
        "BF16"
    );
    assert_eq!(
        expected["model.layers.3.mixer.shared_experts.up_proj.weight"].dtype,
        "F16"
    );
    assert_same_tensors(&c.tensors, &expected);
}

#[test]
fn dtype_f32_option_overrides_torch_dtype() {
    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Indexed(2), &["--dtype", "f32"]);
    let expected = expect::from_hf(&ck.map(), Dt::F32);
    assert_eq!(
        expected["model.layers.1.mixer.experts.gate_and_up_projs"].dtype,
        "F32"
    );
    assert_same_tensors(&c.tensors, &expected);
    // to-hf does not cast back (SPEC §4.1): the experts come back F32.
    let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
    assert_same_tensors(&hf, &expect::round_trip(&ck.map(), Dt::F32));
}

#[test]
fn missing_torch_dtype_means_bf16_experts() {
    let ck = CheckpointBuilder {
        dtype: Dt::F32,
        torch_dtype: None,
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
}

#[test]
fn dtype_field_is_read_as_torch_dtype_synonym() {
    let mut ck = CheckpointBuilder {
        dtype: Dt::F32,
        torch_dtype: None,
        ..Default::default()
    }
    .build();
    ck.config["dtype"] = serde_json::json!("float16");
    let c = convert(&ck, Files::Indexed(2), &[]);
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::F16));
}
