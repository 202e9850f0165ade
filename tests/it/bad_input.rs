//! Issue 4, "Bad input": one broken copy of the golden checkpoint per item of the list, each
//! refused with exit 1 (2 for a usage error), the file and tensor named on stderr with what is
//! wrong, no panic, no output directory, no temporary directory beside it, and the input
//! byte for byte unchanged (the harness's `from_hf`/`to_hf` hash every file before and after).

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use serde_json::json;

use crate::broken::{
    CONFIG, Case, INDEX, RawTensor, SHARD_1, SHARD_2, SHARD_3, assert_no_panic,
    assert_no_temporaries, assert_refused_with,
};
use crate::harness::{Run, from_hf, nemoconv, sha256_dir, to_hf};

/// `from-hf` on the case's input must be refused with exit 1 and every needle on stderr.
fn refused(case: &Case, needles: &[&str]) {
    let run = from_hf(&[], &case.input, &case.out);
    assert_refused_with(&run, 1, &case.out, needles);
}

/// `to-hf` on the case's input must be refused with exit 1 and every needle on stderr.
fn refused_to_hf(case: &Case, needles: &[&str]) {
    let run = to_hf(&[], &case.input, &case.out);
    assert_refused_with(&run, 1, &case.out, needles);
}

// ---- shards ----

#[test]
fn shard_truncated_inside_the_header_length() {
    let case = Case::golden_hf();
    case.truncate(SHARD_2, 5);
    refused(&case, &[SHARD_2, "5 bytes", "8-byte header length"]);
}

#[test]
fn shard_truncated_inside_the_header() {
    let case = Case::golden_hf();
    case.truncate(SHARD_2, 8 + 100);
    refused(&case, &[SHARD_2, "header length", "truncated"]);
}

#[test]
fn shard_truncated_inside_the_data() {
    let case = Case::golden_hf();
    // The last tensor of shard 3 is lm_head.weight; cut 100 of its bytes.
    case.truncate(SHARD_3, case.len(SHARD_3) - 100);
    refused(&case, &[SHARD_3, "lm_head.weight", "truncated"]);
}

#[test]
fn shard_header_length_larger_than_the_file() {
    let case = Case::golden_hf();
    let len = case.len(SHARD_1);
    let mut bytes = std::fs::read(case.file(SHARD_1)).unwrap();
    bytes[..8].copy_from_slice(&len.to_le_bytes());
    std::fs::write(case.file(SHARD_1), bytes).unwrap();
    refused(&case, &[SHARD_1, &format!("claims {len} bytes")]);
}

#[test]
fn shard_header_length_of_a_terabyte() {
    let case = Case::golden_hf();
    let mut bytes = std::fs::read(case.file(SHARD_1)).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(case.file(SHARD_1), bytes).unwrap();
    refused(&case, &[SHARD_1, &(1u64 << 40).to_string()]);
}

#[test]
fn shard_header_not_json() {
    let case = Case::golden_hf();
    let header_len = case.header_len(SHARD_1) as usize;
    let mut bytes = std::fs::read(case.file(SHARD_1)).unwrap();
    let garbage = b"this is not JSON at all";
    bytes[8..8 + header_len].fill(b' ');
    bytes[8..8 + garbage.len()].copy_from_slice(garbage);
    std::fs::write(case.file(SHARD_1), bytes).unwrap();
    refused(&case, &[SHARD_1, "not a valid safetensors file", "JSON"]);
}

#[test]
fn shard_header_json_but_tensor_without_dtype() {
    let case = Case::golden_hf();
    case.edit_header(SHARD_1, |header, _| {
        let entry = header["backbone.layers.0.norm.weight"]
            .as_object_mut()
            .unwrap();
        entry.remove("dtype");
    });
    refused(&case, &[SHARD_1, "backbone.layers.0.norm.weight", "dtype"]);
}

#[test]
fn shard_data_offsets_overlap() {
    let case = Case::golden_hf();
    // D gets the byte range of A_log (both F32 [4]): the two overlap.
    case.edit_header(SHARD_1, |header, _| {
        let a_log = header["backbone.layers.0.mixer.A_log"]["data_offsets"].clone();
        header["backbone.layers.0.mixer.D"]["data_offsets"] = a_log;
    });
    refused(&case, &[SHARD_1, "backbone.layers.0.mixer.", "overlap"]);
}

#[test]
fn shard_data_offsets_leave_a_gap() {
    let case = Case::golden_hf();
    // 16 unused bytes after the first tensor (A_log, [0, 16)); every later tensor moves up.
    case.edit_header(SHARD_1, |header, data| {
        for (name, entry) in header.iter_mut() {
            if name == "__metadata__" || name == "backbone.layers.0.mixer.A_log" {
                continue;
            }
            let offsets = entry["data_offsets"].as_array_mut().unwrap();
            for o in offsets.iter_mut() {
                *o = json!(o.as_u64().unwrap() + 16);
            }
        }
        data.splice(16..16, [0u8; 16]);
    });
    refused(&case, &[SHARD_1, "backbone.layers.0.mixer.D", "gap"]);
}

#[test]
fn shard_data_offsets_run_past_the_end() {
    let case = Case::golden_hf();
    // lm_head.weight, the last tensor, claims one row more than the file holds.
    case.edit_header(SHARD_3, |header, _| {
        let entry = &mut header["lm_head.weight"];
        let end = entry["data_offsets"][1].as_u64().unwrap();
        entry["data_offsets"][1] = json!(end + 32);
        entry["shape"] = json!([65, 16]);
    });
    refused(&case, &[SHARD_3, "lm_head.weight", "end"]);
}

#[test]
fn shard_dtype_and_shape_do_not_match_the_byte_range() {
    let case = Case::golden_hf();
    case.edit_header(SHARD_1, |header, _| {
        header["backbone.embeddings.weight"]["shape"] = json!([64, 15]);
    });
    refused(
        &case,
        &[SHARD_1, "backbone.embeddings.weight", "do not match"],
    );
}

#[test]
fn shard_unknown_dtype() {
    let case = Case::golden_hf();
    case.edit_header(SHARD_1, |header, _| {
        header["backbone.layers.0.norm.weight"]["dtype"] = json!("Q7");
    });
    refused(&case, &[SHARD_1, "backbone.layers.0.norm.weight", "Q7"]);
}

// ---- index ----

#[test]
fn index_names_a_missing_shard() {
    let case = Case::golden_hf();
    std::fs::remove_file(case.file(SHARD_2)).unwrap();
    refused(&case, &[INDEX, SHARD_2, "does not exist"]);
}

#[test]
fn index_maps_a_tensor_to_the_wrong_shard() {
    let case = Case::golden_hf();
    case.edit_weight_map(|map| {
        map["backbone.embeddings.weight"] = json!(SHARD_2);
    });
    refused(
        &case,
        &[INDEX, "backbone.embeddings.weight", SHARD_1, SHARD_2],
    );
}

#[test]
fn index_misses_a_tensor_a_shard_holds() {
    let case = Case::golden_hf();
    case.edit_weight_map(|map| {
        map.remove("lm_head.weight");
    });
    refused(
        &case,
        &[INDEX, "lm_head.weight", SHARD_3, "does not list it"],
    );
}

#[test]
fn index_not_json() {
    let case = Case::golden_hf();
    std::fs::write(case.file(INDEX), "{\"weight_map\": {\"lm_head.weight\": ").unwrap();
    refused(&case, &[INDEX, "not a valid index", "EOF"]);
}

#[test]
fn same_tensor_in_two_shards() {
    let case = Case::golden_hf();
    std::fs::remove_file(case.file(INDEX)).unwrap();
    // Shard 3 also holds a copy of shard 1's embeddings.
    let embeddings = {
        let mut st = crate::broken::StFile::read(&case.file(SHARD_1));
        st.remove("backbone.embeddings.weight")
    };
    case.edit_shard(SHARD_3, |st| st.tensors.push(embeddings));
    refused(&case, &["backbone.embeddings.weight", SHARD_1, SHARD_3]);
}

// ---- config ----

#[test]
fn config_missing() {
    let case = Case::golden_hf();
    std::fs::remove_file(case.file(CONFIG)).unwrap();
    refused(&case, &[CONFIG, "cannot read", "No such file"]);
}

#[test]
fn config_unreadable() {
    let case = Case::golden_hf();
    // Root reads any file whatever its mode; a directory cannot be read as text by anyone.
    std::fs::remove_file(case.file(CONFIG)).unwrap();
    std::fs::create_dir(case.file(CONFIG)).unwrap();
    refused(&case, &[CONFIG, "cannot read"]);
}

#[test]
fn config_not_json() {
    let case = Case::golden_hf();
    std::fs::write(
        case.file(CONFIG),
        "{\"hybrid_override_pattern\": \"ME*E-M\",,}",
    )
    .unwrap();
    refused(&case, &[CONFIG, "JSON"]);
}

fn config_without(field: &str) {
    let case = Case::golden_hf();
    case.edit_json(CONFIG, |config| {
        config.as_object_mut().unwrap().remove(field);
    });
    refused(&case, &[CONFIG, field, "missing"]);
}

#[test]
fn config_without_hybrid_override_pattern() {
    config_without("hybrid_override_pattern");
}

#[test]
fn config_without_n_routed_experts() {
    config_without("n_routed_experts");
}

#[test]
fn config_without_moe_intermediate_size() {
    config_without("moe_intermediate_size");
}

#[test]
fn pattern_calls_an_expert_layer_mamba() {
    let case = Case::golden_hf();
    case.edit_json(CONFIG, |config| {
        config["hybrid_override_pattern"] = json!("MM*E-M")
    });
    refused(&case, &["backbone.layers.1.", "layer 1 is mamba", "MoE"]);
}

#[test]
fn pattern_calls_a_mamba_layer_moe() {
    let case = Case::golden_hf();
    case.edit_json(CONFIG, |config| {
        config["hybrid_override_pattern"] = json!("EE*E-M")
    });
    refused(
        &case,
        &[SHARD_1, "backbone.layers.0.mixer.", "layer 0 is MoE"],
    );
}

// ---- experts ----

#[test]
fn expert_missing() {
    let case = Case::golden_hf();
    let name = "backbone.layers.1.mixer.experts.2.up_proj.weight";
    case.edit_shard(SHARD_1, |st| {
        st.remove(name);
    });
    case.edit_weight_map(|map| {
        map.remove(name);
    });
    refused(&case, &[name, "missing"]);
}

#[test]
fn expert_id_not_below_n_routed_experts() {
    let case = Case::golden_hf();
    let name = "backbone.layers.1.mixer.experts.4.up_proj.weight";
    case.edit_shard(SHARD_2, |st| {
        let mut extra =
            st.tensors[st.position("backbone.layers.1.mixer.experts.3.up_proj.weight")].clone();
        extra.name = name.to_string();
        st.tensors.push(extra);
    });
    case.edit_weight_map(|map| {
        map.insert(name.to_string(), json!(SHARD_2));
    });
    refused(
        &case,
        &[SHARD_2, name, "expert id 4 >= n_routed_experts (4)"],
    );
}

#[test]
fn experts_of_a_layer_with_mixed_shapes() {
    let case = Case::golden_hf();
    let name = "backbone.layers.1.mixer.experts.2.up_proj.weight";
    case.edit_shard(SHARD_1, |st| st.get_mut(name).shape = vec![16, 8]);
    refused(&case, &[SHARD_1, name, "[16, 8]", "[8, 16]"]);
}

#[test]
fn experts_of_a_layer_with_mixed_dtypes() {
    let case = Case::golden_hf();
    let name = "backbone.layers.1.mixer.experts.2.up_proj.weight";
    case.edit_shard(SHARD_1, |st| st.get_mut(name).dtype = "F16".to_string());
    refused(&case, &[SHARD_1, name, "F16", "BF16"]);
}

#[test]
fn to_hf_merged_experts_with_the_wrong_expert_count() {
    let case = Case::golden_internal();
    let name = "model.layers.1.mixer.experts.gate_and_up_projs";
    case.edit_shard("model.safetensors", |st| {
        let t: &mut RawTensor = st.get_mut(name);
        assert_eq!(t.shape, vec![4, 16, 8], "the golden merged tensor");
        t.shape = vec![3, 16, 8];
        t.data.truncate(t.data.len() / 4 * 3);
    });
    refused_to_hf(
        &case,
        &["model.safetensors", name, "[3, 16, 8]", "[4, *, 8]"],
    );
}

// ---- found by the mutation fuzzer (tests/it/mutation.rs) ----

/// Runs `nemoconv ARGS...` with its data segment limited to `limit` bytes, so that a run that
/// allocates what the input claims fails fast instead of exhausting the machine.
fn nemoconv_limited(args: &[&OsStr], limit: u64) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nemoconv"));
    cmd.args(args);
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: the closure runs in the child between fork and exec and only calls setrlimit,
    // which is async-signal-safe, on a value copied in beforehand.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_DATA, &rlimit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let output = cmd.output().expect("run the nemoconv binary");
    Run {
        command: format!("nemoconv {args:?} (RLIMIT_DATA {limit})"),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn config_claiming_a_trillion_experts_allocates_nothing_for_them() {
    let case = Case::golden_hf();
    case.edit_json(CONFIG, |config| {
        config["n_routed_experts"] = json!(1u64 << 40)
    });
    let before = sha256_dir(&case.input);
    let args = [
        OsStr::new("from-hf"),
        OsStr::new("-j"),
        OsStr::new("1"),
        case.input.as_os_str(),
        case.out.as_os_str(),
    ];
    // 1 GiB is thousands of times what converting the golden checkpoint needs.
    let run = nemoconv_limited(&args, 1 << 30);
    assert_refused_with(
        &run,
        1,
        &case.out,
        &["backbone.layers.1.mixer.experts.4.", "missing"],
    );
    assert_eq!(sha256_dir(&case.input), before, "the input was modified");
}

#[test]
fn dequantize_an_empty_fp8_tensor_whose_dims_overflow() {
    let case = Case::golden_hf();
    let name = "backbone.layers.0.mixer.A_log";
    let scale = format!("{name}_scale_inv");
    case.edit_shard(SHARD_1, |st| {
        let t = st.get_mut(name);
        t.dtype = "F8_E4M3".to_string();
        t.shape = vec![0, 1 << 32, 1 << 32];
        t.data.clear();
        st.tensors.push(RawTensor {
            name: scale.clone(),
            dtype: "F32".to_string(),
            shape: vec![],
            data: 1f32.to_le_bytes().to_vec(),
        });
    });
    case.edit_weight_map(|map| {
        map.insert(scale.clone(), json!(SHARD_1));
    });
    let run = from_hf(&["--dequantize"], &case.input, &case.out);
    assert_refused_with(&run, 1, &case.out, &[SHARD_1, name]);
}

// ---- names ----

#[test]
fn mixed_backbone_and_model_prefixes() {
    let case = Case::golden_hf();
    let (old, new) = ("backbone.norm_f.weight", "model.norm_f.weight");
    case.edit_shard(SHARD_3, |st| st.get_mut(old).name = new.to_string());
    case.edit_weight_map(|map| {
        let shard = map.remove(old).unwrap();
        map.insert(new.to_string(), shard);
    });
    refused(&case, &[SHARD_3, new, "backbone.", "model.", "one prefix"]);
}

#[test]
fn invalid_exclude_regex_is_a_usage_error() {
    let case = Case::golden_internal();
    let run = to_hf(&["--exclude-regex", "("], &case.input, &case.out);
    assert_refused_with(&run, 2, &case.out, &["--exclude-regex", "position 1"]);
}

// ---- paths ----

#[test]
fn input_missing() {
    let case = Case::empty();
    let missing = case.tmp.path().join("no-such-checkpoint");
    let run = nemoconv(&[
        OsStr::new("from-hf"),
        missing.as_os_str(),
        case.out.as_os_str(),
    ]);
    assert_refused_with(
        &run,
        1,
        &case.out,
        &[&missing.display().to_string(), "does not exist"],
    );
}

#[test]
fn input_is_a_file() {
    let case = Case::golden_hf();
    let file = case.file(SHARD_1);
    let before = sha256_dir(&case.input);
    let run = nemoconv(&[
        OsStr::new("from-hf"),
        file.as_os_str(),
        case.out.as_os_str(),
    ]);
    assert_refused_with(
        &run,
        1,
        &case.out,
        &[&file.display().to_string(), "not a directory"],
    );
    assert_eq!(sha256_dir(&case.input), before, "the input was modified");
}

#[test]
fn output_inside_the_input() {
    let case = Case::golden_hf();
    let out = case.input.join("converted");
    let run = from_hf(&[], &case.input, &out);
    assert_refused_with(
        &run,
        1,
        &out,
        &[&out.display().to_string(), "inside the input"],
    );
}

#[test]
fn output_equals_the_input() {
    let case = Case::golden_hf();
    let before = sha256_dir(&case.input);
    let run = nemoconv(&[
        OsStr::new("from-hf"),
        case.input.as_os_str(),
        case.input.as_os_str(),
    ]);
    run.code(1)
        .stderr_has(&case.input.display().to_string())
        .stderr_has("input");
    assert_no_panic(&run);
    assert_no_temporaries(&run, case.tmp.path());
    assert_no_temporaries(&run, &case.input);
    assert_eq!(sha256_dir(&case.input), before, "the input was modified");
}

#[test]
fn output_not_empty_without_force() {
    let case = Case::golden_hf();
    std::fs::create_dir(&case.out).unwrap();
    std::fs::write(case.out.join("precious.txt"), "weeks of GPU time").unwrap();
    let old = sha256_dir(&case.out);
    let run = from_hf(&[], &case.input, &case.out);
    run.code(1)
        .stderr_has(&case.out.display().to_string())
        .stderr_has("not empty")
        .stderr_has("--force");
    assert_no_panic(&run);
    assert_no_temporaries(&run, case.tmp.path());
    assert_eq!(sha256_dir(&case.out), old, "the old output was changed");
}

#[test]
fn output_parent_not_writable() {
    let case = Case::golden_hf();
    let blocker = case.tmp.path().join("somefile");
    std::fs::write(&blocker, "a regular file").unwrap();
    let out = blocker.join("out");
    let run = from_hf(&[], &case.input, &out);
    run.code(1)
        .stderr_has(&blocker.display().to_string())
        .stderr_has("Not a directory");
    assert_no_panic(&run);
    assert_no_temporaries(&run, case.tmp.path());
    assert_eq!(
        std::fs::read(&blocker).unwrap(),
        b"a regular file",
        "somefile was changed"
    );
}

/// `nemoconv: error: {err:#}` prints the whole chain of causes (STYLE §3); an I/O error
/// whose own message also embeds its source shows the OS error twice.
#[test]
fn os_error_is_printed_once() {
    let case = Case::golden_hf();
    let blocker = case.tmp.path().join("somefile");
    std::fs::write(&blocker, "a regular file").unwrap();
    let run = from_hf(&[], &case.input, &blocker.join("out"));
    run.code(1);
    let os_error = "Not a directory (os error 20)";
    if run.stderr.matches(os_error).count() != 1 {
        run.fail(&format!("expected {os_error:?} exactly once on stderr"));
    }
}

/// The unbroken copies convert, so every refusal above is caused by its breakage.
#[test]
fn unbroken_golden_copy_converts() {
    let case = Case::golden_hf();
    from_hf(&[], &case.input, &case.out).success();
    let case = Case::golden_internal();
    to_hf(&[], &case.input, &case.out).success();
}
