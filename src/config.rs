//! `config.json` as the conversion reads it (SPEC §2): the layer pattern, the expert counts and
//! the expert dtype. Parsing works on a string so it can be tested without files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dtype::{self, Dtype};
use crate::error::{ConfigError, Error, Result};

/// The name of the config file in a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

/// What one layer of the hybrid stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `M`: a Mamba-2 mixer.
    Mamba,
    /// `*`: self-attention.
    Attention,
    /// `-`: a dense MLP.
    Mlp,
    /// `E`: a mixture of experts.
    Moe,
}

/// Each layer kind with its `hybrid_override_pattern` letter and its lowercase word (the
/// `layers_block_type` spelling, and `inspect`'s): the one table of these spellings.
const SPELLINGS: [(LayerKind, char, &str); 4] = [
    (LayerKind::Mamba, 'M', "mamba"),
    (LayerKind::Attention, '*', "attention"),
    (LayerKind::Mlp, '-', "mlp"),
    (LayerKind::Moe, 'E', "moe"),
];

impl LayerKind {
    /// The pattern letter, for messages.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Mamba => "mamba (\"M\")",
            LayerKind::Attention => "attention (\"*\")",
            LayerKind::Mlp => "dense MLP (\"-\")",
            LayerKind::Moe => "MoE (\"E\")",
        }
    }

    fn spelling(self) -> (LayerKind, char, &'static str) {
        SPELLINGS
            .into_iter()
            .find(|s| s.0 == self)
            .expect("SPELLINGS lists every kind")
    }

    /// The `hybrid_override_pattern` letter: `M`, `*`, `-` or `E`.
    pub fn letter(self) -> char {
        self.spelling().1
    }

    /// The lowercase word: `mamba`, `attention`, `mlp` or `moe`.
    pub fn word(self) -> &'static str {
        self.spelling().2
    }

    fn from_letter(letter: char) -> Option<LayerKind> {
        SPELLINGS.into_iter().find(|s| s.1 == letter).map(|s| s.0)
    }

    fn from_block_type(name: &str) -> Option<LayerKind> {
        match name {
            "linear_attention" => Some(LayerKind::Mamba),
            "full_attention" => Some(LayerKind::Attention),
            _ => SPELLINGS.into_iter().find(|s| s.2 == name).map(|s| s.0),
        }
    }
}

/// The fields of `config.json` that the conversion needs, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The file this came from, for messages.
    pub path: PathBuf,
    /// `model_type`, used to pick the model family.
    pub model_type: Option<String>,
    /// One entry per layer; empty when the config gives no pattern.
    pub pattern: Vec<LayerKind>,
    /// `n_routed_experts` (E).
    pub n_routed_experts: Option<u64>,
    /// `moe_intermediate_size` (I).
    pub moe_intermediate_size: Option<u64>,
    /// `mlp_bias`: expert biases, which nobody supports.
    pub mlp_bias: bool,
    /// `torch_dtype` (or `dtype`): the dtype merged experts get.
    pub torch_dtype: Option<Dtype>,
    /// `quantization_config`, when the checkpoint declares one.
    pub quantization: Option<QuantizationConfig>,
    /// The whole file, for rewriting it (e.g. without `quantization_config`).
    pub json: serde_json::Value,
}

/// The parts of `quantization_config` nemoconv reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuantizationConfig {
    /// `quant_method`, e.g. `fp8` or `modelopt`.
    pub quant_method: Option<String>,
    /// `weight_block_size` of block-FP8 checkpoints, e.g. `[128, 128]`.
    pub weight_block_size: Option<Vec<u64>>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hybrid_override_pattern: Option<String>,
    layers_block_type: Option<Vec<String>>,
    n_routed_experts: Option<u64>,
    moe_intermediate_size: Option<u64>,
    num_hidden_layers: Option<u64>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    torch_dtype: Option<serde_json::Value>,
    dtype: Option<serde_json::Value>,
    quantization_config: Option<QuantizationConfig>,
}

impl ModelConfig {
    /// Reads `config.json` from a checkpoint directory.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing, unreadable or not a valid config.
    pub fn open(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        ModelConfig::from_json(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` is only used in messages.
    ///
    /// # Errors
    /// [`ConfigError`] for invalid JSON, a bad pattern letter or an unknown dtype.
    pub fn from_json(text: &str, path: &Path) -> Result<ModelConfig> {
        let path_buf = || path.to_path_buf();
        let json = crate::json::parse(text).map_err(|source| ConfigError::Json {
            path: path_buf(),
            source,
        })?;
        if !json.is_object() {
            return Err(ConfigError::NotAnObject {
                path: path_buf(),
                found: json_kind(&json),
            }
            .into());
        }
        let raw: RawConfig =
            serde_json::from_value(json.clone()).map_err(|source| ConfigError::Fields {
                path: path_buf(),
                source,
            })?;
        let pattern = match (&raw.hybrid_override_pattern, &raw.layers_block_type) {
            (Some(letters), _) => parse_pattern(letters, path)?,
            (None, Some(types)) => parse_block_types(types, path)?,
            (None, None) => Vec::new(),
        };
        // Issue 11, item 16: a layer count that disagrees with the pattern is a broken config.
        if let Some(n) = raw.num_hidden_layers
            && !pattern.is_empty()
            && n != pattern.len() as u64
        {
            return Err(ConfigError::LayerCount {
                path: path_buf(),
                num_hidden_layers: n,
                n_layers: pattern.len(),
            }
            .into());
        }
        let dtype_value = raw.torch_dtype.or(raw.dtype).filter(|v| !v.is_null());
        let torch_dtype = match dtype_value {
            None => None,
            Some(serde_json::Value::String(name)) => match dtype::from_torch_name(&name) {
                Some(dtype) => Some(dtype),
                None => {
                    return Err(ConfigError::UnknownDtype {
                        path: path_buf(),
                        name,
                    }
                    .into());
                }
            },
            Some(found) => {
                return Err(ConfigError::DtypeNotString {
                    path: path_buf(),
                    found,
                }
                .into());
            }
        };
        Ok(ModelConfig {
            path: path.to_path_buf(),
            model_type: raw.model_type,
            pattern,
            n_routed_experts: raw.n_routed_experts,
            moe_intermediate_size: raw.moe_intermediate_size,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            torch_dtype,
            quantization: raw.quantization_config,
            json,
        })
    }

    /// The kind of layer `layer`, or None beyond the pattern.
    pub fn layer_kind(&self, layer: u64) -> Option<LayerKind> {
        usize::try_from(layer)
            .ok()
            .and_then(|i| self.pattern.get(i).copied())
    }

    /// The number of layers: the pattern's length (SPEC §2).
    pub fn n_layers(&self) -> u64 {
        self.pattern.len() as u64
    }

    /// A [`ConfigError::MissingField`] saying that `field` is needed, and `why`.
    pub fn missing(&self, field: &'static str, why: &'static str) -> Error {
        ConfigError::MissingField {
            path: self.path.clone(),
            field,
            why,
        }
        .into()
    }
}

/// What kind of JSON value this is, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_pattern(letters: &str, path: &Path) -> Result<Vec<LayerKind>, ConfigError> {
    letters
        .chars()
        .enumerate()
        .map(|(layer, letter)| {
            LayerKind::from_letter(letter).ok_or_else(|| ConfigError::PatternLetter {
                path: path.to_path_buf(),
                pattern: letters.to_string(),
                letter,
                layer,
            })
        })
        .collect()
}

fn parse_block_types(types: &[String], path: &Path) -> Result<Vec<LayerKind>, ConfigError> {
    types
        .iter()
        .enumerate()
        .map(|(layer, t)| {
            LayerKind::from_block_type(t).ok_or_else(|| ConfigError::BlockType {
                path: path.to_path_buf(),
                layer,
                found: t.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(text, Path::new("config.json"))
    }

    #[test]
    fn hybrid_pattern_gives_one_kind_per_letter() {
        let c = parse(r#"{"hybrid_override_pattern": "ME*-", "num_hidden_layers": 4}"#).unwrap();
        use LayerKind::*;
        assert_eq!(c.pattern, vec![Mamba, Moe, Attention, Mlp]);
        assert_eq!(c.n_layers(), 4);
    }

    #[test]
    fn layers_block_type_accepts_both_spellings() {
        let c = parse(r#"{"layers_block_type": ["linear_attention","moe","full_attention","mlp","mamba","attention"]}"#).unwrap();
        use LayerKind::*;
        assert_eq!(
            c.pattern,
            vec![Mamba, Moe, Attention, Mlp, Mamba, Attention]
        );
    }

    #[test]
    fn bad_pattern_letter_is_refused() {
        assert!(matches!(
            parse(r#"{"hybrid_override_pattern": "MX"}"#),
            Err(Error::Config(ConfigError::PatternLetter { .. }))
        ));
    }

    #[test]
    fn dtype_synonym_is_read_and_missing_dtype_is_none() {
        assert_eq!(
            parse(r#"{"dtype": "float16"}"#).unwrap().torch_dtype,
            Some(Dtype::F16)
        );
        assert_eq!(
            parse(r#"{"torch_dtype": "float32"}"#).unwrap().torch_dtype,
            Some(Dtype::F32)
        );
        assert_eq!(parse(r#"{}"#).unwrap().torch_dtype, None);
    }

    #[test]
    fn num_hidden_layers_must_match_the_pattern() {
        let err = parse(r#"{"hybrid_override_pattern": "ME*-", "num_hidden_layers": 99}"#);
        assert!(matches!(
            err,
            Err(Error::Config(ConfigError::LayerCount {
                num_hidden_layers: 99,
                ..
            }))
        ));
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused_as_such() {
        let err = parse("[1, 2]");
        assert!(matches!(
            err,
            Err(Error::Config(ConfigError::NotAnObject {
                found: "an array",
                ..
            }))
        ));
    }

    #[test]
    fn invalid_json_is_refused() {
        assert!(matches!(
            parse("{"),
            Err(Error::Config(ConfigError::Json { .. }))
        ));
    }
}
