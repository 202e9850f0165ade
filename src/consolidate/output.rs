//! The bytes of the reference's output files that are not tensor data (DCP-FORMAT §3.5-§3.7):
//! the unpadded, metadata-free safetensors header in Python `json.dumps` style, the index
//! (`json.dump(indent=2)`, no trailing newline), and `config.json` after a cast. Separate from
//! nemoconv's own header writer in `plan::shards`, which writes the crate's style.

use crate::dtype::Dtype;
use crate::plan::OutputTensor;

use super::pyjson::{self, PyValue};

/// The reference's output file name for 1-based index `i` of `n`.
pub fn file_name(i: u64, n: u64) -> String {
    format!("model-{i:05}-of-{n:05}.safetensors")
}

fn ints(values: &[u64]) -> PyValue {
    PyValue::Array(values.iter().map(|&v| PyValue::Int(v.into())).collect())
}

/// The 8-byte length and the header JSON of one output file: entries in file order with keys
/// `shape`, `dtype`, `data_offsets`; no `__metadata__`, no padding.
pub fn encode_header(tensors: &[OutputTensor]) -> Vec<u8> {
    let mut offset = 0u64;
    let entries = tensors
        .iter()
        .map(|t| {
            let end = offset + t.len_bytes().expect("recipes are checked before headers");
            let entry = PyValue::Object(vec![
                ("shape".to_string(), ints(&t.shape)),
                ("dtype".to_string(), PyValue::Str(t.dtype.to_string())),
                ("data_offsets".to_string(), ints(&[offset, end])),
            ]);
            offset = end;
            (t.name.clone(), entry)
        })
        .collect();
    let json = pyjson::dumps(&PyValue::Object(entries));
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend_from_slice(json.as_bytes());
    header
}

/// `model.safetensors.index.json`: total size and name → file, in the order given.
pub fn index_json(total_size: u64, weight_map: &[(String, String)]) -> Vec<u8> {
    let map = weight_map
        .iter()
        .map(|(name, file)| (name.clone(), PyValue::Str(file.clone())))
        .collect();
    let index = PyValue::Object(vec![
        (
            "metadata".to_string(),
            PyValue::Object(vec![(
                "total_size".to_string(),
                PyValue::Int(total_size.into()),
            )]),
        ),
        ("weight_map".to_string(), PyValue::Object(map)),
    ]);
    pyjson::dumps_indent2(&index).into_bytes()
}

/// The torch name the reference writes into `torch_dtype` for a cast.
pub fn torch_name(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::F32 => "float32",
        Dtype::F64 => "float64",
        _ => return None,
    })
}

/// `config.json` after a cast to `cast`: `torch_dtype` set as the reference does (a new key
/// goes last) and, where present, the v5 `dtype` key set to the same value, which the
/// reference leaves stale; dumped with `indent=2` and a final newline. None when the text is
/// not a JSON object.
pub fn cast_config(text: &str, cast: Dtype) -> Option<Vec<u8>> {
    let mut config: PyValue = serde_json::from_str(text).ok()?;
    if !matches!(config, PyValue::Object(_)) {
        return None;
    }
    let name = PyValue::Str(torch_name(cast)?.to_string());
    config.set("torch_dtype", name.clone());
    if config.get("dtype").is_some() {
        config.set("dtype", name);
    }
    let mut out = pyjson::dumps_indent2(&config);
    out.push('\n');
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ShardId, TensorId};
    use crate::plan::{Recipe, Source};

    fn tensor(name: &str, dtype: Dtype, shape: &[u64]) -> OutputTensor {
        let source = Source {
            tensor: TensorId(0),
            shard: ShardId(0),
            bytes: 0..0,
            dtype,
            scale: None,
        };
        OutputTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            recipe: Recipe::Copy(source),
        }
    }

    #[test]
    fn header_is_python_json_without_metadata_or_padding() {
        let h = encode_header(&[
            tensor("b.w", Dtype::BF16, &[8, 16]),
            tensor("a.\u{e9}", Dtype::F32, &[4]),
        ]);
        let json = r#"{"b.w": {"shape": [8, 16], "dtype": "BF16", "data_offsets": [0, 256]}, "a.\u00e9": {"shape": [4], "dtype": "F32", "data_offsets": [256, 272]}}"#;
        assert_eq!(&h[..8], &(json.len() as u64).to_le_bytes());
        assert_eq!(&h[8..], json.as_bytes());
    }

    #[test]
    fn index_is_indented_without_final_newline() {
        let text = index_json(10, &[("x".to_string(), "f".to_string())]);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "{\n  \"metadata\": {\n    \"total_size\": 10\n  },\n  \"weight_map\": {\n    \"x\": \"f\"\n  }\n}"
        );
    }

    #[test]
    fn cast_config_sets_torch_dtype_last_and_dtype_in_place() {
        let out = cast_config(
            "{\n  \"dtype\": \"bfloat16\",\n  \"eps\": 1e-05\n}\n",
            Dtype::F16,
        );
        assert_eq!(
            String::from_utf8(out.unwrap()).unwrap(),
            "{\n  \"dtype\": \"float16\",\n  \"eps\": 1e-05,\n  \"torch_dtype\": \"float16\"\n}\n"
        );
        assert!(cast_config("[1]", Dtype::F16).is_none());
    }
}
