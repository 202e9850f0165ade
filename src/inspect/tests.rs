//! `inspect` on small checkpoints written into temporary directories.

use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::dtype::Dtype;
use crate::error::{ConfigError, Error};
use crate::testing::{Tensor, bf16s, f32s, tensor, write_checkpoint, write_config, write_shard};

fn config(pattern: &str, n_experts: u64) -> serde_json::Value {
    json!({
        "model_type": "nemotron_h",
        "hybrid_override_pattern": pattern,
        "n_routed_experts": n_experts,
        "moe_intermediate_size": 2,
        "hidden_size": 4,
    })
}

/// A per-expert weight `[2, 4]` (I=2, H=4 for up; the shape does not matter to inspect).
fn expert(layer: u64, id: u64, proj: &str) -> Tensor {
    let name = format!("backbone.layers.{layer}.mixer.experts.{id}.{proj}.weight");
    tensor(&name, Dtype::BF16, &[2, 4], bf16s(&[0.5; 8]))
}

/// Pattern `ME`: a mamba layer and an MoE layer with experts `ids`.
fn hf_tensors(ids: &[u64]) -> Vec<Tensor> {
    let mut tensors = vec![
        tensor(
            "backbone.embeddings.weight",
            Dtype::BF16,
            &[8, 4],
            bf16s(&[1.0; 32]),
        ),
        tensor(
            "backbone.layers.0.mixer.A_log",
            Dtype::F32,
            &[2],
            f32s(&[1.0, 2.0]),
        ),
        tensor(
            "backbone.layers.1.mixer.gate.weight",
            Dtype::BF16,
            &[2, 4],
            bf16s(&[0.0; 8]),
        ),
    ];
    for &id in ids {
        tensors.push(expert(1, id, "up_proj"));
        tensors.push(expert(1, id, "down_proj"));
    }
    tensors
}

fn inspect_hf(ids: &[u64], pattern: &str, n_experts: u64) -> InspectReport {
    let dir = TempDir::new().unwrap();
    write_checkpoint(dir.path(), &hf_tensors(ids), 3);
    write_config(dir.path(), &config(pattern, n_experts));
    inspect(dir.path()).unwrap()
}

#[test]
fn hf_checkpoint_is_described_from_its_names() {
    let r = inspect_hf(&[0, 1], "ME", 2);
    assert_eq!(r.schema, 1);
    assert_eq!(
        (r.layout, r.layout_source, r.hf_prefix.as_deref()),
        (LayoutKind::Hf, LayoutSource::Names, Some("backbone"))
    );
    assert_eq!(r.pattern.as_deref(), Some("ME"));
    assert_eq!(
        (r.layer_counts.mamba, r.layer_counts.moe, r.n_layers),
        (1, 1, 2)
    );
    assert_eq!(
        (r.n_routed_experts, r.moe_intermediate_size, r.hidden_size),
        (Some(2), Some(2), Some(4))
    );
    assert_eq!(
        r.experts,
        vec![ExpertLayer {
            mtp: false,
            layer: 1,
            form: ExpertForm::PerExpert,
            n_experts: 2
        }]
    );
    assert_eq!(r.n_tensors, 7);
    assert_eq!(
        r.dtypes,
        BTreeMap::from([("BF16".into(), 6), ("F32".into(), 1)])
    );
    assert_eq!(r.shards.len(), 3);
    assert_eq!(r.shards.iter().map(|s| s.n_tensors).sum::<usize>(), 7);
    assert_eq!(r.payload_bytes, 64 + 8 + 16 + 4 * 16);
    assert!(!r.quantized);
    assert_eq!(r.problems, vec![]);
}

#[test]
fn missing_and_out_of_range_expert_ids_are_problems() {
    let dir = TempDir::new().unwrap();
    let mut tensors = hf_tensors(&[0]);
    tensors.push(expert(1, 3, "up_proj"));
    write_checkpoint(dir.path(), &tensors, 100);
    write_config(dir.path(), &config("ME", 2));
    let r = inspect(dir.path()).unwrap();
    let missing = |proj: &str| Problem::MissingExperts {
        mtp: false,
        layer: 1,
        proj: proj.into(),
        ids: vec![1],
    };
    assert_eq!(
        r.problems,
        vec![
            missing("up_proj"),
            missing("down_proj"),
            Problem::ExpertIdOutOfRange {
                mtp: false,
                layer: 1,
                ids: vec![3],
                n_routed_experts: 2
            },
        ]
    );
}

#[test]
fn layers_beyond_the_pattern_and_moe_layers_without_experts_are_problems() {
    let r = inspect_hf(&[], "MEE", 2);
    assert_eq!(
        r.problems,
        vec![
            Problem::MoeLayerWithoutExperts { layer: 1 },
            Problem::MoeLayerWithoutExperts { layer: 2 },
        ]
    );
    let r = inspect_hf(&[0, 1], "M", 2);
    assert!(matches!(
        &r.problems[..],
        [Problem::LayerBeyondPattern {
            layer: 1,
            n_layers: 1,
            n_tensors: 5,
            ..
        }]
    ));
}

#[test]
fn tensors_of_another_kind_than_the_pattern_letter_are_problems() {
    let r = inspect_hf(&[0, 1], "MM", 2);
    assert!(
        matches!(
            &r.problems[..],
            [Problem::PatternMismatch { layer: 1, expected, found, .. }]
                if expected == "mamba" && found == "moe"
        ),
        "{:?}",
        r.problems
    );
}

#[test]
fn recorded_metadata_gives_layout_and_slice() {
    let dir = TempDir::new().unwrap();
    let merged = tensor(
        "model.layers.1.mixer.experts.gate_and_up_projs",
        Dtype::BF16,
        &[2, 4, 2],
        bf16s(&[0.0; 16]),
    );
    let metadata = crate::testing::SLICE_1_OF_2_OF_5;
    write_shard(dir.path(), "model.safetensors", &[merged], &metadata);
    write_config(dir.path(), &config("ME", 5));
    let r = inspect(dir.path()).unwrap();
    assert_eq!(
        (r.layout, r.layout_source, r.hf_prefix.as_deref()),
        (
            LayoutKind::InternalEpSlice,
            LayoutSource::Metadata,
            Some("backbone")
        )
    );
    let ep = r.ep.unwrap();
    assert_eq!(
        (
            ep.ep_size,
            ep.ep_rank,
            ep.expert_start,
            ep.expert_end,
            ep.n_local_experts
        ),
        (Some(2), Some(1), Some(3), Some(5), 2)
    );
    assert_eq!(r.problems, vec![]);
}

#[test]
fn merged_experts_fewer_than_e_look_like_a_slice() {
    let dir = TempDir::new().unwrap();
    let merged = |proj: &str| {
        let name = format!("model.layers.1.mixer.experts.{proj}");
        tensor(&name, Dtype::BF16, &[2, 4, 2], bf16s(&[0.0; 16]))
    };
    write_checkpoint(
        dir.path(),
        &[merged("gate_and_up_projs"), merged("down_projs")],
        9,
    );
    write_config(dir.path(), &config("ME", 4));
    let r = inspect(dir.path()).unwrap();
    assert_eq!(
        (r.layout, r.layout_source),
        (LayoutKind::InternalEpSlice, LayoutSource::Names)
    );
    assert_eq!(r.ep.map(|e| e.n_local_experts), Some(2));
    assert_eq!(r.experts[0].form, ExpertForm::Merged);
}

/// A 4-element `in_proj` weight of `dtype` and a one-element F32 `in_proj.<scale>`.
fn weight_and_scale(dtype: Dtype, scale: &str) -> [Tensor; 2] {
    let module = "backbone.layers.0.mixer.in_proj";
    [
        tensor(&format!("{module}.weight"), dtype, &[4], vec![1; 4]),
        tensor(&format!("{module}.{scale}"), Dtype::F32, &[1], f32s(&[1.0])),
    ]
}

#[test]
fn quantization_is_seen_in_config_files_dtypes_and_scales() {
    let dir = TempDir::new().unwrap();
    write_checkpoint(
        dir.path(),
        &weight_and_scale(Dtype::F8_E4M3, "weight_scale_inv"),
        9,
    );
    let mut c = config("M", 2);
    c["quantization_config"] = json!({"quant_method": "fp8"});
    write_config(dir.path(), &c);
    std::fs::write(dir.path().join("hf_quant_config.json"), "{}").unwrap();
    let r = inspect(dir.path()).unwrap();
    assert!(r.quantized);
    assert_eq!(
        r.quantization_evidence.len(),
        4,
        "{:?}",
        r.quantization_evidence
    );
}

/// Issue 12: `inspect` asks the conversion's detector, which counts `input_scale` and every
/// F8 dtype (the old scan of its own missed the first).
#[test]
fn input_scales_and_every_f8_dtype_are_quantization_evidence() {
    let dir = TempDir::new().unwrap();
    let tensors = weight_and_scale(Dtype::F8_E4M3FNUZ, "input_scale");
    write_checkpoint(dir.path(), &tensors, 9);
    write_config(dir.path(), &config("M", 2));
    let r = inspect(dir.path()).unwrap();
    assert_eq!(
        r.quantization_evidence,
        vec![
            "1 F8 tensors".to_string(),
            "1 scale tensors (_scale_inv, weight_scale, weight_scale_2, input_scale)".to_string(),
        ]
    );
}

#[test]
fn missing_config_is_a_problem_and_invalid_config_an_error() {
    let dir = TempDir::new().unwrap();
    write_checkpoint(dir.path(), &hf_tensors(&[0, 1]), 9);
    let r = inspect(dir.path()).unwrap();
    assert_eq!(r.problems, vec![Problem::NoConfig]);
    assert_eq!((r.pattern, r.n_routed_experts), (None, None));
    std::fs::write(dir.path().join("config.json"), "{").unwrap();
    assert!(matches!(
        inspect(dir.path()),
        Err(Error::Config(ConfigError::Json { .. }))
    ));
}

#[test]
fn unreadable_directory_is_an_error() {
    let dir = TempDir::new().unwrap();
    assert!(matches!(
        inspect(&dir.path().join("nope")),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(inspect(dir.path()), Err(Error::NoWeights { .. })));
}

#[test]
fn json_has_schema_version_and_snake_case_words() {
    let r = inspect_hf(&[0], "ME", 2);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["layout"], "hf");
    assert_eq!(v["layout_source"], "names");
    assert_eq!(v["experts"][0]["form"], "per_expert");
    assert_eq!(v["problems"][0]["kind"], "missing_experts");
    assert_eq!(v["problems"][0]["ids"], json!([1]));
}

#[test]
fn text_form_names_layout_pattern_and_problems() {
    let text = inspect_hf(&[0], "ME", 2).to_string();
    assert!(
        text.contains("layout       hf (guessed from names)"),
        "{text}"
    );
    assert!(text.contains("pattern      ME (2 layers"), "{text}");
    assert!(
        text.contains("layer 1: up_proj of experts 1 missing"),
        "{text}"
    );
}

#[test]
fn id_lists_print_as_runs() {
    assert_eq!(render::ranges(&[0, 1, 2, 5, 7, 8]), "0-2 5 7-8");
    assert_eq!(render::ranges(&[]), "");
}
