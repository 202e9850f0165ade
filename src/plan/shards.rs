//! Packing output tensors into shard files under a size cap: file names, headers and the
//! absolute offset of every tensor. Deterministic: the same tensors give the same bytes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::OutputTensor;
use crate::catalog::HEADER_LEN_BYTES;

/// Where one output tensor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Index into [`super::Plan::shards`].
    pub shard: usize,
    /// Absolute byte offset in that shard file.
    pub offset: u64,
}

/// One output shard file: its name and the exact bytes before its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputShard {
    /// File name, `model-0000i-of-0000N.safetensors`.
    pub file_name: String,
    /// The 8-byte length and the space-padded JSON header.
    pub header: Vec<u8>,
    /// Total file size.
    pub len_bytes: u64,
    /// Indices of the plan tensors stored here, in file order.
    pub tensors: Vec<usize>,
}

/// The transformers-style shard name (1-based `i` of `n`).
pub fn shard_file_name(i: usize, n: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
}

/// Splits tensors (already in output order) into shards: a new shard starts when the next
/// tensor would push the current one past the cap; a tensor larger than the cap sits alone.
pub(super) fn pack(
    tensors: &[OutputTensor],
    metadata: &BTreeMap<String, String>,
    max_shard_bytes: u64,
) -> (Vec<OutputShard>, Vec<Placement>) {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current_bytes = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let len = t.len_bytes().expect("recipes were checked before packing");
        match groups.last_mut() {
            Some(group)
                if current_bytes.saturating_add(len) <= max_shard_bytes || group.is_empty() =>
            {
                group.push(i);
                current_bytes += len;
            }
            _ => {
                groups.push(vec![i]);
                current_bytes = len;
            }
        }
    }
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    let n = groups.len();
    let mut placements = vec![
        Placement {
            shard: 0,
            offset: 0
        };
        tensors.len()
    ];
    let shards = groups
        .into_iter()
        .enumerate()
        .map(|(s, members)| {
            let header = encode_header(tensors, &members, metadata);
            let mut offset = header.len() as u64;
            for &i in &members {
                placements[i] = Placement { shard: s, offset };
                offset += tensors[i].len_bytes().expect("checked above");
            }
            OutputShard {
                file_name: shard_file_name(s, n),
                header,
                len_bytes: offset,
                tensors: members,
            }
        })
        .collect();
    (shards, placements)
}

/// The header bytes for `members`, data laid out in their order, padded to 8 bytes with spaces
/// as the safetensors format does.
fn encode_header(
    tensors: &[OutputTensor],
    members: &[usize],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("__metadata__".to_string(), json!(metadata));
    let mut offset = 0u64;
    for &i in members {
        let t = &tensors[i];
        let end = offset + t.len_bytes().expect("checked by the caller");
        map.insert(
            t.name.clone(),
            json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json =
        serde_json::to_vec(&Value::Object(map)).expect("a map of strings and numbers serializes");
    json.resize(json.len().next_multiple_of(HEADER_LEN_BYTES as usize), b' ');
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend_from_slice(&json);
    header
}

/// Orders names with their digit runs compared as numbers, so `layers.2` sorts before `layers.10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let ord = cmp_digit_runs(da, db);
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn cmp_digit_runs(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let (ta, tb) = (&a[trim(a)..], &b[trim(b)..]);
    ta.len()
        .cmp(&tb.len())
        .then_with(|| ta.cmp(tb))
        .then_with(|| a.len().cmp(&b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut names = vec!["l.10.w", "l.2.w", "l.1.w", "l.02.w", "a", "l.1.v"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            vec!["a", "l.1.v", "l.1.w", "l.2.w", "l.02.w", "l.10.w"]
        );
    }

    #[test]
    fn shard_names_follow_transformers() {
        assert_eq!(shard_file_name(0, 3), "model-00001-of-00003.safetensors");
    }
}
