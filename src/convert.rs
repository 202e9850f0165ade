//! The two conversions as library calls: read the input, plan with its model family, execute.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::catalog::Catalog;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::execute::{self, Progress, Summary};
use crate::family;
use crate::options::Options;
use crate::plan::Plan;

/// Which way a conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// HuggingFace layout → internal layout (`from-hf`).
    FromHf,
    /// Internal layout → HuggingFace layout (`to-hf`).
    ToHf,
}

/// What a finished conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Tensors, bytes, shards and time written.
    pub summary: Summary,
    /// Input tensors dropped under `--lenient`.
    pub dropped: Vec<String>,
}

/// Reads the checkpoint in `input` and plans its conversion, writing nothing.
///
/// # Errors
/// Any input problem, naming the file and tensor.
pub fn plan(direction: Direction, input: &Path, options: &Options) -> Result<(Catalog, Plan)> {
    let catalog = Catalog::open(input)?;
    let config = ModelConfig::open(input)?;
    let family = family::detect(&config)?;
    let conversion = match direction {
        Direction::FromHf => family.from_hf(&catalog, &config, options)?,
        Direction::ToHf => family.to_hf(&catalog, &config, options)?,
    };
    let plan = Plan::new(
        &catalog,
        conversion.tensors,
        conversion.metadata,
        options.max_shard_bytes,
        conversion.dropped,
    )?;
    Ok((catalog, plan))
}

/// Converts the checkpoint in `input` into a new checkpoint at `output`.
///
/// ```no_run
/// use std::path::Path;
/// use std::sync::atomic::AtomicBool;
/// use nemoconv::{Direction, NoProgress, Options, convert};
///
/// let report = convert(Direction::FromHf, Path::new("hf/"), Path::new("internal/"),
///                      &Options::default(), &NoProgress, &AtomicBool::new(false))?;
/// println!("{} tensors", report.summary.tensors);
/// # Ok::<(), nemoconv::Error>(())
/// ```
///
/// # Errors
/// Any input problem (nothing is written), or an output failure (the partial output is
/// removed; an existing `output` replaced under `force` stays as it was).
pub fn convert(
    direction: Direction,
    input: &Path,
    output: &Path,
    options: &Options,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Report> {
    let (catalog, plan) = plan(direction, input, options)?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = options.threads {
        pool = pool.num_threads(n.get());
    }
    let pool = pool.build().map_err(|e| Error::Io {
        path: output.to_path_buf(),
        action: "start worker threads",
        source: std::io::Error::other(e),
    })?;
    let summary = pool
        .install(|| execute::execute(&plan, &catalog, output, options.force, progress, cancel))?;
    Ok(Report {
        summary,
        dropped: plan.dropped,
    })
}
