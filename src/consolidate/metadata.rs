//! `.hf_metadata/` of a training checkpoint (DCP-FORMAT §2): the file-index mapping (which
//! output file each tensor goes to), the original-dtype mapping, and the other files
//! (config, generation config, tokenizer) that the output gets as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::dcp::HF_METADATA_DIR;
use crate::dtype::Dtype;
use crate::error::{Error, MappingProblem, Result};

/// Tensor name → 1-based output file index.
pub const FILE_INDEX_MAPPING: &str = "fqn_to_file_index_mapping.json";
/// Tensor name → original safetensors dtype; written only when non-empty.
pub const DTYPE_MAPPING: &str = "fqn_to_dtype_mapping.json";

/// What `.hf_metadata/` tells consolidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfMetadata {
    /// The `.hf_metadata/` directory, for messages.
    pub dir: PathBuf,
    /// Tensor name → 1-based output file index, in name order (the order the reference's
    /// sorted JSON gives).
    pub file_index: BTreeMap<String, u64>,
    /// Tensor name → original dtype; None without the file.
    pub dtypes: Option<BTreeMap<String, Dtype>>,
}

impl HfMetadata {
    /// The path of the file-index mapping, for messages.
    pub fn file_index_path(&self) -> PathBuf {
        self.dir.join(FILE_INDEX_MAPPING)
    }

    /// Reads `.hf_metadata/` of the training checkpoint `model_dir`.
    ///
    /// # Errors
    /// [`Error::NoHfMetadata`] without the directory, [`Error::BadHfMetadata`] for a missing
    /// or invalid mapping, naming the tensor at fault.
    pub fn open(model_dir: &Path) -> Result<HfMetadata> {
        let dir = model_dir.join(HF_METADATA_DIR);
        if !dir.is_dir() {
            return Err(Error::NoHfMetadata {
                path: model_dir.to_path_buf(),
            });
        }
        let index_path = dir.join(FILE_INDEX_MAPPING);
        if !index_path.is_file() {
            return Err(Error::BadHfMetadata {
                path: index_path,
                problem: MappingProblem::Missing,
            });
        }
        let file_index =
            parse_file_index(&read(&index_path)?).map_err(|problem| Error::BadHfMetadata {
                path: index_path.clone(),
                problem,
            })?;
        let dtype_path = dir.join(DTYPE_MAPPING);
        let dtypes = if dtype_path.is_file() {
            Some(
                parse_dtypes(&read(&dtype_path)?).map_err(|problem| Error::BadHfMetadata {
                    path: dtype_path.clone(),
                    problem,
                })?,
            )
        } else {
            None
        };
        Ok(HfMetadata {
            dir,
            file_index,
            dtypes,
        })
    }
}

/// Whether a file of `.hf_metadata/` (relative to it) is one of the two mappings, which the
/// output does not get.
pub fn is_mapping(rel: &Path) -> bool {
    rel == Path::new(FILE_INDEX_MAPPING) || rel == Path::new(DTYPE_MAPPING)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io(path, "read"))
}

/// Parses the file-index mapping: a JSON object of positive integers.
///
/// # Errors
/// [`MappingProblem`] naming the tensor whose value is not a positive integer.
pub fn parse_file_index(text: &str) -> std::result::Result<BTreeMap<String, u64>, MappingProblem> {
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(MappingProblem::Json)?;
    raw.into_iter()
        .map(|(tensor, value)| match value.as_u64() {
            Some(i) if i >= 1 => Ok((tensor, i)),
            _ => Err(MappingProblem::FileIndex { tensor, value }),
        })
        .collect()
}

/// Parses the dtype mapping: a JSON object of safetensors dtype names.
///
/// # Errors
/// [`MappingProblem`] naming the tensor whose dtype is unknown.
pub fn parse_dtypes(text: &str) -> std::result::Result<BTreeMap<String, Dtype>, MappingProblem> {
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(MappingProblem::Json)?;
    raw.into_iter()
        .map(
            |(tensor, value)| match serde_json::from_value::<Dtype>(value.clone()) {
                Ok(dtype) => Ok((tensor, dtype)),
                Err(_) => Err(MappingProblem::Dtype { tensor, value }),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_indices_must_be_positive_integers() {
        assert_eq!(
            parse_file_index(r#"{"a": 1, "b": 3}"#).unwrap(),
            BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 3)])
        );
        for bad in [
            r#"{"a": 0}"#,
            r#"{"a": -1}"#,
            r#"{"a": "1"}"#,
            r#"{"a": 1.5}"#,
        ] {
            let err = parse_file_index(bad).unwrap_err();
            assert!(
                matches!(&err, MappingProblem::FileIndex { tensor, .. } if tensor == "a"),
                "{err}"
            );
        }
        assert!(parse_file_index("[1]").is_err());
    }

    #[test]
    fn dtype_names_are_safetensors_names() {
        assert_eq!(
            parse_dtypes(r#"{"a": "BF16", "b": "F32"}"#).unwrap(),
            BTreeMap::from([
                ("a".to_string(), Dtype::BF16),
                ("b".to_string(), Dtype::F32)
            ])
        );
        assert!(matches!(
            parse_dtypes(r#"{"a": "bfloat16"}"#),
            Err(MappingProblem::Dtype { tensor, .. }) if tensor == "a"
        ));
    }
}
