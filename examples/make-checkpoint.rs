//! Generates synthetic HF-layout NemotronV3 (`nemotron_h`) checkpoints for tests and
//! benchmarks of nemoconv: config.json, name-sorted safetensors shards with an index,
//! and small tokenizer/generation configs, with deterministic pseudo-random values.
//!
//! Shards are streamed: headers are computed from shapes, then data is generated in
//! 4 MiB buffers, so even the 12 GB preset runs in a few MiB of memory.
//!
//! With `--training-ranks N` it writes the same model as a NeMo Automodel training
//! checkpoint instead (rank shard files + `.hf_metadata/`, the input of `nemoconv consolidate`).
//!
//! ```text
//! cargo run --release --example make-checkpoint -- --preset nano-slice /tmp/nano/hf
//! cargo run --release --example make-checkpoint -- --preset nano-slice --training-ranks 8 /tmp/nano/model
//! ```

#[path = "make_checkpoint/model.rs"]
mod model;
#[path = "make_checkpoint/shards.rs"]
mod shards;
#[path = "make_checkpoint/training.rs"]
mod training;
#[path = "make_checkpoint/values.rs"]
mod values;
#[path = "make_checkpoint/writer.rs"]
mod writer;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use model::{DType, Dims, ModelSpec, TensorSpec};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Shard cap of `transformers` (5 GB, decimal).
const HF_MAX_SHARD: u64 = 5_000_000_000;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// The golden case's shapes: pattern ME*E-M, E=4, I=8, H=16, 3 shards.
    #[value(name = "tiny")]
    Tiny,
    /// Real Nano shapes with two MoE layers (pattern MEM*E), about 6.8 GB in 2 shards.
    #[value(name = "nano-slice")]
    NanoSlice,
    /// Real Nano shapes with four MoE layers (pattern MEM*EMEM*E), about 12 GB.
    #[value(name = "nano-slice-x2")]
    NanoSliceX2,
    /// About 20,000 small tensors: 74 MoE layers of 128 experts of 64 KiB (H=256, I=128).
    #[value(name = "many-tensors")]
    ManyTensors,
}

impl Preset {
    /// Shapes, layer pattern and default shard cap.
    fn base(self) -> (Dims, String, u64) {
        match self {
            Preset::Tiny => (model::TINY, "ME*E-M".into(), 7_000),
            Preset::NanoSlice => (model::NANO, "MEM*E".into(), HF_MAX_SHARD),
            Preset::NanoSliceX2 => (model::NANO, "MEM*E".repeat(2), HF_MAX_SHARD),
            Preset::ManyTensors => (model::MANY, "MEM*E".repeat(37), 500_000_000),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Prefix {
    Backbone,
    Model,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EmbeddingName {
    #[value(name = "embeddings")]
    Embeddings,
    #[value(name = "embedding")]
    Embedding,
    #[value(name = "embed_tokens")]
    EmbedTokens,
}

/// Writes a synthetic HF-layout NemotronV3 checkpoint into OUT_DIR.
#[derive(Debug, Parser)]
#[command(name = "make-checkpoint")]
struct Cli {
    /// Model shapes and layer pattern to start from.
    #[arg(long, value_enum)]
    preset: Preset,
    /// Directory to write; must be empty or missing unless --force.
    out_dir: PathBuf,
    /// Seed of the tensor values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard size cap in bytes (default: the preset's; 5e9 for the nano presets).
    #[arg(long)]
    max_shard_size: Option<u64>,
    /// Dtype of weight matrices and norms (A_log, D, dt_bias and
    /// e_score_correction_bias are always F32).
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: DType,
    /// Write dt_bias as BF16, as the real release does.
    #[arg(long)]
    dt_bias_bf16: bool,
    /// Prefix of the non-lm_head tensor names.
    #[arg(long, value_enum, default_value = "backbone")]
    prefix: Prefix,
    /// Layer pattern (hybrid_override_pattern) overriding the preset's, e.g. "ME*E-M".
    #[arg(long)]
    pattern: Option<String>,
    /// Number of routed experts overriding the preset's.
    #[arg(long)]
    experts: Option<usize>,
    /// Number of MTP layers (mtp.layers.j.*), alternating attention and MoE, ending in MoE.
    #[arg(long, default_value_t = 0)]
    mtp_layers: usize,
    /// Name of the embedding tensor: P.<NAME>.weight.
    #[arg(long, value_enum, default_value = "embeddings")]
    embedding_name: EmbeddingName,
    /// Write a single model.safetensors and no index json.
    #[arg(long)]
    no_index: bool,
    /// Overwrite the checkpoint files of a non-empty OUT_DIR.
    #[arg(long)]
    force: bool,
    /// Write a NeMo Automodel training checkpoint saved on N ranks instead (FSDP row pieces,
    /// experts whole on their rank, .hf_metadata/ with the HF layout's file mapping).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    training_ranks: Option<u64>,
}

impl Cli {
    fn model_spec(&self) -> Result<ModelSpec> {
        let (mut dims, preset_pattern, _) = self.preset.base();
        let pattern = self.pattern.clone().unwrap_or(preset_pattern);
        model::validate_pattern(&pattern)?;
        if let Some(experts) = self.experts {
            if experts == 0 {
                bail!("--experts must be at least 1");
            }
            dims.experts = experts;
        }
        let prefix = match self.prefix {
            Prefix::Backbone => "backbone",
            Prefix::Model => "model",
        };
        let embedding_name = match self.embedding_name {
            EmbeddingName::Embeddings => "embeddings",
            EmbeddingName::Embedding => "embedding",
            EmbeddingName::EmbedTokens => "embed_tokens",
        };
        Ok(ModelSpec {
            dims,
            pattern,
            dtype: self.dtype,
            prefix: prefix.into(),
            embedding_name: embedding_name.into(),
            mtp_layers: self.mtp_layers,
            dt_bias_bf16: self.dt_bias_bf16,
        })
    }

    fn max_shard_size(&self) -> Result<u64> {
        let size = self.max_shard_size.unwrap_or(self.preset.base().2);
        if size == 0 {
            bail!("--max-shard-size must be at least 1 byte");
        }
        Ok(size)
    }
}

/// Makes `dir` ready for writing: created if missing, stale checkpoint files removed
/// with --force, and an error if it holds anything otherwise.
fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !force {
            bail!(
                "{} is not empty (it holds {}); pass --force to overwrite",
                dir.display(),
                path.display()
            );
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("model") && name.contains(".safetensors") {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// config.json plus small tokenizer and generation configs (non-weight files).
fn write_side_files(dir: &Path, spec: &ModelSpec) -> Result<()> {
    write_json(&dir.join("config.json"), &model::config_json(spec))?;
    let tokenizer = json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<unk>",
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write_json(&dir.join("tokenizer_config.json"), &tokenizer)?;
    let generation = json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0});
    write_json(&dir.join("generation_config.json"), &generation)
}

/// Sorts tensors by name and groups them into shards (one shard without an index).
fn layout(mut tensors: Vec<TensorSpec>, max_shard: u64, with_index: bool) -> Vec<Vec<TensorSpec>> {
    tensors.sort_by(|a, b| shards::natural_cmp(&a.name, &b.name));
    if with_index {
        shards::plan(tensors, max_shard)
    } else {
        vec![tensors]
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let spec = cli.model_spec()?;
    let with_index = !cli.no_index;
    let shards = layout(model::tensors(&spec), cli.max_shard_size()?, with_index);
    let names = shards::file_names(shards.len(), with_index);
    let start = Instant::now();
    prepare_dir(&cli.out_dir, cli.force)?;
    if let Some(ranks) = cli.training_ranks {
        let config = model::config_json(&spec);
        training::write(
            &cli.out_dir,
            &shards,
            ranks as usize,
            spec.dims.experts,
            &config,
            cli.seed,
        )?;
        println!(
            "{}: training checkpoint of {} ranks, {} tensors, {:.2} s",
            cli.out_dir.display(),
            ranks,
            shards.iter().map(Vec::len).sum::<usize>(),
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    write_side_files(&cli.out_dir, &spec)?;
    for (shard, name) in shards.iter().zip(&names) {
        writer::write_shard(&cli.out_dir.join(name), shard, cli.seed)?;
    }
    let index = shards::index_json(&shards, &names);
    if with_index {
        write_json(&cli.out_dir.join("model.safetensors.index.json"), &index)?;
    }
    println!(
        "{}: {} tensors, {} bytes, {} shards, {:.2} s",
        cli.out_dir.display(),
        shards.iter().map(Vec::len).sum::<usize>(),
        index["metadata"]["total_size"],
        shards.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
