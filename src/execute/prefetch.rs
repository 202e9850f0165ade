//! Reading ahead of the jobs: the input ranges the batches will read, in the order they run,
//! merged into large extents and handed to the kernel a fixed window ahead of the batch being
//! run. The disk then sees few large requests, whatever the page cache holds, and no more
//! than the window is read before it is needed. An extent that was not cached when it was
//! requested is dropped from the page cache once the last batch reading it is done, so a
//! cold checkpoint passes through memory without filling it (a warm one stays cached).
//! Knows shards and byte ranges, not names.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::jobs::{Job, reads};
use crate::catalog::{Catalog, ShardId};

/// How far ahead of the batch being started input is requested, in input bytes. Large enough
/// to keep the disk busy while both threads compute, small beside any page cache (the 1 GiB
/// memory cgroup of the benchmark included).
pub const WINDOW_BYTES: u64 = 64 << 20;
/// Largest extent handed to the kernel in one request; bigger reads are cut, so the window
/// bounds them too.
const EXTENT_BYTES: u64 = 8 << 20;
/// Ranges closer than this to an extent are merged into it, reading the gap as well: small
/// tensors interleaved with others (one expert's `up_proj` between two `down_proj`s) are read
/// in one pass instead of two seeks.
const GAP_BYTES: u64 = 1 << 20;
/// Extents per shard still open to merging: enough for several interleaved streams (two
/// merged tensors read slot by slot).
const OPEN_EXTENTS: usize = 8;

/// One range to read ahead, the input position of the first batch that needs it and the
/// last batch that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extent {
    shard: ShardId,
    bytes: Range<u64>,
    need_at: u64,
    last_batch: usize,
}

/// The read-ahead schedule of a run, how far it has been issued, and which extents can be
/// dropped from the page cache.
#[derive(Debug)]
pub struct Prefetch {
    extents: Vec<Extent>,
    /// Input bytes read by the batches before each batch.
    positions: Vec<u64>,
    issued: Mutex<usize>,
    /// Per extent: it was not in the page cache when requested, so it is ours to drop.
    cold: Vec<AtomicBool>,
    /// Extent indices in order of their last batch.
    by_last_batch: Vec<usize>,
    /// Per batch: done.
    done: Vec<AtomicBool>,
    /// Batches below the first field are all done; extents before the second field of
    /// `by_last_batch` are released.
    released: Mutex<(usize, usize)>,
}

impl Prefetch {
    /// The schedule of `batches`, run in this order.
    pub fn new(batches: &[Vec<Job>]) -> Prefetch {
        let mut positions = Vec::with_capacity(batches.len());
        let mut all = Vec::new();
        let mut at = 0;
        for (i, batch) in batches.iter().enumerate() {
            positions.push(at);
            for job in batch {
                for r in reads(job) {
                    at += r.end - r.start;
                    all.push((positions[i], i, job.source.shard, r));
                }
            }
        }
        let mut schedule = Prefetch::of_reads(all);
        schedule.positions = positions;
        schedule.done = batches.iter().map(|_| AtomicBool::new(false)).collect();
        schedule
    }

    /// The schedule for reads given in run order as `(position, batch, shard, range)`, where
    /// `position` is the input bytes read by earlier batches; the bytes of a long range are
    /// needed at increasing positions.
    fn of_reads(reads: impl IntoIterator<Item = (u64, usize, ShardId, Range<u64>)>) -> Prefetch {
        let mut extents: Vec<Extent> = Vec::new();
        let mut open: HashMap<ShardId, Vec<usize>> = HashMap::new();
        for (position, batch, shard, range) in reads {
            let mut start = range.start;
            while start < range.end {
                let piece = start..(start + EXTENT_BYTES).min(range.end);
                let need_at = position + (start - range.start);
                start = piece.end;
                let recent = open.entry(shard).or_default();
                if let Some(&i) = recent.iter().find(|&&i| covers(&extents[i].bytes, &piece)) {
                    let e = &mut extents[i];
                    e.bytes.end = e.bytes.end.max(piece.end);
                    e.last_batch = batch;
                    continue;
                }
                recent.push(extents.len());
                if recent.len() > OPEN_EXTENTS {
                    recent.remove(0);
                }
                extents.push(Extent {
                    shard,
                    bytes: piece,
                    need_at,
                    last_batch: batch,
                });
            }
        }
        let mut by_last_batch: Vec<usize> = (0..extents.len()).collect();
        by_last_batch.sort_by_key(|&i| extents[i].last_batch);
        Prefetch {
            cold: extents.iter().map(|_| AtomicBool::new(false)).collect(),
            extents,
            positions: Vec::new(),
            issued: Mutex::new(0),
            by_last_batch,
            done: Vec::new(),
            released: Mutex::new((0, 0)),
        }
    }

    /// Issues, as batch `batch` starts, every extent needed within [`WINDOW_BYTES`] of its
    /// input position that was not issued yet.
    pub fn advance(&self, catalog: &Catalog, batch: usize) {
        let position = self.positions[batch];
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(e) = self.extents.get(*issued) {
            if e.need_at >= position.saturating_add(WINDOW_BYTES) {
                break;
            }
            let shard = catalog.shard(e.shard);
            if !shard.is_cached(&e.bytes) {
                self.cold[*issued].store(true, Ordering::Relaxed);
            }
            shard.prefetch(&e.bytes);
            *issued += 1;
        }
    }

    /// Records that `batch` is done, and drops from the page cache every extent that was
    /// cold when requested and that no batch still to finish reads.
    pub fn finish(&self, catalog: &Catalog, batch: usize) {
        self.done[batch].store(true, Ordering::Release);
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        let (all_done, next) = &mut *released;
        while self
            .done
            .get(*all_done)
            .is_some_and(|d| d.load(Ordering::Acquire))
        {
            *all_done += 1;
        }
        while let Some(&i) = self.by_last_batch.get(*next) {
            let e = &self.extents[i];
            if e.last_batch >= *all_done {
                break;
            }
            if self.cold[i].load(Ordering::Relaxed) {
                catalog.shard(e.shard).forget(&e.bytes);
            }
            *next += 1;
        }
    }
}

/// Whether `piece` can join `extent`: it starts inside it or at most [`GAP_BYTES`] past its
/// end, and the extent stays within [`EXTENT_BYTES`].
fn covers(extent: &Range<u64>, piece: &Range<u64>) -> bool {
    piece.start >= extent.start
        && piece.start <= extent.end.saturating_add(GAP_BYTES)
        && piece.end.max(extent.end) - extent.start <= EXTENT_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(p: &Prefetch) -> Vec<(u64, Range<u64>)> {
        p.extents
            .iter()
            .map(|e| (e.need_at, e.bytes.clone()))
            .collect()
    }

    #[test]
    fn adjacent_and_near_reads_merge_into_one_extent() {
        let s = ShardId(0);
        let p = Prefetch::of_reads([
            (0, 0, s, 0..100),
            (100, 1, s, 100..200),
            (200, 2, s, 300..400),
        ]);
        assert_eq!(ranges(&p), vec![(0, 0..400)]);
    }

    #[test]
    fn interleaved_streams_each_grow_their_own_extent() {
        let (s, far) = (ShardId(0), 1 << 30);
        let reads = [
            (0, 0, s, 0..10),
            (10, 1, s, far..far + 10),
            (20, 2, s, 10..20),
            (30, 3, s, far + 10..far + 20),
        ];
        let p = Prefetch::of_reads(reads);
        assert_eq!(ranges(&p), vec![(0, 0..20), (10, far..far + 20)]);
    }

    #[test]
    fn large_reads_are_cut_into_extents_needed_at_their_position() {
        let s = ShardId(1);
        let p = Prefetch::of_reads([(5, 0, s, 0..EXTENT_BYTES * 2 + 1)]);
        assert_eq!(
            ranges(&p),
            vec![
                (5, 0..EXTENT_BYTES),
                (5 + EXTENT_BYTES, EXTENT_BYTES..2 * EXTENT_BYTES),
                (5 + 2 * EXTENT_BYTES, 2 * EXTENT_BYTES..2 * EXTENT_BYTES + 1)
            ]
        );
    }

    #[test]
    fn reads_of_other_shards_or_far_apart_start_new_extents() {
        let p = Prefetch::of_reads([
            (0, 0, ShardId(0), 0..10),
            (10, 1, ShardId(1), 10..20),
            (20, 2, ShardId(0), 10 + 2 * GAP_BYTES..20 + 2 * GAP_BYTES),
        ]);
        assert_eq!(p.extents.len(), 3);
    }
}
