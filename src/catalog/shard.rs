//! One safetensors shard: open, memory-map, read and check its header with the `safetensors`
//! crate, and attach the file's path to every failure. Knows no tensor naming rules.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::TensorInfo;

use crate::dtype::Dtype;
use crate::error::{Error, Result};

/// Bytes of the little-endian header length that starts every safetensors file.
pub const HEADER_LEN_BYTES: u64 = 8;

/// An open, memory-mapped shard file and its header metadata.
#[derive(Debug)]
pub struct Shard {
    /// The shard's path, for messages.
    pub path: PathBuf,
    /// The open file, for kernel-side copies.
    pub file: File,
    /// The whole file, mapped read-only.
    pub mmap: Mmap,
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
    /// Opens and maps `path` and reads its header.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped, [`Error::BadShard`] or
    /// [`Error::BadTensor`] when the header fails a check.
    pub fn open(path: &Path) -> Result<(Shard, Vec<HeaderEntry>)> {
        let file = File::open(path).map_err(Error::io(path, "open"))?;
        let len = file.metadata().map_err(Error::io(path, "stat"))?.len();
        if len < HEADER_LEN_BYTES {
            return Err(Error::BadShard {
                path: path.to_path_buf(),
                reason: format!("the file is {len} bytes, shorter than the 8-byte header length"),
            });
        }
        // SAFETY: the map is read-only and nemoconv never writes its inputs; a file changed by
        // another process while we run is outside what any reader of safetensors can guard.
        let mmap = unsafe { Mmap::map(&file) }.map_err(Error::io(path, "mmap"))?;
        // No fault-around: it would map neighbouring pages that were already released and
        // keep them resident. A refusal only costs memory, so its error is ignored.
        let _ = mmap.advise(memmap2::Advice::Random);
        let (metadata, entries) = parse_header(&mmap).map_err(|reason| Error::BadShard {
            path: path.to_path_buf(),
            reason,
        })?;
        let shard = Shard {
            path: path.to_path_buf(),
            file,
            mmap,
            metadata,
        };
        Ok((shard, entries))
    }

    /// The bytes of `range` (absolute file offsets), which the header check guarantees exist.
    pub fn bytes(&self, range: &Range<u64>) -> &[u8] {
        let start =
            usize::try_from(range.start).expect("offsets were checked against the mapped length");
        let end =
            usize::try_from(range.end).expect("offsets were checked against the mapped length");
        &self.mmap[start..end]
    }

    /// Tells the kernel that the pages of `range` are no longer needed, so they leave our
    /// resident set (the page cache keeps them). The range is widened to the kernel's
    /// fault-around blocks: reading a neighbour maps its whole block again, so releasing
    /// less would leave the edges of every tensor resident.
    pub fn release(&self, range: &Range<u64>) {
        let block = FAULT_AROUND_BYTES.max(page_size());
        let start = range.start as usize / block * block;
        let end = (range.end as usize)
            .next_multiple_of(block)
            .min(self.mmap.len());
        if end > start {
            // SAFETY: the map is read-only and file-backed: dropped pages are re-read from
            // the file on the next access, so no reader can observe a change.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// The most a read fault maps at once: the default `fault_around_bytes` is 64 KiB, but a
/// large page-cache folio is mapped whole, up to a 2 MiB huge page.
const FAULT_AROUND_BYTES: usize = 2 << 20;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Reads and checks a whole safetensors file image: header length, JSON, dtypes, shapes and
/// contiguous data offsets covering the rest of the file exactly.
///
/// # Errors
/// A message saying what is wrong, naming the tensor where one is at fault.
pub fn parse_header(
    file: &[u8],
) -> std::result::Result<(BTreeMap<String, String>, Vec<HeaderEntry>), String> {
    let (header_len, meta) = SafeTensors::read_metadata(file).map_err(|e| explain(file, &e))?;
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

/// Turns a safetensors error into a message, naming the tensor when the crate does not.
fn explain(file: &[u8], err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooLarge => format!(
            "the header length field claims more than the 100 MB safetensors allows ({})",
            claimed_len(file)
        ),
        E::InvalidHeaderLength => format!(
            "the header length field claims {} bytes but the file has only {} after it (truncated?)",
            claimed_len(file),
            file.len() as u64 - HEADER_LEN_BYTES
        ),
        E::MetadataIncompleteBuffer => match last_tensor(file) {
            Some((name, end)) if end > data_len(file) => format!(
                "tensor {name:?}: its data ends at byte {end} of the data section, which holds only {} bytes (truncated?)",
                data_len(file)
            ),
            Some((name, end)) => format!(
                "{} bytes follow the data of the last tensor {name:?} (which ends at byte {end}); the file has bytes appended",
                data_len(file).saturating_sub(end)
            ),
            None => {
                "the data section does not end where the header says (truncated, or bytes appended)"
                    .to_string()
            }
        },
        E::InvalidHeaderDeserialization(_) => match find_unreadable_entry(file) {
            Some((name, why)) => format!("tensor {name:?}: {why}"),
            None => err.to_string(),
        },
        E::TensorInvalidInfo | E::MisalignedSlice | E::ValidationOverflow => {
            match find_bad_tensor(file) {
                Some(name) => {
                    format!("tensor {name:?}: dtype and shape do not match its byte range ({err})")
                }
                None => err.to_string(),
            }
        }
        E::InvalidOffset(name) => {
            format!("tensor {name:?}: data offsets overlap, leave a gap or are out of order")
        }
        _ => err.to_string(),
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
fn find_unreadable_entry(file: &[u8]) -> Option<(String, String)> {
    header_entries(file)?
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .find_map(|(name, value)| {
            serde_json::from_value::<TensorInfo>(value)
                .err()
                .map(|e| (name, format!("not a valid tensor entry: {e}")))
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
