//! A safetensors reader written here by hand (8-byte little-endian header length, JSON header,
//! data), so that no expectation depends on nemoconv's own code; per-tensor comparison; and
//! the checks every output directory must pass (SPEC §7).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One tensor as stored: dtype word (`BF16`, `F32`, ...), shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Tensors by name, in name order.
pub type Tensors = BTreeMap<String, Tensor>;

/// The index file every output has (SPEC §7).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One safetensors file, parsed.
#[derive(Debug)]
pub struct ShardFile {
    pub metadata: BTreeMap<String, String>,
    pub tensors: Tensors,
    /// Sum of the tensors' byte lengths.
    pub payload_bytes: u64,
}

/// Parses one safetensors file by hand: 8-byte little-endian header length, JSON header,
/// data. Panics unless the data offsets tile the data area exactly (no gap, no overlap) and
/// each tensor's byte length matches its dtype and shape.
pub fn read_shard(path: &Path) -> ShardFile {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let bad = |why: String| -> ! { panic!("{}: {why}", path.display()) };
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| bad("shorter than 8 bytes".into()));
    let header_len = u64::from_le_bytes(len_bytes) as usize;
    let data_start = 8 + header_len;
    let header_text = bytes
        .get(8..data_start)
        .unwrap_or_else(|| bad(format!("header length {header_len} beyond the file")));
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header_text)
        .unwrap_or_else(|e| bad(format!("header is not a JSON object: {e}")));
    let data = &bytes[data_start..];
    let mut metadata = BTreeMap::new();
    let mut tensors = Tensors::new();
    let mut spans = Vec::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            for (k, v) in entry.as_object().expect("__metadata__ is an object") {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| bad(format!("metadata {k} not a string")));
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let dtype = entry["dtype"].as_str().expect("dtype string").to_string();
        let shape: Vec<u64> = entry["shape"]
            .as_array()
            .expect("shape array")
            .iter()
            .map(|d| d.as_u64().expect("shape entry"))
            .collect();
        let offsets = entry["data_offsets"].as_array().expect("data_offsets");
        let (start, end) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        let numel: u64 = shape.iter().product();
        if (end - start) as u64 != numel * dtype_size(&dtype) {
            bad(format!(
                "tensor {name:?}: {} bytes for {dtype} {shape:?}",
                end - start
            ));
        }
        spans.push((start, end, name.clone()));
        let tensor_data = data
            .get(start..end)
            .unwrap_or_else(|| bad(format!("tensor {name:?} beyond the data")));
        let tensor = Tensor {
            dtype,
            shape,
            data: tensor_data.to_vec(),
        };
        tensors.insert(name.clone(), tensor);
    }
    spans.sort();
    let mut at = 0;
    for (start, end, name) in &spans {
        if *start != at {
            bad(format!(
                "tensor {name:?} starts at {start}, expected {at} (gap or overlap)"
            ));
        }
        at = *end;
    }
    if at != data.len() {
        bad(format!(
            "tensors cover {at} bytes of a {}-byte data area",
            data.len()
        ));
    }
    ShardFile {
        metadata,
        tensors,
        payload_bytes: at as u64,
    }
}

/// Bytes per element of a safetensors dtype word.
pub fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "BF16" | "F16" | "I16" | "U16" => 2,
        "F32" | "I32" | "U32" => 4,
        "F64" | "I64" | "U64" => 8,
        other => panic!("unknown dtype {other}"),
    }
}

/// The `*.safetensors` files directly in `dir`, sorted.
pub fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

/// Every tensor of every `*.safetensors` file in `dir`; a name held twice fails.
pub fn read_checkpoint(dir: &Path) -> Tensors {
    let files = shard_files(dir);
    assert!(!files.is_empty(), "no *.safetensors in {}", dir.display());
    let mut all = Tensors::new();
    for file in files {
        for (name, tensor) in read_shard(&file).tensors {
            if all.insert(name.clone(), tensor).is_some() {
                panic!("{}: tensor {name:?} is held twice", dir.display());
            }
        }
    }
    all
}

/// Fails with a per-tensor report (only in one side, dtype, shape, first differing byte)
/// unless `actual` and `expected` hold the same tensors.
pub fn assert_same_tensors(actual: &Tensors, expected: &Tensors) {
    let mut report = String::new();
    for name in actual.keys().filter(|n| !expected.contains_key(*n)) {
        writeln!(report, "only in actual:   {name}").unwrap();
    }
    for name in expected.keys().filter(|n| !actual.contains_key(*n)) {
        writeln!(report, "only in expected: {name}").unwrap();
    }
    for (name, a) in actual {
        let Some(e) = expected.get(name) else {
            continue;
        };
        if a.dtype != e.dtype {
            writeln!(report, "{name}: dtype {} (expected {})", a.dtype, e.dtype).unwrap();
        } else if a.shape != e.shape {
            writeln!(
                report,
                "{name}: shape {:?} (expected {:?})",
                a.shape, e.shape
            )
            .unwrap();
        } else if a.data != e.data {
            let at = a.data.iter().zip(&e.data).position(|(x, y)| x != y);
            let at = at.unwrap_or(a.data.len().min(e.data.len()));
            let (x, y) = (a.data.get(at), e.data.get(at));
            writeln!(
                report,
                "{name}: first differing byte {at}: {x:?} (expected {y:?})"
            )
            .unwrap();
        }
    }
    if !report.is_empty() {
        panic!(
            "tensors differ ({} actual, {} expected):\n{report}",
            actual.len(),
            expected.len()
        );
    }
}

/// Checks an output directory against SPEC §7 and returns its tensors: shards named
/// `model-0000i-of-0000N.safetensors`, each with `"format": "pt"`; an index whose weight_map
/// lists exactly the tensors, each in the shard that holds it, and whose total_size is the
/// sum of the tensor bytes.
pub fn assert_valid_output(dir: &Path) -> Tensors {
    let files = shard_files(dir);
    let n = files.len();
    assert!(n > 0, "{}: no shard", dir.display());
    let mut weight_map = BTreeMap::new();
    let mut total = 0;
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            name,
            format!("model-{:05}-of-{n:05}.safetensors", i + 1),
            "shard name"
        );
        let shard = read_shard(file);
        assert_eq!(
            shard.metadata.get("format").map(String::as_str),
            Some("pt"),
            "{name}: __metadata__ must keep \"format\": \"pt\""
        );
        total += shard.payload_bytes;
        for tensor in shard.tensors.keys() {
            weight_map.insert(tensor.clone(), name.clone());
        }
    }
    let index_path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&index_path)
        .unwrap_or_else(|e| panic!("{}: {e}", index_path.display()));
    let index: serde_json::Value = serde_json::from_str(&text).expect("index is JSON");
    assert_eq!(
        index["metadata"]["total_size"].as_u64(),
        Some(total),
        "{}: total_size must be the sum of tensor bytes",
        index_path.display()
    );
    let listed: BTreeMap<String, String> = index["weight_map"]
        .as_object()
        .expect("weight_map object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("shard name").to_string()))
        .collect();
    let only_index: BTreeSet<_> = listed
        .keys()
        .filter(|k| !weight_map.contains_key(*k))
        .collect();
    let only_shards: BTreeSet<_> = weight_map
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .collect();
    assert!(
        only_index.is_empty() && only_shards.is_empty(),
        "{}: weight_map lists {only_index:?} that no shard holds; shards hold {only_shards:?} it does not list",
        index_path.display()
    );
    assert_eq!(
        listed,
        weight_map,
        "{}: weight_map names the wrong shard",
        index_path.display()
    );
    read_checkpoint(dir)
}
