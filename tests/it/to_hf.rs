//! to-hf through the CLI (SPEC §4): `--exclude-regex` anchored at the start of each output
//! name, split experts excluded one by one, and the strict shape checks of §4.5.

use std::path::Path;

use crate::builder::{CheckpointBuilder, Dt, Files, safetensors_bytes};
use crate::expect;
use crate::from_hf::{back_to_hf, convert};
use crate::harness::{
    Tensor, Tensors, assert_refused, assert_same_tensors, read_checkpoint, tempdir, to_hf,
};

/// The default checkpoint's expected round trip, minus the names `exclude` selects.
fn expected_without(exclude: impl Fn(&str) -> bool) -> (Tensors, Tensors) {
    let ck = CheckpointBuilder::default().build();
    let all = expect::round_trip(&ck.map(), Dt::Bf16);
    let kept = all
        .iter()
        .filter(|(n, _)| !exclude(n))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    (all, kept)
}

fn round_trip_with(options: &[&str]) -> Tensors {
    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    back_to_hf(c.tmp.path(), &c.internal, options, "hf")
}

#[test]
fn exclude_regex_lm_head_removes_lm_head_only() {
    let (all, kept) = expected_without(|n| n == "lm_head.weight");
    assert_eq!(all.len(), kept.len() + 1);
    assert_same_tensors(&round_trip_with(&["--exclude-regex", "lm_head"]), &kept);
}

#[test]
fn exclude_regex_is_anchored_at_the_start() {
    // Every norm_f name starts with "backbone.", so re.match("norm_f") removes nothing.
    let (all, _) = expected_without(|_| false);
    assert!(all.contains_key("backbone.norm_f.weight"));
    assert_same_tensors(&round_trip_with(&["--exclude-regex", "norm_f"]), &all);
}

#[test]
fn empty_exclude_regex_excludes_nothing() {
    let (all, _) = expected_without(|_| false);
    assert_same_tensors(&round_trip_with(&["--exclude-regex", ""]), &all);
}

#[test]
fn exclude_regex_applies_to_each_split_expert() {
    let (all, kept) = expected_without(|n| n.starts_with("backbone.layers.1.mixer.experts.1."));
    assert_eq!(all.len(), kept.len() + 2);
    let run = round_trip_with(&[
        "--exclude-regex",
        r"backbone\.layers\.1\.mixer\.experts\.1\.",
    ]);
    assert_same_tensors(&run, &kept);
}

/// A from-hf output of the `ME` checkpoint (E=4, I=3, H=4), copied into `dir/in` with its
/// config changed by `edit_config` and its tensors by `edit_tensors`.
fn internal_input(
    dir: &Path,
    edit_config: impl FnOnce(&mut serde_json::Value),
    edit_tensors: impl FnOnce(&mut Tensors),
) {
    let ck = CheckpointBuilder {
        pattern: "ME".to_string(),
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Single, &[]);
    let mut tensors = read_checkpoint(&c.internal);
    edit_tensors(&mut tensors);
    let mut config = ck.config.clone();
    edit_config(&mut config);
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(
        input.join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let refs: Vec<&(String, Tensor)> = list.iter().collect();
    std::fs::write(input.join("model.safetensors"), safetensors_bytes(&refs)).unwrap();
}

#[test]
fn merged_experts_whose_first_dim_is_not_e_are_refused() {
    let tmp = tempdir();
    internal_input(
        tmp.path(),
        |c| c["n_routed_experts"] = serde_json::json!(5),
        |_| {},
    );
    let out = tmp.path().join("out");
    let run = to_hf(&[], &tmp.path().join("in"), &out);
    assert_refused(
        &run,
        &out,
        "model.layers.1.mixer.experts.",
        "model.safetensors",
    );
}

#[test]
fn down_projs_without_i_in_dim_1_are_refused() {
    // The reference emits such a tensor unsplit (manifest probe); SPEC §4.5 refuses it.
    let tmp = tempdir();
    let name = "model.layers.1.mixer.experts.down_projs";
    internal_input(
        tmp.path(),
        |_| {},
        |t| {
            let down = t.get_mut(name).unwrap();
            assert_eq!(down.shape, vec![4, 3, 4]);
            down.shape = vec![4, 4, 3];
        },
    );
    let out = tmp.path().join("out");
    let run = to_hf(&[], &tmp.path().join("in"), &out);
    assert_refused(&run, &out, name, "model.safetensors");
}

#[test]
fn gate_and_up_projs_without_i_in_dim_2_are_refused() {
    let tmp = tempdir();
    let name = "model.layers.1.mixer.experts.gate_and_up_projs";
    internal_input(
        tmp.path(),
        |_| {},
        |t| {
            let up = t.get_mut(name).unwrap();
            assert_eq!(up.shape, vec![4, 4, 3]);
            up.shape = vec![4, 3, 4];
        },
    );
    let out = tmp.path().join("out");
    let run = to_hf(&[], &tmp.path().join("in"), &out);
    assert_refused(&run, &out, name, "model.safetensors");
}
