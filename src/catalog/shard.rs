//! One safetensors shard: open, read and check its header with the `safetensors` crate, read
//! tensor bytes with positioned reads, and attach the file's path to every failure. Knows no tensor naming rules.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::TensorInfo;

use crate::dtype::Dtype;
use crate::error::{Error, HeaderProblem, Result};

/// Bytes of the little-endian header length that starts every safetensors file.
pub const HEADER_LEN_BYTES: u64 = 8;

/// An open shard file and its header metadata. Tensor bytes are read with positioned reads
/// ([`Shard::read_at`]), never through a map: a read cannot fault, so a file truncated
/// under us is an error naming it, not a `SIGBUS`, and the reads reach the disk as large
/// requests the kernel can merge and read ahead of.
#[derive(Debug)]
pub struct Shard {
    /// The shard's path, for messages.
    pub path: PathBuf,
    /// The open file, for reads and kernel-side copies.
    pub file: File,
    /// The file's size when it was opened.
    pub len_bytes: u64,
    /// The header's `__metadata__` map (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

/// One tensor as a shard's header describes it, with absolute file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Byte range in the file (header included in the offsets).
    pub bytes: Range<u64>,
}

impl Shard {
    /// Opens `path` and reads and checks its header.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped, [`Error::BadShard`] when the
    /// header fails a check.
    pub fn open(path: &Path) -> Result<(Shard, Vec<HeaderEntry>)> {
        let file = File::open(path).map_err(Error::io(path, "open"))?;
        let len_bytes = file.metadata().map_err(Error::io(path, "stat"))?.len();
        if len_bytes < HEADER_LEN_BYTES {
            return Err(Error::BadShard {
                path: path.to_path_buf(),
                problem: HeaderProblem::TooShort { len_bytes },
            });
        }
        // The map serves the header check alone (the safetensors crate checks the header
        // against the whole file image); no tensor byte is read through it.
        // SAFETY: the map is read-only, lives only for this check, and touches only the
        // header's pages, which were just found to exist.
        let mmap = unsafe { Mmap::map(&file) }.map_err(Error::io(path, "mmap"))?;
        // Faulting the header must not read ahead into the tensors (8 MiB here): that would
        // make a cold file look cached to the prefetcher. A refusal only costs that.
        let _ = mmap.advise(memmap2::Advice::Random);
        request_header(&file, len_bytes);
        let (metadata, entries) = parse_header(&mmap).map_err(|problem| Error::BadShard {
            path: path.to_path_buf(),
            problem,
        })?;
        let shard = Shard {
            path: path.to_path_buf(),
            file,
            len_bytes,
            metadata,
        };
        Ok((shard, entries))
    }

    /// Reads the bytes of `range` (absolute file offsets) into `buf`, which holds exactly
    /// that many bytes.
    ///
    /// # Errors
    /// [`Error::ShardShrank`] when the file no longer holds the range (another process
    /// truncated it), [`Error::Io`] naming the shard on any other failure.
    pub fn read_at(&self, range: &Range<u64>, buf: &mut [u8]) -> Result<()> {
        debug_assert_eq!(buf.len() as u64, range.end - range.start);
        self.file
            .read_exact_at(buf, range.start)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::ShardShrank {
                    path: self.path.clone(),
                    end: range.end,
                    len_bytes: self.len_bytes,
                },
                _ => Error::io(&self.path, "read")(source),
            })
    }

    /// Whether most of `range` is in the page cache now (asked with `mincore` on a map of
    /// the range that is never read). Where the kernel cannot tell, it answers yes, so
    /// nothing is dropped.
    pub fn is_cached(&self, range: &Range<u64>) -> bool {
        let page = page_size() as u64;
        let start = range.start / page * page;
        let Ok(len) = usize::try_from(range.end - start) else {
            return true;
        };
        if len == 0 {
            return true;
        }
        // SAFETY: a read-only map of this process's own open file, never dereferenced:
        // only the kernel looks at its pages' residency.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len)
                .map(&self.file)
        };
        let Ok(map) = map else {
            return true;
        };
        let mut resident = vec![0u8; len.div_ceil(page as usize)];
        // SAFETY: the map starts at a page boundary (its offset is page-aligned) and spans
        // `len` bytes; `resident` holds one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, len, resident.as_mut_ptr()) };
        rc != 0 || resident.iter().filter(|&&r| r & 1 == 1).count() * 2 > resident.len()
    }

    /// Drops `range` from the page cache, once it is read and used, so that a checkpoint
    /// larger than memory does not push out everything else. Only a hint.
    pub fn forget(&self, range: &Range<u64>) {
        self.advise(range, libc::POSIX_FADV_DONTNEED);
    }

    /// Asks the kernel to start reading `range` into the page cache now, in large requests,
    /// so that a later [`Shard::read_at`] or kernel-side copy finds it there. Only a hint:
    /// a refusal costs speed, not correctness, so it is ignored.
    pub fn prefetch(&self, range: &Range<u64>) {
        self.advise(range, libc::POSIX_FADV_WILLNEED);
    }

    fn advise(&self, range: &Range<u64>, advice: libc::c_int) {
        let (Ok(start), Ok(len)) = (
            i64::try_from(range.start),
            i64::try_from(range.end - range.start),
        ) else {
            return;
        };
        // SAFETY: posix_fadvise only reads the descriptor and three integers.
        unsafe {
            libc::posix_fadvise(self.file.as_raw_fd(), start, len, advice);
        }
    }
}

/// Asks the kernel to read the whole header now, in a few large requests and not a byte
/// beyond it, so that the check through the randomly advised map finds its pages in the page
/// cache: faulted cold, a header of 20,000 tensors is some 250 disk requests of one page
/// each. Only a hint: where it fails, the faults read the header.
fn request_header(file: &File, len_bytes: u64) {
    let mut len = [0u8; HEADER_LEN_BYTES as usize];
    if file.read_exact_at(&mut len, 0).is_err() {
        return;
    }
    let end = HEADER_LEN_BYTES
        .saturating_add(u64::from_le_bytes(len))
        .min(len_bytes);
    let Ok(end) = i64::try_from(end) else {
        return;
    };
    // SAFETY: posix_fadvise only reads the descriptor and three integers.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, end, libc::POSIX_FADV_WILLNEED);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Bytes compared per read by [`same_bytes`].
const COMPARE_CHUNK_BYTES: u64 = 1 << 20;

/// Whether two byte ranges (of one shard or two) hold the same bytes, read in chunks.
///
/// # Errors
/// A read failure, naming the shard.
pub fn same_bytes(a: (&Shard, &Range<u64>), b: (&Shard, &Range<u64>)) -> Result<bool> {
    let ((shard_a, range_a), (shard_b, range_b)) = (a, b);
    let len = range_a.end - range_a.start;
    if len != range_b.end - range_b.start {
        return Ok(false);
    }
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < len {
        let n = COMPARE_CHUNK_BYTES.min(len - done);
        buf_a.resize(n as usize, 0);
        buf_b.resize(n as usize, 0);
        let at_a = range_a.start + done;
        let at_b = range_b.start + done;
        shard_a.read_at(&(at_a..at_a + n), &mut buf_a)?;
        shard_b.read_at(&(at_b..at_b + n), &mut buf_b)?;
        if buf_a != buf_b {
            return Ok(false);
        }
        done += n;
    }
    Ok(true)
}

/// Reads and checks a whole safetensors file image: header length, JSON, dtypes, shapes and
/// contiguous data offsets covering the rest of the file exactly.
///
/// # Errors
/// A [`HeaderProblem`] saying what is wrong, naming the tensor where one is at fault.
pub fn parse_header(
    file: &[u8],
) -> std::result::Result<(BTreeMap<String, String>, Vec<HeaderEntry>), HeaderProblem> {
    let (header_len, meta) = SafeTensors::read_metadata(file).map_err(|e| explain(file, e))?;
    let data_start = HEADER_LEN_BYTES + header_len as u64;
    let mut entries = Vec::with_capacity(meta.tensors().len());
    for name in meta.offset_keys() {
        let info = meta
            .info(&name)
            .expect("offset_keys lists names of this header");
        let (start, end) = info.data_offsets;
        entries.push(HeaderEntry {
            dtype: info.dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            bytes: data_start + start as u64..data_start + end as u64,
            name,
        });
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((metadata, entries))
}

/// Turns a safetensors error into a [`HeaderProblem`], naming the tensor when the crate does not.
fn explain(file: &[u8], err: safetensors::SafeTensorError) -> HeaderProblem {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooLarge => HeaderProblem::HeaderTooLarge {
            claimed: claimed_len(file),
        },
        E::InvalidHeaderLength => HeaderProblem::HeaderLength {
            claimed: claimed_len(file),
            available: file.len() as u64 - HEADER_LEN_BYTES,
        },
        E::MetadataIncompleteBuffer => match last_tensor(file) {
            Some((tensor, end)) if end > data_len(file) => HeaderProblem::DataTruncated {
                tensor,
                end,
                data_len: data_len(file),
            },
            Some((tensor, end)) => HeaderProblem::BytesAppended {
                extra: data_len(file).saturating_sub(end),
                tensor,
                end,
            },
            None => HeaderProblem::DataEnd,
        },
        E::InvalidHeaderDeserialization(_) => match find_unreadable_entry(file) {
            Some((tensor, source)) => HeaderProblem::Entry { tensor, source },
            None => HeaderProblem::Safetensors(err),
        },
        E::TensorInvalidInfo | E::MisalignedSlice | E::ValidationOverflow => {
            match find_bad_tensor(file) {
                Some(tensor) => HeaderProblem::TensorRange {
                    tensor,
                    source: err,
                },
                None => HeaderProblem::Safetensors(err),
            }
        }
        E::InvalidOffset(tensor) => HeaderProblem::Offsets { tensor },
        _ => HeaderProblem::Safetensors(err),
    }
}

fn claimed_len(file: &[u8]) -> u64 {
    file.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// The header's entries as JSON values, for diagnosing a header the crate refused.
fn header_entries(file: &[u8]) -> Option<BTreeMap<String, serde_json::Value>> {
    let end = usize::try_from(claimed_len(file)).ok()?.checked_add(8)?;
    serde_json::from_slice(file.get(8..end)?).ok()
}

/// Bytes after the header.
fn data_len(file: &[u8]) -> u64 {
    (file.len() as u64).saturating_sub(HEADER_LEN_BYTES.saturating_add(claimed_len(file)))
}

/// The tensor whose data ends last, and where.
fn last_tensor(file: &[u8]) -> Option<(String, u64)> {
    header_entries(file)?
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .filter_map(|(name, value)| {
            Some((
                name,
                serde_json::from_value::<TensorInfo>(value)
                    .ok()?
                    .data_offsets
                    .1 as u64,
            ))
        })
        .max_by_key(|(_, end)| *end)
}

/// The first entry that is not a tensor description (unknown dtype, missing field ...).
fn find_unreadable_entry(file: &[u8]) -> Option<(String, serde_json::Error)> {
    header_entries(file)?
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .find_map(|(name, value)| {
            serde_json::from_value::<TensorInfo>(value)
                .err()
                .map(|e| (name, e))
        })
}

/// Finds the first tensor whose dtype and shape disagree with its data offsets.
fn find_bad_tensor(file: &[u8]) -> Option<String> {
    header_entries(file)?
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .find_map(|(name, value)| {
            let info: TensorInfo = serde_json::from_value(value).ok()?;
            let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let want = numel
                .and_then(|n| n.checked_mul(info.dtype.bitsize()))
                .map(|bits| bits.div_ceil(8));
            let have = info.data_offsets.1.checked_sub(info.data_offsets.0);
            (want.is_none() || want != have).then_some(name)
        })
}
