//! The command line: clap types, parsing into domain types, and the one function that turns
//! arguments into each command's library options. Only the binary uses this file.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nemoconv::dtype::Dtype;
use nemoconv::family::nemotron_v3::HfPrefix;
use nemoconv::options::{
    ConsolidateOptions, EpSlice, ExcludeRegex, ExpertParallel, FromHfOptions, RunOptions,
    ToHfOptions, anchored_regex,
};
use nemoconv::verify::{Allow, VerifyOptions};

/// Convert NemotronV3 checkpoints between the HuggingFace and NeMo Automodel layouts.
#[derive(Debug, Parser)]
#[command(name = "nemoconv", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HF layout (backbone.* names, one tensor per expert) → internal layout (merged experts).
    #[command(
        after_help = "Example:\n  nemoconv from-hf NVIDIA-Nemotron-3-Nano-30B-A3B-BF16/ nano-internal/\n  nemoconv from-hf --dtype f32 --max-shard-size 2GiB ckpt/ out/"
    )]
    FromHf(FromHfArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  nemoconv completions bash > /etc/bash_completion.d/nemoconv"
    )]
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    #[command(after_help = "Example:\n  nemoconv man > nemoconv.1 && man ./nemoconv.1")]
    Man,
    /// Make a spread run's output visible once every worker has finished.
    #[command(
        after_help = "Example:\n  srun nemoconv from-hf --worker auto ckpt/ out/   # each task writes its share (SLURM_PROCID/SLURM_NTASKS)\n  nemoconv finalize out/"
    )]
    Finalize(FinalizeArgs),
    /// NeMo Automodel training checkpoint (rank shard files + .hf_metadata/) → HF checkpoint,
    /// as its consolidate.sh writes it.
    #[command(
        after_help = "Example:\n  nemoconv consolidate ckpt/epoch_0_step_1000/model hf-out/\n  nemoconv consolidate --dtype bf16 ckpt/epoch_0_step_1000/model hf-out/\n  srun nemoconv consolidate ckpt/epoch_0_step_1000/model hf-out/ && nemoconv finalize hf-out/"
    )]
    Consolidate(ConsolidateArgs),
    /// Internal layout (merged experts) → HF layout.
    #[command(
        after_help = "Example:\n  nemoconv to-hf nano-internal/ nano-hf/\n  nemoconv to-hf --exclude-regex '.*_extra_state.*|lm_head' nano-internal/ nano-hf/"
    )]
    #[command(override_usage = "nemoconv to-hf [OPTIONS] <IN>... <OUT>")]
    ToHf(ToHfArgs),
    /// Summarize a checkpoint: layout, layer pattern, experts, dtypes, shards and problems.
    #[command(
        after_help = "Exit status: 0 when the checkpoint could be read (problems are listed, not fatal), 1 when it cannot be read.\n\nExample:\n  nemoconv inspect NVIDIA-Nemotron-3-Nano-30B-A3B-BF16/\n  nemoconv inspect --json nano-internal/ | jq '.layout, .problems'"
    )]
    Inspect(InspectArgs),
    /// Compare two checkpoints tensor by tensor (names, dtypes, shapes, bytes), whatever their sharding.
    #[command(
        after_help = "Exit status: 0 identical, 1 different, 2 trouble (unreadable input).\n\nExample:\n  nemoconv verify --allow fp32-params orig/ roundtrip/\n  nemoconv verify --json --max-diffs 100 a/ b/ > diff.json"
    )]
    Verify(VerifyArgs),
}

/// Options both conversions take.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Largest output shard, e.g. 5GB (decimal), 2GiB (binary), 500MB or plain bytes.
    #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
    pub max_shard_size: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,
}

/// Options of every command that writes a checkpoint.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker threads [default: all cores]; at most 1024, and above 4x the cores capped to
    /// that with a note.
    #[arg(short = 'j', long = "threads", value_name = "N", value_parser = crate::launch::parse_threads)]
    pub threads: Option<NonZeroUsize>,
    /// Replace OUT if it exists (only once the new output is complete).
    #[arg(long)]
    pub force: bool,
    /// Print the plan (output names, dtypes, shapes, shards, inputs) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object on stdout: the summary at the end (or the plan with --dry-run).
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no summary line (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
    /// Write only worker K's share of the output shards, of M workers (e.g. 0/4); then run
    /// `nemoconv finalize OUT`. `auto`: K/M from RANK/WORLD_SIZE (torchrun) or
    /// SLURM_PROCID/SLURM_NTASKS (Slurm). Without --worker a run is never a worker run.
    #[arg(long, value_name = "K/M|auto", value_parser = crate::launch::parse_worker_arg)]
    pub worker: Option<crate::launch::WorkerArg>,
    /// How workers divide the run [default: bytes]: `bytes` gives each an equal share of the
    /// bytes, several workers writing into one shard file; `shards` deals whole shard files
    /// round-robin, for file systems where several hosts must not write one file.
    #[arg(long, value_name = "bytes|shards", value_parser = crate::launch::parse_split, requires = "worker")]
    pub split: Option<nemoconv::options::Split>,
}

/// `nemoconv completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `nemoconv finalize`.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// The OUT given to the workers.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Remove the workers' work directory (`.OUT.nemoconv-tmp-work`) instead, to start over.
    #[arg(long)]
    pub abandon: bool,
}

/// `nemoconv from-hf`.
#[derive(Debug, Args)]
pub struct FromHfArgs {
    /// Input checkpoint directory in HF layout.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output directory (must not exist or be empty, unless --force).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// dtype of the merged experts [default: config torch_dtype, else bf16].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Drop, and list on stderr, what the reference drops silently instead of refusing it.
    #[arg(long)]
    pub lenient: bool,
    /// Dequantize FP8 weights (ModelOpt per-tensor or block FP8) to BF16 with their scales,
    /// dropping the scale tensors. NVFP4 is refused.
    #[arg(long)]
    pub dequantize: bool,
    /// Expert-parallel mesh size: write slices of the experts (all N, in OUT/rank-*, unless --ep-rank).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ep_size: Option<u64>,
    /// Write only this rank's slice (0-based, below --ep-size).
    #[arg(long, value_name = "R", requires = "ep_size")]
    pub ep_rank: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// `nemoconv to-hf`.
#[derive(Debug, Args)]
pub struct ToHfArgs {
    /// IN...: the checkpoint in internal layout (one directory, several expert-parallel
    /// slices of one checkpoint, or the directory holding them); then OUT, the output directory.
    #[arg(value_name = "PATH", num_args = 2.., required = true)]
    pub paths: Vec<PathBuf>,
    /// Leave out output (HF) names matching this regex, anchored at the start like Python's re.match.
    #[arg(long, value_name = "RE", value_parser = parse_regex)]
    pub exclude_regex: Option<RegexArg>,
    /// HF name prefix [default: the one recorded by from-hf, else backbone].
    #[arg(long, value_enum)]
    pub hf_prefix: Option<PrefixArg>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// `nemoconv consolidate`.
#[derive(Debug, Args)]
pub struct ConsolidateArgs {
    /// The training checkpoint's model/ directory (shard-*.safetensors and .hf_metadata/).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output directory (must not exist or be empty, unless --force).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Cast regular floats to this dtype as the reference's CAST_DTYPE does (F32-mapped
    /// tensors stay F32; integer and FP8 tensors are unchanged); config.json gets
    /// torch_dtype and dtype set to it.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Reproduce the reference's bytes: original dtypes only for names the dtype mapping
    /// lists (no completion), mapped names that no shard holds dropped and listed.
    #[arg(long)]
    pub lenient: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: RunArgs,
}

/// `nemoconv inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint directory (either layout).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print a JSON object (schema 1) instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

/// `nemoconv verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The first checkpoint directory.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The second checkpoint directory.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Print a JSON object (schema 1) instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Accept a documented difference as equal; repeat or separate with commas.
    #[arg(long, value_enum, value_name = "RULE", value_delimiter = ',')]
    pub allow: Vec<AllowArg>,
    /// List at most N differences (all are counted).
    #[arg(long, value_name = "N", default_value_t = nemoconv::verify::DEFAULT_MAX_DIFFS)]
    pub max_diffs: usize,
    /// No progress bar (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--allow` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AllowArg {
    /// A_log, D, dt_bias: F32 on one side, BF16/F16 on the other, equal once widened.
    Fp32Params,
    /// Expert tensors of different dtypes, equal once the wider is rounded (RNE) to the narrower.
    ExpertDtype,
    /// `backbone.embedding.weight` and `backbone.embeddings.weight` are the same tensor.
    EmbeddingName,
}

/// `--dtype` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

impl DtypeArg {
    /// The library dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::Bf16 => Dtype::BF16,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::F32 => Dtype::F32,
        }
    }
}

/// `--hf-prefix` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrefixArg {
    /// `backbone.`, as released checkpoints use.
    Backbone,
    /// `model.`, newer transformers naming.
    Model,
}

/// A compiled `--exclude-regex` (None: the empty regex, which excludes nothing).
#[derive(Debug, Clone)]
pub struct RegexArg(pub Option<ExcludeRegex>);

fn parse_regex(text: &str) -> Result<RegexArg, String> {
    anchored_regex(text)
        .map(RegexArg)
        .map_err(|e| e.to_string())
}

/// Parses `5GB`, `500MB`, `2GiB`, `1.5TB` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?}; use e.g. 5GB, 500MB, 2GiB or a number of bytes"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size; use e.g. 5GB, 500MB, 2GiB or a number of bytes")
    })?;
    let bytes = value * factor as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!(
            "{text:?} is more than the 16 EiB a size can hold; use e.g. 5GB, 500MB or 2GiB"
        ));
    }
    if bytes.is_nan() || bytes < 1.0 {
        return Err(format!("{text:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

impl RunArgs {
    fn options(&self) -> Result<RunOptions, clap::Error> {
        let threads = crate::launch::capped_threads(self.threads, self.quiet);
        let worker = match self.worker {
            Some(crate::launch::WorkerArg::Share(w)) => Some(w),
            Some(crate::launch::WorkerArg::Auto) => crate::launch::worker_from_env()?,
            None => {
                crate::launch::note_ignored_launcher(self.quiet);
                None
            }
        }
        .map(|w| nemoconv::options::Worker {
            split: self.split.unwrap_or_default(),
            ..w
        });
        if worker.is_some() && self.force {
            return Err(usage_error(
                "--force cannot be used by workers; remove the old output before the run"
                    .to_string(),
            ));
        }
        Ok(RunOptions {
            threads,
            worker,
            force: self.force,
        })
    }
}

/// A usage error (exit code 2) in clap's format, for checks across several options.
pub fn usage_error(message: String) -> clap::Error {
    use clap::CommandFactory;
    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message)
}

/// The library options for `from-hf`.
///
/// # Errors
/// A usage error for a rank not below the mesh size, or bad launcher variables.
pub fn from_hf_options(args: &FromHfArgs) -> Result<FromHfOptions, clap::Error> {
    let ep = match (args.ep_size, args.ep_rank) {
        (Some(size), Some(rank)) => {
            ExpertParallel::One(EpSlice::new(size, rank).ok_or_else(|| {
                usage_error(format!("--ep-rank {rank} must be below --ep-size {size}"))
            })?)
        }
        (Some(size), None) => NonZeroU64::new(size)
            .map(ExpertParallel::All)
            .ok_or_else(|| usage_error("--ep-size must be at least 1".to_string()))?,
        (None, _) => ExpertParallel::None,
    };
    Ok(FromHfOptions {
        run: args.common.run.options()?,
        max_shard_bytes: args.common.max_shard_size,
        expert_dtype: args.dtype.map(DtypeArg::dtype),
        lenient: args.lenient,
        dequantize: args.dequantize,
        ep,
    })
}

/// The library options for `consolidate`.
///
/// # Errors
/// A usage error for bad launcher variables.
pub fn consolidate_options(args: &ConsolidateArgs) -> Result<ConsolidateOptions, clap::Error> {
    Ok(ConsolidateOptions {
        run: args.run.options()?,
        cast_dtype: args.dtype.map(DtypeArg::dtype),
        lenient: args.lenient,
    })
}

/// The library options for `to-hf`.
///
/// # Errors
/// A usage error for bad launcher variables.
pub fn to_hf_options(args: &ToHfArgs) -> Result<ToHfOptions, clap::Error> {
    Ok(ToHfOptions {
        run: args.common.run.options()?,
        max_shard_bytes: args.common.max_shard_size,
        hf_prefix: args.hf_prefix.map(|p| match p {
            PrefixArg::Backbone => HfPrefix::Backbone,
            PrefixArg::Model => HfPrefix::Model,
        }),
        exclude: args.exclude_regex.clone().and_then(|r| r.0),
    })
}

/// The library options for `verify`.
pub fn verify_options(args: &VerifyArgs) -> VerifyOptions {
    let has = |rule| args.allow.contains(&rule);
    VerifyOptions {
        allow: Allow {
            fp32_params: has(AllowArg::Fp32Params),
            expert_dtype: has(AllowArg::ExpertDtype),
            embedding_name: has(AllowArg::EmbeddingName),
        },
        max_diffs: args.max_diffs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
    }
}
