//! `nemoconv inspect`: what a checkpoint holds (layout, layer pattern, experts, dtypes,
//! shards) and the problems a conversion would refuse. Reads headers and config only, never
//! tensor bytes, and never prints: the binary shows the [`InspectReport`] as text or JSON.

mod render;
mod scan;
mod sharded;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::{CONFIG_FILE, ModelConfig};
use crate::error::Result;

pub use sharded::{PieceInfo, ShardedInfo, ShardedTensor};

/// The version of the JSON schema of [`InspectReport`]; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything `inspect` found. `--json` prints it as one object, schema version 1:
///
/// ```text
/// schema                 1
/// dir                    the directory, as given
/// layout                 "hf" | "internal" | "internal_ep_slice" | "unknown"
/// layout_source          "metadata" (nemoconv.layout in the shards) | "names" (guessed)
/// hf_prefix              "backbone" | "model" | null
/// ep                     null, or {n_routed_experts, ep_size, ep_rank, expert_start,
///                        expert_end (each null when only guessed), n_local_experts}
/// quantized              bool
/// quantization_evidence  [string]: why `quantized` is true
/// model_type             string | null (config.json; null without one)
/// pattern                the layer pattern in letters M * - E, or null
/// n_layers               pattern length (0 without a pattern)
/// layer_counts           {mamba, attention, mlp, moe}
/// n_routed_experts       E | null;  moe_intermediate_size  I | null;  hidden_size  H | null
/// experts                [{mtp, layer, form: "per_expert" | "merged", n_experts}]
/// n_tensors, payload_bytes
/// dtypes                 {"BF16": count, ...}
/// shards                 [{file, n_tensors, payload_bytes, file_bytes}]
/// problems               [{kind, ...}]; empty when none
/// sharded                null, or for a training checkpoint {n_ranks, n_pieces,
///                        n_split_tensors, n_empty_pieces, tensors: [{name, shape,
///                        pieces: [{file, offset, shape}]}]}
/// ```
///
/// Each problem is an object whose `kind` is a [`Problem`] variant in snake case
/// (`no_config`, `mixed_prefix`, `missing_experts`, `expert_id_out_of_range`,
/// `expert_count_mismatch`, `layer_beyond_pattern`, `moe_layer_without_experts`,
/// `pattern_mismatch`, and for training checkpoints `piece_gap`, `piece_overlap`,
/// `not_in_mapping`, `mapped_but_absent`, `no_hf_metadata`) with that
/// variant's fields. New fields and kinds may be added within schema 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The checkpoint directory.
    pub dir: String,
    /// Which naming scheme the tensors use.
    pub layout: LayoutKind,
    /// Where [`InspectReport::layout`] comes from.
    pub layout_source: LayoutSource,
    /// The HF prefix word: recorded in the shards, or that of the names of an HF checkpoint.
    pub hf_prefix: Option<String>,
    /// The expert-parallel slice, when the layout is [`LayoutKind::InternalEpSlice`].
    pub ep: Option<EpInfo>,
    /// Whether anything says the weights are quantized.
    pub quantized: bool,
    /// What says so: config keys, files, dtypes or scale tensors.
    pub quantization_evidence: Vec<String>,
    /// `model_type` from config.json.
    pub model_type: Option<String>,
    /// The layer pattern in `hybrid_override_pattern` letters.
    pub pattern: Option<String>,
    /// The number of layers (the pattern's length).
    pub n_layers: u64,
    /// Layers of each kind in the pattern.
    pub layer_counts: LayerCounts,
    /// E.
    pub n_routed_experts: Option<u64>,
    /// I.
    pub moe_intermediate_size: Option<u64>,
    /// H.
    pub hidden_size: Option<u64>,
    /// The experts found, one entry per layer and form.
    pub experts: Vec<ExpertLayer>,
    /// Number of tensors.
    pub n_tensors: usize,
    /// Sum of all tensor bytes.
    pub payload_bytes: u64,
    /// Tensor count by dtype name.
    pub dtypes: BTreeMap<String, usize>,
    /// The shard files, in file-name order.
    pub shards: Vec<ShardSummary>,
    /// What a conversion would refuse or the checkpoint lacks.
    pub problems: Vec<Problem>,
    /// Ranks and pieces of a training checkpoint; None for other checkpoints.
    pub sharded: Option<ShardedInfo>,
}

/// The naming scheme of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    /// HuggingFace names, one tensor per expert.
    Hf,
    /// NeMo Automodel internal names, experts merged.
    Internal,
    /// Internal layout holding one expert-parallel rank's experts.
    InternalEpSlice,
    /// Neither: no expert, `_fp32_params` or `backbone.` name to tell.
    Unknown,
}

/// Where the layout was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutSource {
    /// The `nemoconv.layout` key nemoconv writes into shard metadata.
    Metadata,
    /// Guessed from tensor names and shapes.
    Names,
}

/// An expert-parallel slice: recorded by nemoconv, or guessed from merged shapes (then only
/// `n_local_experts` is known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpInfo {
    /// E of the whole model.
    pub n_routed_experts: Option<u64>,
    /// Mesh size.
    pub ep_size: Option<u64>,
    /// This slice's rank.
    pub ep_rank: Option<u64>,
    /// First expert id held.
    pub expert_start: Option<u64>,
    /// One past the last expert id held.
    pub expert_end: Option<u64>,
    /// Experts held per merged tensor.
    pub n_local_experts: u64,
}

/// Layers of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LayerCounts {
    /// `M`.
    pub mamba: u64,
    /// `*`.
    pub attention: u64,
    /// `-`.
    pub mlp: u64,
    /// `E`.
    pub moe: u64,
}

/// How a layer stores its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertForm {
    /// `experts.N.up_proj.weight` / `down_proj.weight` tensors.
    PerExpert,
    /// `experts.gate_and_up_projs` / `down_projs`.
    Merged,
}

/// The experts found in one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpertLayer {
    /// Whether the layer is an MTP layer (`mtp.layers.N`).
    pub mtp: bool,
    /// Layer index.
    pub layer: u64,
    /// Per-expert or merged.
    pub form: ExpertForm,
    /// Distinct expert ids (per-expert) or the merged tensors' first dimension.
    pub n_experts: u64,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardSummary {
    /// File name in the checkpoint directory.
    pub file: String,
    /// Tensors it holds.
    pub n_tensors: usize,
    /// Sum of its tensor bytes.
    pub payload_bytes: u64,
    /// Its size on disk, header included.
    pub file_bytes: u64,
}

/// A problem found; `kind` in JSON is the variant name in snake case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// There is no config.json, so pattern, E and I are unknown.
    NoConfig,
    /// Both `backbone.` and `model.` prefixed names (SPEC §3.1).
    MixedPrefix {
        /// A `backbone.` name.
        backbone: String,
        /// A `model.` name.
        model: String,
    },
    /// Per-expert ids below E that one projection of a layer lacks.
    MissingExperts {
        /// MTP layer.
        mtp: bool,
        /// Layer index.
        layer: u64,
        /// `up_proj` or `down_proj`.
        proj: String,
        /// The missing ids.
        ids: Vec<u64>,
    },
    /// Per-expert ids not below E.
    ExpertIdOutOfRange {
        /// MTP layer.
        mtp: bool,
        /// Layer index.
        layer: u64,
        /// The ids >= E.
        ids: Vec<u64>,
        /// E.
        n_routed_experts: u64,
    },
    /// A merged tensor whose first dimension is not E (or the slice's expert count).
    ExpertCountMismatch {
        /// The tensor.
        tensor: String,
        /// Its first dimension.
        found: u64,
        /// The expected count.
        expected: u64,
    },
    /// Main-stack tensors of a layer beyond the pattern.
    LayerBeyondPattern {
        /// Layer index.
        layer: u64,
        /// The pattern's length.
        n_layers: u64,
        /// How many tensors that layer has.
        n_tensors: usize,
        /// One of them.
        example: String,
    },
    /// A layer the pattern calls MoE without any expert tensor.
    MoeLayerWithoutExperts {
        /// Layer index.
        layer: u64,
    },
    /// Training checkpoint: elements of a tensor in no rank file.
    PieceGap {
        /// The tensor.
        tensor: String,
        /// The uncovered block, `[start:end, ...]`.
        range: String,
    },
    /// Training checkpoint: two pieces of a tensor cover the same elements.
    PieceOverlap {
        /// The tensor.
        tensor: String,
        /// One rank file.
        file: String,
        /// Its piece.
        range: String,
        /// The other rank file.
        other_file: String,
        /// Its piece.
        other_range: String,
    },
    /// Training checkpoint: a tensor `fqn_to_file_index_mapping.json` does not list.
    NotInMapping {
        /// The tensor.
        tensor: String,
        /// A rank file holding it.
        file: String,
    },
    /// Training checkpoint: mapped tensors that no rank file holds.
    MappedButAbsent {
        /// How many.
        n_tensors: usize,
        /// The first.
        first: String,
    },
    /// Training checkpoint without `.hf_metadata/`.
    NoHfMetadata,
    /// A layer holding a tensor of another kind than its pattern letter says.
    PatternMismatch {
        /// Layer index.
        layer: u64,
        /// The kind in the pattern: `mamba`, `attention`, `mlp` or `moe`.
        expected: String,
        /// The kind the tensor belongs to.
        found: String,
        /// The first such tensor.
        tensor: String,
    },
}

/// Reads the checkpoint in `dir` (headers, index, config.json when present) and describes it.
///
/// ```no_run
/// let report = nemoconv::inspect::inspect(std::path::Path::new("ckpt/"))?;
/// println!("{report}");
/// # Ok::<(), nemoconv::Error>(())
/// ```
///
/// # Errors
/// Unreadable input: a missing directory, bad shards or index, an invalid config.json.
/// Problems of a readable checkpoint are not errors; they are in [`InspectReport::problems`].
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    if crate::catalog::dcp::is_dcp(dir) {
        let (catalog, info, problems) = sharded::scan(dir)?;
        let config = read_config(&dir.join(crate::catalog::dcp::HF_METADATA_DIR))?;
        let mut report = scan::describe(&catalog, config.as_ref());
        report.problems.extend(problems);
        report.sharded = Some(info);
        return Ok(report);
    }
    let catalog = Catalog::open(dir)?;
    let config = read_config(dir)?;
    Ok(scan::describe(&catalog, config.as_ref()))
}

/// The config, or None when there is no config.json (a problem, not an error).
fn read_config(dir: &Path) -> Result<Option<ModelConfig>> {
    if !dir.join(CONFIG_FILE).exists() {
        return Ok(None);
    }
    ModelConfig::open(dir).map(Some)
}
