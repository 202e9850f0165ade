//! The command line itself (STYLE §3, §5): usage errors exit 2 and write nothing, a missing
//! input exits 1 naming it, and each subcommand's help shows an example.

use std::path::Path;

use crate::builder::{CheckpointBuilder, Files};
use crate::harness::{Run, dir_entries, from_hf, nemoconv, tempdir, to_hf};

/// Runs `SUBCOMMAND OPTIONS IN OUT` on a valid input and checks it is a usage error (exit 2)
/// naming `option`, that leaves no output.
fn assert_usage_error(subcommand: &str, options: &[&str], option: &str) {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    CheckpointBuilder::default()
        .build()
        .write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    let run = crate::harness::convert(subcommand, options, &input, &out);
    run.code(2).stderr_has(option);
    if out.exists() {
        run.fail("a usage error must not create the output");
    }
    assert_eq!(dir_entries(tmp.path()), vec!["in".to_string()]);
}

#[test]
fn bad_dtype_is_a_usage_error() {
    assert_usage_error("from-hf", &["--dtype", "f8"], "--dtype");
}

#[test]
fn bad_max_shard_size_is_a_usage_error() {
    for size in ["5XB", "0", "lots", "-1"] {
        let option = format!("--max-shard-size={size}");
        assert_usage_error("from-hf", &[&option], "--max-shard-size");
        assert_usage_error("to-hf", &[&option], "--max-shard-size");
    }
}

#[test]
fn invalid_exclude_regex_is_a_usage_error() {
    assert_usage_error("to-hf", &["--exclude-regex", "("], "--exclude-regex");
}

#[test]
fn bad_hf_prefix_is_a_usage_error() {
    assert_usage_error("to-hf", &["--hf-prefix", "transformer"], "--hf-prefix");
}

#[test]
fn help_of_each_subcommand_shows_an_example() {
    for subcommand in ["from-hf", "to-hf"] {
        let run: Run = nemoconv(&[subcommand, "--help"]);
        run.success()
            .stdout_has("Example")
            .stdout_has(&format!("nemoconv {subcommand} "));
    }
}

#[test]
fn missing_input_directory_is_refused_naming_it() {
    let tmp = tempdir();
    let input = tmp.path().join("does-not-exist");
    let out = tmp.path().join("out");
    for run in [
        nemoconv(&[Path::new("from-hf"), &input, &out]),
        nemoconv(&[Path::new("to-hf"), &input, &out]),
    ] {
        run.code(1).stderr_has(&input.display().to_string());
        assert!(!out.exists());
    }
}

#[test]
fn quiet_conversions_print_nothing() {
    let tmp = tempdir();
    let input = tmp.path().join("in");
    CheckpointBuilder::default()
        .build()
        .write(&input, Files::Single);
    let internal = tmp.path().join("internal");
    for run in [
        from_hf(&["-q"], &input, &internal),
        to_hf(&["-q"], &internal, &tmp.path().join("hf")),
    ] {
        run.success().stdout_empty();
        if !run.stderr.is_empty() {
            run.fail("-q must leave stderr empty on success");
        }
    }
}
