//! Properties over generated checkpoints (STYLE §6): from-hf then to-hf gives the input back
//! except for the documented changes (SPEC §4), and experts merge in numeric id order however
//! they are stored.

use proptest::prelude::*;
use proptest::sample::select;

use crate::builder::{CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::from_hf::{back_to_hf, convert};
use crate::harness::assert_same_tensors;

/// Small valid checkpoints: any pattern of 1-6 layers, E in 1..6, weights in any float dtype
/// with the matching torch_dtype, either prefix, optional MTP layers, and 1-3 shards (or one
/// index-less file).
fn checkpoints() -> impl Strategy<Value = (CheckpointBuilder, Files)> {
    (
        ("[-ME*]{1,6}", 1u64..6, 1u64..5, 1u64..6, 1u64..5),
        (select(Dt::ALL.to_vec()), select(Dt::ALL.to_vec())),
        select(vec!["backbone.", "model."]),
        select(vec!["", "E", "*E"]),
        select(vec!["embeddings", "embedding", "embed_tokens"]),
        select(vec![
            Files::Single,
            Files::Indexed(1),
            Files::Indexed(2),
            Files::Indexed(3),
        ]),
        any::<u64>(),
    )
        .prop_map(
            |((pattern, e, i, h, v), (dtype, params), prefix, mtp, embedding, files, seed)| {
                let builder = CheckpointBuilder {
                    pattern,
                    mtp_pattern: mtp.to_string(),
                    n_experts: e,
                    inter: i,
                    hidden: h,
                    vocab: v,
                    dtype,
                    fp32_params_dtype: params,
                    torch_dtype: Some(dtype.torch()),
                    prefix,
                    embedding,
                    seed,
                };
                (builder, files)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn from_hf_then_to_hf_gives_the_input_back((builder, files) in checkpoints()) {
        let ck = builder.build();
        let c = convert(&ck, files, &[]);
        assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), builder.dtype));
        let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
        assert_same_tensors(&hf, &expect::round_trip(&ck.map(), builder.dtype));
    }
}

#[test]
fn shuffled_experts_merge_in_numeric_id_order() {
    const ORDER: [u64; 12] = [10, 2, 1, 11, 0, 5, 9, 3, 7, 4, 8, 6];
    let builder = CheckpointBuilder {
        pattern: "ME".into(),
        n_experts: 12,
        ..Default::default()
    };
    let mut ck = builder.build();
    let is_expert = |n: &str| n.starts_with("backbone.layers.1.mixer.experts.");
    let first = ck.tensors.iter().position(|(n, _)| is_expert(n)).unwrap();
    let (experts, rest): (Vec<_>, Vec<_>) = ck.tensors.drain(..).partition(|(n, _)| is_expert(n));
    ck.tensors = rest;
    // Store down_proj before up_proj for odd ids, and ids in ORDER.
    for (k, id) in ORDER.iter().enumerate() {
        let projs = if id % 2 == 1 {
            ["down_proj", "up_proj"]
        } else {
            ["up_proj", "down_proj"]
        };
        for (j, proj) in projs.iter().enumerate() {
            let name = format!("backbone.layers.1.mixer.experts.{id}.{proj}.weight");
            let entry = experts.iter().find(|(n, _)| *n == name).unwrap().clone();
            ck.tensors.insert(first + 2 * k + j, entry);
        }
    }
    assert_eq!(
        ck.tensors[first].0,
        "backbone.layers.1.mixer.experts.10.up_proj.weight"
    );
    let c = convert(&ck, Files::Indexed(2), &[]);
    for (merged, proj) in [
        ("gate_and_up_projs", "up_proj"),
        ("down_projs", "down_proj"),
    ] {
        let merged = &c.tensors[&format!("model.layers.1.mixer.experts.{merged}")];
        let slot_bytes = merged.data.len() / 12;
        for k in 0..12 {
            let expert = ck.get(&format!(
                "backbone.layers.1.mixer.experts.{k}.{proj}.weight"
            ));
            let slot = &merged.data[k * slot_bytes..(k + 1) * slot_bytes];
            assert!(
                slot == expect::transpose(expert),
                "slot {k} of {proj} is not expert {k}"
            );
        }
    }
    assert_same_tensors(&c.tensors, &expect::from_hf(&ck.map(), Dt::Bf16));
    let hf = back_to_hf(c.tmp.path(), &c.internal, &[], "hf");
    assert_same_tensors(&hf, &expect::round_trip(&ck.map(), Dt::Bf16));
}
