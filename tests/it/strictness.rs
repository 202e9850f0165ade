//! SPEC §3's strictness table, row by row, in default and `--lenient` modes, through the CLI.
//! Refused: exit 1, the tensor and its file named on stderr, no output directory. Dropped:
//! exit 0, each name listed on stderr, and the output equals the conversion of the input
//! without the dropped tensors.

use std::path::PathBuf;

use tempfile::TempDir;

use crate::builder::{Checkpoint, CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::harness::{assert_refused, assert_same_tensors, assert_valid_output, from_hf, tempdir};

/// The shard the builder puts appended tensors in.
const LAST_SHARD: &str = "model-00002-of-00002.safetensors";

struct Case {
    _tmp: TempDir,
    input: PathBuf,
    out: PathBuf,
    ck: Checkpoint,
}

/// The default checkpoint (`ME*E-M`, E=4), changed by `edit`, in two indexed shards.
fn case(edit: impl FnOnce(&mut Checkpoint)) -> Case {
    let mut ck = CheckpointBuilder::default().build();
    edit(&mut ck);
    let tmp = tempdir();
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    Case {
        _tmp: tmp,
        input,
        out,
        ck,
    }
}

fn push(ck: &mut Checkpoint, name: &str, dt: Dt, shape: &[u64]) {
    ck.push(name, dt, shape, 7);
}

impl Case {
    fn refused(&self, options: &[&str], culprit: &str, place: &str) {
        let run = from_hf(options, &self.input, &self.out);
        assert_refused(&run, &self.out, culprit, place);
    }

    /// `--lenient` succeeds, lists every name in `dropped` on stderr, and writes exactly the
    /// conversion of the input without them.
    fn dropped_when_lenient(&self, dropped: &[&str]) {
        let run = from_hf(&["--lenient"], &self.input, &self.out);
        run.success().stdout_empty();
        for name in dropped {
            run.stderr_has(&format!("{name:?}"));
        }
        let mut input = self.ck.map();
        for name in dropped {
            input.remove(*name);
        }
        assert_same_tensors(
            &assert_valid_output(&self.out),
            &expect::from_hf(&input, Dt::Bf16),
        );
    }

    fn input_dir(&self) -> String {
        self.input.display().to_string()
    }
}

const MISSING: &str = "backbone.layers.3.mixer.experts.2.up_proj.weight";

#[test]
fn missing_expert_is_refused() {
    let c = case(|ck| drop(ck.remove(MISSING)));
    c.refused(&[], MISSING, &c.input_dir());
}

#[test]
fn missing_expert_is_refused_even_when_lenient() {
    let c = case(|ck| drop(ck.remove(MISSING)));
    c.refused(&["--lenient"], MISSING, &c.input_dir());
}

const ID_EQ_E: &str = "backbone.layers.1.mixer.experts.4.down_proj.weight";
const ID_GT_E: &str = "backbone.layers.3.mixer.experts.17.up_proj.weight";

#[test]
fn expert_id_ge_e_is_refused() {
    let c = case(|ck| push(ck, ID_EQ_E, Dt::Bf16, &[4, 3]));
    c.refused(&[], ID_EQ_E, LAST_SHARD);
}

#[test]
fn expert_id_ge_e_is_dropped_and_listed_when_lenient() {
    let c = case(|ck| {
        push(ck, ID_EQ_E, Dt::Bf16, &[4, 3]);
        push(ck, ID_GT_E, Dt::Bf16, &[3, 4]);
    });
    c.dropped_when_lenient(&[ID_EQ_E, ID_GT_E]);
}

const LAYER_6: &str = "backbone.layers.6.norm.weight";
const LAYER_9: &str = "backbone.layers.9.mixer.q_proj.weight";

#[test]
fn layer_beyond_pattern_is_refused() {
    let c = case(|ck| push(ck, LAYER_6, Dt::Bf16, &[4]));
    c.refused(&[], LAYER_6, LAST_SHARD);
}

#[test]
fn layer_beyond_pattern_is_dropped_and_listed_when_lenient() {
    let c = case(|ck| {
        push(ck, LAYER_6, Dt::Bf16, &[4]);
        push(ck, LAYER_9, Dt::Bf16, &[4, 4]);
    });
    c.dropped_when_lenient(&[LAYER_6, LAYER_9]);
}

const EXPERT_SCALE: &str = "backbone.layers.1.mixer.experts.0.up_proj.weight_scale_inv";
const ATTN_SCALE: &str = "backbone.layers.2.mixer.q_proj.weight_scale_inv";

#[test]
fn scale_inv_tensor_is_refused() {
    let c = case(|ck| push(ck, EXPERT_SCALE, Dt::F32, &[1, 1]));
    c.refused(&[], EXPERT_SCALE, LAST_SHARD);
}

#[test]
fn scale_inv_tensors_are_dropped_and_listed_when_lenient() {
    let c = case(|ck| {
        push(ck, EXPERT_SCALE, Dt::F32, &[1, 1]);
        push(ck, ATTN_SCALE, Dt::F32, &[1, 1]);
    });
    c.dropped_when_lenient(&[EXPERT_SCALE, ATTN_SCALE]);
}

const GATE_PROJ: &str = "backbone.layers.1.mixer.experts.0.gate_proj.weight";

#[test]
fn gate_proj_expert_is_refused() {
    let c = case(|ck| push(ck, GATE_PROJ, Dt::Bf16, &[3, 4]));
    c.refused(&[], GATE_PROJ, LAST_SHARD);
}

#[test]
fn gate_proj_expert_is_dropped_and_listed_when_lenient() {
    let c = case(|ck| push(ck, GATE_PROJ, Dt::Bf16, &[3, 4]));
    c.dropped_when_lenient(&[GATE_PROJ]);
}

fn remove_experts_of_layer_3(ck: &mut Checkpoint) {
    for id in 0..4 {
        for proj in ["up_proj", "down_proj"] {
            ck.remove(&format!(
                "backbone.layers.3.mixer.experts.{id}.{proj}.weight"
            ));
        }
    }
}

#[test]
fn moe_layer_without_experts_is_refused() {
    let c = case(remove_experts_of_layer_3);
    c.refused(&[], "layer 3", &c.input_dir());
}

#[test]
fn moe_layer_without_experts_is_accepted_when_lenient() {
    let c = case(remove_experts_of_layer_3);
    // Nothing is dropped: the layer simply has no merged experts in the output.
    c.dropped_when_lenient(&[]);
    let out = assert_valid_output(&c.out);
    assert!(!out.contains_key("model.layers.3.mixer.experts.gate_and_up_projs"));
    assert!(out.contains_key("model.layers.1.mixer.experts.gate_and_up_projs"));
}

const EXPERT_BIAS: &str = "backbone.layers.1.mixer.experts.0.up_proj.bias";

#[test]
fn expert_bias_is_refused() {
    let c = case(|ck| push(ck, EXPERT_BIAS, Dt::Bf16, &[3]));
    c.refused(&[], EXPERT_BIAS, LAST_SHARD);
}

#[test]
fn expert_bias_is_refused_even_when_lenient() {
    let c = case(|ck| push(ck, EXPERT_BIAS, Dt::Bf16, &[3]));
    c.refused(&["--lenient"], EXPERT_BIAS, LAST_SHARD);
}

#[test]
fn mlp_bias_true_is_refused() {
    let c = case(|ck| ck.config["mlp_bias"] = serde_json::json!(true));
    c.refused(&[], "mlp_bias", "config.json");
}

#[test]
fn mlp_bias_true_is_refused_even_when_lenient() {
    let c = case(|ck| ck.config["mlp_bias"] = serde_json::json!(true));
    c.refused(&["--lenient"], "mlp_bias", "config.json");
}

const MODEL_PREFIXED: &str = "model.layers.0.norm.weight";

#[test]
fn mixed_backbone_and_model_prefixes_are_refused() {
    let c = case(|ck| push(ck, MODEL_PREFIXED, Dt::Bf16, &[4]));
    c.refused(&[], MODEL_PREFIXED, LAST_SHARD);
}

#[test]
fn mixed_backbone_and_model_prefixes_are_refused_even_when_lenient() {
    let c = case(|ck| push(ck, MODEL_PREFIXED, Dt::Bf16, &[4]));
    c.refused(&["--lenient"], MODEL_PREFIXED, LAST_SHARD);
}
