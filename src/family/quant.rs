//! Quantized checkpoints: recognising them (ModelOpt FP8, block FP8, NVFP4) and, for
//! `--dequantize`, pairing each FP8 weight with its scales. The naming conventions here are
//! those of NVIDIA ModelOpt and of block-FP8 releases, shared by every family.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::catalog::{Catalog, TensorEntry, TensorId};
use crate::config::ModelConfig;
use crate::dtype::Dtype;
use crate::error::{ConfigError, DequantProblem, Error, Fp8Scale, QuantSign, Result};
use crate::options::FromHfOptions;
use crate::plan::{FileChanges, OutputTensor, Recipe, Scale, Source};

/// ModelOpt's per-tensor scale of a weight (`value = stored * weight_scale`).
const WEIGHT_SCALE: &str = "_scale";
/// Block-FP8's per-block scale of a weight (`value = stored * weight_scale_inv[block]`).
const WEIGHT_SCALE_INV: &str = "_scale_inv";
/// NVFP4's second-level scale, the mark of a U8-packed FP4 weight.
const WEIGHT_SCALE_2: &str = "_scale_2";
/// The file ModelOpt writes beside a quantized checkpoint.
pub const HF_QUANT_CONFIG: &str = "hf_quant_config.json";
/// The config.json key of a declared quantization.
const QUANTIZATION_CONFIG: &str = "quantization_config";
/// The block of block-FP8 when the config names none.
const DEFAULT_BLOCK: [u64; 2] = [128, 128];

/// The kind of a tensor that only serves quantized inference, by its name ending. The one
/// reading of scale names: conversion, `--dequantize` and `inspect` all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    /// `..._scale_inv`: a block-FP8 scale (`weight_scale_inv` in releases).
    BlockInv,
    /// `...weight_scale`: ModelOpt's per-tensor or per-row FP8 scale.
    Weight,
    /// `...weight_scale_2`: NVFP4's second-level scale.
    Weight2,
    /// `...input_scale`: ModelOpt's activation scale.
    Input,
}

impl ScaleKind {
    /// The scale kind a name ends in, if any.
    pub fn of(name: &str) -> Option<ScaleKind> {
        if name.ends_with(WEIGHT_SCALE_INV) {
            Some(ScaleKind::BlockInv)
        } else if name.ends_with("weight_scale_2") {
            Some(ScaleKind::Weight2)
        } else if name.ends_with("weight_scale") {
            Some(ScaleKind::Weight)
        } else if name.ends_with("input_scale") {
            Some(ScaleKind::Input)
        } else {
            None
        }
    }
}

/// Evidence that a checkpoint is quantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The shard or file that shows it.
    pub path: PathBuf,
    /// The tensor that shows it, if it is a tensor.
    pub tensor: String,
    /// What was found.
    pub what: QuantSign,
}

/// Whether a dtype is one of the 8-bit float formats, which only quantized checkpoints store.
fn is_fp8(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::F8_E4M3 | Dtype::F8_E5M2 | Dtype::F8_E8M0 | Dtype::F8_E4M3FNUZ | Dtype::F8_E5M2FNUZ
    )
}

/// Whether config.json declares a quantization.
fn declared_in_config(config: &ModelConfig) -> bool {
    config.quantization.is_some()
}

/// The ModelOpt quantization config beside the shards, if there is one.
fn quant_config_file(catalog: &Catalog) -> Option<&PathBuf> {
    catalog
        .other_files
        .iter()
        .find(|f| f.as_os_str() == HF_QUANT_CONFIG)
}

/// Looks for quantized weights, scale tensors or a quantization config; the first found
/// refuses a conversion. A lone `_scale_inv` beside unquantized weights is not counted here:
/// the family drops or refuses it by name (SPEC §3 table, row 4).
pub fn detect(catalog: &Catalog, config: &ModelConfig) -> Option<Finding> {
    let names = catalog.ids_by_name();
    let found = |id: TensorId, what: QuantSign| Finding {
        path: catalog.path_of(id).to_path_buf(),
        tensor: catalog.tensor(id).name.clone(),
        what,
    };
    for (id, t) in catalog.iter() {
        let sibling = |end: &str| names.contains_key(format!("{}{end}", t.name).as_str());
        if is_fp8(t.dtype) {
            let scale = if sibling(WEIGHT_SCALE_INV) {
                Fp8Scale::BlockInv
            } else if sibling(WEIGHT_SCALE) {
                Fp8Scale::PerTensor
            } else {
                Fp8Scale::None
            };
            let dtype = t.dtype;
            return Some(found(id, QuantSign::Fp8 { dtype, scale }));
        }
        if t.dtype == Dtype::U8 && sibling(WEIGHT_SCALE_2) {
            return Some(found(id, QuantSign::Nvfp4));
        }
        if matches!(
            ScaleKind::of(&t.name),
            Some(ScaleKind::Weight | ScaleKind::Weight2 | ScaleKind::Input)
        ) {
            return Some(found(id, QuantSign::Scale));
        }
    }
    let declared = |path: PathBuf, what: QuantSign| Finding {
        path,
        tensor: String::new(),
        what,
    };
    if declared_in_config(config) {
        return Some(declared(config.path.clone(), QuantSign::DeclaredInConfig));
    }
    quant_config_file(catalog).map(|f| declared(catalog.dir.join(f), QuantSign::QuantConfigFile))
}

/// Every sign of quantization, for `inspect`: the config key, the ModelOpt file, the FP8
/// tensors and the scale tensors, each counted; empty when nothing says so.
pub fn evidence(catalog: &Catalog, config: Option<&ModelConfig>) -> Vec<String> {
    let mut evidence = Vec::new();
    if config.is_some_and(declared_in_config) {
        evidence.push(format!("config.json has {QUANTIZATION_CONFIG}"));
    }
    if quant_config_file(catalog).is_some() {
        evidence.push(format!("{HF_QUANT_CONFIG} is present"));
    }
    let f8 = catalog.tensors.iter().filter(|t| is_fp8(t.dtype)).count();
    if f8 > 0 {
        evidence.push(format!("{f8} F8 tensors"));
    }
    let scales = catalog
        .tensors
        .iter()
        .filter(|t| ScaleKind::of(&t.name).is_some())
        .count();
    if scales > 0 {
        evidence.push(format!(
            "{scales} scale tensors (_scale_inv, weight_scale, weight_scale_2, input_scale)"
        ));
    }
    evidence
}

/// The `--dequantize` plan; without it, a quantized input is refused unless `--lenient`
/// asks for the reference's behaviour (an empty plan).
///
/// # Errors
/// [`Error::Quantized`] for a refused input, or what [`plan_dequantize`] finds.
pub fn plan_for(
    catalog: &Catalog,
    config: &ModelConfig,
    options: &FromHfOptions,
) -> Result<Dequant> {
    if options.dequantize {
        return plan_dequantize(catalog, config);
    }
    match detect(catalog, config) {
        Some(found) if !options.lenient => Err(Error::Quantized {
            path: found.path,
            tensor: found.tensor,
            what: found.what,
        }),
        _ => Ok(Dequant::default()),
    }
}

/// Gives every FP8 source its scales; a tensor read from one becomes BF16 (experts keep the
/// merged dtype).
pub fn attach_scales(tensors: &mut [OutputTensor], dequant: &Dequant) {
    if dequant.scales.is_empty() {
        return;
    }
    for t in tensors {
        if let Recipe::Copy(s) = &t.recipe
            && dequant.scales.contains_key(&s.tensor)
        {
            t.recipe = Recipe::Cast(s.clone());
            t.dtype = Dtype::BF16;
        }
        let sources: &mut [Source] = match &mut t.recipe {
            Recipe::Copy(s) | Recipe::Cast(s) | Recipe::TransposeSlice { source: s, .. } => {
                std::slice::from_mut(s)
            }
            Recipe::StackTransposed { sources, .. } | Recipe::Assemble { sources, .. } => sources,
        };
        for s in sources {
            s.scale = dequant.scales.get(&s.tensor).cloned();
        }
    }
}

/// What `--dequantize` does: the scales of each FP8 weight, the scale tensors it consumes,
/// and the config rewritten as a plain BF16 checkpoint's.
#[derive(Debug, Default)]
pub struct Dequant {
    /// The scales of each FP8 weight.
    pub scales: BTreeMap<TensorId, Scale>,
    /// Scale tensors, left out of the output.
    pub consumed: BTreeSet<TensorId>,
    /// config.json without `quantization_config`; `hf_quant_config.json` left out.
    pub files: FileChanges,
}

/// Pairs every FP8 weight with its scales and checks their shapes.
///
/// # Errors
/// [`Error::Dequantize`] for NVFP4 weights, FP8 weights without scales, or scales whose
/// shape does not fit their weight.
pub fn plan_dequantize(catalog: &Catalog, config: &ModelConfig) -> Result<Dequant> {
    let names = catalog.ids_by_name();
    let block = block_size(config)?;
    let mut plan = Dequant::default();
    for (id, t) in catalog.iter() {
        let sibling = |end: &str| names.get(format!("{}{end}", t.name).as_str()).copied();
        let refuse = |problem: DequantProblem| Error::Dequantize {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
            problem,
        };
        if ScaleKind::of(&t.name).is_some() {
            plan.consumed.insert(id);
        } else if t.dtype == Dtype::U8 && sibling(WEIGHT_SCALE_2).is_some() {
            return Err(refuse(DequantProblem::Nvfp4));
        } else if is_fp8(t.dtype) && !crate::dtype::can_cast(t.dtype, Dtype::BF16) {
            return Err(refuse(DequantProblem::Fp8Format { dtype: t.dtype }));
        } else if is_fp8(t.dtype) {
            let scale = match (sibling(WEIGHT_SCALE_INV), sibling(WEIGHT_SCALE)) {
                (Some(s), _) => block_scale(catalog, t, s, block),
                (None, Some(s)) => tensor_scale(catalog, t, s),
                (None, None) => Err(DequantProblem::NoScale),
            };
            plan.scales.insert(id, scale.map_err(refuse)?);
        }
    }
    let mut json = config.json.clone();
    if let Some(map) = json
        .as_object_mut()
        .filter(|m| m.contains_key(QUANTIZATION_CONFIG))
    {
        map.remove(QUANTIZATION_CONFIG);
        let text = crate::json::to_text_pretty(&json);
        plan.files
            .replace
            .insert(PathBuf::from(crate::config::CONFIG_FILE), text);
    }
    plan.files.skip.push(PathBuf::from(HF_QUANT_CONFIG));
    Ok(plan)
}

fn block_size(config: &ModelConfig) -> Result<[u64; 2]> {
    match config
        .quantization
        .as_ref()
        .and_then(|q| q.weight_block_size.as_deref())
    {
        None => Ok(DEFAULT_BLOCK),
        Some(&[r, c]) if r > 0 && c > 0 => Ok([r, c]),
        Some(other) => Err(ConfigError::BlockSize {
            path: config.path.clone(),
            found: other.to_vec(),
        }
        .into()),
    }
}

/// The matrix view `[rows, cols]` of a weight: its first dim by the rest.
fn matrix(t: &TensorEntry) -> (u64, u64) {
    match t.shape.split_first() {
        Some((&rows, rest)) if !rest.is_empty() => (rows, crate::catalog::numel(rest)),
        _ => (1, t.numel()),
    }
}

fn scale_of(
    catalog: &Catalog,
    id: TensorId,
    cols: u64,
    block: [u64; 2],
) -> std::result::Result<Scale, DequantProblem> {
    let s = catalog.tensor(id);
    if !matches!(s.dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16) {
        return Err(DequantProblem::ScaleDtype {
            scale: s.name.clone(),
            dtype: s.dtype,
        });
    }
    Ok(Scale {
        tensor: id,
        shard: s.shard(),
        bytes: s.bytes().clone(),
        dtype: s.dtype,
        cols,
        block,
    })
}

fn block_scale(
    catalog: &Catalog,
    t: &TensorEntry,
    scale: TensorId,
    block: [u64; 2],
) -> std::result::Result<Scale, DequantProblem> {
    let (rows, cols) = matrix(t);
    let want = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
    let s = catalog.tensor(scale);
    if s.numel() != want[0] * want[1] {
        return Err(DequantProblem::BlockScaleShape {
            shape: s.shape.clone(),
            expected: want,
            block,
        });
    }
    scale_of(catalog, scale, cols, block)
}

fn tensor_scale(
    catalog: &Catalog,
    t: &TensorEntry,
    scale: TensorId,
) -> std::result::Result<Scale, DequantProblem> {
    let (rows, cols) = matrix(t);
    let s = catalog.tensor(scale);
    match s.numel() {
        1 => scale_of(catalog, scale, cols, [rows.max(1), cols.max(1)]),
        n if n == rows => scale_of(catalog, scale, cols, [1, cols.max(1)]),
        _ => Err(DequantProblem::ScaleShape {
            shape: s.shape.clone(),
        }),
    }
}
