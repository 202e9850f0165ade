//! Rules about a checkpoint as a whole (its directory, its slices, what its conversion would
//! write) rather than one header or one tensor's name: one variant per broken rule.

use std::path::PathBuf;

use crate::plan::RecipeError;

/// A broken rule about the whole input, or about the output it would give.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// More shard files than a shard id can number.
    #[error("{path}: more than 4 billion shard files")]
    TooManyShards {
        /// The checkpoint directory.
        path: PathBuf,
    },
    /// A symbolic link that resolves to itself.
    #[error("{path}: is a symbolic link loop; remove it")]
    LinkLoop {
        /// The link.
        path: PathBuf,
    },
    /// A symbolic link whose target is gone.
    #[error("{path}: is a dangling symbolic link (to {target:?}); remove it or restore its target")]
    DanglingLink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A directory link back to a directory that holds it.
    #[error("{path}: links back to a directory that holds it (a loop); remove the link")]
    DirectoryLoop {
        /// The link.
        path: PathBuf,
    },
    /// A directory link to outside the checkpoint.
    #[error(
        "{path}: links to the directory {target:?}, outside the checkpoint; nemoconv follows directory links only within it, copy the directory in instead"
    )]
    LinkOutside {
        /// The link.
        path: PathBuf,
        /// The directory it resolves to.
        target: PathBuf,
    },
    /// A FIFO, socket or device among the files to copy.
    #[error("{path}: is {kind}, not a regular file; nemoconv copies only regular files, remove it")]
    NotARegularFile {
        /// The entry.
        path: PathBuf,
        /// What it is ("a FIFO").
        kind: &'static str,
    },
    /// Two inputs would give one output name.
    #[error("{path}: two input tensors would both become {tensor:?}; rename or remove one")]
    DuplicateOutput {
        /// The checkpoint directory.
        path: PathBuf,
        /// The output name.
        tensor: String,
    },
    /// One output tensor is placed in two files.
    #[error("{path}: output tensor {tensor:?} is planned twice")]
    PlannedTwice {
        /// The checkpoint directory.
        path: PathBuf,
        /// The output name.
        tensor: String,
    },
    /// A planned tensor's recipe does not fit it (the input's sizes or dtypes disagree).
    #[error("{path}: output tensor {tensor:?}")]
    BadRecipe {
        /// The checkpoint directory.
        path: PathBuf,
        /// The output name.
        tensor: String,
        /// What does not fit (boxed: it holds three shapes).
        #[source]
        source: Box<RecipeError>,
    },
    /// A tensor split over rank files that its recipe must transpose.
    #[error(
        "{path}: tensor {tensor:?} is split over rank files and must be transposed (expert parallel with ep_shard > 1 splits experts); run nemoconv consolidate first, then from-hf on its output"
    )]
    SplitTransposed {
        /// A shard file holding a piece of it.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// The conversion would write no tensor.
    #[error("{path}: the output would hold no tensor; nothing was written")]
    EmptyOutput {
        /// The input directory.
        path: PathBuf,
    },
    /// `--exclude-regex` leaves out every tensor.
    #[error(
        "{path}: --exclude-regex {pattern:?} leaves out every tensor, so the output would hold none; nothing was written"
    )]
    AllExcluded {
        /// The input directory.
        path: PathBuf,
        /// The pattern.
        pattern: String,
    },
    /// An expert-parallel mesh with more ranks than experts.
    #[error(
        "{path}: {setting} {size} is larger than n_routed_experts ({n_experts}); every rank needs at least one expert"
    )]
    MeshTooLarge {
        /// The config file.
        path: PathBuf,
        /// Where the mesh size came from ("--ep-size").
        setting: &'static str,
        /// The mesh size.
        size: u64,
        /// E.
        n_experts: u64,
    },
    /// A directory of `rank-*` entries not all named `rank-R-of-N`.
    #[error(
        "{path}: holds directories {names:?} that are not named rank-R-of-N; give the slice directories themselves"
    )]
    SliceDirNames {
        /// The directory.
        path: PathBuf,
        /// The entries found.
        names: Vec<String>,
    },
    /// `rank-R-of-N` directories that are not the N slices of one mesh.
    #[error(
        "{path}: holds {names:?}, which are not the {size} slices of one mesh; give the slice directories themselves"
    )]
    NotOneMesh {
        /// The directory.
        path: PathBuf,
        /// The entries found.
        names: Vec<String>,
        /// The mesh size the first one names.
        size: u64,
    },
    /// Slice directories of a mesh are missing.
    #[error(
        "{path}: {} of {size} missing; every rank of the mesh is needed to merge",
        missing_ranks(missing, *size)
    )]
    MissingSliceDirs {
        /// The directory.
        path: PathBuf,
        /// The missing ranks (the first few).
        missing: Vec<u64>,
        /// The mesh size.
        size: u64,
    },
    /// Several inputs, one of which is not an expert-parallel slice.
    #[error(
        "{path}: is not an expert-parallel slice (its shards record no ep_size/ep_rank); give only slices of one checkpoint"
    )]
    NotASlice {
        /// The input directory.
        path: PathBuf,
    },
    /// A slice of another mesh than the first slice's.
    #[error(
        "{path}: is a slice of E={n_experts} over {size} ranks, unlike the first slice; give slices of one checkpoint"
    )]
    OtherMesh {
        /// The input directory.
        path: PathBuf,
        /// Its E.
        n_experts: u64,
        /// Its mesh size.
        size: u64,
    },
    /// Two inputs are the same rank.
    #[error("{path}: is rank {rank} again (also {}); give each rank once", other.display())]
    RepeatedRank {
        /// The input directory.
        path: PathBuf,
        /// The rank.
        rank: u64,
        /// The other input with this rank.
        other: PathBuf,
    },
    /// A rank of the mesh is not among the inputs.
    #[error(
        "{path}: rank {rank} of {size} is missing from the slices given; every rank is needed to merge"
    )]
    MissingRank {
        /// The first input directory.
        path: PathBuf,
        /// The missing rank.
        rank: u64,
        /// The mesh size.
        size: u64,
    },
    /// A slice NeMo saved, whose expert range is not recorded.
    #[error(
        "{path}: is an expert-parallel slice saved by NeMo (dtensor_info.json) whose rank is not recorded; make slices with `nemoconv from-hf --ep-size N --ep-rank R`, which records it"
    )]
    UnrecordedSlice {
        /// The input directory.
        path: PathBuf,
    },
    /// A slice lacks a non-expert tensor of the first slice, or holds one it lacks.
    #[error(
        "{path}: does not hold the same tensors as the first slice ({tensor:?} differs); give slices of one checkpoint"
    )]
    SliceTensors {
        /// The input directory.
        path: PathBuf,
        /// The tensor only one of them holds.
        tensor: String,
    },
    /// A non-expert tensor differs between slices.
    #[error(
        "{path}: tensor {tensor:?} differs from the first slice's; give slices of one checkpoint"
    )]
    SliceTensorDiffers {
        /// The input directory.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
}

/// `rank 1 (rank-00001-of-00003), rank 2 (...)` for a message.
fn missing_ranks(missing: &[u64], size: u64) -> String {
    missing
        .iter()
        .map(|&r| format!("rank {r} ({})", crate::convert::slice_dir_name(r, size)))
        .collect::<Vec<_>>()
        .join(", ")
}
