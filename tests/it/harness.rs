//! What every integration test uses: a fresh temporary directory, fixture paths, the
//! `nemoconv` binary run with its output captured (and shown in full when an assertion
//! fails), directory digests, and the safetensors reader of `reader.rs`, re-exported.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub use crate::reader::{
    INDEX_FILE, Tensor, Tensors, assert_same_tensors, assert_valid_output, read_checkpoint,
    read_shard, shard_files,
};

/// A per-test temporary directory, removed when dropped.
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("nemoconv-it-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A path under the project's `fixtures/`. A missing fixture fails the test, never skips it.
pub fn fixture(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel);
    assert!(
        path.exists(),
        "fixture {} is missing; see fixtures/README.md",
        path.display()
    );
    path
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with `why`, the command line, its exit status and everything it printed.
    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\ncommand: {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit code 0.
    pub fn success(&self) -> &Run {
        self.code(0)
    }

    /// Asserts this exit code.
    pub fn code(&self, code: i32) -> &Run {
        if self.code != Some(code) {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    /// Asserts that stderr contains `needle`.
    pub fn stderr_has(&self, needle: &str) -> &Run {
        if !self.stderr.contains(needle) {
            self.fail(&format!("expected {needle:?} on stderr"));
        }
        self
    }

    /// Asserts that stdout contains `needle`.
    pub fn stdout_has(&self, needle: &str) -> &Run {
        if !self.stdout.contains(needle) {
            self.fail(&format!("expected {needle:?} on stdout"));
        }
        self
    }

    /// Asserts that nothing was printed on stdout (conversions report on stderr only).
    pub fn stdout_empty(&self) -> &Run {
        if !self.stdout.is_empty() {
            self.fail("expected nothing on stdout");
        }
        self
    }
}

/// Runs `nemoconv ARGS...` and captures its exit code and output.
pub fn nemoconv<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("nemoconv");
    cmd.args(args);
    let command = std::iter::once("nemoconv".to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let output = cmd.output().expect("run the nemoconv binary");
    Run {
        command,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `nemoconv SUBCOMMAND OPTIONS... IN OUT` and checks that IN is byte for byte unchanged.
pub fn convert(subcommand: &str, options: &[&str], input: &Path, output: &Path) -> Run {
    let before = sha256_dir(input);
    let mut args: Vec<&OsStr> = vec![OsStr::new(subcommand)];
    args.extend(options.iter().map(OsStr::new));
    args.extend([input.as_os_str(), output.as_os_str()]);
    let run = nemoconv(&args);
    if sha256_dir(input) != before {
        run.fail(&format!("the input {} was modified", input.display()));
    }
    run
}

/// `nemoconv from-hf OPTIONS... IN OUT`, input checked unchanged.
pub fn from_hf(options: &[&str], input: &Path, output: &Path) -> Run {
    convert("from-hf", options, input, output)
}

/// `nemoconv to-hf OPTIONS... IN OUT`, input checked unchanged.
pub fn to_hf(options: &[&str], input: &Path, output: &Path) -> Run {
    convert("to-hf", options, input, output)
}

/// A digest of every file below `dir` (relative paths and contents, in path order).
pub fn sha256_dir(dir: &Path) -> String {
    let mut hasher = Sha256::new();
    for rel in files_below(dir) {
        let bytes = std::fs::read(dir.join(&rel)).expect("read file");
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file below `dir`, as sorted relative paths.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).expect("list directory") {
            let entry = entry.expect("directory entry");
            let path = rel.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `file` has the same bytes in both directories.
pub fn assert_same_file(a: &Path, b: &Path, file: &str) {
    let read = |dir: &Path| {
        std::fs::read(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
    };
    assert!(
        read(a) == read(b),
        "{file} differs between {} and {}",
        a.display(),
        b.display()
    );
}

/// The names of the entries directly in `dir`, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a refused conversion: exit 1, the tensor (or other culprit) and the file or
/// directory named on stderr, no output directory and nothing left beside it.
pub fn assert_refused(run: &Run, output: &Path, culprit: &str, place: &str) {
    run.code(1).stderr_has(culprit).stderr_has(place);
    if output.exists() {
        run.fail(&format!("{} exists after a refusal", output.display()));
    }
    let parent = output.parent().expect("output has a parent");
    let leftovers: Vec<String> = dir_entries(parent)
        .into_iter()
        .filter(|n| n.contains(&*output.file_name().unwrap().to_string_lossy()))
        .collect();
    if !leftovers.is_empty() {
        run.fail(&format!("left behind beside the output: {leftovers:?}"));
    }
}

/// Every file below `dir` with its bytes.
pub fn file_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).expect("read file");
            (rel, bytes)
        })
        .collect()
}
