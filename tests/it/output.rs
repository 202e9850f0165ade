//! The output directory (SPEC §7): shard-size cap, copied non-weight files, an existing OUT
//! with and without `--force`, and deterministic bytes whatever the thread count.

use std::path::{Path, PathBuf};

use crate::builder::{CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::from_hf::convert;
use crate::harness::{
    INDEX_FILE, assert_same_file, assert_same_tensors, assert_valid_output, files_below, from_hf,
    read_shard, sha256_dir, shard_files, tempdir, to_hf,
};

/// A checkpoint whose embeddings and lm_head (128 x 16 BF16 = 4096 bytes) exceed a 4 KB cap.
fn wide_vocab() -> CheckpointBuilder {
    CheckpointBuilder {
        vocab: 128,
        hidden: 16,
        ..Default::default()
    }
}

const CAP_BYTES: u64 = 4_000;

/// Every shard of `dir` holds at most [`CAP_BYTES`], or a single tensor; `big` sits alone.
fn assert_capped(dir: &Path, big: &[&str]) {
    let files = shard_files(dir);
    assert!(
        files.len() > 2,
        "{}: a 4KB cap must give several shards",
        dir.display()
    );
    for file in files {
        let shard = read_shard(&file);
        let n = shard.tensors.len();
        assert!(
            shard.payload_bytes <= CAP_BYTES || n == 1,
            "{}: {} bytes in {n} tensors, over the 4KB cap",
            file.display(),
            shard.payload_bytes
        );
        for name in big {
            if shard.tensors.contains_key(*name) {
                assert_eq!(
                    n,
                    1,
                    "{}: {name} is larger than the cap and must sit alone",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn max_shard_size_caps_every_shard_and_big_tensors_sit_alone() {
    let ck = wide_vocab().build();
    assert_eq!(ck.get("backbone.embeddings.weight").data.len(), 4096);
    let c = convert(&ck, Files::Indexed(2), &["--max-shard-size", "4KB"]);
    assert_capped(
        &c.internal,
        &["model.embed_tokens.weight", "lm_head.weight"],
    );
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));

    let out = c.tmp.path().join("hf");
    to_hf(&["--max-shard-size", "4KB"], &c.internal, &out).success();
    assert_capped(&out, &["backbone.embeddings.weight", "lm_head.weight"]);
    assert_same_tensors(
        &assert_valid_output(&out),
        &expect::round_trip(&ck.map(), Dt::Bf16),
    );
}

/// The files of `dir` that are neither shards nor the index.
fn other_files(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "safetensors") && p.as_os_str() != INDEX_FILE)
        .collect()
}

#[test]
fn non_weight_files_are_copied_byte_identical() {
    let mut ck = CheckpointBuilder::default().build();
    ck.other_files = vec![
        (
            "tokenizer_config.json".into(),
            br#"{"model_max_length": 8}"#.to_vec(),
        ),
        (
            "generation_config.json".into(),
            br#"{"do_sample": false}"#.to_vec(),
        ),
        (
            "tokenizer/vocab.txt".into(),
            b"a\nb\n\xff binary tail".to_vec(),
        ),
    ];
    let c = convert(&ck, Files::Indexed(2), &[]);
    let out = c.tmp.path().join("hf");
    to_hf(&[], &c.internal, &out).success();
    let want = other_files(&c.input);
    assert_eq!(want.len(), 4, "config.json and the three files above");
    for dir in [&c.internal, &out] {
        assert_eq!(
            other_files(dir),
            want,
            "{}: non-weight files",
            dir.display()
        );
        for rel in &want {
            assert_same_file(&c.input, dir, rel.to_str().unwrap());
        }
    }
}

/// A written default checkpoint and an OUT directory that already holds `keep.txt`.
fn with_existing_output() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    CheckpointBuilder::default()
        .build()
        .write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "old content").unwrap();
    (tmp, input, out)
}

#[test]
fn existing_non_empty_output_is_refused_without_force() {
    let (_tmp, input, out) = with_existing_output();
    let before = sha256_dir(&out);
    let run = from_hf(&[], &input, &out);
    run.code(1).stderr_has(&out.display().to_string());
    assert_eq!(
        sha256_dir(&out),
        before,
        "the old output must be left intact"
    );
    assert_eq!(files_below(&out), vec![PathBuf::from("keep.txt")]);
}

#[test]
fn existing_output_is_replaced_with_force() {
    let (_tmp, input, out) = with_existing_output();
    from_hf(&["--force"], &input, &out).success();
    assert!(
        !out.join("keep.txt").exists(),
        "--force replaces the directory"
    );
    let ck = CheckpointBuilder::default().build();
    assert_same_tensors(
        &assert_valid_output(&out),
        &expect::from_hf(&ck.map(), Dt::Bf16),
    );
}

#[test]
fn existing_empty_output_directory_is_used() {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    let ck = CheckpointBuilder::default().build();
    ck.write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    from_hf(&[], &input, &out).success();
    assert_same_tensors(
        &assert_valid_output(&out),
        &expect::from_hf(&ck.map(), Dt::Bf16),
    );
}

#[test]
fn output_is_deterministic_across_runs_and_thread_counts() {
    let ck = CheckpointBuilder {
        mtp_pattern: "E".into(),
        ..wide_vocab()
    }
    .build();
    let tmp = tempdir();
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(3));
    let mut digests = Vec::new();
    for (run, threads) in ["1", "1", "2"].into_iter().enumerate() {
        let internal = tmp.path().join(format!("internal-{run}"));
        let hf = tmp.path().join(format!("hf-{run}"));
        let options = ["-j", threads, "--max-shard-size", "3KB"];
        from_hf(&options, &input, &internal).success();
        to_hf(&options, &internal, &hf).success();
        digests.push((sha256_dir(&internal), sha256_dir(&hf)));
    }
    assert_eq!(digests[0], digests[1], "two runs with -j 1 differ");
    assert_eq!(digests[0], digests[2], "-j 1 and -j 2 differ");
}
