//! Test support for the unit tests of every module: the one writer of small safetensors
//! checkpoints (shards, index, config) into a directory, so tests run on real files.
//! (The integration tests in `tests/it/` are another crate and have their own, `builder.rs`.)

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use serde_json::{Value, json};

use crate::catalog::INDEX_FILE;
use crate::dtype::Dtype;

/// The header metadata of an internal-layout shard holding rank 1 of a 2-rank
/// expert-parallel slice of 5 experts (experts 3 and 4).
pub(crate) const SLICE_1_OF_2_OF_5: [(&str, &str); 8] = [
    ("format", "pt"),
    ("nemoconv.layout", "internal"),
    ("nemoconv.hf_prefix", "backbone"),
    ("nemoconv.n_routed_experts", "5"),
    ("nemoconv.ep_size", "2"),
    ("nemoconv.ep_rank", "1"),
    ("nemoconv.expert_start", "3"),
    ("nemoconv.expert_end", "5"),
];

/// One tensor to write: name, dtype, shape and raw little-endian bytes.
pub(crate) type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// A tensor from its parts.
pub(crate) fn tensor(name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Tensor {
    (name.to_string(), dtype, shape.to_vec(), data)
}

/// `values` as little-endian BF16 bytes.
pub(crate) fn bf16s(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// `values` as little-endian F16 bytes.
pub(crate) fn f16s(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// `values` as little-endian F32 bytes.
pub(crate) fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `tensors` as the shard `file` of `dir`, their bytes stored in the order given (so a
/// test can store experts out of order), with `__metadata__` when `metadata` is not empty.
pub(crate) fn write_shard(dir: &Path, file: &str, tensors: &[Tensor], metadata: &[(&str, &str)]) {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        header.insert("__metadata__".to_string(), Value::Object(meta));
    }
    let mut data: Vec<u8> = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let numel: usize = shape.iter().product();
        assert_eq!(
            bytes.len(),
            (numel * dtype.bitsize()).div_ceil(8),
            "{name}: bytes for {dtype:?} {shape:?}"
        );
        let start = data.len();
        data.extend(bytes);
        let entry = json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]});
        assert!(header.insert(name.clone(), entry).is_none(), "{name} twice");
    }
    let mut head = serde_json::to_vec(&Value::Object(header)).expect("a JSON header");
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend(head);
    bytes.extend(data);
    std::fs::write(dir.join(file), bytes).expect("write a test shard");
}

/// Writes `tensors` into `dir`, `per_shard` tensors a shard, with an index when there are
/// several shards.
pub(crate) fn write_checkpoint(dir: &Path, tensors: &[Tensor], per_shard: usize) {
    let chunks: Vec<&[Tensor]> = tensors.chunks(per_shard.max(1)).collect();
    if chunks.len() == 1 {
        write_shard(dir, "model.safetensors", chunks[0], &[]);
        return;
    }
    let mut weight_map = BTreeMap::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, chunks.len());
        write_shard(dir, &file, chunk, &[]);
        for t in chunk.iter() {
            weight_map.insert(t.0.clone(), file.clone());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).expect("write a test index");
}

/// Writes `config.json` into `dir`.
pub(crate) fn write_config(dir: &Path, config: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write a test config");
}
