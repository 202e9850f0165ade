//! `consolidate` on the golden training checkpoint (issue 10): the reference's own outputs
//! byte for byte, and every refusal of what the reference silently damages, on damaged
//! copies of it.

use std::path::{Path, PathBuf};

use crate::harness::{assert_refused, assert_same_file, convert, dir_entries, fixture, tempdir};

fn golden(rel: &str) -> PathBuf {
    fixture(&format!("golden/dcp_tiny/{rel}"))
}

const SHARD_1: &str = "shard-00001-model-00001-of-00001.safetensors";
const SHARD_2: &str = "shard-00002-model-00001-of-00001.safetensors";
const MAPPING: &str = ".hf_metadata/fqn_to_file_index_mapping.json";

/// `nemoconv consolidate OPTIONS... IN OUT`, input checked unchanged.
fn consolidate(options: &[&str], input: &Path, output: &Path) -> crate::harness::Run {
    convert("consolidate", options, input, output)
}

/// Asserts that `out` holds exactly the files of `reference`, the tensor files and metadata
/// byte for byte and the index as parsed JSON (its order is the reference's directory order).
fn assert_same_output(out: &Path, reference: &Path, except: &[&str]) {
    assert_eq!(dir_entries(out), dir_entries(reference), "file list");
    for name in dir_entries(reference) {
        if name == "model.safetensors.index.json" {
            let parse = |dir: &Path| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap()
            };
            assert_eq!(parse(out), parse(reference), "index");
        } else if !except.contains(&name.as_str()) {
            assert_same_file(out, reference, &name);
        }
    }
}

/// A writable copy of the golden `sharded/` directory.
fn damaged_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("model");
    copy_dir(&golden("sharded"), &copy);
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
            let mut perms = std::fs::metadata(&dst).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&dst, perms).unwrap();
        }
    }
}

/// Rewrites the golden mapping of `model` with `edit`.
fn edit_mapping(model: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = model.join(MAPPING);
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut map);
    std::fs::write(&path, serde_json::to_string_pretty(&map).unwrap()).unwrap();
}

#[test]
fn golden_output_is_byte_identical_to_the_reference() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    consolidate(&[], &golden("sharded"), &out)
        .success()
        .stdout_empty();
    assert_same_output(&out, &golden("consolidated"), &[]);
}

#[test]
fn lenient_golden_output_is_the_same_because_the_ranks_agree_on_dtypes() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    consolidate(&["--lenient", "-q"], &golden("sharded"), &out).success();
    assert_same_output(&out, &golden("consolidated"), &[]);
}

#[test]
fn dtype_f16_equals_the_reference_cast_with_dtype_key_set_too() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    consolidate(&["--dtype", "f16"], &golden("sharded"), &out).success();
    assert_same_output(&out, &golden("consolidated_cast_fp16"), &["config.json"]);
    // The reference sets torch_dtype and leaves the v5 dtype stale; nemoconv sets both.
    let reference = std::fs::read_to_string(golden("consolidated_cast_fp16/config.json")).unwrap();
    let expected = reference.replace("\"dtype\": \"bfloat16\"", "\"dtype\": \"float16\"");
    assert_ne!(
        expected, reference,
        "the reference config has a stale dtype key"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        expected
    );
}

#[test]
fn dry_run_lists_the_plan_and_writes_nothing() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    let run = consolidate(&["--dry-run", "--json"], &golden("sharded"), &out);
    run.success();
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let outputs = &plan["outputs"][0];
    assert_eq!(outputs["shards"].as_array().unwrap().len(), 3);
    assert_eq!(outputs["bytes"], 18208);
    let embed = outputs["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "backbone.embeddings.weight")
        .unwrap();
    assert_eq!(embed["op"], "assemble");
    assert_eq!(embed["shape"], serde_json::json!([64, 16]));
    assert_eq!(embed["inputs"].as_array().unwrap().len(), 2);
    assert!(!out.exists());
}

#[test]
fn json_summary_reports_the_run() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    let run = consolidate(&["--json"], &golden("sharded"), &out);
    run.success();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["command"], "consolidate");
    assert_eq!(summary["tensors"], 55);
    assert_eq!(summary["shards"], 3);
    assert_eq!(
        summary["completed_dtypes"], 8,
        "experts 2-3 of layers 1 and 3"
    );
}

#[test]
fn a_missing_first_rank_file_is_refused_naming_the_gap() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    std::fs::remove_file(model.join(SHARD_1)).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, "\"backbone.embeddings.weight\"", "[0:32, 0:16]");
    run.stderr_has(SHARD_2);
}

#[test]
fn a_missing_last_rank_file_is_refused_naming_the_tensors_only_it_held() {
    // Rank 0's pieces alone look like whole, smaller tensors; the experts only rank 1 held
    // are mapped but absent.
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    std::fs::remove_file(model.join(SHARD_2)).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, "experts.2.", "fqn_to_file_index_mapping.json");
    run.stderr_has("10 mapped tensors are missing");
}

#[test]
fn overlapping_pieces_are_refused_naming_both_files() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    let stray = "shard-00003-model-00001-of-00001.safetensors";
    std::fs::copy(model.join(SHARD_1), model.join(stray)).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, "\"backbone.embeddings.weight\"", stray);
    run.stderr_has(SHARD_1).stderr_has("[0:32, 0:16]");
}

#[test]
fn an_input_tensor_absent_from_the_mapping_is_refused() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    edit_mapping(&model, |m| {
        m.remove("backbone.layers.1.mixer.experts.3.up_proj.weight");
    });
    let out = tmp.path().join("hf");
    let run = consolidate(&["--lenient"], &model, &out);
    assert_refused(&run, &out, "experts.3.up_proj.weight", SHARD_2);
    run.stderr_has("fqn_to_file_index_mapping.json");
}

#[test]
fn a_mapped_tensor_no_shard_holds_is_refused() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    edit_mapping(&model, |m| {
        m.insert("bogus.weight".into(), 4.into());
    });
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(
        &run,
        &out,
        "\"bogus.weight\"",
        "fqn_to_file_index_mapping.json",
    );
    run.stderr_has("--lenient");
}

#[test]
fn lenient_drops_and_lists_mapped_tensors_no_shard_holds_and_keeps_the_file_count() {
    // DCP-FORMAT §3.1: N comes from the mapping; index 4 has no data, so no fourth file.
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    edit_mapping(&model, |m| {
        m.insert("bogus.weight".into(), 4.into());
    });
    let out = tmp.path().join("hf");
    let run = consolidate(&["--lenient"], &model, &out);
    run.success().stderr_has("dropped \"bogus.weight\"");
    let reference = golden("consolidated");
    for i in 1..=3 {
        let ours = out.join(format!("model-0000{i}-of-00004.safetensors"));
        let theirs = reference.join(format!("model-0000{i}-of-00003.safetensors"));
        assert!(
            std::fs::read(ours).unwrap() == std::fs::read(theirs).unwrap(),
            "file {i}"
        );
    }
    assert!(!out.join("model-00004-of-00004.safetensors").exists());
}

#[test]
fn a_safetensors_file_without_dcp_metadata_is_refused() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    let plain = model.join("model-00001-of-00003.safetensors");
    std::fs::copy(
        golden("consolidated/model-00001-of-00003.safetensors"),
        &plain,
    )
    .unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(
        &run,
        &out,
        "DCP_SHARDING_INFO",
        "model-00001-of-00003.safetensors",
    );
}

#[test]
fn pieces_of_one_tensor_with_different_dtypes_are_refused() {
    // Rank 1's embedding piece relabelled F16 (same size, the header keeps its length).
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    let path = model.join(SHARD_2);
    let mut bytes = std::fs::read(&path).unwrap();
    let from = br#""backbone.embeddings.weight":{"dtype":"BF16","#;
    let to = br#""backbone.embeddings.weight":{"dtype":"F16" ,"#;
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + from.len()].copy_from_slice(to);
    std::fs::write(&path, bytes).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, "\"backbone.embeddings.weight\"", SHARD_1);
    run.stderr_has(SHARD_2).stderr_has("F16");
}

#[test]
fn a_checkpoint_without_hf_metadata_is_refused() {
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    std::fs::remove_dir_all(model.join(".hf_metadata")).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, ".hf_metadata", &model.display().to_string());
}

#[test]
fn workers_then_finalize_equal_one_process() {
    let tmp = tempdir();
    let out = tmp.path().join("hf");
    for k in ["0/2", "1/2"] {
        consolidate(&["--worker", k, "-q"], &golden("sharded"), &out).success();
        assert!(!out.exists(), "no output before finalize");
    }
    crate::harness::nemoconv(&["finalize".as_ref(), out.as_os_str()]).success();
    assert_same_output(&out, &golden("consolidated"), &[]);
}

#[test]
fn sharding_metadata_that_disagrees_with_the_header_is_refused() {
    // lm_head's saved_offsets in rank 1's file lose a dimension (the header keeps its length).
    let tmp = tempdir();
    let model = damaged_copy(tmp.path());
    let path = model.join(SHARD_2);
    let mut bytes = std::fs::read(&path).unwrap();
    let (from, to) = (br#"[32, 0]}}""#, br#"[32]}}   ""#);
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + from.len()].copy_from_slice(to);
    std::fs::write(&path, bytes).unwrap();
    let out = tmp.path().join("hf");
    let run = consolidate(&[], &model, &out);
    assert_refused(&run, &out, "\"lm_head.weight\"", SHARD_2);
    run.stderr_has("saved_offsets [32]");
}
