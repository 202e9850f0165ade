//! `CheckpointBuilder`: writes small HF-layout NemotronV3 checkpoints with deterministic, finite
//! values, so each test can make exactly the input its rule needs.

use std::path::Path;

use half::{bf16, f16};
use serde_json::json;

use crate::harness::{INDEX_FILE, Tensor, Tensors};

/// Floating dtypes the builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    Bf16,
    F16,
    F32,
}

impl Dt {
    pub const ALL: [Dt; 3] = [Dt::Bf16, Dt::F16, Dt::F32];

    /// The safetensors dtype word.
    pub fn word(self) -> &'static str {
        match self {
            Dt::Bf16 => "BF16",
            Dt::F16 => "F16",
            Dt::F32 => "F32",
        }
    }

    /// The config.json `torch_dtype` name.
    pub fn torch(self) -> &'static str {
        match self {
            Dt::Bf16 => "bfloat16",
            Dt::F16 => "float16",
            Dt::F32 => "float32",
        }
    }

    /// The dtype of a safetensors word.
    pub fn of(word: &str) -> Dt {
        match word {
            "BF16" => Dt::Bf16,
            "F16" => Dt::F16,
            "F32" => Dt::F32,
            other => panic!("not a float dtype the tests use: {other}"),
        }
    }

    /// Little-endian bytes of `values` in this dtype, rounding to nearest even (the `half`
    /// crate's conversions) where it is narrower than F32.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &v in values {
            match self {
                Dt::Bf16 => out.extend(bf16::from_f32(v).to_le_bytes()),
                Dt::F16 => out.extend(f16::from_f32(v).to_le_bytes()),
                Dt::F32 => out.extend(v.to_le_bytes()),
            }
        }
        out
    }

    /// The values of little-endian bytes in this dtype (widening is exact).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Dt::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dt::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dt::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }
}

/// How the shard files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`; tensors are
    /// split into N runs of nearly equal count, in order.
    Indexed(usize),
    /// One `model.safetensors`, no index.
    Single,
    /// N `model-0000i-of-0000N.safetensors` files and no index.
    Unindexed(usize),
}

/// What to generate. `Default` is a small valid checkpoint with every layer kind.
#[derive(Debug, Clone)]
pub struct CheckpointBuilder {
    /// Layer pattern letters: `M` mamba, `*` attention, `-` dense MLP, `E` MoE.
    pub pattern: String,
    /// Kinds of the `mtp.layers.j` layers (same letters); empty for none.
    pub mtp_pattern: String,
    pub n_experts: u64,
    pub inter: u64,
    pub hidden: u64,
    pub vocab: u64,
    /// dtype of every weight except the F32-always ones below.
    pub dtype: Dt,
    /// dtype of `A_log`, `D` and `dt_bias`.
    pub fp32_params_dtype: Dt,
    /// `torch_dtype` in config.json; None leaves it out.
    pub torch_dtype: Option<&'static str>,
    /// `backbone.` or `model.`.
    pub prefix: &'static str,
    /// `embeddings`, `embedding` or `embed_tokens`.
    pub embedding: &'static str,
    /// Varies all values.
    pub seed: u64,
}

impl Default for CheckpointBuilder {
    fn default() -> Self {
        CheckpointBuilder {
            pattern: "ME*E-M".to_string(),
            mtp_pattern: String::new(),
            n_experts: 4,
            inter: 3,
            hidden: 4,
            vocab: 8,
            dtype: Dt::Bf16,
            fp32_params_dtype: Dt::F32,
            torch_dtype: Some("bfloat16"),
            prefix: "backbone.",
            embedding: "embeddings",
            seed: 1,
        }
    }
}

/// A generated checkpoint: its config and its tensors in storage order, plus other files.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: serde_json::Value,
    pub tensors: Vec<(String, Tensor)>,
    /// Non-weight files (relative path, bytes) besides config.json.
    pub other_files: Vec<(String, Vec<u8>)>,
}

impl CheckpointBuilder {
    /// The checkpoint this describes.
    pub fn build(&self) -> Checkpoint {
        let mut ck = Checkpoint {
            config: json!({
                "architectures": ["NemotronHForCausalLM"],
                "model_type": "nemotron_h",
                "hybrid_override_pattern": self.pattern,
                "num_hidden_layers": self.pattern.len(),
                "n_routed_experts": self.n_experts,
                "moe_intermediate_size": self.inter,
                "hidden_size": self.hidden,
                "vocab_size": self.vocab,
                "mlp_bias": false,
                "num_nextn_predict_layers": self.mtp_pattern.len(),
            }),
            tensors: Vec::new(),
            other_files: Vec::new(),
        };
        if let Some(t) = self.torch_dtype {
            ck.config["torch_dtype"] = json!(t);
        }
        let (h, v) = (self.hidden, self.vocab);
        let p = self.prefix;
        self.add(
            &mut ck,
            &format!("{p}{}.weight", self.embedding),
            self.dtype,
            &[v, h],
        );
        for (l, kind) in self.pattern.chars().enumerate() {
            self.add_layer(&mut ck, &format!("{p}layers.{l}."), kind);
        }
        self.add(&mut ck, &format!("{p}norm_f.weight"), self.dtype, &[h]);
        for (j, kind) in self.mtp_pattern.chars().enumerate() {
            let scope = format!("mtp.layers.{j}.");
            self.add(&mut ck, &format!("{scope}enorm.weight"), self.dtype, &[h]);
            self.add(
                &mut ck,
                &format!("{scope}eh_proj.weight"),
                self.dtype,
                &[h, 2 * h],
            );
            self.add_layer(&mut ck, &scope, kind);
        }
        self.add(&mut ck, "lm_head.weight", self.dtype, &[v, h]);
        ck
    }

    fn add_layer(&self, ck: &mut Checkpoint, scope: &str, kind: char) {
        let (h, i, e, dt) = (self.hidden, self.inter, self.n_experts, self.dtype);
        let mut add = |name: &str, dt: Dt, shape: &[u64]| {
            self.add(ck, &format!("{scope}{name}"), dt, shape);
        };
        add("norm.weight", dt, &[h]);
        match kind {
            'M' => {
                let heads = 2;
                add("mixer.in_proj.weight", dt, &[2 * h + heads, h]);
                add("mixer.conv1d.weight", dt, &[h, 1, 4]);
                add("mixer.conv1d.bias", dt, &[h]);
                add("mixer.A_log", self.fp32_params_dtype, &[heads]);
                add("mixer.D", self.fp32_params_dtype, &[heads]);
                add("mixer.dt_bias", self.fp32_params_dtype, &[heads]);
                add("mixer.norm.weight", dt, &[h]);
                add("mixer.out_proj.weight", dt, &[h, h]);
            }
            '*' => {
                for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                    add(&format!("mixer.{proj}.weight"), dt, &[h, h]);
                }
            }
            '-' => {
                add("mixer.up_proj.weight", dt, &[i + 2, h]);
                add("mixer.down_proj.weight", dt, &[h, i + 2]);
            }
            'E' => {
                add("mixer.gate.weight", dt, &[e, h]);
                add("mixer.gate.e_score_correction_bias", Dt::F32, &[e]);
                for k in 0..e {
                    add(&format!("mixer.experts.{k}.up_proj.weight"), dt, &[i, h]);
                    add(&format!("mixer.experts.{k}.down_proj.weight"), dt, &[h, i]);
                }
                add("mixer.shared_experts.up_proj.weight", dt, &[i + 1, h]);
                add("mixer.shared_experts.down_proj.weight", dt, &[h, i + 1]);
            }
            other => panic!("unknown layer letter {other:?}"),
        }
    }

    fn add(&self, ck: &mut Checkpoint, name: &str, dt: Dt, shape: &[u64]) {
        ck.push(name, dt, shape, self.seed);
    }
}

/// Deterministic finite values for tensor `name`: magnitudes between about 2^-9 and 4, both
/// signs, with full F32 mantissas (so narrowing casts have something to round).
pub fn values(name: &str, numel: u64, seed: u64) -> Vec<f32> {
    let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..numel)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let sign = ((z >> 63) as u32) << 31;
            let exponent = (118 + (z >> 40) % 11) as u32;
            let mantissa = (z as u32) & 0x7f_ffff;
            f32::from_bits(sign | exponent << 23 | mantissa)
        })
        .collect()
}

impl Checkpoint {
    /// Appends a tensor of generated values.
    pub fn push(&mut self, name: &str, dt: Dt, shape: &[u64], seed: u64) {
        let numel = shape.iter().product();
        // The prefix does not change the values, so `model.` and `backbone.` twins agree.
        let key = ["backbone.", "model."]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .unwrap_or(name);
        let data = dt.encode(&values(key, numel, seed));
        let tensor = Tensor {
            dtype: dt.word().to_string(),
            shape: shape.to_vec(),
            data,
        };
        self.tensors.push((name.to_string(), tensor));
    }

    /// Removes a tensor, which must exist.
    pub fn remove(&mut self, name: &str) -> Tensor {
        let at = self.position(name);
        self.tensors.remove(at).1
    }

    /// The tensor called `name`, which must exist.
    pub fn get(&self, name: &str) -> &Tensor {
        &self.tensors[self.position(name)].1
    }

    /// A mutable reference to the tensor called `name`, which must exist.
    pub fn get_mut(&mut self, name: &str) -> &mut Tensor {
        let at = self.position(name);
        &mut self.tensors[at].1
    }

    fn position(&self, name: &str) -> usize {
        self.tensors
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("the generated checkpoint has no tensor {name:?}"))
    }

    /// The tensors by name.
    pub fn map(&self) -> Tensors {
        self.tensors.iter().cloned().collect()
    }

    /// Writes config.json, the other files and the shards into `dir` (created).
    pub fn write(&self, dir: &Path, files: Files) {
        let n = match files {
            Files::Indexed(n) | Files::Unindexed(n) => n,
            Files::Single => 1,
        };
        let len = self.tensors.len();
        assert!(n >= 1 && n <= len, "{n} shards for {len} tensors");
        let groups: Vec<Vec<usize>> = (0..n)
            .map(|s| (s * len / n..(s + 1) * len / n).collect())
            .collect();
        self.write_groups(dir, &groups, files);
    }

    /// Like [`Checkpoint::write`], with shard `s` holding the tensors at `groups[s]`, in that
    /// order (`files` gives the naming; its count is ignored).
    pub fn write_groups(&self, dir: &Path, groups: &[Vec<usize>], files: Files) {
        std::fs::create_dir_all(dir).expect("create checkpoint directory");
        let config = serde_json::to_string_pretty(&self.config).expect("config to JSON");
        std::fs::write(dir.join("config.json"), config).expect("write config.json");
        for (rel, bytes) in &self.other_files {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).expect("create directory");
            std::fs::write(path, bytes).expect("write file");
        }
        let n = groups.len();
        let mut weight_map = serde_json::Map::new();
        let mut total_size = 0;
        for (s, group) in groups.iter().enumerate() {
            let file = match files {
                Files::Single => "model.safetensors".to_string(),
                _ => format!("model-{:05}-of-{n:05}.safetensors", s + 1),
            };
            let tensors: Vec<&(String, Tensor)> = group.iter().map(|&i| &self.tensors[i]).collect();
            std::fs::write(dir.join(&file), safetensors_bytes(&tensors)).expect("write shard");
            for (name, t) in tensors {
                weight_map.insert(name.clone(), json!(file));
                total_size += t.data.len();
            }
        }
        if let Files::Indexed(_) = files {
            let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
            let text = serde_json::to_string_pretty(&index).expect("index to JSON");
            std::fs::write(dir.join(INDEX_FILE), text).expect("write index");
        }
    }
}

/// Header text padded with spaces to a multiple of 8 bytes, as the safetensors crate writes it.
pub fn padded(mut text: Vec<u8>) -> Vec<u8> {
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    text
}

/// The header JSON, padded (see [`padded`]).
pub fn header_text(header: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    padded(serde_json::to_vec(header).expect("header to JSON"))
}

/// A file image from a header text and a data area: every test's one safetensors framing
/// (the 8-byte little-endian header length, the header, the data).
pub fn raw_bytes(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// A safetensors file: header length, JSON header (padded with spaces to 8 bytes, as the
/// safetensors crate does) and the tensors' bytes in the given order.
pub fn safetensors_bytes(tensors: &[&(String, Tensor)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0;
    for (name, t) in tensors {
        let end = offset + t.data.len();
        header.insert(
            name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let data: Vec<u8> = tensors
        .iter()
        .flat_map(|(_, t)| t.data.iter().copied())
        .collect();
    raw_bytes(&header_text(&header), &data)
}
