//! The renames of SPEC §3.2 and §4.2 and the expert names, on names alone.

use crate::family::nemotron_v3::names::*;

#[test]
fn norm_f_and_embeddings_get_internal_names() {
    let p = HfPrefix::Backbone;
    assert_eq!(
        to_internal("backbone.norm_f.weight", p),
        "model.norm.weight"
    );
    assert_eq!(
        to_internal("backbone.embeddings.weight", p),
        "model.embed_tokens.weight"
    );
    assert_eq!(
        to_internal("backbone.embedding.weight", p),
        "model.embed_tokens.weight"
    );
    assert_eq!(
        to_internal("backbone.embed_tokens.weight", p),
        "model.embed_tokens.weight"
    );
    assert_eq!(
        to_internal("backbone.layers.0.norm.weight", p),
        "model.layers.0.norm.weight"
    );
}

#[test]
fn model_prefix_input_keeps_model_and_renames_top_tensors() {
    let p = HfPrefix::Model;
    assert_eq!(to_internal("model.norm_f.weight", p), "model.norm.weight");
    assert_eq!(
        to_internal("model.layers.3.mixer.q_proj.weight", p),
        "model.layers.3.mixer.q_proj.weight"
    );
}

#[test]
fn fp32_params_move_under_fp32_params_by_exact_suffix() {
    let p = HfPrefix::Backbone;
    assert_eq!(
        to_internal("backbone.layers.0.mixer.A_log", p),
        "model.layers.0.mixer._fp32_params.A_log"
    );
    assert_eq!(
        to_internal("mtp.layers.0.mixer.dt_bias", p),
        "mtp.layers.0.mixer._fp32_params.dt_bias"
    );
    assert_eq!(
        to_internal("backbone.layers.0.mixer.D_scale_inv", p),
        "model.layers.0.mixer.D_scale_inv"
    );
    assert_eq!(
        to_internal("backbone.layers.0.mixer.Dx", p),
        "model.layers.0.mixer.Dx"
    );
}

#[test]
fn unprefixed_names_are_unchanged() {
    assert_eq!(
        to_internal("lm_head.weight", HfPrefix::Backbone),
        "lm_head.weight"
    );
    assert_eq!(to_internal("foo.bar", HfPrefix::Backbone), "foo.bar");
}

#[test]
fn to_hf_reverses_the_renames() {
    let p = HfPrefix::Backbone;
    assert_eq!(to_hf("model.norm.weight", p), "backbone.norm_f.weight");
    assert_eq!(
        to_hf("model.embed_tokens.weight", p),
        "backbone.embeddings.weight"
    );
    assert_eq!(
        to_hf("model.layers.0.mixer._fp32_params.D", p),
        "backbone.layers.0.mixer.D"
    );
    assert_eq!(
        to_hf("model.layers.0.norm.weight", p),
        "backbone.layers.0.norm.weight"
    );
    assert_eq!(to_hf("lm_head.weight", p), "lm_head.weight");
    assert_eq!(
        to_hf("mtp.layers.0.mixer._fp32_params.A_log", p),
        "mtp.layers.0.mixer.A_log"
    );
    assert_eq!(
        to_hf("model.norm.weight", HfPrefix::Model),
        "model.norm_f.weight"
    );
}

#[test]
fn expert_names_parse_into_typed_keys() {
    let e = ExpertName::parse("model.layers.12.mixer.experts.7.down_proj.weight").unwrap();
    assert_eq!(
        (e.scope, e.layer, e.id, e.proj, e.param),
        (Scope::Main, 12, 7, Proj::Down, "weight")
    );
    let m = ExpertName::parse("mtp.layers.0.mixer.experts.3.up_proj.weight").unwrap();
    assert_eq!(
        (m.scope, m.layer, m.id, m.proj),
        (Scope::Mtp, 0, 3, Proj::Up)
    );
    assert!(ExpertName::parse("model.layers.1.mixer.shared_experts.up_proj.weight").is_none());
    assert!(ExpertName::parse("model.layers.1.mixer.experts.x.up_proj.weight").is_none());
}

#[test]
fn merged_names_give_split_hf_names() {
    let m = MergedName::parse("model.layers.3.mixer.experts.gate_and_up_projs").unwrap();
    assert_eq!(
        m.expert_hf_name(HfPrefix::Backbone, 5),
        "backbone.layers.3.mixer.experts.5.up_proj.weight"
    );
    let t = MergedName::parse("mtp.layers.0.mixer.experts.down_projs").unwrap();
    assert_eq!(
        t.expert_hf_name(HfPrefix::Backbone, 0),
        "mtp.layers.0.mixer.experts.0.down_proj.weight"
    );
}
