//! The documentation's examples, run: every ```` ```console ```` block of `README.md` and
//! `docs/*.md` is executed with trycmd, command by command and in order, and its output
//! compared with what the page shows (`[..]` and `...` elide timings).
//!
//! Each page runs in its own temporary directory holding a copy of `fixtures/`, the way a
//! reader runs the examples from the root of a fresh clone, so the examples never write into
//! the repository. Blocks that cannot run here (cargo, Slurm, Python) use another fence.

use std::path::{Path, PathBuf};

/// The programs a `console` block may call. trycmd silently skips a command whose program it
/// does not know, so [`assert_known_programs`] refuses any other name.
const TOOLS: [&str; 5] = ["cp", "dd", "ls", "mkdir", "sed"];

#[test]
fn documentation_examples_run_and_print_what_they_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::Builder::new()
        .prefix("nemoconv-readme-")
        .tempdir()
        .expect("create a temporary directory");
    let cases = trycmd::TestCases::new();
    cases.register_bin("nemoconv", Path::new(env!("CARGO_BIN_EXE_nemoconv")));
    let mut programs = vec!["nemoconv"];
    for tool in TOOLS {
        cases.register_bin(tool, find_on_path(tool));
        programs.push(tool);
    }
    for page in pages(root) {
        assert_known_programs(&page, &programs);
        cases.case(stage(root, &page, scratch.path()));
    }
    cases.run();
}

/// `README.md` and every `docs/*.md`, in name order.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("list docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root.join("README.md"));
    pages
}

/// Lays out `page` for trycmd in its own directory below `scratch`: a link to the page (so
/// `TRYCMD=overwrite` updates the real file) and, as the commands' working directory, the
/// `<stem>.in/` trycmd looks for beside it, holding a copy of `fixtures/`.
fn stage(root: &Path, page: &Path, scratch: &Path) -> PathBuf {
    let rel = page.strip_prefix(root).expect("page below the root");
    let dir = scratch.join(rel.to_string_lossy().replace('/', "-"));
    let name = page.file_name().expect("page has a name");
    let cwd = dir.join(Path::new(name).with_extension("in"));
    copy_dir(&root.join("fixtures"), &cwd.join("fixtures"));
    let link = dir.join(name);
    std::os::unix::fs::symlink(page, &link).expect("link the page");
    link
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        }
    }
}

/// The absolute path of `program` found on `PATH`.
fn find_on_path(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH; the documentation examples use it"))
}

/// Panics unless every command of every `console` block of `page` starts with one of
/// `programs` (after `NAME=value` assignments), since trycmd would skip it silently.
fn assert_known_programs(page: &Path, programs: &[&str]) {
    let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let mut fence: Option<(String, bool)> = None;
    for (number, line) in text.lines().enumerate() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match &fence {
            None if ticks >= 3 => {
                let info = line[ticks..].trim();
                // Like trycmd: a fence with no info string is a console block too.
                let mut words = info.split(',');
                let lang = words.next().unwrap_or_default();
                let console = (info.is_empty() || lang == "console" || lang == "trycmd")
                    && !words.any(|w| w == "ignore");
                fence = Some((line[..ticks].to_string(), console));
            }
            Some((open, _)) if line.starts_with(open.as_str()) => fence = None,
            Some((_, true)) => {
                if let Some(command) = line.strip_prefix("$ ") {
                    let program = command.split_whitespace().find(|w| !w.contains('='));
                    assert!(
                        program.is_some_and(|p| programs.contains(&p)),
                        "{}:{}: `{command}` runs a program the README test does not know \
                         ({programs:?}); use a ```bash or ```text fence for commands that \
                         cannot run in the test",
                        page.display(),
                        number + 1
                    );
                }
            }
            _ => {}
        }
    }
}
