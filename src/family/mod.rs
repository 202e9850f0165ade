//! Model families: each turns a catalog into the output tensors of a conversion. `detect()`
//! is the one list of families; adding one is a module and an arm here.

pub mod meta;
pub mod nemotron_v3;
pub mod problems;
pub mod quant;

use std::collections::BTreeMap;

use crate::catalog::Catalog;
use crate::config::ModelConfig;
use crate::error::{ConfigError, Result};
use crate::options::{EpSlice, FromHfOptions, ToHfOptions};
use crate::plan::{FileChanges, OutputTensor};

/// Which naming scheme a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// HuggingFace names, one tensor per expert.
    Hf,
    /// NeMo Automodel's internal names, experts merged.
    Internal,
}

/// A family's answer for one conversion, before shard placement.
#[derive(Debug, Default)]
pub struct Conversion {
    /// Every output tensor with its recipe.
    pub tensors: Vec<OutputTensor>,
    /// The `__metadata__` of every output shard.
    pub metadata: BTreeMap<String, String>,
    /// Input tensors dropped under `--lenient`.
    pub dropped: Vec<String>,
    /// Non-weight files to rewrite or leave out (e.g. the quantization config after `--dequantize`).
    pub files: FileChanges,
}

/// The naming rules of one model family.
pub trait Family: Sync + std::fmt::Debug {
    /// HF layout → internal layout: all experts, or only those of `slice` (the caller turns
    /// [`crate::options::ExpertParallel`] into one call per output).
    ///
    /// # Errors
    /// Any rule the input breaks, naming the tensor.
    fn plan_from_hf(
        &self,
        catalog: &Catalog,
        config: &ModelConfig,
        options: &FromHfOptions,
        slice: Option<EpSlice>,
    ) -> Result<Conversion>;

    /// Internal layout → HF layout.
    ///
    /// # Errors
    /// Any rule the input breaks, naming the tensor.
    fn plan_to_hf(
        &self,
        catalog: &Catalog,
        config: &ModelConfig,
        options: &ToHfOptions,
    ) -> Result<Conversion>;
}

/// The family for a config's `model_type` (a config without one is taken as NemotronV3).
///
/// # Errors
/// [`ConfigError::UnsupportedModelType`] for a model type no family handles.
pub fn detect(config: &ModelConfig) -> Result<&'static dyn Family> {
    match config.model_type.as_deref() {
        None | Some(nemotron_v3::MODEL_TYPE) => Ok(&nemotron_v3::NemotronV3),
        Some(other) => Err(ConfigError::UnsupportedModelType {
            path: config.path.clone(),
            model_type: other.to_string(),
            supported: nemotron_v3::MODEL_TYPE,
        }
        .into()),
    }
}
