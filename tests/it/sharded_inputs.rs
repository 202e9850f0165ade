//! The other commands on training checkpoints (issue 10): `verify SHARDED HF` compares the
//! assembled tensors without writing anything, `inspect` shows ranks, pieces and problems,
//! `from-hf SHARDED` equals `from-hf` of the consolidation.

use std::path::PathBuf;

use crate::builder::Dt;
use crate::dcp_gen::{DcpCheckpoint, Entry, columns, rows, values, whole};
use crate::harness::{
    assert_refused, assert_same_tensors, convert, file_bytes, fixture, nemoconv, read_checkpoint,
    tempdir,
};

fn golden(rel: &str) -> PathBuf {
    fixture(&format!("golden/dcp_tiny/{rel}"))
}

#[test]
fn verify_sharded_against_the_reference_consolidation_is_identical() {
    let args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        "-q".into(),
        golden("sharded").into(),
        golden("consolidated").into(),
    ];
    let run = nemoconv(&args);
    run.success()
        .stdout_has("identical")
        .stdout_has("55 compared");
}

#[test]
fn verify_sharded_finds_one_changed_element() {
    let tmp = tempdir();
    let hf = tmp.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for entry in std::fs::read_dir(golden("consolidated")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), hf.join(entry.file_name())).unwrap();
    }
    // The last byte of file 3 is the last element of its last tensor.
    let path = hf.join("model-00003-of-00003.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        "-q".into(),
        golden("sharded").into(),
        hf.into(),
    ];
    nemoconv(&args).code(1).stdout_has("differ");
}

#[test]
fn verify_sharded_with_column_pieces_against_its_consolidation() {
    let ck = DcpCheckpoint {
        world: 3,
        entries: vec![
            Entry {
                name: "up".into(),
                tensor: values("BF16", &[6, 10], 1),
                pieces: columns(&[6, 10], &[2, 0, 1]),
            },
            Entry {
                name: "emb".into(),
                tensor: values("F32", &[7, 3], 2),
                pieces: rows(&[7, 3], 3),
            },
            Entry {
                name: "bias".into(),
                tensor: values("F32", &[4], 3),
                pieces: whole(&[4], 1),
            },
        ],
        ..DcpCheckpoint::default()
    }
    .one_file();
    let (_tmp, model, out) = ck.consolidated();
    for (a, b) in [(&model, &out), (&out, &model)] {
        let args: Vec<std::ffi::OsString> = vec!["verify".into(), "-q".into(), a.into(), b.into()];
        nemoconv(&args).success().stdout_has("identical");
    }
}

#[test]
fn inspect_sharded_shows_ranks_pieces_and_full_shapes() {
    let args: Vec<std::ffi::OsString> =
        vec!["inspect".into(), "--json".into(), golden("sharded").into()];
    let run = nemoconv(&args);
    run.success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["pattern"], "ME*E-M", "config from .hf_metadata/");
    assert_eq!(report["n_tensors"], 55);
    assert_eq!(report["problems"], serde_json::json!([]));
    let sharded = &report["sharded"];
    assert_eq!(sharded["n_ranks"], 2);
    assert_eq!(sharded["n_pieces"], 92);
    let embed = sharded["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "backbone.embeddings.weight")
        .unwrap();
    assert_eq!(embed["shape"], serde_json::json!([64, 16]));
    assert_eq!(embed["pieces"][1]["offset"], serde_json::json!([32, 0]));
    assert_eq!(
        embed["pieces"][1]["file"],
        "shard-00002-model-00001-of-00001.safetensors"
    );
}

#[test]
fn inspect_sharded_lists_coverage_and_mapping_problems() {
    let tmp = tempdir();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(model.join(".hf_metadata")).unwrap();
    for rel in [
        "shard-00002-model-00001-of-00001.safetensors",
        ".hf_metadata/config.json",
        ".hf_metadata/fqn_to_file_index_mapping.json",
    ] {
        std::fs::copy(golden(&format!("sharded/{rel}")), model.join(rel)).unwrap();
    }
    let args: Vec<std::ffi::OsString> = vec!["inspect".into(), model.clone().into()];
    let run = nemoconv(&args);
    run.success()
        .stdout_has(
            "tensor \"backbone.embeddings.weight\": elements [0:32, 0:16] are in no rank file",
        )
        .stdout_has("mapped tensors are in no rank file");
}

#[test]
fn from_hf_of_sharded_equals_from_hf_of_its_consolidation() {
    let tmp = tempdir();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    convert("from-hf", &["-q"], &golden("sharded"), &a).success();
    convert("from-hf", &["-q"], &golden("consolidated"), &b).success();
    assert_eq!(file_bytes(&a), file_bytes(&b));
}

/// The golden model's tensors (as the reference consolidated them) saved over `world`
/// ranks as FSDP does (row pieces; each routed expert whole on one rank), with `columns_of`
/// cut in column pieces instead (`ep_shard > 1`).
fn golden_model_over(world: usize, columns_of: &str) -> DcpCheckpoint {
    golden_model_stored_as(world, columns_of, None)
}

/// As [`golden_model_over`], every tensor stored in `stored` (a model trained in that dtype)
/// with the golden save's dtype mapping (rank 0's names only), when given.
fn golden_model_stored_as(world: usize, columns_of: &str, stored: Option<Dt>) -> DcpCheckpoint {
    let tensors = read_checkpoint(&golden("consolidated"));
    let entries = tensors
        .into_iter()
        .map(|(name, tensor)| {
            let tensor = match stored {
                Some(dt) => crate::expect::cast(&tensor, dt),
                None => tensor,
            };
            let pieces = if name == columns_of {
                columns(&tensor.shape, &(0..world).collect::<Vec<_>>())
            } else if name.contains(".experts.") {
                whole(&tensor.shape, name.len() % world)
            } else {
                rows(&tensor.shape, world)
            };
            Entry {
                name,
                tensor,
                pieces,
            }
        })
        .collect();
    let dtype_map = stored.map(|_| {
        let text = std::fs::read(golden("sharded/.hf_metadata/fqn_to_dtype_mapping.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    });
    DcpCheckpoint {
        world,
        entries,
        dtype_map,
        config: Some(std::fs::read_to_string(golden("sharded/.hf_metadata/config.json")).unwrap()),
        ..DcpCheckpoint::default()
    }
    .one_file()
}

#[test]
fn from_hf_of_a_float32_trained_save_equals_from_hf_of_its_consolidation() {
    // Stored F32 everywhere; the mapping (rank 0's) brings BF16 back, completed for the
    // experts of rank 1, so both equal from-hf of the reference's BF16 output.
    let tmp = tempdir();
    let dir = |n: &str| tmp.path().join(n);
    golden_model_stored_as(2, "", Some(Dt::F32)).write(&dir("model"));
    convert("from-hf", &["-q"], &dir("model"), &dir("a")).success();
    convert("consolidate", &["-q"], &dir("model"), &dir("hf")).success();
    convert("from-hf", &["-q"], &dir("hf"), &dir("b")).success();
    convert("from-hf", &["-q"], &golden("consolidated"), &dir("c")).success();
    assert_same_tensors(&read_checkpoint(&dir("a")), &read_checkpoint(&dir("b")));
    assert_same_tensors(&read_checkpoint(&dir("a")), &read_checkpoint(&dir("c")));
}

#[test]
fn from_hf_of_a_generated_3_rank_save_equals_from_hf_of_the_reference_output() {
    let tmp = tempdir();
    let (model, a, b) = (
        tmp.path().join("model"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    golden_model_over(3, "").write(&model);
    convert("from-hf", &["-q"], &model, &a).success();
    convert("from-hf", &["-q"], &golden("consolidated"), &b).success();
    assert_same_tensors(&read_checkpoint(&a), &read_checkpoint(&b));
}

#[test]
fn from_hf_of_column_split_experts_is_refused_with_the_way_out() {
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("out"));
    let expert = "backbone.layers.1.mixer.experts.0.up_proj.weight";
    golden_model_over(2, expert).write(&model);
    let run = convert("from-hf", &[], &model, &out);
    assert_refused(&run, &out, expert, "consolidate first");
}

#[test]
fn to_hf_of_a_training_checkpoint_points_to_consolidate() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let run = convert("to-hf", &[], &golden("sharded"), &out);
    assert_refused(&run, &out, "nemoconv consolidate", "sharded");
}
