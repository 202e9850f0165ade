//! NemotronV3 (`model_type: nemotron_h`): every naming rule of SPEC §3-§5, turned into plans.
//! This is the only module that knows these names.

mod experts;
pub mod key;
mod layout;
pub mod names;
mod slices;

use key::{Role, TensorKey};
pub use names::HfPrefix;
use names::{ExpertName, Proj, Scope};

use self::experts::{ExpertShape, Groups};
use super::{Conversion, Family, Layout, meta};
use crate::catalog::{Catalog, TensorId};
use crate::config::{LayerKind, ModelConfig};
use crate::dtype::{self, Dtype};
use crate::error::{CheckpointError, Error, Result};
use crate::family::quant::{self, ScaleKind};
use crate::options::{EpSlice, FromHfOptions, ToHfOptions};
use crate::plan::{OutputTensor, Recipe};

/// The NemotronV3 family.
#[derive(Debug)]
pub struct NemotronV3;

/// The `model_type` this family converts.
pub const MODEL_TYPE: &str = "nemotron_h";

impl Family for NemotronV3 {
    fn plan_from_hf(
        &self,
        catalog: &Catalog,
        config: &ModelConfig,
        options: &FromHfOptions,
        slice: Option<EpSlice>,
    ) -> Result<Conversion> {
        let keys = key::parse_all(catalog);
        layout::check_layout(catalog, &keys, Layout::Hf)?;
        let prefix = layout::detect_prefix(catalog)?;
        let dequant = quant::plan_for(catalog, config, options)?;
        let mut conv = Conversion::default();
        let mut groups = Groups::new();
        for ((id, t), key) in catalog.iter().zip(&keys) {
            if dequant.consumed.contains(&id) {
                continue;
            }
            // SPEC §3 table, row 4: block-FP8 scales.
            if key.scale == Some(ScaleKind::BlockInv) {
                drop_or_refuse(
                    catalog,
                    id,
                    "a block-FP8 scale, without which the reference casts FP8 experts",
                    options,
                    &mut conv,
                )?;
                continue;
            }
            let name = names::to_internal(&t.name, prefix);
            if let Some(layer) = key.main_layer
                && !check_layer(catalog, config, id, layer, options, &mut conv)?
            {
                continue;
            }
            match &key.role {
                Role::RoutedExpert(e) => classify_expert(
                    catalog,
                    config,
                    id,
                    e,
                    name,
                    options,
                    &mut conv,
                    &mut groups,
                )?,
                _ => conv.tensors.push(with_fp32_rule(catalog, id, key, name)),
            }
        }
        if !groups.is_empty() && config.mlp_bias {
            return Err(Error::ExpertBias {
                path: config.path.clone(),
                tensor: "mlp_bias".to_string(),
            });
        }
        check_moe_layers_have_experts(catalog, config, &groups, options)?;
        if !groups.is_empty() {
            let shape = expert_shape(config, slice, "--ep-size", "to merge experts")?;
            let out_dtype = options
                .expert_dtype
                .or(config.torch_dtype)
                .unwrap_or(Dtype::BF16);
            conv.tensors
                .extend(experts::merge(catalog, &groups, &shape, out_dtype, prefix)?);
        }
        quant::attach_scales(&mut conv.tensors, &dequant);
        conv.files = dequant.files;
        conv.metadata = meta::record(Layout::Internal, prefix.word());
        if let Some(ep) = slice {
            let e = config
                .n_routed_experts
                .ok_or_else(|| config.missing("n_routed_experts", "to slice experts"))?;
            meta::record_ep(&mut conv.metadata, e, ep);
        }
        Ok(conv)
    }

    fn plan_to_hf(
        &self,
        catalog: &Catalog,
        config: &ModelConfig,
        options: &ToHfOptions,
    ) -> Result<Conversion> {
        let keys = key::parse_all(catalog);
        layout::check_layout(catalog, &keys, Layout::Internal)?;
        let recorded = catalog
            .metadata()
            .get(meta::HF_PREFIX)
            .and_then(|w| HfPrefix::from_word(w));
        let prefix = options.hf_prefix.or(recorded).unwrap_or(HfPrefix::Backbone);
        let mut conv = Conversion::default();
        let has_experts = keys
            .iter()
            .any(|k| matches!(k.role, Role::MergedExperts(_)));
        let shapes = if has_experts {
            slices::part_shapes(catalog, &keys, config)?
        } else {
            Vec::new()
        };
        slices::check_shared_identical(catalog, &keys)?;
        for ((id, t), key) in catalog.iter().zip(&keys) {
            let outputs = match &key.role {
                Role::MergedExperts(merged) => {
                    experts::split(catalog, id, merged, &shapes[t.part], prefix)?
                }
                _ if t.part == 0 => {
                    let name = names::to_hf(&t.name, prefix);
                    vec![with_fp32_rule(catalog, id, key, name)]
                }
                _ => continue,
            };
            for output in outputs {
                if !is_excluded(options, &output.name)? {
                    conv.tensors.push(output);
                }
            }
        }
        conv.metadata = meta::record(Layout::Hf, prefix.word());
        Ok(conv)
    }
}

/// SPEC §4.4: whether `--exclude-regex` removes this output name.
fn is_excluded(options: &ToHfOptions, name: &str) -> Result<bool> {
    let Some(re) = &options.exclude else {
        return Ok(false);
    };
    re.excludes(name).map_err(|source| Error::ExcludeRegex {
        pattern: re.pattern().to_string(),
        tensor: name.to_string(),
        source,
    })
}

fn drop_or_refuse(
    catalog: &Catalog,
    id: TensorId,
    what: &'static str,
    options: &FromHfOptions,
    conv: &mut Conversion,
) -> Result<()> {
    let tensor = catalog.tensor(id).name.clone();
    if options.lenient {
        conv.dropped.push(tensor);
        Ok(())
    } else {
        Err(Error::Droppable {
            path: catalog.path_of(id).to_path_buf(),
            tensor,
            what,
        })
    }
}

/// Layer range (table row 3) and pattern agreement for a main-stack tensor; false when the
/// tensor is dropped.
fn check_layer(
    catalog: &Catalog,
    config: &ModelConfig,
    id: TensorId,
    layer: key::MainLayer,
    options: &FromHfOptions,
    conv: &mut Conversion,
) -> Result<bool> {
    let t = catalog.tensor(id);
    let key::MainLayer {
        index: layer,
        implies,
    } = layer;
    let Some(kind) = config.layer_kind(layer) else {
        if config.pattern.is_empty() {
            return Err(config.missing(
                "hybrid_override_pattern",
                "to know the layers (or give layers_block_type)",
            ));
        }
        if options.lenient {
            conv.dropped.push(t.name.clone());
            return Ok(false);
        }
        return Err(Error::LayerOutOfRange {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
            layer,
            n_layers: config.n_layers(),
        });
    };
    match implies {
        Some(found) if found != kind => Err(Error::PatternMismatch {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
            layer,
            kind: kind.name(),
            found: found.name(),
        }),
        _ => Ok(true),
    }
}

/// Sorts an expert tensor into its group, or drops, refuses or passes it through (table rows
/// 2, 5, 7).
#[allow(clippy::too_many_arguments)]
fn classify_expert(
    catalog: &Catalog,
    config: &ModelConfig,
    id: TensorId,
    e: &ExpertName,
    name: String,
    options: &FromHfOptions,
    conv: &mut Conversion,
    groups: &mut Groups,
) -> Result<()> {
    let t = catalog.tensor(id);
    match (e.proj, e.param) {
        (_, "bias") => Err(Error::ExpertBias {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
        }),
        (Proj::Gate, "weight") => drop_or_refuse(
            catalog,
            id,
            "a gate_proj expert, which relu2 experts do not have",
            options,
            conv,
        ),
        (Proj::Up | Proj::Down, "weight") => {
            let n_experts = config
                .n_routed_experts
                .ok_or_else(|| config.missing("n_routed_experts", "to merge experts"))?;
            if e.id < n_experts {
                groups
                    .entry((e.scope, e.layer, e.proj))
                    .or_default()
                    .insert(e.id, id);
                Ok(())
            } else if options.lenient {
                conv.dropped.push(t.name.clone());
                Ok(())
            } else {
                Err(Error::ExpertIdOutOfRange {
                    path: catalog.path_of(id).to_path_buf(),
                    tensor: t.name.clone(),
                    id: e.id,
                    n_experts,
                })
            }
        }
        _ => {
            conv.tensors.push(copy_of(catalog, id, name));
            Ok(())
        }
    }
}

/// Table row 6: a layer the pattern calls MoE must hold experts, unless `--lenient`.
fn check_moe_layers_have_experts(
    catalog: &Catalog,
    config: &ModelConfig,
    groups: &Groups,
    options: &FromHfOptions,
) -> Result<()> {
    if options.lenient {
        return Ok(());
    }
    let with_experts = |layer: u64| {
        groups
            .keys()
            .any(|&(scope, l, _)| scope == Scope::Main && l == layer)
    };
    match config
        .pattern
        .iter()
        .enumerate()
        .find(|&(l, &k)| k == LayerKind::Moe && !with_experts(l as u64))
    {
        Some((layer, _)) => Err(Error::MoeLayerWithoutExperts {
            path: catalog.dir.clone(),
            layer: layer as u64,
        }),
        None => Ok(()),
    }
}

pub(crate) fn expert_shape(
    config: &ModelConfig,
    ep: Option<EpSlice>,
    ep_name: &'static str,
    why: &'static str,
) -> Result<ExpertShape> {
    let n_experts = config
        .n_routed_experts
        .ok_or_else(|| config.missing("n_routed_experts", why))?;
    let inter = config
        .moe_intermediate_size
        .ok_or_else(|| config.missing("moe_intermediate_size", why))?;
    if let Some(ep) = ep
        && ep.size() > n_experts
    {
        return Err(CheckpointError::MeshTooLarge {
            path: config.path.clone(),
            setting: ep_name,
            size: ep.size(),
            n_experts,
        }
        .into());
    }
    let ids = ep.map_or(0..n_experts, |ep| ep.range(n_experts));
    Ok(ExpertShape { inter, ids })
}

/// SPEC §3.2, §3.4, §3.5, §4.2, §4.3: a renamed tensor, F32 for `A_log`/`D`/`dt_bias` stored
/// as another float type, else bytes untouched.
fn with_fp32_rule(catalog: &Catalog, id: TensorId, key: &TensorKey, name: String) -> OutputTensor {
    let t = catalog.tensor(id);
    let to_f32 = matches!(key.role, Role::Fp32Param { .. })
        && dtype::is_float(t.dtype)
        && t.dtype != Dtype::F32
        && dtype::can_cast(t.dtype, Dtype::F32);
    if to_f32 {
        OutputTensor {
            name,
            dtype: Dtype::F32,
            shape: t.shape.clone(),
            recipe: Recipe::Cast(experts::source_of(catalog, id)),
        }
    } else {
        copy_of(catalog, id, name)
    }
}

/// A tensor under `name`, bytes untouched.
fn copy_of(catalog: &Catalog, id: TensorId, name: String) -> OutputTensor {
    let t = catalog.tensor(id);
    OutputTensor {
        name,
        dtype: t.dtype,
        shape: t.shape.clone(),
        recipe: Recipe::Copy(experts::source_of(catalog, id)),
    }
}

#[cfg(test)]
mod tests;
