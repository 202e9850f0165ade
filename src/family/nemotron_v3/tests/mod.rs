//! Unit tests of the NemotronV3 rules: one per SPEC rule and table row, on exact plans.
//!
//! Each test writes a tiny checkpoint into a temporary directory, opens it as a [`Catalog`]
//! and asserts the exact output tensors (name, dtype, shape, recipe with its sources) or the
//! exact error variant. Expert matrices are `H` wide with `I` intermediate rows.

use std::collections::BTreeMap;
use std::path::Path;

use tempfile::TempDir;

use super::HfPrefix;
use super::NemotronV3;
use crate::catalog::{Catalog, TensorId};
use crate::config::{LayerKind, ModelConfig};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::family::{Conversion, Family};
use crate::options::{EpSlice, FromHfOptions, ToHfOptions, anchored_regex};
use crate::plan::{OutputTensor, Recipe, Source};
use crate::testing::{Tensor, tensor};

// ---------------------------------------------------------------------------------------------
// Helpers: build a checkpoint, a config, and the expected outputs.
// ---------------------------------------------------------------------------------------------

/// `hidden_size` of every test checkpoint.
const H: u64 = 4;
/// `moe_intermediate_size` of every test checkpoint.
const I: u64 = 2;

const L0: &str = "backbone.layers.0";
const L1: &str = "backbone.layers.1";
const BF16: Dtype = Dtype::BF16;
const F32: Dtype = Dtype::F32;

/// One input tensor: name, dtype, shape.
type Spec = (String, Dtype, Vec<u64>);

fn t(name: impl Into<String>, dtype: Dtype, shape: &[u64]) -> Spec {
    (name.into(), dtype, shape.to_vec())
}

/// The HF name of one expert matrix: `<layer>.mixer.experts.<id>.<proj>.weight`.
fn expert(layer: &str, id: u64, proj: &str) -> String {
    format!("{layer}.mixer.experts.{id}.{proj}.weight")
}

/// `up_proj` `[I, H]` and `down_proj` `[H, I]` of each id, in the order given.
fn hf_experts(layer: &str, ids: impl IntoIterator<Item = u64>, dtype: Dtype) -> Vec<Spec> {
    ids.into_iter()
        .flat_map(|id| {
            [
                t(expert(layer, id, "up_proj"), dtype, &[I, H]),
                t(expert(layer, id, "down_proj"), dtype, &[H, I]),
            ]
        })
        .collect()
}

/// Writes one shard, tensors stored in the order given, with bytes generated from `seed`.
fn write_shard(dir: &Path, file: &str, tensors: &[Spec], metadata: &[(&str, &str)], seed: u8) {
    let mut start = 0usize;
    let tensors: Vec<Tensor> = tensors
        .iter()
        .map(|(name, dtype, shape)| {
            let shape: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap()).collect();
            let len = (shape.iter().product::<usize>() * dtype.bitsize()).div_ceil(8);
            let bytes = (start..start + len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect();
            start += len;
            tensor(name, *dtype, &shape, bytes)
        })
        .collect();
    crate::testing::write_shard(dir, file, &tensors, metadata);
}

/// A checkpoint on disk and its catalog (the directory lives as long as the catalog).
struct Ckpt {
    catalog: Catalog,
    _dir: TempDir,
}

/// A checkpoint of one shard file per entry of `shards`, every shard with `metadata`.
fn checkpoint(shards: &[Vec<Spec>], metadata: &[(&str, &str)]) -> Ckpt {
    let dir = TempDir::new().unwrap();
    let n = shards.len();
    for (i, tensors) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_shard(dir.path(), &file, tensors, metadata, i as u8);
    }
    let catalog = Catalog::open(dir.path()).unwrap();
    Ckpt { catalog, _dir: dir }
}

/// A one-shard HF checkpoint with no metadata.
fn hf(tensors: Vec<Spec>) -> Ckpt {
    checkpoint(&[tensors], &[])
}

/// Metadata nemoconv writes on a full internal output with the `backbone.` prefix.
const INTERNAL_META: &[(&str, &str)] = &[
    ("format", "pt"),
    ("nemoconv.layout", "internal"),
    ("nemoconv.hf_prefix", "backbone"),
];

/// A one-shard internal checkpoint with `metadata`.
fn internal(tensors: Vec<Spec>, metadata: &[(&str, &str)]) -> Ckpt {
    checkpoint(&[tensors], metadata)
}

fn config(json: &str) -> ModelConfig {
    ModelConfig::from_json(json, Path::new("config.json")).unwrap()
}

/// A config with `pattern`, E experts, `I` and torch_dtype bfloat16.
fn moe_config(pattern: &str, n_experts: u64) -> ModelConfig {
    config(&format!(
        r#"{{"model_type": "nemotron_h", "hybrid_override_pattern": "{pattern}",
            "n_routed_experts": {n_experts}, "moe_intermediate_size": {I},
            "hidden_size": {H}, "mlp_bias": false, "torch_dtype": "bfloat16"}}"#
    ))
}

fn lenient() -> FromHfOptions {
    FromHfOptions {
        lenient: true,
        ..FromHfOptions::default()
    }
}

/// from-hf with the default options and a config of `pattern` and E experts.
fn from_hf_default(ck: &Ckpt, pattern: &str, n_experts: u64) -> Result<Conversion> {
    from_hf(
        ck,
        &moe_config(pattern, n_experts),
        &FromHfOptions::default(),
    )
}

fn from_hf(ck: &Ckpt, config: &ModelConfig, options: &FromHfOptions) -> Result<Conversion> {
    NemotronV3.plan_from_hf(&ck.catalog, config, options, None)
}

/// from-hf with the default options, writing only the experts of `slice`.
fn from_hf_slice(ck: &Ckpt, config: &ModelConfig, slice: Option<EpSlice>) -> Result<Conversion> {
    NemotronV3.plan_from_hf(&ck.catalog, config, &FromHfOptions::default(), slice)
}

fn to_hf(ck: &Ckpt, config: &ModelConfig, options: &ToHfOptions) -> Result<Conversion> {
    NemotronV3.plan_to_hf(&ck.catalog, config, options)
}

fn id_of(c: &Catalog, name: &str) -> TensorId {
    c.iter()
        .find(|(_, t)| t.name == name)
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no input tensor {name:?}"))
}

/// The source reading all of input tensor `name`.
fn source(c: &Catalog, name: &str) -> Source {
    super::experts::source_of(c, id_of(c, name))
}

/// Splits a `"input -> output"` rename.
fn rename(pair: &str) -> (&str, &str) {
    pair.split_once(" -> ")
        .unwrap_or_else(|| panic!("{pair:?} is not \"input -> output\""))
}

/// Each `"input -> output"`: the input copied as it is under the output name.
fn copies(c: &Catalog, pairs: &[&str]) -> Vec<OutputTensor> {
    pairs
        .iter()
        .map(|pair| {
            let (from, to) = rename(pair);
            let t = c.tensor(id_of(c, from));
            OutputTensor {
                name: to.to_string(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                recipe: Recipe::Copy(source(c, from)),
            }
        })
        .collect()
}

/// `"input -> output"`: the input cast to F32 under the output name.
fn to_f32(c: &Catalog, pair: &str) -> OutputTensor {
    let (from, to) = rename(pair);
    OutputTensor {
        name: to.to_string(),
        dtype: F32,
        shape: c.tensor(id_of(c, from)).shape.clone(),
        recipe: Recipe::Cast(source(c, from)),
    }
}

/// Expert matrices `[rows, cols]` named `sources`, transposed and stacked into `name`.
fn stacked(
    c: &Catalog,
    name: String,
    dtype: Dtype,
    sources: &[String],
    rows: u64,
    cols: u64,
) -> OutputTensor {
    OutputTensor {
        name,
        dtype,
        shape: vec![sources.len() as u64, cols, rows],
        recipe: Recipe::StackTransposed {
            sources: sources.iter().map(|s| source(c, s)).collect(),
            rows,
            cols,
        },
    }
}

/// The merged `gate_and_up_projs` and `down_projs` of experts `ids` of HF layer `hf_layer`.
fn merged_pair(
    c: &Catalog,
    hf_layer: &str,
    out_layer: &str,
    ids: impl Iterator<Item = u64> + Clone,
    dtype: Dtype,
) -> Vec<OutputTensor> {
    let ups: Vec<String> = ids
        .clone()
        .map(|e| expert(hf_layer, e, "up_proj"))
        .collect();
    let downs: Vec<String> = ids.map(|e| expert(hf_layer, e, "down_proj")).collect();
    let up_name = format!("{out_layer}.mixer.experts.gate_and_up_projs");
    let down_name = format!("{out_layer}.mixer.experts.down_projs");
    vec![
        stacked(c, up_name, dtype, &ups, I, H),
        stacked(c, down_name, dtype, &downs, H, I),
    ]
}

/// [`merged_pair`] of `backbone.layers.0` into `model.layers.0`.
fn merged_l0(
    c: &Catalog,
    ids: impl Iterator<Item = u64> + Clone,
    dtype: Dtype,
) -> Vec<OutputTensor> {
    merged_pair(c, L0, "model.layers.0", ids, dtype)
}

/// Asserts the conversion's tensors are exactly `expected`, in any order.
fn assert_outputs(conv: &Conversion, expected: Vec<OutputTensor>) {
    let by_name = |v: &[OutputTensor]| -> BTreeMap<String, OutputTensor> {
        v.iter().map(|o| (o.name.clone(), o.clone())).collect()
    };
    assert_eq!(
        conv.tensors.len(),
        expected.len(),
        "outputs: {:?}",
        output_names(conv)
    );
    assert_eq!(by_name(&conv.tensors), by_name(&expected));
}

fn output<'a>(conv: &'a Conversion, name: &str) -> &'a OutputTensor {
    conv.tensors
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name:?}"))
}

fn output_names(conv: &Conversion) -> Vec<&str> {
    let mut names: Vec<&str> = conv.tensors.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    names
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

mod experts;
mod names;
mod renames;
mod slices_and_to_hf;
mod strictness;
