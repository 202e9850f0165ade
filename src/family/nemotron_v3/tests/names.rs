//! The renames of SPEC §3.2 and §4.2 and the expert names, on names alone.

use crate::family::nemotron_v3::names::*;

use HfPrefix::{Backbone, Model};

/// SPEC §3.2 and §4.2, one row per rule: (HF name, prefix, internal name, whether `to_hf`
/// gives the HF name back; the other embedding spellings come back as `embeddings`).
#[rustfmt::skip]
const RENAMES: &[(&str, HfPrefix, &str, bool)] = &[
    ("backbone.norm_f.weight", Backbone, "model.norm.weight", true),
    ("backbone.embeddings.weight", Backbone, "model.embed_tokens.weight", true),
    ("backbone.embedding.weight", Backbone, "model.embed_tokens.weight", false),
    ("backbone.embed_tokens.weight", Backbone, "model.embed_tokens.weight", false),
    ("backbone.layers.0.norm.weight", Backbone, "model.layers.0.norm.weight", true),
    ("model.norm_f.weight", Model, "model.norm.weight", true),
    ("model.layers.3.mixer.q_proj.weight", Model, "model.layers.3.mixer.q_proj.weight", true),
    ("backbone.layers.0.mixer.A_log", Backbone, "model.layers.0.mixer._fp32_params.A_log", true),
    ("backbone.layers.0.mixer.D", Backbone, "model.layers.0.mixer._fp32_params.D", true),
    ("mtp.layers.0.mixer.dt_bias", Backbone, "mtp.layers.0.mixer._fp32_params.dt_bias", true),
    ("mtp.layers.0.mixer.A_log", Backbone, "mtp.layers.0.mixer._fp32_params.A_log", true),
    ("backbone.layers.0.mixer.D_scale_inv", Backbone, "model.layers.0.mixer.D_scale_inv", true),
    ("backbone.layers.0.mixer.Dx", Backbone, "model.layers.0.mixer.Dx", true),
    ("lm_head.weight", Backbone, "lm_head.weight", true),
    ("foo.bar", Backbone, "foo.bar", true),
];

#[test]
fn hf_names_get_their_internal_names_and_back() {
    for &(hf, prefix, internal, both_ways) in RENAMES {
        assert_eq!(to_internal(hf, prefix), internal, "{hf} ({prefix:?})");
        if both_ways {
            assert_eq!(to_hf(internal, prefix), hf, "{internal} ({prefix:?})");
        }
    }
    assert_eq!(
        to_hf("model.embed_tokens.weight", Model),
        "model.embeddings.weight"
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
