//! Tools for breaking checkpoints on purpose: a copy of the golden case in a fresh temporary
//! directory, a safetensors file taken apart into its header and data (so a test can damage
//! either and write it back, consistent or not), JSON edits in place, and the checks every
//! refused run must pass.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tempfile::TempDir;

use crate::harness::{Run, dir_entries, fixture, tempdir};

/// The golden HF checkpoint's shards, in file order.
pub const SHARD_1: &str = "model-00001-of-00003.safetensors";
pub const SHARD_2: &str = "model-00002-of-00003.safetensors";
pub const SHARD_3: &str = "model-00003-of-00003.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";
pub const CONFIG: &str = "config.json";

/// A copy of a golden checkpoint in a fresh temporary directory, and where to write.
pub struct Case {
    pub tmp: TempDir,
    /// The input checkpoint directory (`<tmp>/in`).
    pub input: PathBuf,
    /// The output directory, absent (`<tmp>/out`).
    pub out: PathBuf,
}

impl Case {
    /// A copy of `fixtures/golden/tiny/hf`.
    pub fn golden_hf() -> Case {
        let case = Case::empty();
        copy_dir(&fixture("golden/tiny/hf"), &case.input);
        case
    }

    /// A copy of `fixtures/golden/tiny/internal` with `hf/config.json` beside it, the input
    /// of a to-hf run.
    pub fn golden_internal() -> Case {
        let case = Case::empty();
        copy_dir(&fixture("golden/tiny/internal"), &case.input);
        std::fs::copy(
            fixture("golden/tiny/hf").join(CONFIG),
            case.input.join(CONFIG),
        )
        .expect("copy config.json");
        case
    }

    /// A temporary directory with nothing in `in` yet (created) and no `out`.
    pub fn empty() -> Case {
        let tmp = tempdir();
        let input = tmp.path().join("in");
        std::fs::create_dir(&input).expect("create the input directory");
        let out = tmp.path().join("out");
        Case { tmp, input, out }
    }

    /// A file of the input.
    pub fn file(&self, name: &str) -> PathBuf {
        self.input.join(name)
    }

    /// Edits a JSON file of the input in place.
    pub fn edit_json(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path).expect("read JSON file");
        let mut value: Value = serde_json::from_str(&text).expect("parse JSON file");
        edit(&mut value);
        let text = serde_json::to_string_pretty(&value).expect("JSON to text");
        std::fs::write(&path, text).expect("write JSON file");
    }

    /// Edits the index's `weight_map`.
    pub fn edit_weight_map(&self, edit: impl FnOnce(&mut Map<String, Value>)) {
        self.edit_json(INDEX, |index| {
            edit(
                index["weight_map"]
                    .as_object_mut()
                    .expect("weight_map object"),
            );
        });
    }

    /// Edits a shard's tensors and writes it back as a well-formed file (offsets recomputed).
    pub fn edit_shard(&self, name: &str, edit: impl FnOnce(&mut StFile)) {
        let path = self.file(name);
        let mut st = StFile::read(&path);
        edit(&mut st);
        st.write(&path);
    }

    /// Edits a shard's raw header JSON, keeping its data area as is (offsets are not fixed).
    pub fn edit_header(
        &self,
        name: &str,
        edit: impl FnOnce(&mut Map<String, Value>, &mut Vec<u8>),
    ) {
        let path = self.file(name);
        let (mut header, mut data) = read_raw(&path);
        edit(&mut header, &mut data);
        write_raw(&path, &header_text(&header), &data);
    }

    /// Cuts a file of the input to `len` bytes.
    pub fn truncate(&self, name: &str, len: u64) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.file(name))
            .expect("open file to truncate");
        file.set_len(len).expect("truncate file");
    }

    /// The size of a file of the input.
    pub fn len(&self, name: &str) -> u64 {
        std::fs::metadata(self.file(name)).expect("stat file").len()
    }

    /// The header length a shard of the input declares.
    pub fn header_len(&self, name: &str) -> u64 {
        let bytes = std::fs::read(self.file(name)).expect("read shard");
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
    }
}

/// Copies the regular files of `from` into `to` (created); the golden directories are flat.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("list fixture directory") {
        let entry = entry.expect("directory entry");
        assert!(
            entry.file_type().expect("file type").is_file(),
            "{:?} is not a file",
            entry.path()
        );
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy fixture file");
    }
}

/// One tensor of a safetensors file, by value.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// A well-formed safetensors file taken apart: `__metadata__` and tensors in data order.
#[derive(Debug, Clone)]
pub struct StFile {
    pub metadata: Option<Value>,
    pub tensors: Vec<RawTensor>,
}

impl StFile {
    /// Reads a well-formed file (panics on a broken one: only golden files are read so).
    pub fn read(path: &Path) -> StFile {
        let (header, data) = read_raw(path);
        StFile::from_parts(&header, &data)
    }

    fn from_parts(header: &Map<String, Value>, data: &[u8]) -> StFile {
        let mut tensors = Vec::new();
        for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
            let offsets: Vec<usize> = entry["data_offsets"]
                .as_array()
                .expect("data_offsets")
                .iter()
                .map(|o| o.as_u64().expect("offset") as usize)
                .collect();
            tensors.push(RawTensor {
                name: name.clone(),
                dtype: entry["dtype"].as_str().expect("dtype").to_string(),
                shape: entry["shape"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_u64().expect("dim"))
                    .collect(),
                data: data[offsets[0]..offsets[1]].to_vec(),
            });
        }
        tensors.sort_by_key(|t| header[&t.name]["data_offsets"][0].as_u64());
        StFile {
            metadata: header.get("__metadata__").cloned(),
            tensors,
        }
    }

    /// The position of tensor `name`, which must exist.
    pub fn position(&self, name: &str) -> usize {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name:?} in this shard"))
    }

    /// The tensor `name`, which must exist.
    pub fn get_mut(&mut self, name: &str) -> &mut RawTensor {
        let at = self.position(name);
        &mut self.tensors[at]
    }

    /// Removes tensor `name`, which must exist.
    pub fn remove(&mut self, name: &str) -> RawTensor {
        let at = self.position(name);
        self.tensors.remove(at)
    }

    /// The header this file's tensors need, offsets laid end to end.
    pub fn header(&self) -> Map<String, Value> {
        let mut header = Map::new();
        if let Some(meta) = &self.metadata {
            header.insert("__metadata__".into(), meta.clone());
        }
        let mut at = 0;
        for t in &self.tensors {
            let end = at + t.data.len();
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [at, end]}),
            );
            at = end;
        }
        header
    }

    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let data: Vec<u8> = self
            .tensors
            .iter()
            .flat_map(|t| t.data.iter().copied())
            .collect();
        raw_bytes(&header_text(&self.header()), &data)
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).expect("write shard");
    }
}

pub use crate::builder::{header_text, raw_bytes};

/// Writes a file from a header text and a data area.
pub fn write_raw(path: &Path, header: &[u8], data: &[u8]) {
    std::fs::write(path, raw_bytes(header, data)).expect("write shard");
}

/// Reads a file whose header is valid JSON, whatever its offsets say.
pub fn read_raw(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read shard");
    let (header, data) = split_raw(&bytes).expect("a shard with a JSON header");
    (header, data.to_vec())
}

/// The header object and the data area of a file image, or None if it has no valid JSON header.
pub fn split_raw(bytes: &[u8]) -> Option<(Map<String, Value>, &[u8])> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((header, &bytes[end..]))
}

/// Checks a refused conversion: exit `code`, each needle on stderr, no panic, no output
/// directory and no temporary directory left beside it. (The input's hash is checked by the
/// harness's `convert`, or by the caller.)
pub fn assert_refused_with(run: &Run, code: i32, out: &Path, needles: &[&str]) {
    run.code(code);
    for needle in needles {
        run.stderr_has(needle);
    }
    assert_no_panic(run);
    if out.exists() {
        run.fail(&format!("{} exists after a refusal", out.display()));
    }
    assert_no_temporaries(run, out.parent().expect("output has a parent"));
}

/// Fails if the run printed a panic message.
pub fn assert_no_panic(run: &Run) {
    if run.stderr.contains("panicked") || run.stderr.contains("RUST_BACKTRACE") {
        run.fail("nemoconv panicked");
    }
}

/// Fails if `dir` holds a nemoconv temporary directory.
pub fn assert_no_temporaries(run: &Run, dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    let left: Vec<String> = dir_entries(dir)
        .into_iter()
        .filter(|n| n.contains("nemoconv-tmp"))
        .collect();
    if !left.is_empty() {
        run.fail(&format!(
            "temporary directories left in {}: {left:?}",
            dir.display()
        ));
    }
}
