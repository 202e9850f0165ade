//! The library's one error type. Every variant names the file and, where there is one, the
//! tensor, and says what to do. Nothing here prints or exits.

mod checkpoint;
mod config;
mod format;
mod index;
mod output;
mod tensor;

use std::path::PathBuf;

use crate::catalog::{Slot, Uncovered};

pub use checkpoint::CheckpointError;
pub use config::ConfigError;
pub use format::{HeaderProblem, MappingProblem, ShardingProblem};
pub use index::IndexError;
pub use output::{MarkerProblem, OutputError};
pub use tensor::{
    DequantProblem, ExpectedMerged, ExpertProblem, Fp8Scale, LayoutEvidence, PieceDifference,
    QuantSign,
};

/// Result with nemoconv's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a conversion, with the file and tensor involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on a file or directory failed.
    #[error("{path}: {action}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What nemoconv was doing ("open", "write", ...).
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The input path does not exist or is not a directory.
    #[error(
        "{path}: {}; give the checkpoint directory (it holds config.json and *.safetensors)",
        if path.exists() { "not a directory" } else { "does not exist" }
    )]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The input directory holds no safetensors file.
    #[error("{path}: no *.safetensors file found; is this a checkpoint directory?")]
    NoWeights {
        /// The directory.
        path: PathBuf,
    },
    /// A shard's header could not be read or failed safetensors' checks.
    #[error(
        "{path}: not a valid safetensors file, damaged or incomplete (download or copy it again)"
    )]
    BadShard {
        /// The shard file.
        path: PathBuf,
        /// What is wrong, from nemoconv's checks or the safetensors crate.
        #[source]
        problem: HeaderProblem,
    },
    /// A shard became shorter than its header says while nemoconv was reading it.
    #[error(
        "{path}: the file shrank while it was being read (byte {end} is needed, the file had {len_bytes} bytes when opened); another process truncated or replaced it: rerun once the checkpoint is complete"
    )]
    ShardShrank {
        /// The shard file.
        path: PathBuf,
        /// The end of the range that could not be read.
        end: u64,
        /// The file's size when it was opened.
        len_bytes: u64,
    },
    /// The same tensor name appears in two shards.
    #[error("{second}: tensor {tensor:?} is also in {first}; remove one copy")]
    DuplicateTensor {
        /// The tensor name.
        tensor: String,
        /// The shard seen first.
        first: PathBuf,
        /// The shard seen second.
        second: PathBuf,
    },
    /// `model.safetensors.index.json` is invalid or disagrees with the shards.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// `config.json` is missing, not JSON, or lacks or misstates a field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Both `backbone.` and `model.` prefixed names are present (SPEC §3.1).
    #[error(
        "{path}: tensor {tensor:?} has prefix {prefix:?} but {other:?} has {other_prefix:?}; a checkpoint must use one prefix"
    )]
    MixedPrefix {
        /// The shard holding `tensor`.
        path: PathBuf,
        /// A tensor with the first prefix.
        tensor: String,
        /// The first prefix.
        prefix: String,
        /// A tensor with the other prefix.
        other: String,
        /// The other prefix.
        other_prefix: String,
    },
    /// An expert id is not below `n_routed_experts`.
    #[error(
        "{path}: tensor {tensor:?}: expert id {id} >= n_routed_experts ({n_experts}); fix config.json or use --lenient to drop it"
    )]
    ExpertIdOutOfRange {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The expert id found.
        id: u64,
        /// `n_routed_experts` from the config.
        n_experts: u64,
    },
    /// A `layers.N` tensor with N beyond the layer pattern.
    #[error(
        "{path}: tensor {tensor:?}: layer {layer} is beyond the {n_layers} layers of the config's pattern; fix config.json or use --lenient to drop it"
    )]
    LayerOutOfRange {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The layer index found.
        layer: u64,
        /// The pattern length.
        n_layers: u64,
    },
    /// A tensor the reference drops silently (SPEC §3 table); refused unless `--lenient`.
    #[error(
        "{path}: tensor {tensor:?}: {what}, which the reference drops silently; use --lenient to drop it"
    )]
    Droppable {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What kind of tensor it is.
        what: &'static str,
    },
    /// A layer the pattern calls MoE holds no expert tensors.
    #[error(
        "{path}: layer {layer} is MoE (\"E\") in the config's pattern but holds no expert tensors; fix the pattern or use --lenient"
    )]
    MoeLayerWithoutExperts {
        /// The input directory.
        path: PathBuf,
        /// The layer index.
        layer: u64,
    },
    /// Expert biases are not supported by the reference either.
    #[error("{path}: tensor {tensor:?}: expert biases (mlp_bias) are not supported")]
    ExpertBias {
        /// The shard or config file.
        path: PathBuf,
        /// The tensor, or `mlp_bias` for the config flag.
        tensor: String,
    },
    /// Some experts of a group are absent.
    #[error(
        "{path}: tensor {tensor:?} is missing ({n_missing} expert tensors of this group are missing); the checkpoint is incomplete"
    )]
    MissingExperts {
        /// The input directory.
        path: PathBuf,
        /// The first missing tensor name.
        tensor: String,
        /// How many are missing in the group.
        n_missing: usize,
    },
    /// Experts of one group disagree in shape or dtype, or with the config.
    #[error("{path}: tensor {tensor:?}: {problem}")]
    ExpertMismatch {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What disagrees with what (boxed: it can hold two shapes).
        problem: Box<ExpertProblem>,
    },
    /// A merged expert tensor has the wrong shape for to-hf (SPEC §4.5).
    #[error("{path}: tensor {tensor:?}: shape {shape:?}, expected {expected}")]
    MergedShape {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape found.
        shape: Vec<u64>,
        /// The shape it must have.
        expected: ExpectedMerged,
    },
    /// A tensor sits in a layer whose pattern kind cannot hold it.
    #[error(
        "{path}: tensor {tensor:?}: layer {layer} is {kind} in the config's pattern, but this is a {found} tensor; the config does not match the weights"
    )]
    PatternMismatch {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The layer index.
        layer: u64,
        /// The kind the pattern gives.
        kind: &'static str,
        /// The kind the tensor name implies.
        found: &'static str,
    },
    /// The input is not in the layout the command converts from.
    #[error("{path}: {found}; this input is already converted, use `nemoconv {command}`")]
    WrongLayout {
        /// The input directory.
        path: PathBuf,
        /// What shows the layout.
        found: LayoutEvidence,
        /// The command that converts from it.
        command: &'static str,
    },
    /// to-hf was given a training checkpoint, whose names are HF names already.
    #[error(
        "{path}: is a training checkpoint (rank shards and .hf_metadata/), already in HF names; use nemoconv consolidate for an HF checkpoint, or from-hf for the internal layout"
    )]
    TrainingCheckpointToHf {
        /// The input directory.
        path: PathBuf,
    },
    /// A tensor needs a dtype conversion nemoconv does not do.
    #[error("{path}: tensor {tensor:?}: cannot convert {from} to {to}")]
    UnsupportedCast {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The stored dtype.
        from: String,
        /// The wanted dtype.
        to: String,
    },
    /// A rule about the checkpoint as a whole, not one tensor, is broken.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The output location cannot be used, or a spread run is not ready to finalize.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// `--exclude-regex` could not decide on a name (it backtracked past its limit).
    #[error("--exclude-regex {pattern:?} could not decide on {tensor:?}; simplify the pattern")]
    ExcludeRegex {
        /// The pattern.
        pattern: String,
        /// The output name being matched.
        tensor: String,
        /// The matcher's error.
        #[source]
        source: fancy_regex::Error,
    },
    /// The checkpoint is quantized and neither `--dequantize` nor `--lenient` was given.
    #[error("{path}: {}{what}: the checkpoint is quantized, and merging FP8 experts without their scales (as the reference does) corrupts them; use --dequantize to convert to BF16, or --lenient to reproduce the reference", if tensor.is_empty() { String::new() } else { format!("tensor {tensor:?}: ") })]
    Quantized {
        /// The shard or file that shows it.
        path: PathBuf,
        /// The tensor that shows it, or empty.
        tensor: String,
        /// What was found.
        what: QuantSign,
    },
    /// A quantized tensor cannot be dequantized.
    #[error("{path}: tensor {tensor:?}: {problem}")]
    Dequantize {
        /// The shard.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Why.
        problem: DequantProblem,
    },
    /// A `*.safetensors` of a DCP training checkpoint without DCP sharding metadata.
    #[error(
        "{path}: no DCP sharding metadata (__metadata__.DCP_SHARDING_INFO), so this is not a rank's shard file of a training checkpoint; move it out of the directory"
    )]
    NotDcpShard {
        /// The file.
        path: PathBuf,
    },
    /// A shard's DCP sharding metadata does not describe its tensors.
    #[error("{path}: the DCP sharding metadata is damaged")]
    BadSharding {
        /// The shard file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        #[source]
        problem: ShardingProblem,
    },
    /// Two pieces of one tensor have different dtypes or ranks.
    #[error(
        "{path}: tensor {tensor:?}: {difference} than its piece in {first}; the shard files are not of one save"
    )]
    PieceMismatch {
        /// The shard holding the disagreeing piece.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shard holding the first piece.
        first: PathBuf,
        /// What differs.
        difference: PieceDifference,
    },
    /// Two pieces of one tensor cover the same elements.
    #[error(
        "{path}: tensor {tensor:?}: piece {range} overlaps piece {other_range} in {other}; the shard files are not of one save, remove the stray one"
    )]
    PieceOverlap {
        /// The shard holding one piece.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// That piece's elements.
        range: Slot,
        /// The shard holding the other piece.
        other: PathBuf,
        /// The other piece's elements.
        other_range: Slot,
    },
    /// Part of a tensor is in no shard file.
    #[error(
        "{path}: tensor {tensor:?}: elements {range} of its shape {shape:?} are in no shard file (its pieces are in {}); a rank's shard file is missing",
        paths(held)
    )]
    PieceGap {
        /// The checkpoint directory.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Elements not covered.
        range: Uncovered,
        /// The full shape the pieces imply.
        shape: Vec<u64>,
        /// The shard files holding its pieces.
        held: Vec<PathBuf>,
    },
    /// A training checkpoint without `.hf_metadata/`.
    #[error(
        "{path}: no .hf_metadata/ directory; give the model/ directory of an Automodel checkpoint saved with model_save_format: safetensors"
    )]
    NoHfMetadata {
        /// The input directory.
        path: PathBuf,
    },
    /// A file of `.hf_metadata/` cannot be used.
    #[error("{path}: not a usable .hf_metadata file")]
    BadHfMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor where one is at fault.
        #[source]
        problem: MappingProblem,
    },
    /// A tensor the shards hold that the file-index mapping does not list.
    #[error(
        "{path}: tensor {tensor:?} is not in {mapping}, so no output file is given for it (the reference writes the data and then crashes); add it to the mapping"
    )]
    Unmapped {
        /// A shard file holding it.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The mapping file.
        mapping: PathBuf,
    },
    /// Tensors the file-index mapping lists that no shard file holds.
    #[error(
        "{path}: tensor {tensor:?} is mapped but no shard file holds it ({n_missing} mapped tensors are missing); a rank's shard file is missing, or use --lenient to drop them as the reference does"
    )]
    MissingMapped {
        /// The mapping file.
        path: PathBuf,
        /// The first missing tensor.
        tensor: String,
        /// How many mapped tensors are missing.
        n_missing: usize,
    },
    /// The run was stopped by a signal; the partial output was removed.
    #[error("interrupted by a signal; nothing was left behind")]
    Interrupted,
}

impl Error {
    /// Wraps an I/O error with the path and the action that failed.
    pub fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            path,
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests;

/// Paths joined by commas, for a message.
fn paths(list: &[PathBuf]) -> String {
    let shown: Vec<String> = list.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}
