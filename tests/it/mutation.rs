//! Issue 4, "Hardening": a mutation fuzzer over the golden checkpoint. Each case damages shard
//! bytes (bits, bytes, truncation, extension, the 8-byte header length, header entries) and
//! the index and config JSON (bytes, keys, numbers), picks options, and calls the library
//! (`plan`, then `convert` when the plan succeeds) inside `catch_unwind`. An `Err` is fine; a
//! panic fails the case, and proptest shrinks it to a minimal list of mutations. Every case
//! also checks what a failed run must leave: no output, no temporary directory, the input
//! unchanged.
//!
//! 64 cases per target by default, from a fixed seed so CI sees the same cases every run;
//! `NEMOCONV_FUZZ_CASES=5000` runs more, `NEMOCONV_FUZZ_SEED=random` (or a number) others.
//! While a case runs, a single allocation over [`ALLOC_CAP`] (what a header or config claims,
//! not what the checkpoint holds) is refused: the process prints the running cases and aborts,
//! which fails the run as loudly as a panic but before the machine runs out of memory.
//! `NEMOCONV_FUZZ_HANG_SECS=N` (off by default: no timing in CI) aborts the same way when a
//! case runs longer than N seconds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nemoconv::NoProgress;
use nemoconv::convert::Direction;
use nemoconv::dtype::Dtype;
use nemoconv::family::nemotron_v3::HfPrefix;
use nemoconv::options::{
    ConvertOptions, EpSlice, ExpertParallel, FromHfOptions, RunOptions, ToHfOptions, anchored_regex,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::broken::{header_text, raw_bytes, split_raw};
use crate::harness::{files_below, fixture, tempdir};

/// Cases per fuzz target when `NEMOCONV_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 64;

/// The seed of the case generator when `NEMOCONV_FUZZ_SEED` is not set: CI runs the same
/// cases every time; `NEMOCONV_FUZZ_SEED=random` (or a number) explores others.
const DEFAULT_SEED: u64 = 4;

fn seed() -> RngSeed {
    match std::env::var("NEMOCONV_FUZZ_SEED") {
        Err(_) => RngSeed::Fixed(DEFAULT_SEED),
        Ok(text) if text == "random" => RngSeed::Random,
        Ok(text) => RngSeed::Fixed(text.parse().unwrap_or_else(|_| {
            panic!("NEMOCONV_FUZZ_SEED={text:?} is neither a number nor \"random\"")
        })),
    }
}

fn cases() -> u32 {
    match std::env::var("NEMOCONV_FUZZ_CASES") {
        Err(_) => DEFAULT_CASES,
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("NEMOCONV_FUZZ_CASES={text:?} is not a number of cases")),
    }
}

// ---- guards: allocation cap and hang watchdog ----

/// The largest single allocation allowed while a fuzz case runs. The golden checkpoint is
/// 28 KB and nemoconv's buffers are at most 16 MiB, so anything near this is sized by a
/// number read from a file.
const ALLOC_CAP: usize = 1 << 30;

/// How many fuzz cases are running (the cap applies only then).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The running case of each target: when it started and what it is.
static CURRENT: Mutex<BTreeMap<&'static str, (Instant, String)>> = Mutex::new(BTreeMap::new());

/// The system allocator, refusing single allocations over [`ALLOC_CAP`] while a case runs.
struct CappedAlloc;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

impl CappedAlloc {
    fn refuses(size: usize) -> bool {
        if size <= ALLOC_CAP || RUNNING.load(Ordering::Relaxed) == 0 {
            return false;
        }
        print_running(&format!(
            "\nmutation fuzzer: refused an allocation of {size} bytes (cap {ALLOC_CAP}); the process aborts next. Running cases:\n"
        ));
        true
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with a null
// pointer, which GlobalAlloc allows.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::refuses(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::refuses(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::refuses(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Writes `intro` and the running cases to stderr without allocating (it runs inside the
/// allocator).
fn print_running(intro: &str) {
    let write = |text: &str| {
        // SAFETY: writes a live buffer of its own length to fd 2.
        let _ = unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
    };
    write(intro);
    if let Ok(current) = CURRENT.try_lock() {
        for (target, (_, case)) in current.iter() {
            write(target);
            write(": ");
            write(case);
            write("\n");
        }
    }
}

/// Starts, once, a thread that aborts when a case runs longer than `NEMOCONV_FUZZ_HANG_SECS`.
fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    let Ok(text) = std::env::var("NEMOCONV_FUZZ_HANG_SECS") else {
        return;
    };
    let limit: u64 = text
        .parse()
        .unwrap_or_else(|_| panic!("NEMOCONV_FUZZ_HANG_SECS={text:?} is not a number of seconds"));
    STARTED.get_or_init(|| {
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let hung = CURRENT
                    .lock()
                    .map(|c| {
                        c.values()
                            .any(|(start, _)| start.elapsed().as_secs() > limit)
                    })
                    .unwrap_or(false);
                if hung {
                    print_running(&format!(
                        "\nmutation fuzzer: a case ran over {limit} s (a hang?). Running cases:\n"
                    ));
                    std::process::abort();
                }
            }
        });
    });
}

/// Marks one case as running for the allocation cap and the watchdog.
struct Running(&'static str);

impl Running {
    fn start(target: &'static str, case: String) -> Running {
        CURRENT
            .lock()
            .expect("case registry")
            .insert(target, (Instant::now(), case));
        RUNNING.fetch_add(1, Ordering::SeqCst);
        Running(target)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut current) = CURRENT.lock() {
            current.remove(self.0);
        }
    }
}

/// A checkpoint in memory: (path relative to the checkpoint directory, bytes), sorted.
type Files = Vec<(String, Vec<u8>)>;

fn read_files(dir: &Path) -> Files {
    files_below(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).expect("read fixture file");
            (rel.to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn write_files(dir: &Path, files: &Files) {
    std::fs::create_dir_all(dir).expect("create the input directory");
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create directory");
        std::fs::write(path, bytes).expect("write input file");
    }
}

// ---- mutations ----

/// One change to one file. File and position selectors are taken modulo what exists.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flips bit `bit` of byte `at` of any file.
    FlipBit { file: usize, at: usize, bit: u8 },
    /// Sets a byte among the first 4 KiB of any file (a shard's header, or a JSON file).
    SetHeadByte { file: usize, at: usize, value: u8 },
    /// Sets a byte anywhere in any file.
    SetByte { file: usize, at: usize, value: u8 },
    /// Cuts any file to `keep` (modulo its length + 1) bytes.
    Truncate { file: usize, keep: usize },
    /// Appends bytes to any file.
    Extend { file: usize, bytes: Vec<u8> },
    /// Rewrites a shard's 8-byte header length.
    HeaderLen { shard: usize, len: u64 },
    /// Changes a shard's JSON header and writes it back with its new length; with `sync`, the
    /// index is updated to the shard's new tensor names.
    Header {
        shard: usize,
        tensor: usize,
        edit: EntryEdit,
        sync: bool,
    },
    /// Changes a shard's tensors and lays the file out again, consistent where it can be.
    Tensor {
        shard: usize,
        tensor: usize,
        edit: TensorEdit,
    },
    /// Changes a JSON file (index or config) and writes it back.
    Json { file: usize, edit: JsonEdit },
    /// Deletes any file (without its index, a sharded checkpoint is still valid).
    Remove { file: usize },
}

/// A change to one tensor that keeps the file well formed: data offsets are laid out again
/// and data is resized to what dtype and shape need (when that is small).
#[derive(Debug, Clone)]
enum TensorEdit {
    /// New shape, bytes kept (usually a size mismatch).
    Reshape(Vec<u64>),
    /// An empty tensor: a zero dim among possibly huge others.
    Empty(Vec<u64>),
    /// New dtype, data resized to fit.
    Retype(String),
    /// Dims reversed, bytes kept (a consistent but transposed tensor).
    ReverseDims,
    /// A sibling `{name}{suffix}` (a quantization scale, say), data sized to fit.
    AddSibling {
        suffix: &'static str,
        dtype: String,
        shape: Vec<u64>,
    },
    /// Moved to the end of the data area.
    MoveLast,
    /// Made an FP8 weight (empty with `empty` as shape, if given) with a scale sibling.
    Quantize {
        dtype: &'static str,
        empty: Option<Vec<u64>>,
        suffix: &'static str,
        scale_dtype: String,
        scale_shape: Vec<u64>,
    },
}

/// A change to one entry of a safetensors header.
#[derive(Debug, Clone)]
enum EntryEdit {
    Dtype(String),
    Shape(Vec<u64>),
    Dim {
        at: usize,
        value: u64,
    },
    Offsets(u64, u64),
    ShiftOffsets(i64),
    RemoveField(&'static str),
    Rename(String),
    Remove,
    /// A second entry with the same offsets under another name.
    Duplicate(String),
    Replace(Value),
    Metadata {
        key: String,
        value: Value,
    },
}

/// A change to a JSON file: its "entries" are the index's weight_map entries or the config's
/// top-level keys.
#[derive(Debug, Clone)]
enum JsonEdit {
    DeleteEntry(usize),
    SetEntry(usize, Value),
    Set(&'static str, Value),
    Delete(&'static str),
}

fn pick<T>(items: &mut [T], at: usize) -> Option<&mut T> {
    if items.is_empty() {
        None
    } else {
        let len = items.len();
        items.get_mut(at % len)
    }
}

/// The `at`-th (modulo) file whose name ends with `suffix`.
fn choose(files: &Files, suffix: &str, at: usize) -> Option<usize> {
    let matching: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].0.ends_with(suffix))
        .collect();
    (!matching.is_empty()).then(|| matching[at % matching.len()])
}

fn apply(files: &mut Files, m: &Mutation) {
    match m {
        Mutation::FlipBit { file, at, bit } => {
            if let Some((_, bytes)) = pick(files, *file) {
                let len = bytes.len();
                if len > 0 {
                    bytes[at % len] ^= 1 << (bit % 8);
                }
            }
        }
        Mutation::SetHeadByte { file, at, value } => {
            if let Some((_, bytes)) = pick(files, *file) {
                let len = bytes.len().min(4096);
                if len > 0 {
                    bytes[at % len] = *value;
                }
            }
        }
        Mutation::SetByte { file, at, value } => {
            if let Some((_, bytes)) = pick(files, *file) {
                let len = bytes.len();
                if len > 0 {
                    bytes[at % len] = *value;
                }
            }
        }
        Mutation::Truncate { file, keep } => {
            if let Some((_, bytes)) = pick(files, *file) {
                let keep = keep % (bytes.len() + 1);
                bytes.truncate(keep);
            }
        }
        Mutation::Extend { file, bytes: extra } => {
            if let Some((_, bytes)) = pick(files, *file) {
                bytes.extend_from_slice(extra);
            }
        }
        Mutation::HeaderLen { shard, len } => {
            if let Some(i) = choose(files, ".safetensors", *shard) {
                let bytes = &mut files[i].1;
                if bytes.len() >= 8 {
                    bytes[..8].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
        Mutation::Header {
            shard,
            tensor,
            edit,
            sync,
        } => {
            if let Some(i) = choose(files, ".safetensors", *shard)
                && let Some(bytes) = edit_header(&files[i].1, *tensor, edit)
            {
                files[i].1 = bytes;
                if *sync {
                    sync_index(files, i);
                }
            }
        }
        Mutation::Tensor {
            shard,
            tensor,
            edit,
        } => {
            if let Some(i) = choose(files, ".safetensors", *shard)
                && let Some(bytes) = edit_tensor(&files[i].1, *tensor, edit)
            {
                files[i].1 = bytes;
                sync_index(files, i);
            }
        }
        Mutation::Remove { file } => {
            if !files.is_empty() {
                let at = file % files.len();
                files.remove(at);
            }
        }
        Mutation::Json { file, edit } => {
            if let Some(i) = choose(files, ".json", *file) {
                let is_index = files[i].0.ends_with("index.json");
                if let Ok(mut value) = serde_json::from_slice::<Value>(&files[i].1) {
                    edit_json(&mut value, is_index, edit);
                    files[i].1 = serde_json::to_vec_pretty(&value).expect("JSON to text");
                }
            }
        }
    }
}

/// Makes the index (if any, and if it parses) list exactly the tensors that shard `shard`
/// now holds, keeping the change a mutation of the shard alone.
fn sync_index(files: &mut Files, shard: usize) {
    let file = Path::new(&files[shard].0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((header, _)) = split_raw(&files[shard].1) else {
        return;
    };
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let dir = Path::new(&files[shard].0)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let index_path = dir
        .join("model.safetensors.index.json")
        .to_string_lossy()
        .into_owned();
    let Some(index) = files.iter_mut().find(|(rel, _)| *rel == index_path) else {
        return;
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&index.1) else {
        return;
    };
    let Some(map) = value.get_mut("weight_map").and_then(Value::as_object_mut) else {
        return;
    };
    map.retain(|name, f| f.as_str() != Some(file.as_str()) || names.contains(name));
    for name in names {
        map.insert(name, json!(file));
    }
    index.1 = serde_json::to_vec_pretty(&value).expect("JSON to text");
}

/// Bytes per element of a dtype word, for the byte-sized dtypes.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => Some(1),
        "BF16" | "F16" | "I16" | "U16" => Some(2),
        "F32" | "I32" | "U32" => Some(4),
        "F64" | "I64" | "U64" | "C64" => Some(8),
        _ => None,
    }
}

/// The byte length dtype and shape need, when it is at most 64 KiB.
fn small_len(dtype: &str, shape: &[u64]) -> Option<usize> {
    let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    let len = numel.checked_mul(dtype_bytes(dtype)?)?;
    usize::try_from(len).ok().filter(|&l| l <= 1 << 16)
}

/// One tensor of a shard image: name, header entry and bytes.
type Decoded = (String, Map<String, Value>, Vec<u8>);

/// The shard image with one tensor changed and the data laid out again, or None when the
/// image cannot be decoded (its header is broken already).
fn edit_tensor(bytes: &[u8], tensor: usize, edit: &TensorEdit) -> Option<Vec<u8>> {
    let (header, data) = split_raw(bytes)?;
    let metadata = header.get("__metadata__").cloned();
    let mut tensors: Vec<(u64, Decoded)> = Vec::new();
    for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        let entry = entry.as_object()?.clone();
        let offsets = entry.get("data_offsets")?.as_array()?;
        let start = usize::try_from(offsets.first()?.as_u64()?).ok()?;
        let end = usize::try_from(offsets.get(1)?.as_u64()?).ok()?;
        let bytes = data.get(start..end)?.to_vec();
        tensors.push((start as u64, (name.clone(), entry, bytes)));
    }
    tensors.sort_by_key(|(start, _)| *start);
    let mut tensors: Vec<Decoded> = tensors.into_iter().map(|(_, t)| t).collect();
    if tensors.is_empty() {
        return None;
    }
    let at = tensor % tensors.len();
    match edit {
        TensorEdit::AddSibling {
            suffix,
            dtype,
            shape,
        } => {
            let name = format!("{}{suffix}", tensors[at].0);
            let len = small_len(dtype, shape).unwrap_or(0);
            let mut scale = Map::new();
            scale.insert("dtype".into(), json!(dtype));
            scale.insert("shape".into(), json!(shape));
            tensors.push((name, scale, vec![0x3c; len]));
        }
        TensorEdit::MoveLast => {
            let moved = tensors.remove(at);
            tensors.push(moved);
        }
        TensorEdit::Quantize {
            dtype,
            empty,
            suffix,
            scale_dtype,
            scale_shape,
        } => {
            let (_, entry, data) = &mut tensors[at];
            if let Some(shape) = empty {
                edit_decoded(entry, data, &TensorEdit::Empty(shape.clone()))?;
            }
            edit_decoded(entry, data, &TensorEdit::Retype(dtype.to_string()))?;
            let name = format!("{}{suffix}", tensors[at].0);
            let len = small_len(scale_dtype, scale_shape).unwrap_or(0);
            let mut scale = Map::new();
            scale.insert("dtype".into(), json!(scale_dtype));
            scale.insert("shape".into(), json!(scale_shape));
            tensors.push((name, scale, vec![0x3c; len]));
        }
        edit => {
            let (_, entry, data) = &mut tensors[at];
            edit_decoded(entry, data, edit)?;
        }
    }
    let mut out = Map::new();
    if let Some(meta) = metadata {
        out.insert("__metadata__".into(), meta);
    }
    let mut all = Vec::new();
    for (name, mut entry, bytes) in tensors {
        let start = all.len();
        all.extend_from_slice(&bytes);
        entry.insert("data_offsets".into(), json!([start, all.len()]));
        out.insert(name, Value::Object(entry));
    }
    Some(raw_bytes(&header_text(&out), &all))
}

/// The in-place edits of [`edit_tensor`].
fn edit_decoded(
    entry: &mut Map<String, Value>,
    data: &mut Vec<u8>,
    edit: &TensorEdit,
) -> Option<()> {
    match edit {
        TensorEdit::Reshape(shape) => {
            entry.insert("shape".into(), json!(shape));
        }
        TensorEdit::Empty(shape) => {
            entry.insert("shape".into(), json!(shape));
            data.clear();
        }
        TensorEdit::Retype(new) => {
            entry.insert("dtype".into(), json!(new));
            let shape: Vec<u64> = serde_json::from_value(entry.get("shape")?.clone()).ok()?;
            if let Some(len) = small_len(new, &shape) {
                data.resize(len, 0x3c);
            }
        }
        TensorEdit::ReverseDims => entry.get_mut("shape")?.as_array_mut()?.reverse(),
        TensorEdit::AddSibling { .. } | TensorEdit::MoveLast | TensorEdit::Quantize { .. } => {}
    }
    Some(())
}

/// The shard image with one header entry changed, or None when its header is not JSON.
fn edit_header(bytes: &[u8], tensor: usize, edit: &EntryEdit) -> Option<Vec<u8>> {
    let (mut header, data) = split_raw(bytes)?;
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = if names.is_empty() {
        None
    } else {
        Some(names[tensor % names.len()].clone())
    };
    match (edit, name) {
        (EntryEdit::Metadata { key, value }, _) => {
            let meta = header.entry("__metadata__").or_insert_with(|| json!({}));
            match meta.as_object_mut() {
                Some(map) => {
                    map.insert(key.clone(), value.clone());
                }
                None => *meta = json!({ key.clone(): value.clone() }),
            }
        }
        (_, None) => return None,
        (EntryEdit::Rename(new), Some(name)) => {
            let entry = header.remove(&name)?;
            header.insert(new.clone(), entry);
        }
        (EntryEdit::Remove, Some(name)) => {
            header.remove(&name);
        }
        (EntryEdit::Duplicate(new), Some(name)) => {
            let entry = header[&name].clone();
            header.insert(new.clone(), entry);
        }
        (EntryEdit::Replace(value), Some(name)) => {
            header.insert(name, value.clone());
        }
        (edit, Some(name)) => {
            let entry = header.get_mut(&name)?.as_object_mut()?;
            edit_entry(entry, edit);
        }
    }
    Some(raw_bytes(&header_text(&header), data))
}

fn edit_entry(entry: &mut Map<String, Value>, edit: &EntryEdit) {
    match edit {
        EntryEdit::Dtype(d) => {
            entry.insert("dtype".into(), json!(d));
        }
        EntryEdit::Shape(s) => {
            entry.insert("shape".into(), json!(s));
        }
        EntryEdit::Dim { at, value } => {
            if let Some(dims) = entry.get_mut("shape").and_then(Value::as_array_mut)
                && let Some(d) = pick(dims, *at)
            {
                *d = json!(value);
            }
        }
        EntryEdit::Offsets(a, b) => {
            entry.insert("data_offsets".into(), json!([a, b]));
        }
        EntryEdit::ShiftOffsets(by) => {
            if let Some(offsets) = entry.get_mut("data_offsets").and_then(Value::as_array_mut) {
                for o in offsets.iter_mut() {
                    if let Some(v) = o.as_u64() {
                        *o = json!(v.saturating_add_signed(*by));
                    }
                }
            }
        }
        EntryEdit::RemoveField(field) => {
            entry.remove(*field);
        }
        EntryEdit::Rename(_)
        | EntryEdit::Remove
        | EntryEdit::Duplicate(_)
        | EntryEdit::Replace(_)
        | EntryEdit::Metadata { .. } => {}
    }
}

fn edit_json(value: &mut Value, is_index: bool, edit: &JsonEdit) {
    let entries = if is_index {
        value.get_mut("weight_map").and_then(Value::as_object_mut)
    } else {
        value.as_object_mut()
    };
    match edit {
        JsonEdit::DeleteEntry(at) | JsonEdit::SetEntry(at, _) => {
            let Some(map) = entries else { return };
            let keys: Vec<String> = map.keys().cloned().collect();
            if keys.is_empty() {
                return;
            }
            let key = &keys[at % keys.len()];
            match edit {
                JsonEdit::SetEntry(_, v) => {
                    map.insert(key.clone(), v.clone());
                }
                _ => {
                    map.remove(key);
                }
            }
        }
        JsonEdit::Set(key, v) => {
            if let Some(map) = value.as_object_mut() {
                map.insert((*key).to_string(), v.clone());
            }
        }
        JsonEdit::Delete(key) => {
            if let Some(map) = value.as_object_mut() {
                map.remove(*key);
            }
        }
    }
}

// ---- strategies ----

const INTERESTING: [u64; 30] = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    12,
    15,
    16,
    17,
    64,
    128,
    255,
    256,
    1 << 16,
    (1 << 31) - 1,
    1 << 31,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    1 << 53,
    1 << 62,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 7,
    u64::MAX - 1,
    u64::MAX,
    100_000_001,
];

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => select(&INTERESTING[..]),
        2 => 0u64..64,
        1 => any::<u64>(),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => number().prop_map(|n| json!(n)),
        1 => select(vec![json!(-1), json!(1.5), json!(-0.0), json!(1e300), json!(i64::MIN)]),
    ]
}

fn word() -> impl Strategy<Value = String> {
    select(vec![
        "bfloat16",
        "float16",
        "float32",
        "float8_e4m3fn",
        "int8",
        "Q7",
        "",
        "nemotron_h",
        "llama",
        "model.safetensors",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00009-of-00003.safetensors",
        "../config.json",
        "/etc/passwd",
        "config.json",
        "hf",
        "internal",
        "backbone",
        "model",
    ])
    .prop_map(str::to_string)
}

fn pattern() -> impl Strategy<Value = String> {
    "[ME*\\-]{0,10}|[ME*\\-X]{0,3}"
}

fn block_types() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        select(vec![
            "mamba",
            "moe",
            "attention",
            "mlp",
            "full_attention",
            "linear_attention",
            "x",
        ]),
        0..8,
    )
    .prop_map(|v| json!(v))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => json_number(),
        3 => word().prop_map(Value::String),
        2 => pattern().prop_map(Value::String),
        1 => block_types(),
        1 => (json_number(), json_number())
            .prop_map(|(a, b)| json!({"quant_method": "fp8", "weight_block_size": [a, b]})),
        1 => select(vec![Value::Null, json!(true), json!(false), json!({}), json!([]), json!([1, 2])]),
    ]
}

/// Tensor names the model rules look at, with interesting layer and expert numbers.
fn tensor_name() -> impl Strategy<Value = String> {
    let scope = select(vec!["backbone.", "model.", "mtp.", "", "lm_head."]);
    let index = prop_oneof![
        3 => 0u64..8,
        1 => select(&INTERESTING[..]),
    ]
    .prop_map(|n| n.to_string());
    let odd_index =
        select(vec!["18446744073709551616", "-1", "01", "", "x"]).prop_map(str::to_string);
    let index = prop_oneof![6 => index, 1 => odd_index];
    let rest = select(vec![
        "experts.{e}.up_proj.weight",
        "experts.{e}.down_proj.weight",
        "experts.{e}.gate_proj.weight",
        "experts.{e}.up_proj.bias",
        "experts.{e}.up_proj.weight_scale_inv",
        "experts.{e}.up_proj.weight_scale",
        "experts.{e}.down_proj.weight_scale_2",
        "experts.{e}.down_proj.input_scale",
        "experts.gate_and_up_projs",
        "experts.down_projs",
        "A_log",
        "D",
        "dt_bias",
        "_fp32_params.A_log",
        "gate.weight",
        "gate.e_score_correction_bias",
        "in_proj.weight",
        "q_proj.weight",
        "up_proj.weight",
        "shared_experts.up_proj.weight",
    ]);
    (scope, index.clone(), index, rest).prop_map(|(scope, layer, e, rest)| {
        format!("{scope}layers.{layer}.mixer.{}", rest.replace("{e}", &e))
    })
}

fn dtype_word() -> impl Strategy<Value = String> {
    select(vec![
        "BF16", "F16", "F32", "F64", "I64", "I32", "U8", "I8", "BOOL", "F8_E4M3", "F8_E5M2",
        "F8_E8M0", "F4", "C64", "U64", "Q7", "",
    ])
    .prop_map(str::to_string)
}

fn entry_edit() -> impl Strategy<Value = EntryEdit> {
    let metadata_key = select(vec![
        "format",
        "nemoconv.layout",
        "nemoconv.hf_prefix",
        "nemoconv.n_routed_experts",
        "nemoconv.ep_size",
        "nemoconv.ep_rank",
        "nemoconv.expert_start",
        "nemoconv.expert_end",
    ])
    .prop_map(str::to_string);
    let metadata_value = prop_oneof![
        number().prop_map(|n| json!(n.to_string())),
        word().prop_map(Value::String),
        Just(json!(7)),
    ];
    prop_oneof![
        2 => dtype_word().prop_map(EntryEdit::Dtype),
        1 => prop::collection::vec(number(), 0..4).prop_map(EntryEdit::Shape),
        2 => (any::<usize>(), number()).prop_map(|(at, value)| EntryEdit::Dim { at, value }),
        1 => (number(), number()).prop_map(|(a, b)| EntryEdit::Offsets(a, b)),
        1 => select(vec![-1i64, 1, -16, 16, 2, i64::MIN, i64::MAX]).prop_map(EntryEdit::ShiftOffsets),
        1 => select(vec!["dtype", "shape", "data_offsets"]).prop_map(EntryEdit::RemoveField),
        4 => tensor_name().prop_map(EntryEdit::Rename),
        1 => Just(EntryEdit::Remove),
        1 => tensor_name().prop_map(EntryEdit::Duplicate),
        1 => value().prop_map(EntryEdit::Replace),
        2 => (metadata_key, metadata_value)
            .prop_map(|(key, value)| EntryEdit::Metadata { key, value }),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let key = select(vec![
        "hybrid_override_pattern",
        "layers_block_type",
        "n_routed_experts",
        "moe_intermediate_size",
        "mlp_bias",
        "torch_dtype",
        "dtype",
        "model_type",
        "quantization_config",
        "num_hidden_layers",
        "weight_map",
        "metadata",
    ]);
    prop_oneof![
        2 => any::<usize>().prop_map(JsonEdit::DeleteEntry),
        2 => (any::<usize>(), value()).prop_map(|(at, v)| JsonEdit::SetEntry(at, v)),
        4 => (key.clone(), value()).prop_map(|(k, v)| JsonEdit::Set(k, v)),
        1 => key.prop_map(JsonEdit::Delete),
    ]
}

fn tensor_edit() -> impl Strategy<Value = TensorEdit> {
    let dims = || prop::collection::vec(number(), 0..4);
    let empty = empty_shape().prop_map(TensorEdit::Empty);
    let suffix = select(vec![
        "_scale_inv",
        "_scale",
        "_scale_2",
        ".weight_scale_inv",
        "_extra_state",
        ".bias",
    ]);
    prop_oneof![
        1 => dims().prop_map(TensorEdit::Reshape),
        2 => empty,
        2 => dtype_word().prop_map(TensorEdit::Retype),
        1 => Just(TensorEdit::ReverseDims),
        3 => (suffix, dtype_word(), dims())
            .prop_map(|(suffix, dtype, shape)| TensorEdit::AddSibling { suffix, dtype, shape }),
        1 => Just(TensorEdit::MoveLast),
        3 => (
            select(vec!["F8_E4M3", "F8_E5M2"]),
            prop::option::weighted(0.3, empty_shape()),
            select(vec!["_scale_inv", "_scale", "_scale_2"]),
            prop_oneof![3 => Just("F32".to_string()), 1 => dtype_word()],
            prop::collection::vec(number(), 0..3),
        )
            .prop_map(|(dtype, empty, suffix, scale_dtype, scale_shape)| TensorEdit::Quantize {
                dtype,
                empty,
                suffix,
                scale_dtype,
                scale_shape,
            }),
    ]
}

/// A shape with a zero dim among possibly huge others; often the zero comes first, so that
/// the dims after it can multiply past u64 while the tensor stays valid (and empty).
fn empty_shape() -> impl Strategy<Value = Vec<u64>> {
    let huge = select(vec![1u64 << 32, 1 << 40, 1 << 62, u64::MAX]);
    prop_oneof![
        (prop::collection::vec(number(), 0..4), any::<usize>()).prop_map(|(mut shape, at)| {
            let at = at % (shape.len() + 1);
            shape.insert(at, 0);
            shape
        }),
        prop::collection::vec(huge, 1..4).prop_map(|mut shape| {
            shape.insert(0, 0);
            shape
        }),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let file = any::<usize>();
    prop_oneof![
        2 => (file, any::<usize>(), any::<u8>())
            .prop_map(|(file, at, bit)| Mutation::FlipBit { file, at, bit }),
        2 => (file, any::<usize>(), any::<u8>())
            .prop_map(|(file, at, value)| Mutation::SetHeadByte { file, at, value }),
        1 => (file, any::<usize>(), any::<u8>())
            .prop_map(|(file, at, value)| Mutation::SetByte { file, at, value }),
        1 => (file, any::<usize>()).prop_map(|(file, keep)| Mutation::Truncate { file, keep }),
        1 => (file, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(file, bytes)| Mutation::Extend { file, bytes }),
        1 => (file, number()).prop_map(|(shard, len)| Mutation::HeaderLen { shard, len }),
        6 => (file, any::<usize>(), entry_edit(), any::<bool>()).prop_map(
            |(shard, tensor, edit, sync)| Mutation::Header { shard, tensor, edit, sync }
        ),
        1 => file.prop_map(|file| Mutation::Remove { file }),
        5 => (file, any::<usize>(), tensor_edit())
            .prop_map(|(shard, tensor, edit)| Mutation::Tensor { shard, tensor, edit }),
        4 => (file, json_edit()).prop_map(|(file, edit)| Mutation::Json { file, edit }),
    ]
}

/// The options of one case, kept printable for the shrunk report.
#[derive(Debug, Clone)]
struct Opts {
    lenient: bool,
    dequantize: bool,
    expert_dtype: Option<u8>,
    max_shard_bytes: u64,
    /// 0: whole experts; 1: one slice (size, rank % size); 2: all slices of size.
    ep_mode: u8,
    ep_size: u64,
    ep_rank: u64,
    exclude: Option<&'static str>,
    hf_prefix: Option<bool>,
}

impl Opts {
    /// The options of `direction`; the fields of the other direction are unused.
    fn options(&self, direction: Direction) -> ConvertOptions {
        let run = RunOptions {
            threads: std::num::NonZeroUsize::new(2),
            ..RunOptions::default()
        };
        match direction {
            Direction::FromHf => FromHfOptions {
                run,
                max_shard_bytes: self.max_shard_bytes,
                expert_dtype: self
                    .expert_dtype
                    .map(|d| [Dtype::BF16, Dtype::F16, Dtype::F32][d as usize % 3]),
                lenient: self.lenient,
                dequantize: self.dequantize,
                ep: match self.ep_mode {
                    1 => ExpertParallel::One(
                        EpSlice::new(self.ep_size, self.ep_rank % self.ep_size)
                            .expect("the rank is taken modulo the size"),
                    ),
                    2 => ExpertParallel::All(
                        std::num::NonZeroU64::new(self.ep_size).expect("sizes start at 1"),
                    ),
                    _ => ExpertParallel::None,
                },
            }
            .into(),
            Direction::ToHf => ToHfOptions {
                run,
                max_shard_bytes: self.max_shard_bytes,
                hf_prefix: self.hf_prefix.map(|m| {
                    if m {
                        HfPrefix::Model
                    } else {
                        HfPrefix::Backbone
                    }
                }),
                exclude: self
                    .exclude
                    .and_then(|re| anchored_regex(re).expect("the fuzzer's regexes compile")),
            }
            .into(),
        }
    }
}

fn opts() -> impl Strategy<Value = Opts> {
    (
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0u8..3),
        select(vec![
            nemoconv::options::DEFAULT_MAX_SHARD_BYTES,
            1,
            100,
            5000,
        ]),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        1u64..5,
        0u64..5,
        prop::option::weighted(
            0.2,
            select(vec![
                "lm_head",
                ".*_extra_state.*",
                "backbone\\.layers\\.1\\.",
                "(?=b)a|b",
            ]),
        ),
        prop::option::weighted(0.2, any::<bool>()),
    )
        .prop_map(
            |(
                lenient,
                dequantize,
                expert_dtype,
                max_shard_bytes,
                ep_mode,
                ep_size,
                ep_rank,
                exclude,
                hf_prefix,
            )| Opts {
                lenient,
                dequantize,
                expert_dtype,
                max_shard_bytes,
                ep_mode,
                ep_size,
                ep_rank,
                exclude,
                hf_prefix,
            },
        )
}

// ---- the runner ----

/// What the cases of one target did, printed at the end so a run shows it reached past the
/// header checks.
#[derive(Default)]
struct Tally {
    planned: AtomicUsize,
    refused_at_plan: AtomicUsize,
    converted: AtomicUsize,
    refused_at_convert: AtomicUsize,
}

fn fuzz(target: &'static str, direction: Direction, base: &Files) {
    start_watchdog();
    let tally = Tally::default();
    let config = Config {
        cases: cases(),
        rng_seed: seed(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (prop::collection::vec(mutation(), 1..4), opts());
    let result = runner.run(&strategy, |(mutations, opts)| {
        run_case(target, direction, base, &mutations, &opts, &tally)
    });
    eprintln!(
        "{target}: {} cases: {} refused at plan, {} planned; of those {} converted, {} refused at convert",
        cases(),
        tally.refused_at_plan.load(Ordering::Relaxed),
        tally.planned.load(Ordering::Relaxed),
        tally.converted.load(Ordering::Relaxed),
        tally.refused_at_convert.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}

fn run_case(
    target: &'static str,
    direction: Direction,
    base: &Files,
    mutations: &[Mutation],
    opts: &Opts,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let mut files = base.clone();
    for m in mutations {
        apply(&mut files, m);
    }
    let tmp = tempdir();
    let input = tmp.path().join("in");
    write_files(&input, &files);
    let out = tmp.path().join("out");
    let options = opts.options(direction);
    let cancel = AtomicBool::new(false);
    let inputs = [input.clone()];
    let running = Running::start(target, format!("{mutations:?} {opts:?}"));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        match nemoconv::plan(&inputs, &options) {
            Err(e) => (false, Err(e)),
            Ok(_) => (
                true,
                nemoconv::convert(&inputs, &out, &options, &NoProgress, &cancel).map(|_| ()),
            ),
        }
    }));
    drop(running);
    let (planned, converted) = match outcome {
        Ok(done) => done,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            return Err(TestCaseError::fail(format!("nemoconv panicked: {message}")));
        }
    };
    match (planned, &converted) {
        (false, _) => tally.refused_at_plan.fetch_add(1, Ordering::Relaxed),
        (true, Ok(())) => tally.converted.fetch_add(1, Ordering::Relaxed),
        (true, Err(_)) => tally.refused_at_convert.fetch_add(1, Ordering::Relaxed),
    };
    if planned {
        tally.planned.fetch_add(1, Ordering::Relaxed);
    }
    if read_files(&input) != files {
        return Err(TestCaseError::fail("the input was modified"));
    }
    if let Err(e) = &converted {
        let message = e.to_string();
        prop_assert!(!message.is_empty(), "an empty error message");
        prop_assert!(
            !out.exists(),
            "{} exists after an error: {message}",
            out.display()
        );
    }
    let left: Vec<String> = crate::harness::dir_entries(tmp.path())
        .into_iter()
        .filter(|n| n.contains("nemoconv-tmp"))
        .collect();
    prop_assert!(left.is_empty(), "temporary directories left: {left:?}");
    Ok(())
}

#[test]
fn fuzz_from_hf_never_panics() {
    static BASE: OnceLock<Files> = OnceLock::new();
    let base = BASE.get_or_init(|| read_files(&fixture("golden/tiny/hf")));
    fuzz("from-hf", Direction::FromHf, base);
}

#[test]
fn fuzz_to_hf_never_panics() {
    let mut base = read_files(&fixture("golden/tiny/internal"));
    base.extend(
        read_files(&fixture("golden/tiny/hf"))
            .into_iter()
            .filter(|(rel, _)| rel == "config.json"),
    );
    base.sort();
    fuzz("to-hf", Direction::ToHf, &base);
}

/// to-hf of the two expert-parallel slices nemoconv itself writes (`rank-*` directories with
/// their recorded E, n, r, start and end), so the slice checks get mutated metadata.
#[test]
fn fuzz_to_hf_of_slices_never_panics() {
    let tmp = tempdir();
    let out = tmp.path().join("slices");
    let options = FromHfOptions {
        ep: ExpertParallel::All(std::num::NonZeroU64::new(2).expect("2 is not 0")),
        ..FromHfOptions::default()
    };
    nemoconv::convert(
        &[fixture("golden/tiny/hf")],
        &out,
        &options.into(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .expect("from-hf --ep-size 2 of the golden checkpoint");
    let base = read_files(&out);
    let names: Vec<&str> = base.iter().map(|(rel, _)| rel.as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("rank-00001-of-00002/")),
        "no slices: {names:?}"
    );
    fuzz("to-hf slices", Direction::ToHf, &base);
}
