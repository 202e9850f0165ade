//! The text form of a [`VerifyReport`]: a verdict line, what `--allow` accepted, then one line
//! per listed difference. The JSON form is the serde serialization of the same struct.

use std::fmt;

use super::{Difference, VerifyReport};

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = format!(
            "A has {} tensors, B {}; {} compared ({} bytes of A)",
            self.n_tensors_a, self.n_tensors_b, self.n_compared, self.compared_bytes
        );
        if self.identical {
            writeln!(f, "identical: {sizes}")?;
        } else {
            let c = &self.counts;
            let kinds: Vec<String> = [
                (c.only_in_a, "only in A"),
                (c.only_in_b, "only in B"),
                (c.dtype, "dtype"),
                (c.shape, "shape"),
                (c.data, "data"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            let plural = if self.n_differences == 1 { "" } else { "s" };
            writeln!(
                f,
                "different: {} difference{plural} ({}); {sizes}",
                self.n_differences,
                kinds.join(", ")
            )?;
        }
        let a = &self.allowed;
        for (n, flag) in [
            (a.fp32_params, "fp32-params"),
            (a.expert_dtype, "expert-dtype"),
            (a.embedding_name, "embedding-name"),
        ] {
            if n > 0 {
                writeln!(f, "  {n} equal only under --allow {flag}")?;
            }
        }
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        let unlisted = self.n_differences - self.differences.len();
        if unlisted > 0 {
            writeln!(
                f,
                "  ... and {unlisted} more; raise --max-diffs to list them"
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |name: &str, b_name: &Option<String>| match b_name {
            Some(b) => format!("{name:?} (in B {b:?})"),
            None => format!("{name:?}"),
        };
        match self {
            Difference::OnlyInA { name } => write!(f, "only in A  {name:?}"),
            Difference::OnlyInB { name } => write!(f, "only in B  {name:?}"),
            Difference::Dtype {
                name,
                b_name,
                a,
                b,
                hint,
            } => {
                write!(f, "dtype      {}: {a} in A, {b} in B", named(name, b_name))?;
                match hint {
                    Some(flag) => write!(f, " ({flag} compares the values)"),
                    None => Ok(()),
                }
            }
            Difference::Shape { name, b_name, a, b } => write!(
                f,
                "shape      {}: {a:?} in A, {b:?} in B",
                named(name, b_name)
            ),
            Difference::Data {
                name,
                b_name,
                dtype,
                n_elements,
                differing_elements,
                first_differing_element,
                max_abs_diff,
                nonfinite_differences,
            } => {
                write!(
                    f,
                    "data       {}: {differing_elements} of {n_elements} {dtype} elements differ (first at {first_differing_element})",
                    named(name, b_name)
                )?;
                if let Some(m) = max_abs_diff {
                    write!(f, ", max abs diff {m}")?;
                }
                if *nonfinite_differences > 0 {
                    write!(f, ", {nonfinite_differences} involving NaN or inf")?;
                }
                Ok(())
            }
        }
    }
}
