//! `consolidate`: a NeMo Automodel training checkpoint (rank shard files + `.hf_metadata/`)
//! → the HF checkpoint the reference's offline tool writes (DCP-FORMAT §3), byte for byte
//! where the reference is right, refusing what it silently damages. The rules here are the
//! format's (file mapping, dtype mapping, output style), not a model family's; the pieces
//! are read by [`crate::catalog::dcp`] and placed by the executor.

pub mod dtypes;
pub mod metadata;
pub mod output;
pub mod pyjson;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::catalog::dcp::HF_METADATA_DIR;
use crate::catalog::{Catalog, INDEX_FILE, TensorEntry, TensorId};
use crate::config::CONFIG_FILE;
use crate::convert::{Planned, Report};
use crate::dtype;
use crate::error::{Error, MappingProblem, Result};
use crate::execute::Progress;
use crate::options::ConsolidateOptions;
use crate::plan::{Extras, OutputTensor, Plan, Recipe, Slot, Source};

pub use metadata::HfMetadata;

/// A planned consolidation and what it decided beyond the plan.
#[derive(Debug)]
pub struct Consolidation {
    /// The catalog and the one plan.
    pub planned: Planned,
    /// Names missing from the dtype mapping that were given a dtype by completion.
    pub completed: Vec<String>,
}

/// What a finished consolidation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Consolidated {
    /// Tensors, bytes, files, time; mapped names dropped under `--lenient`.
    pub report: Report,
    /// Names whose dtype was completed (see [`dtypes::complete`]).
    pub completed: Vec<String>,
}

/// Reads the training checkpoint in `dir` and plans its consolidation, writing nothing.
/// Uses `options.cast_dtype` (`--dtype`) and `options.lenient`.
///
/// # Errors
/// Every refusal of what the reference silently damages, naming file, tensor and range: `.hf_metadata/` missing, a
/// shard without DCP metadata, pieces that overlap, leave gaps or disagree in dtype, an
/// input tensor the mapping lacks, mapped tensors no shard holds (unless lenient), a dtype
/// that cannot be converted.
pub fn plan(dir: &Path, options: &ConsolidateOptions) -> Result<Consolidation> {
    let meta = HfMetadata::open(dir)?;
    let catalog = Catalog::open_dcp(dir)?;
    let dropped = check_mapping(&catalog, &meta, options.lenient)?;
    let held: BTreeMap<&str, (TensorId, &TensorEntry)> = catalog
        .iter()
        .map(|(id, t)| (t.name.as_str(), (id, t)))
        .collect();
    let (dtype_map, completed) = dtype_mapping(&meta, &catalog, options.lenient);
    let n_files = meta.file_index.values().copied().max().unwrap_or(0);
    let mut files: BTreeMap<u64, Vec<OutputTensor>> = BTreeMap::new();
    for (name, &index) in &meta.file_index {
        let Some(&(id, t)) = held.get(name.as_str()) else {
            continue;
        };
        let mapped = dtype_map.get(name).copied();
        let out = output_tensor(&catalog, id, t, mapped, options.cast_dtype)?;
        files.entry(index).or_default().push(out);
    }
    let files: Vec<(String, Vec<OutputTensor>)> = files
        .into_iter()
        .map(|(i, tensors)| (output::file_name(i, n_files), tensors))
        .collect();
    let extras = extras(&catalog, &meta, &files, dropped, options)?;
    let plan = Plan::placed(&catalog, files, &output::encode_header, extras)?;
    Ok(Consolidation {
        planned: Planned {
            catalog,
            plans: vec![(PathBuf::new(), plan)],
        },
        completed,
    })
}

/// Checks the training checkpoint's tensors against its file-index mapping: every tensor
/// must be mapped, and every mapped name held unless `lenient`; gives the mapped names no
/// shard holds (dropped under `lenient`).
///
/// # Errors
/// [`Error::Unmapped`] naming the shard file and tensor, [`Error::MissingMapped`].
pub fn check_mapping(catalog: &Catalog, meta: &HfMetadata, lenient: bool) -> Result<Vec<String>> {
    let mapping = meta.file_index_path();
    if let Some((id, t)) = catalog
        .iter()
        .find(|(_, t)| !meta.file_index.contains_key(&t.name))
    {
        return Err(Error::Unmapped {
            path: catalog.path_of(id).to_path_buf(),
            tensor: t.name.clone(),
            mapping,
        });
    }
    let held: std::collections::BTreeSet<&str> =
        catalog.tensors.iter().map(|t| t.name.as_str()).collect();
    let dropped: Vec<String> = meta
        .file_index
        .keys()
        .filter(|n| !held.contains(n.as_str()))
        .cloned()
        .collect();
    if let (false, Some(first)) = (lenient, dropped.first()) {
        return Err(Error::MissingMapped {
            path: mapping,
            tensor: first.clone(),
            n_missing: dropped.len(),
        });
    }
    Ok(dropped)
}

/// Consolidates the training checkpoint in `dir` into a new HF checkpoint at `output`, which
/// appears only when complete (or, as a worker, in the shared work directory).
///
/// # Errors
/// As [`plan`], or an output failure (nothing is left behind).
pub fn consolidate(
    dir: &Path,
    output: &Path,
    options: &ConsolidateOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Consolidated> {
    let Consolidation { planned, completed } = plan(dir, options)?;
    let summary =
        crate::convert::execute_planned(&planned, output, &options.run, progress, cancel)?;
    let dropped = planned.plans[0].1.dropped.clone();
    Ok(Consolidated {
        report: Report { summary, dropped },
        completed,
    })
}

/// Gives every tensor of `catalog` the dtype its consolidation would have (§3.3 without a
/// cast, the mapping completed unless `lenient`), so a plan made from the catalog is the plan
/// of the consolidated checkpoint; returns the stored dtypes by tensor index, which the
/// sources must read ([`crate::plan::assemble_split`]).
pub fn take_original_dtypes(
    catalog: &mut Catalog,
    meta: &HfMetadata,
    lenient: bool,
) -> Vec<dtype::Dtype> {
    let (map, _) = dtype_mapping(meta, catalog, lenient);
    let stored: Vec<dtype::Dtype> = catalog.tensors.iter().map(|t| t.dtype).collect();
    for t in &mut catalog.tensors {
        let out = dtypes::output_dtype(t.dtype, map.get(&t.name).copied(), None);
        if out == t.dtype || dtype::can_cast(t.dtype, out) {
            t.dtype = out;
        }
    }
    stored
}

/// The dtype mapping to apply: the file's, completed unless `lenient`; and the completed names.
fn dtype_mapping(
    meta: &HfMetadata,
    catalog: &Catalog,
    lenient: bool,
) -> (BTreeMap<String, dtype::Dtype>, Vec<String>) {
    let Some(map) = &meta.dtypes else {
        return (BTreeMap::new(), Vec::new());
    };
    if lenient {
        return (map.clone(), Vec::new());
    }
    let extra = dtypes::complete(map, catalog.tensors.iter().map(|t| t.name.as_str()));
    let completed = extra.keys().cloned().collect();
    let mut all = map.clone();
    all.extend(extra);
    (all, completed)
}

/// One output tensor: its pieces placed into their slots, in the dtype of §3.3.
fn output_tensor(
    catalog: &Catalog,
    id: TensorId,
    t: &TensorEntry,
    mapped: Option<dtype::Dtype>,
    cast: Option<dtype::Dtype>,
) -> Result<OutputTensor> {
    let out = dtypes::output_dtype(t.dtype, mapped, cast);
    let first = &t.pieces[0];
    if out != t.dtype && !dtype::can_cast(t.dtype, out) {
        return Err(Error::UnsupportedCast {
            path: catalog.shard(first.shard).path.clone(),
            tensor: t.name.clone(),
            from: t.dtype.to_string(),
            to: out.to_string(),
        });
    }
    let sources = t
        .pieces
        .iter()
        .map(|p| Source {
            tensor: id,
            shard: p.shard,
            bytes: p.bytes.clone(),
            dtype: t.dtype,
            scale: None,
        })
        .collect();
    let slots = t
        .pieces
        .iter()
        .map(|p| Slot {
            shape: p.shape.clone(),
            offset: p.offset.clone(),
        })
        .collect();
    Ok(OutputTensor {
        name: t.name.clone(),
        dtype: out,
        shape: t.shape.clone(),
        recipe: Recipe::Assemble { sources, slots },
    })
}

/// The files beside the tensors: `.hf_metadata/` copied except the two mappings (with
/// `config.json` rewritten after a cast) and the reference's index.
fn extras(
    catalog: &Catalog,
    meta: &HfMetadata,
    files: &[(String, Vec<OutputTensor>)],
    dropped: Vec<String>,
    options: &ConsolidateOptions,
) -> Result<Extras> {
    let mut copy_files: Vec<PathBuf> = catalog
        .other_files
        .iter()
        .filter_map(|p| p.strip_prefix(HF_METADATA_DIR).ok())
        .filter(|rel| !metadata::is_mapping(rel))
        .map(Path::to_path_buf)
        .collect();
    let mut written_files = BTreeMap::new();
    if let Some(cast) = options.cast_dtype
        && copy_files.iter().any(|f| f == Path::new(CONFIG_FILE))
    {
        let path = meta.dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path, "read"))?;
        let bytes = output::cast_config(&text, cast).ok_or_else(|| Error::BadHfMetadata {
            path: path.clone(),
            problem: MappingProblem::ConfigNotAnObject,
        })?;
        copy_files.retain(|f| f != Path::new(CONFIG_FILE));
        written_files.insert(PathBuf::from(CONFIG_FILE), bytes);
    }
    // DCP-FORMAT §3.6: names in first appearance over the inputs, total in output dtypes.
    let file_of: BTreeMap<&str, (&str, u64)> = files
        .iter()
        .flat_map(|(file, tensors)| {
            tensors.iter().map(move |t| {
                let len = t.len_bytes().unwrap_or(0);
                (t.name.as_str(), (file.as_str(), len))
            })
        })
        .collect();
    let weight_map: Vec<(String, String)> = catalog
        .tensors
        .iter()
        .filter_map(|t| {
            let (file, _) = file_of.get(t.name.as_str())?;
            Some((t.name.clone(), file.to_string()))
        })
        .collect();
    let total: u64 = file_of.values().map(|(_, len)| len).sum();
    written_files.insert(
        PathBuf::from(INDEX_FILE),
        output::index_json(total, &weight_map),
    );
    Ok(Extras {
        copy_from: PathBuf::from(HF_METADATA_DIR),
        copy_files,
        written_files,
        dropped,
    })
}
