//! The golden case (SPEC §8): nemoconv's outputs for `fixtures/golden/tiny/hf` must equal the
//! reference adapter's own outputs, tensor by tensor. A missing fixture fails.

use std::path::{Path, PathBuf};

use crate::harness::{
    assert_same_file, assert_same_tensors, assert_valid_output, fixture, from_hf, read_checkpoint,
    tempdir, to_hf,
};

fn golden(rel: &str) -> PathBuf {
    fixture(&format!("golden/tiny/{rel}"))
}

/// The exclude regex the reference was given for `roundtrip_hf_excl_sel`, read from the manifest.
fn manifest_exclude_regex() -> String {
    let text = std::fs::read_to_string(golden("manifest.json")).expect("read manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    manifest["exclude_key_regex"]["roundtrip_hf_excl_sel"]["regex"]
        .as_str()
        .expect("manifest.json has exclude_key_regex.roundtrip_hf_excl_sel.regex")
        .to_string()
}

/// Runs from-hf on the golden HF input into `dir/internal` and returns that path.
fn our_internal(dir: &Path) -> PathBuf {
    let out = dir.join("internal");
    from_hf(&[], &golden("hf"), &out).success();
    out
}

#[test]
fn from_hf_of_golden_hf_equals_reference_internal() {
    let tmp = tempdir();
    let out = our_internal(tmp.path());
    let actual = assert_valid_output(&out);
    assert_same_tensors(&actual, &read_checkpoint(&golden("internal")));
    assert_same_file(&golden("hf"), &out, "config.json");
}

#[test]
fn to_hf_of_our_internal_equals_reference_roundtrip() {
    let tmp = tempdir();
    let internal = our_internal(tmp.path());
    let out = tmp.path().join("hf");
    to_hf(&[], &internal, &out).success();
    let actual = assert_valid_output(&out);
    assert_same_tensors(&actual, &read_checkpoint(&golden("roundtrip_hf")));
    assert_same_file(&golden("hf"), &out, "config.json");
}

#[test]
fn to_hf_with_manifest_regex_equals_reference_excl_sel() {
    let regex = manifest_exclude_regex();
    let tmp = tempdir();
    let internal = our_internal(tmp.path());
    let out = tmp.path().join("hf");
    to_hf(&["--exclude-regex", &regex], &internal, &out).success();
    let actual = assert_valid_output(&out);
    assert_same_tensors(&actual, &read_checkpoint(&golden("roundtrip_hf_excl_sel")));
}

#[test]
fn to_hf_of_reference_internal_equals_reference_roundtrip() {
    // The reference's internal/ has no config.json (and no nemoconv metadata): give it the
    // HF input's, as a user converting a NeMo-written checkpoint would.
    let tmp = tempdir();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(
        golden("internal/model.safetensors"),
        input.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(golden("hf/config.json"), input.join("config.json")).unwrap();
    let out = tmp.path().join("hf");
    to_hf(&[], &input, &out).success();
    let actual = assert_valid_output(&out);
    assert_same_tensors(&actual, &read_checkpoint(&golden("roundtrip_hf")));
    assert_same_file(&input, &out, "config.json");
}

#[test]
fn to_hf_of_reference_internal_without_config_infers_e_and_i() {
    // As the reference wrote it: no config.json. E and I come from the merged tensors.
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    to_hf(&[], &golden("internal"), &out).success();
    let actual = assert_valid_output(&out);
    assert_same_tensors(&actual, &read_checkpoint(&golden("roundtrip_hf")));
}

#[test]
fn to_hf_of_a_nemo_slice_without_recorded_rank_is_refused() {
    // NeMo's own slice (dtensor_info.json, no nemoconv metadata) does not say which experts
    // it holds: exporting it under ids 0..n would be silently wrong.
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    let run = to_hf(&[], &golden("internal_ep2_r1"), &out);
    run.code(1).stderr_has("dtensor_info.json");
    assert!(!out.exists(), "no output may appear");
}

#[test]
fn golden_round_trip_gives_back_the_hf_input() {
    let tmp = tempdir();
    let internal = our_internal(tmp.path());
    let out = tmp.path().join("hf");
    to_hf(&[], &internal, &out).success();
    // The golden input already stores A_log/D/dt_bias in F32, so nothing changes (SPEC §4).
    assert_same_tensors(&read_checkpoint(&out), &read_checkpoint(&golden("hf")));
}

#[test]
fn from_hf_ep_slices_equal_reference_slices_and_split_back() {
    // SPEC §5: rank r of 2 holds experts [2r, 2r+2); to-hf emits them under their global ids.
    for rank in ["0", "1"] {
        let tmp = tempdir();
        let slice = tmp.path().join("internal");
        let options = ["--ep-size", "2", "--ep-rank", rank];
        from_hf(&options, &golden("hf"), &slice).success();
        let actual = assert_valid_output(&slice);
        let reference = golden(&format!("internal_ep2_r{rank}"));
        assert_same_tensors(&actual, &read_checkpoint(&reference));
        let out = tmp.path().join("hf");
        to_hf(&[], &slice, &out).success();
        let reference = golden(&format!("roundtrip_hf_ep2_r{rank}"));
        assert_same_tensors(&assert_valid_output(&out), &read_checkpoint(&reference));
    }
}
