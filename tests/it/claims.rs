//! Issue 11, items 1 and 2: a run claims OUT at its start and replaces nothing it did not find
//! there; temporary directories of other runs are removed only when their owner marker proves
//! a dead process on this host. Runs are paused with SIGSTOP while the test changes OUT, so
//! nothing depends on timing.

use std::path::Path;
use std::process::Child;

use crate::broken::{Case, assert_no_panic, assert_no_temporaries};
use crate::faults::{Big, big, finish, kill};
use crate::harness::{assert_valid_output, dir_entries, from_hf};

/// Starts a big run and pauses it while it is writing.
fn paused(big: &Big, force: bool) -> Child {
    let mut command = big.command();
    if force {
        command.arg("--force");
    }
    let child = big.start_with(command);
    kill(&child, libc::SIGSTOP);
    child
}

fn write_notes(out: &Path) {
    std::fs::create_dir_all(out).expect("create OUT by hand");
    std::fs::write(out.join("notes.txt"), "x\n").expect("write notes.txt");
}

fn assert_notes_kept(out: &Path) {
    let text = std::fs::read_to_string(out.join("notes.txt"));
    assert_eq!(
        text.ok().as_deref(),
        Some("x\n"),
        "notes.txt in OUT was lost"
    );
}

#[test]
fn out_appearing_during_a_run_is_never_replaced() {
    let big = big();
    let child = paused(&big, false);
    assert!(!big.out.exists(), "OUT exists before the test made it");
    write_notes(&big.out);
    kill(&child, libc::SIGCONT);
    let run = finish(
        child,
        "nemoconv from-hf -q -j 1 IN OUT (OUT made during the run)",
    );
    run.code(1)
        .stderr_has(&big.out.display().to_string())
        .stderr_has("changed while this run was writing");
    assert_no_panic(&run);
    assert_notes_kept(&big.out);
    assert_eq!(dir_entries(&big.out), ["notes.txt"], "entries of OUT");
    assert_no_temporaries(&run, big.tmp.path());
}

#[test]
fn force_replaces_only_what_was_there_at_the_start() {
    let big = big();
    std::fs::create_dir_all(&big.out).expect("create OUT");
    std::fs::write(big.out.join("old.txt"), "old\n").expect("write old.txt");
    let child = paused(&big, true);
    write_notes(&big.out);
    kill(&child, libc::SIGCONT);
    let run = finish(
        child,
        "nemoconv from-hf -q -j 1 --force IN OUT (OUT changed)",
    );
    run.code(1).stderr_has("changed while this run was writing");
    assert_notes_kept(&big.out);
    assert_eq!(
        dir_entries(&big.out),
        ["notes.txt", "old.txt"],
        "entries of OUT"
    );
    assert_no_temporaries(&run, big.tmp.path());
}

#[test]
fn a_second_run_into_the_same_out_is_refused_at_the_start() {
    let big = big();
    let first = paused(&big, false);
    let case = Case::golden_hf();
    let second = from_hf(&["-q"], &case.input, &big.out);
    kill(&first, libc::SIGCONT);
    let first = finish(first, "nemoconv from-hf -q -j 1 IN OUT (the first run)");
    first.success();
    second
        .code(1)
        .stderr_has("another nemoconv run is writing this output")
        .stderr_has("still running");
    assert_no_panic(&second);
    assert_valid_output(&big.out);
    assert_no_temporaries(&first, big.tmp.path());
}

#[test]
fn temporaries_of_unknown_owners_are_left_alone_with_a_note() {
    let case = Case::golden_hf();
    let tmp = case.tmp.path();
    let unknown = tmp.join(".out.nemoconv-tmp-999999");
    std::fs::create_dir(&unknown).expect("create a directory of unknown provenance");
    std::fs::write(unknown.join("precious"), "keep me").expect("write into it");
    // A live run on another host sharing this file system: its marker names that host.
    let remote = tmp.join(".out.nemoconv-tmp-4242");
    std::fs::create_dir(&remote).expect("create a remote run's directory");
    std::fs::write(
        remote.join(".nemoconv-owner"),
        r#"{"host":"node-elsewhere","boot_id":"b","pid_ns":"pid:[1]","pid":4242,"start_ticks":7}"#,
    )
    .expect("write its marker");
    let run = from_hf(&["-q"], &case.input, &case.out);
    run.success()
        .stderr_has("note: left")
        .stderr_has("node-elsewhere");
    assert_valid_output(&case.out);
    assert_eq!(
        std::fs::read_to_string(unknown.join("precious"))
            .ok()
            .as_deref(),
        Some("keep me"),
        "the directory of unknown provenance was touched"
    );
    assert!(
        remote.join(".nemoconv-owner").is_file(),
        "the remote run's directory was removed"
    );
}

#[test]
fn a_lock_of_another_host_is_never_broken() {
    let case = Case::golden_hf();
    let lock = case.tmp.path().join(".out.nemoconv-tmp-lock");
    std::fs::write(
        &lock,
        r#"{"host":"node-elsewhere","boot_id":"b","pid_ns":"pid:[1]","pid":4242,"start_ticks":7}"#,
    )
    .expect("write the lock");
    let run = from_hf(&["-q"], &case.input, &case.out);
    run.code(1)
        .stderr_has("another nemoconv run is writing this output")
        .stderr_has(&lock.display().to_string());
    assert!(lock.is_file(), "the other host's lock was removed");
    assert!(!case.out.exists(), "an output appeared beside a held lock");
}

/// Issue 11, item 16: a source shard cut short during the run fails it with exit 1 naming the
/// shard, never a SIGBUS: inputs are read with positioned reads, which see a short file.
#[test]
fn a_shard_truncated_during_the_run_fails_naming_it() {
    let big = big();
    let child = paused(&big, false);
    let shard = big.input.join("model.safetensors");
    let len = std::fs::metadata(&shard).expect("stat the shard").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate the shard");
    kill(&child, libc::SIGCONT);
    let run = finish(
        child,
        "nemoconv from-hf -q -j 1 IN OUT (shard truncated during the run)",
    );
    run.code(1).stderr_has(&shard.display().to_string());
    assert_no_panic(&run);
    assert!(
        !big.out.exists(),
        "an output appeared from a truncated input"
    );
    assert_no_temporaries(&run, big.tmp.path());
}
