//! The plan: every output tensor with its recipe and its place in an output shard. A plan is
//! data (printable, comparable, testable); the executor turns it into bytes. Model families
//! build plans; this module only checks model-free invariants and places tensors in shards.

mod check;
mod describe;
mod pieces;
mod shards;

pub use check::RecipeError;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

pub use describe::{PlannedTensor, describe};
pub use pieces::assemble_split;
pub use shards::{OutputShard, Placement, natural_cmp, shard_file_name};

use crate::catalog::{Catalog, ShardId, TensorId};
use crate::dtype::Dtype;
use crate::error::{CheckpointError, Result};

/// Bytes of one input tensor (or a slice of it) that a recipe reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The input tensor, for messages and dry runs.
    pub tensor: TensorId,
    /// The shard holding it.
    pub shard: ShardId,
    /// Absolute byte range in that shard.
    pub bytes: Range<u64>,
    /// Element type of those bytes.
    pub dtype: Dtype,
    /// Quantization scales to multiply the values by (`--dequantize`); None for plain data.
    pub scale: Option<Scale>,
}

/// The scales of a quantized matrix: `value[r][c] = stored[r][c] * scale[r / block_rows][c / block_cols]`.
/// One scale for the whole tensor is a single block covering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// The scale tensor, for messages and dry runs.
    pub tensor: TensorId,
    /// The shard holding the scales.
    pub shard: ShardId,
    /// Absolute byte range of the scales in that shard.
    pub bytes: Range<u64>,
    /// Element type of the scales (F32 or BF16).
    pub dtype: Dtype,
    /// Columns of the scaled matrix (its row-major width).
    pub cols: u64,
    /// Rows and columns one scale covers.
    pub block: [u64; 2],
}

/// How to produce one output tensor's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// The bytes as they are.
    Copy(Source),
    /// Each element converted to the output dtype.
    Cast(Source),
    /// Each source is a `[rows, cols]` matrix; slot `k` of the output is source `k`
    /// transposed (`[cols, rows]`), converted to the output dtype (SPEC §3.3).
    StackTransposed {
        /// One matrix per slot, in slot order.
        sources: Vec<Source>,
        /// Rows of each source matrix.
        rows: u64,
        /// Columns of each source matrix.
        cols: u64,
    },
    /// One `[rows, cols]` matrix (e.g. a row of a stacked tensor) written transposed (SPEC §4.1).
    TransposeSlice {
        /// The matrix.
        source: Source,
        /// Rows of the source matrix.
        rows: u64,
        /// Columns of the source matrix.
        cols: u64,
    },
    /// Pieces of a tensor (a DCP checkpoint's rank shards) each placed into its row-major
    /// block of the output and converted to the output dtype (DCP-FORMAT §3.4).
    Assemble {
        /// One source per piece.
        sources: Vec<Source>,
        /// Where each piece goes (same index).
        slots: Vec<Slot>,
    },
}

/// The block of the output tensor one piece fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The piece's dimensions.
    pub shape: Vec<u64>,
    /// Index of its first element in the output tensor, per dimension.
    pub offset: Vec<u64>,
}

impl Recipe {
    /// The inputs this recipe reads, in order.
    pub fn sources(&self) -> &[Source] {
        match self {
            Recipe::Copy(s) | Recipe::Cast(s) | Recipe::TransposeSlice { source: s, .. } => {
                std::slice::from_ref(s)
            }
            Recipe::StackTransposed { sources, .. } | Recipe::Assemble { sources, .. } => sources,
        }
    }
}

/// One tensor of the output checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    /// Output name.
    pub name: String,
    /// Output element type.
    pub dtype: Dtype,
    /// Output dimensions.
    pub shape: Vec<u64>,
    /// How to make its bytes.
    pub recipe: Recipe,
}

impl OutputTensor {
    /// Bytes of the output tensor, or None on overflow or a sub-byte dtype that cannot be sized.
    pub fn len_bytes(&self) -> Option<u64> {
        let numel = self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        let bits = numel.checked_mul(self.dtype.bitsize() as u64)?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

/// How a conversion changes the non-weight files it carries over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileChanges {
    /// Files written with these contents instead of copied.
    pub replace: BTreeMap<PathBuf, Vec<u8>>,
    /// Files left out.
    pub skip: Vec<PathBuf>,
}

/// What a [`Plan::placed`] plan carries besides its tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// The subdirectory of the input that `copy_files` are relative to.
    pub copy_from: PathBuf,
    /// Non-weight files to copy, relative to `copy_from`.
    pub copy_files: Vec<PathBuf>,
    /// Files written with these contents (relative paths in the output).
    pub written_files: BTreeMap<PathBuf, Vec<u8>>,
    /// Input tensor names left out on purpose.
    pub dropped: Vec<String>,
}

/// A complete, placed conversion: what to write where, and what else to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Output tensors in output order.
    pub tensors: Vec<OutputTensor>,
    /// Where each tensor of `tensors` goes (same index).
    pub placements: Vec<Placement>,
    /// Output shard files with their headers.
    pub shards: Vec<OutputShard>,
    /// The `__metadata__` every shard gets.
    pub metadata: BTreeMap<String, String>,
    /// The subdirectory of the input that `copy_files` are relative to (empty: the input
    /// itself); each is copied to the same relative path in the output.
    pub copy_from: PathBuf,
    /// Non-weight files to copy, relative to `copy_from`.
    pub copy_files: Vec<PathBuf>,
    /// Non-weight files written with new contents instead of copied (relative paths).
    pub written_files: BTreeMap<PathBuf, Vec<u8>>,
    /// Input tensor names left out on purpose (`--lenient` drops, `--exclude-regex`).
    pub dropped: Vec<String>,
}

impl Plan {
    /// Orders `tensors` by name (numbers compared as numbers), packs them into shards of at
    /// most `max_shard_bytes` and checks the result.
    ///
    /// # Errors
    /// [`CheckpointError`] when two outputs share a name or a recipe does not fit its tensor.
    pub fn new(
        catalog: &Catalog,
        mut tensors: Vec<OutputTensor>,
        metadata: BTreeMap<String, String>,
        max_shard_bytes: u64,
        dropped: Vec<String>,
        files: FileChanges,
    ) -> Result<Plan> {
        tensors.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(CheckpointError::DuplicateOutput {
                path: catalog.dir.clone(),
                tensor: w[0].name.clone(),
            }
            .into());
        }
        for t in &tensors {
            check_recipe(catalog, t)?;
        }
        let (shards, placements) = shards::pack(&tensors, &metadata, max_shard_bytes);
        Ok(Plan {
            tensors,
            placements,
            shards,
            metadata,
            copy_from: PathBuf::new(),
            copy_files: catalog
                .other_files
                .iter()
                .filter(|f| !files.skip.contains(f) && !files.replace.contains_key(*f))
                .cloned()
                .collect(),
            written_files: files.replace,
            dropped,
        })
    }

    /// A plan whose files are given: each output file's name and its tensors in file order,
    /// with headers made by `encode_header` (the 8-byte length and the JSON). Used where the
    /// output layout is a format rule, not nemoconv's choice (`consolidate`).
    ///
    /// # Errors
    /// [`CheckpointError`] when two outputs share a name or a recipe does not fit its tensor.
    pub fn placed(
        catalog: &Catalog,
        files: Vec<(String, Vec<OutputTensor>)>,
        encode_header: &dyn Fn(&[OutputTensor]) -> Vec<u8>,
        extra: Extras,
    ) -> Result<Plan> {
        let mut tensors = Vec::new();
        let mut shards = Vec::new();
        let mut placements = Vec::new();
        for (file_name, members) in files {
            let header = encode_header(&members);
            let mut offset = header.len() as u64;
            let first = tensors.len();
            for t in members {
                check_recipe(catalog, &t)?;
                placements.push(Placement {
                    shard: shards.len(),
                    offset,
                });
                offset += t.len_bytes().expect("checked by check_recipe");
                tensors.push(t);
            }
            shards.push(OutputShard {
                file_name,
                header,
                len_bytes: offset,
                tensors: (first..tensors.len()).collect(),
            });
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(CheckpointError::PlannedTwice {
                path: catalog.dir.clone(),
                tensor: w[0].to_string(),
            }
            .into());
        }
        Ok(Plan {
            tensors,
            placements,
            shards,
            metadata: BTreeMap::new(),
            copy_from: extra.copy_from,
            copy_files: extra.copy_files,
            written_files: extra.written_files,
            dropped: extra.dropped,
        })
    }

    /// Sum of all output tensor bytes.
    pub fn payload_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(OutputTensor::len_bytes)
            .sum()
    }
}

/// [`check::check_recipe`] with the output tensor and the checkpoint named.
fn check_recipe(catalog: &Catalog, t: &OutputTensor) -> Result<()> {
    check::check_recipe(t).map_err(|source| {
        CheckpointError::BadRecipe {
            path: catalog.dir.clone(),
            tensor: t.name.clone(),
            source: Box::new(source),
        }
        .into()
    })
}
