//! Issue 15: workers divide a run by bytes (`--split bytes`, the default), several of them
//! writing into one shard file, or by whole shards (`--split shards`); for any worker count the
//! output is the bytes of a one-process run, and `finalize` refuses unless the markers cover
//! every byte of every shard exactly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Job, assert_same_files, finalize, hf_input, spawn, wait, work_dir};
use crate::harness::{shard_files, tempdir};

const MODES: [&str; 2] = ["bytes", "shards"];

/// The from-hf conversion of the test input, with a small shard cap.
fn from_hf_job(input: &Path) -> Job<'_> {
    Job {
        subcommand: "from-hf",
        options: &["-q", "--max-shard-size", super::SHARD_CAP],
        input,
    }
}

/// Runs all `m` workers at once into `out` (so several write one file at the same time).
fn run_all(job: &Job, m: usize, split: &str, out: &Path) {
    let children: Vec<_> = (0..m)
        .map(|k| {
            let extra = [format!("--worker={k}/{m}"), format!("--split={split}")];
            spawn(&job.args(&extra, out), &[])
        })
        .collect();
    for child in children {
        wait(child).success();
    }
}

/// The markers in the work directory of `out`, by worker.
fn markers(out: &Path) -> Vec<(PathBuf, Value)> {
    let mut found: Vec<(PathBuf, Value)> = std::fs::read_dir(work_dir(out))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| (p.file_name().unwrap().to_string_lossy()).starts_with(".nemoconv-worker-"))
        .map(|p| {
            let value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p, value)
        })
        .collect();
    found.sort_by_key(|(_, v)| v["worker"].as_u64());
    found
}

/// Bytes each marker says its worker wrote.
fn bytes_per_worker(out: &Path) -> Vec<u64> {
    (markers(out).iter())
        .map(|(_, m)| {
            (m["ranges"].as_array().unwrap().iter())
                .map(|r| r["len"].as_u64().unwrap())
                .sum()
        })
        .collect()
}

/// Rewrites a marker after an edit, with the digest recomputed as nemoconv does (SHA-256 of
/// the compact JSON, keys sorted, digest empty), so only the edit itself can be refused.
fn rewrite_marker(path: &Path, mut marker: Value) {
    marker["digest"] = "".into();
    let sum = Sha256::digest(marker.to_string().as_bytes());
    marker["digest"] = sum
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    std::fs::write(path, serde_json::to_vec_pretty(&marker).unwrap()).unwrap();
}

/// The largest unit of work of the checkpoint in `dir`: a shard's header or a whole tensor
/// (these tensors are far below the 16 MiB of a copy job).
fn largest_unit(dir: &Path) -> u64 {
    let mut largest = 0;
    for shard in shard_files(dir) {
        let bytes = std::fs::read(dir.join(shard)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let header: Value = serde_json::from_slice(&bytes[8..8 + n as usize]).unwrap();
        largest = largest.max(8 + n);
        for (name, t) in header.as_object().unwrap() {
            if name != "__metadata__" {
                let offsets = &t["data_offsets"];
                largest = largest.max(offsets[1].as_u64().unwrap() - offsets[0].as_u64().unwrap());
            }
        }
    }
    largest
}

#[test]
fn any_worker_count_in_either_split_mode_gives_the_bytes_of_one_process() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let single = tmp.path().join("single");
    job.single(&single);
    let n_shards = shard_files(&single).len();
    let index: Value = serde_json::from_slice(
        &std::fs::read(single.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let n_tensors = index["weight_map"].as_object().unwrap().len();
    assert!(
        n_shards >= 3 && n_tensors > n_shards,
        "{n_shards} shards, {n_tensors} tensors"
    );
    let total: u64 = crate::harness::file_bytes(&single)
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|(_, b)| b.len() as u64)
        .sum();
    let largest_unit = largest_unit(&single);
    for split in MODES {
        for m in [1, 2, 3, 5, n_shards + 1, n_tensors + 1] {
            let out = tmp.path().join(format!("out-{split}-{m}"));
            run_all(&job, m, split, &out);
            let written = bytes_per_worker(&out);
            assert_eq!(written.len(), m, "{split} {m}: one marker per worker");
            assert_eq!(
                written.iter().sum::<u64>(),
                total,
                "{split} {m}: the markers must list every byte of every shard once"
            );
            if split == "bytes" {
                // A share is the bytes from K/M to (K+1)/M of the run, plus the unit that
                // crosses the end: the mean plus at most the largest unit.
                let bound = total / m as u64 + largest_unit + 1;
                assert!(
                    written.iter().all(|&b| b <= bound),
                    "{split} {m}: a share exceeds the mean plus the largest unit ({bound}): {written:?}"
                );
            }
            finalize(&out).success();
            assert_same_files(&out, &single);
        }
    }
}

#[test]
fn byte_split_workers_share_shard_files_and_balance_their_bytes() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let out = tmp.path().join("out");
    let m = 3;
    run_all(&job, m, "bytes", &out);
    let found = markers(&out);
    let files_of = |m: &Value| -> Vec<u64> {
        (m["ranges"].as_array().unwrap().iter())
            .map(|r| r["file"].as_u64().unwrap())
            .collect()
    };
    let shared = (0..found.len() - 1).any(|k| {
        let next = files_of(&found[k + 1].1);
        files_of(&found[k].1).iter().any(|f| next.contains(f))
    });
    assert!(shared, "no shard file was written by two workers");
    // Every unit is at most one tensor here, so no share exceeds the mean by more than the
    // largest tensor (plus a header).
    let written = bytes_per_worker(&out);
    let mean = written.iter().sum::<u64>() / m as u64;
    let largest = *written.iter().max().unwrap();
    let smallest = *written.iter().min().unwrap();
    assert!(smallest > 0, "a worker got nothing: {written:?}");
    assert!(
        largest - smallest <= mean,
        "shares are far apart: {written:?}"
    );
    for (_, marker) in &found {
        assert_eq!(marker["split"], "bytes");
        assert_eq!(marker["workers"], m);
    }
}

#[test]
fn finalize_refuses_a_range_no_marker_lists() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let out = tmp.path().join("out");
    run_all(&job, 3, "bytes", &out);
    let (path, mut marker) = markers(&out).swap_remove(1);
    let removed = marker["ranges"].as_array_mut().unwrap().remove(0);
    let file = marker["files"][removed["file"].as_u64().unwrap() as usize]["path"]
        .as_str()
        .unwrap()
        .to_string();
    rewrite_marker(&path, marker);
    let run = finalize(&out);
    let (from, len) = (
        removed["offset"].as_u64().unwrap(),
        removed["len"].as_u64().unwrap(),
    );
    run.code(1)
        .stderr_has(&file)
        .stderr_has(&format!("bytes {from}..{}", from + len))
        .stderr_has("written by no worker");
    assert!(!out.exists(), "finalize published a shard with a hole");
    assert!(work_dir(&out).is_dir(), "a refused finalize keeps the work");
}

#[test]
fn finalize_refuses_a_marker_edited_without_its_digest() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let out = tmp.path().join("out");
    run_all(&job, 2, "bytes", &out);
    let (path, mut marker) = markers(&out).swap_remove(0);
    marker["ranges"].as_array_mut().unwrap().pop();
    std::fs::write(&path, marker.to_string()).unwrap();
    let run = finalize(&out);
    run.code(1)
        .stderr_has(&path.display().to_string())
        .stderr_has("digest");
    assert!(!out.exists());
}

#[test]
fn finalize_refuses_workers_of_different_split_modes() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let out = tmp.path().join("out");
    for (k, split) in [(0, "bytes"), (1, "shards")] {
        let extra = [format!("--worker={k}/2"), format!("--split={split}")];
        wait(spawn(&job.args(&extra, &out), &[])).success();
    }
    let run = finalize(&out);
    run.code(1)
        .stderr_has("split")
        .stderr_has("nemoconv finalize --abandon");
    assert!(!out.exists());
}

#[test]
fn a_byte_split_worker_rerun_after_finalize_refused_completes_the_output() {
    // Worker 1's marker is lost (its node died after writing): rerunning it rewrites its
    // ranges into the shared files, which the other workers' bytes survive.
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let single = tmp.path().join("single");
    job.single(&single);
    let out = tmp.path().join("out");
    run_all(&job, 3, "bytes", &out);
    let (path, _) = markers(&out).swap_remove(1);
    std::fs::remove_file(&path).unwrap();
    finalize(&out).code(1).stderr_has("workers [1] of 3");
    let extra = ["--worker=1/3".to_string()];
    wait(spawn(&job.args(&extra, &out), &[])).success();
    finalize(&out).success();
    assert_same_files(&out, &single);
}

#[test]
fn an_idle_byte_split_worker_writes_nothing_and_says_so() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = Job {
        subcommand: "from-hf",
        options: &[],
        input: &input,
    };
    let out = tmp.path().join("out");
    // Far more workers than units of work: most parts are empty (worker 1's is unless the
    // first shard's header is under a thousandth of the output).
    let m = 1000;
    let idle = (1..20).find(|k| {
        let run = wait(spawn(&job.args(&[format!("--worker={k}/{m}")], &out), &[]));
        run.success();
        run.stderr.contains("wrote 0 tensors, 0 bytes in 0 shards")
    });
    let Some(k) = idle else {
        panic!("none of workers 1..20 of {m} was idle");
    };
    let found = markers(&out);
    let (_, marker) = (found.iter())
        .find(|(_, m)| m["worker"] == k)
        .expect("the idle worker leaves a marker");
    assert_eq!(marker["ranges"], Value::Array(Vec::new()));
}

/// Hostile input: an absurd worker count is accepted by a worker (it writes its share, here
/// nothing), and finalize refuses at once naming the first unfinished workers and counting the
/// rest, instead of listing them all.
#[test]
fn finalize_of_an_absurd_worker_count_names_a_few_and_counts_the_rest() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let job = from_hf_job(&input);
    let out = tmp.path().join("out");
    let m = usize::MAX;
    wait(spawn(&job.args(&[format!("--worker=0/{m}")], &out), &[])).success();
    finalize(&out)
        .code(1)
        .stderr_has("workers [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]")
        .stderr_has(&format!(" and {} more of {m} have not finished", m - 17));
    assert!(work_dir(&out).exists(), "a refused finalize keeps the work");
}

#[test]
fn split_without_worker_is_a_usage_error() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    let args: Vec<OsString> = vec![
        "from-hf".into(),
        "--split=shards".into(),
        input.into(),
        out.clone().into(),
    ];
    wait(spawn(&args, &[])).code(2).stderr_has("--worker");
    let bad: Vec<OsString> = vec![
        "from-hf".into(),
        "--worker=0/2".into(),
        "--split=tensors".into(),
        tmp.path().join("in").into(),
        out.clone().into(),
    ];
    wait(spawn(&bad, &[])).code(2).stderr_has("--split");
    assert!(!out.exists() && !work_dir(&out).exists());
}
