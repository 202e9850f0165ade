//! The other commands on training checkpoints (issue 10): `verify SHARDED HF` compares the
//! assembled tensors without writing anything.

use std::path::PathBuf;

use crate::dcp_gen::{DcpCheckpoint, Entry, columns, rows, values, whole};
use crate::harness::{convert, fixture, nemoconv, tempdir};

fn golden(rel: &str) -> PathBuf {
    fixture(&format!("golden/dcp_tiny/{rel}"))
}

#[test]
fn verify_sharded_against_the_reference_consolidation_is_identical() {
    let run = nemoconv(
        &["verify", "-q"]
            .map(Into::into)
            .into_iter()
            .chain([
                golden("sharded").into_os_string(),
                golden("consolidated").into_os_string(),
            ])
            .collect::<Vec<std::ffi::OsString>>(),
    );
    run.success()
        .stdout_has("identical")
        .stdout_has("55 compared");
}

#[test]
fn verify_sharded_finds_one_changed_element() {
    let tmp = tempdir();
    let hf = tmp.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for entry in std::fs::read_dir(golden("consolidated")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), hf.join(entry.file_name())).unwrap();
    }
    // The last byte of file 3 is the last element of its last tensor.
    let path = hf.join("model-00003-of-00003.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        "-q".into(),
        golden("sharded").into(),
        hf.into(),
    ];
    nemoconv(&args).code(1).stdout_has("differ");
}

#[test]
fn verify_sharded_with_column_pieces_against_its_consolidation() {
    let ck = DcpCheckpoint {
        world: 3,
        entries: vec![
            Entry {
                name: "up".into(),
                tensor: values("BF16", &[6, 10], 1),
                pieces: columns(&[6, 10], &[2, 0, 1]),
            },
            Entry {
                name: "emb".into(),
                tensor: values("F32", &[7, 3], 2),
                pieces: rows(&[7, 3], 3),
            },
            Entry {
                name: "bias".into(),
                tensor: values("F32", &[4], 3),
                pieces: whole(&[4], 1),
            },
        ],
        ..DcpCheckpoint::default()
    }
    .one_file();
    let tmp = tempdir();
    let (model, out) = (tmp.path().join("model"), tmp.path().join("hf"));
    ck.write(&model);
    convert("consolidate", &["-q"], &model, &out).success();
    for (a, b) in [(&model, &out), (&out, &model)] {
        let args: Vec<std::ffi::OsString> = vec!["verify".into(), "-q".into(), a.into(), b.into()];
        nemoconv(&args).success().stdout_has("identical");
    }
}
