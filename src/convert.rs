//! The conversions as library calls: read the input, plan with its model family, execute.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::catalog::Catalog;
use crate::catalog::dcp::HF_METADATA_DIR;
use crate::config::{CONFIG_FILE, ModelConfig};
use crate::error::{CheckpointError, Error, Result};
use crate::execute::{self, Progress, Summary, Target};
use crate::family;
use crate::options::{ConvertOptions, EpSlice, ExpertParallel, RunOptions, ToHfOptions};
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

/// The plans of one run: one per output checkpoint, with its subdirectory.
#[derive(Debug)]
pub struct Planned {
    /// The input, mapped.
    pub catalog: Catalog,
    /// (subdirectory of the output, plan); the subdirectory is empty for a single output.
    pub plans: Vec<(PathBuf, Plan)>,
}

/// The subdirectory of slice `rank` of `size` in a multi-slice output.
pub fn slice_dir_name(rank: u64, size: u64) -> String {
    format!("rank-{rank:05}-of-{size:05}")
}

/// Reads the checkpoint(s) in `inputs` and plans the conversion `options` describe, writing
/// nothing. Several inputs (or one directory holding `rank-*` slices) are the slices of one
/// checkpoint.
///
/// # Errors
/// Any input problem, naming the file and tensor.
pub fn plan(inputs: &[PathBuf], options: &ConvertOptions) -> Result<Planned> {
    let direction = options.direction();
    let inputs = expand_slices(inputs)?;
    // A training checkpoint (rank shards + .hf_metadata/) converts as its consolidation would.
    let training = direction == Direction::FromHf
        && inputs.len() == 1
        && crate::catalog::dcp::is_dcp(&inputs[0]);
    if direction == Direction::ToHf
        && let Some(dir) = inputs.iter().find(|d| crate::catalog::dcp::is_dcp(d))
    {
        return Err(Error::TrainingCheckpointToHf { path: dir.clone() });
    }
    let (catalog, stored) = match options {
        ConvertOptions::FromHf(options) if training => {
            let meta = crate::consolidate::HfMetadata::open(&inputs[0])?;
            let mut catalog = Catalog::open_dcp(&inputs[0])?;
            crate::consolidate::check_mapping(&catalog, &meta, options.lenient)?;
            let stored =
                crate::consolidate::take_original_dtypes(&mut catalog, &meta, options.lenient);
            (catalog, stored)
        }
        _ => (Catalog::open_parts(&inputs)?, Vec::new()),
    };
    let config = match direction {
        _ if training => ModelConfig::open(&inputs[0].join(HF_METADATA_DIR))?,
        // The reference's internal outputs carry no config.json; to-hf then infers E and I
        // from the merged tensors (and still checks every one of them).
        Direction::ToHf if !inputs[0].join(CONFIG_FILE).exists() => {
            ModelConfig::from_json("{}", &inputs[0].join(CONFIG_FILE))?
        }
        _ => ModelConfig::open(&inputs[0])?,
    };
    let family = family::detect(&config)?;
    let plan_with = |slice: Option<EpSlice>| -> Result<Plan> {
        let mut conversion = match options {
            ConvertOptions::FromHf(o) => family.plan_from_hf(&catalog, &config, o, slice)?,
            ConvertOptions::ToHf(o) => family.plan_to_hf(&catalog, &config, o)?,
        };
        if training {
            conversion.tensors =
                crate::plan::assemble_split(&catalog, conversion.tensors, &stored)?;
        }
        let mut plan = Plan::new(
            &catalog,
            conversion.tensors,
            conversion.metadata,
            options.max_shard_bytes(),
            conversion.dropped,
            conversion.files,
        )?;
        if training {
            hf_metadata_files(&mut plan);
        }
        Ok(plan)
    };
    let plans = match options {
        ConvertOptions::FromHf(o) if matches!(o.ep, ExpertParallel::All(_)) => {
            o.ep.slices()
                .into_iter()
                .flatten()
                .map(|slice| {
                    let subdir = slice_dir_name(slice.rank(), slice.size());
                    Ok((PathBuf::from(subdir), plan_with(Some(slice))?))
                })
                .collect::<Result<_>>()?
        }
        ConvertOptions::FromHf(o) => {
            let slice = match o.ep {
                ExpertParallel::One(slice) => Some(slice),
                _ => None,
            };
            vec![(PathBuf::new(), plan_with(slice)?)]
        }
        ConvertOptions::ToHf(_) => vec![(PathBuf::new(), plan_with(None)?)],
    };
    // Issue 11, item 6: a checkpoint without tensors is no checkpoint (inspect and verify
    // refuse it), so none is written.
    if plans.iter().any(|(_, p)| p.tensors.is_empty()) {
        let path = inputs[0].clone();
        return Err(match options {
            ConvertOptions::ToHf(ToHfOptions {
                exclude: Some(re), ..
            }) => CheckpointError::AllExcluded {
                path,
                pattern: re.pattern().to_string(),
            },
            _ => CheckpointError::EmptyOutput { path },
        }
        .into());
    }
    Ok(Planned { catalog, plans })
}

/// Converts the checkpoint in `inputs` into a new checkpoint at `output`.
///
/// ```no_run
/// use std::path::{Path, PathBuf};
/// use std::sync::atomic::AtomicBool;
/// use nemoconv::{FromHfOptions, NoProgress, convert};
///
/// let options = FromHfOptions::default().into();
/// let report = convert(&[PathBuf::from("hf/")], Path::new("internal/"), &options,
///                      &NoProgress, &AtomicBool::new(false))?;
/// println!("{} tensors", report.summary.tensors);
/// # Ok::<(), nemoconv::Error>(())
/// ```
///
/// # Errors
/// Any input problem (nothing is written), or an output failure (the partial output is
/// removed; an existing `output` replaced under `force` stays as it was).
pub fn convert(
    inputs: &[PathBuf],
    output: &Path,
    options: &ConvertOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Report> {
    let planned = plan(inputs, options)?;
    let summary = execute_planned(&planned, output, options.run(), progress, cancel)?;
    let dropped = planned
        .plans
        .into_iter()
        .next()
        .map(|(_, p)| p.dropped)
        .unwrap_or_default();
    Ok(Report { summary, dropped })
}

/// Writes planned outputs into `output` on a thread pool of `run.threads`.
///
/// # Errors
/// An output failure (the partial output is removed), or [`Error::Interrupted`].
pub(crate) fn execute_planned(
    planned: &Planned,
    output: &Path,
    run: &RunOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    let targets: Vec<Target> = planned
        .plans
        .iter()
        .map(|(subdir, plan)| Target { subdir, plan })
        .collect();
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = run.threads {
        pool = pool.num_threads(n.get());
    }
    let pool = pool.build().map_err(|e| Error::Io {
        path: output.to_path_buf(),
        action: "start worker threads",
        source: std::io::Error::other(e),
    })?;
    let mut summary = pool.install(|| {
        execute::execute(
            &targets,
            &planned.catalog,
            output,
            run.force,
            run.worker,
            progress,
            cancel,
        )
    })?;
    summary.notes.extend(planned.catalog.skipped_files.iter().map(|f| {
        format!(
            "did not copy {f:?}: PyTorch weight files are not converted, the output holds the weights as safetensors"
        )
    }));
    Ok(summary)
}

/// The non-weight files of a training checkpoint's output: those of `.hf_metadata/` except
/// the two mappings, as its consolidation copies them.
fn hf_metadata_files(plan: &mut Plan) {
    plan.copy_files = plan
        .copy_files
        .iter()
        .filter_map(|p| p.strip_prefix(HF_METADATA_DIR).ok())
        .filter(|rel| !crate::consolidate::metadata::is_mapping(rel))
        .filter(|rel| !plan.written_files.contains_key(*rel))
        .map(Path::to_path_buf)
        .collect();
    plan.copy_from = PathBuf::from(HF_METADATA_DIR);
}

/// One directory holding `rank-*-of-*` slice directories and no shards stands for those slices.
fn expand_slices(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let [dir] = inputs else {
        return Ok(inputs.to_vec());
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(inputs.to_vec());
    };
    let mut slices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(dir, "list directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            return Ok(inputs.to_vec());
        }
        if name.starts_with("rank-") && entry.path().is_dir() {
            slices.push(entry.path());
        }
    }
    slices.sort();
    if slices.is_empty() {
        return Ok(inputs.to_vec());
    }
    check_slice_set(dir, &slices)?;
    Ok(slices)
}

/// The `rank-R-of-N` directories of a multi-slice output must be all N ranks of one mesh.
fn check_slice_set(dir: &Path, slices: &[PathBuf]) -> Result<()> {
    let names: Vec<String> = slices
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let path = dir.to_path_buf();
    let Some(size) = names
        .first()
        .and_then(|n| n.rsplit_once("-of-"))
        .and_then(|(_, n)| n.parse::<u64>().ok())
    else {
        return Err(CheckpointError::SliceDirNames { path, names }.into());
    };
    // A name may claim any mesh size: ranks are looked up, never all spelled out.
    let missing: Vec<u64> = (0..size)
        .filter(|&r| !names.contains(&slice_dir_name(r, size)))
        .take(names.len() + 1)
        .collect();
    match (missing.is_empty(), names.len() as u64 == size) {
        (true, true) => Ok(()),
        (true, false) => Err(CheckpointError::NotOneMesh { path, names, size }.into()),
        (false, _) => Err(CheckpointError::MissingSliceDirs {
            path,
            missing,
            size,
        }
        .into()),
    }
}
