//! NemotronV3 tensor names: prefixes, scopes, the renames of SPEC §3.2 and §4.2, expert names
//! and the names nemoconv builds. [`super::key`] parses a whole catalog name with these parts.

/// The HF name prefix (SPEC §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// Which stack a `layers.N` name belongs to. The order is that of the internal scope texts
/// (``, `model.`, `mtp.`), so groups keyed by it keep the order they had as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `layers.N` with no prefix.
    Bare,
    /// The main stack: `backbone.` or `model.` in HF names, `model.` in internal ones.
    Main,
    /// The multi-token-prediction layers, `mtp.`, which keep their names (SPEC §3.4).
    Mtp,
}

impl Scope {
    /// The scope text of an internal name.
    pub fn internal_text(self) -> &'static str {
        match self {
            Scope::Bare => "",
            Scope::Main => INTERNAL_PREFIX,
            Scope::Mtp => MTP_PREFIX,
        }
    }

    /// The scope text of an HF name with this prefix.
    pub fn hf_text(self, prefix: HfPrefix) -> &'static str {
        match self {
            Scope::Main => prefix.text(),
            other => other.internal_text(),
        }
    }
}

/// Prefix of multi-token-prediction layers, which keep their names (SPEC §3.4).
const MTP_PREFIX: &str = "mtp.";
const INTERNAL_PREFIX: &str = "model.";
const FP32_PARAMS: [&str; 3] = ["A_log", "D", "dt_bias"];
/// Where SPEC §3.2 moves the parameters of [`FP32_PARAMS`] in internal names.
const FP32_MIXER: &str = ".mixer._fp32_params.";
const MIXER: &str = ".mixer.";

/// SPEC §3.2: the internal name of an HF tensor (experts are handled apart).
pub fn to_internal(name: &str, prefix: HfPrefix) -> String {
    let renamed = match name.strip_prefix(prefix.text()) {
        Some("norm_f.weight") => "model.norm.weight".to_string(),
        Some("embedding.weight" | "embeddings.weight") => "model.embed_tokens.weight".to_string(),
        Some(rest) => format!("{INTERNAL_PREFIX}{rest}"),
        None => name.to_string(),
    };
    match fp32_param(&renamed) {
        Some((head, param)) => format!("{head}{FP32_MIXER}{param}"),
        None => renamed,
    }
}

/// SPEC §4.2: the HF name of an internal (non-expert) tensor.
pub fn to_hf(name: &str, prefix: HfPrefix) -> String {
    let name = name.replace(FP32_MIXER, MIXER);
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
    let (head, param) = name.rsplit_once(MIXER)?;
    FP32_PARAMS.contains(&param).then_some((head, param))
}

/// The same for the internal spelling `...mixer._fp32_params.A_log|D|dt_bias`.
pub fn internal_fp32_param(name: &str) -> Option<(&str, &str)> {
    let (head, param) = name.rsplit_once(FP32_MIXER)?;
    FP32_PARAMS.contains(&param).then_some((head, param))
}

/// `P embedding.weight` ↔ `P embeddings.weight`, for either HF prefix: the other spelling of
/// the embedding, which `verify --allow embedding-name` pairs.
pub fn embedding_alias(name: &str) -> Option<String> {
    [HfPrefix::Backbone, HfPrefix::Model]
        .into_iter()
        .find_map(|p| match name.strip_prefix(p.text())? {
            "embedding.weight" => Some(format!("{}embeddings.weight", p.text())),
            "embeddings.weight" => Some(format!("{}embedding.weight", p.text())),
            _ => None,
        })
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

    /// Whether relu2 experts have this projection (`up_proj`, `down_proj`).
    pub fn is_relu2(self) -> bool {
        matches!(self, Proj::Up | Proj::Down)
    }
}

/// A per-expert tensor: `<scope>layers.L.mixer.experts.e.<proj>.<param>`, HF or internal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertName<'a> {
    /// The stack the layer belongs to.
    pub scope: Scope,
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
    /// Parses a per-expert name (any prefix); None for anything else.
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

    /// Whether this is the weight of an `up_proj` or `down_proj` expert: what merges.
    pub fn is_relu2_weight(&self) -> bool {
        self.param == "weight" && self.proj.is_relu2()
    }
}

/// A merged internal expert tensor: `...mixer.experts.gate_and_up_projs|down_projs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedName {
    /// [`Scope::Mtp`] for an MTP layer, else [`Scope::Main`].
    pub scope: Scope,
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
        let scope = match name.starts_with(MTP_PREFIX) {
            true => Scope::Mtp,
            false => Scope::Main,
        };
        Some(MergedName { scope, layer, proj })
    }

    /// The HF name of expert `id` of this group (SPEC §4.1).
    pub fn expert_hf_name(&self, prefix: HfPrefix, id: u64) -> String {
        hf_expert_name(prefix, self.scope, self.layer, id, self.proj)
    }
}

/// SPEC §3.3, §4.1: the HF name of one expert's weight.
pub fn hf_expert_name(prefix: HfPrefix, scope: Scope, layer: u64, id: u64, proj: Proj) -> String {
    format!(
        "{}layers.{layer}.mixer.experts.{id}.{}.weight",
        scope.hf_text(prefix),
        proj.hf_word()
    )
}

/// SPEC §3.3: the internal name of a layer's merged experts of one projection.
pub fn merged_name(scope: Scope, layer: u64, proj: Proj) -> String {
    format!(
        "{}layers.{layer}.mixer.experts.{}",
        scope.internal_text(),
        proj.merged_word()
    )
}

/// The scope before `layers.`: an HF prefix or `model.`, `mtp.`, or nothing.
fn split_scope(name: &str) -> Option<(Scope, &str)> {
    let scoped = match HfPrefix::of(name) {
        Some(p) => (Scope::Main, &name[p.text().len()..]),
        None => match name.strip_prefix(MTP_PREFIX) {
            Some(rest) => (Scope::Mtp, rest),
            None => (Scope::Bare, name),
        },
    };
    scoped.1.starts_with("layers.").then_some(scoped)
}

/// For a main-stack name `P layers.N....` (P an HF prefix or `model.`): N and the rest after
/// `N.`.
pub fn main_layer(name: &str) -> Option<(u64, &str)> {
    let prefix = HfPrefix::of(name)?;
    let rest = name[prefix.text().len()..].strip_prefix("layers.")?;
    let (index, rest) = rest.split_once('.')?;
    Some((parse_index(index)?, rest))
}

/// A decimal index without sign or leading `+`, as Python's `int()` of a regex `\d+` gives.
fn parse_index(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}
