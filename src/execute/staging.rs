//! The output directory's life: checks on the target path, a temporary directory beside it,
//! and the final fsync-and-rename that makes a complete checkpoint appear at once. A failed
//! or interrupted run removes its temporary directory and leaves any old output untouched.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::claim::{self, Found, Lock};
use super::owner::{Liveness, Owner};
use crate::error::{Error, OutputError, Result};

/// Marker in the names of temporary directories, so later runs can find stale ones.
const TMP_MARKER: &str = ".nemoconv-tmp-";
/// The owner marker inside a temporary directory (removed just before the commit).
const OWNER_FILE: &str = ".nemoconv-owner";

/// A temporary directory that becomes `target` on [`Staging::commit`], or is removed on drop.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// What `target` held when the run started; None for a shared work directory.
    found: Option<Found>,
    /// The output's lock, held until the end of the run.
    _lock: Option<Lock>,
    notes: Vec<String>,
}

impl Staging {
    /// Checks `target` (absent or empty, or `force`; not inside `input`), takes its lock and
    /// creates the temporary directory beside it, removing stale ones of provably dead runs.
    ///
    /// # Errors
    /// [`OutputError`] for an unusable target or one another run holds, [`Error::Io`] when
    /// the directory cannot be made.
    pub fn new(target: &Path, inputs: &[&Path], force: bool) -> Result<Staging> {
        check_target(target, inputs, force)?;
        let parent = parent_of(target);
        fs::create_dir_all(&parent)
            .map_err(Error::io(&parent, "create output parent directory"))?;
        let base = base_name(target)?;
        let lock = Lock::take(&parent.join(format!(".{base}{TMP_MARKER}lock")), target)?;
        let found = Found::look(target)?;
        let notes = remove_stale(&parent, &base);
        let tmp = parent.join(format!(".{base}{TMP_MARKER}{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io(&tmp, "remove old temporary directory"))?;
        }
        fs::create_dir(&tmp).map_err(Error::io(&tmp, "create temporary directory"))?;
        let staging = Staging {
            target: target.to_path_buf(),
            tmp,
            committed: false,
            found: Some(found),
            _lock: Some(lock),
            notes,
        };
        let owner = staging.tmp.join(OWNER_FILE);
        fs::write(&owner, Owner::me().to_text()).map_err(Error::io(&owner, "write"))?;
        Ok(staging)
    }

    /// The work directory that the workers of a spread run share: made if absent, kept on
    /// failure (other workers may still be writing into it).
    ///
    /// # Errors
    /// As [`Staging::new`]; an existing output is refused, spread runs never replace one.
    pub fn shared(target: &Path, inputs: &[&Path]) -> Result<Staging> {
        check_target(target, inputs, false)?;
        let tmp = work_dir(target)?;
        fs::create_dir_all(&tmp).map_err(Error::io(&tmp, "create work directory"))?;
        Ok(Staging {
            target: target.to_path_buf(),
            tmp,
            committed: true,
            found: None,
            _lock: None,
            notes: Vec::new(),
        })
    }

    /// Checks a spread run's work directory with `check`, then renames it into place.
    ///
    /// # Errors
    /// [`OutputError`] when there is no work directory, or what `check` finds.
    pub fn finalize(target: &Path, check: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = work_dir(target)?;
        if !tmp.is_dir() {
            return Err(OutputError::NoWorkDirectory {
                path: target.to_path_buf(),
                work: tmp,
                action: "finalize",
            }
            .into());
        }
        check(&tmp)?;
        if fs::read_dir(target).is_ok_and(|mut entries| entries.next().is_some())
            || target.is_file()
        {
            return Err(OutputError::AppearedMeanwhile {
                path: target.to_path_buf(),
            }
            .into());
        }
        sync_dir(&tmp)?;
        fs::rename(&tmp, target)
            .map_err(Error::io(target, "rename the finished output into place"))?;
        sync_dir(&parent_of(target))
    }

    /// Removes a spread run's work directory, to start over (`finalize --abandon`).
    ///
    /// # Errors
    /// [`OutputError`] when there is none, [`Error::Io`] when it cannot be removed.
    pub fn abandon(target: &Path) -> Result<PathBuf> {
        let tmp = work_dir(target)?;
        if !tmp.is_dir() {
            return Err(OutputError::NoWorkDirectory {
                path: target.to_path_buf(),
                work: tmp,
                action: "abandon",
            }
            .into());
        }
        fs::remove_dir_all(&tmp).map_err(Error::io(&tmp, "remove work directory"))?;
        Ok(tmp)
    }

    /// Leaves a shared work directory for the other workers and `finalize`.
    pub fn keep(mut self) {
        self.committed = true;
    }

    /// Where files are written until the commit.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Temporary directories of other runs that were left alone, one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// fsyncs the temporary directory, then renames it to the target. The target must be as
    /// the run found it: absent stays absent until the rename (`RENAME_NOREPLACE`), an empty
    /// directory the same and empty, and under `--force` the old output is moved aside,
    /// checked entry by entry against what was there at the start, and removed only after
    /// the rename. Anything else fails and leaves the target as it is.
    ///
    /// # Errors
    /// [`OutputError`] when the target changed during the run, [`Error::Io`] when a sync
    /// or rename fails; the old target is then still in place.
    pub fn commit(mut self) -> Result<()> {
        let owner = self.tmp.join(OWNER_FILE);
        fs::remove_file(&owner).map_err(Error::io(&owner, "remove"))?;
        sync_dir(&self.tmp)?;
        let target = self.target.clone();
        let parent = parent_of(&target);
        let place = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
                claim::changed(&target)
            }
            _ => Error::io(&target, "rename the finished output into place")(e),
        };
        match self.found.take().expect("a staged run knows what it found") {
            Found::Absent => claim::rename_noreplace(&self.tmp, &target).map_err(place)?,
            Found::Empty(id) => {
                if Found::look(&target)? != Found::Empty(id) {
                    return Err(claim::changed(&target));
                }
                // rename(2) replaces an empty directory only: one filled meanwhile fails.
                fs::rename(&self.tmp, &target).map_err(place)?;
            }
            Found::Full(before) => {
                let old = parent.join(format!(
                    ".{}{TMP_MARKER}old-{}",
                    base_name(&target)?,
                    std::process::id()
                ));
                fs::rename(&target, &old).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => claim::changed(&target),
                    _ => Error::io(&target, "move the old output aside")(e),
                })?;
                if claim::snapshot(&old).ok() != Some(before) {
                    let _ = claim::rename_noreplace(&old, &target);
                    return Err(claim::changed(&target));
                }
                if let Err(e) = claim::rename_noreplace(&self.tmp, &target) {
                    let _ = claim::rename_noreplace(&old, &target);
                    return Err(place(e));
                }
                self.committed = true;
                fs::remove_dir_all(&old).map_err(Error::io(&old, "remove the replaced output"))?;
            }
        }
        self.committed = true;
        sync_dir(&parent)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// fsyncs a directory so the names in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(dir, "sync directory"))
}

/// The deterministic work directory of a spread run.
fn work_dir(target: &Path) -> Result<PathBuf> {
    Ok(parent_of(target).join(format!(".{}{TMP_MARKER}work", base_name(target)?)))
}

fn check_target(target: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    let path = || target.to_path_buf();
    let abs_target = absolute(target)?;
    for input in inputs {
        let abs_input = fs::canonicalize(input).map_err(Error::io(*input, "resolve input path"))?;
        if abs_target == abs_input {
            return Err(OutputError::IsTheInput { path: path() }.into());
        }
        if abs_target.starts_with(&abs_input) {
            return Err(OutputError::InsideTheInput { path: path() }.into());
        }
        if abs_input.starts_with(&abs_target) {
            return Err(OutputError::HoldsTheInput { path: path() }.into());
        }
    }
    if matches!(
        target.components().next_back(),
        None | Some(std::path::Component::CurDir | std::path::Component::ParentDir)
    ) {
        return Err(OutputError::DotPath { path: path() }.into());
    }
    if let (Ok(out), Ok(up)) = (fs::metadata(target), fs::metadata(target.join("..")))
        && out.is_dir()
        && (out.dev() != up.dev() || out.ino() == up.ino())
    {
        return Err(OutputError::MountPoint { path: path() }.into());
    }
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(target, "stat output")(e)),
        Ok(meta) if !meta.is_dir() => Err(OutputError::NotADirectory { path: path() }.into()),
        Ok(_) if force => Ok(()),
        Ok(_) => {
            let mut entries =
                fs::read_dir(target).map_err(Error::io(target, "list output directory"))?;
            if entries.next().is_some() {
                Err(OutputError::NotEmpty { path: path() }.into())
            } else {
                Ok(())
            }
        }
    }
}

/// The absolute, symlink-resolved form of a path that may not exist yet.
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(Error::io(path, "resolve output path"))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = fs::canonicalize(existing).map_err(Error::io(existing, "resolve output path"))?;
    out.extend(rest.iter().rev());
    Ok(out)
}

fn parent_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn base_name(target: &Path) -> Result<String> {
    let abs = absolute(target)?;
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            OutputError::NoName {
                path: target.to_path_buf(),
            }
            .into()
        })
}

/// Removes the temporary directories for `base` whose owner marker proves a dead process on
/// this host; gives a note for each other one, which is left alone (issue 11, item 2).
fn remove_stale(parent: &Path, base: &str) -> Vec<String> {
    let prefix = format!(".{base}{TMP_MARKER}");
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(suffix) = name.strip_prefix(&prefix) else {
            continue;
        };
        // The lock is ours by now; `work` belongs to a spread run and `finalize`.
        if suffix == "lock" || suffix == "work" {
            continue;
        }
        let path = entry.path();
        // An `old-` directory may be the only copy of a replaced output: never removed here.
        let why = match suffix.starts_with("old-") {
            true => "it may hold an output that a --force run was replacing".to_string(),
            false => match Owner::liveness_of(&path.join(OWNER_FILE)) {
                Liveness::Dead => {
                    let _ = fs::remove_dir_all(&path);
                    continue;
                }
                Liveness::Unknown(who) => who,
            },
        };
        notes.push(format!(
            "left {:?} alone ({why}); remove it by hand if no run is using it",
            path
        ));
    }
    notes.sort();
    notes
}
