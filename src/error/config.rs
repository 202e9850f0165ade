//! What can be wrong with a `config.json`: one variant per failure, each naming the file.

use std::path::PathBuf;

/// A `config.json` that is missing, not JSON, or lacks or misstates a field the conversion needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read the model config; every checkpoint needs its config.json")]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("{path}: not valid JSON")]
    Json {
        /// The config file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: crate::json::JsonError,
    },
    /// The JSON is not an object.
    #[error("{path}: must be a JSON object of model settings, found {found}")]
    NotAnObject {
        /// The config file.
        path: PathBuf,
        /// What kind of JSON value it is ("an array").
        found: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("{path}: not a valid config")]
    Fields {
        /// The config file.
        path: PathBuf,
        /// serde's error, naming the field.
        #[source]
        source: serde_json::Error,
    },
    /// `hybrid_override_pattern` holds a letter that is no layer kind.
    #[error(
        "{path}: hybrid_override_pattern {pattern:?}: letter {letter:?} at layer {layer} is not one of M * - E"
    )]
    PatternLetter {
        /// The config file.
        path: PathBuf,
        /// The whole pattern.
        pattern: String,
        /// The letter.
        letter: char,
        /// Its layer index.
        layer: usize,
    },
    /// `layers_block_type` holds a name that is no layer kind.
    #[error(
        "{path}: layers_block_type[{layer}] = {found:?} is not one of mamba, attention, mlp, moe"
    )]
    BlockType {
        /// The config file.
        path: PathBuf,
        /// The layer index.
        layer: usize,
        /// The name found.
        found: String,
    },
    /// `num_hidden_layers` disagrees with the pattern's length (issue 11, item 16).
    #[error(
        "{path}: num_hidden_layers is {num_hidden_layers} but the layer pattern has {n_layers} layers; fix config.json so they agree"
    )]
    LayerCount {
        /// The config file.
        path: PathBuf,
        /// The field's value.
        num_hidden_layers: u64,
        /// The pattern's length.
        n_layers: usize,
    },
    /// `torch_dtype` names a dtype nemoconv does not know.
    #[error(
        "{path}: torch_dtype {name:?} is not a dtype nemoconv knows; use bfloat16, float16 or float32"
    )]
    UnknownDtype {
        /// The config file.
        path: PathBuf,
        /// The name found.
        name: String,
    },
    /// `torch_dtype` is not a string.
    #[error("{path}: torch_dtype must be a string, found {found}")]
    DtypeNotString {
        /// The config file.
        path: PathBuf,
        /// The value found, as JSON.
        found: serde_json::Value,
    },
    /// A field the conversion needs is absent.
    #[error("{path}: field {field:?} is missing; it is needed {why}")]
    MissingField {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What it is needed for ("to merge experts").
        why: &'static str,
    },
    /// No family converts this `model_type`.
    #[error(
        "{path}: model_type {model_type:?} is not supported; nemoconv converts {supported:?} checkpoints"
    )]
    UnsupportedModelType {
        /// The config file.
        path: PathBuf,
        /// The `model_type` found.
        model_type: String,
        /// The one that is converted.
        supported: &'static str,
    },
    /// `quantization_config.weight_block_size` is not two positive numbers.
    #[error("{path}: quantization_config.weight_block_size {found:?} is not two positive numbers")]
    BlockSize {
        /// The config file.
        path: PathBuf,
        /// The sizes found.
        found: Vec<u64>,
    },
}
