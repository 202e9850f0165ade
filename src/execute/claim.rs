//! Claiming an output path for one run (issue 11, item 1): a lock beside it, taken atomically
//! at the start, and a record of what the path held then, so the commit replaces nothing that
//! appeared or changed since.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::owner::{Liveness, Owner};
use crate::error::{Error, OutputError, Result};

/// What the output path held when the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Absent,
    /// An empty directory (device, inode).
    Empty((u64, u64)),
    /// A directory with content, to be replaced under `--force`: every entry below it.
    Full(Snapshot),
}

/// Every entry below a directory: relative path → (device, inode, size, mtime in ns).
pub type Snapshot = BTreeMap<PathBuf, (u64, u64, u64, i128)>;

impl Found {
    /// Looks at `target` now.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be listed.
    pub fn look(target: &Path) -> Result<Found> {
        let meta = match fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent),
            Err(e) => return Err(Error::io(target, "stat output")(e)),
            Ok(meta) => meta,
        };
        let snapshot = snapshot(target)?;
        Ok(match snapshot.is_empty() && meta.is_dir() {
            true => Found::Empty((meta.dev(), meta.ino())),
            false => Found::Full(snapshot),
        })
    }
}

/// Every entry below `dir`, links not followed.
pub fn snapshot(dir: &Path) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in fs::read_dir(&abs).map_err(Error::io(&abs, "list output directory"))? {
            let entry = entry.map_err(Error::io(&abs, "list output directory"))?;
            let path = rel.join(entry.file_name());
            let meta = entry
                .metadata()
                .map_err(Error::io(entry.path(), "stat output entry"))?;
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            out.insert(path.clone(), (meta.dev(), meta.ino(), meta.len(), mtime));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(out)
}

/// The error for an output that changed while the run wrote.
pub fn changed(target: &Path) -> Error {
    OutputError::Changed {
        path: target.to_path_buf(),
    }
    .into()
}

/// An output path's lock, held for the life of the run: a file made with `O_EXCL` that
/// names its owner. Removed on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` for `target`, first removing one whose owner is provably gone.
    ///
    /// # Errors
    /// [`OutputError`] when another run (or one that cannot be proven gone) holds it.
    pub fn take(path: &Path, target: &Path) -> Result<Lock> {
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    let lock = Lock {
                        path: path.to_path_buf(),
                    };
                    file.write_all(Owner::me().to_text().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(Error::io(path, "write output lock"))?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match Owner::liveness_of(path) {
                        Liveness::Dead => {
                            let _ = fs::remove_file(path);
                        }
                        Liveness::Unknown(who) => {
                            return Err(OutputError::Locked {
                                path: target.to_path_buf(),
                                owner: who.to_string(),
                                lock: path.to_path_buf(),
                            }
                            .into());
                        }
                    }
                }
                Err(e) => return Err(Error::io(path, "create output lock")(e)),
            }
        }
        Err(OutputError::LockReappears {
            path: target.to_path_buf(),
            lock: path.to_path_buf(),
        }
        .into())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Renames `from` to `to` only if `to` does not exist (`renameat2(RENAME_NOREPLACE)`); where
/// the file system lacks it, checks first (a narrow window, the best it offers).
///
/// # Errors
/// `AlreadyExists` when `to` exists, else the OS error.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
        _ => Err(err),
    }
}
