//! Issue 4, "Atomic output and faults": a full disk (a small tmpfs mounted for the test),
//! SIGINT and SIGTERM in the middle of a run, and SIGKILL followed by a rerun. Each must leave
//! no output that looks complete, no temporary directory (after SIGKILL: none once the next
//! run is over), and the input byte for byte unchanged.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use tempfile::TempDir;

use crate::broken::{Case, assert_no_panic, assert_no_temporaries, header_text, raw_bytes};
use crate::harness::{Run, assert_valid_output, dir_entries, files_below, from_hf, tempdir};

/// A tmpfs mounted on a directory for the life of the guard.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16k`) on `dir`; a failure fails the test, never skips it.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (the disk-full test needs root, as in CI): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Lazy unmount so the TempDir above it can still be removed.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn disk_full_fails_cleanly() {
    let case = Case::golden_hf();
    // The golden conversion writes about 23 KB of shards: more than a 16 KiB tmpfs holds.
    let mount_point = case.tmp.path().join("small-disk");
    let disk = Tmpfs::mount(&mount_point, "16k");
    let out = mount_point.join("out");
    let run = from_hf(&["-q", "--max-shard-size", "8KB"], &case.input, &out);
    run.code(1)
        .stderr_has(&out.display().to_string())
        .stderr_has("No space left on device");
    assert_no_panic(&run);
    if out.exists() {
        run.fail("an output directory appeared on the full disk");
    }
    let left = dir_entries(&mount_point);
    if !left.is_empty() {
        run.fail(&format!("left on the full disk: {left:?}"));
    }
    drop(disk);
}

/// A full disk at every step of a run: on tmpfs of 4 KiB to 64 KiB, each run either fails
/// cleanly (ENOSPC named, no output, no temporary directory) or writes a valid output.
#[test]
fn disk_full_at_every_step_fails_cleanly() {
    let case = Case::golden_hf();
    let mut failed_at = Vec::new();
    for kib in (4..=64).step_by(4) {
        let mount_point = case.tmp.path().join(format!("disk-{kib}k"));
        let disk = Tmpfs::mount(&mount_point, &format!("{kib}k"));
        let out = mount_point.join("out");
        let run = from_hf(&["-q", "--max-shard-size", "8KB"], &case.input, &out);
        assert_no_panic(&run);
        if run.code == Some(0) {
            assert_valid_output(&out);
        } else {
            run.code(1)
                .stderr_has(&out.display().to_string())
                .stderr_has("No space left on device");
            // The input appears once, in the "from-hf IN -> OUT" context; the failing file
            // named after it must be an output file, not an input one.
            let input = case.input.display().to_string();
            if run.stderr.matches(&input).count() > 1 {
                run.fail(&format!(
                    "on a {kib} KiB disk the error names an input file as the one that failed"
                ));
            }
            if out.exists() {
                run.fail(&format!("an output directory appeared on a {kib} KiB disk"));
            }
            let left = dir_entries(&mount_point);
            if !left.is_empty() {
                run.fail(&format!("left on the full {kib} KiB disk: {left:?}"));
            }
            failed_at.push(kib);
        }
        drop(disk);
    }
    assert!(
        !failed_at.is_empty(),
        "no size was too small; the test tests nothing"
    );
    assert!(
        !failed_at.contains(&64),
        "even 64 KiB was too small for the golden output; the test never sees a success"
    );
}

// ---- signals ----

/// Experts of the generated checkpoint: one MoE layer of `BIG_E` BF16 experts, each
/// `[BIG_I, BIG_H]` (up) and `[BIG_H, BIG_I]` (down), 2 MiB apiece. The test binary and
/// `nemoconv` share a build profile: a debug build merges 32 MiB in about a second, a release
/// build (as `.ci/run` tests) 256 MiB in a few tenths of a second. Either way the run lasts
/// well beyond the moment the tests signal it (as soon as it starts writing). If a machine
/// finishes first, the tests say so: raise these numbers.
const BIG_E: u64 = if cfg!(debug_assertions) { 8 } else { 64 };
const BIG_I: u64 = 1024;
const BIG_H: u64 = 1024;
/// The data is this block repeated: finite BF16 values, varied by position.
const BLOCK_BYTES: usize = 1 << 20;

fn big_config() -> Vec<u8> {
    // F32 merged experts: every byte is transposed and cast, in jobs of 2 MiB.
    json!({
        "model_type": "nemotron_h",
        "hybrid_override_pattern": "E",
        "n_routed_experts": BIG_E,
        "moe_intermediate_size": BIG_I,
        "hidden_size": BIG_H,
        "torch_dtype": "float32",
        "mlp_bias": false,
    })
    .to_string()
    .into_bytes()
}

/// The shard's 8-byte length and header.
fn big_header() -> Vec<u8> {
    let expert_bytes = BIG_I * BIG_H * 2;
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut at = 0;
    for e in 0..BIG_E {
        for (proj, shape) in [("up_proj", [BIG_I, BIG_H]), ("down_proj", [BIG_H, BIG_I])] {
            header.insert(
                format!("backbone.layers.0.mixer.experts.{e}.{proj}.weight"),
                json!({"dtype": "BF16", "shape": shape, "data_offsets": [at, at + expert_bytes]}),
            );
            at += expert_bytes;
        }
    }
    raw_bytes(&header_text(&header), &[])
}

fn big_block() -> Vec<u8> {
    (0..BLOCK_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
        .collect()
}

fn big_blocks() -> u64 {
    2 * BIG_E * BIG_I * BIG_H * 2 / BLOCK_BYTES as u64
}

/// Writes the big checkpoint into `dir` (created).
fn write_big_checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the big checkpoint directory");
    std::fs::write(dir.join("config.json"), big_config()).expect("write config.json");
    let file = std::fs::File::create(dir.join("model.safetensors")).expect("create shard");
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&big_header()).expect("write shard header");
    let block = big_block();
    for _ in 0..big_blocks() {
        w.write_all(&block).expect("write shard data");
    }
    w.flush().expect("flush shard");
}

/// Checks, a block at a time, that `dir` still holds exactly what
/// [`write_big_checkpoint`] wrote (hashing it in a debug build would take seconds).
fn assert_big_checkpoint_unchanged(dir: &Path) {
    let files: Vec<String> = files_below(dir)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["config.json", "model.safetensors"],
        "files of the input"
    );
    let config = std::fs::read(dir.join("config.json")).expect("read config.json");
    assert!(
        config == big_config(),
        "the input's config.json was modified"
    );
    let mut shard = std::io::BufReader::new(
        std::fs::File::open(dir.join("model.safetensors")).expect("open shard"),
    );
    let header = big_header();
    let mut buf = vec![0; header.len()];
    shard.read_exact(&mut buf).expect("read shard header");
    assert!(buf == header, "the input's shard header was modified");
    let block = big_block();
    buf.resize(BLOCK_BYTES, 0);
    for i in 0..big_blocks() {
        shard.read_exact(&mut buf).expect("read shard data");
        assert!(
            buf == block,
            "the input's shard data was modified (block {i})"
        );
    }
    let rest = shard.read(&mut buf).expect("read shard end");
    assert_eq!(rest, 0, "bytes were appended to the input's shard");
}

/// A big checkpoint in its own temporary directory, and where to write.
pub struct Big {
    pub tmp: TempDir,
    pub input: PathBuf,
    pub out: PathBuf,
}

/// A fresh [`Big`].
pub fn big() -> Big {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    write_big_checkpoint(&input);
    let out = tmp.path().join("out");
    Big { tmp, input, out }
}

impl Big {
    /// `nemoconv from-hf -q -j 1 IN OUT`, output captured.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nemoconv"));
        cmd.args(["from-hf", "-q", "-j", "1"])
            .arg(&self.input)
            .arg(&self.out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The temporary directory of the run with this pid.
    pub fn tmp_of(&self, pid: u32) -> PathBuf {
        self.tmp.path().join(format!(".out.nemoconv-tmp-{pid}"))
    }

    /// Starts a conversion and returns once it is writing (its temporary directory holds a
    /// shard), so a signal sent now lands in the middle of the run.
    pub fn start(&self) -> Child {
        self.start_with(self.command())
    }

    /// As [`Big::start`], for a command of the caller's (writing into `self.out`).
    pub fn start_with(&self, mut command: Command) -> Child {
        let mut child = command.spawn().expect("start nemoconv");
        let tmp = self.tmp_of(child.id());
        loop {
            if let Some(status) = child.try_wait().expect("poll nemoconv") {
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "nemoconv ended ({status}) before it started writing; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if tmp.is_dir() && dir_entries(&tmp).iter().any(|n| n.ends_with(".partial")) {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Waits for a child and collects what it printed.
pub fn finish(child: Child, command: &str) -> Run {
    let out = child.wait_with_output().expect("wait for nemoconv");
    Run {
        command: command.to_string(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends `signal` to a child.
pub fn kill(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid of our own child and a valid signal number.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

fn interrupted_cleanly(signal: i32, name: &str) {
    let big = big();
    let child = big.start();
    let pid = child.id();
    kill(&child, signal);
    let run = finish(
        child,
        &format!("nemoconv from-hf -q -j 1 IN OUT, then {name}"),
    );
    if run.code == Some(0) {
        run.fail("the conversion finished before the signal arrived; raise BIG_E");
    }
    run.code(130).stderr_has("interrupted");
    assert_no_panic(&run);
    if big.out.exists() {
        run.fail("an output directory appeared after the interrupt");
    }
    if big.tmp_of(pid).exists() {
        run.fail("the temporary directory was left behind");
    }
    assert_no_temporaries(&run, big.tmp.path());
    assert_big_checkpoint_unchanged(&big.input);
}

#[test]
fn sigint_stops_and_cleans_up() {
    interrupted_cleanly(libc::SIGINT, "SIGINT");
}

#[test]
fn sigterm_stops_and_cleans_up() {
    interrupted_cleanly(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigkill_leaves_no_output_and_the_rerun_cleans_up() {
    let big = big();
    let mut child = big.start();
    let dead = child.id();
    child.kill().expect("send SIGKILL");
    let status = child.wait().expect("wait for the killed run");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the run was not killed (it finished first?); raise BIG_E"
    );
    assert!(
        !big.out.exists(),
        "an output directory appeared after SIGKILL"
    );
    let stale = big.tmp_of(dead);
    assert!(
        stale.is_dir(),
        "the killed run left no temporary directory, so nothing is tested"
    );

    let rerun = big.command().spawn().expect("rerun nemoconv");
    let run = finish(
        rerun,
        "nemoconv from-hf -q -j 1 IN OUT (rerun after SIGKILL)",
    );
    run.success();
    assert_no_panic(&run);
    if stale.exists() {
        run.fail(&format!(
            "the stale {} of the killed run is still there",
            stale.display()
        ));
    }
    assert_no_temporaries(&run, big.tmp.path());
    assert!(
        big.out.join("model.safetensors.index.json").is_file(),
        "the rerun's output has no index"
    );
    assert_big_checkpoint_unchanged(&big.input);
}
