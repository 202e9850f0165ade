//! What is wrong inside a file nemoconv parses: a safetensors header, a shard's DCP sharding
//! metadata, a `.hf_metadata/` mapping. [`crate::Error`] carries these as the `#[source]` of
//! a variant naming the file; a parser's own error is in turn their source.

use crate::dtype::Dtype;

/// Why a safetensors header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The file cannot even hold the header length.
    #[error("the file is {len_bytes} bytes, shorter than the 8-byte header length")]
    TooShort {
        /// The file's size.
        len_bytes: u64,
    },
    /// The header length is beyond safetensors' limit.
    #[error("the header length field claims more than the 100 MB safetensors allows ({claimed})")]
    HeaderTooLarge {
        /// The claimed length.
        claimed: u64,
    },
    /// The header length is beyond the end of the file.
    #[error(
        "the header length field claims {claimed} bytes but the file has only {available} after it (truncated?)"
    )]
    HeaderLength {
        /// The claimed length.
        claimed: u64,
        /// The bytes after the length field.
        available: u64,
    },
    /// A tensor's data ends beyond the file.
    #[error(
        "tensor {tensor:?}: its data ends at byte {end} of the data section, which holds only {data_len} bytes (truncated?)"
    )]
    DataTruncated {
        /// The tensor.
        tensor: String,
        /// Where its data ends.
        end: u64,
        /// The data section's size.
        data_len: u64,
    },
    /// Bytes after the last tensor's data.
    #[error(
        "{extra} bytes follow the data of the last tensor {tensor:?} (which ends at byte {end}); the file has bytes appended"
    )]
    BytesAppended {
        /// How many.
        extra: u64,
        /// The last tensor.
        tensor: String,
        /// Where its data ends.
        end: u64,
    },
    /// The data section's size disagrees with the header, and no tensor shows how.
    #[error("the data section does not end where the header says (truncated, or bytes appended)")]
    DataEnd,
    /// A header entry that is not a tensor description.
    #[error("tensor {tensor:?}: not a valid tensor entry")]
    Entry {
        /// The entry's name.
        tensor: String,
        /// serde's error (unknown dtype, missing field ...).
        #[source]
        source: serde_json::Error,
    },
    /// A tensor whose dtype and shape disagree with its byte range.
    #[error("tensor {tensor:?}: dtype and shape do not match its byte range")]
    TensorRange {
        /// The tensor.
        tensor: String,
        /// The safetensors crate's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Data offsets that overlap, leave a gap or are out of order.
    #[error("tensor {tensor:?}: data offsets overlap, leave a gap or are out of order")]
    Offsets {
        /// The first tensor at fault.
        tensor: String,
    },
    /// Any other refusal by the safetensors crate.
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafeTensorError),
}

/// Why a shard's DCP sharding metadata does not describe its tensors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardingProblem {
    /// The metadata is not a map of `saved_offsets`.
    #[error("not a map of saved_offsets")]
    Json(#[source] serde_json::Error),
    /// A tensor of the file has no offsets.
    #[error("tensor {tensor:?} has no saved_offsets")]
    NoOffsets {
        /// The tensor.
        tensor: String,
    },
    /// Offsets with another number of dims than the piece.
    #[error(
        "tensor {tensor:?}: saved_offsets {offset:?} has {} dims but the piece's shape {shape:?} has {}",
        offset.len(),
        shape.len()
    )]
    Dims {
        /// The tensor.
        tensor: String,
        /// Its offsets.
        offset: Vec<u64>,
        /// The piece's shape.
        shape: Vec<u64>,
    },
    /// Offsets plus shape beyond 64 bits.
    #[error("tensor {tensor:?}: saved_offsets {offset:?} + shape {shape:?} overflow")]
    Overflow {
        /// The tensor.
        tensor: String,
        /// Its offsets.
        offset: Vec<u64>,
        /// The piece's shape.
        shape: Vec<u64>,
    },
    /// Offsets for a tensor the file does not hold.
    #[error("saved_offsets for tensor {tensor:?}, which the file does not hold")]
    Unheld {
        /// The tensor.
        tensor: String,
    },
    /// A split tensor of a dtype narrower than a byte.
    #[error(
        "tensor {tensor:?} is {dtype} in pieces, a sub-byte dtype that cannot be placed by element"
    )]
    SubByte {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },
}

/// Why a file of `.hf_metadata/` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingProblem {
    /// The file-index mapping is absent.
    #[error(
        "the file is missing; it says which output file each tensor goes to, restore it from the save"
    )]
    Missing,
    /// The file is not a JSON object.
    #[error("not a JSON object")]
    Json(#[source] serde_json::Error),
    /// A file index that is not a positive integer.
    #[error("tensor {tensor:?}: file index {value} is not a positive integer")]
    FileIndex {
        /// The tensor.
        tensor: String,
        /// The value found, as JSON.
        value: serde_json::Value,
    },
    /// A dtype that is no safetensors dtype name.
    #[error("tensor {tensor:?}: {value} is not a safetensors dtype name")]
    Dtype {
        /// The tensor.
        tensor: String,
        /// The value found, as JSON.
        value: serde_json::Value,
    },
    /// `config.json` is not an object, so `--dtype` cannot be written into it.
    #[error("config.json is not a JSON object, so its dtype cannot be set for --dtype")]
    ConfigNotAnObject,
}
