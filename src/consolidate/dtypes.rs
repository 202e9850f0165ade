//! The output dtype of each consolidated tensor (DCP-FORMAT §3.3, `_resolve_output_dtype`)
//! and nemoconv's completion of the original-dtype mapping, which lists only rank 0's tensors
//! (§2.2, §5 surprise 1): a name missing from it takes the dtype of the mapped names that
//! match it with every integer path component replaced by `*`, when those agree.

use std::collections::BTreeMap;

use crate::dtype::{self, Dtype};

/// F16, BF16, F32 or F64: the dtypes a cast or the dtype mapping may turn a tensor into.
pub fn is_regular_float(d: Dtype) -> bool {
    matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// The output dtype of a tensor stored as `source`, with `mapped` its original dtype (if the
/// mapping has it) and `cast` the `--dtype` (if given).
pub fn output_dtype(source: Dtype, mapped: Option<Dtype>, cast: Option<Dtype>) -> Dtype {
    let regular = is_regular_float(source);
    match (cast, mapped) {
        // Rule 1: the fp32 contract wins over the cast.
        (Some(_), Some(Dtype::F32)) if regular => Dtype::F32,
        // Rule 2: regular floats take the cast; ints, BOOL and FP8 stay.
        (Some(c), _) => {
            if regular {
                c
            } else {
                source
            }
        }
        // Rules 3, 4.
        (None, None) => source,
        (None, Some(m)) if m == source => source,
        // Rule 5: preserve the original dtype (FP8 sources count as floating here).
        (None, Some(m)) if is_regular_float(m) && dtype::is_float(source) => m,
        // Rule 6: anything else keeps the stored dtype.
        (None, Some(_)) => source,
    }
}

/// `name` with every path component made only of digits replaced by `*`.
pub fn wildcard(name: &str) -> String {
    name.split('.')
        .map(|c| {
            if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                c
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The dtypes `mapping` lacks for `names`, completed from the mapped names of the same
/// wildcard pattern when they all agree; names with no agreeing pattern are left out.
pub fn complete<'a>(
    mapping: &BTreeMap<String, Dtype>,
    names: impl Iterator<Item = &'a str>,
) -> BTreeMap<String, Dtype> {
    // Per pattern: the one dtype its mapped names share, or None when they disagree.
    let mut by_pattern: BTreeMap<String, Option<Dtype>> = BTreeMap::new();
    for (name, &d) in mapping {
        by_pattern
            .entry(wildcard(name))
            .and_modify(|seen| {
                if *seen != Some(d) {
                    *seen = None;
                }
            })
            .or_insert(Some(d));
    }
    names
        .filter(|n| !mapping.contains_key(*n))
        .filter_map(|n| {
            let d = (*by_pattern.get(&wildcard(n))?)?;
            Some((n.to_string(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dtype::*;

    #[test]
    fn rules_of_resolve_output_dtype() {
        // 1: F32-mapped regular floats stay F32 under a cast, even from BF16.
        assert_eq!(output_dtype(BF16, Some(F32), Some(F16)), F32);
        // 2: the cast applies to regular floats only.
        assert_eq!(output_dtype(BF16, Some(BF16), Some(F16)), F16);
        assert_eq!(output_dtype(F32, None, Some(BF16)), BF16);
        assert_eq!(output_dtype(I64, Some(F32), Some(BF16)), I64);
        assert_eq!(output_dtype(F8_E4M3, None, Some(BF16)), F8_E4M3);
        assert_eq!(output_dtype(BOOL, None, Some(F16)), BOOL);
        // 3, 4.
        assert_eq!(output_dtype(F32, None, None), F32);
        assert_eq!(output_dtype(BF16, Some(BF16), None), BF16);
        // 5: the original dtype comes back.
        assert_eq!(output_dtype(F32, Some(BF16), None), BF16);
        assert_eq!(output_dtype(F8_E4M3, Some(BF16), None), BF16);
        // 6: FP8/int mapping of a float, int mapping of an int: stored dtype.
        assert_eq!(output_dtype(BF16, Some(F8_E4M3), None), BF16);
        assert_eq!(output_dtype(I32, Some(I64), None), I32);
        assert_eq!(output_dtype(I32, Some(F32), None), I32);
    }

    #[test]
    fn wildcard_replaces_integer_components_only() {
        assert_eq!(
            wildcard("backbone.layers.12.mixer.experts.3.up_proj.weight"),
            "backbone.layers.*.mixer.experts.*.up_proj.weight"
        );
        assert_eq!(wildcard("a.b1.2x.c"), "a.b1.2x.c");
    }

    #[test]
    fn completion_takes_the_agreeing_dtype_of_the_pattern() {
        let mapping = BTreeMap::from([
            ("l.1.experts.0.w".to_string(), BF16),
            ("l.3.experts.1.w".to_string(), BF16),
            ("l.1.mixed.0.w".to_string(), BF16),
            ("l.1.mixed.1.w".to_string(), F32),
        ]);
        let names = [
            "l.1.experts.2.w",
            "l.3.experts.0.w",
            "l.1.mixed.2.w",
            "other.w",
            "l.1.experts.0.w",
        ];
        let done = complete(&mapping, names.into_iter());
        assert_eq!(
            done,
            BTreeMap::from([
                ("l.1.experts.2.w".to_string(), BF16),
                ("l.3.experts.0.w".to_string(), BF16),
            ])
        );
    }
}
