//! Model shapes: presets, the list of HF tensors they imply, and config.json.

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde_json::{Value, json};

/// Element type of a generated tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DType {
    Bf16,
    F16,
    F32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }

    /// Name used in safetensors headers.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::Bf16 => "BF16",
            DType::F16 => "F16",
            DType::F32 => "F32",
        }
    }

    /// Name used for `torch_dtype` in config.json.
    fn torch_name(self) -> &'static str {
        match self {
            DType::Bf16 => "bfloat16",
            DType::F16 => "float16",
            DType::F32 => "float32",
        }
    }
}

/// Layer and vocabulary sizes of a NemotronV3 model.
#[derive(Clone, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub vocab: usize,
    pub experts: usize,
    pub moe_inter: usize,
    pub shared_inter: usize,
    pub mlp_inter: usize,
    pub mamba_heads: usize,
    pub mamba_head_dim: usize,
    pub n_groups: usize,
    pub ssm_state: usize,
    pub conv_kernel: usize,
    pub attn_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The shapes of the golden `tiny` checkpoint.
pub const TINY: Dims = Dims {
    hidden: 16,
    vocab: 64,
    experts: 4,
    moe_inter: 8,
    shared_inter: 12,
    mlp_inter: 20,
    mamba_heads: 4,
    mamba_head_dim: 4,
    n_groups: 2,
    ssm_state: 4,
    conv_kernel: 4,
    attn_heads: 2,
    kv_heads: 1,
    head_dim: 8,
};

/// The per-layer shapes of NVIDIA-Nemotron-3-Nano-30B-A3B.
pub const NANO: Dims = Dims {
    hidden: 2688,
    vocab: 131_072,
    experts: 128,
    moe_inter: 1856,
    shared_inter: 3712,
    mlp_inter: 1856,
    mamba_heads: 64,
    mamba_head_dim: 64,
    n_groups: 8,
    ssm_state: 128,
    conv_kernel: 4,
    attn_heads: 32,
    kv_heads: 2,
    head_dim: 128,
};

/// Small shapes with many experts, so that per-tensor overhead dominates.
pub const MANY: Dims = Dims {
    hidden: 256,
    vocab: 1024,
    experts: 128,
    moe_inter: 128,
    shared_inter: 128,
    mlp_inter: 256,
    mamba_heads: 8,
    mamba_head_dim: 32,
    n_groups: 2,
    ssm_state: 16,
    conv_kernel: 4,
    attn_heads: 4,
    kv_heads: 2,
    head_dim: 64,
};

/// Everything that decides which tensors a checkpoint has.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub dims: Dims,
    pub pattern: String,
    pub dtype: DType,
    pub prefix: String,
    pub embedding_name: String,
    pub mtp_layers: usize,
    pub dt_bias_bf16: bool,
}

/// One tensor to generate.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn bytes(&self) -> u64 {
        (self.shape.iter().product::<usize>() * self.dtype.size()) as u64
    }
}

/// Checks that `pattern` only holds the layer symbols `M`, `*`, `-` and `E`.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        bail!("the layer pattern is empty");
    }
    if let Some(bad) = pattern.chars().find(|c| !"M*-E".contains(*c)) {
        bail!("layer pattern {pattern:?} holds {bad:?}; allowed are M, *, - and E");
    }
    Ok(())
}

/// The MTP layer kinds: attention and MoE alternating, ending with MoE.
fn mtp_pattern(layers: usize) -> String {
    (0..layers)
        .map(|j| {
            if (layers - 1 - j).is_multiple_of(2) {
                'E'
            } else {
                '*'
            }
        })
        .collect()
}

/// Collects tensors of one model, each with its dtype and shape.
struct Builder<'a> {
    spec: &'a ModelSpec,
    tensors: Vec<TensorSpec>,
}

impl Builder<'_> {
    fn add(&mut self, name: String, dtype: DType, shape: &[usize]) {
        self.tensors.push(TensorSpec {
            name,
            dtype,
            shape: shape.to_vec(),
        });
    }

    fn weight(&mut self, name: String, shape: &[usize]) {
        self.add(name, self.spec.dtype, shape);
    }

    fn mamba(&mut self, p: &str) {
        let d = &self.spec.dims;
        let inner = d.mamba_heads * d.mamba_head_dim;
        let conv = inner + 2 * d.n_groups * d.ssm_state;
        let (h, heads) = (d.hidden, d.mamba_heads);
        self.weight(format!("{p}in_proj.weight"), &[inner + conv + heads, h]);
        self.weight(format!("{p}conv1d.weight"), &[conv, 1, d.conv_kernel]);
        self.weight(format!("{p}conv1d.bias"), &[conv]);
        self.weight(format!("{p}norm.weight"), &[inner]);
        self.weight(format!("{p}out_proj.weight"), &[h, inner]);
        self.add(format!("{p}A_log"), DType::F32, &[heads]);
        self.add(format!("{p}D"), DType::F32, &[heads]);
        let dt_bias = if self.spec.dt_bias_bf16 {
            DType::Bf16
        } else {
            DType::F32
        };
        self.add(format!("{p}dt_bias"), dt_bias, &[heads]);
    }

    fn attention(&mut self, p: &str) {
        let d = &self.spec.dims;
        let (q, kv, h) = (d.attn_heads * d.head_dim, d.kv_heads * d.head_dim, d.hidden);
        self.weight(format!("{p}q_proj.weight"), &[q, h]);
        self.weight(format!("{p}k_proj.weight"), &[kv, h]);
        self.weight(format!("{p}v_proj.weight"), &[kv, h]);
        self.weight(format!("{p}o_proj.weight"), &[h, q]);
    }

    fn mlp(&mut self, p: &str, inter: usize) {
        let h = self.spec.dims.hidden;
        self.weight(format!("{p}up_proj.weight"), &[inter, h]);
        self.weight(format!("{p}down_proj.weight"), &[h, inter]);
    }

    fn moe(&mut self, p: &str) {
        let d = &self.spec.dims;
        let (e, h, i, shared) = (d.experts, d.hidden, d.moe_inter, d.shared_inter);
        self.weight(format!("{p}gate.weight"), &[e, h]);
        self.add(format!("{p}gate.e_score_correction_bias"), DType::F32, &[e]);
        self.mlp(&format!("{p}shared_experts."), shared);
        for k in 0..e {
            self.weight(format!("{p}experts.{k}.up_proj.weight"), &[i, h]);
            self.weight(format!("{p}experts.{k}.down_proj.weight"), &[h, i]);
        }
    }

    /// Adds `{layer}norm.weight` and the mixer of kind `kind`.
    fn layer(&mut self, layer: &str, kind: char) {
        let h = self.spec.dims.hidden;
        self.weight(format!("{layer}norm.weight"), &[h]);
        let mixer = format!("{layer}mixer.");
        match kind {
            'M' => self.mamba(&mixer),
            '*' => self.attention(&mixer),
            '-' => self.mlp(&mixer, self.spec.dims.mlp_inter),
            _ => self.moe(&mixer),
        }
    }

    fn mtp(&mut self) {
        let h = self.spec.dims.hidden;
        let kinds = mtp_pattern(self.spec.mtp_layers);
        let last = kinds.len().saturating_sub(1);
        for (j, kind) in kinds.chars().enumerate() {
            let layer = format!("mtp.layers.{j}.");
            if j == 0 {
                self.weight(format!("{layer}enorm.weight"), &[h]);
                self.weight(format!("{layer}hnorm.weight"), &[h]);
                self.weight(format!("{layer}eh_proj.weight"), &[h, 2 * h]);
            }
            if j == last {
                self.weight(format!("{layer}final_layernorm.weight"), &[h]);
            }
            self.layer(&layer, kind);
        }
    }
}

/// Every HF tensor of the model, in no particular order.
pub fn tensors(spec: &ModelSpec) -> Vec<TensorSpec> {
    let mut b = Builder {
        spec,
        tensors: Vec::new(),
    };
    let (p, d) = (&spec.prefix, &spec.dims);
    b.weight(
        format!("{p}.{}.weight", spec.embedding_name),
        &[d.vocab, d.hidden],
    );
    for (l, kind) in spec.pattern.chars().enumerate() {
        b.layer(&format!("{p}.layers.{l}."), kind);
    }
    b.weight(format!("{p}.norm_f.weight"), &[d.hidden]);
    b.weight("lm_head.weight".to_string(), &[d.vocab, d.hidden]);
    b.mtp();
    b.tensors
}

/// Fields of the golden tiny config that do not depend on the model's shapes.
fn fixed_config_fields() -> Value {
    json!({
        "architectures": ["NemotronHForCausalLM"],
        "model_type": "nemotron_h",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "chunk_size": 128,
        "expand": 2,
        "hidden_dropout": 0.0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-5,
        "mamba_hidden_act": "silu",
        "mamba_proj_bias": false,
        "max_position_embeddings": 4096,
        "mlp_bias": false,
        "mlp_hidden_act": "relu2",
        "n_group": 1,
        "n_shared_experts": 1,
        "norm_topk_prob": true,
        "num_logits_to_keep": 1,
        "rescale_prenorm_residual": true,
        "residual_in_fp32": false,
        "routed_scaling_factor": 2.5,
        "tie_word_embeddings": false,
        "time_step_floor": 0.0001,
        "time_step_max": 0.1,
        "time_step_min": 0.001,
        "topk_group": 1,
        "use_bias": false,
        "use_cache": true,
        "use_conv_bias": true,
    })
}

/// config.json for the model, with the fields of the golden tiny config.
pub fn config_json(spec: &ModelSpec) -> Value {
    let d = &spec.dims;
    let shaped = json!({
        "conv_kernel": d.conv_kernel,
        "head_dim": d.head_dim,
        "hidden_size": d.hidden,
        "hybrid_override_pattern": spec.pattern,
        "intermediate_size": d.mlp_inter,
        "mamba_head_dim": d.mamba_head_dim,
        "mamba_num_heads": d.mamba_heads,
        "moe_intermediate_size": d.moe_inter,
        "moe_shared_expert_intermediate_size": d.shared_inter,
        "n_groups": d.n_groups,
        "n_routed_experts": d.experts,
        "num_attention_heads": d.attn_heads,
        "num_experts_per_tok": d.experts.min(6),
        "num_hidden_layers": spec.pattern.len(),
        "num_key_value_heads": d.kv_heads,
        "ssm_state_size": d.ssm_state,
        "torch_dtype": spec.dtype.torch_name(),
        "vocab_size": d.vocab,
    });
    let mut config = fixed_config_fields();
    for (key, value) in shaped.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    if spec.mtp_layers > 0 {
        config["num_nextn_predict_layers"] = json!(1);
        config["mtp_hybrid_override_pattern"] = json!(mtp_pattern(spec.mtp_layers));
    }
    config
}
