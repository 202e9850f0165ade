//! The catalog: every input tensor as a description (name, dtype, shape and the pieces that
//! hold its bytes: shard, byte range, piece shape, offset), never its bytes, plus the
//! checkpoint's other files. A tensor of an ordinary checkpoint is one whole piece; a DCP
//! training checkpoint ([`dcp`]) stores pieces spread over its rank files. Knows no model
//! naming rules.

mod coverage;
pub mod dcp;
mod index;
mod listing;
mod runs;
mod shard;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use coverage::{Slot, Uncovered, full_shape};
pub use index::{INDEX_FILE, ShardIndex};
pub use listing::kind_of;
pub(crate) use listing::list_dir;
pub use runs::{Run, runs};
pub use shard::{HEADER_LEN_BYTES, HeaderEntry, Shard, parse_header, same_bytes};

use crate::dtype::Dtype;
use crate::error::{CheckpointError, Error, IndexError, Result};

/// Index of a shard in [`Catalog::shards`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

/// Index of a tensor in [`Catalog::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorId(pub u32);

/// A row-major block of a tensor stored contiguously in one shard: the whole tensor, or one
/// rank's piece of a DCP checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The shard holding it.
    pub shard: ShardId,
    /// Absolute byte range in the shard file.
    pub bytes: Range<u64>,
    /// The piece's own dimensions.
    pub shape: Vec<u64>,
    /// Where its first element sits in the full tensor, one index per dimension.
    pub offset: Vec<u64>,
}

/// One input tensor: where its bytes are and what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions of the full tensor.
    pub shape: Vec<u64>,
    /// The pieces that together hold it, none overlapping, in storage order; one whole
    /// piece for every tensor of an ordinary checkpoint.
    pub pieces: Vec<Piece>,
    /// Which input directory (part) holds it; 0 unless several were opened together.
    pub part: usize,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        numel(&self.shape)
    }

    /// True when one piece holds the whole tensor.
    pub fn is_whole(&self) -> bool {
        matches!(&self.pieces[..], [p] if p.shape == self.shape)
    }

    /// The piece holding the whole tensor. Catalogs of ordinary checkpoints hold only whole
    /// tensors ([`Catalog::open`]); a training checkpoint's may be split, and then this is
    /// the first piece: code reading such catalogs checks [`TensorEntry::is_whole`]
    /// (`verify`, `inspect`) or replaces what was planned from it
    /// ([`crate::plan::assemble_split`]).
    pub fn whole(&self) -> &Piece {
        &self.pieces[0]
    }

    /// The shard holding the whole tensor (see [`TensorEntry::whole`]).
    pub fn shard(&self) -> ShardId {
        self.whole().shard
    }

    /// The byte range of the whole tensor (see [`TensorEntry::whole`]).
    pub fn bytes(&self) -> &Range<u64> {
        &self.whole().bytes
    }
}

/// Elements of a shape: 0 when any dim is 0 (whatever the others claim), else the product,
/// saturated (the header check guarantees real tensors fit their bytes).
pub fn numel(shape: &[u64]) -> u64 {
    if shape.contains(&0) {
        return 0;
    }
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .unwrap_or(u64::MAX)
}

/// One input directory of a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The directory.
    pub dir: PathBuf,
    /// Its first shard; its metadata stands for the part.
    pub first_shard: ShardId,
}

/// All tensors of one checkpoint directory, mapped but not read.
#[derive(Debug)]
pub struct Catalog {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The input directories, in the order given.
    pub parts: Vec<Part>,
    /// Open shards, in file-name order.
    pub shards: Vec<Shard>,
    /// Tensors in (shard, offset) order.
    pub tensors: Vec<TensorEntry>,
    /// Files of the directory that are not weights (config, tokenizer, ...), relative paths.
    pub other_files: Vec<PathBuf>,
    /// PyTorch weight files (`*.bin`, `*.pt`) of the directory, which are not copied.
    pub skipped_files: Vec<PathBuf>,
}

impl Catalog {
    /// Opens every shard of the checkpoint in `dir` and checks headers and index.
    ///
    /// # Errors
    /// Any error naming the file (and tensor) at fault: missing directory, no weights, a bad
    /// header, an index that disagrees with the shards, a tensor name held twice.
    pub fn open(dir: &Path) -> Result<Catalog> {
        Catalog::open_parts(&[dir.to_path_buf()])
    }

    /// Opens several checkpoints that together form one (expert-parallel slices) as parts
    /// of one catalog; a name may repeat across parts, never within one.
    ///
    /// # Errors
    /// As [`Catalog::open`], for each part.
    pub fn open_parts(dirs: &[PathBuf]) -> Result<Catalog> {
        let first = dirs.first().expect("callers pass at least one directory");
        let mut catalog = Catalog {
            dir: first.clone(),
            parts: Vec::new(),
            shards: Vec::new(),
            tensors: Vec::new(),
            other_files: Vec::new(),
            skipped_files: Vec::new(),
        };
        for dir in dirs {
            catalog.add_part(dir)?;
        }
        Ok(catalog)
    }

    fn add_part(&mut self, dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let index = ShardIndex::open(dir)?;
        let (listing, skipped) = list_dir(dir)?;
        let shard_files = match &index {
            Some(index) => index_shards(dir, index, &listing)?,
            None => listing
                .iter()
                .filter(|p| is_weight_file(p))
                .cloned()
                .collect(),
        };
        if shard_files.is_empty() {
            return Err(Error::NoWeights {
                path: dir.to_path_buf(),
            });
        }
        let part = self.parts.len();
        if part == 0 {
            self.skipped_files = skipped;
            self.other_files = listing
                .into_iter()
                .filter(|p| !is_weight_file(p) && p.as_os_str() != INDEX_FILE)
                .collect();
        }
        let first_tensor = self.tensors.len();
        self.parts.push(Part {
            dir: dir.to_path_buf(),
            first_shard: ShardId(self.shards.len() as u32),
        });
        for file in &shard_files {
            let (shard, entries) = Shard::open(&dir.join(file))?;
            self.add_shard(shard, entries, part)?;
        }
        let tensors = &self.tensors[first_tensor..];
        self.check_unique(tensors)?;
        if let Some(index) = &index {
            let held = tensors
                .iter()
                .map(|t| (t.name.as_str(), self.shard_file_name(t.shard())))
                .collect();
            index.check(&held)?;
        }
        Ok(())
    }

    fn add_shard(&mut self, shard: Shard, entries: Vec<HeaderEntry>, part: usize) -> Result<()> {
        let id = ShardId(u32::try_from(self.shards.len()).map_err(|_| {
            CheckpointError::TooManyShards {
                path: self.dir.clone(),
            }
        })?);
        self.tensors
            .extend(entries.into_iter().map(|e| TensorEntry {
                name: e.name,
                dtype: e.dtype,
                pieces: vec![Piece {
                    shard: id,
                    bytes: e.bytes,
                    offset: vec![0; e.shape.len()],
                    shape: e.shape.clone(),
                }],
                shape: e.shape,
                part,
            }));
        self.shards.push(shard);
        Ok(())
    }

    fn check_unique(&self, tensors: &[TensorEntry]) -> Result<()> {
        let mut seen: BTreeMap<&str, ShardId> = BTreeMap::new();
        for t in tensors {
            if let Some(first) = seen.insert(&t.name, t.shard()) {
                return Err(Error::DuplicateTensor {
                    tensor: t.name.clone(),
                    first: self.shard(first).path.clone(),
                    second: self.shard(t.shard()).path.clone(),
                });
            }
        }
        Ok(())
    }

    /// The shard with this id.
    pub fn shard(&self, id: ShardId) -> &Shard {
        &self.shards[id.0 as usize]
    }

    /// The tensor with this id.
    pub fn tensor(&self, id: TensorId) -> &TensorEntry {
        &self.tensors[id.0 as usize]
    }

    /// Every tensor with its id, in storage order.
    pub fn iter(&self) -> impl Iterator<Item = (TensorId, &TensorEntry)> {
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (TensorId(i as u32), t))
    }

    /// Every tensor's id by name (names are unique within one part).
    pub fn ids_by_name(&self) -> BTreeMap<&str, TensorId> {
        self.iter().map(|(id, t)| (t.name.as_str(), id)).collect()
    }

    /// The path of the shard holding `id` (its first piece), for messages.
    pub fn path_of(&self, id: TensorId) -> &Path {
        &self.shard(self.tensor(id).pieces[0].shard).path
    }

    /// The `__metadata__` of the first shard (nemoconv writes the same map into every shard).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.part_metadata(0)
    }

    /// The `__metadata__` of part `part`'s first shard.
    pub fn part_metadata(&self, part: usize) -> &BTreeMap<String, String> {
        &self.shard(self.parts[part].first_shard).metadata
    }

    /// Sum of all tensor bytes.
    pub fn payload_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .flat_map(|t| &t.pieces)
            .map(|p| p.bytes.end - p.bytes.start)
            .sum()
    }

    fn shard_file_name(&self, id: ShardId) -> &str {
        self.shard(id)
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }
}

pub(crate) fn is_weight_file(path: &Path) -> bool {
    path.parent().is_none_or(|p| p.as_os_str().is_empty())
        && path.extension().is_some_and(|e| e == "safetensors")
}

/// The shard files an index names, checked to exist; stray `*.safetensors` files are refused.
fn index_shards(dir: &Path, index: &ShardIndex, listing: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = index.shard_files();
    for file in &files {
        let meta = std::fs::metadata(dir.join(file));
        if !meta.as_ref().is_ok_and(|m| m.is_file()) {
            let tensor = index
                .weight_map
                .iter()
                .find(|(_, f)| *f == file)
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            let (path, file) = (index.path.clone(), file.clone());
            return Err(match meta {
                Ok(m) => IndexError::ShardNotAFile {
                    path,
                    tensor,
                    file,
                    kind: kind_of(&m),
                },
                Err(_) => IndexError::MissingShard { path, tensor, file },
            }
            .into());
        }
    }
    if let Some(stray) = listing
        .iter()
        .find(|p| is_weight_file(p) && !files.iter().any(|f| p.as_os_str() == f.as_str()))
    {
        return Err(IndexError::StrayShard {
            path: index.path.clone(),
            stray: stray.clone(),
        }
        .into());
    }
    Ok(files.into_iter().map(PathBuf::from).collect())
}
