//! Writes NeMo Automodel training checkpoints (DCP-FORMAT §1-§2) from whole tensors and a
//! cut of each into rank pieces: one `shard-0000R-model-00001-of-00001.safetensors` per rank
//! in the writer's own header style (compact JSON, `dtype, shape, data_offsets`, padded with
//! spaces, `__metadata__` last with `DCP_SHARDING_INFO`), plus `.hf_metadata/`. Written from
//! the format description alone, no nemoconv code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::builder::{padded, raw_bytes};
use crate::harness::{Tensor, convert, tempdir};
use crate::reader::dtype_size;

/// One rank's piece of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceSpec {
    pub rank: usize,
    pub offset: Vec<u64>,
    pub shape: Vec<u64>,
}

/// FSDP2 `Shard(0)` over `world` ranks, as `torch.chunk` cuts: the first ranks get
/// `ceil(n / world)` rows, the last the rest, trailing ranks an empty piece whose offset is
/// the dimension size.
pub fn rows(shape: &[u64], world: usize) -> Vec<PieceSpec> {
    let n = shape[0];
    let chunk = n.div_ceil(world as u64).max(1);
    (0..world)
        .map(|rank| {
            let start = (rank as u64 * chunk).min(n);
            let end = ((rank as u64 + 1) * chunk).min(n);
            let mut piece = shape.to_vec();
            piece[0] = end - start;
            let mut offset = vec![0; shape.len()];
            offset[0] = start;
            PieceSpec {
                rank,
                offset,
                shape: piece,
            }
        })
        .collect()
}

/// `ep_shard` column pieces: the last dim cut into `ranks.len()` chunks as `torch.chunk` does.
pub fn columns(shape: &[u64], ranks: &[usize]) -> Vec<PieceSpec> {
    let last = shape.len() - 1;
    let n = shape[last];
    let chunk = n.div_ceil(ranks.len() as u64).max(1);
    ranks
        .iter()
        .enumerate()
        .map(|(k, &rank)| {
            let start = (k as u64 * chunk).min(n);
            let end = ((k as u64 + 1) * chunk).min(n);
            let mut piece = shape.to_vec();
            piece[last] = end - start;
            let mut offset = vec![0; shape.len()];
            offset[last] = start;
            PieceSpec {
                rank,
                offset,
                shape: piece,
            }
        })
        .collect()
}

/// The whole tensor on one rank (an expert-parallel expert, a de-duplicated replicated buffer).
pub fn whole(shape: &[u64], rank: usize) -> Vec<PieceSpec> {
    vec![PieceSpec {
        rank,
        offset: vec![0; shape.len()],
        shape: shape.to_vec(),
    }]
}

/// A tensor of the model, its stored (training) value, and how it is cut.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub tensor: Tensor,
    pub pieces: Vec<PieceSpec>,
}

/// A training checkpoint to write.
#[derive(Debug, Clone, Default)]
pub struct DcpCheckpoint {
    pub world: usize,
    pub entries: Vec<Entry>,
    /// Name → 1-based output file index.
    pub file_index: BTreeMap<String, u64>,
    /// Name → original dtype word; None writes no `fqn_to_dtype_mapping.json`.
    pub dtype_map: Option<BTreeMap<String, String>>,
    /// Reverses the entry order inside every rank file (the GPU writer sorts by size).
    pub reverse_within_files: bool,
    /// `.hf_metadata/config.json`; None writes [`CONFIG`].
    pub config: Option<String>,
}

/// Deterministic values `0..numel` of a tensor of `shape` in `dtype`, varied by `seed`.
pub fn values(dtype: &str, shape: &[u64], seed: u64) -> Tensor {
    let numel: u64 = shape.iter().product();
    let mut data = Vec::new();
    for k in 0..numel {
        let x = ((k * 37 + seed * 101) % 251) as f32 / 16.0 - 7.0 + (k % 7) as f32 * 1e-3;
        match dtype {
            "F32" => data.extend(x.to_le_bytes()),
            "BF16" => data.extend(half::bf16::from_f32(x).to_le_bytes()),
            "F16" => data.extend(half::f16::from_f32(x).to_le_bytes()),
            "I64" => data.extend(((k as i64) * 3 - seed as i64).to_le_bytes()),
            other => panic!("values: unsupported dtype {other}"),
        }
    }
    Tensor {
        dtype: dtype.to_string(),
        shape: shape.to_vec(),
        data,
    }
}

/// The bytes of `piece` cut out of the row-major `tensor`.
pub fn cut(tensor: &Tensor, piece: &PieceSpec) -> Vec<u8> {
    let size = dtype_size(&tensor.dtype) as usize;
    let numel: u64 = piece.shape.iter().product();
    let nd = tensor.shape.len();
    let mut out = Vec::with_capacity(numel as usize * size);
    let mut index = vec![0u64; nd];
    for _ in 0..numel {
        let flat = (0..nd).fold(0u64, |flat, d| {
            flat * tensor.shape[d] + piece.offset[d] + index[d]
        });
        let at = flat as usize * size;
        out.extend(&tensor.data[at..at + size]);
        for d in (0..nd).rev() {
            index[d] += 1;
            if index[d] < piece.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

fn ints(values: &[u64], sep: &str) -> String {
    let v: Vec<String> = values.iter().map(u64::to_string).collect();
    format!("[{}]", v.join(sep))
}

/// One piece as a rank file holds it: name, dtype word, placement and bytes.
pub type StoredPiece = (String, String, PieceSpec, Vec<u8>);

/// One rank file holding `pieces` in write order.
pub fn shard_bytes(pieces: &[StoredPiece]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut info = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, dtype, piece, bytes) in pieces {
        let start = data.len();
        data.extend(bytes);
        entries.push(format!(
            "{}:{{\"dtype\":\"{dtype}\",\"shape\":{},\"data_offsets\":[{start},{}]}}",
            serde_json::to_string(name).unwrap(),
            ints(&piece.shape, ","),
            data.len()
        ));
        info.push(format!(
            "{}: {{\"saved_offsets\": {}}}",
            serde_json::to_string(name).unwrap(),
            ints(&piece.offset, ", ")
        ));
    }
    let info = format!("{{{}}}", info.join(", "));
    let header = format!(
        "{{{},\"__metadata__\":{{\"DCP_SHARDING_INFO\":{},\"DCP_VERSION\":\"1.0\",\"format\":\"pt\"}}}}",
        entries.join(","),
        serde_json::to_string(&info).unwrap()
    );
    raw_bytes(&padded(header.into_bytes()), &data)
}

/// A small NemotronV3-like config.json, as transformers writes it.
pub const CONFIG: &str = "{\n  \"dtype\": \"bfloat16\",\n  \"layer_norm_epsilon\": 1e-05,\n  \"model_type\": \"nemotron_h\",\n  \"time_step_limit\": [\n    0.0,\n    {\n      \"__float__\": \"Infinity\"\n    }\n  ]\n}\n";

impl DcpCheckpoint {
    /// Writes the checkpoint into a fresh temporary `model/` and consolidates it into `hf/`
    /// beside it, which must succeed; gives the directory (kept alive) and both paths.
    pub fn consolidated(&self) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempdir();
        let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
        self.write(&model);
        convert("consolidate", &["-q"], &model, &out).success();
        (tmp, model, out)
    }

    /// Writes the rank files and `.hf_metadata/` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir.join(".hf_metadata")).unwrap();
        let mut ranks: Vec<Vec<StoredPiece>> = vec![Vec::new(); self.world];
        for e in &self.entries {
            for p in &e.pieces {
                let bytes = cut(&e.tensor, p);
                ranks[p.rank].push((e.name.clone(), e.tensor.dtype.clone(), p.clone(), bytes));
            }
        }
        // A rank with nothing to save writes no file (DCP-FORMAT §1.1).
        for (rank, mut pieces) in ranks.into_iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            if self.reverse_within_files {
                pieces.reverse();
            }
            let name = format!("shard-{:05}-model-00001-of-00001.safetensors", rank + 1);
            std::fs::write(dir.join(name), shard_bytes(&pieces)).unwrap();
        }
        let meta = dir.join(".hf_metadata");
        let index = serde_json::to_string_pretty(&self.file_index).unwrap();
        std::fs::write(meta.join("fqn_to_file_index_mapping.json"), index).unwrap();
        if let Some(map) = &self.dtype_map {
            let text = serde_json::to_string_pretty(map).unwrap();
            std::fs::write(meta.join("fqn_to_dtype_mapping.json"), text).unwrap();
        }
        let config = self.config.as_deref().unwrap_or(CONFIG);
        std::fs::write(meta.join("config.json"), config).unwrap();
        std::fs::write(meta.join("generation_config.json"), "{\n  \"a\": 1\n}\n").unwrap();
    }

    /// Every name in output file 1 of 1.
    pub fn one_file(mut self) -> Self {
        self.file_index = self.entries.iter().map(|e| (e.name.clone(), 1)).collect();
        self
    }
}
