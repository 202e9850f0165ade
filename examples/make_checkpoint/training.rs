//! A NeMo Automodel training checkpoint of the same model (`--training-ranks N`): the
//! `model/` directory `Checkpointer.save_model` leaves with `save_consolidated: false`
//! (DCP-FORMAT §1-§2). One `shard-0000R-model-00001-of-00001.safetensors` per rank with
//! FSDP2 row pieces (`torch.chunk` over the ranks) of every tensor, each routed expert whole
//! on the rank owning it, each router bias once; `.hf_metadata/` with config, generation
//! config, the file-index mapping (the HF shards' layout) and rank 0's dtype mapping. The
//! values are those of the HF checkpoint the same seed gives, so `nemoconv consolidate` of
//! this equals the HF preset's tensors.

use crate::model::TensorSpec;
use crate::writer::{Part, write_file};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One rank's piece: rows `rows` of a tensor (all of it for a whole tensor).
struct Piece<'a> {
    tensor: &'a TensorSpec,
    rows: std::ops::Range<usize>,
}

impl Piece<'_> {
    fn row_bytes(&self) -> u64 {
        let per_row: usize = self.tensor.shape[1..].iter().product();
        (per_row * self.tensor.dtype.size()) as u64
    }

    fn shape(&self) -> Vec<usize> {
        let mut shape = self.tensor.shape.clone();
        shape[0] = self.rows.len();
        shape
    }

    fn offset(&self) -> Vec<usize> {
        let mut offset = vec![0; self.tensor.shape.len()];
        offset[0] = self.rows.start;
        offset
    }
}

/// The rank holding a whole tensor, or None for one cut in rows over all ranks.
fn owner(name: &str, ranks: usize, n_experts: usize) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    if let Some(i) = parts.iter().position(|p| *p == "experts") {
        let e: usize = parts.get(i + 1)?.parse().ok()?;
        return Some(e * ranks / n_experts.max(1));
    }
    if name.ends_with("e_score_correction_bias") {
        let layer: usize = parts.iter().find_map(|p| p.parse().ok()).unwrap_or(0);
        return Some(layer % ranks);
    }
    None
}

/// Every rank's pieces, in the tensors' order.
fn pieces(tensors: &[TensorSpec], ranks: usize, n_experts: usize) -> Vec<Vec<Piece<'_>>> {
    let mut out: Vec<Vec<Piece>> = (0..ranks).map(|_| Vec::new()).collect();
    for t in tensors {
        let n = t.shape[0];
        match owner(&t.name, ranks, n_experts) {
            Some(rank) => out[rank].push(Piece {
                tensor: t,
                rows: 0..n,
            }),
            None => {
                let chunk = n.div_ceil(ranks).max(1);
                for (rank, pieces) in out.iter_mut().enumerate() {
                    let start = (rank * chunk).min(n);
                    let end = ((rank + 1) * chunk).min(n);
                    pieces.push(Piece {
                        tensor: t,
                        rows: start..end,
                    });
                }
            }
        }
    }
    out
}

/// The DCP header of one rank file: compact JSON, `__metadata__` last.
fn header(pieces: &[Piece]) -> Result<Vec<u8>> {
    let (mut entries, mut info) = (Vec::new(), Vec::new());
    let mut offset = 0;
    for p in pieces {
        let end = offset + p.rows.len() as u64 * p.row_bytes();
        let name = serde_json::to_string(&p.tensor.name)?;
        entries.push(format!(
            r#"{name}:{{"dtype":"{}","shape":{},"data_offsets":[{offset},{end}]}}"#,
            p.tensor.dtype.safetensors_name(),
            serde_json::to_string(&p.shape())?,
        ));
        let offsets: Vec<String> = p.offset().iter().map(usize::to_string).collect();
        info.push(format!(
            r#"{name}: {{"saved_offsets": [{}]}}"#,
            offsets.join(", ")
        ));
        offset = end;
    }
    let info = serde_json::to_string(&format!("{{{}}}", info.join(", ")))?;
    let mut text = format!(
        r#"{{{},"__metadata__":{{"DCP_SHARDING_INFO":{info},"DCP_VERSION":"1.0","format":"pt"}}}}"#,
        entries.join(",")
    );
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    Ok(bytes)
}

/// Writes the training checkpoint of `shards` (the HF layout, for the file-index mapping)
/// over `ranks` ranks into `dir`, with `config` as `.hf_metadata/config.json`.
pub fn write(
    dir: &Path,
    shards: &[Vec<TensorSpec>],
    ranks: usize,
    n_experts: usize,
    config: &Value,
    seed: u64,
) -> Result<()> {
    let meta = dir.join(".hf_metadata");
    fs::create_dir_all(&meta).with_context(|| format!("cannot create {}", meta.display()))?;
    let tensors: Vec<TensorSpec> = shards.iter().flatten().cloned().collect();
    let by_rank = pieces(&tensors, ranks, n_experts);
    for (rank, pieces) in by_rank.iter().enumerate() {
        let path = dir.join(format!(
            "shard-{:05}-model-00001-of-00001.safetensors",
            rank + 1
        ));
        let parts: Vec<Part> = pieces
            .iter()
            .map(|p| Part {
                tensor: p.tensor,
                bytes: p.rows.start as u64 * p.row_bytes()..p.rows.end as u64 * p.row_bytes(),
            })
            .collect();
        write_file(&path, &header(pieces)?, &parts, seed)?;
    }
    let index: BTreeMap<&str, usize> = shards
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |t| (t.name.as_str(), i + 1)))
        .collect();
    // Rank 0's exported state dict: the tensors it holds a piece of (DCP-FORMAT §2.2).
    let dtypes: BTreeMap<&str, &str> = by_rank[0]
        .iter()
        .map(|p| (p.tensor.name.as_str(), p.tensor.dtype.safetensors_name()))
        .collect();
    let write = |name: &str, text: String| {
        let path = meta.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "fqn_to_file_index_mapping.json",
        serde_json::to_string_pretty(&index)?,
    )?;
    write(
        "fqn_to_dtype_mapping.json",
        serde_json::to_string_pretty(&dtypes)?,
    )?;
    write("config.json", serde_json::to_string_pretty(config)? + "\n")?;
    let generation = json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0});
    write(
        "generation_config.json",
        serde_json::to_string_pretty(&generation)? + "\n",
    )
}
