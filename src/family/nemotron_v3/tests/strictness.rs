//! Unit tests of the SPEC §3 strictness table, row by row, default and --lenient.

use super::*;
use crate::error::{DequantProblem, Fp8Scale, QuantSign};

#[test]
fn missing_expert_is_refused_even_when_lenient() {
    let ck = hf(hf_experts(L0, [0, 1, 3], BF16));
    for options in [FromHfOptions::default(), lenient()] {
        let err = from_hf(&ck, &moe_config("E", 4), &options).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::MissingExperts { tensor, n_missing: 1, .. }
                    if *tensor == expert(L0, 2, "up_proj")
            ),
            "{err:?}"
        );
    }
}

#[test]
fn layer_with_up_but_no_down_experts_is_refused() {
    let ck = hf(vec![
        t(expert(L0, 0, "up_proj"), BF16, &[I, H]),
        t(expert(L0, 1, "up_proj"), BF16, &[I, H]),
    ]);
    for options in [FromHfOptions::default(), lenient()] {
        let err = from_hf(&ck, &moe_config("E", 2), &options).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::MissingExperts { tensor, n_missing: 2, .. }
                    if *tensor == expert(L0, 0, "down_proj")
            ),
            "{err:?}"
        );
    }
}

#[test]
fn expert_id_ge_e_is_refused() {
    let ck = hf(hf_experts(L0, 0..3, BF16));
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::ExpertIdOutOfRange { tensor, id: 2, n_experts: 2, .. }
                if *tensor == expert(L0, 2, "up_proj")
        ),
        "{err:?}"
    );
}

#[test]
fn expert_id_ge_e_is_dropped_when_lenient() {
    let ck = hf(hf_experts(L0, 0..3, BF16));
    let conv = from_hf(&ck, &moe_config("E", 2), &lenient()).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, BF16));
    let dropped = vec![expert(L0, 2, "up_proj"), expert(L0, 2, "down_proj")];
    assert_eq!(conv.dropped, dropped);
}

/// Layer 0 (in the pattern "M") and layer 1 (beyond it) with a norm, layer 1 with experts.
fn layer_beyond_pattern_input() -> Ckpt {
    let mut tensors = vec![
        t("backbone.layers.0.norm.weight", BF16, &[H]),
        t("backbone.layers.1.norm.weight", BF16, &[H]),
    ];
    tensors.extend(hf_experts(L1, 0..2, BF16));
    hf(tensors)
}

#[test]
fn layer_beyond_pattern_is_refused() {
    let ck = layer_beyond_pattern_input();
    let err = from_hf_default(&ck, "M", 2).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::LayerOutOfRange { tensor, layer: 1, n_layers: 1, .. }
                if tensor == "backbone.layers.1.norm.weight"
        ),
        "{err:?}"
    );
}

#[test]
fn layer_beyond_pattern_is_dropped_when_lenient() {
    let ck = layer_beyond_pattern_input();
    let conv = from_hf(&ck, &moe_config("M", 2), &lenient()).unwrap();
    let expected = copies(
        &ck.catalog,
        &["backbone.layers.0.norm.weight -> model.layers.0.norm.weight"],
    );
    assert_outputs(&conv, expected);
    let mut dropped = vec!["backbone.layers.1.norm.weight".to_string()];
    dropped.extend(hf_experts(L1, 0..2, BF16).into_iter().map(|s| s.0));
    assert_eq!(conv.dropped, dropped);
}

#[test]
fn scale_inv_is_refused() {
    let scale = "backbone.layers.0.mixer.D_scale_inv";
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t(scale, F32, &[1]));
    let ck = hf(tensors);
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(
        matches!(&err, Error::Droppable { tensor, .. } if tensor == scale),
        "{err:?}"
    );
}

#[test]
fn fp8_experts_with_scale_inv_are_refused_as_quantized() {
    let scale = format!("{}_scale_inv", expert(L0, 0, "up_proj"));
    let mut tensors = hf_experts(L0, 0..2, Dtype::F8_E4M3);
    tensors.push(t(scale.as_str(), F32, &[1, 1]));
    let ck = hf(tensors);
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    let fp8 = QuantSign::Fp8 {
        dtype: Dtype::F8_E4M3,
        scale: Fp8Scale::BlockInv,
    };
    assert_eq!(quant_sign(&err), Some(&fp8), "{err:?}");
}

/// What a refusal of a quantized input says it found.
fn quant_sign(err: &Error) -> Option<&QuantSign> {
    match err {
        Error::Quantized { what, .. } => Some(what),
        _ => None,
    }
}

/// Issue 12: one quantization detector; every F8 dtype marks a quantized input, and
/// `--dequantize` refuses the ones it cannot cast rather than copying them as they are.
#[test]
fn fnuz_fp8_is_refused_as_quantized_and_by_dequantize() {
    let ck = hf(hf_experts(L0, 0..2, Dtype::F8_E5M2FNUZ));
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    let fp8 = QuantSign::Fp8 {
        dtype: Dtype::F8_E5M2FNUZ,
        scale: Fp8Scale::None,
    };
    assert_eq!(quant_sign(&err), Some(&fp8), "{err:?}");
    let dequantize = FromHfOptions {
        dequantize: true,
        ..FromHfOptions::default()
    };
    let err = from_hf(&ck, &moe_config("E", 2), &dequantize).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Dequantize {
                problem: DequantProblem::Fp8Format {
                    dtype: Dtype::F8_E5M2FNUZ
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn scale_inv_is_dropped_when_lenient() {
    let mut tensors = hf_experts(L0, 0..2, Dtype::F8_E4M3);
    let scales: Vec<String> = (0..2)
        .flat_map(|e| ["up_proj", "down_proj"].map(|p| format!("{}_scale_inv", expert(L0, e, p))))
        .collect();
    tensors.extend(scales.iter().map(|s| t(s.as_str(), F32, &[1, 1])));
    let ck = hf(tensors);
    let conv = from_hf(&ck, &moe_config("E", 2), &lenient()).unwrap();
    // The reference casts the FP8 experts without their scales; --lenient reproduces it.
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, BF16));
    assert_eq!(conv.dropped, scales);
}

#[test]
fn gate_proj_expert_is_refused() {
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t(expert(L0, 0, "gate_proj"), BF16, &[I, H]));
    let ck = hf(tensors);
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(
        matches!(&err, Error::Droppable { tensor, .. } if *tensor == expert(L0, 0, "gate_proj")),
        "{err:?}"
    );
}

#[test]
fn gate_proj_expert_is_dropped_when_lenient() {
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t(expert(L0, 0, "gate_proj"), BF16, &[I, H]));
    tensors.push(t(expert(L0, 1, "gate_proj"), BF16, &[I, H]));
    let ck = hf(tensors);
    let conv = from_hf(&ck, &moe_config("E", 2), &lenient()).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, BF16));
    let dropped = vec![expert(L0, 0, "gate_proj"), expert(L0, 1, "gate_proj")];
    assert_eq!(conv.dropped, dropped);
}

/// Pattern "EE": layer 0 with experts, layer 1 with only its router.
fn moe_layer_without_experts_input() -> Ckpt {
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t("backbone.layers.1.mixer.gate.weight", BF16, &[2, H]));
    hf(tensors)
}

#[test]
fn moe_layer_without_experts_is_refused() {
    let ck = moe_layer_without_experts_input();
    let err = from_hf_default(&ck, "EE", 2).unwrap_err();
    assert!(
        matches!(err, Error::MoeLayerWithoutExperts { layer: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn moe_layer_without_experts_is_accepted_when_lenient() {
    let ck = moe_layer_without_experts_input();
    let conv = from_hf(&ck, &moe_config("EE", 2), &lenient()).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &["backbone.layers.1.mixer.gate.weight -> model.layers.1.mixer.gate.weight"],
    );
    expected.extend(merged_l0(c, 0..2, BF16));
    assert_outputs(&conv, expected);
    assert!(conv.dropped.is_empty());
}

#[test]
fn expert_bias_is_refused_even_when_lenient() {
    let bias = format!("{L0}.mixer.experts.0.up_proj.bias");
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t(bias.as_str(), BF16, &[I]));
    let ck = hf(tensors);
    for options in [FromHfOptions::default(), lenient()] {
        let err = from_hf(&ck, &moe_config("E", 2), &options).unwrap_err();
        assert!(
            matches!(&err, Error::ExpertBias { tensor, .. } if *tensor == bias),
            "{err:?}"
        );
    }
}

#[test]
fn mlp_bias_true_is_refused() {
    let ck = hf(hf_experts(L0, 0..2, BF16));
    let cfg = config(
        r#"{"hybrid_override_pattern": "E", "n_routed_experts": 2,
            "moe_intermediate_size": 2, "mlp_bias": true}"#,
    );
    for options in [FromHfOptions::default(), lenient()] {
        let err = from_hf(&ck, &cfg, &options).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::ExpertBias { path, tensor }
                    if tensor == "mlp_bias" && path == Path::new("config.json")
            ),
            "{err:?}"
        );
    }
}

#[test]
fn pattern_mismatch_is_refused() {
    let mut tensors = hf_experts(L0, 0..2, BF16);
    tensors.push(t("backbone.layers.0.mixer.A_log", F32, &[2]));
    let ck = hf(tensors);
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PatternMismatch { tensor, layer: 0, kind, found, .. }
                if tensor == "backbone.layers.0.mixer.A_log"
                    && *kind == LayerKind::Moe.name()
                    && *found == LayerKind::Mamba.name()
        ),
        "{err:?}"
    );
}

#[test]
fn experts_in_a_mamba_layer_are_a_pattern_mismatch() {
    let ck = hf(hf_experts(L0, 0..2, BF16));
    let err = from_hf_default(&ck, "M", 2).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PatternMismatch { layer: 0, kind, found, .. }
                if *kind == LayerKind::Mamba.name() && *found == LayerKind::Moe.name()
        ),
        "{err:?}"
    );
}

#[test]
fn internal_input_to_from_hf_is_refused() {
    let ck = internal(
        vec![
            t(
                "model.layers.0.mixer.experts.gate_and_up_projs",
                BF16,
                &[2, H, I],
            ),
            t("model.layers.0.mixer.experts.down_projs", BF16, &[2, I, H]),
        ],
        &[],
    );
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(matches!(err, Error::WrongLayout { .. }), "{err:?}");
}

#[test]
fn input_marked_internal_is_refused_by_from_hf() {
    let ck = internal(vec![t("model.norm.weight", BF16, &[H])], INTERNAL_META);
    let err = from_hf_default(&ck, "M", 2).unwrap_err();
    assert!(matches!(err, Error::WrongLayout { .. }), "{err:?}");
}
