//! What a checkpoint directory holds besides its shards: the files copied beside the output,
//! walked with the rules that keep hostile or odd directories from doing harm.

use std::path::{Path, PathBuf};

use crate::error::{CheckpointError, Error, Result};

/// What a directory entry is, for messages about entries that are not regular files.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO (named pipe)",
        _ if t.is_socket() => "a socket",
        _ if t.is_block_device() || t.is_char_device() => "a device",
        _ if t.is_symlink() => "a symbolic link",
        _ => "a regular file",
    }
}

/// File name endings of PyTorch weight files: never copied beside the converted shards.
const TORCH_WEIGHT_ENDINGS: [&str; 3] = [".bin", ".pt", ".pth"];

/// What is copied beside the shards (issue 11, item 14): every regular file below `dir` except
/// hidden entries (`.git`, `.cache`, ...) and PyTorch weight files, as sorted relative paths,
/// with the weight files left out. Links are followed: to files anywhere, to directories only
/// within the checkpoint (for a hub-cache snapshot, within its repository, where `blobs/` is).
/// Loops, dangling links, FIFOs, sockets and devices are refused by name.
pub(crate) fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let root = std::fs::canonicalize(dir).map_err(Error::io(dir, "resolve directory"))?;
    let within = match root.parent() {
        Some(p) if p.file_name().is_some_and(|n| n == "snapshots") => {
            p.parent().unwrap_or(p).to_path_buf()
        }
        _ => root.clone(),
    };
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    let mut stack = vec![(PathBuf::new(), vec![root])];
    while let Some((rel, ancestors)) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in std::fs::read_dir(&abs).map_err(Error::io(&abs, "list directory"))? {
            let entry = entry.map_err(Error::io(&abs, "list directory"))?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let (path, rel_path) = (entry.path(), rel.join(&name));
            let real = std::fs::canonicalize(&path).map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => CheckpointError::LinkLoop { path: path.clone() },
                _ => CheckpointError::DanglingLink {
                    path: path.clone(),
                    target: std::fs::read_link(&path).unwrap_or_default(),
                },
            })?;
            let meta = std::fs::metadata(&real).map_err(Error::io(&path, "stat"))?;
            if meta.is_dir() {
                if ancestors.contains(&real) {
                    return Err(CheckpointError::DirectoryLoop { path }.into());
                }
                if !real.starts_with(&within) {
                    return Err(CheckpointError::LinkOutside { path, target: real }.into());
                }
                let mut inner = ancestors.clone();
                inner.push(real);
                stack.push((rel_path, inner));
            } else if !meta.is_file() {
                return Err(CheckpointError::NotARegularFile {
                    path,
                    kind: kind_of(&meta),
                }
                .into());
            } else if TORCH_WEIGHT_ENDINGS
                .iter()
                .any(|e| name.as_encoded_bytes().ends_with(e.as_bytes()))
            {
                skipped.push(rel_path);
            } else {
                out.push(rel_path);
            }
        }
    }
    out.sort();
    skipped.sort();
    Ok((out, skipped))
}
