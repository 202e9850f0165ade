//! What can be wrong with `model.safetensors.index.json`, alone or against the shards.

use std::path::PathBuf;

/// An index that is invalid or disagrees with the shard files; each variant names the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The index is not JSON.
    #[error("{path}: not a valid index")]
    Json {
        /// The index file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: crate::json::JsonError,
    },
    /// The JSON is not an index (no `weight_map`, a value of the wrong type).
    #[error("{path}: not a valid index")]
    Fields {
        /// The index file.
        path: PathBuf,
        /// serde's error, naming the field.
        #[source]
        source: serde_json::Error,
    },
    /// A tensor maps to a path rather than a file name of the directory.
    #[error(
        "{path}: not a valid index: tensor {tensor:?} maps to {file:?}, which is not a file name in this directory"
    )]
    NotAFileName {
        /// The index file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What it maps to.
        file: String,
    },
    /// A `*.safetensors` file of the directory that the index does not name.
    #[error(
        "{path}: not a valid index: {} is in the directory but not in the index; remove it or add its tensors to the index",
        stray.display()
    )]
    StrayShard {
        /// The index file.
        path: PathBuf,
        /// The shard file the index does not name.
        stray: PathBuf,
    },
    /// A shard holds a tensor the index does not list.
    #[error(
        "{path}: tensor {tensor:?}: {file} holds it but the index does not list it; the index does not match the shards, regenerate it or restore the missing files"
    )]
    Unlisted {
        /// The index file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard holding it.
        file: String,
    },
    /// The index maps a tensor to another shard than the one holding it.
    #[error(
        "{path}: tensor {tensor:?}: the index maps it to {listed} but it is in {file}; the index does not match the shards, regenerate it or restore the missing files"
    )]
    WrongShard {
        /// The index file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard the index names.
        listed: String,
        /// The shard holding it.
        file: String,
    },
    /// The index lists a tensor its shard does not hold.
    #[error(
        "{path}: tensor {tensor:?}: the index lists it in {listed} but that shard does not hold it; the index does not match the shards, regenerate it or restore the missing files"
    )]
    NotInShard {
        /// The index file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard the index names.
        listed: String,
    },
    /// The index maps a tensor to a file that does not exist.
    #[error(
        "{path}: tensor {tensor:?}: it is mapped to {file:?}, which does not exist; the index does not match the shards, regenerate it or restore the missing files"
    )]
    MissingShard {
        /// The index file.
        path: PathBuf,
        /// The first tensor mapped to it.
        tensor: String,
        /// The file name.
        file: String,
    },
    /// The index maps a tensor to something that is not a regular file.
    #[error(
        "{path}: tensor {tensor:?}: it is mapped to {file:?}, which is {kind}, not a regular file; the index does not match the shards, regenerate it or restore the missing files"
    )]
    ShardNotAFile {
        /// The index file.
        path: PathBuf,
        /// The first tensor mapped to it.
        tensor: String,
        /// The file name.
        file: String,
        /// What it is ("a directory").
        kind: &'static str,
    },
}
