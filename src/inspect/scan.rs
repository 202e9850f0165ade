//! Builds an [`InspectReport`] from a catalog and config: one pass over the tensor names, then
//! the layout decision and the problem checks. Matches on the typed NemotronV3 keys of
//! `family/`; knows no name text itself.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    EpInfo, ExpertForm, ExpertLayer, InspectReport, LayerCounts, LayoutKind, LayoutSource, Problem,
    SCHEMA_VERSION, ShardSummary,
};
use crate::catalog::Catalog;
use crate::config::{LayerKind, ModelConfig};
use crate::family::nemotron_v3::key::{Role, TensorKey};
use crate::family::nemotron_v3::names::{HfPrefix, Proj, Scope};
use crate::family::{Layout, meta, quant};

/// The experts of one layer: per-expert ids by projection, merged first dims by projection.
#[derive(Default)]
struct LayerExperts {
    ids: BTreeMap<Proj, BTreeSet<u64>>,
    merged: BTreeMap<Proj, (u64, String)>,
}

/// What one pass over the names collects.
#[derive(Default)]
struct Scan {
    experts: BTreeMap<(bool, u64), LayerExperts>,
    main_layers: BTreeMap<u64, (usize, String)>,
    /// Per layer, the first tensor implying each layer kind (keyed by pattern letter).
    implied: BTreeMap<u64, BTreeMap<char, (LayerKind, String)>>,
    prefixes: BTreeMap<HfPrefix, String>,
    any_per_expert: bool,
    any_internal: bool,
}

fn scan(catalog: &Catalog) -> Scan {
    let mut s = Scan::default();
    for t in &catalog.tensors {
        let key = TensorKey::parse(&t.name);
        if let Some(p) = key.prefix {
            s.prefixes.entry(p).or_insert_with(|| t.name.clone());
        }
        if let Some(layer) = key.main_layer {
            let entry = s
                .main_layers
                .entry(layer.index)
                .or_insert((0, t.name.clone()));
            entry.0 += 1;
            if let Some(kind) = layer.implies {
                let kinds = s.implied.entry(layer.index).or_default();
                kinds
                    .entry(kind.letter())
                    .or_insert_with(|| (kind, t.name.clone()));
            }
        }
        match key.role {
            Role::RoutedExpert(e) if e.is_relu2_weight() => {
                s.any_per_expert = true;
                let layer = s
                    .experts
                    .entry((e.scope == Scope::Mtp, e.layer))
                    .or_default();
                layer.ids.entry(e.proj).or_default().insert(e.id);
            }
            Role::MergedExperts(m) => {
                s.any_internal = true;
                let first = t.shape.first().copied().unwrap_or(0);
                let layer = s
                    .experts
                    .entry((m.scope == Scope::Mtp, m.layer))
                    .or_default();
                layer.merged.insert(m.proj, (first, t.name.clone()));
            }
            Role::Fp32Param { internal: true } => s.any_internal = true,
            _ => {}
        }
    }
    s
}

/// Describes a checkpoint; `config` is its config.json, if there is one.
pub(super) fn describe(catalog: &Catalog, config: Option<&ModelConfig>) -> InspectReport {
    let s = scan(catalog);
    let typed = config;
    let n_experts = typed.and_then(|c| c.n_routed_experts);
    let pattern = typed.map_or(&[][..], |c| &c.pattern[..]);
    let (layout, layout_source, ep) = layout(catalog, &s, n_experts);
    let mut problems = Vec::new();
    if config.is_none() {
        problems.push(Problem::NoConfig);
    }
    let hf_prefix = catalog
        .metadata()
        .get(meta::HF_PREFIX)
        .cloned()
        .or_else(|| {
            let first = s.prefixes.keys().next()?;
            (layout == LayoutKind::Hf).then(|| first.word().to_string())
        });
    if let (Some(b), Some(m)) = (
        s.prefixes.get(&HfPrefix::Backbone),
        s.prefixes.get(&HfPrefix::Model),
    ) && layout == LayoutKind::Hf
    {
        problems.push(Problem::MixedPrefix {
            backbone: b.clone(),
            model: m.clone(),
        });
    }
    let expected_merged = ep.as_ref().map(|e| e.n_local_experts).or(n_experts);
    let experts = expert_problems(&s, n_experts, expected_merged, &mut problems);
    layer_problems(&s, pattern, &mut problems);
    let mut counts = LayerCounts::default();
    for kind in pattern {
        *match kind {
            LayerKind::Mamba => &mut counts.mamba,
            LayerKind::Attention => &mut counts.attention,
            LayerKind::Mlp => &mut counts.mlp,
            LayerKind::Moe => &mut counts.moe,
        } += 1;
    }
    let mut dtypes = BTreeMap::new();
    for t in &catalog.tensors {
        *dtypes.entry(t.dtype.to_string()).or_insert(0) += 1;
    }
    let quantization_evidence = quant::evidence(catalog, config);
    InspectReport {
        schema: SCHEMA_VERSION,
        dir: catalog.dir.display().to_string(),
        layout,
        layout_source,
        hf_prefix,
        ep,
        quantized: !quantization_evidence.is_empty(),
        quantization_evidence,
        model_type: typed.and_then(|c| c.model_type.clone()),
        pattern: (!pattern.is_empty()).then(|| pattern.iter().map(|&k| k.letter()).collect()),
        n_layers: pattern.len() as u64,
        layer_counts: counts,
        n_routed_experts: n_experts,
        moe_intermediate_size: typed.and_then(|c| c.moe_intermediate_size),
        hidden_size: config.and_then(|c| c.json.get("hidden_size")?.as_u64()),
        experts,
        n_tensors: catalog.tensors.len(),
        payload_bytes: catalog.payload_bytes(),
        dtypes,
        shards: shards(catalog),
        problems,
        sharded: None,
    }
}

/// The layout: recorded in shard metadata, else guessed from names; a slice's range.
fn layout(
    catalog: &Catalog,
    s: &Scan,
    n_experts: Option<u64>,
) -> (LayoutKind, LayoutSource, Option<EpInfo>) {
    let metadata = catalog.metadata();
    if let Some(recorded) = meta::recorded_layout(metadata) {
        let get = |key| metadata.get(key).and_then(|v| v.parse::<u64>().ok());
        let ep = meta::recorded_ep(metadata).map(|slice| {
            let (start, end) = (get(meta::EXPERT_START), get(meta::EXPERT_END));
            EpInfo {
                n_routed_experts: get(meta::N_EXPERTS),
                ep_size: Some(slice.size()),
                ep_rank: Some(slice.rank()),
                expert_start: start,
                expert_end: end,
                n_local_experts: end.zip(start).map_or(0, |(e, s)| e.saturating_sub(s)),
            }
        });
        let kind = match (recorded, &ep) {
            (Layout::Hf, _) => LayoutKind::Hf,
            (Layout::Internal, None) => LayoutKind::Internal,
            (Layout::Internal, Some(_)) => LayoutKind::InternalEpSlice,
        };
        return (kind, LayoutSource::Metadata, ep);
    }
    let kind = if s.any_per_expert {
        LayoutKind::Hf
    } else if s.any_internal {
        LayoutKind::Internal
    } else if s.prefixes.contains_key(&HfPrefix::Backbone) {
        LayoutKind::Hf
    } else {
        LayoutKind::Unknown
    };
    // Merged tensors that all hold the same number n < E of experts look like a slice.
    let firsts: BTreeSet<u64> = s
        .experts
        .values()
        .flat_map(|l| l.merged.values().map(|m| m.0))
        .collect();
    match (kind, firsts.iter().next(), n_experts) {
        (LayoutKind::Internal, Some(&n), Some(e)) if firsts.len() == 1 && n < e => {
            let ep = EpInfo {
                n_routed_experts: Some(e),
                ep_size: None,
                ep_rank: None,
                expert_start: None,
                expert_end: None,
                n_local_experts: n,
            };
            (LayoutKind::InternalEpSlice, LayoutSource::Names, Some(ep))
        }
        _ => (kind, LayoutSource::Names, None),
    }
}

/// The expert entries, and the missing, out-of-range and mis-counted experts.
fn expert_problems(
    s: &Scan,
    n_experts: Option<u64>,
    expected_merged: Option<u64>,
    problems: &mut Vec<Problem>,
) -> Vec<ExpertLayer> {
    let mut out = Vec::new();
    for (&(mtp, layer), l) in &s.experts {
        if !l.ids.is_empty() {
            let all: BTreeSet<u64> = l.ids.values().flatten().copied().collect();
            out.push(ExpertLayer {
                mtp,
                layer,
                form: ExpertForm::PerExpert,
                n_experts: all.len() as u64,
            });
            if let Some(e) = n_experts {
                for proj in [Proj::Up, Proj::Down] {
                    let have = l.ids.get(&proj);
                    let ids: Vec<u64> = (0..e)
                        .filter(|id| !have.is_some_and(|h| h.contains(id)))
                        .collect();
                    if !ids.is_empty() {
                        problems.push(Problem::MissingExperts {
                            mtp,
                            layer,
                            proj: proj.hf_word().to_string(),
                            ids,
                        });
                    }
                }
                let ids: Vec<u64> = all.range(e..).copied().collect();
                if !ids.is_empty() {
                    problems.push(Problem::ExpertIdOutOfRange {
                        mtp,
                        layer,
                        ids,
                        n_routed_experts: e,
                    });
                }
            }
        }
        if let Some((first, _)) = l.merged.values().next() {
            out.push(ExpertLayer {
                mtp,
                layer,
                form: ExpertForm::Merged,
                n_experts: *first,
            });
            for (found, tensor) in l.merged.values() {
                if let Some(expected) = expected_merged.filter(|x| x != found) {
                    problems.push(Problem::ExpertCountMismatch {
                        tensor: tensor.clone(),
                        found: *found,
                        expected,
                    });
                }
            }
        }
    }
    out
}

/// Layers beyond the pattern, and MoE layers without experts.
fn layer_problems(s: &Scan, pattern: &[LayerKind], problems: &mut Vec<Problem>) {
    if pattern.is_empty() {
        return;
    }
    let n_layers = pattern.len() as u64;
    for (&layer, (n_tensors, example)) in s.main_layers.range(n_layers..) {
        problems.push(Problem::LayerBeyondPattern {
            layer,
            n_layers,
            n_tensors: *n_tensors,
            example: example.clone(),
        });
    }
    for (layer, &kind) in pattern.iter().enumerate() {
        let layer = layer as u64;
        if kind == LayerKind::Moe && !s.experts.contains_key(&(false, layer)) {
            problems.push(Problem::MoeLayerWithoutExperts { layer });
        }
        let implied = s.implied.get(&layer).into_iter().flat_map(|m| m.values());
        for (found, tensor) in implied.filter(|(found, _)| *found != kind) {
            problems.push(Problem::PatternMismatch {
                layer,
                expected: kind.word().to_string(),
                found: found.word().to_string(),
                tensor: tensor.clone(),
            });
        }
    }
}

fn shards(catalog: &Catalog) -> Vec<ShardSummary> {
    let mut out: Vec<ShardSummary> = catalog
        .shards
        .iter()
        .map(|shard| ShardSummary {
            file: shard
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            n_tensors: 0,
            payload_bytes: 0,
            file_bytes: shard.len_bytes,
        })
        .collect();
    // A rank file of a training checkpoint counts its pieces.
    for p in catalog.tensors.iter().flat_map(|t| &t.pieces) {
        let s = &mut out[p.shard.0 as usize];
        s.n_tensors += 1;
        s.payload_bytes += p.bytes.end - p.bytes.start;
    }
    out
}
