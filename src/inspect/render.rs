//! The text form of an [`InspectReport`]: a compact summary for a person. The JSON form is
//! the serde serialization of the same struct.

use std::collections::BTreeMap;
use std::fmt;

use super::{ExpertForm, InspectReport, LayoutKind, LayoutSource, Problem};
use crate::family::nemotron_v3::HfPrefix;

/// Layers listed on an experts line before the middle is elided (JSON lists them all).
const MAX_LAYERS_LISTED: usize = 12;

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checkpoint   {}", self.dir)?;
        let layout = match self.layout {
            LayoutKind::Hf => "hf",
            LayoutKind::Internal => "internal",
            LayoutKind::InternalEpSlice => "internal expert-parallel slice",
            LayoutKind::Unknown => "unknown",
        };
        let source = match self.layout_source {
            LayoutSource::Metadata => "recorded in the shards",
            LayoutSource::Names => "guessed from names",
        };
        write!(f, "layout       {layout} ({source})")?;
        if let Some(prefix) = &self.hf_prefix {
            write!(f, ", hf prefix {prefix}.")?;
        }
        writeln!(f)?;
        if let Some(ep) = &self.ep {
            write!(f, "slice        {} experts", ep.n_local_experts)?;
            if let (Some(start), Some(end)) = (ep.expert_start, ep.expert_end) {
                write!(f, " [{start}, {end})")?;
            }
            if let Some(e) = ep.n_routed_experts {
                write!(f, " of {e}")?;
            }
            if let (Some(rank), Some(size)) = (ep.ep_rank, ep.ep_size) {
                write!(f, ", rank {rank} of {size}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "model_type   {}", or_unknown(self.model_type.as_deref()))?;
        match &self.pattern {
            Some(pattern) => {
                let c = &self.layer_counts;
                writeln!(
                    f,
                    "pattern      {pattern} ({} layers: {} mamba, {} attention, {} mlp, {} moe)",
                    self.n_layers, c.mamba, c.attention, c.mlp, c.moe
                )?;
            }
            None => writeln!(f, "pattern      unknown")?,
        }
        let num = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        writeln!(
            f,
            "E / I / H    {} / {} / {}",
            num(self.n_routed_experts),
            num(self.moe_intermediate_size),
            num(self.hidden_size)
        )?;
        self.fmt_experts(f)?;
        writeln!(
            f,
            "tensors      {}, {}",
            self.n_tensors,
            human_bytes(self.payload_bytes)
        )?;
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{d} {n}"))
            .collect();
        writeln!(f, "dtypes       {}", dtypes.join(", "))?;
        match self.quantized {
            true => writeln!(
                f,
                "quantized    yes: {}",
                self.quantization_evidence.join("; ")
            )?,
            false => writeln!(f, "quantized    no")?,
        }
        if let Some(s) = &self.sharded {
            writeln!(
                f,
                "training     {} ranks, {} pieces ({} empty), {} tensors split over ranks",
                s.n_ranks, s.n_pieces, s.n_empty_pieces, s.n_split_tensors
            )?;
        }
        writeln!(f, "shards       {}", self.shards.len())?;
        for s in &self.shards {
            writeln!(
                f,
                "  {}  {} tensors, {}",
                s.file,
                s.n_tensors,
                human_bytes(s.payload_bytes)
            )?;
        }
        if self.problems.is_empty() {
            return writeln!(f, "problems     none");
        }
        writeln!(f, "problems     {}", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl InspectReport {
    /// One line per (MTP, form, count): which layers hold that many experts.
    fn fmt_experts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut groups: BTreeMap<(bool, ExpertForm, u64), Vec<u64>> = BTreeMap::new();
        for e in &self.experts {
            groups
                .entry((e.mtp, e.form, e.n_experts))
                .or_default()
                .push(e.layer);
        }
        if groups.is_empty() {
            return writeln!(f, "experts      none");
        }
        for (i, ((mtp, form, n), layers)) in groups.iter().enumerate() {
            let head = if i == 0 { "experts" } else { "" };
            let form = match form {
                ExpertForm::PerExpert => "per-expert",
                ExpertForm::Merged => "merged",
            };
            let scope = if *mtp { "mtp layers" } else { "layers" };
            let list = match layers.len() {
                0..=MAX_LAYERS_LISTED => ranges(layers),
                n_layers => format!(
                    "({n_layers}): {} ... {}",
                    ranges(&layers[..MAX_LAYERS_LISTED - 2]),
                    ranges(&layers[n_layers - 2..])
                ),
            };
            writeln!(f, "{head:<12} {n} {form} in {scope} {list}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = |mtp: bool| if mtp { "mtp layer" } else { "layer" };
        match self {
            Problem::NoConfig => write!(f, "no config.json: layer pattern, E and I are unknown"),
            Problem::MixedPrefix { backbone, model } => write!(
                f,
                "tensor {backbone:?} has prefix {} but {model:?} has {}; a checkpoint must use one prefix",
                HfPrefix::Backbone.text(),
                HfPrefix::Model.text()
            ),
            Problem::MissingExperts {
                mtp,
                layer,
                proj,
                ids,
            } => write!(
                f,
                "{} {layer}: {proj} of experts {} missing",
                scope(*mtp),
                ranges(ids)
            ),
            Problem::ExpertIdOutOfRange {
                mtp,
                layer,
                ids,
                n_routed_experts,
            } => write!(
                f,
                "{} {layer}: expert ids {} >= n_routed_experts ({n_routed_experts})",
                scope(*mtp),
                ranges(ids)
            ),
            Problem::ExpertCountMismatch {
                tensor,
                found,
                expected,
            } => write!(
                f,
                "tensor {tensor:?} holds {found} experts, expected {expected}"
            ),
            Problem::LayerBeyondPattern {
                layer,
                n_layers,
                n_tensors,
                example,
            } => write!(
                f,
                "layer {layer} is beyond the {n_layers} layers of the pattern ({n_tensors} tensors, e.g. {example:?})"
            ),
            Problem::MoeLayerWithoutExperts { layer } => write!(
                f,
                "layer {layer} is MoE (\"E\") in the pattern but holds no expert tensors"
            ),
            Problem::PieceGap { tensor, range } => write!(
                f,
                "tensor {tensor:?}: elements {range} are in no rank file (a rank file is missing)"
            ),
            Problem::PieceOverlap {
                tensor,
                file,
                range,
                other_file,
                other_range,
            } => write!(
                f,
                "tensor {tensor:?}: piece {range} in {file} overlaps piece {other_range} in {other_file}"
            ),
            Problem::NotInMapping { tensor, file } => write!(
                f,
                "tensor {tensor:?} (in {file}) is not in fqn_to_file_index_mapping.json"
            ),
            Problem::MappedButAbsent { n_tensors, first } => write!(
                f,
                "{n_tensors} mapped tensors are in no rank file (first {first:?})"
            ),
            Problem::NoHfMetadata => write!(f, "no .hf_metadata/ directory"),
            Problem::PatternMismatch {
                layer,
                expected,
                found,
                tensor,
            } => write!(
                f,
                "layer {layer} is {expected} in the pattern but tensor {tensor:?} is a {found} tensor"
            ),
        }
    }
}

fn or_unknown(value: Option<&str>) -> &str {
    value.unwrap_or("unknown")
}

/// Sorted ids as runs: `0-3 7 9-10`.
pub(crate) fn ranges(ids: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(id) => *end = id,
            _ => runs.push((id, id)),
        }
    }
    let words: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match a == b {
            true => a.to_string(),
            false => format!("{a}-{b}"),
        })
        .collect();
    words.join(" ")
}

/// Bytes, with a decimal unit for large counts: `63155892352 bytes (63.16 GB)`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "kB")];
    match UNITS.iter().find(|(size, _)| bytes >= *size) {
        Some((size, unit)) => format!("{bytes} bytes ({:.2} {unit})", bytes as f64 / *size as f64),
        None => format!("{bytes} bytes"),
    }
}
