//! `consolidate` on generated training checkpoints (issue 10): uneven and empty FSDP pieces,
//! column pieces placed row by row, a float32-trained model against a BF16 dtype mapping,
//! and a property: random tensors cut into random FSDP/EP pieces over 1-8 ranks come back
//! whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use crate::builder::Dt;
use crate::dcp_gen::{DcpCheckpoint, Entry, PieceSpec, columns, rows, values, whole};
use crate::harness::{Tensor, Tensors, assert_same_tensors, convert, read_checkpoint, tempdir};

fn entry(name: &str, dtype: &str, shape: &[u64], pieces: Vec<PieceSpec>) -> Entry {
    Entry {
        name: name.to_string(),
        tensor: values(dtype, shape, name.len() as u64),
        pieces,
    }
}

/// The stored tensors of a checkpoint, by name.
fn originals(ck: &DcpCheckpoint) -> Tensors {
    ck.entries
        .iter()
        .map(|e| (e.name.clone(), e.tensor.clone()))
        .collect()
}

fn cast(t: &Tensor, to: &str) -> Tensor {
    crate::expect::cast(t, Dt::of(to))
}

/// The names of one output file's header, in header order.
fn header_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    let mut names = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, Keys(&mut names)).unwrap();
    names
}

#[test]
fn uneven_and_empty_row_pieces_in_any_order_come_back_whole() {
    let ck = DcpCheckpoint {
        world: 4,
        entries: vec![
            entry("a.weight", "BF16", &[37, 16], rows(&[37, 16], 4)),
            entry("b.A_log", "F32", &[3], rows(&[3], 4)),
            entry("c.conv", "BF16", &[5, 2, 3], rows(&[5, 2, 3], 4)),
            entry("d.scalar", "F32", &[], whole(&[], 2)),
            entry("e.bias", "F32", &[4], whole(&[4], 3)),
            entry("f.step", "I64", &[6], rows(&[6], 4)),
        ],
        reverse_within_files: true,
        ..DcpCheckpoint::default()
    };
    assert_eq!(
        ck.entries[1].pieces[3].offset,
        vec![3],
        "an empty piece at the end"
    );
    let mut ck = ck.one_file();
    ck.file_index.insert("c.conv".into(), 2);
    ck.file_index.insert("a.weight".into(), 2);
    let (_tmp, _, out) = ck.consolidated();
    assert_same_tensors(&read_checkpoint(&out), &originals(&ck));
    let first = out.join("model-00001-of-00002.safetensors");
    assert_eq!(
        header_names(&first),
        ["b.A_log", "d.scalar", "e.bias", "f.step"],
        "mapping order"
    );
    let second = out.join("model-00002-of-00002.safetensors");
    assert_eq!(header_names(&second), ["a.weight", "c.conv"]);
}

#[test]
fn column_pieces_are_placed_row_by_row() {
    let ck = DcpCheckpoint {
        world: 3,
        entries: vec![
            entry("x.up_proj", "BF16", &[8, 16], columns(&[8, 16], &[2, 0])),
            entry(
                "x.down_proj",
                "F32",
                &[6, 10],
                columns(&[6, 10], &[1, 2, 0]),
            ),
            entry("x.cube", "BF16", &[2, 3, 5], columns(&[2, 3, 5], &[0, 1])),
            entry("x.rows", "BF16", &[7, 3], rows(&[7, 3], 3)),
        ],
        ..DcpCheckpoint::default()
    }
    .one_file();
    let (_tmp, _, out) = ck.consolidated();
    assert_same_tensors(&read_checkpoint(&out), &originals(&ck));
}

/// A float32-trained model whose dtype mapping (rank 0's, from a BF16 original) lists
/// experts 0-1 only; rank 1 holds experts 2-3 (DCP-FORMAT §5 surprise 1).
fn fp32_model() -> DcpCheckpoint {
    let expert = |e: u64| format!("backbone.layers.1.mixer.experts.{e}.up_proj.weight");
    let mut entries = vec![
        entry(
            "backbone.embeddings.weight",
            "F32",
            &[4, 4],
            rows(&[4, 4], 2),
        ),
        entry("backbone.layers.0.mixer.A_log", "F32", &[4], rows(&[4], 2)),
    ];
    for e in 0..4 {
        entries.push(entry(
            &expert(e),
            "F32",
            &[2, 4],
            whole(&[2, 4], e as usize / 2),
        ));
    }
    let mut dtype_map: BTreeMap<String, String> = BTreeMap::from([
        ("backbone.embeddings.weight".into(), "BF16".into()),
        ("backbone.layers.0.mixer.A_log".into(), "F32".into()),
    ]);
    for e in 0..2 {
        dtype_map.insert(expert(e), "BF16".into());
    }
    DcpCheckpoint {
        world: 2,
        entries,
        dtype_map: Some(dtype_map),
        ..DcpCheckpoint::default()
    }
    .one_file()
}

fn fp32_expected(ck: &DcpCheckpoint, expert_dtype_of: impl Fn(&str) -> &'static str) -> Tensors {
    originals(ck)
        .into_iter()
        .map(|(name, t)| {
            let to = if name.ends_with("A_log") {
                "F32"
            } else if name.contains("experts") {
                expert_dtype_of(&name)
            } else {
                "BF16"
            };
            let t = cast(&t, to);
            (name, t)
        })
        .collect()
}

#[test]
fn float32_trained_model_gets_every_original_dtype() {
    let ck = fp32_model();
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
    ck.write(&model);
    let run = convert("consolidate", &[], &model, &out);
    run.success()
        .stderr_has("completed the original dtype of 2 tensors");
    assert_same_tensors(&read_checkpoint(&out), &fp32_expected(&ck, |_| "BF16"));
}

#[test]
fn float32_trained_model_lenient_reproduces_the_reference_f32_experts() {
    let ck = fp32_model();
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
    ck.write(&model);
    convert("consolidate", &["--lenient", "-q"], &model, &out).success();
    let rank1 = |name: &str| {
        if name.contains("experts.2.") || name.contains("experts.3.") {
            "F32"
        } else {
            "BF16"
        }
    };
    assert_same_tensors(&read_checkpoint(&out), &fp32_expected(&ck, rank1));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    // 16 + 8 * 2 embeddings/experts in BF16, 16 A_log and 2 experts in F32.
    assert_eq!(index["metadata"]["total_size"], 32 + 16 + 2 * 16 + 2 * 32);
}

#[test]
fn cast_keeps_f32_mapped_and_integer_tensors() {
    let mut ck = fp32_model();
    ck.entries.push(entry("step", "I64", &[2], whole(&[2], 0)));
    let ck = ck.one_file();
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
    ck.write(&model);
    convert("consolidate", &["--dtype", "f16", "-q"], &model, &out).success();
    let expected: Tensors = originals(&ck)
        .into_iter()
        .map(|(name, t)| match name.as_str() {
            "step" => (name, t),
            n if n.ends_with("A_log") => (name, t),
            _ => {
                let t = cast(&t, "F16");
                (name, t)
            }
        })
        .collect();
    assert_same_tensors(&read_checkpoint(&out), &expected);
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        config.contains("\"dtype\": \"float16\"")
            && config.ends_with("\"torch_dtype\": \"float16\"\n}\n")
    );
    assert!(
        config.contains("\"layer_norm_epsilon\": 1e-05,"),
        "Python float repr kept"
    );
}

/// How one random tensor is cut.
#[derive(Debug, Clone)]
enum Cut {
    Rows,
    Columns(Vec<usize>),
    Whole(usize),
}

fn tensor_strategy(world: usize) -> impl Strategy<Value = (Vec<u64>, &'static str, Cut, u64)> {
    let shape = prop::collection::vec(0u64..6, 0..=3);
    let dtype = prop::sample::select(vec!["BF16", "F32", "I64", "F16"]);
    let ranks = prop::sample::subsequence((0..world).collect::<Vec<_>>(), 1..=world).prop_shuffle();
    let cut = prop_oneof![
        Just(Cut::Rows),
        ranks.prop_map(Cut::Columns),
        (0..world).prop_map(Cut::Whole),
    ];
    (shape, dtype, cut, 1u64..=3)
}

fn checkpoint_strategy() -> impl Strategy<Value = (DcpCheckpoint, u64)> {
    (1usize..=8, any::<bool>()).prop_flat_map(|(world, reverse)| {
        prop::collection::vec(tensor_strategy(world), 1..6).prop_map(move |specs| {
            let mut ck = DcpCheckpoint {
                world,
                reverse_within_files: reverse,
                ..DcpCheckpoint::default()
            };
            for (i, (shape, dtype, cut, file)) in specs.into_iter().enumerate() {
                let name = format!("t.{i}.weight");
                let pieces = match cut {
                    _ if shape.is_empty() => whole(&shape, i % world),
                    Cut::Rows => rows(&shape, world),
                    Cut::Columns(ranks) => columns(&shape, &ranks),
                    Cut::Whole(rank) => whole(&shape, rank),
                };
                ck.entries.push(entry(&name, dtype, &shape, pieces));
                ck.file_index.insert(name, file);
            }
            let n_files = *ck.file_index.values().max().unwrap();
            (ck, n_files)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_pieces_over_1_to_8_ranks_consolidate_to_the_originals((ck, n_files) in checkpoint_strategy()) {
        let tmp = tempdir();
        let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
        ck.write(&model);
        let options = nemoconv::ConsolidateOptions::default();
        let done = nemoconv::consolidate::consolidate(
            &model, &out, &options, &nemoconv::NoProgress, &AtomicBool::new(false),
        );
        prop_assert!(done.is_ok(), "{:?}", done.err());
        assert_same_tensors(&read_checkpoint(&out), &originals(&ck));
        for f in crate::harness::shard_files(&out) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            prop_assert!(name.ends_with(&format!("-of-{n_files:05}.safetensors")), "{}", name);
        }
    }
}

#[test]
fn pieces_larger_than_a_job_and_strided_pieces_are_cast_to_their_original_dtype() {
    // 600 x 1024 F32 rows of ~0.8 MB per rank and column pieces, all mapped to BF16.
    let ck = DcpCheckpoint {
        world: 3,
        entries: vec![
            entry("big.weight", "F32", &[600, 1024], rows(&[600, 1024], 3)),
            entry(
                "cols.weight",
                "F32",
                &[300, 700],
                columns(&[300, 700], &[1, 0, 2]),
            ),
        ],
        dtype_map: Some(BTreeMap::from([
            ("big.weight".into(), "BF16".into()),
            ("cols.weight".into(), "BF16".into()),
        ])),
        ..DcpCheckpoint::default()
    }
    .one_file();
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
    ck.write(&model);
    convert("consolidate", &["-q", "-j", "3"], &model, &out).success();
    let expected: Tensors = originals(&ck)
        .into_iter()
        .map(|(name, t)| {
            let t = cast(&t, "BF16");
            (name, t)
        })
        .collect();
    assert_same_tensors(&read_checkpoint(&out), &expected);
}
