//! The validated settings of each command, free of any CLI types: [`FromHfOptions`],
//! [`ToHfOptions`] and [`ConsolidateOptions`], each with the [`RunOptions`] they share, and
//! [`ConvertOptions`] for the two conversions. Settings one command does not have are not
//! fields of its options, and combinations that cannot exist (a rank beyond its mesh, one
//! slice and all slices at once) cannot be built.

use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;

use fancy_regex::Regex;

use crate::convert::Direction;
use crate::dtype::Dtype;
pub use crate::execute::{Split, Worker};
use crate::family::nemotron_v3::HfPrefix;

/// `transformers`' default shard cap: 5 GB, decimal.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// How every command writes its output: threads, spread-run share, replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Worker threads (`-j`); None: all cores.
    pub threads: Option<NonZeroUsize>,
    /// Write only this worker's share of the output shards (a spread run).
    pub worker: Option<Worker>,
    /// Replace an existing output directory (only once the new one is complete).
    pub force: bool,
}

/// Settings for `from-hf`.
#[derive(Debug, Clone)]
pub struct FromHfOptions {
    /// Threads, worker share, `--force`.
    pub run: RunOptions,
    /// Output shard cap in bytes (`--max-shard-size`).
    pub max_shard_bytes: u64,
    /// dtype of merged experts (`--dtype`); None: the config's `torch_dtype`, else BF16.
    pub expert_dtype: Option<Dtype>,
    /// Reproduce the reference's silent drops, listing each (`--lenient`).
    pub lenient: bool,
    /// Dequantize FP8 weights to BF16 with their scales (`--dequantize`).
    pub dequantize: bool,
    /// Whether to write all experts, one expert-parallel slice, or every slice of a mesh.
    pub ep: ExpertParallel,
}

impl Default for FromHfOptions {
    fn default() -> Self {
        FromHfOptions {
            run: RunOptions::default(),
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            expert_dtype: None,
            lenient: false,
            dequantize: false,
            ep: ExpertParallel::None,
        }
    }
}

/// Settings for `to-hf`.
#[derive(Debug, Clone)]
pub struct ToHfOptions {
    /// Threads, worker share, `--force`.
    pub run: RunOptions,
    /// Output shard cap in bytes (`--max-shard-size`).
    pub max_shard_bytes: u64,
    /// HF prefix (`--hf-prefix`); None: the recorded one, else `backbone.`. The prefix is a
    /// naming rule, so its type lives with the family's names.
    pub hf_prefix: Option<HfPrefix>,
    /// Output names matching this (anchored at the start) are left out (`--exclude-regex`).
    pub exclude: Option<ExcludeRegex>,
}

impl Default for ToHfOptions {
    fn default() -> Self {
        ToHfOptions {
            run: RunOptions::default(),
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            hf_prefix: None,
            exclude: None,
        }
    }
}

/// Settings for `consolidate`, whose output files follow the checkpoint's own mapping (so
/// it has no shard cap).
#[derive(Debug, Clone, Default)]
pub struct ConsolidateOptions {
    /// Threads, worker share, `--force`.
    pub run: RunOptions,
    /// The reference's `CAST_DTYPE` (`--dtype`); None keeps the original dtypes.
    pub cast_dtype: Option<Dtype>,
    /// Reproduce the reference's bytes: no dtype completion, missing mapped names dropped.
    pub lenient: bool,
}

/// One of the two conversions with its settings: what [`crate::convert()`] and
/// [`crate::plan()`] take.
#[derive(Debug, Clone)]
pub enum ConvertOptions {
    /// HF layout → internal layout.
    FromHf(FromHfOptions),
    /// Internal layout → HF layout.
    ToHf(ToHfOptions),
}

impl ConvertOptions {
    /// Which way this conversion goes.
    pub fn direction(&self) -> Direction {
        match self {
            ConvertOptions::FromHf(_) => Direction::FromHf,
            ConvertOptions::ToHf(_) => Direction::ToHf,
        }
    }

    /// The settings every command shares.
    pub fn run(&self) -> &RunOptions {
        match self {
            ConvertOptions::FromHf(o) => &o.run,
            ConvertOptions::ToHf(o) => &o.run,
        }
    }

    /// The output shard cap in bytes.
    pub fn max_shard_bytes(&self) -> u64 {
        match self {
            ConvertOptions::FromHf(o) => o.max_shard_bytes,
            ConvertOptions::ToHf(o) => o.max_shard_bytes,
        }
    }
}

impl From<FromHfOptions> for ConvertOptions {
    fn from(options: FromHfOptions) -> Self {
        ConvertOptions::FromHf(options)
    }
}

impl From<ToHfOptions> for ConvertOptions {
    fn from(options: ToHfOptions) -> Self {
        ConvertOptions::ToHf(options)
    }
}

/// Which experts `from-hf` writes (SPEC §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExpertParallel {
    /// Every expert, in one output (no `--ep-size`).
    #[default]
    None,
    /// One rank's slice (`--ep-size N --ep-rank R`).
    One(EpSlice),
    /// Every slice of a mesh of this size, each in its own subdirectory (`--ep-size N`).
    All(NonZeroU64),
}

impl ExpertParallel {
    /// The slices to plan, one output each: `[None]` for all experts in one output.
    pub fn slices(self) -> Vec<Option<EpSlice>> {
        match self {
            ExpertParallel::None => vec![None],
            ExpertParallel::One(slice) => vec![Some(slice)],
            ExpertParallel::All(size) => (0..size.get())
                .map(|rank| Some(EpSlice { size, rank }))
                .collect(),
        }
    }
}

/// An `--exclude-regex`, matched at the start of a name only, like Python's `re.match`
/// (SPEC §4.4). fancy-regex accepts Python's lookarounds and backreferences.
#[derive(Debug, Clone)]
pub struct ExcludeRegex {
    pattern: String,
    regex: Regex,
}

impl ExcludeRegex {
    /// The pattern as the user gave it.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether `name` is excluded.
    ///
    /// # Errors
    /// The matcher's error when the pattern backtracks past its limit on this name.
    pub fn excludes(&self, name: &str) -> Result<bool, fancy_regex::Error> {
        self.regex.is_match(name)
    }
}

/// Compiles an `--exclude-regex`; an empty pattern excludes nothing, so it gives None.
///
/// # Errors
/// The regex error, which shows where the pattern is wrong.
pub fn anchored_regex(pattern: &str) -> Result<Option<ExcludeRegex>, fancy_regex::Error> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern)?;
    let regex = Regex::new(&format!("^(?:{pattern})"))?;
    Ok(Some(ExcludeRegex {
        pattern: pattern.to_string(),
        regex,
    }))
}

/// Rank `rank` of an expert-parallel mesh of `size` (SPEC §5); the rank is always below the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpSlice {
    size: NonZeroU64,
    rank: u64,
}

impl EpSlice {
    /// Rank `rank` of `size`; None when the mesh is empty or the rank is not below its size.
    pub fn new(size: u64, rank: u64) -> Option<EpSlice> {
        let size = NonZeroU64::new(size)?;
        (rank < size.get()).then_some(EpSlice { size, rank })
    }

    /// The mesh size n.
    pub fn size(self) -> u64 {
        self.size.get()
    }

    /// This rank r, `< size`.
    pub fn rank(self) -> u64 {
        self.rank
    }

    /// The experts `[start, end)` rank r of n owns out of `n_experts`: the first `E % n` ranks
    /// get one more.
    pub fn range(self, n_experts: u64) -> Range<u64> {
        let size = self.size.get();
        let (q, m) = (n_experts / size, n_experts % size);
        let start = self.rank * q + self.rank.min(m);
        let count = if self.rank < m { q + 1 } else { q };
        start..start + count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ep_ranges_follow_divmod_with_remainder_first() {
        let r = |size, rank, e| EpSlice::new(size, rank).unwrap().range(e);
        assert_eq!((r(2, 0, 5), r(2, 1, 5)), (0..3, 3..5));
        assert_eq!((r(3, 0, 7), r(3, 1, 7), r(3, 2, 7)), (0..3, 3..5, 5..7));
        assert_eq!((r(2, 0, 4), r(2, 1, 4)), (0..2, 2..4));
    }

    #[test]
    fn a_rank_outside_its_mesh_cannot_be_built() {
        assert_eq!(EpSlice::new(2, 2), None);
        assert_eq!(EpSlice::new(0, 0), None);
        let slice = EpSlice::new(3, 2).unwrap();
        assert_eq!((slice.size(), slice.rank()), (3, 2));
    }

    #[test]
    fn all_slices_are_every_rank_in_order() {
        let all = ExpertParallel::All(NonZeroU64::new(3).unwrap()).slices();
        let ranks: Vec<(u64, u64)> = all
            .iter()
            .map(|s| s.map(|s| (s.size(), s.rank())).unwrap())
            .collect();
        assert_eq!(ranks, [(3, 0), (3, 1), (3, 2)]);
        assert_eq!(ExpertParallel::None.slices(), [None]);
        let one = EpSlice::new(2, 1).unwrap();
        assert_eq!(ExpertParallel::One(one).slices(), [Some(one)]);
    }

    #[test]
    fn regex_is_anchored_at_the_start_only() {
        let re = anchored_regex("norm_f").unwrap().unwrap();
        assert!(!re.excludes("backbone.norm_f.weight").unwrap());
        let re = anchored_regex("lm_head|x").unwrap().unwrap();
        assert!(re.excludes("lm_head.weight").unwrap());
        assert!(re.excludes("xyz").unwrap());
        let re = anchored_regex(r"backbone\.layers\.(?!1\.)\d+\.mixer\.D$")
            .unwrap()
            .unwrap();
        assert!(re.excludes("backbone.layers.3.mixer.D").unwrap());
        assert!(!re.excludes("backbone.layers.1.mixer.D").unwrap());
        assert!(anchored_regex("").unwrap().is_none());
        assert!(anchored_regex("(").is_err());
    }
}
