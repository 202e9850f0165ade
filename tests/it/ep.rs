//! Expert parallelism (SPEC §5, issue 5): `from-hf --ep-size N [--ep-rank R]` slices, `to-hf` of
//! one slice, and the merge of all slices back into one HF checkpoint, against the golden
//! reference slices and against expectations computed here from the inputs; plus the checks
//! that refuse slices which do not form one checkpoint.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::builder::{Checkpoint, CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::harness::{
    Run, Tensors, assert_refused, assert_same_file, assert_same_tensors, assert_valid_output,
    dir_entries, file_bytes, files_below, fixture, from_hf, nemoconv, read_checkpoint, read_shard,
    sha256_dir, shard_files, tempdir, to_hf,
};

fn golden(rel: &str) -> PathBuf {
    fixture(&format!("golden/tiny/{rel}"))
}

/// SPEC §5: the experts `[start, end)` of rank `r` of `n`, computed from the contract.
fn ep_range(n_experts: u64, n: u64, r: u64) -> (u64, u64) {
    let (q, m) = (n_experts / n, n_experts % n);
    let start = r * q + r.min(m);
    (start, start + q + u64::from(r < m))
}

/// The directory name of slice `r` of `n` in an all-ranks output.
fn rank_dir(r: u64, n: u64) -> String {
    format!("rank-{r:05}-of-{n:05}")
}

fn is_merged(name: &str) -> bool {
    name.ends_with(".experts.gate_and_up_projs") || name.ends_with(".experts.down_projs")
}

/// A full internal checkpoint cut down to the slice `[start, end)`: every merged expert
/// tensor keeps rows `start..end` of its dim 0, everything else is unchanged.
fn internal_slice(full: &Tensors, start: u64, end: u64) -> Tensors {
    full.iter()
        .map(|(name, t)| {
            let mut t = t.clone();
            if is_merged(name) {
                let row_bytes = t.data.len() / t.shape[0] as usize;
                t.data = t.data[start as usize * row_bytes..end as usize * row_bytes].to_vec();
                t.shape[0] = end - start;
            }
            (name.clone(), t)
        })
        .collect()
}

/// The expert id of an HF per-expert name, if it is one.
fn hf_expert_id(name: &str) -> Option<u64> {
    let re = regex::Regex::new(r"\.mixer\.experts\.(\d+)\.(up_proj|down_proj)\.weight$").unwrap();
    re.captures(name).map(|c| c[1].parse().unwrap())
}

/// An HF checkpoint cut down to the experts `[start, end)` (non-expert tensors kept).
fn hf_slice(full: &Tensors, start: u64, end: u64) -> Tensors {
    full.iter()
        .filter(|(name, _)| hf_expert_id(name).is_none_or(|id| (start..end).contains(&id)))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect()
}

/// Asserts that every shard of `dir` records the slice (SPEC §5, §7) under nemoconv's keys.
fn assert_slice_metadata(dir: &Path, n_experts: u64, n: u64, r: u64) {
    let (start, end) = ep_range(n_experts, n, r);
    let files = shard_files(dir);
    assert!(!files.is_empty(), "{}: no shard", dir.display());
    for file in files {
        let metadata = read_shard(&file).metadata;
        for (key, value) in [
            ("nemoconv.n_routed_experts", n_experts),
            ("nemoconv.ep_size", n),
            ("nemoconv.ep_rank", r),
            ("nemoconv.expert_start", start),
            ("nemoconv.expert_end", end),
        ] {
            assert_eq!(
                metadata.get(key),
                Some(&value.to_string()),
                "{}: __metadata__ {key} (whole metadata: {metadata:?})",
                file.display()
            );
        }
        assert_eq!(metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(
            metadata.get("nemoconv.layout").map(String::as_str),
            Some("internal")
        );
    }
}

/// `nemoconv to-hf OPTIONS... IN... OUT`; every input is checked unchanged.
fn to_hf_many(options: &[&str], inputs: &[&Path], out: &Path) -> Run {
    let before: Vec<String> = inputs.iter().map(|p| sha256_dir(p)).collect();
    let mut args: Vec<&OsStr> = vec![OsStr::new("to-hf")];
    args.extend(options.iter().map(OsStr::new));
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    args.push(out.as_os_str());
    let run = nemoconv(&args);
    for (input, digest) in inputs.iter().zip(before) {
        if sha256_dir(input) != digest {
            run.fail(&format!("the input {} was modified", input.display()));
        }
    }
    run
}

/// Writes `ck` as a three-shard HF checkpoint at `dir/name` and returns its path.
fn write_hf(dir: &Path, name: &str, ck: &Checkpoint) -> PathBuf {
    let path = dir.join(name);
    ck.write(&path, Files::Indexed(3));
    path
}

fn builder(n_experts: u64) -> CheckpointBuilder {
    CheckpointBuilder {
        n_experts,
        seed: n_experts,
        ..CheckpointBuilder::default()
    }
}

/// Writes slice `r` of `n` of the HF checkpoint `input` at `dir/name`.
fn make_slice(input: &Path, n: u64, r: u64, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let (n, r) = (n.to_string(), r.to_string());
    from_hf(&["-q", "--ep-size", &n, "--ep-rank", &r], input, &out).success();
    out
}

/// Flips one byte of tensor `name`'s data in the safetensors file `path`.
fn flip_byte_of(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).expect("read shard");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + header_len]).expect("header JSON");
    let start = header[name]["data_offsets"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: no tensor {name:?}", path.display()));
    bytes[8 + header_len + start as usize] ^= 0x01;
    std::fs::write(path, bytes).expect("write shard");
}

/// The shard of `dir` that holds tensor `name`.
fn shard_holding(dir: &Path, name: &str) -> PathBuf {
    shard_files(dir)
        .into_iter()
        .find(|f| read_shard(f).tensors.contains_key(name))
        .unwrap_or_else(|| panic!("{}: no shard holds {name:?}", dir.display()))
}

/// Copies the regular files of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for rel in files_below(from) {
        std::fs::copy(from.join(&rel), to.join(&rel)).unwrap();
    }
}

// ---- the golden case (SPEC §8) ----

#[test]
fn golden_ep2_rank_slices_equal_reference_slices_and_record_the_range() {
    for r in 0..2 {
        let tmp = tempdir();
        let slice = make_slice(&golden("hf"), 2, r, tmp.path(), "slice");
        let actual = assert_valid_output(&slice);
        assert_same_tensors(
            &actual,
            &read_checkpoint(&golden(&format!("internal_ep2_r{r}"))),
        );
        assert_slice_metadata(&slice, 4, 2, r);
        assert_same_file(&golden("hf"), &slice, "config.json");
    }
}

#[test]
fn golden_to_hf_of_each_slice_equals_reference_roundtrip_slice() {
    for r in 0..2 {
        let tmp = tempdir();
        let slice = make_slice(&golden("hf"), 2, r, tmp.path(), "slice");
        let out = tmp.path().join("hf");
        to_hf(&[], &slice, &out).success();
        let actual = assert_valid_output(&out);
        assert_same_tensors(
            &actual,
            &read_checkpoint(&golden(&format!("roundtrip_hf_ep2_r{r}"))),
        );
        assert_same_file(&golden("hf"), &out, "config.json");
    }
}

#[test]
fn golden_ep2_without_rank_writes_every_slice_in_rank_directories() {
    let tmp = tempdir();
    let all = tmp.path().join("all");
    from_hf(&["--ep-size", "2"], &golden("hf"), &all).success();
    assert_eq!(dir_entries(&all), vec![rank_dir(0, 2), rank_dir(1, 2)]);
    for r in 0..2 {
        let dir = all.join(rank_dir(r, 2));
        let actual = assert_valid_output(&dir);
        assert_same_tensors(
            &actual,
            &read_checkpoint(&golden(&format!("internal_ep2_r{r}"))),
        );
        assert_slice_metadata(&dir, 4, 2, r);
        // The one-pass output is the same, byte for byte, as the rank's own run.
        let single = make_slice(&golden("hf"), 2, r, tmp.path(), &format!("single{r}"));
        assert_eq!(
            file_bytes(&dir),
            file_bytes(&single),
            "{} differs from the --ep-rank {r} output",
            dir.display()
        );
    }
}

#[test]
fn golden_merge_of_both_slices_as_paths_equals_reference_roundtrip() {
    let tmp = tempdir();
    let r0 = make_slice(&golden("hf"), 2, 0, tmp.path(), "r0");
    let r1 = make_slice(&golden("hf"), 2, 1, tmp.path(), "r1");
    let expected = read_checkpoint(&golden("roundtrip_hf"));
    for (name, inputs) in [("in-order", [&r0, &r1]), ("reversed", [&r1, &r0])] {
        let out = tmp.path().join(name);
        to_hf_many(&[], &[inputs[0], inputs[1]], &out).success();
        assert_same_tensors(&assert_valid_output(&out), &expected);
        assert_same_file(&golden("hf"), &out, "config.json");
    }
}

#[test]
fn golden_merge_of_the_parent_directory_equals_reference_roundtrip() {
    let tmp = tempdir();
    let all = tmp.path().join("all");
    from_hf(&["-q", "--ep-size", "2"], &golden("hf"), &all).success();
    let out = tmp.path().join("hf");
    to_hf(&[], &all, &out).success();
    assert_same_tensors(
        &assert_valid_output(&out),
        &read_checkpoint(&golden("roundtrip_hf")),
    );
    assert_same_file(&golden("hf"), &out, "config.json");
}

// ---- uneven splits, generated checkpoints ----

/// Slices `E` experts over `n` ranks every way (one rank at a time and all at once), checks
/// each slice, each slice's own export and the merges against expectations from the input.
fn check_split(n_experts: u64, n: u64) {
    let tmp = tempdir();
    let ck = builder(n_experts).build();
    let input = write_hf(tmp.path(), "in", &ck);
    let full_internal = expect::from_hf(&ck.map(), Dt::Bf16);
    let full_hf = expect::round_trip(&ck.map(), Dt::Bf16);
    let all = tmp.path().join("all");
    from_hf(&["-q", "--ep-size", &n.to_string()], &input, &all).success();
    let expected_dirs: Vec<String> = (0..n).map(|r| rank_dir(r, n)).collect();
    assert_eq!(dir_entries(&all), expected_dirs);
    let mut slices = Vec::new();
    for r in 0..n {
        let (start, end) = ep_range(n_experts, n, r);
        let expected = internal_slice(&full_internal, start, end);
        let single = make_slice(&input, n, r, tmp.path(), &format!("r{r}"));
        for dir in [single.clone(), all.join(rank_dir(r, n))] {
            assert_same_tensors(&assert_valid_output(&dir), &expected);
            assert_slice_metadata(&dir, n_experts, n, r);
        }
        let out = tmp.path().join(format!("hf-r{r}"));
        to_hf(&["-q"], &single, &out).success();
        assert_same_tensors(&assert_valid_output(&out), &hf_slice(&full_hf, start, end));
        slices.push(single);
    }
    let out = tmp.path().join("merged-parent");
    to_hf(&["-q"], &all, &out).success();
    assert_same_tensors(&assert_valid_output(&out), &full_hf);
    let out = tmp.path().join("merged-paths");
    let mut inputs: Vec<&Path> = slices.iter().map(PathBuf::as_path).collect();
    inputs.reverse();
    to_hf_many(&["-q"], &inputs, &out).success();
    assert_same_tensors(&assert_valid_output(&out), &full_hf);
}

#[test]
fn ep_range_follows_spec_examples() {
    // The helper itself, on SPEC §5's examples, so the expectations above rest on the contract.
    assert_eq!(ep_range(5, 2, 0), (0, 3));
    assert_eq!(ep_range(5, 2, 1), (3, 5));
    assert_eq!(ep_range(7, 3, 0), (0, 3));
    assert_eq!(ep_range(7, 3, 1), (3, 5));
    assert_eq!(ep_range(7, 3, 2), (5, 7));
    assert_eq!(ep_range(128, 3, 2), (86, 128));
}

#[test]
fn uneven_split_e5_n2_round_trips_to_the_full_checkpoint() {
    check_split(5, 2);
}

#[test]
fn uneven_split_e5_n3_round_trips_to_the_full_checkpoint() {
    check_split(5, 3);
}

#[test]
fn uneven_split_e128_n3_round_trips_to_the_full_checkpoint() {
    check_split(128, 3);
}

// ---- a slice reads only its own experts ----

#[test]
fn a_rank_needs_only_its_own_experts_in_the_input() {
    let tmp = tempdir();
    let ck = builder(4).build();
    let expected_r1 = internal_slice(&expect::from_hf(&ck.map(), Dt::Bf16), 2, 4);
    let mut partial = ck.clone();
    // Experts 0 and 1 belong to rank 0 of 2.
    let gone = [
        "backbone.layers.1.mixer.experts.0.up_proj.weight",
        "backbone.layers.3.mixer.experts.1.down_proj.weight",
    ];
    for name in gone {
        partial.remove(name);
    }
    let input = write_hf(tmp.path(), "in", &partial);
    let r1 = tmp.path().join("r1");
    from_hf(&["--ep-size", "2", "--ep-rank", "1"], &input, &r1).success();
    assert_same_tensors(&assert_valid_output(&r1), &expected_r1);
    assert_slice_metadata(&r1, 4, 2, 1);

    let r0 = tmp.path().join("r0");
    let run = from_hf(&["--ep-size", "2", "--ep-rank", "0"], &input, &r0);
    run.code(1).stderr_has(gone[0]);
    assert!(!r0.exists(), "a refused slice must not be written");
    assert_eq!(
        dir_entries(tmp.path()),
        vec!["in".to_string(), "r1".to_string()]
    );
}

#[test]
fn a_rank_missing_one_of_its_own_experts_is_refused() {
    let tmp = tempdir();
    let mut ck = builder(5).build();
    // Rank 1 of 2 owns experts 3 and 4.
    let gone = "backbone.layers.3.mixer.experts.4.up_proj.weight";
    ck.remove(gone);
    let input = write_hf(tmp.path(), "in", &ck);
    let out = tmp.path().join("r1");
    let run = from_hf(&["--ep-size", "2", "--ep-rank", "1"], &input, &out);
    run.code(1).stderr_has(gone);
    assert!(!out.exists(), "a refused slice must not be written");
    assert_eq!(dir_entries(tmp.path()), vec!["in".to_string()]);
    // Rank 0 owns experts 0..3 and does not need it.
    let r0 = tmp.path().join("r0");
    from_hf(&["-q", "--ep-size", "2", "--ep-rank", "0"], &input, &r0).success();
    // The all-ranks pass needs every expert.
    let all = tmp.path().join("all");
    let run = from_hf(&["--ep-size", "2"], &input, &all);
    run.code(1).stderr_has(gone);
    assert!(!all.exists());
}

// ---- merge refusals ----

/// Slices of the E=`n_experts` checkpoint of `seed` over `n` ranks, written below `dir`.
fn slices_of(dir: &Path, n_experts: u64, n: u64, tag: &str) -> Vec<PathBuf> {
    let ck = builder(n_experts).build();
    let input = write_hf(dir, &format!("in-{tag}"), &ck);
    (0..n)
        .map(|r| make_slice(&input, n, r, dir, &format!("{tag}-r{r}")))
        .collect()
}

#[test]
fn merge_refuses_a_rank_given_twice() {
    let tmp = tempdir();
    let s = slices_of(tmp.path(), 4, 2, "e4n2");
    let again = tmp.path().join("e4n2-r0-copy");
    copy_dir(&s[0], &again);
    let out = tmp.path().join("merged");
    let run = to_hf_many(&[], &[&s[0], &again, &s[1]], &out);
    assert_refused(&run, &out, "rank 0", &again.display().to_string());
}

#[test]
fn merge_refuses_a_missing_rank() {
    let tmp = tempdir();
    let s = slices_of(tmp.path(), 5, 3, "e5n3");
    let out = tmp.path().join("merged");
    let run = to_hf_many(&[], &[&s[0], &s[2]], &out);
    assert_refused(&run, &out, "rank 1", "missing");
}

#[test]
fn merge_of_a_parent_directory_refuses_a_missing_rank() {
    let tmp = tempdir();
    let ck = builder(5).build();
    let input = write_hf(tmp.path(), "in", &ck);
    let all = tmp.path().join("all");
    from_hf(&["-q", "--ep-size", "3"], &input, &all).success();
    std::fs::remove_dir_all(all.join(rank_dir(1, 3))).unwrap();
    let out = tmp.path().join("merged");
    let run = to_hf(&[], &all, &out);
    assert_refused(&run, &out, "rank 1", "missing");
}

#[test]
fn merge_of_a_parent_directory_holding_one_of_two_slices_is_refused() {
    // A directory of `rank-*` slices asks for a merge (issue 5); with rank 1 gone it must not
    // quietly become the export of rank 0's slice alone.
    let tmp = tempdir();
    let ck = builder(4).build();
    let input = write_hf(tmp.path(), "in", &ck);
    let all = tmp.path().join("all");
    from_hf(&["-q", "--ep-size", "2"], &input, &all).success();
    std::fs::remove_dir_all(all.join(rank_dir(1, 2))).unwrap();
    let out = tmp.path().join("merged");
    let run = to_hf(&[], &all, &out);
    assert_refused(&run, &out, "rank 1", "missing");
}

#[test]
fn merge_refuses_slices_of_different_expert_counts() {
    let tmp = tempdir();
    let four = slices_of(tmp.path(), 4, 2, "e4n2");
    let six = slices_of(tmp.path(), 6, 2, "e6n2");
    let out = tmp.path().join("merged");
    let run = to_hf_many(&[], &[&four[0], &six[1]], &out);
    assert_refused(&run, &out, "E=6", &six[1].display().to_string());
}

#[test]
fn merge_refuses_slices_of_different_mesh_sizes() {
    let tmp = tempdir();
    let two = slices_of(tmp.path(), 6, 2, "e6n2");
    let three = slices_of(tmp.path(), 6, 3, "e6n3");
    let out = tmp.path().join("merged");
    let run = to_hf_many(&[], &[&two[0], &three[1], &three[2]], &out);
    assert_refused(&run, &out, "3 ranks", &three[1].display().to_string());
}

#[test]
fn merge_refuses_a_non_expert_tensor_that_differs_between_slices() {
    let tmp = tempdir();
    let s = slices_of(tmp.path(), 4, 2, "e4n2");
    let names = ["lm_head.weight", "model.layers.0.mixer._fp32_params.A_log"];
    for (i, name) in names.into_iter().enumerate() {
        let dir = tmp.path().join(format!("e4n2-r1-edited{i}"));
        copy_dir(&s[1], &dir);
        flip_byte_of(&shard_holding(&dir, name), name);
        let out = tmp.path().join("merged");
        let run = to_hf_many(&[], &[&s[0], &dir], &out);
        assert_refused(&run, &out, name, &dir.display().to_string());
    }
}

#[test]
fn merge_refuses_a_full_checkpoint_among_slices() {
    let tmp = tempdir();
    let ck = builder(4).build();
    let input = write_hf(tmp.path(), "in", &ck);
    let full = tmp.path().join("full");
    from_hf(&["-q"], &input, &full).success();
    let r1 = make_slice(&input, 2, 1, tmp.path(), "r1");
    let out = tmp.path().join("merged");
    let run = to_hf_many(&[], &[&full, &r1], &out);
    assert_refused(&run, &out, "slice", &full.display().to_string());
}

// ---- --exclude-regex sees global expert ids ----

/// The exclude regex the reference was given for `roundtrip_hf_excl_sel`, read from the manifest.
fn manifest_exclude_regex() -> String {
    let text = std::fs::read_to_string(golden("manifest.json")).expect("read manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    manifest["exclude_key_regex"]["roundtrip_hf_excl_sel"]["regex"]
        .as_str()
        .expect("manifest.json has the regex")
        .to_string()
}

#[test]
fn golden_merge_with_exclude_regex_equals_reference_excl_sel() {
    let regex = manifest_exclude_regex();
    let tmp = tempdir();
    let r0 = make_slice(&golden("hf"), 2, 0, tmp.path(), "r0");
    let r1 = make_slice(&golden("hf"), 2, 1, tmp.path(), "r1");
    let out = tmp.path().join("hf");
    to_hf_many(&["--exclude-regex", &regex], &[&r0, &r1], &out).success();
    assert_same_tensors(
        &assert_valid_output(&out),
        &read_checkpoint(&golden("roundtrip_hf_excl_sel")),
    );
    // One slice alone: the regex is matched against the global names (SPEC §4.4, §5), so
    // `experts.[02]` removes expert 2 of rank 1 and keeps expert 3.
    let anchored = regex::Regex::new(&format!("^(?:{regex})")).unwrap();
    let expected: Tensors = read_checkpoint(&golden("roundtrip_hf_ep2_r1"))
        .into_iter()
        .filter(|(name, _)| !anchored.is_match(name))
        .collect();
    assert!(!expected.contains_key("backbone.layers.1.mixer.experts.2.up_proj.weight"));
    assert!(expected.contains_key("backbone.layers.1.mixer.experts.3.up_proj.weight"));
    let out = tmp.path().join("hf-r1");
    to_hf(&["--exclude-regex", &regex], &r1, &out).success();
    assert_same_tensors(&assert_valid_output(&out), &expected);
}

// ---- option checks ----

#[test]
fn ep_rank_not_below_ep_size_is_a_usage_error() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    for (size, rank) in [("2", "2"), ("2", "5"), ("1", "1")] {
        let run = from_hf(&["--ep-size", size, "--ep-rank", rank], &golden("hf"), &out);
        run.code(2).stderr_has("--ep-rank");
        assert!(dir_entries(tmp.path()).is_empty(), "{}", run.command);
    }
    for options in [&["--ep-rank", "0"][..], &["--ep-size", "0"][..]] {
        let run = from_hf(options, &golden("hf"), &out);
        run.code(2);
        assert!(dir_entries(tmp.path()).is_empty(), "{}", run.command);
    }
}

#[test]
fn ep_size_above_the_expert_count_never_panics() {
    // E=4 over 5 ranks: SPEC §5 gives rank 4 no expert. Either an empty slice that merges back
    // to the full checkpoint, or a clear refusal with no output; never a panic.
    let tmp = tempdir();
    let ck = builder(4).build();
    let input = write_hf(tmp.path(), "in", &ck);
    let r4 = tmp.path().join("r4");
    let one = from_hf(&["--ep-size", "5", "--ep-rank", "4"], &input, &r4);
    let all = tmp.path().join("all");
    let every = from_hf(&["-q", "--ep-size", "5"], &input, &all);
    for (run, out) in [(&one, &r4), (&every, &all)] {
        match run.code {
            Some(0) => {}
            Some(1) => {
                run.stderr_has("--ep-size");
                if out.exists() {
                    run.fail("a refusal must leave no output");
                }
            }
            _ => run.fail("expected exit 0 or a refusal (exit 1)"),
        }
    }
    if every.code == Some(0) {
        let merged = tmp.path().join("merged");
        to_hf(&["-q"], &all, &merged).success();
        assert_same_tensors(
            &assert_valid_output(&merged),
            &expect::round_trip(&ck.map(), Dt::Bf16),
        );
    }
}
