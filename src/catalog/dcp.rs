//! Reading a NeMo Automodel training checkpoint (DCP + HF safetensors, DCP-FORMAT §1): every
//! `*.safetensors` directly in the directory is one rank's shard file, whose header lists its
//! pieces and whose `__metadata__.DCP_SHARDING_INFO` gives each piece's offset in the full
//! tensor. The catalog gets one tensor per name with all its pieces, the full shape inferred
//! (§3.2) and coverage checked. Knows no tensor names.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Catalog, HeaderEntry, Piece, Shard, ShardId, TensorEntry, coverage, list_dir};
use crate::error::{CheckpointError, Error, PieceDifference, Result, ShardingProblem};

/// The `__metadata__` key of a shard file holding each piece's offsets, as JSON text.
pub const SHARDING_INFO: &str = "DCP_SHARDING_INFO";
/// The directory of HF metadata (config, mappings) a training checkpoint keeps beside its shards.
pub const HF_METADATA_DIR: &str = ".hf_metadata";

#[derive(Deserialize)]
struct SavedOffsets {
    saved_offsets: Vec<u64>,
}

/// Whether `dir` looks like a training checkpoint's `model/` directory: it has `.hf_metadata/`
/// or a top-level shard file with DCP sharding metadata.
pub fn is_dcp(dir: &Path) -> bool {
    if dir.join(HF_METADATA_DIR).is_dir() {
        return true;
    }
    let Ok(listing) = list_dir(dir) else {
        return false;
    };
    listing
        .0
        .iter()
        .filter(|p| super::is_weight_file(p))
        .take(1)
        .any(|p| {
            Shard::open(&dir.join(p))
                .is_ok_and(|(shard, _)| shard.metadata.contains_key(SHARDING_INFO))
        })
}

/// Parses the `DCP_SHARDING_INFO` text: tensor name → offset of its piece in the full tensor.
///
/// # Errors
/// [`ShardingProblem::Json`] with serde's error.
pub fn parse_sharding_info(
    text: &str,
) -> std::result::Result<BTreeMap<String, Vec<u64>>, ShardingProblem> {
    let raw: BTreeMap<String, SavedOffsets> =
        serde_json::from_str(text).map_err(ShardingProblem::Json)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.saved_offsets)).collect())
}

impl Catalog {
    /// Opens `dir` as a training checkpoint when it looks like one ([`is_dcp`]), else as an
    /// ordinary checkpoint ([`Catalog::open`]).
    ///
    /// # Errors
    /// As the opener chosen.
    pub fn open_any(dir: &Path) -> Result<Catalog> {
        if is_dcp(dir) {
            Catalog::open_dcp(dir)
        } else {
            Catalog::open(dir)
        }
    }

    /// Opens a training checkpoint's `model/` directory: every top-level `*.safetensors` (in
    /// file-name order) as a rank's shard file, each tensor with all its pieces.
    ///
    /// # Errors
    /// [`Error::NotADirectory`], [`Error::NoWeights`], a bad header ([`Error::BadShard`]),
    /// [`Error::NotDcpShard`], [`Error::BadSharding`], [`Error::PieceMismatch`],
    /// [`Error::PieceOverlap`] or [`Error::PieceGap`], each naming file and tensor.
    pub fn open_dcp(dir: &Path) -> Result<Catalog> {
        let (catalog, problems) = Catalog::scan_dcp(dir)?;
        match problems.into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(catalog),
        }
    }

    /// As [`Catalog::open_dcp`], but gaps and overlaps are returned beside the catalog, one
    /// per tensor at fault, for `inspect` to list.
    ///
    /// # Errors
    /// As [`Catalog::open_dcp`], except [`Error::PieceOverlap`] and [`Error::PieceGap`].
    pub fn scan_dcp(dir: &Path) -> Result<(Catalog, Vec<Error>)> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let (listing, skipped_files) = list_dir(dir)?;
        let (shard_files, mut other_files): (Vec<_>, Vec<_>) =
            listing.into_iter().partition(|p| super::is_weight_file(p));
        // Hidden entries are never listed; `.hf_metadata/` is the one a training checkpoint
        // needs (its config and the files its consolidation copies).
        let metadata_dir = dir.join(HF_METADATA_DIR);
        if metadata_dir.is_dir() {
            let (metadata, _) = list_dir(&metadata_dir)?;
            other_files.extend(
                metadata
                    .into_iter()
                    .map(|p| Path::new(HF_METADATA_DIR).join(p)),
            );
        }
        if shard_files.is_empty() {
            return Err(Error::NoWeights {
                path: dir.to_path_buf(),
            });
        }
        let mut catalog = Catalog {
            dir: dir.to_path_buf(),
            parts: vec![super::Part {
                dir: dir.to_path_buf(),
                first_shard: ShardId(0),
            }],
            shards: Vec::new(),
            tensors: Vec::new(),
            other_files,
            skipped_files,
        };
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for file in &shard_files {
            let (shard, entries) = Shard::open(&dir.join(file))?;
            let id = ShardId(u32::try_from(catalog.shards.len()).map_err(|_| {
                CheckpointError::TooManyShards {
                    path: dir.to_path_buf(),
                }
            })?);
            let pieces = pieces_of(&shard, id, entries)?;
            catalog.shards.push(shard);
            for (name, dtype, piece) in pieces {
                catalog.add_piece(&mut by_name, name, dtype, piece)?;
            }
        }
        for t in &mut catalog.tensors {
            t.shape = coverage::full_shape(&t.pieces);
            if crate::dtype::size_bytes(t.dtype).is_none() && !t.is_whole() {
                return Err(Error::BadSharding {
                    path: catalog.shards[t.pieces[0].shard.0 as usize].path.clone(),
                    problem: ShardingProblem::SubByte {
                        tensor: t.name.clone(),
                        dtype: t.dtype,
                    },
                });
            }
        }
        let path_of = |p: &Piece| catalog.shard(p.shard).path.clone();
        let problems = catalog
            .tensors
            .iter()
            .filter_map(|t| coverage::check(dir, &t.name, &t.shape, &t.pieces, &path_of).err())
            .collect();
        Ok((catalog, problems))
    }

    /// Adds one piece to its tensor (made at its first piece), checking dtype and rank.
    fn add_piece(
        &mut self,
        by_name: &mut BTreeMap<String, usize>,
        name: String,
        dtype: crate::dtype::Dtype,
        piece: Piece,
    ) -> Result<()> {
        let Some(&i) = by_name.get(&name) else {
            by_name.insert(name.clone(), self.tensors.len());
            self.tensors.push(TensorEntry {
                name,
                dtype,
                shape: Vec::new(),
                pieces: vec![piece],
                part: 0,
            });
            return Ok(());
        };
        let t = &self.tensors[i];
        let first = &t.pieces[0];
        let difference = if t.dtype != dtype {
            Some(PieceDifference::Dtype {
                dtype,
                first: t.dtype,
            })
        } else if first.shape.len() != piece.shape.len() {
            Some(PieceDifference::Rank {
                dims: piece.shape.len(),
                first: first.shape.len(),
            })
        } else {
            None
        };
        if let Some(difference) = difference {
            return Err(Error::PieceMismatch {
                path: self.shard(piece.shard).path.clone(),
                tensor: name,
                first: self.shard(first.shard).path.clone(),
                difference,
            });
        }
        self.tensors[i].pieces.push(piece);
        Ok(())
    }
}

/// The pieces of one shard file, in storage order, with their offsets.
fn pieces_of(
    shard: &Shard,
    id: ShardId,
    entries: Vec<HeaderEntry>,
) -> Result<Vec<(String, crate::dtype::Dtype, Piece)>> {
    let bad = |problem: ShardingProblem| Error::BadSharding {
        path: shard.path.clone(),
        problem,
    };
    let text = shard
        .metadata
        .get(SHARDING_INFO)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Error::NotDcpShard {
            path: shard.path.clone(),
        })?;
    let mut offsets = parse_sharding_info(text).map_err(bad)?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let offset = offsets.remove(&e.name).ok_or_else(|| {
            bad(ShardingProblem::NoOffsets {
                tensor: e.name.clone(),
            })
        })?;
        if offset.len() != e.shape.len() {
            return Err(bad(ShardingProblem::Dims {
                tensor: e.name,
                offset,
                shape: e.shape,
            }));
        }
        if offset
            .iter()
            .zip(&e.shape)
            .any(|(o, s)| o.checked_add(*s).is_none())
        {
            return Err(bad(ShardingProblem::Overflow {
                tensor: e.name,
                offset,
                shape: e.shape,
            }));
        }
        out.push((
            e.name,
            e.dtype,
            Piece {
                shard: id,
                bytes: e.bytes,
                shape: e.shape,
                offset,
            },
        ));
    }
    if let Some(name) = offsets.keys().next() {
        return Err(bad(ShardingProblem::Unheld {
            tensor: name.clone(),
        }));
    }
    Ok(out)
}
