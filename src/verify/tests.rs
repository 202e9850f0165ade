//! `verify` on small checkpoints written into temporary directories.

use std::path::Path;

use tempfile::TempDir;

use super::*;
use crate::dtype::Dtype;
use crate::execute::NoProgress;
use crate::testing::{Tensor, bf16s, f16s, f32s, tensor, write_checkpoint};

const A_LOG: &str = "backbone.layers.0.mixer.A_log";
const UP: &str = "backbone.layers.1.mixer.experts.0.up_proj.weight";
const MERGED: &str = "model.layers.1.mixer.experts.gate_and_up_projs";

fn base() -> Vec<Tensor> {
    vec![
        tensor(
            "backbone.embeddings.weight",
            Dtype::BF16,
            &[2, 3],
            bf16s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ),
        tensor(A_LOG, Dtype::F32, &[2], f32s(&[0.5, -1.25])),
        tensor(
            "backbone.layers.0.norm.weight",
            Dtype::BF16,
            &[3],
            bf16s(&[1.0; 3]),
        ),
        tensor(UP, Dtype::BF16, &[2, 2], bf16s(&[0.25, 0.5, 0.75, 1.0])),
        tensor("lm_head.weight", Dtype::U8, &[4], vec![1, 2, 3, 4]),
    ]
}

/// Writes `a` and `b` (`per_shard` tensors a shard each) and compares them.
fn run_with(a: &[Tensor], b: &[Tensor], per_shard: (usize, usize), allow: Allow) -> VerifyReport {
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    write_checkpoint(da.path(), a, per_shard.0);
    write_checkpoint(db.path(), b, per_shard.1);
    let options = VerifyOptions {
        allow,
        ..VerifyOptions::default()
    };
    verify(
        da.path(),
        db.path(),
        &options,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap()
}

fn run(a: &[Tensor], b: &[Tensor], allow: Allow) -> VerifyReport {
    run_with(a, b, (100, 100), allow)
}

/// `tensors` with the one named `name` replaced.
fn with(mut tensors: Vec<Tensor>, replacement: Tensor) -> Vec<Tensor> {
    let slot = tensors.iter_mut().find(|t| t.0 == replacement.0).unwrap();
    *slot = replacement;
    tensors
}

#[test]
fn same_tensors_are_identical() {
    let r = run(&base(), &base(), Allow::default());
    assert!(r.identical, "{r}");
    assert_eq!((r.n_compared, r.n_differences, r.schema), (5, 0, 1));
    assert_eq!(r.compared_bytes, 12 + 8 + 6 + 8 + 4);
}

#[test]
fn different_sharding_of_the_same_tensors_is_identical() {
    let r = run_with(&base(), &base(), (1, 3), Allow::default());
    assert!(r.identical, "{r}");
}

#[test]
fn one_flipped_byte_is_a_data_difference_with_max_abs_diff() {
    let mut bytes = f32s(&[0.5, -1.25]);
    bytes[4 + 3] ^= 0x80; // the sign bit of element 1: -1.25 becomes 1.25
    let b = with(base(), tensor(A_LOG, Dtype::F32, &[2], bytes));
    let r = run(&base(), &b, Allow::default());
    assert!(!r.identical);
    assert_eq!(r.counts.data, 1);
    assert_eq!(
        r.differences,
        vec![Difference::Data {
            name: A_LOG.into(),
            b_name: None,
            dtype: "F32".into(),
            n_elements: 2,
            differing_elements: 1,
            first_differing_element: 1,
            max_abs_diff: Some(2.5),
            nonfinite_differences: 0,
        }]
    );
    assert!(r.to_string().contains(A_LOG));
}

#[test]
fn integer_data_difference_has_no_max_abs_diff() {
    let b = with(
        base(),
        tensor("lm_head.weight", Dtype::U8, &[4], vec![1, 2, 3, 5]),
    );
    let r = run(&base(), &b, Allow::default());
    assert!(matches!(
        &r.differences[..],
        [Difference::Data {
            max_abs_diff: None,
            differing_elements: 1,
            first_differing_element: 3,
            ..
        }]
    ));
}

#[test]
fn dtype_difference_is_reported_with_the_allow_that_would_apply() {
    let b = with(
        base(),
        tensor(A_LOG, Dtype::BF16, &[2], bf16s(&[0.5, -1.25])),
    );
    let r = run(&base(), &b, Allow::default());
    assert_eq!(
        r.differences,
        vec![Difference::Dtype {
            name: A_LOG.into(),
            b_name: None,
            a: "F32".into(),
            b: "BF16".into(),
            hint: Some("--allow fp32-params".into()),
        }]
    );
}

#[test]
fn shape_difference_is_reported() {
    let b = with(
        base(),
        tensor(
            "backbone.layers.0.norm.weight",
            Dtype::BF16,
            &[1, 3],
            bf16s(&[1.0; 3]),
        ),
    );
    let r = run(&base(), &b, Allow::default());
    assert!(
        matches!(&r.differences[..], [Difference::Shape { a, b, .. }] if a == &[3] && b == &[1, 3])
    );
}

#[test]
fn names_only_in_one_side_are_listed_in_name_order() {
    let mut a = base();
    a.push(tensor("zz.only_a", Dtype::U8, &[1], vec![0]));
    let mut b = base();
    b.push(tensor("aa.only_b", Dtype::U8, &[1], vec![0]));
    let r = run(&a, &b, Allow::default());
    assert_eq!(
        r.differences,
        vec![
            Difference::OnlyInB {
                name: "aa.only_b".into()
            },
            Difference::OnlyInA {
                name: "zz.only_a".into()
            },
        ]
    );
    assert_eq!((r.counts.only_in_a, r.counts.only_in_b), (1, 1));
}

#[test]
fn allow_fp32_params_accepts_exactly_widened_values_only() {
    let allow = Allow {
        fp32_params: true,
        ..Allow::default()
    };
    let b = with(
        base(),
        tensor(A_LOG, Dtype::BF16, &[2], bf16s(&[0.5, -1.25])),
    );
    let r = run(&base(), &b, allow);
    assert!(r.identical, "{r}");
    assert_eq!(r.allowed.fp32_params, 1);
    let f16 = with(base(), tensor(A_LOG, Dtype::F16, &[2], f16s(&[0.5, -1.25])));
    assert!(run(&f16, &base(), allow).identical);
    // 0.1 is not a bf16 value: widened back it differs from the F32 side.
    let a = with(base(), tensor(A_LOG, Dtype::F32, &[2], f32s(&[0.1, -1.25])));
    let b = with(
        base(),
        tensor(A_LOG, Dtype::BF16, &[2], bf16s(&[0.1, -1.25])),
    );
    let r = run(&a, &b, allow);
    assert!(
        matches!(&r.differences[..], [Difference::Data { dtype, differing_elements: 1, .. }] if dtype == "F32")
    );
    // The rule is for A_log/D/dt_bias only.
    let norm = "backbone.layers.0.norm.weight";
    let b = with(base(), tensor(norm, Dtype::F32, &[3], f32s(&[1.0; 3])));
    assert_eq!(run(&base(), &b, allow).counts.dtype, 1);
}

#[test]
fn allow_expert_dtype_compares_after_rounding_the_wider_side() {
    let allow = Allow {
        expert_dtype: true,
        ..Allow::default()
    };
    // 0.2501 rounds (RNE) to the bf16 0.25.
    let wide = with(
        base(),
        tensor(UP, Dtype::F32, &[2, 2], f32s(&[0.2501, 0.5, 0.75, 1.0])),
    );
    let r = run(&wide, &base(), allow);
    assert!(r.identical, "{r}");
    assert_eq!(r.allowed.expert_dtype, 1);
    let off = with(
        base(),
        tensor(UP, Dtype::F32, &[2, 2], f32s(&[0.3, 0.5, 0.75, 1.0])),
    );
    assert_eq!(run(&off, &base(), allow).counts.data, 1);
    assert_eq!(run(&wide, &base(), Allow::default()).counts.dtype, 1);
    let merged = |dtype, data| vec![tensor(MERGED, dtype, &[1, 2], data)];
    let r = run(
        &merged(Dtype::F32, f32s(&[1.0, 2.0])),
        &merged(Dtype::BF16, bf16s(&[1.0, 2.0])),
        allow,
    );
    assert!(r.identical, "{r}");
}

#[test]
fn allow_embedding_name_pairs_the_two_spellings() {
    let allow = Allow {
        embedding_name: true,
        ..Allow::default()
    };
    let mut b = base();
    b[0].0 = "backbone.embedding.weight".into();
    assert_eq!(run(&base(), &b, Allow::default()).n_differences, 2);
    let r = run(&base(), &b, allow);
    assert!(r.identical, "{r}");
    assert_eq!(r.allowed.embedding_name, 1);
    b[0].3[0] ^= 1;
    let r = run(&base(), &b, allow);
    assert!(
        matches!(&r.differences[..], [Difference::Data { b_name: Some(n), .. }] if n == "backbone.embedding.weight")
    );
}

#[test]
fn max_diffs_limits_the_list_not_the_count() {
    let b: Vec<Tensor> = base()
        .into_iter()
        .map(|mut t| {
            t.3[0] ^= 0x40;
            t
        })
        .collect();
    let (da, db) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    write_checkpoint(da.path(), &base(), 9);
    write_checkpoint(db.path(), &b, 9);
    let options = VerifyOptions {
        max_diffs: 2,
        ..VerifyOptions::default()
    };
    let r = verify(
        da.path(),
        db.path(),
        &options,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        (r.n_differences, r.differences.len(), r.counts.data),
        (5, 2, 5)
    );
    assert!(r.to_string().contains("... and 3 more"), "{r}");
}

#[test]
fn tensors_larger_than_a_chunk_are_compared_across_chunks() {
    let n = (CHUNK_BYTES / 4) as usize * 2 + 3;
    let a = vec![tensor("big", Dtype::F32, &[n], vec![0; n * 4])];
    let mut bytes = vec![0; n * 4];
    bytes[(n - 1) * 4 + 1] = 0x3c; // a tiny positive value in the last element
    let r = run(
        &a,
        &[tensor("big", Dtype::F32, &[n], bytes)],
        Allow::default(),
    );
    assert!(matches!(
        &r.differences[..],
        [Difference::Data { differing_elements: 1, first_differing_element, .. }] if *first_differing_element == n as u64 - 1
    ));
}

#[test]
fn unreadable_input_is_an_error_and_cancel_interrupts() {
    let dir = TempDir::new().unwrap();
    write_checkpoint(dir.path(), &base(), 9);
    let options = VerifyOptions::default();
    let missing = dir.path().join("missing");
    let err = verify(
        dir.path(),
        &missing,
        &options,
        &NoProgress,
        &AtomicBool::new(false),
    );
    assert!(matches!(err, Err(Error::NotADirectory { .. })));
    let err = verify(
        dir.path(),
        dir.path(),
        &options,
        &NoProgress,
        &AtomicBool::new(true),
    );
    assert!(matches!(err, Err(Error::Interrupted)));
}

#[test]
fn json_has_schema_version_and_kind_tags() {
    let b = with(
        base(),
        tensor(A_LOG, Dtype::BF16, &[2], bf16s(&[0.5, -1.25])),
    );
    let r = run(&base(), &b, Allow::default());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["identical"], false);
    assert_eq!(v["differences"][0]["kind"], "dtype");
    assert_eq!(v["counts"]["dtype"], 1);
    assert!(Path::new(v["a"].as_str().unwrap()).is_absolute());
}
