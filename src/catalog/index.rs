//! `model.safetensors.index.json`: parse it and cross-check it against the shards it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IndexError, Result};

/// The file name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The parsed index: which shard file holds each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// The index file, for messages.
    pub path: PathBuf,
    /// Tensor name → shard file name (relative to the checkpoint directory).
    pub weight_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Reads the index of `dir`, or None when it has none.
    ///
    /// # Errors
    /// [`Error::Io`] when it exists but cannot be read, [`IndexError`] when it is invalid.
    pub fn open(dir: &Path) -> Result<Option<ShardIndex>> {
        let path = dir.join(INDEX_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path, "read"))?;
        ShardIndex::parse(&text, &path).map(Some)
    }

    /// Parses index text; `path` is only used in messages.
    ///
    /// # Errors
    /// [`IndexError`] for invalid JSON, a missing `weight_map` or a shard name that is a path.
    pub fn parse(text: &str, path: &Path) -> Result<ShardIndex> {
        let json = crate::json::parse(text).map_err(|source| IndexError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawIndex = serde_json::from_value(json).map_err(|source| IndexError::Fields {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some((tensor, file)) = raw.weight_map.iter().find(|(_, f)| !is_plain_file_name(f)) {
            return Err(IndexError::NotAFileName {
                path: path.to_path_buf(),
                tensor: tensor.clone(),
                file: file.clone(),
            }
            .into());
        }
        Ok(ShardIndex {
            path: path.to_path_buf(),
            weight_map: raw.weight_map,
        })
    }

    /// The distinct shard file names, sorted.
    pub fn shard_files(&self) -> Vec<String> {
        let mut files: Vec<String> = self.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        files
    }

    /// Checks that the index lists exactly the tensors the shards hold (name → shard file
    /// name), each in the shard that holds it.
    ///
    /// # Errors
    /// An [`IndexError`] naming the first tensor that disagrees.
    pub fn check(&self, held: &BTreeMap<&str, &str>) -> Result<()> {
        let path = || self.path.clone();
        for (&tensor, &file) in held {
            match self.weight_map.get(tensor) {
                None => {
                    return Err(IndexError::Unlisted {
                        path: path(),
                        tensor: tensor.to_string(),
                        file: file.to_string(),
                    }
                    .into());
                }
                Some(listed) if listed != file => {
                    return Err(IndexError::WrongShard {
                        path: path(),
                        tensor: tensor.to_string(),
                        listed: listed.clone(),
                        file: file.to_string(),
                    }
                    .into());
                }
                Some(_) => {}
            }
        }
        match self
            .weight_map
            .iter()
            .find(|(tensor, _)| !held.contains_key(tensor.as_str()))
        {
            Some((tensor, listed)) => Err(IndexError::NotInShard {
                path: path(),
                tensor: tensor.clone(),
                listed: listed.clone(),
            }
            .into()),
            None => Ok(()),
        }
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\\') && name != "." && name != ".."
}
