//! Issue 11, "Nothing lost, second pass": what a hostile or unlucky user finds. One test (or a
//! few) per numbered item of the issue, each named after the rule it checks.

use std::path::Path;

use crate::broken::{CONFIG, Case};
use crate::builder::Files;
use crate::harness::{Run, assert_valid_output, from_hf, nemoconv, tempdir, to_hf};

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
    let bytes = crate::builder::raw_bytes(header.as_bytes(), &vec![0; 4 * n]);
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

// ---- item 6: an output without tensors ----

#[test]
fn an_output_without_tensors_is_refused() {
    let case = Case::golden_internal();
    let run = to_hf(&["-q", "--exclude-regex", ".*"], &case.input, &case.out);
    crate::broken::assert_refused_with(&run, 1, &case.out, &["leaves out every tensor", ".*"]);
}

// ---- item 7: --json with a path that is not UTF-8 ----

#[test]
fn json_summary_of_a_non_utf8_output_path_is_printed() {
    use std::os::unix::ffi::OsStrExt as _;
    let case = Case::golden_hf();
    let out = case
        .tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"out-\xff"));
    let run = from_hf(&["-q", "--json"], &case.input, &out);
    run.success();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON summary");
    assert_eq!(summary["tensors"], 43, "{summary}");
    assert_valid_output(&out);
}

// ---- item 10: closed pipes ----

/// Runs `nemoconv ARGS` with stdout (or stderr) a pipe whose reading end is already closed.
fn into_closed_pipe(args: &[&std::ffi::OsStr], stderr: bool) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("make a pipe");
    drop(reader);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nemoconv"));
    cmd.args(args);
    if stderr {
        cmd.stderr(writer).stdout(std::process::Stdio::piped());
    } else {
        cmd.stdout(writer).stderr(std::process::Stdio::piped());
    }
    cmd.output().expect("run nemoconv")
}

#[test]
fn completions_into_a_closed_pipe_exit_0() {
    let out = into_closed_pipe(&["completions".as_ref(), "bash".as_ref()], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn a_conversion_with_a_closed_stderr_succeeds() {
    let case = Case::golden_hf();
    let args = [
        "from-hf".as_ref(),
        case.input.as_os_str(),
        case.out.as_os_str(),
    ];
    let out = into_closed_pipe(&args, true);
    assert_eq!(out.status.code(), Some(0), "exit status {}", out.status);
    assert_valid_output(&case.out);
}

// ---- item 12: control characters in messages ----

#[test]
fn control_characters_in_names_are_escaped_in_messages() {
    let case = Case::golden_hf();
    let evil = "x\u{1b}[2J\0y\nz.safetensors";
    case.edit_weight_map(|map| {
        map.insert("backbone.norm_f.weight".into(), evil.into());
    });
    let run = from_hf(&["-q"], &case.input, &case.out);
    run.code(1).stderr_has("\\u{1b}[2J");
    let missing = case.tmp.path().join("in\u{1b}]0;owned\u{7}\nput");
    let run2 = nemoconv(&[
        "from-hf".as_ref(),
        missing.as_os_str(),
        case.out.as_os_str(),
    ]);
    run2.code(1).stderr_has("\\u{1b}]0;owned\\u{7}\\nput");
    for r in [&run, &run2] {
        let body = r.stderr.trim_end_matches('\n');
        if body.contains(['\u{1b}', '\0', '\u{7}', '\n']) {
            r.fail("a control character reached the terminal raw");
        }
    }
}

// ---- item 13: messages that say what is wrong ----

#[test]
fn messages_name_the_real_problem() {
    let case = Case::golden_hf();
    let huge = from_hf(
        &["--max-shard-size", "99999999999999999999999"],
        &case.input,
        &case.out,
    );
    huge.code(2).stderr_has("more than");
    std::fs::write(case.file(CONFIG), "[1, 2]").unwrap();
    from_hf(&["-q"], &case.input, &case.out)
        .code(1)
        .stderr_has("must be a JSON object")
        .stderr_has("found an array");
}

#[test]
fn a_fifo_shard_is_called_a_fifo() {
    let case = Case::golden_hf();
    let shard = case.file(crate::broken::SHARD_3);
    std::fs::remove_file(&shard).unwrap();
    let c = std::ffi::CString::new(shard.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    // Not through `from_hf`: hashing the input would block on the FIFO.
    from_hf_unhashed(&case)
        .code(1)
        .stderr_has("FIFO")
        .stderr_has(crate::broken::SHARD_3);
}

#[test]
fn an_idle_worker_says_it_wrote_nothing() {
    let case = Case::golden_hf();
    // The golden output is one shard: dealt by whole shards, worker 1 of 2 has none.
    let run = from_hf(
        &["--worker", "1/2", "--split", "shards"],
        &case.input,
        &case.out,
    );
    run.success().stderr_has("wrote 0 tensors");
}

#[test]
fn a_recorded_ep_size_is_not_called_an_option() {
    let case = Case::golden_hf();
    let slice = case.tmp.path().join("slice");
    from_hf(
        &["-q", "--ep-size", "2", "--ep-rank", "0"],
        &case.input,
        &slice,
    )
    .success();
    for shard in crate::harness::shard_files(&slice) {
        let path = slice.join(shard);
        let (mut header, data) = crate::broken::read_raw(&path);
        header["__metadata__"]["nemoconv.ep_size"] = "9".into();
        crate::broken::write_raw(&path, &crate::broken::header_text(&header), &data);
    }
    let back = case.tmp.path().join("back");
    let run = to_hf(&["-q"], &slice, &back);
    run.code(1).stderr_has("recorded in its shards");
    if run.stderr.contains("--ep-size") {
        run.fail("the message names --ep-size, which was not given");
    }
}

// ---- item 16: num_hidden_layers ----

#[test]
fn num_hidden_layers_disagreeing_with_the_pattern_is_refused() {
    let case = Case::golden_hf();
    case.edit_json(CONFIG, |c| c["num_hidden_layers"] = 99.into());
    let run = from_hf(&["-q"], &case.input, &case.out);
    crate::broken::assert_refused_with(&run, 1, &case.out, &["num_hidden_layers is 99", CONFIG]);
}

// ---- item 14: what is copied beside the shards ----

#[test]
fn hidden_entries_and_torch_weights_are_not_copied() {
    let case = Case::golden_hf();
    for (rel, bytes) in [
        (".git/objects/pack", "lfs copy of every weight"),
        (".cache/huggingface/download", "x"),
        (".hidden.json", "{}"),
        ("pytorch_model.bin", "torch weights"),
        ("tokenizer/tokenizer.json", "{}"),
    ] {
        let path = case.file(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let run = from_hf(&["-q"], &case.input, &case.out);
    run.success()
        .stderr_has("did not copy \"pytorch_model.bin\"");
    let copied: Vec<String> = crate::harness::files_below(&case.out)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.ends_with(".safetensors") && p != crate::broken::INDEX)
        .collect();
    assert_eq!(copied, [CONFIG, "tokenizer/tokenizer.json"], "files copied");
}

/// Runs from-hf without hashing the input (links and FIFOs would trip the hash) and checks a
/// refusal naming `culprit` and saying `why`.
fn refused_listing(case: &Case, culprit: &str, why: &str) {
    let run = from_hf_unhashed(case);
    crate::broken::assert_refused_with(&run, 1, &case.out, &[culprit, why]);
}

/// Runs from-hf on `case` without hashing its input first.
fn from_hf_unhashed(case: &Case) -> Run {
    let args = [
        "from-hf".as_ref(),
        "-q".as_ref(),
        case.input.as_os_str(),
        case.out.as_os_str(),
    ];
    nemoconv(&args)
}

#[test]
fn directory_links_outside_the_checkpoint_loops_and_dangling_links_are_refused() {
    let outside = Case::golden_hf();
    std::os::unix::fs::symlink("/", outside.file("root")).unwrap();
    refused_listing(&outside, "root", "outside the checkpoint");

    let looped = Case::golden_hf();
    std::fs::create_dir(looped.file("tok")).unwrap();
    std::os::unix::fs::symlink("..", looped.file("tok/up")).unwrap();
    refused_listing(&looped, "tok/up", "loop");

    let dangling = Case::golden_hf();
    std::os::unix::fs::symlink("nowhere.json", dangling.file("extra.json")).unwrap();
    refused_listing(&dangling, "extra.json", "dangling symbolic link");
}

#[test]
fn fifos_beside_the_shards_are_refused_by_name() {
    let case = Case::golden_hf();
    let fifo = case.file("pipe.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    refused_listing(&case, "pipe.json", "FIFO");
}

// ---- item 8: failures found before the first byte; bounded descriptors ----

#[test]
fn a_mount_point_or_dot_as_out_is_refused_at_the_start() {
    let case = Case::golden_hf();
    let mnt = case.tmp.path().join("mnt");
    let disk = crate::faults::Tmpfs::mount(&mnt, "1m");
    let run = from_hf(&["-q"], &case.input, &mnt);
    run.code(1).stderr_has("mount point");
    assert!(
        crate::harness::dir_entries(&mnt).is_empty(),
        "written into the mount point"
    );
    crate::broken::assert_no_temporaries(&run, case.tmp.path());
    drop(disk);

    let empty = case.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nemoconv"))
        .args(["from-hf", "-q"])
        .args([case.input.as_os_str(), std::ffi::OsStr::new(".")])
        .current_dir(&empty)
        .output()
        .expect("run nemoconv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("is . or .."), "stderr: {stderr}");
    assert!(
        crate::harness::dir_entries(&empty).is_empty(),
        "written into ."
    );
    crate::broken::assert_no_temporaries(
        &crate::harness::nemoconv(&["--version"]),
        case.tmp.path(),
    );
}

#[test]
fn many_output_shards_need_few_descriptors() {
    use std::os::unix::process::CommandExt as _;
    let case = Case::golden_hf();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nemoconv"));
    cmd.args(["from-hf", "-q", "-j", "2", "--max-shard-size", "1"])
        .args([case.input.as_os_str(), case.out.as_os_str()]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 30,
                rlim_max: 30,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = cmd.output().expect("run nemoconv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "with 30 descriptors: {stderr}");
    assert_eq!(
        crate::harness::shard_files(&case.out).len(),
        43,
        "one shard per tensor"
    );
    assert_valid_output(&case.out);
}

#[test]
fn an_unreadable_extra_file_is_refused_before_any_shard() {
    use std::os::unix::fs::PermissionsExt as _;
    let case = Case::golden_hf();
    let perm = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perm(case.tmp.path(), 0o777);
    perm(&case.input, 0o755);
    for f in crate::harness::files_below(&case.input) {
        perm(&case.input.join(f), 0o644);
    }
    let secret = case.file("secret.json");
    std::fs::write(&secret, "{}").unwrap();
    perm(&secret, 0o600);
    // OUT on a disk too small for any shard: a check made after the shards were created
    // would report the full disk, not the unreadable file.
    let mnt = case.tmp.path().join("small");
    let disk = crate::faults::Tmpfs::mount(&mnt, "16k,mode=0777");
    let out_dir = mnt.join("out");
    // As nobody, who cannot read secret.json (root can read anything).
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_nemoconv"),
        ])
        .args(["from-hf", "-q"])
        .args([case.input.as_os_str(), out_dir.as_os_str()])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("secret.json") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(
        crate::harness::dir_entries(&mnt).is_empty(),
        "left on the small disk"
    );
    drop(disk);
}
