//! Unit tests of SPEC §3.3 and §3.4: expert merges and MTP layers.

use super::*;

#[test]
fn experts_are_transposed_and_stacked_in_numeric_id_order() {
    // Stored 10, 11, 2, 0, 1, 3..10: lexical order would put 10 before 2.
    let order = [10, 11, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9];
    let mut tensors = vec![t("backbone.layers.0.norm.weight", BF16, &[H])];
    tensors.extend(hf_experts(L0, order, BF16));
    let ck = hf(tensors);
    let c = &ck.catalog;
    assert_eq!(c.tensors[1].name, expert(L0, 10, "up_proj"));
    let conv = from_hf_default(&ck, "E", 12).unwrap();
    let mut expected = copies(
        c,
        &["backbone.layers.0.norm.weight -> model.layers.0.norm.weight"],
    );
    expected.extend(merged_l0(c, 0..12, BF16));
    assert_outputs(&conv, expected);

    let up = output(&conv, "model.layers.0.mixer.experts.gate_and_up_projs");
    assert_eq!(up.shape, vec![12, H, I]);
    let down = output(&conv, "model.layers.0.mixer.experts.down_projs");
    assert_eq!(down.shape, vec![12, I, H]);
    let read: Vec<&str> = down
        .recipe
        .sources()
        .iter()
        .map(|s| c.tensor(s.tensor).name.as_str())
        .collect();
    let want: Vec<String> = (0..12).map(|e| expert(L0, e, "down_proj")).collect();
    assert_eq!(read, want);
}

#[test]
fn experts_straddling_two_shards_merge_in_id_order() {
    let ck = checkpoint(
        &[hf_experts(L0, 0..3, BF16), hf_experts(L0, 3..5, BF16)],
        &[],
    );
    let conv = from_hf_default(&ck, "E", 5).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..5, BF16));
    let up = output(&conv, "model.layers.0.mixer.experts.gate_and_up_projs");
    let shards: Vec<u32> = up.recipe.sources().iter().map(|s| s.shard.0).collect();
    assert_eq!(shards, vec![0, 0, 0, 1, 1]);
}

#[test]
fn merged_experts_take_the_config_dtype() {
    let ck = hf(hf_experts(L0, 0..2, F32));
    let conv = from_hf_default(&ck, "E", 2).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, BF16));
}

#[test]
fn dtype_synonym_gives_the_merged_dtype() {
    let ck = hf(hf_experts(L0, 0..2, F32));
    let cfg = config(
        r#"{"hybrid_override_pattern": "E", "n_routed_experts": 2,
            "moe_intermediate_size": 2, "dtype": "float16"}"#,
    );
    let conv = from_hf(&ck, &cfg, &FromHfOptions::default()).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, Dtype::F16));
}

#[test]
fn missing_torch_dtype_gives_bf16_experts() {
    let ck = hf(hf_experts(L0, 0..2, F32));
    let cfg = config(
        r#"{"hybrid_override_pattern": "E", "n_routed_experts": 2, "moe_intermediate_size": 2}"#,
    );
    let conv = from_hf(&ck, &cfg, &FromHfOptions::default()).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, BF16));
}

#[test]
fn dtype_option_overrides_config() {
    let ck = hf(hf_experts(L0, 0..2, BF16));
    let options = FromHfOptions {
        expert_dtype: Some(F32),
        ..FromHfOptions::default()
    };
    let conv = from_hf(&ck, &moe_config("E", 2), &options).unwrap();
    assert_outputs(&conv, merged_l0(&ck.catalog, 0..2, F32));
}

#[test]
fn nothing_else_is_cast() {
    let mut tensors = vec![
        t("backbone.embeddings.weight", BF16, &[8, H]),
        t("backbone.layers.0.norm.weight", BF16, &[H]),
        t("backbone.layers.0.mixer.gate.weight", BF16, &[2, H]),
        t(
            "backbone.layers.0.mixer.gate.e_score_correction_bias",
            F32,
            &[2],
        ),
        t(
            "backbone.layers.0.mixer.shared_experts.up_proj.weight",
            BF16,
            &[I, H],
        ),
        t(
            "backbone.layers.0.mixer.shared_experts.down_proj.weight",
            BF16,
            &[H, I],
        ),
        t("backbone.norm_f.weight", BF16, &[H]),
        t("lm_head.weight", BF16, &[8, H]),
    ];
    tensors.extend(hf_experts(L0, 0..2, BF16));
    let ck = hf(tensors);
    let cfg = config(
        r#"{"hybrid_override_pattern": "E", "n_routed_experts": 2,
            "moe_intermediate_size": 2, "torch_dtype": "float32"}"#,
    );
    let conv = from_hf(&ck, &cfg, &FromHfOptions::default()).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &[
            "backbone.embeddings.weight -> model.embed_tokens.weight",
            "backbone.layers.0.norm.weight -> model.layers.0.norm.weight",
            "backbone.layers.0.mixer.gate.weight -> model.layers.0.mixer.gate.weight",
            "backbone.layers.0.mixer.gate.e_score_correction_bias -> model.layers.0.mixer.gate.e_score_correction_bias",
            "backbone.layers.0.mixer.shared_experts.up_proj.weight -> model.layers.0.mixer.shared_experts.up_proj.weight",
            "backbone.layers.0.mixer.shared_experts.down_proj.weight -> model.layers.0.mixer.shared_experts.down_proj.weight",
            "backbone.norm_f.weight -> model.norm.weight",
            "lm_head.weight -> lm_head.weight",
        ],
    );
    expected.extend(merged_l0(c, 0..2, F32));
    assert_outputs(&conv, expected);
}

#[test]
fn expert_width_other_than_moe_intermediate_size_is_refused() {
    let ck = hf(vec![
        t(expert(L0, 0, "up_proj"), BF16, &[3, H]),
        t(expert(L0, 0, "down_proj"), BF16, &[H, 3]),
    ]);
    let err = from_hf_default(&ck, "E", 1).unwrap_err();
    assert!(
        matches!(&err, Error::ExpertMismatch { tensor, .. } if *tensor == expert(L0, 0, "up_proj")),
        "{err:?}"
    );
}

#[test]
fn experts_of_different_shapes_are_refused() {
    let ck = hf(vec![
        t(expert(L0, 0, "up_proj"), BF16, &[I, H]),
        t(expert(L0, 1, "up_proj"), BF16, &[I, H + 1]),
        t(expert(L0, 0, "down_proj"), BF16, &[H, I]),
        t(expert(L0, 1, "down_proj"), BF16, &[H, I]),
    ]);
    let err = from_hf_default(&ck, "E", 2).unwrap_err();
    assert!(
        matches!(&err, Error::ExpertMismatch { tensor, .. } if *tensor == expert(L0, 1, "up_proj")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// from-hf: SPEC §3.4 MTP
// ---------------------------------------------------------------------------------------------

#[test]
fn mtp_experts_merge_under_mtp_prefix() {
    let mut tensors = vec![
        t("backbone.layers.0.norm.weight", BF16, &[H]),
        t("mtp.layers.0.norm.weight", BF16, &[H]),
    ];
    tensors.extend(hf_experts("mtp.layers.0", [1, 0], F32));
    let ck = hf(tensors);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &[
            "backbone.layers.0.norm.weight -> model.layers.0.norm.weight",
            "mtp.layers.0.norm.weight -> mtp.layers.0.norm.weight",
        ],
    );
    expected.extend(merged_pair(c, "mtp.layers.0", "mtp.layers.0", 0..2, BF16));
    assert_outputs(&conv, expected);
}

#[test]
fn mtp_fp32_params_are_renamed() {
    let ck = hf(vec![
        t("mtp.layers.0.mixer.A_log", F32, &[2]),
        t("mtp.layers.0.mixer.D", BF16, &[2]),
        t("mtp.layers.0.mixer.dt_bias", BF16, &[2]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &["mtp.layers.0.mixer.A_log -> mtp.layers.0.mixer._fp32_params.A_log"],
    );
    expected.push(to_f32(
        c,
        "mtp.layers.0.mixer.D -> mtp.layers.0.mixer._fp32_params.D",
    ));
    expected.push(to_f32(
        c,
        "mtp.layers.0.mixer.dt_bias -> mtp.layers.0.mixer._fp32_params.dt_bias",
    ));
    assert_outputs(&conv, expected);
}

#[test]
fn mtp_layers_are_not_checked_against_the_pattern() {
    let ck = hf(vec![t("mtp.layers.7.norm.weight", BF16, &[H])]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &["mtp.layers.7.norm.weight -> mtp.layers.7.norm.weight"],
    );
    assert_outputs(&conv, expected);
}
