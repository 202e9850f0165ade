//! Expert-parallel slices on the way back to HF (SPEC §5): which experts each input part
//! holds, and the checks that several slices form one checkpoint.

use std::collections::BTreeMap;

use super::expert_shape;
use super::experts::ExpertShape;
use super::names::MergedName;
use crate::catalog::Catalog;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::family::meta;

/// The expert range of every part: its recorded slice, or all experts. Several parts must be
/// all the slices of one mesh, each rank once.
///
/// # Errors
/// [`Error::Checkpoint`] when slices disagree on E or the mesh size, repeat a rank or miss one.
pub fn part_shapes(catalog: &Catalog, config: &ModelConfig) -> Result<Vec<ExpertShape>> {
    let mut shapes = Vec::with_capacity(catalog.parts.len());
    let mut ranks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut mesh: Option<(u64, u64)> = None;
    for p in 0..catalog.parts.len() {
        let metadata = catalog.part_metadata(p);
        let ep = meta::recorded_ep(metadata);
        let recorded_e = metadata
            .get(meta::N_EXPERTS)
            .and_then(|v| v.parse::<u64>().ok());
        let mut config = config.clone();
        if recorded_e.is_some() {
            config.n_routed_experts = recorded_e;
        }
        let shape = expert_shape(&config, ep, "to split merged experts")?;
        if catalog.parts.len() > 1 {
            let Some(ep) = ep else {
                return Err(slice_error(
                    catalog,
                    p,
                    "is not an expert-parallel slice (its shards record no ep_size/ep_rank); give only slices of one checkpoint",
                ));
            };
            let this = (config.n_routed_experts.unwrap_or(0), ep.size);
            if *mesh.get_or_insert(this) != this {
                return Err(slice_error(
                    catalog,
                    p,
                    &format!(
                        "is a slice of E={} over {} ranks, unlike the first slice; give slices of one checkpoint",
                        this.0, this.1
                    ),
                ));
            }
            if let Some(other) = ranks.insert(ep.rank, p) {
                return Err(slice_error(
                    catalog,
                    p,
                    &format!(
                        "is rank {} again (also {}); give each rank once",
                        ep.rank,
                        catalog.parts[other].dir.display()
                    ),
                ));
            }
        }
        shapes.push(shape);
    }
    if let Some((_, size)) = mesh
        && let Some(missing) = (0..size).find(|r| !ranks.contains_key(r))
    {
        return Err(Error::Checkpoint {
            path: catalog.dir.clone(),
            reason: format!(
                "rank {missing} of {size} is missing from the slices given; every rank is needed to merge"
            ),
        });
    }
    Ok(shapes)
}

/// Every part holds the same non-expert tensors, byte for byte.
///
/// # Errors
/// [`Error::Checkpoint`] naming the first tensor that differs or is missing.
pub fn check_shared_identical(catalog: &Catalog) -> Result<()> {
    let shared = |p: usize| -> BTreeMap<&str, usize> {
        catalog
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.part == p && MergedName::parse(&t.name).is_none())
            .map(|(i, t)| (t.name.as_str(), i))
            .collect()
    };
    let first = shared(0);
    for p in 1..catalog.parts.len() {
        let other = shared(p);
        if let Some(name) = first
            .keys()
            .find(|n| !other.contains_key(*n))
            .or_else(|| other.keys().find(|n| !first.contains_key(*n)))
        {
            return Err(slice_error(
                catalog,
                p,
                &format!(
                    "does not hold the same tensors as the first slice ({name:?} differs); give slices of one checkpoint"
                ),
            ));
        }
        for (name, &i) in &first {
            let (a, b) = (&catalog.tensors[i], &catalog.tensors[other[name]]);
            let same = a.dtype == b.dtype
                && a.shape == b.shape
                && catalog.shard(a.shard).bytes(&a.bytes) == catalog.shard(b.shard).bytes(&b.bytes);
            catalog.shard(b.shard).release(&b.bytes);
            if !same {
                return Err(slice_error(
                    catalog,
                    p,
                    &format!(
                        "tensor {name:?} differs from the first slice's; give slices of one checkpoint"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn slice_error(catalog: &Catalog, part: usize, what: &str) -> Error {
    Error::Checkpoint {
        path: catalog.parts[part].dir.clone(),
        reason: what.to_string(),
    }
}
