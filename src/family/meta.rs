//! The shard `__metadata__` nemoconv writes and reads back (SPEC §7): layout, HF prefix, and
//! the expert range of an expert-parallel slice.

use std::collections::BTreeMap;

use super::Layout;
use crate::options::EpSlice;

/// Key of the layout word (`hf` or `internal`).
pub const LAYOUT: &str = "nemoconv.layout";
/// Key of the HF prefix word (`backbone` or `model`).
pub const HF_PREFIX: &str = "nemoconv.hf_prefix";
/// Key of `n_routed_experts` for a slice.
pub const N_EXPERTS: &str = "nemoconv.n_routed_experts";
/// Key of the mesh size for a slice.
pub const EP_SIZE: &str = "nemoconv.ep_size";
/// Key of the rank for a slice.
pub const EP_RANK: &str = "nemoconv.ep_rank";
/// Key of the first expert id of a slice.
pub const EXPERT_START: &str = "nemoconv.expert_start";
/// Key of one past the last expert id of a slice.
pub const EXPERT_END: &str = "nemoconv.expert_end";

/// The metadata of a full (not sliced) output.
pub fn record(layout: Layout, hf_prefix: &str) -> BTreeMap<String, String> {
    let word = match layout {
        Layout::Hf => "hf",
        Layout::Internal => "internal",
    };
    BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (LAYOUT.to_string(), word.to_string()),
        (HF_PREFIX.to_string(), hf_prefix.to_string()),
    ])
}

/// Adds a slice's E, n, r, start and end.
pub fn record_ep(metadata: &mut BTreeMap<String, String>, n_experts: u64, ep: EpSlice) {
    let range = ep.range(n_experts);
    for (key, value) in [
        (N_EXPERTS, n_experts),
        (EP_SIZE, ep.size()),
        (EP_RANK, ep.rank()),
        (EXPERT_START, range.start),
        (EXPERT_END, range.end),
    ] {
        metadata.insert(key.to_string(), value.to_string());
    }
}

/// The layout recorded in a shard, if any.
pub fn recorded_layout(metadata: &BTreeMap<String, String>) -> Option<Layout> {
    match metadata.get(LAYOUT).map(String::as_str) {
        Some("hf") => Some(Layout::Hf),
        Some("internal") => Some(Layout::Internal),
        _ => None,
    }
}

/// The slice recorded in a shard, if any.
pub fn recorded_ep(metadata: &BTreeMap<String, String>) -> Option<EpSlice> {
    let get = |key| metadata.get(key).and_then(|v| v.parse::<u64>().ok());
    let (size, rank) = (get(EP_SIZE)?, get(EP_RANK)?);
    EpSlice::new(size, rank)
}
