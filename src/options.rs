//! `Options`: the validated settings of one conversion, free of any CLI types.

use std::num::NonZeroUsize;
use std::ops::Range;

use fancy_regex::Regex;

use crate::dtype::Dtype;
pub use crate::execute::{Split, Worker};
pub use crate::family::nemotron_v3::HfPrefix;

/// `transformers`' default shard cap: 5 GB, decimal.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Settings for `from-hf` and `to-hf`.
#[derive(Debug, Clone)]
pub struct Options {
    /// dtype of merged experts (`--dtype`); None: the config's `torch_dtype`, else BF16.
    pub expert_dtype: Option<Dtype>,
    /// Reproduce the reference's silent drops, listing each (`--lenient`).
    pub lenient: bool,
    /// consolidate: the reference's `CAST_DTYPE` (`--dtype`); None keeps the original dtypes.
    pub cast_dtype: Option<Dtype>,
    /// from-hf: dequantize FP8 weights to BF16 with their scales (`--dequantize`).
    pub dequantize: bool,
    /// HF prefix for to-hf (`--hf-prefix`); None: the recorded one, else `backbone.`.
    pub hf_prefix: Option<HfPrefix>,
    /// Output shard cap in bytes (`--max-shard-size`).
    pub max_shard_bytes: u64,
    /// Worker threads (`-j`); None: all cores.
    pub threads: Option<NonZeroUsize>,
    /// to-hf: output names matching this (anchored at the start) are left out.
    pub exclude: Option<ExcludeRegex>,
    /// from-hf: write one expert-parallel slice instead of all experts.
    pub ep: Option<EpSlice>,
    /// from-hf: write every slice of a mesh of this size, each in its own subdirectory.
    pub ep_all_ranks: Option<u64>,
    /// Write only this worker's share of the output shards (a spread run).
    pub worker: Option<Worker>,
    /// Replace an existing output directory (only once the new one is complete).
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            expert_dtype: None,
            lenient: false,
            cast_dtype: None,
            dequantize: false,
            hf_prefix: None,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            threads: None,
            exclude: None,
            ep: None,
            ep_all_ranks: None,
            worker: None,
            force: false,
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

/// Rank `rank` of an expert-parallel mesh of `size` (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpSlice {
    /// Mesh size n.
    pub size: u64,
    /// This rank r, `< size`.
    pub rank: u64,
}

impl EpSlice {
    /// The experts `[start, end)` rank r of n owns out of `n_experts`: the first `E % n` ranks
    /// get one more.
    pub fn range(self, n_experts: u64) -> Range<u64> {
        let (q, m) = (n_experts / self.size, n_experts % self.size);
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
        let r = |size, rank, e| EpSlice { size, rank }.range(e);
        assert_eq!((r(2, 0, 5), r(2, 1, 5)), (0..3, 3..5));
        assert_eq!((r(3, 0, 7), r(3, 1, 7), r(3, 2, 7)), (0..3, 3..5, 5..7));
        assert_eq!((r(2, 0, 4), r(2, 1, 4)), (0..2, 2..4));
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
