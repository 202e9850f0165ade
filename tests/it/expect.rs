//! Expected outputs, derived from the input tensors by the rules of SPEC §3 and the round-trip
//! sentence of §4, written here from the contract alone (no nemoconv code), with the `half`
//! crate doing every rounding.

use std::collections::BTreeMap;

use crate::builder::Dt;
use crate::harness::{Tensor, Tensors};

/// `tensor` converted to `to` (exact when widening, round-to-nearest-even when narrowing).
pub fn cast(tensor: &Tensor, to: Dt) -> Tensor {
    let from = Dt::of(&tensor.dtype);
    let data = if from == to {
        tensor.data.clone()
    } else {
        to.encode(&from.decode(&tensor.data))
    };
    Tensor {
        dtype: to.word().to_string(),
        shape: tensor.shape.clone(),
        data,
    }
}

/// A 2-D `[rows, cols]` tensor's bytes transposed to `[cols, rows]`.
pub fn transpose(tensor: &Tensor) -> Vec<u8> {
    let [rows, cols] = tensor.shape[..] else {
        panic!("not 2-D: {:?}", tensor.shape)
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let size = tensor.data.len() / (rows * cols).max(1);
    let mut out = Vec::with_capacity(tensor.data.len());
    for c in 0..cols {
        for r in 0..rows {
            let at = (r * cols + c) * size;
            out.extend(&tensor.data[at..at + size]);
        }
    }
    out
}

/// The HF prefix of a checkpoint: the first `backbone.` or `model.` a name starts with.
pub fn hf_prefix(names: impl IntoIterator<Item = impl AsRef<str>>) -> &'static str {
    names
        .into_iter()
        .find_map(|n| {
            let n = n.as_ref();
            ["backbone.", "model."]
                .into_iter()
                .find(|p| n.starts_with(p))
        })
        .unwrap_or("backbone.")
}

const FP32_SUFFIXES: [&str; 3] = [".mixer.A_log", ".mixer.D", ".mixer.dt_bias"];

fn is_fp32_name(name: &str) -> bool {
    FP32_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// An expert name `(scope, layer, id, up?)` with the scope before `layers.`.
fn parse_expert(name: &str) -> Option<(String, u64, u64, bool)> {
    let re = regex::Regex::new(
        r"^(model\.|mtp\.)?layers\.(\d+)\.mixer\.experts\.(\d+)\.(up_proj|down_proj)\.weight$",
    )
    .unwrap();
    let c = re.captures(name)?;
    let scope = c.get(1).map_or("", |m| m.as_str()).to_string();
    Some((
        scope,
        c[2].parse().ok()?,
        c[3].parse().ok()?,
        &c[4] == "up_proj",
    ))
}

/// SPEC §3.2: the internal name of a (non-expert) HF name.
pub fn internal_name(name: &str, prefix: &str) -> String {
    let renamed = match name.strip_prefix(prefix) {
        Some("norm_f.weight") => "model.norm.weight".to_string(),
        Some("embedding.weight" | "embeddings.weight" | "embed_tokens.weight") => {
            "model.embed_tokens.weight".to_string()
        }
        Some(rest) => format!("model.{rest}"),
        None => name.to_string(),
    };
    match FP32_SUFFIXES.iter().find(|s| renamed.ends_with(*s)) {
        Some(suffix) => {
            let head = &renamed[..renamed.len() - suffix.len()];
            format!("{head}.mixer._fp32_params.{}", &suffix[".mixer.".len()..])
        }
        None => renamed,
    }
}

/// SPEC §3: the internal checkpoint `from-hf` must write for `input` with experts in `expert_dt`.
pub fn from_hf(input: &Tensors, expert_dt: Dt) -> Tensors {
    let prefix = hf_prefix(input.keys());
    let mut out = Tensors::new();
    let mut groups: BTreeMap<(String, u64, bool), BTreeMap<u64, &Tensor>> = BTreeMap::new();
    for (name, tensor) in input {
        let renamed = internal_name(name, prefix);
        if let Some((scope, layer, id, up)) = parse_expert(&renamed) {
            groups
                .entry((scope, layer, up))
                .or_default()
                .insert(id, tensor);
            continue;
        }
        let tensor = if is_fp32_name(name) {
            cast(tensor, Dt::F32)
        } else {
            tensor.clone()
        };
        out.insert(renamed, tensor);
    }
    for ((scope, layer, up), experts) in groups {
        let first = experts.values().next().unwrap();
        let mut data = Vec::new();
        for (slot, (&id, expert)) in experts.iter().enumerate() {
            assert_eq!(
                slot as u64, id,
                "test input lacks expert {slot} of layer {layer}"
            );
            let transposed = Tensor {
                dtype: expert.dtype.clone(),
                shape: vec![expert.shape[1], expert.shape[0]],
                data: transpose(expert),
            };
            data.extend(cast(&transposed, expert_dt).data);
        }
        let word = if up {
            "gate_and_up_projs"
        } else {
            "down_projs"
        };
        let shape = vec![experts.len() as u64, first.shape[1], first.shape[0]];
        let tensor = Tensor {
            dtype: expert_dt.word().to_string(),
            shape,
            data,
        };
        out.insert(
            format!("{scope}layers.{layer}.mixer.experts.{word}"),
            tensor,
        );
    }
    out
}

/// SPEC §4 "Round trip": `input` after from-hf and to-hf: embeddings under
/// `P embeddings.weight`, `A_log`/`D`/`dt_bias` in F32, experts in `expert_dt`, the rest as is.
pub fn round_trip(input: &Tensors, expert_dt: Dt) -> Tensors {
    let prefix = hf_prefix(input.keys());
    input
        .iter()
        .map(|(name, tensor)| {
            let rest = name.strip_prefix(prefix);
            let name = match rest {
                Some("embedding.weight" | "embed_tokens.weight") => {
                    format!("{prefix}embeddings.weight")
                }
                _ => name.clone(),
            };
            let internal = internal_name(&name, prefix);
            let tensor = if is_fp32_name(&name) {
                cast(tensor, Dt::F32)
            } else if parse_expert(&internal).is_some() {
                cast(tensor, expert_dt)
            } else {
                tensor.clone()
            };
            (name, tensor)
        })
        .collect()
}

/// `tensors` under the other HF prefix (`from` → `to`); names without `from` are unchanged.
pub fn with_prefix(tensors: &Tensors, from: &str, to: &str) -> Tensors {
    tensors
        .iter()
        .map(|(n, t)| {
            let name = n
                .strip_prefix(from)
                .map_or(n.clone(), |rest| format!("{to}{rest}"));
            (name, t.clone())
        })
        .collect()
}
