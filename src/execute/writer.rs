//! Output files: preallocated shards with their headers, positioned writes, kernel-side
//! copies, the index, and the copied non-weight files. Every error names the output path.

use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::{INDEX_FILE, Shard};
use crate::error::{Error, Result};
use crate::plan::{OutputShard, Plan};

/// Creates one shard file at its final size (reserving the disk space, so a full disk fails
/// here) and writes its header.
///
/// # Errors
/// [`Error::Io`] naming the shard.
pub fn create_shard(path: &Path, shard: &OutputShard) -> Result<File> {
    let file = open_sized(path, shard, true)?;
    write_at(&file, &shard.header, 0, path)?;
    Ok(file)
}

/// Opens (creating if need be, never truncating) a shard that several workers write at once
/// (`--split bytes`), sets its final size (idempotent: every worker does it), and writes its
/// header when `header` says this worker owns it.
///
/// # Errors
/// [`Error::Io`] naming the shard.
pub fn open_shared_shard(path: &Path, shard: &OutputShard, header: bool) -> Result<()> {
    let file = open_sized(path, shard, false)?;
    if header {
        write_at(&file, &shard.header, 0, path)?;
    }
    Ok(())
}

/// Opens `path` for writing, creating its directory and the file if need be (emptied first
/// when `truncate`), with the shard's final size reserved on the disk.
fn open_sized(path: &Path, shard: &OutputShard, truncate: bool) -> Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(Error::io(parent, "create directory"))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(Error::io(path, "create"))?;
    reserve(&file, shard.len_bytes).map_err(Error::io(path, "reserve space"))?;
    Ok(file)
}

/// Alignment of the direct writes: a page, so a direct write never touches a page-cache page
/// that holds another job's buffered bytes.
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// An output shard opened for a batch: the ordinary descriptor, and one opened with
/// `O_DIRECT` where the file system allows it. Page-aligned runs of a write go through the
/// latter, straight from the caller's buffer to the disk: copying them into the page cache
/// took most of the CPU time of a conversion here (54% of to-hf's cycles in
/// `copy_folio_from_iter_atomic`), and `dd` wrote 2 GB in 1.3 s direct against 10.6 s through
/// the page cache and `fdatasync`.
#[derive(Debug)]
pub struct OutputFile {
    /// For the header, the unaligned edges of writes, kernel copies and the final sync.
    pub file: File,
    path: PathBuf,
    /// Opened at the first direct write, so batches of small tensors never open it.
    direct: std::cell::OnceCell<Option<File>>,
}

impl OutputFile {
    /// The `O_DIRECT` descriptor, opened on first use; None where the file system refuses it.
    fn direct(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .ok()
            })
            .as_ref()
    }
}

/// Opens a shard made by [`create_shard`] for writing.
///
/// # Errors
/// [`Error::Io`] naming the shard.
pub fn open_shard(path: &Path) -> Result<OutputFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path, "open"))?;
    Ok(OutputFile {
        file,
        path: path.to_path_buf(),
        direct: std::cell::OnceCell::new(),
    })
}

/// Writes all of `bytes` at `offset` of `out`: its page-aligned middle with a direct write
/// when `bytes` sits at the same place within a page in memory as in the file (see
/// [`aligned_slice`]), the rest through the page cache.
///
/// # Errors
/// [`Error::Io`] naming `path` (a full disk included).
pub fn write_output(out: &OutputFile, bytes: &[u8], offset: u64, path: &Path) -> Result<()> {
    let align = DIRECT_ALIGN_BYTES as u64;
    let end = offset + bytes.len() as u64;
    let (mid_start, mid_end) = (offset.next_multiple_of(align), end / align * align);
    let in_step = (bytes.as_ptr() as u64 % align) == offset % align;
    let Some(direct) = (in_step && mid_end > mid_start)
        .then(|| out.direct())
        .flatten()
    else {
        return write_at(&out.file, bytes, offset, path);
    };
    let at = |o: u64| (o - offset) as usize;
    write_at(&out.file, &bytes[..at(mid_start)], offset, path)?;
    match direct.write_all_at(&bytes[at(mid_start)..at(mid_end)], mid_start) {
        Ok(()) => {}
        // A file system may refuse a direct write it accepted to open: fall back.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            write_at(
                &out.file,
                &bytes[at(mid_start)..at(mid_end)],
                mid_start,
                path,
            )?;
        }
        Err(e) => return Err(Error::io(path, "write")(e)),
    }
    write_at(&out.file, &bytes[at(mid_end)..], mid_end, path)
}

/// The `len` bytes of `buf` (grown as needed) that start at the same place within a page in
/// memory as `offset` does in the file, so that [`write_output`] can write their aligned
/// middle directly.
pub fn aligned_slice(buf: &mut Vec<u8>, len: usize, offset: u64) -> &mut [u8] {
    let align = DIRECT_ALIGN_BYTES;
    if buf.len() < len + align {
        buf.resize(len + align, 0);
    }
    let shift = (offset as usize % align + align - buf.as_ptr() as usize % align) % align;
    &mut buf[shift..shift + len]
}

/// Allocates `len` bytes for `file`, falling back to a sparse size where the file system
/// cannot allocate.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    let len_i64 =
        i64::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
    if len_i64 == 0 {
        return Ok(());
    }
    // SAFETY: posix_fallocate only reads the descriptor and two integers.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_i64) } {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// Writes all of `bytes` at `offset`.
///
/// # Errors
/// [`Error::Io`] naming `path` (a full disk included).
pub fn write_at(file: &File, bytes: &[u8], offset: u64, path: &Path) -> Result<()> {
    file.write_all_at(bytes, offset)
        .map_err(Error::io(path, "write"))?;
    start_writeback(file, offset, bytes.len() as u64);
    Ok(())
}

/// Dirty output is handed to the disk in windows of this size, so writeback requests are
/// large (1 MiB windows gave 0.9 MiB write requests against 3.3 MiB for `cp -r`).
const WRITEBACK_WINDOW_BYTES: u64 = 8 << 20;

/// Starts writing to disk, without waiting, the windows of [`WRITEBACK_WINDOW_BYTES`] that
/// a write of `len` bytes at `offset` completed, one window behind, so that the final fsync
/// finds little left to do and writes of other threads into the window just finished are
/// in it. Only a hint: failures show up at the fsync.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (first, last) = (
        offset / WRITEBACK_WINDOW_BYTES,
        (offset + len) / WRITEBACK_WINDOW_BYTES,
    );
    let from = first.saturating_sub(1) * WRITEBACK_WINDOW_BYTES;
    let to = last.saturating_sub(1) * WRITEBACK_WINDOW_BYTES;
    if last == first || to <= from {
        return;
    }
    // SAFETY: sync_file_range only reads the descriptor and three integers.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as i64,
            (to - from) as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Copies `range` of `shard` to `offset` of `out`: through a buffer and a direct write where
/// the output takes direct writes, else in the kernel (`copy_file_range`) where the file
/// systems allow it, else through a buffer.
///
/// # Errors
/// [`Error::Io`] naming the output path, or the input shard when a read fails.
pub fn copy_range(
    shard: &Shard,
    range: &Range<u64>,
    out: &OutputFile,
    offset: u64,
    out_path: &Path,
) -> Result<()> {
    if out.direct().is_some() {
        return copy_through_buffer(shard, range, out, offset, out_path);
    }
    let mut done = 0u64;
    let len = range.end - range.start;
    while done < len {
        let mut off_in = (range.start + done) as i64;
        let mut off_out = (offset + done) as i64;
        // SAFETY: both descriptors are open for the duration of the call; the offsets are
        // plain integers the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                shard.file.as_raw_fd(),
                &mut off_in,
                out.file.as_raw_fd(),
                &mut off_out,
                (len - done) as usize,
                0,
            )
        };
        if n > 0 {
            start_writeback(&out.file, offset + done, n as u64);
            done += n as u64;
            continue;
        }
        // 0 is the end of the input (a shrunk file, which the buffered copy names) or, on
        // some file systems, a copy they do not support.
        let err = std::io::Error::last_os_error();
        let unsupported = n == 0
            || matches!(
                err.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::EBADF)
            );
        if !unsupported {
            return Err(Error::io(out_path, "copy")(err));
        }
        let rest = range.start + done..range.end;
        return copy_through_buffer(shard, &rest, out, offset + done, out_path);
    }
    Ok(())
}

/// Bytes of one direct write of a transposed or copied tensor. A direct write waits for the
/// disk, and with one per thread a larger write is what keeps more requests in flight: in a
/// 1 GiB memory cgroup, cold, 16 MiB writes took nano-slice from-hf 8.5-12.3 s against
/// 9.8-13.3 s with 4 MiB, to-hf 8.2-8.7 s against 9.3-11.5 s (3 alternating rounds each);
/// 32 MiB was no faster than 16. Costs about 17 MiB more resident memory per thread.
pub const DIRECT_WRITE_BYTES: u64 = 16 << 20;

thread_local! {
    /// Per-thread buffer of [`copy_through_buffer`].
    static COPY_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies `range` of `shard` to `offset` of `out` through a per-thread buffer of
/// [`DIRECT_WRITE_BYTES`], written with [`write_output`].
fn copy_through_buffer(
    shard: &Shard,
    range: &Range<u64>,
    out: &OutputFile,
    offset: u64,
    out_path: &Path,
) -> Result<()> {
    COPY_BUFFER.with_borrow_mut(|buf| {
        let mut at = range.start;
        while at < range.end {
            let piece = at..(at + DIRECT_WRITE_BYTES).min(range.end);
            let to = offset + (at - range.start);
            let dst = aligned_slice(buf, (piece.end - piece.start) as usize, to);
            shard.read_at(&piece, dst)?;
            write_output(out, dst, to, out_path)?;
            at = piece.end;
        }
        Ok(())
    })
}

/// Writes `model.safetensors.index.json` (total_size and weight_map), synced.
///
/// # Errors
/// [`Error::Io`] naming the index.
pub fn write_index(dir: &Path, plan: &Plan) -> Result<()> {
    let index = serde_json::json!({
        "metadata": { "total_size": plan.payload_bytes() },
        "weight_map": super::weight_map(plan),
    });
    fs::create_dir_all(dir).map_err(Error::io(dir, "create directory"))?;
    let path = dir.join(INDEX_FILE);
    let mut text = serde_json::to_string_pretty(&index).expect("a map of strings serializes");
    text.push('\n');
    write_synced(&path, text.as_bytes())
}

/// Writes a whole file and fsyncs it.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = File::create(path).map_err(Error::io(path, "create"))?;
    write_at(&file, bytes, 0, path)?;
    file.sync_all().map_err(Error::io(path, "sync"))
}

/// Bytes copied between two looks at the stop flag when copying non-weight files.
const COPY_CHUNK_BYTES: u64 = 16 << 20;

/// The files of `files` (relative to `from`) that are copied, i.e. all but `skip`.
pub fn copied<'a>(files: &'a [PathBuf], skip: &'a [&str]) -> impl Iterator<Item = &'a PathBuf> {
    files
        .iter()
        .filter(|f| !skip.iter().any(|s| f.as_os_str() == *s))
}

/// Opens every file [`copy_files`] will copy, so an unreadable one fails the run before
/// anything is written; gives their total size.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn check_copies(from: &Path, files: &[PathBuf], skip: &[&str]) -> Result<u64> {
    copied(files, skip)
        .map(|rel| {
            let src = from.join(rel);
            let file = File::open(&src).map_err(Error::io(&src, "open"))?;
            Ok(file.metadata().map_err(Error::io(&src, "stat"))?.len())
        })
        .sum()
}

/// Copies each file of `files` (relative to `from`) into `to`, links followed, except `skip`,
/// with its permission bits; `advance` hears of the bytes copied, and `cancel` stops the copy
/// between chunks.
///
/// # Errors
/// [`Error::Io`] naming the file, [`Error::Interrupted`] when `cancel` is set.
pub fn copy_files(
    from: &Path,
    to: &Path,
    files: &[PathBuf],
    skip: &[&str],
    advance: &dyn Fn(u64),
    cancel: &AtomicBool,
) -> Result<()> {
    use std::io::Read as _;
    for rel in copied(files, skip) {
        let dst = to.join(rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(Error::io(parent, "create directory"))?;
        }
        let src = from.join(rel);
        let mut input = File::open(&src).map_err(Error::io(&src, "open"))?;
        let mode = input
            .metadata()
            .map_err(Error::io(&src, "stat"))?
            .permissions();
        let mut output = File::create(&dst).map_err(Error::io(&dst, "create"))?;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let n = std::io::copy(&mut (&mut input).take(COPY_CHUNK_BYTES), &mut output)
                .map_err(Error::io(&dst, "copy into"))?;
            if n == 0 {
                break;
            }
            advance(n);
        }
        output
            .set_permissions(mode)
            .map_err(Error::io(&dst, "set permissions"))?;
        output.sync_all().map_err(Error::io(&dst, "sync"))?;
    }
    Ok(())
}
