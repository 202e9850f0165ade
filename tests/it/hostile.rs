//! Issue 11, "Nothing lost, second pass": what a hostile or unlucky user finds. One test (or a
//! few) per numbered item of the issue, each named after the rule it checks.

use crate::broken::{CONFIG, Case};
use crate::builder::Files;
use crate::harness::{assert_valid_output, from_hf, nemoconv, tempdir, to_hf};

/// Inserts `"key": value` text at the start of the input's config.json object.
fn insert_config_text(case: &Case, fields: &str) {
    let path = case.file(CONFIG);
    let text = std::fs::read_to_string(&path).expect("read config.json");
    let at = text.find('{').expect("config.json is an object") + 1;
    let text = format!("{}{fields},{}", &text[..at], &text[at..]);
    std::fs::write(&path, text).expect("write config.json");
}

// ---- item 3: Python-dialect JSON ----

const PYTHON_FLOATS: &str =
    r#""time_step_limit": [0.0, Infinity], "x_nan": NaN, "x_low": -Infinity"#;

#[test]
fn python_non_finite_numbers_in_config_are_accepted_and_kept() {
    let case = Case::golden_hf();
    insert_config_text(&case, PYTHON_FLOATS);
    from_hf(&["-q"], &case.input, &case.out).success();
    assert_valid_output(&case.out);
    let copied = std::fs::read(case.out.join(CONFIG)).expect("read the copied config.json");
    assert!(
        copied == std::fs::read(case.file(CONFIG)).unwrap(),
        "config.json was not copied byte for byte"
    );
    nemoconv(&["inspect".as_ref(), case.input.as_os_str()]).success();
    let back = case.tmp.path().join("back");
    to_hf(&["-q"], &case.out, &back).success();
}

#[test]
fn python_non_finite_numbers_survive_a_config_rewrite() {
    let tmp = tempdir();
    let (ck, _) = crate::quantized::modelopt_checkpoint("F8_E4M3", crate::quantized::e4m3);
    let input = tmp.path().join("in");
    ck.write(&input, Files::Single);
    let path = input.join(CONFIG);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find('{').unwrap() + 1;
    std::fs::write(
        &path,
        format!("{}{PYTHON_FLOATS},{}", &text[..at], &text[at..]),
    )
    .unwrap();
    let out = tmp.path().join("out");
    from_hf(&["-q", "--dequantize"], &input, &out).success();
    let rewritten = std::fs::read_to_string(out.join(CONFIG)).expect("read config.json");
    assert!(!rewritten.contains("quantization_config"), "{rewritten}");
    for token in [
        "0.0,\n    Infinity\n",
        "\"x_nan\": NaN",
        "\"x_low\": -Infinity",
    ] {
        assert!(
            rewritten.contains(token),
            "the rewritten config.json lost {token:?}:\n{rewritten}"
        );
    }
}

// ---- item 4: -j ----

#[test]
fn absurd_thread_counts_are_usage_errors() {
    let case = Case::golden_hf();
    for n in ["100000", "18446744073709551615", "1025"] {
        let run = from_hf(&["-q", "-j", n], &case.input, &case.out);
        run.code(2).stderr_has("-j");
        assert!(!case.out.exists(), "-j {n} wrote an output");
    }
}

#[test]
fn thread_counts_above_four_per_core_are_capped_with_a_note() {
    let case = Case::golden_hf();
    let run = from_hf(&["-j", "1024"], &case.input, &case.out);
    run.success().stderr_has("note: -j 1024 capped to");
    assert_valid_output(&case.out);
}
