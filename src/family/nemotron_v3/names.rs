//! NemotronV3 tensor names, parsed into typed keys: prefixes, the renames of SPEC §3.2 and
//! §4.2, expert names, layer indices and which layer kind a mixer parameter belongs to.

use crate::config::LayerKind;

/// The HF name prefix (SPEC §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfPrefix {
    /// `backbone.`, as the released checkpoints use.
    Backbone,
    /// `model.`, as newer transformers naming uses.
    Model,
}

impl HfPrefix {
    /// The prefix text, dot included.
    pub fn text(self) -> &'static str {
        match self {
            HfPrefix::Backbone => "backbone.",
            HfPrefix::Model => "model.",
        }
    }

    /// The word recorded in shard metadata and given to `--hf-prefix`.
    pub fn word(self) -> &'static str {
        match self {
            HfPrefix::Backbone => "backbone",
            HfPrefix::Model => "model",
        }
    }

    /// Parses the word form.
    pub fn from_word(word: &str) -> Option<HfPrefix> {
        match word {
            "backbone" => Some(HfPrefix::Backbone),
            "model" => Some(HfPrefix::Model),
            _ => None,
        }
    }

    /// The prefix a name starts with, if any (`mtp.` names have none).
    pub fn of(name: &str) -> Option<HfPrefix> {
        [HfPrefix::Backbone, HfPrefix::Model]
            .into_iter()
            .find(|p| name.starts_with(p.text()))
    }
}

/// Prefix of multi-token-prediction layers, which keep their names (SPEC §3.4).
pub const MTP_PREFIX: &str = "mtp.";
const INTERNAL_PREFIX: &str = "model.";
const FP32_PARAMS: [&str; 3] = ["A_log", "D", "dt_bias"];

/// SPEC §3.2: the internal name of an HF tensor (experts are handled apart).
pub fn to_internal(name: &str, prefix: HfPrefix) -> String {
    let renamed = match name.strip_prefix(prefix.text()) {
        Some("norm_f.weight") => "model.norm.weight".to_string(),
        Some("embedding.weight" | "embeddings.weight") => "model.embed_tokens.weight".to_string(),
        Some(rest) => format!("{INTERNAL_PREFIX}{rest}"),
        None => name.to_string(),
    };
    match fp32_param(&renamed) {
        Some((head, param)) => format!("{head}.mixer._fp32_params.{param}"),
        None => renamed,
    }
}

/// SPEC §4.2: the HF name of an internal (non-expert) tensor.
pub fn to_hf(name: &str, prefix: HfPrefix) -> String {
    let name = name.replace(".mixer._fp32_params.", ".mixer.");
    let Some(rest) = name.strip_prefix(INTERNAL_PREFIX) else {
        return name;
    };
    match rest {
        "norm.weight" => format!("{}norm_f.weight", prefix.text()),
        "embed_tokens.weight" => format!("{}embeddings.weight", prefix.text()),
        _ => format!("{}{rest}", prefix.text()),
    }
}

/// For a name ending in exactly `.mixer.A_log`, `.mixer.D` or `.mixer.dt_bias`: the part
/// before `.mixer.` and the parameter. These are stored as F32 (SPEC §3.2, §4.3).
pub fn fp32_param(name: &str) -> Option<(&str, &str)> {
    let (head, param) = name.rsplit_once(".mixer.")?;
    FP32_PARAMS.contains(&param).then_some((head, param))
}

/// The two expert projections of a relu2 MoE layer, plus the `gate_proj` such layers lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proj {
    /// `up_proj` `[I, H]`, merged into `gate_and_up_projs` `[E, H, I]`.
    Up,
    /// `down_proj` `[H, I]`, merged into `down_projs` `[E, I, H]`.
    Down,
    /// `gate_proj`: not part of relu2 experts.
    Gate,
}

impl Proj {
    fn parse(text: &str) -> Option<Proj> {
        match text {
            "up_proj" => Some(Proj::Up),
            "down_proj" => Some(Proj::Down),
            "gate_proj" => Some(Proj::Gate),
            _ => None,
        }
    }

    /// The per-expert HF name part.
    pub fn hf_word(self) -> &'static str {
        match self {
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
            Proj::Gate => "gate_proj",
        }
    }

    /// The merged internal name part.
    pub fn merged_word(self) -> &'static str {
        match self {
            Proj::Up | Proj::Gate => "gate_and_up_projs",
            Proj::Down => "down_projs",
        }
    }
}

/// A per-expert tensor: `<scope>layers.L.mixer.experts.e.<proj>.<param>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertName<'a> {
    /// What precedes `layers.` (`model.`, `mtp.` or nothing).
    pub scope: &'a str,
    /// Layer index.
    pub layer: u64,
    /// Expert id.
    pub id: u64,
    /// Which projection.
    pub proj: Proj,
    /// `weight`, `bias`, or anything else after the projection.
    pub param: &'a str,
}

impl ExpertName<'_> {
    /// Parses an (internal-prefixed) per-expert name; None for anything else.
    pub fn parse(name: &str) -> Option<ExpertName<'_>> {
        let (scope, rest) = split_scope(name)?;
        let rest = rest.strip_prefix("layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let rest = rest.strip_prefix("mixer.experts.")?;
        let (id, rest) = rest.split_once('.')?;
        let (proj, param) = rest.split_once('.')?;
        Some(ExpertName {
            scope,
            layer: parse_index(layer)?,
            id: parse_index(id)?,
            proj: Proj::parse(proj)?,
            param,
        })
    }
}

/// A merged internal expert tensor: `...mixer.experts.gate_and_up_projs|down_projs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedName {
    /// Whether it belongs to an MTP layer.
    pub is_mtp: bool,
    /// The first `layers.(\d+)` in the name (SPEC §4.1).
    pub layer: u64,
    /// Up or down.
    pub proj: Proj,
}

impl MergedName {
    /// Parses a merged name; None for anything else.
    pub fn parse(name: &str) -> Option<MergedName> {
        let proj = if name.ends_with(".mixer.experts.gate_and_up_projs") {
            Proj::Up
        } else if name.ends_with(".mixer.experts.down_projs") {
            Proj::Down
        } else {
            return None;
        };
        let layer = name
            .split("layers.")
            .skip(1)
            .find_map(|s| parse_index(s.split('.').next()?))?;
        Some(MergedName {
            is_mtp: name.starts_with(MTP_PREFIX),
            layer,
            proj,
        })
    }

    /// The HF name of expert `id` of this group (SPEC §4.1).
    pub fn expert_hf_name(&self, prefix: HfPrefix, id: u64) -> String {
        let scope = if self.is_mtp {
            MTP_PREFIX
        } else {
            prefix.text()
        };
        format!(
            "{scope}layers.{}.mixer.experts.{id}.{}.weight",
            self.layer,
            self.proj.hf_word()
        )
    }
}

/// The scope before `layers.`: `model.`, `mtp.` or nothing.
fn split_scope(name: &str) -> Option<(&str, &str)> {
    [INTERNAL_PREFIX, MTP_PREFIX, ""]
        .into_iter()
        .find_map(|scope| {
            name.strip_prefix(scope)
                .filter(|r| r.starts_with("layers."))
                .map(|r| (scope, r))
        })
}

/// For an internal main-stack name `model.layers.N....`: N and the rest after `N.`.
pub fn main_layer(name: &str) -> Option<(u64, &str)> {
    let rest = name
        .strip_prefix(INTERNAL_PREFIX)?
        .strip_prefix("layers.")?;
    let (index, rest) = rest.split_once('.')?;
    Some((parse_index(index)?, rest))
}

/// The layer kind a `mixer.<param>...` tensor implies, if the parameter is specific to one kind.
pub fn implied_kind(rest_after_layer: &str) -> Option<LayerKind> {
    let param = rest_after_layer.strip_prefix("mixer.")?.split('.').next()?;
    match param {
        "A_log" | "D" | "dt_bias" | "_fp32_params" | "conv1d" | "in_proj" | "out_proj" => {
            Some(LayerKind::Mamba)
        }
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => Some(LayerKind::Attention),
        "experts" | "gate" | "shared_experts" => Some(LayerKind::Moe),
        "up_proj" | "down_proj" => Some(LayerKind::Mlp),
        _ => None,
    }
}

/// A decimal index without sign or leading `+`, as Python's `int()` of a regex `\d+` gives.
fn parse_index(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("model.", 12, 7, Proj::Down, "weight")
        );
        let m = ExpertName::parse("mtp.layers.0.mixer.experts.3.up_proj.weight").unwrap();
        assert_eq!((m.scope, m.layer, m.id, m.proj), ("mtp.", 0, 3, Proj::Up));
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

    #[test]
    fn mixer_parameters_imply_their_layer_kind() {
        assert_eq!(implied_kind("mixer.in_proj.weight"), Some(LayerKind::Mamba));
        assert_eq!(
            implied_kind("mixer.experts.0.up_proj.weight"),
            Some(LayerKind::Moe)
        );
        assert_eq!(implied_kind("mixer.up_proj.weight"), Some(LayerKind::Mlp));
        assert_eq!(implied_kind("norm.weight"), None);
    }
}
