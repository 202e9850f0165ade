//! Issue 11, "Nothing lost, second pass": what a hostile or unlucky user finds. One test (or a
//! few) per numbered item of the issue, each named after the rule it checks.

use std::path::Path;

use crate::broken::{CONFIG, Case};
use crate::builder::Files;
use crate::harness::{assert_valid_output, from_hf, nemoconv, tempdir, to_hf};

/// Inserts `"key": value` text at the start of the input's config.json object.
fn insert_config_text(case: &Case, fields: &str) {
    let path = case.file(CONFIG);
    let text = std::fs::read_to_string(&path).expect("read config.json");
    let at = text.find('{').expect("config.json is an object") + 1;
    let text = format!("{}{fields},{}", &text[..at], &text[at..]);
    std::fs::write(&path, text).expect("write config.json");
}

// ---- item 3: Python-dialect JSON ----

const PYTHON_FLOATS: &str =
    r#""time_step_limit": [0.0, Infinity], "x_nan": NaN, "x_low": -Infinity"#;

#[test]
fn python_non_finite_numbers_in_config_are_accepted_and_kept() {
    let case = Case::golden_hf();
    insert_config_text(&case, PYTHON_FLOATS);
    from_hf(&["-q"], &case.input, &case.out).success();
    assert_valid_output(&case.out);
    let copied = std::fs::read(case.out.join(CONFIG)).expect("read the copied config.json");
    assert!(
        copied == std::fs::read(case.file(CONFIG)).unwrap(),
        "config.json was not copied byte for byte"
    );
    nemoconv(&["inspect".as_ref(), case.input.as_os_str()]).success();
    let back = case.tmp.path().join("back");
    to_hf(&["-q"], &case.out, &back).success();
}

#[test]
fn python_non_finite_numbers_survive_a_config_rewrite() {
    let tmp = tempdir();
    let (ck, _) = crate::quantized::modelopt_checkpoint("F8_E4M3", crate::quantized::e4m3);
    let input = tmp.path().join("in");
    ck.write(&input, Files::Single);
    let path = input.join(CONFIG);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find('{').unwrap() + 1;
    std::fs::write(
        &path,
        format!("{}{PYTHON_FLOATS},{}", &text[..at], &text[at..]),
    )
    .unwrap();
    let out = tmp.path().join("out");
    from_hf(&["-q", "--dequantize"], &input, &out).success();
    let rewritten = std::fs::read_to_string(out.join(CONFIG)).expect("read config.json");
    assert!(!rewritten.contains("quantization_config"), "{rewritten}");
    for token in [
        "0.0,\n    Infinity\n",
        "\"x_nan\": NaN",
        "\"x_low\": -Infinity",
    ] {
        assert!(
            rewritten.contains(token),
            "the rewritten config.json lost {token:?}:\n{rewritten}"
        );
    }
}

// ---- item 4: -j ----

#[test]
fn absurd_thread_counts_are_usage_errors() {
    let case = Case::golden_hf();
    for n in ["100000", "18446744073709551615", "1025"] {
        let run = from_hf(&["-q", "-j", n], &case.input, &case.out);
        run.code(2).stderr_has("-j");
        assert!(!case.out.exists(), "-j {n} wrote an output");
    }
}

#[test]
fn thread_counts_above_four_per_core_are_capped_with_a_note() {
    let case = Case::golden_hf();
    let run = from_hf(&["-j", "1024"], &case.input, &case.out);
    run.success().stderr_has("note: -j 1024 capped to");
    assert_valid_output(&case.out);
}

// ---- item 5: signals in every long phase; copied bytes counted ----

#[test]
fn copied_files_count_in_the_summary() {
    let case = Case::golden_hf();
    std::fs::write(case.file("tokenizer.json"), vec![b'x'; 3 << 20]).unwrap();
    let run = from_hf(&["-q", "--json"], &case.input, &case.out);
    run.success();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON summary");
    let others: u64 = crate::harness::files_below(&case.input)
        .iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.ends_with(".safetensors") && name != crate::broken::INDEX
        })
        .map(|p| std::fs::metadata(case.input.join(p)).unwrap().len())
        .sum();
    assert!(others > 3 << 20, "the case copies files");
    assert_eq!(summary["copied_bytes"], others, "copied_bytes in {summary}");
}

/// A shard whose header lists `n` one-element F32 tensors: tens of MB of header, slow to parse.
fn write_wide_shard(path: &Path, n: usize) {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for i in 0..n {
        header.push_str(&format!(
            ",\"backbone.layers.0.mixer.t{i}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[{},{}]}}",
            4 * i,
            4 * i + 4
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + 4 * n, 0);
    std::fs::write(path, bytes).expect("write the wide shard");
}

/// Starts `nemoconv ARGS`, waits until it has `file` open, pauses it, sends `signal`, resumes
/// it, and gives its exit status.
fn signal_once_open(
    args: &[&std::ffi::OsStr],
    file: &Path,
    signal: i32,
) -> std::process::ExitStatus {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nemoconv"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nemoconv");
    let fds = std::path::PathBuf::from(format!("/proc/{}/fd", child.id()));
    let file = std::fs::canonicalize(file).expect("resolve the watched file");
    loop {
        if let Some(status) = child.try_wait().expect("poll nemoconv") {
            panic!(
                "nemoconv ended ({status}) before it opened {}",
                file.display()
            );
        }
        let open = std::fs::read_dir(&fds)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == file))
            })
            .unwrap_or(false);
        if open {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    crate::faults::kill(&child, libc::SIGSTOP);
    crate::faults::kill(&child, signal);
    crate::faults::kill(&child, libc::SIGCONT);
    child.wait().expect("wait for nemoconv")
}

#[test]
fn inspect_stops_at_sigterm_while_reading_headers() {
    use std::os::unix::process::ExitStatusExt as _;
    let tmp = tempdir();
    let dir = tmp.path().join("wide");
    std::fs::create_dir(&dir).unwrap();
    let shard = dir.join("model.safetensors");
    write_wide_shard(&shard, 600_000);
    let status = signal_once_open(
        &["inspect".as_ref(), dir.as_os_str()],
        &shard,
        libc::SIGTERM,
    );
    assert!(
        status.signal() == Some(libc::SIGTERM) || status.code() == Some(130),
        "inspect went on after SIGTERM: {status}"
    );
}

// ---- item 11: modes of copied files ----

#[test]
fn copied_files_keep_their_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let case = Case::golden_hf();
    let secret = case.file("secret.json");
    std::fs::write(&secret, "{}").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let script = case.file("run.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
    from_hf(&["-q"], &case.input, &case.out).success();
    for (name, mode) in [("secret.json", 0o600), ("run.sh", 0o750)] {
        let got = std::fs::metadata(case.out.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(got, mode, "mode of the copied {name}: {got:o}");
    }
}
