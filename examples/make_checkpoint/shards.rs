//! Splitting tensors into shards, safetensors headers and the index json.

use crate::model::TensorSpec;
use anyhow::Result;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;

/// Compares names part by part, digit runs by numeric value: `layers.2` < `layers.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() && !b.is_empty() {
        let (pa, ra) = split_run(a);
        let (pb, rb) = split_run(b);
        let order = if is_digits(pa) && is_digits(pb) {
            let (na, nb) = (pa.trim_start_matches('0'), pb.trim_start_matches('0'));
            na.len().cmp(&nb.len()).then(na.cmp(nb))
        } else {
            pa.cmp(pb)
        };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (ra, rb);
    }
    a.len().cmp(&b.len())
}

fn is_digits(s: &str) -> bool {
    s.as_bytes()[0].is_ascii_digit()
}

/// Splits off the leading run of digits or of non-digits.
fn split_run(s: &str) -> (&str, &str) {
    let digit = s.as_bytes()[0].is_ascii_digit();
    let end = s
        .bytes()
        .position(|c| c.is_ascii_digit() != digit)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Groups name-sorted tensors into shards the way `transformers` does: a shard is closed
/// when the next tensor would push it past `max_bytes`, so a bigger tensor sits alone.
pub fn plan(tensors: Vec<TensorSpec>, max_bytes: u64) -> Vec<Vec<TensorSpec>> {
    let mut shards: Vec<Vec<TensorSpec>> = Vec::new();
    let mut size = 0;
    for tensor in tensors {
        let bytes = tensor.bytes();
        match shards.last_mut() {
            Some(shard) if size + bytes <= max_bytes => shard.push(tensor),
            _ => {
                shards.push(vec![tensor]);
                size = 0;
            }
        }
        size += bytes;
    }
    shards
}

/// File names `model-0000i-of-0000N.safetensors`, or `model.safetensors` without an index.
pub fn file_names(shards: usize, with_index: bool) -> Vec<String> {
    if !with_index {
        return vec!["model.safetensors".to_string()];
    }
    (1..=shards)
        .map(|i| format!("model-{i:05}-of-{shards:05}.safetensors"))
        .collect()
}

/// The 8-byte length, JSON header and space padding that start a safetensors file,
/// with tensors listed (and their data laid out) in the given order.
pub fn header(tensors: &[TensorSpec]) -> Result<Vec<u8>> {
    let mut text = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.bytes();
        text += &format!(
            r#",{}:{{"dtype":"{}","shape":{},"data_offsets":[{offset},{end}]}}"#,
            serde_json::to_string(&t.name)?,
            t.dtype.safetensors_name(),
            serde_json::to_string(&t.shape)?,
        );
        offset = end;
    }
    text.push('}');
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    Ok(bytes)
}

/// `model.safetensors.index.json`: total payload bytes and the file of each tensor.
pub fn index_json(shards: &[Vec<TensorSpec>], names: &[String]) -> Value {
    let mut weight_map = Map::new();
    let mut total = 0;
    for (shard, file) in shards.iter().zip(names) {
        for t in shard {
            weight_map.insert(t.name.clone(), json!(file));
            total += t.bytes();
        }
    }
    json!({"metadata": {"total_size": total}, "weight_map": weight_map})
}
