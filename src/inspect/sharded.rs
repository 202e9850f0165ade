//! What `inspect` adds for a training checkpoint (rank shard files + `.hf_metadata/`): the
//! ranks, every tensor's inferred full shape and pieces, and the coverage and mapping
//! problems `consolidate` would refuse. Knows no model names.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::Problem;
use crate::catalog::Catalog;
use crate::consolidate::HfMetadata;
use crate::error::{Error, Result};

/// A training checkpoint's ranks and pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardedInfo {
    /// Rank shard files.
    pub n_ranks: usize,
    /// Pieces over all ranks.
    pub n_pieces: usize,
    /// Tensors held in more than one piece.
    pub n_split_tensors: usize,
    /// Pieces holding no element (FSDP's trailing ranks).
    pub n_empty_pieces: usize,
    /// Every tensor with its inferred full shape and its pieces, in storage order.
    pub tensors: Vec<ShardedTensor>,
}

/// One tensor of a training checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardedTensor {
    /// Name.
    pub name: String,
    /// The full shape its pieces imply.
    pub shape: Vec<u64>,
    /// Its pieces.
    pub pieces: Vec<PieceInfo>,
}

/// One piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PieceInfo {
    /// The rank file holding it.
    pub file: String,
    /// Its offset in the full tensor.
    pub offset: Vec<u64>,
    /// Its shape.
    pub shape: Vec<u64>,
}

/// Opens the training checkpoint in `dir`: the catalog, its ranks and pieces, and the
/// problems found (coverage, mapping, missing `.hf_metadata/`).
///
/// # Errors
/// Unreadable input: bad headers or sharding metadata, pieces of different dtypes, an
/// unreadable mapping.
pub fn scan(dir: &Path) -> Result<(Catalog, ShardedInfo, Vec<Problem>)> {
    let (catalog, coverage) = Catalog::scan_dcp(dir)?;
    let file = |shard: crate::catalog::ShardId| -> String {
        let path = &catalog.shard(shard).path;
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    let mut problems: Vec<Problem> = coverage
        .into_iter()
        .filter_map(|e| match e {
            Error::PieceGap { tensor, range, .. } => Some(Problem::PieceGap {
                tensor,
                range: range.to_string(),
            }),
            Error::PieceOverlap {
                path,
                tensor,
                range,
                other,
                other_range,
            } => Some(Problem::PieceOverlap {
                tensor,
                file: name_of(&path),
                range: range.to_string(),
                other_file: name_of(&other),
                other_range: other_range.to_string(),
            }),
            _ => None,
        })
        .collect();
    match HfMetadata::open(dir) {
        Err(Error::NoHfMetadata { .. }) => problems.push(Problem::NoHfMetadata),
        Err(e) => return Err(e),
        Ok(meta) => {
            let held: BTreeSet<&str> = catalog.tensors.iter().map(|t| t.name.as_str()).collect();
            for (id, t) in catalog.iter() {
                if !meta.file_index.contains_key(&t.name) {
                    problems.push(Problem::NotInMapping {
                        tensor: t.name.clone(),
                        file: file(catalog.tensor(id).pieces[0].shard),
                    });
                }
            }
            let absent: Vec<&String> = meta
                .file_index
                .keys()
                .filter(|n| !held.contains(n.as_str()))
                .collect();
            if let Some(first) = absent.first() {
                problems.push(Problem::MappedButAbsent {
                    n_tensors: absent.len(),
                    first: (*first).clone(),
                });
            }
        }
    }
    let tensors: Vec<ShardedTensor> = catalog
        .tensors
        .iter()
        .map(|t| ShardedTensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            pieces: t
                .pieces
                .iter()
                .map(|p| PieceInfo {
                    file: file(p.shard),
                    offset: p.offset.clone(),
                    shape: p.shape.clone(),
                })
                .collect(),
        })
        .collect();
    let info = ShardedInfo {
        n_ranks: catalog.shards.len(),
        n_pieces: tensors.iter().map(|t| t.pieces.len()).sum(),
        n_split_tensors: tensors.iter().filter(|t| t.pieces.len() > 1).count(),
        n_empty_pieces: tensors
            .iter()
            .flat_map(|t| &t.pieces)
            .filter(|p| p.shape.contains(&0))
            .count(),
        tensors,
    };
    Ok((catalog, info, problems))
}

fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
