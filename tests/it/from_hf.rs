//! from-hf through the CLI on generated checkpoints (SPEC §2, §3): names, prefixes, MTP, dtypes,
//! and the input layouts it must read. Each output is compared with `expect::from_hf`.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::builder::{Checkpoint, CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::harness::{
    Tensors, assert_same_file, assert_same_tensors, assert_valid_output, from_hf, tempdir, to_hf,
};

/// A written input and the from-hf output made of it.
pub struct Converted {
    pub tmp: TempDir,
    pub input: PathBuf,
    pub internal: PathBuf,
    pub tensors: Tensors,
}

/// Writes `ck` as `files`, runs `from-hf OPTIONS`, and checks the output is a valid checkpoint.
pub fn convert(ck: &Checkpoint, files: Files, options: &[&str]) -> Converted {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    ck.write(&input, files);
    let internal = tmp.path().join("internal");
    from_hf(options, &input, &internal).success().stdout_empty();
    let tensors = assert_valid_output(&internal);
    assert_same_file(&input, &internal, "config.json");
    Converted {
        tmp,
        input,
        internal,
        tensors,
    }
}

/// Runs `to-hf OPTIONS` on `internal` into `dir/NAME` and returns the valid output's tensors.
pub fn back_to_hf(dir: &Path, internal: &Path, options: &[&str], name: &str) -> Tensors {
    let out = dir.join(name);
    to_hf(options, internal, &out).success().stdout_empty();
    assert_same_file(internal, &out, "config.json");
    assert_valid_output(&out)
}

#[test]
fn generated_checkpoint_converts_as_the_spec_says() {
    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Indexed(3), &[]);
    let expected = expect::from_hf(&ck.map(), Dt::Bf16);
    assert!(expected.contains_key("model.layers.3.mixer.experts.down_projs"));
    assert!(expected.contains_key("model.layers.5.mixer._fp32_params.dt_bias"));
    assert_same_tensors(&c.tensors, &expected);
}

#[test]
fn model_prefix_input_converts_like_backbone_input() {
    let model = CheckpointBuilder {
        prefix: "model.",
        ..Default::default()
    }
    .build();
    let backbone = CheckpointBuilder::default().build();
    assert!(
        model
            .tensors
            .iter()
            .any(|(n, _)| n == "model.layers.1.mixer.experts.0.up_proj.weight")
    );
    let c = convert(&model, Files::Indexed(2), &[]);
    assert_same_tensors(&c.tensors, &expect::from_hf(&model.map(), Dt::Bf16));
    let b = convert(&backbone, Files::Indexed(2), &[]);
    assert_same_tensors(&c.tensors, &b.tensors);
}

#[test]
fn model_prefix_is_given_back_by_to_hf() {
    let ck = CheckpointBuilder {
        prefix: "model.",
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
    assert_same_tensors(&hf, &expect::round_trip(&ck.map(), Dt::Bf16));
}

#[test]
fn hf_prefix_option_overrides_the_recorded_prefix() {
    let ck = CheckpointBuilder {
        prefix: "model.",
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    let hf = back_to_hf(
        c.tmp.path(),
        &c.internal,
        &["--hf-prefix", "backbone"],
        "hf",
    );
    let expected = expect::round_trip(&ck.map(), Dt::Bf16);
    assert_same_tensors(&hf, &expect::with_prefix(&expected, "model.", "backbone."));

    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    let hf = back_to_hf(c.tmp.path(), &c.internal, &["--hf-prefix", "model"], "hf");
    let expected = expect::round_trip(&ck.map(), Dt::Bf16);
    assert_same_tensors(&hf, &expect::with_prefix(&expected, "backbone.", "model."));
}

#[test]
fn mtp_experts_merge_under_mtp_layers_and_round_trip() {
    let ck = CheckpointBuilder {
        mtp_pattern: "EM".to_string(),
        fp32_params_dtype: Dt::Bf16,
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(3), &[]);
    let expected = expect::from_hf(&ck.map(), Dt::Bf16);
    let merged = &expected["mtp.layers.0.mixer.experts.gate_and_up_projs"];
    assert_eq!(merged.shape, vec![4, 4, 3]);
    assert_eq!(
        expected["mtp.layers.1.mixer._fp32_params.A_log"].dtype,
        "F32"
    );
    assert!(expected.contains_key("mtp.layers.0.eh_proj.weight"));
    assert_same_tensors(&c.tensors, &expected);

    let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
    assert!(hf.contains_key("mtp.layers.0.mixer.experts.3.down_proj.weight"));
    assert_same_tensors(&hf, &expect::round_trip(&ck.map(), Dt::Bf16));
}

#[test]
fn layers_block_type_is_read_as_the_pattern() {
    let mut ck = CheckpointBuilder::default().build();
    let config = ck.config.as_object_mut().unwrap();
    config.remove("hybrid_override_pattern");
    config.insert(
        "layers_block_type".into(),
        serde_json::json!([
            "mamba",
            "moe",
            "attention",
            "moe",
            "mlp",
            "linear_attention"
        ]),
    );
    let c = convert(&ck, Files::Indexed(2), &[]);
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
}

#[test]
fn bf16_fp32_params_become_f32() {
    let ck = CheckpointBuilder {
        fp32_params_dtype: Dt::Bf16,
        ..Default::default()
    }
    .build();
    let c = convert(&ck, Files::Indexed(2), &[]);
    let dt_bias = &c.tensors["model.layers.0.mixer._fp32_params.dt_bias"];
    let input = ck.get("backbone.layers.0.mixer.dt_bias");
    assert_eq!(dt_bias.dtype, "F32");
    assert_eq!(Dt::F32.decode(&dt_bias.data), Dt::Bf16.decode(&input.data));
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
}

#[test]
fn singular_embedding_becomes_embed_tokens_and_returns_as_embeddings() {
    for name in ["embedding", "embed_tokens"] {
        let ck = CheckpointBuilder {
            embedding: name,
            ..Default::default()
        }
        .build();
        let c = convert(&ck, Files::Indexed(2), &[]);
        let input = ck.get(&format!("backbone.{name}.weight"));
        assert_eq!(&c.tensors["model.embed_tokens.weight"], input);
        assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
        let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
        assert_eq!(&hf["backbone.embeddings.weight"], input);
        assert_same_tensors(&hf, &expect::round_trip(&ck.map(), Dt::Bf16));
    }
}

#[test]
fn single_model_safetensors_without_index_is_read() {
    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Single, &[]);
    assert!(c.input.join("model.safetensors").is_file());
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
}

#[test]
fn two_safetensors_without_index_are_read() {
    let ck = CheckpointBuilder::default().build();
    let c = convert(&ck, Files::Unindexed(2), &[]);
    assert!(!c.input.join("model.safetensors.index.json").exists());
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
}

#[test]
fn experts_of_one_layer_split_across_two_shards_merge() {
    let ck = CheckpointBuilder::default().build();
    let split = "backbone.layers.1.mixer.experts.2.down_proj.weight";
    let at = ck.tensors.iter().position(|(n, _)| n == split).unwrap();
    let groups = vec![(0..at).collect(), (at..ck.tensors.len()).collect()];
    let tmp = tempdir();
    let input = tmp.path().join("in");
    ck.write_groups(&input, &groups, Files::Indexed(2));
    // By construction: up_proj 2 in the first file, down_proj 2 and expert 3 in the second.
    let index = std::fs::read_to_string(input.join("model.safetensors.index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let file_of =
        |n: &str| index["weight_map"][format!("backbone.layers.1.mixer.experts.{n}")].clone();
    assert_ne!(file_of("2.up_proj.weight"), file_of("2.down_proj.weight"));
    assert_ne!(file_of("0.up_proj.weight"), file_of("3.up_proj.weight"));
    let out = tmp.path().join("out");
    from_hf(&[], &input, &out).success();
    assert_same_tensors(
        &assert_valid_output(&out),
        &expect::from_hf(&ck.map(), Dt::Bf16),
    );
}
