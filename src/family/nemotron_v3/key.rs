//! A NemotronV3 catalog name parsed once into a typed [`TensorKey`], in either layout: what
//! the tensor is, which layer it belongs to and whether it is a quantization scale. Planning,
//! layout detection, `inspect` and `verify` match on this type instead of on name text.

use super::names::{self, ExpertName, HfPrefix, MergedName};
use crate::catalog::Catalog;
use crate::config::LayerKind;
use crate::family::quant::ScaleKind;

/// What a tensor is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role<'a> {
    /// One routed expert's tensor, `...layers.L.mixer.experts.e.<proj>.<param>`.
    RoutedExpert(ExpertName<'a>),
    /// A layer's merged experts, `...layers.L.mixer.experts.gate_and_up_projs|down_projs`.
    MergedExperts(MergedName),
    /// `...mixer.A_log|D|dt_bias`, which the contract stores as F32 (SPEC §3.2, §4.3).
    Fp32Param {
        /// Spelled `...mixer._fp32_params.<param>`, as in the internal layout.
        internal: bool,
    },
    /// Anything else: renamed by prefix (SPEC §3.2, §4.2) or kept.
    Other,
}

/// The main-stack layer a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MainLayer {
    /// Layer index N of `P layers.N.`.
    pub index: u64,
    /// The layer kind its mixer parameter implies, when only one kind has it.
    pub implies: Option<LayerKind>,
}

/// A catalog name, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorKey<'a> {
    /// The HF prefix the name starts with (`model.` also starts internal names).
    pub prefix: Option<HfPrefix>,
    /// The main-stack layer, for `P layers.N....` names.
    pub main_layer: Option<MainLayer>,
    /// What the tensor is.
    pub role: Role<'a>,
    /// The quantization scale kind its name ends in, if any.
    pub scale: Option<ScaleKind>,
}

impl TensorKey<'_> {
    /// Parses any name; a name nemoconv has no rule for is [`Role::Other`].
    pub fn parse(name: &str) -> TensorKey<'_> {
        let role = if let Some(e) = ExpertName::parse(name) {
            Role::RoutedExpert(e)
        } else if let Some(m) = MergedName::parse(name) {
            Role::MergedExperts(m)
        } else if names::fp32_param(name).is_some() {
            Role::Fp32Param { internal: false }
        } else if names::internal_fp32_param(name).is_some() {
            Role::Fp32Param { internal: true }
        } else {
            Role::Other
        };
        TensorKey {
            prefix: HfPrefix::of(name),
            main_layer: names::main_layer(name).map(|(index, rest)| MainLayer {
                index,
                implies: implied_kind(rest),
            }),
            role,
            scale: ScaleKind::of(name),
        }
    }

    /// A routed expert's `up_proj` or `down_proj` weight, or merged experts: the tensors
    /// whose dtype `--dtype` sets.
    pub fn is_expert_matrix(&self) -> bool {
        match &self.role {
            Role::RoutedExpert(e) => e.is_relu2_weight(),
            Role::MergedExperts(_) => true,
            _ => false,
        }
    }
}

/// The key of every tensor of a catalog, in tensor order: each name is parsed once per plan.
pub fn parse_all(catalog: &Catalog) -> Vec<TensorKey<'_>> {
    catalog
        .tensors
        .iter()
        .map(|t| TensorKey::parse(&t.name))
        .collect()
}

/// The layer kind a `mixer.<param>...` tensor implies, if the parameter is specific to one kind.
fn implied_kind(rest_after_layer: &str) -> Option<LayerKind> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::nemotron_v3::names::{Proj, Scope};

    #[test]
    fn hf_and_internal_spellings_give_the_same_roles() {
        let hf = TensorKey::parse("backbone.layers.3.mixer.experts.7.down_proj.weight");
        let internal = TensorKey::parse("model.layers.3.mixer.experts.7.down_proj.weight");
        for key in [&hf, &internal] {
            assert!(
                matches!(&key.role, Role::RoutedExpert(e)
                    if (e.scope, e.layer, e.id, e.proj) == (Scope::Main, 3, 7, Proj::Down)),
                "{key:?}"
            );
            assert_eq!(
                key.main_layer,
                Some(MainLayer {
                    index: 3,
                    implies: Some(LayerKind::Moe)
                })
            );
        }
        assert_eq!(hf.prefix, Some(HfPrefix::Backbone));
        assert_eq!(
            TensorKey::parse("backbone.layers.0.mixer.A_log").role,
            Role::Fp32Param { internal: false }
        );
        assert_eq!(
            TensorKey::parse("mtp.layers.0.mixer._fp32_params.dt_bias").role,
            Role::Fp32Param { internal: true }
        );
        assert_eq!(
            TensorKey::parse("model.layers.0.mixer._fp32_params.x").role,
            Role::Other
        );
    }

    #[test]
    fn merged_experts_scales_and_mtp_layers_are_told_apart() {
        let m = TensorKey::parse("mtp.layers.0.mixer.experts.gate_and_up_projs");
        assert!(
            matches!(&m.role, Role::MergedExperts(n) if n.scope == Scope::Mtp && n.proj == Proj::Up)
        );
        assert_eq!((m.prefix, m.main_layer), (None, None));
        let s = TensorKey::parse("backbone.layers.1.mixer.experts.0.up_proj.weight_scale_inv");
        assert_eq!(s.scale, Some(ScaleKind::BlockInv));
        assert!(!s.is_expert_matrix());
        assert_eq!(TensorKey::parse("lm_head.weight").role, Role::Other);
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
