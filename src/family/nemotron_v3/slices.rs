//! Expert-parallel slices on the way back to HF (SPEC §5): which experts each input part
//! holds, and the checks that several slices form one checkpoint.

use std::collections::BTreeMap;

use super::expert_shape;
use super::experts::ExpertShape;
use super::key::{Role, TensorKey};
use super::names::Proj;
use crate::catalog::{Catalog, same_bytes};
use crate::config::ModelConfig;
use crate::error::{CheckpointError, Result};
use crate::family::meta;

/// The expert range of every part: its recorded slice, or all experts. Several parts must be
/// all the slices of one mesh, each rank once.
///
/// # Errors
/// [`CheckpointError`] when slices disagree on E or the mesh size, repeat a rank or miss one.
pub fn part_shapes(
    catalog: &Catalog,
    keys: &[TensorKey],
    config: &ModelConfig,
) -> Result<Vec<ExpertShape>> {
    let mut shapes = Vec::with_capacity(catalog.parts.len());
    let mut ranks: BTreeMap<u64, usize> = BTreeMap::new();
    let mut mesh: Option<(u64, u64)> = None;
    let dir = |p: usize| catalog.parts[p].dir.clone();
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
        infer_missing_sizes(catalog, keys, p, &mut config)?;
        let shape = expert_shape(
            &config,
            ep,
            "the ep_size recorded in its shards (nemoconv.ep_size)",
            "to split merged experts",
        )?;
        if catalog.parts.len() > 1 {
            let Some(ep) = ep else {
                return Err(CheckpointError::NotASlice { path: dir(p) }.into());
            };
            let this = (config.n_routed_experts.unwrap_or(0), ep.size());
            if *mesh.get_or_insert(this) != this {
                return Err(CheckpointError::OtherMesh {
                    path: dir(p),
                    n_experts: this.0,
                    size: this.1,
                }
                .into());
            }
            if let Some(other) = ranks.insert(ep.rank(), p) {
                return Err(CheckpointError::RepeatedRank {
                    path: dir(p),
                    rank: ep.rank(),
                    other: dir(other),
                }
                .into());
            }
        }
        shapes.push(shape);
    }
    if let Some((_, size)) = mesh
        && let Some(missing) = (0..size).find(|r| !ranks.contains_key(r))
    {
        return Err(CheckpointError::MissingRank {
            path: catalog.dir.clone(),
            rank: missing,
            size,
        }
        .into());
    }
    Ok(shapes)
}

/// Fills E and I from the merged tensors when the config lacks them (the reference's own
/// internal outputs come without config.json): E is the first dim of a merged tensor of an
/// unsliced part, I the inner dim of `gate_and_up_projs` or `down_projs`. The split then
/// checks every merged tensor against these values.
///
/// # Errors
/// [`CheckpointError::UnrecordedSlice`] for a NeMo slice (`dtensor_info.json`) without E: its merged tensors
/// hold only some experts, and which ones is not recorded.
fn infer_missing_sizes(
    catalog: &Catalog,
    keys: &[TensorKey],
    part: usize,
    config: &mut ModelConfig,
) -> Result<()> {
    let mut merged = catalog
        .tensors
        .iter()
        .zip(keys)
        .filter(|(t, _)| t.part == part)
        .filter_map(|(t, key)| match &key.role {
            Role::MergedExperts(name) => Some((name, &t.shape)),
            _ => None,
        });
    let Some((name, shape)) = merged.next() else {
        return Ok(());
    };
    let [n, a, b] = shape[..] else { return Ok(()) };
    if config.n_routed_experts.is_none() && meta::recorded_ep(catalog.part_metadata(part)).is_none()
    {
        if catalog.parts[part].dir.join(NEMO_DTENSOR_INFO).exists() {
            return Err(CheckpointError::UnrecordedSlice {
                path: catalog.parts[part].dir.clone(),
            }
            .into());
        }
        config.n_routed_experts = Some(n);
    }
    if config.moe_intermediate_size.is_none() {
        config.moe_intermediate_size = Some(if name.proj == Proj::Down { a } else { b });
    }
    Ok(())
}

/// The file NeMo saves beside the local shards of distributed tensors.
const NEMO_DTENSOR_INFO: &str = "dtensor_info.json";

/// Every part holds the same non-expert tensors, byte for byte.
///
/// # Errors
/// [`CheckpointError`] naming the first tensor that differs or is missing.
pub fn check_shared_identical(catalog: &Catalog, keys: &[TensorKey]) -> Result<()> {
    let shared = |p: usize| -> BTreeMap<&str, usize> {
        catalog
            .tensors
            .iter()
            .enumerate()
            .filter(|&(i, t)| t.part == p && !matches!(keys[i].role, Role::MergedExperts(_)))
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
            return Err(CheckpointError::SliceTensors {
                path: catalog.parts[p].dir.clone(),
                tensor: name.to_string(),
            }
            .into());
        }
        for (name, &i) in &first {
            let (a, b) = (&catalog.tensors[i], &catalog.tensors[other[name]]);
            let same = a.dtype == b.dtype
                && a.shape == b.shape
                && same_bytes(
                    (catalog.shard(a.shard()), a.bytes()),
                    (catalog.shard(b.shard()), b.bytes()),
                )?;
            if !same {
                return Err(CheckpointError::SliceTensorDiffers {
                    path: catalog.parts[p].dir.clone(),
                    tensor: name.to_string(),
                }
                .into());
            }
        }
    }
    Ok(())
}
