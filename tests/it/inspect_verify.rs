//! `nemoconv inspect` and `nemoconv verify` driven as a user would, on the golden fixture:
//! exit codes, the tensor a difference names, and the JSON schema's main fields.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use assert_cmd::assert::Assert;
use tempfile::TempDir;

fn golden(rel: &str) -> PathBuf {
    crate::harness::fixture(&format!("golden/tiny/{rel}"))
}

fn nemoconv() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("nemoconv")
}

fn stdout(run: &Assert) -> String {
    String::from_utf8(run.get_output().stdout.clone()).unwrap()
}

fn stderr(run: &Assert) -> String {
    String::from_utf8(run.get_output().stderr.clone()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The name of the tensor whose data ends the safetensors file at `path` (the last in
/// offset order), read from the header.
fn last_tensor(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let (name, _) = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .max_by_key(|(_, info)| info["data_offsets"][1].as_u64().unwrap())
        .unwrap();
    name.clone()
}

#[test]
fn verify_golden_internal_against_our_from_hf_exits_0() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("internal");
    nemoconv()
        .args(["from-hf", "-q"])
        .arg(golden("hf"))
        .arg(&out)
        .assert()
        .success();
    let run = nemoconv()
        .arg("verify")
        .arg(golden("internal"))
        .arg(&out)
        .assert()
        .code(0);
    let text = stdout(&run);
    assert!(
        text.starts_with("identical: A has 43 tensors, B 43"),
        "{text}"
    );
}

#[test]
fn verify_hf_against_roundtrip_hf_exits_0() {
    nemoconv()
        .args(["verify", "--allow", "fp32-params"])
        .arg(golden("hf"))
        .arg(golden("roundtrip_hf"))
        .assert()
        .code(0);
}

#[test]
fn verify_with_a_flipped_byte_exits_1_naming_the_tensor() {
    let tmp = TempDir::new().unwrap();
    let copy = tmp.path().join("hf");
    copy_dir(&golden("hf"), &copy);
    let shard = copy.join("model-00002-of-00003.safetensors");
    let tensor = last_tensor(&shard);
    let mut bytes = std::fs::read(&shard).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    let run = nemoconv()
        .arg("verify")
        .arg(golden("hf"))
        .arg(&copy)
        .assert()
        .code(1);
    let text = stdout(&run);
    assert!(
        text.starts_with("different: 1 difference (1 data)"),
        "{text}"
    );
    assert!(text.contains(&format!("data       {tensor:?}")), "{text}");
    let run = nemoconv()
        .args(["verify", "--json"])
        .arg(golden("hf"))
        .arg(&copy)
        .assert()
        .code(1);
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["identical"], false);
    assert_eq!(json["differences"][0]["kind"], "data");
    assert_eq!(json["differences"][0]["name"], tensor.as_str());
}

#[test]
fn verify_of_unreadable_input_exits_2() {
    let tmp = TempDir::new().unwrap();
    let run = nemoconv()
        .arg("verify")
        .arg(golden("hf"))
        .arg(tmp.path().join("missing"))
        .assert()
        .code(2);
    assert!(
        stderr(&run).contains("missing: does not exist"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn inspect_json_of_golden_hf_reports_pattern_experts_and_tensors() {
    let run = nemoconv()
        .args(["inspect", "--json"])
        .arg(golden("hf"))
        .assert()
        .code(0);
    let json: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["layout"], "hf");
    assert_eq!(json["pattern"], "ME*E-M");
    assert_eq!(json["n_routed_experts"], 4);
    assert_eq!(json["n_tensors"], 55);
    assert_eq!(json["shards"].as_array().unwrap().len(), 3);
    assert_eq!(json["problems"], serde_json::json!([]));
}

#[test]
fn inspect_of_unreadable_input_exits_1() {
    let tmp = TempDir::new().unwrap();
    let run = nemoconv().arg("inspect").arg(tmp.path()).assert().code(1);
    let text = stderr(&run);
    assert!(text.contains("no *.safetensors file found"), "{text}");
}
