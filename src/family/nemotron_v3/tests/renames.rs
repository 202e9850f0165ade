//! Unit tests of SPEC §3.1, §3.2 and §3.5: prefixes, renames and the F32 rule.

use super::*;

#[test]
fn prefix_backbone_is_renamed_to_model() {
    let ck = hf(vec![
        t("backbone.layers.0.norm.weight", BF16, &[H]),
        t("backbone.layers.0.mixer.in_proj.weight", BF16, &[8, H]),
        t("backbone.layers.0.mixer.conv1d.bias", BF16, &[8]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &[
            "backbone.layers.0.norm.weight -> model.layers.0.norm.weight",
            "backbone.layers.0.mixer.in_proj.weight -> model.layers.0.mixer.in_proj.weight",
            "backbone.layers.0.mixer.conv1d.bias -> model.layers.0.mixer.conv1d.bias",
        ],
    );
    assert_outputs(&conv, expected);
    assert!(conv.dropped.is_empty());
}

#[test]
fn norm_f_becomes_model_norm() {
    let ck = hf(vec![t("backbone.norm_f.weight", BF16, &[H])]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &["backbone.norm_f.weight -> model.norm.weight"],
    );
    assert_outputs(&conv, expected);
}

#[test]
fn embedding_singular_and_plural_become_embed_tokens() {
    for input in [
        "backbone.embeddings.weight",
        "backbone.embedding.weight",
        "backbone.embed_tokens.weight",
    ] {
        let ck = hf(vec![t(input, BF16, &[8, H])]);
        let conv = from_hf_default(&ck, "M", 2).unwrap();
        let pair = format!("{input} -> model.embed_tokens.weight");
        let expected = copies(&ck.catalog, &[pair.as_str()]);
        assert_outputs(&conv, expected);
    }
}

#[test]
fn lm_head_and_unprefixed_names_are_unchanged() {
    let ck = hf(vec![
        t("lm_head.weight", BF16, &[8, H]),
        t("something.else", F32, &[3]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &[
            "lm_head.weight -> lm_head.weight",
            "something.else -> something.else",
        ],
    );
    assert_outputs(&conv, expected);
}

#[test]
fn fp32_params_are_renamed_and_bf16_dt_bias_cast_to_f32() {
    let ck = hf(vec![
        t("backbone.layers.0.mixer.A_log", F32, &[2]),
        t("backbone.layers.0.mixer.D", F32, &[2]),
        t("backbone.layers.0.mixer.dt_bias", BF16, &[2]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &[
            "backbone.layers.0.mixer.A_log -> model.layers.0.mixer._fp32_params.A_log",
            "backbone.layers.0.mixer.D -> model.layers.0.mixer._fp32_params.D",
        ],
    );
    expected.push(to_f32(
        c,
        "backbone.layers.0.mixer.dt_bias -> model.layers.0.mixer._fp32_params.dt_bias",
    ));
    assert_outputs(&conv, expected);
}

#[test]
fn f32_a_log_is_copied_not_cast() {
    let ck = hf(vec![t("backbone.layers.0.mixer.A_log", F32, &[2])]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let out = output(&conv, "model.layers.0.mixer._fp32_params.A_log");
    assert_eq!(out.dtype, F32);
    assert!(matches!(out.recipe, Recipe::Copy(_)), "{:?}", out.recipe);
}

#[test]
fn bf16_a_log_and_f16_d_are_cast_to_f32() {
    let ck = hf(vec![
        t("backbone.layers.0.mixer.A_log", BF16, &[2]),
        t("backbone.layers.0.mixer.D", Dtype::F16, &[2]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let c = &ck.catalog;
    let expected = vec![
        to_f32(
            c,
            "backbone.layers.0.mixer.A_log -> model.layers.0.mixer._fp32_params.A_log",
        ),
        to_f32(
            c,
            "backbone.layers.0.mixer.D -> model.layers.0.mixer._fp32_params.D",
        ),
    ];
    assert_outputs(&conv, expected);
}

#[test]
fn fp32_rule_is_by_exact_name_suffix() {
    let ck = hf(vec![
        t("backbone.layers.0.mixer.D_extra", BF16, &[2]),
        t("backbone.layers.0.mixer.norm.weight", BF16, &[2]),
        t("backbone.layers.0.mixer.dt_bias.other", BF16, &[2]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &[
            "backbone.layers.0.mixer.D_extra -> model.layers.0.mixer.D_extra",
            "backbone.layers.0.mixer.norm.weight -> model.layers.0.mixer.norm.weight",
            "backbone.layers.0.mixer.dt_bias.other -> model.layers.0.mixer.dt_bias.other",
        ],
    );
    assert_outputs(&conv, expected);
}

#[test]
fn fp32_rule_renames_but_does_not_cast_non_float_types() {
    let ck = hf(vec![t("backbone.layers.0.mixer.D", Dtype::I32, &[2])]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &["backbone.layers.0.mixer.D -> model.layers.0.mixer._fp32_params.D"],
    );
    assert_outputs(&conv, expected);
}

#[test]
fn backbone_prefix_is_recorded_in_metadata() {
    let ck = hf(vec![t("backbone.norm_f.weight", BF16, &[H])]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = metadata(&[
        ("format", "pt"),
        ("nemoconv.layout", "internal"),
        ("nemoconv.hf_prefix", "backbone"),
    ]);
    assert_eq!(conv.metadata, expected);
}

#[test]
fn model_prefix_input_is_recorded_in_metadata() {
    let mut tensors = vec![
        t("model.embeddings.weight", BF16, &[8, H]),
        t("model.norm_f.weight", BF16, &[H]),
        t("model.layers.0.norm.weight", BF16, &[H]),
    ];
    tensors.extend(hf_experts("model.layers.0", 0..2, BF16));
    let ck = hf(tensors);
    let conv = from_hf_default(&ck, "E", 2).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &[
            "model.embeddings.weight -> model.embed_tokens.weight",
            "model.norm_f.weight -> model.norm.weight",
            "model.layers.0.norm.weight -> model.layers.0.norm.weight",
        ],
    );
    expected.extend(merged_pair(
        c,
        "model.layers.0",
        "model.layers.0",
        0..2,
        BF16,
    ));
    assert_outputs(&conv, expected);
    let expected = metadata(&[
        ("format", "pt"),
        ("nemoconv.layout", "internal"),
        ("nemoconv.hf_prefix", "model"),
    ]);
    assert_eq!(conv.metadata, expected);
}

#[test]
fn mixed_prefixes_are_refused() {
    let ck = hf(vec![
        t("backbone.layers.0.norm.weight", BF16, &[H]),
        t("model.norm_f.weight", BF16, &[H]),
    ]);
    for options in [FromHfOptions::default(), lenient()] {
        let err = from_hf(&ck, &moe_config("M", 2), &options).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::MixedPrefix { tensor, prefix, other, other_prefix, .. }
                    if tensor == "model.norm_f.weight"
                        && prefix == "model."
                        && other == "backbone.layers.0.norm.weight"
                        && other_prefix == "backbone."
            ),
            "{err:?}"
        );
    }
}

#[test]
fn mtp_names_do_not_count_as_a_prefix() {
    let ck = hf(vec![
        t("mtp.layers.0.norm.weight", BF16, &[H]),
        t("model.norm_f.weight", BF16, &[H]),
    ]);
    let conv = from_hf_default(&ck, "M", 2).unwrap();
    let expected = copies(
        &ck.catalog,
        &[
            "mtp.layers.0.norm.weight -> mtp.layers.0.norm.weight",
            "model.norm_f.weight -> model.norm.weight",
        ],
    );
    assert_outputs(&conv, expected);
    assert_eq!(conv.metadata["nemoconv.hf_prefix"], "model");
}
