//! Test-only helpers: write small safetensors checkpoints (shards, index, config) into a
//! directory, so `inspect` and `verify` tests run on real files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::TensorView;

use crate::catalog::INDEX_FILE;
use crate::dtype::Dtype;

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

/// Writes `tensors` as the single shard `file` of `dir`, with optional `__metadata__`.
pub(crate) fn write_shard(dir: &Path, file: &str, tensors: &[Tensor], metadata: &[(&str, &str)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data).expect("a consistent tensor");
            (name.clone(), view)
        })
        .collect();
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize_to_file(views, metadata, &dir.join(file)).expect("write a test shard");
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
