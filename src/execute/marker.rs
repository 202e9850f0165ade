//! The markers workers of a spread run leave (`.nemoconv-worker-K-of-M`, JSON), and the check
//! `finalize` makes of them: every worker finished the same plan in the same split mode, and
//! together their byte ranges cover every byte of every output file exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::spread::{Split, Worker};
use crate::error::{Error, MarkerProblem, OutputError, Result};

/// Names of the markers workers leave: `.nemoconv-worker-K-of-M`.
pub const MARKER_PREFIX: &str = ".nemoconv-worker-";

/// Unfinished workers named by `finalize`'s refusal; the others are counted.
const SHOWN_MISSING: usize = 16;

/// Version of the marker's layout; a marker of another version is refused.
const FORMAT: u32 = 1;

/// One output file of the run: its path below the work directory and its final size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutFile {
    /// Path below the work directory (`rank-.../model-...safetensors` for a slice).
    pub path: String,
    /// Final size in bytes.
    pub len: u64,
}

/// Bytes `offset..offset + len` of `file` (an index into the marker's files) that a worker
/// wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Index into [`Marker::files`].
    pub file: usize,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// What one worker leaves when its share is written and synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// [`FORMAT`].
    pub format: u32,
    /// Digest of the plan (see `spread::digest`), hex.
    pub plan: String,
    /// This worker, `< workers`.
    pub worker: usize,
    /// How many workers share the run.
    pub workers: usize,
    /// How the work was divided.
    pub split: Split,
    /// Every output file of the run (the same list in every marker).
    pub files: Vec<OutFile>,
    /// What this worker wrote.
    pub ranges: Vec<Written>,
    /// SHA-256 of the fields above: a marker cut short or edited is refused.
    pub digest: String,
}

impl Marker {
    /// The marker of `worker`, with its digest.
    pub fn new(plan: u64, worker: Worker, files: Vec<OutFile>, ranges: Vec<Written>) -> Marker {
        let mut marker = Marker {
            format: FORMAT,
            plan: format!("{plan:016x}"),
            worker: worker.index,
            workers: worker.count,
            split: worker.split,
            files,
            ranges,
            digest: String::new(),
        };
        marker.digest = marker.own_digest();
        marker
    }

    /// The share of the worker that left this marker.
    fn share(&self) -> Worker {
        Worker {
            index: self.worker,
            count: self.workers,
            split: self.split,
        }
    }

    /// The file name of worker `k` of `m`'s marker.
    pub fn file_name(k: usize, m: usize) -> String {
        format!("{MARKER_PREFIX}{k}-of-{m}")
    }

    /// The marker as the bytes written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a marker always serializes");
        text.push(b'\n');
        text
    }

    /// SHA-256 (hex) over the compact JSON of the marker's value with an empty digest (keys
    /// sorted, as `serde_json::Value` keeps them), so any tool can recompute it. The written data
    /// itself is not hashed: that would read every output byte again, as long as the run
    /// itself on a cold cache; `finalize` checks the shards' headers and sizes instead.
    fn own_digest(&self) -> String {
        let body = Marker {
            digest: String::new(),
            ..self.clone()
        };
        let value = serde_json::to_value(body).expect("a marker always serializes");
        let sum = Sha256::digest(value.to_string().as_bytes());
        sum.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Reads every worker's marker in `dir` and checks that all of workers `0..M` finished the
/// same plan in the same mode and that their ranges cover every output file exactly; gives
/// the output files and the markers' paths.
///
/// # Errors
/// [`OutputError`] naming the work directory, a marker or an output file, and what is
/// missing or disagrees.
pub fn check(dir: &Path) -> Result<(Vec<OutFile>, Vec<PathBuf>)> {
    let markers = read_all(dir)?;
    let Some((_, first)) = markers.first() else {
        return Err(OutputError::NoWorkerFinished {
            path: dir.to_path_buf(),
        }
        .into());
    };
    for (path, m) in &markers {
        if (m.plan.as_str(), m.workers, m.split)
            != (first.plan.as_str(), first.workers, first.split)
            || m.files != first.files
        {
            return Err(OutputError::WorkersDisagree {
                path: path.clone(),
                work_dir: dir.to_path_buf(),
                output: super::spread::output_of(dir),
                first: first.share(),
                other: m.share(),
            }
            .into());
        }
    }
    let count = first.workers;
    let present: BTreeSet<usize> = markers
        .iter()
        .map(|(_, m)| m.worker)
        .filter(|&k| k < count)
        .collect();
    if present.len() < count {
        // Lazily: a worker count can be absurd (`--worker 0/18446744073709551615`).
        let missing = (0..count)
            .filter(|k| !present.contains(k))
            .take(SHOWN_MISSING)
            .collect();
        return Err(OutputError::WorkersUnfinished {
            path: dir.to_path_buf(),
            missing,
            unfinished: count - present.len(),
            count,
        }
        .into());
    }
    let files = first.files.clone();
    check_cover(dir, &files, &markers)?;
    Ok((files, markers.into_iter().map(|(p, _)| p).collect()))
}

/// Every marker in `dir`, checked against its own digest, by worker.
fn read_all(dir: &Path) -> Result<Vec<(PathBuf, Marker)>> {
    let mut markers = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(Error::io(dir, "list work directory"))?
        .flatten()
    {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(MARKER_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(&path).map_err(Error::io(&path, "read"))?;
        let damaged = |problem: MarkerProblem| OutputError::DamagedMarker {
            path: path.clone(),
            problem,
        };
        let marker: Marker =
            serde_json::from_slice(&bytes).map_err(|e| damaged(MarkerProblem::Json(e)))?;
        if marker.format != FORMAT {
            return Err(damaged(MarkerProblem::Format {
                found: marker.format,
                expected: FORMAT,
            })
            .into());
        }
        if marker.digest != marker.own_digest() {
            return Err(damaged(MarkerProblem::Digest).into());
        }
        if path.file_name() != Some(Marker::file_name(marker.worker, marker.workers).as_ref()) {
            return Err(damaged(MarkerProblem::Misnamed {
                index: marker.worker,
                count: marker.workers,
            })
            .into());
        }
        markers.push((path, marker));
    }
    markers.sort_by_key(|(_, m)| m.worker);
    Ok(markers)
}

/// The markers' ranges, file by file, cover `0..len` of every file exactly once, and every
/// file is there (under its name or `.partial`) with its final size.
fn check_cover(dir: &Path, files: &[OutFile], markers: &[(PathBuf, Marker)]) -> Result<()> {
    let mut by_file: BTreeMap<usize, Vec<(u64, u64, usize)>> = BTreeMap::new();
    for (path, m) in markers {
        for r in &m.ranges {
            if r.file >= files.len() {
                return Err(OutputError::DamagedMarker {
                    path: path.clone(),
                    problem: MarkerProblem::NoSuchFile {
                        file: r.file,
                        files: files.len(),
                    },
                }
                .into());
            }
            by_file
                .entry(r.file)
                .or_default()
                .push((r.offset, r.len, m.worker));
        }
    }
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(&file.path);
        let gap = |from: u64, to: u64| OutputError::BytesUnwritten {
            path: path.clone(),
            from,
            to,
            len: file.len,
        };
        let mut ranges = by_file.remove(&i).unwrap_or_default();
        ranges.sort_unstable();
        let mut at = 0;
        for (offset, len, worker) in ranges {
            if offset > at {
                return Err(gap(at, offset).into());
            }
            if offset < at {
                return Err(OutputError::BytesTwice {
                    path: path.clone(),
                    from: offset,
                    to: at.min(offset + len),
                    worker,
                }
                .into());
            }
            at = offset + len;
        }
        if at != file.len {
            return Err(gap(at.min(file.len), file.len).into());
        }
        let found = [partial(&path), path.clone()]
            .into_iter()
            .find_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.len())));
        match found {
            Some((_, len)) if len == file.len => {}
            Some((p, len)) => {
                return Err(OutputError::WrongSize {
                    path: p,
                    len,
                    planned: file.len,
                }
                .into());
            }
            None => return Err(OutputError::FileMissing { path }.into()),
        }
    }
    Ok(())
}

/// Where a shard is written until it is complete: `NAME.partial`.
pub fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    name.into()
}
