//! Unit tests of SPEC §5 slices on from-hf and of SPEC §4 to-hf.

use super::*;
use crate::testing::SLICE_1_OF_2_OF_5;

fn rank_1_of_2() -> Option<EpSlice> {
    EpSlice::new(2, 1)
}

#[test]
fn ep_slice_from_hf_keeps_only_the_rank_experts() {
    // Expert 0 belongs to rank 0 and may be absent from rank 1's input.
    let mut tensors = vec![t("backbone.layers.0.mixer.gate.weight", BF16, &[5, H])];
    tensors.extend(hf_experts(L0, 1..5, BF16));
    let ck = hf(tensors);
    let conv = from_hf_slice(&ck, &moe_config("E", 5), rank_1_of_2()).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &["backbone.layers.0.mixer.gate.weight -> model.layers.0.mixer.gate.weight"],
    );
    expected.extend(merged_l0(c, 3..5, BF16));
    assert_outputs(&conv, expected);
    let up = output(&conv, "model.layers.0.mixer.experts.gate_and_up_projs");
    assert_eq!(up.shape, vec![2, H, I]);
    let expected = metadata(&SLICE_1_OF_2_OF_5);
    assert_eq!(conv.metadata, expected);
}

#[test]
fn ep_slice_missing_an_own_expert_is_refused() {
    let ck = hf(hf_experts(L0, 0..4, BF16));
    let err = from_hf_slice(&ck, &moe_config("E", 5), rank_1_of_2()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::MissingExperts { tensor, n_missing: 1, .. }
                if *tensor == expert(L0, 4, "up_proj")
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// to-hf: SPEC §4
// ---------------------------------------------------------------------------------------------

const MERGED_UP: &str = "model.layers.0.mixer.experts.gate_and_up_projs";
const MERGED_DOWN: &str = "model.layers.0.mixer.experts.down_projs";

/// A layer norm plus merged experts `[n, H, I]` and `[n, I, H]` of layer 0.
fn merged_inputs(n: u64, dtype: Dtype) -> Vec<Spec> {
    vec![
        t("model.layers.0.norm.weight", BF16, &[H]),
        t(MERGED_UP, dtype, &[n, H, I]),
        t(MERGED_DOWN, dtype, &[n, I, H]),
    ]
}

/// The expected per-expert outputs of merged tensor `merged` `[n, rows, cols]`: row k
/// transposed, read from its own byte range, named `name_of(first_id + k)`.
fn split_rows(
    c: &Catalog,
    merged: &str,
    first_id: u64,
    name_of: &dyn Fn(u64) -> String,
) -> Vec<OutputTensor> {
    let id = id_of(c, merged);
    let m = c.tensor(id);
    let (n, rows, cols) = (m.shape[0], m.shape[1], m.shape[2]);
    let row_bytes = rows * cols * (m.dtype.bitsize() as u64 / 8);
    assert_eq!(m.bytes().end - m.bytes().start, n * row_bytes);
    (0..n)
        .map(|k| OutputTensor {
            name: name_of(first_id + k),
            dtype: m.dtype,
            shape: vec![cols, rows],
            recipe: Recipe::TransposeSlice {
                source: Source {
                    tensor: id,
                    shard: m.shard(),
                    bytes: m.bytes().start + k * row_bytes..m.bytes().start + (k + 1) * row_bytes,
                    dtype: m.dtype,
                    scale: None,
                },
                rows,
                cols,
            },
        })
        .collect()
}

/// The expected to-hf outputs of [`merged_inputs`], experts numbered from `first_id`.
fn split_l0(c: &Catalog, first_id: u64) -> Vec<OutputTensor> {
    let mut out = copies(
        c,
        &["model.layers.0.norm.weight -> backbone.layers.0.norm.weight"],
    );
    out.extend(split_rows(c, MERGED_UP, first_id, &|e| {
        expert(L0, e, "up_proj")
    }));
    out.extend(split_rows(c, MERGED_DOWN, first_id, &|e| {
        expert(L0, e, "down_proj")
    }));
    out
}

#[test]
fn split_gives_one_transposed_slice_per_expert() {
    let ck = internal(merged_inputs(3, BF16), INTERNAL_META);
    let conv = to_hf(&ck, &moe_config("E", 3), &ToHfOptions::default()).unwrap();
    let c = &ck.catalog;
    assert_outputs(&conv, split_l0(c, 0));
    for e in 0..3 {
        assert_eq!(output(&conv, &expert(L0, e, "up_proj")).shape, vec![I, H]);
        assert_eq!(output(&conv, &expert(L0, e, "down_proj")).shape, vec![H, I]);
    }
    // Expert 2 of the BF16 [3, H, I] tensor: bytes [2*H*I*2, 3*H*I*2) of its data.
    let up_start = c.tensor(id_of(c, MERGED_UP)).bytes().start;
    let Recipe::TransposeSlice { source, rows, cols } =
        &output(&conv, &expert(L0, 2, "up_proj")).recipe
    else {
        panic!("expert 2 up_proj is not a TransposeSlice");
    };
    assert_eq!((*rows, *cols), (H, I));
    assert_eq!(
        source.bytes,
        up_start + 2 * H * I * 2..up_start + 3 * H * I * 2
    );
    assert!(conv.dropped.is_empty());
}

#[test]
fn split_experts_keep_their_dtype() {
    let ck = internal(merged_inputs(2, F32), INTERNAL_META);
    let conv = to_hf(&ck, &moe_config("E", 2), &ToHfOptions::default()).unwrap();
    assert_outputs(&conv, split_l0(&ck.catalog, 0));
    assert_eq!(output(&conv, &expert(L0, 1, "down_proj")).dtype, F32);
}

#[test]
fn mtp_merged_experts_split_under_mtp_prefix() {
    let up = "mtp.layers.0.mixer.experts.gate_and_up_projs";
    let down = "mtp.layers.0.mixer.experts.down_projs";
    let ck = internal(
        vec![t(up, BF16, &[2, H, I]), t(down, BF16, &[2, I, H])],
        INTERNAL_META,
    );
    let conv = to_hf(&ck, &moe_config("M", 2), &ToHfOptions::default()).unwrap();
    let c = &ck.catalog;
    let mut expected = split_rows(c, up, 0, &|e| expert("mtp.layers.0", e, "up_proj"));
    expected.extend(split_rows(c, down, 0, &|e| {
        expert("mtp.layers.0", e, "down_proj")
    }));
    assert_outputs(&conv, expected);
}

#[test]
fn fp32_params_go_back_to_mixer_names_as_f32() {
    let ck = internal(
        vec![
            t("model.layers.0.mixer._fp32_params.A_log", F32, &[2]),
            t("model.layers.0.mixer._fp32_params.D", F32, &[2]),
            t("model.layers.0.mixer._fp32_params.dt_bias", BF16, &[2]),
            t("mtp.layers.0.mixer._fp32_params.A_log", F32, &[2]),
        ],
        INTERNAL_META,
    );
    let conv = to_hf(&ck, &moe_config("M", 2), &ToHfOptions::default()).unwrap();
    let c = &ck.catalog;
    let mut expected = copies(
        c,
        &[
            "model.layers.0.mixer._fp32_params.A_log -> backbone.layers.0.mixer.A_log",
            "model.layers.0.mixer._fp32_params.D -> backbone.layers.0.mixer.D",
            "mtp.layers.0.mixer._fp32_params.A_log -> mtp.layers.0.mixer.A_log",
        ],
    );
    expected.push(to_f32(
        c,
        "model.layers.0.mixer._fp32_params.dt_bias -> backbone.layers.0.mixer.dt_bias",
    ));
    assert_outputs(&conv, expected);
}

#[test]
fn norm_and_embeddings_get_hf_names() {
    let ck = internal(
        vec![
            t("model.embed_tokens.weight", BF16, &[8, H]),
            t("model.norm.weight", BF16, &[H]),
            t("model.layers.0.norm.weight", BF16, &[H]),
            t("lm_head.weight", BF16, &[8, H]),
        ],
        INTERNAL_META,
    );
    let conv = to_hf(&ck, &moe_config("M", 2), &ToHfOptions::default()).unwrap();
    let expected = copies(
        &ck.catalog,
        &[
            "model.embed_tokens.weight -> backbone.embeddings.weight",
            "model.norm.weight -> backbone.norm_f.weight",
            "model.layers.0.norm.weight -> backbone.layers.0.norm.weight",
            "lm_head.weight -> lm_head.weight",
        ],
    );
    assert_outputs(&conv, expected);
    let expected = metadata(&[
        ("format", "pt"),
        ("nemoconv.layout", "hf"),
        ("nemoconv.hf_prefix", "backbone"),
    ]);
    assert_eq!(conv.metadata, expected);
}

#[test]
fn model_prefix_recorded_is_used_and_option_overrides() {
    let meta = [
        ("format", "pt"),
        ("nemoconv.layout", "internal"),
        ("nemoconv.hf_prefix", "model"),
    ];
    let ck = internal(vec![t("model.norm.weight", BF16, &[H])], &meta);
    let cfg = moe_config("M", 2);

    let conv = to_hf(&ck, &cfg, &ToHfOptions::default()).unwrap();
    assert_eq!(output_names(&conv), vec!["model.norm_f.weight"]);
    assert_eq!(conv.metadata["nemoconv.hf_prefix"], "model");

    let options = ToHfOptions {
        hf_prefix: Some(HfPrefix::Backbone),
        ..ToHfOptions::default()
    };
    let conv = to_hf(&ck, &cfg, &options).unwrap();
    assert_eq!(output_names(&conv), vec!["backbone.norm_f.weight"]);
    assert_eq!(conv.metadata["nemoconv.hf_prefix"], "backbone");
}

#[test]
fn unrecorded_prefix_defaults_to_backbone() {
    let ck = internal(vec![t("model.norm.weight", BF16, &[H])], &[]);
    let conv = to_hf(&ck, &moe_config("M", 2), &ToHfOptions::default()).unwrap();
    assert_eq!(output_names(&conv), vec!["backbone.norm_f.weight"]);
    assert_eq!(conv.metadata["nemoconv.hf_prefix"], "backbone");
}

#[test]
fn exclude_regex_matches_output_names_anchored_at_start() {
    let ck = internal(
        vec![
            t("model.norm.weight", BF16, &[H]),
            t("lm_head.weight", BF16, &[8, H]),
        ],
        INTERNAL_META,
    );
    let cfg = moe_config("M", 2);
    let names_without = |re: &str| {
        let options = ToHfOptions {
            exclude: anchored_regex(re).unwrap(),
            ..ToHfOptions::default()
        };
        let conv = to_hf(&ck, &cfg, &options).unwrap();
        output_names(&conv)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let both = vec!["backbone.norm_f.weight", "lm_head.weight"];
    assert_eq!(names_without("lm_head"), vec!["backbone.norm_f.weight"]);
    assert_eq!(names_without("norm_f"), both);
    // Matched against the output (HF) name, not the input name.
    assert_eq!(names_without(r"backbone\.norm_f"), vec!["lm_head.weight"]);
    assert_eq!(names_without(r"model\.norm"), both);
    assert_eq!(names_without(""), both);
}

#[test]
fn exclude_regex_applies_to_each_split_expert() {
    let ck = internal(merged_inputs(3, BF16), INTERNAL_META);
    let options = ToHfOptions {
        exclude: anchored_regex(r"backbone\.layers\.0\.mixer\.experts\.1\.").unwrap(),
        ..ToHfOptions::default()
    };
    let conv = to_hf(&ck, &moe_config("E", 3), &options).unwrap();
    let mut expected = split_l0(&ck.catalog, 0);
    expected.retain(|o| !o.name.contains(".experts.1."));
    assert_eq!(expected.len(), 5);
    assert_outputs(&conv, expected);
}

/// SPEC §4.5: a merged tensor whose expert count or `I` dim is wrong is refused, naming the
/// tensor and its shape. Each row: what is wrong, the two merged inputs, the tensor at fault.
#[test]
fn mis_shaped_merged_tensors_are_refused() {
    let cases: [(&str, Vec<Spec>, &str, [u64; 3]); 3] = [
        (
            "first dim is not E",
            merged_inputs(2, BF16),
            MERGED_UP,
            [2, H, I],
        ),
        (
            "down_projs without I in dim 1",
            vec![
                t(MERGED_UP, BF16, &[3, H, I]),
                t(MERGED_DOWN, BF16, &[3, H, I]),
            ],
            MERGED_DOWN,
            [3, H, I],
        ),
        (
            "gate_and_up_projs without I in dim 2",
            vec![
                t(MERGED_UP, BF16, &[3, I, H]),
                t(MERGED_DOWN, BF16, &[3, I, H]),
            ],
            MERGED_UP,
            [3, I, H],
        ),
    ];
    for (case, inputs, culprit, culprit_shape) in cases {
        let ck = internal(inputs, INTERNAL_META);
        let err = to_hf(&ck, &moe_config("E", 3), &ToHfOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::MergedShape { tensor, shape, .. }
                if tensor == culprit && *shape == culprit_shape),
            "{case}: {err:?}"
        );
    }
}

#[test]
fn hf_input_to_to_hf_is_refused() {
    // The released checkpoints' own naming: `backbone.` per-expert tensors.
    let ck = hf(hf_experts(L0, 0..2, BF16));
    let err = to_hf(&ck, &moe_config("E", 2), &ToHfOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WrongLayout { .. }), "{err:?}");
}

#[test]
fn model_prefixed_hf_input_to_to_hf_is_refused() {
    let ck = hf(hf_experts("model.layers.0", 0..2, BF16));
    let err = to_hf(&ck, &moe_config("E", 2), &ToHfOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WrongLayout { .. }), "{err:?}");
}

#[test]
fn input_marked_hf_is_refused_by_to_hf() {
    let ck = internal(
        vec![t("backbone.norm_f.weight", BF16, &[H])],
        &[("format", "pt"), ("nemoconv.layout", "hf")],
    );
    let err = to_hf(&ck, &moe_config("M", 2), &ToHfOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WrongLayout { .. }), "{err:?}");
}

#[test]
fn ep_slice_to_hf_emits_the_rank_experts_under_global_ids() {
    let ck = internal(merged_inputs(2, BF16), &SLICE_1_OF_2_OF_5);
    let conv = to_hf(&ck, &moe_config("E", 5), &ToHfOptions::default()).unwrap();
    assert_outputs(&conv, split_l0(&ck.catalog, 3));
    assert!(output_names(&conv).contains(&expert(L0, 4, "down_proj").as_str()));
}
