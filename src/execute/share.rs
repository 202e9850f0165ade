//! A worker's share of a run (issue 15). Every worker cuts the same plan into the same units of
//! work in run order, each shard's header being a unit of its own, and takes one contiguous
//! part of that list: `--split bytes` cuts it into M parts of about equal bytes, `--split
//! shards` deals whole shard files round-robin. Knows jobs and files, not tensor names.

use std::ops::Range;

use super::jobs::Job;
use super::spread::{Split, Worker};

/// What one process writes of a run: its jobs, the headers it writes, and the byte ranges of
/// every output file it covers (merged, in file order), for the worker's marker.
#[derive(Debug)]
pub struct Share<'p> {
    /// This process's jobs, in run order.
    pub jobs: Vec<Job<'p>>,
    /// Per output file: whether this process writes its header.
    pub headers: Vec<bool>,
    /// `(file, bytes)`: every byte this process writes, merged into maximal runs.
    pub ranges: Vec<(usize, Range<u64>)>,
}

impl<'p> Share<'p> {
    /// The share of `worker` (everything for a plain run) of the run whose output files have
    /// headers of `header_lens` bytes and whose jobs, in run order, are `jobs`.
    pub fn of(worker: Option<Worker>, header_lens: &[u64], jobs: Vec<Job<'p>>) -> Share<'p> {
        let (headers, jobs) = match worker {
            None => (vec![true; header_lens.len()], jobs),
            Some(w) if w.split == Split::Shards => {
                let mine = |file: usize| file % w.count == w.index;
                let headers = (0..header_lens.len()).map(mine).collect();
                (headers, jobs.into_iter().filter(|j| mine(j.file)).collect())
            }
            Some(w) => by_bytes(w, header_lens, jobs),
        };
        let mut ranges: Vec<(usize, Range<u64>)> = (headers.iter().enumerate())
            .filter(|(f, mine)| **mine && header_lens[*f] > 0)
            .map(|(f, _)| (f, 0..header_lens[f]))
            .chain(
                jobs.iter()
                    .map(|j| (j.file, j.offset..j.offset + j.out_len())),
            )
            .filter(|(_, r)| !r.is_empty())
            .collect();
        ranges.sort_by_key(|(f, r)| (*f, r.start));
        Share {
            jobs,
            headers,
            ranges: merge(ranges),
        }
    }

    /// Whether this process writes anything of output file `file`.
    pub fn touches(&self, file: usize) -> bool {
        self.headers[file] || self.ranges.iter().any(|(f, _)| *f == file)
    }
}

/// One unit of the byte split: a file's header or a job (by index), with its bytes.
enum Unit {
    Header(usize),
    Job(usize),
}

/// The headers and jobs of worker `w` when the run's units, in run order (each header just
/// before the first job of its file; headers of files without jobs last), are cut into
/// `w.count` contiguous parts of about equal bytes.
fn by_bytes<'p>(w: Worker, header_lens: &[u64], jobs: Vec<Job<'p>>) -> (Vec<bool>, Vec<Job<'p>>) {
    let mut units = Vec::with_capacity(jobs.len() + header_lens.len());
    let mut placed = vec![false; header_lens.len()];
    for (i, job) in jobs.iter().enumerate() {
        if !placed[job.file] {
            placed[job.file] = true;
            units.push((Unit::Header(job.file), header_lens[job.file]));
        }
        units.push((Unit::Job(i), job.out_len()));
    }
    for (f, _) in placed.iter().enumerate().filter(|(_, p)| !**p) {
        units.push((Unit::Header(f), header_lens[f]));
    }
    let weights: Vec<u64> = units.iter().map(|(_, bytes)| *bytes).collect();
    let owners = split_contiguous(&weights, w.count);
    let mut headers = vec![false; header_lens.len()];
    let mut mine_jobs = vec![false; jobs.len()];
    for ((unit, _), owner) in units.iter().zip(owners) {
        if owner == w.index {
            match unit {
                Unit::Header(f) => headers[*f] = true,
                Unit::Job(i) => mine_jobs[*i] = true,
            }
        }
    }
    let jobs = (jobs.into_iter().zip(mine_jobs))
        .filter_map(|(j, mine)| mine.then_some(j))
        .collect();
    (headers, jobs)
}

/// The owner of each unit when units of `weights` bytes, in order, are cut into `parts`
/// contiguous parts: a unit goes to the part its first byte falls in, `k * total / parts` to
/// `(k + 1) * total / parts`. So every part holds at most `total / parts` plus one unit's
/// bytes, the owners never decrease, and every worker computes the same cut.
pub fn split_contiguous(weights: &[u64], parts: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let parts = parts.max(1);
    let mut start = 0u128;
    weights
        .iter()
        .map(|&w| {
            let owner = match total {
                0 => 0,
                _ => (start * parts as u128 / total) as usize,
            };
            start += u128::from(w);
            owner.min(parts - 1)
        })
        .collect()
}

/// `ranges` sorted by file and start, with touching runs of one file joined.
fn merge(ranges: Vec<(usize, Range<u64>)>) -> Vec<(usize, Range<u64>)> {
    let mut out: Vec<(usize, Range<u64>)> = Vec::with_capacity(ranges.len());
    for (file, r) in ranges {
        match out.last_mut() {
            Some((f, last)) if *f == file && last.end == r.start => last.end = r.end,
            _ => out.push((file, r)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes per part of a cut.
    fn loads(weights: &[u64], parts: usize) -> Vec<u64> {
        let mut loads = vec![0; parts];
        for (w, owner) in weights.iter().zip(split_contiguous(weights, parts)) {
            loads[owner] += w;
        }
        loads
    }

    #[test]
    fn parts_are_contiguous_and_within_one_unit_of_the_mean() {
        let weights: Vec<u64> = (0..500).map(|i| 1 + (i * 7919 % 97) * 1000).collect();
        let total: u64 = weights.iter().sum();
        let largest = *weights.iter().max().unwrap();
        for parts in [1, 2, 3, 5, 8, 64] {
            let owners = split_contiguous(&weights, parts);
            assert!(
                owners.windows(2).all(|w| w[0] <= w[1]),
                "{parts}: not contiguous"
            );
            assert_eq!(owners.first(), Some(&0));
            assert_eq!(
                owners.last(),
                Some(&(parts - 1)),
                "{parts}: last part empty"
            );
            for load in loads(&weights, parts) {
                assert!(
                    load <= total / parts as u64 + largest,
                    "{parts} parts: {load} > mean {} + largest {largest}",
                    total / parts as u64
                );
            }
        }
    }

    #[test]
    fn more_parts_than_units_leave_some_parts_empty() {
        let weights = [10, 10, 10];
        let owners = split_contiguous(&weights, 7);
        assert_eq!(owners, vec![0, 2, 4]);
        assert_eq!(loads(&weights, 7).iter().sum::<u64>(), 30);
    }

    #[test]
    fn nothing_to_split_goes_to_the_first_part() {
        assert_eq!(split_contiguous(&[0, 0], 3), vec![0, 0]);
        assert!(split_contiguous(&[], 3).is_empty());
    }

    #[test]
    fn touching_ranges_of_one_file_merge() {
        let merged = merge(vec![(0, 0..8), (0, 8..20), (0, 30..40), (1, 40..50)]);
        assert_eq!(merged, vec![(0, 0..20), (0, 30..40), (1, 40..50)]);
    }
}
