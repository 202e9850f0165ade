//! Where each stretch of a tensor's elements is stored: one segment for a whole tensor, one
//! per contiguous run of each piece for a tensor of a DCP training checkpoint, so `verify`
//! compares a sharded checkpoint with an HF one without assembling anything.

use std::ops::Range;

use crate::catalog::{Catalog, ShardId, TensorId, runs};
use crate::execute::ranges;

/// `len` units from unit `start` of the tensor, stored from byte `byte` of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    start: u64,
    len: u64,
    shard: ShardId,
    byte: u64,
}

/// The segments of tensor `id` (units of `unit` bytes), in element order.
pub(super) fn segments(cat: &Catalog, id: TensorId, unit: usize) -> Vec<Segment> {
    let t = cat.tensor(id);
    let u = unit as u64;
    if t.is_whole() {
        let bytes = t.bytes();
        return vec![Segment {
            start: 0,
            len: (bytes.end - bytes.start) / u,
            shard: t.shard(),
            byte: bytes.start,
        }];
    }
    let mut out: Vec<Segment> = t
        .pieces
        .iter()
        .flat_map(|p| {
            runs(&p.shape, &p.offset, &t.shape)
                .into_iter()
                .map(move |r| Segment {
                    start: r.out,
                    len: r.len,
                    shard: p.shard,
                    byte: p.bytes.start + r.src * u,
                })
        })
        .collect();
    out.sort_by_key(|s| s.start);
    out
}

/// The shard and byte range of `units`, which lie inside one segment of `segs`.
pub(super) fn locate(segs: &[Segment], units: &Range<u64>, unit: usize) -> (ShardId, Range<u64>) {
    let i = segs.partition_point(|s| s.start <= units.start) - 1;
    let s = &segs[i];
    let u = unit as u64;
    let from = s.byte + (units.start - s.start) * u;
    (s.shard, from..from + (units.end - units.start) * u)
}

/// `0..total` cut at every segment boundary of both sides and every `step` units, so each
/// range lies inside one segment of each.
pub(super) fn chunks(a: &[Segment], b: &[Segment], total: u64, step: u64) -> Vec<Range<u64>> {
    let mut cuts: Vec<u64> = a.iter().chain(b).map(|s| s.start).collect();
    cuts.extend([0, total]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .flat_map(|w| {
            let from = w[0];
            ranges(w[1] - from, step).map(move |r| from + r.start..from + r.end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, len: u64, byte: u64) -> Segment {
        Segment {
            start,
            len,
            shard: ShardId(0),
            byte,
        }
    }

    #[test]
    fn chunks_cut_at_both_sides_boundaries_and_the_step() {
        let a = [seg(0, 4, 100), seg(4, 6, 0)];
        let b = [seg(0, 10, 0)];
        assert_eq!(chunks(&a, &b, 10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(chunks(&a, &b, 10, 3), vec![0..3, 3..4, 4..7, 7..10]);
    }

    #[test]
    fn locate_finds_the_segment_and_its_bytes() {
        let a = [seg(0, 4, 100), seg(4, 6, 0)];
        assert_eq!(locate(&a, &(1..3), 2), (ShardId(0), 102..106));
        assert_eq!(locate(&a, &(5..8), 2), (ShardId(0), 2..8));
    }
}
