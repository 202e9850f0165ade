//! Quantized inputs (issue 6): FP8 checkpoints built here byte by byte. `--dequantize` must give
//! BF16 values equal to the FP8 value times its scale, rounded once to nearest even, with the
//! FP8 formats decoded here from their definitions; scales and quantization configs are left
//! out. Without it a quantized input is refused, unless `--lenient` asks for the reference's
//! behaviour; NVFP4 is refused either way.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::builder::{Checkpoint, CheckpointBuilder, Dt, Files};
use crate::expect;
use crate::harness::{
    Tensor, Tensors, assert_refused, assert_same_tensors, assert_valid_output, dir_entries,
    from_hf, read_checkpoint, tempdir,
};

// ---- the formats, from their definitions ----

/// OCP FP8 E4M3 (the `FN` variant safetensors calls F8_E4M3): sign, 4-bit exponent with bias
/// 7, 3-bit mantissa; exponent 0 is subnormal (m/8 * 2^-6); 0x7F and 0xFF are NaN; no
/// infinities.
pub fn e4m3(code: u8) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exp, man) = (i32::from((code >> 3) & 0xF), f64::from(code & 0x7));
    if exp == 0xF && man == 7.0 {
        return f64::NAN;
    }
    let magnitude = if exp == 0 {
        man / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    };
    sign * magnitude
}

/// OCP FP8 E5M2: sign, 5-bit exponent with bias 15, 2-bit mantissa; exponent 0 is subnormal
/// (m/4 * 2^-14); exponent 31 is infinity (m = 0) or NaN.
fn e5m2(code: u8) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exp, man) = (i32::from((code >> 2) & 0x1F), f64::from(code & 0x3));
    let magnitude = match exp {
        0 => man / 4.0 * 2f64.powi(-14),
        31 if man == 0.0 => f64::INFINITY,
        31 => return f64::NAN,
        _ => (1.0 + man / 4.0) * 2f64.powi(exp - 15),
    };
    sign * magnitude
}

/// BF16 of an exact value, rounded to nearest, ties to even; NaN as the quiet NaN 0x7FC0.
/// The value must be exact in F32 (the scales below are chosen so that products are).
fn bf16_bits(value: f64) -> u16 {
    if value.is_nan() {
        return 0x7FC0;
    }
    let single = value as f32;
    assert_eq!(
        f64::from(single),
        value,
        "test setup: {value} is not exact in F32"
    );
    let bits = single.to_bits();
    let rounded = bits + 0x7FFF + ((bits >> 16) & 1);
    (rounded >> 16) as u16
}

fn is_bf16_nan(bits: u16) -> bool {
    bits & 0x7F80 == 0x7F80 && bits & 0x007F != 0
}

#[test]
fn the_test_decoders_match_known_values() {
    // Anchors for the decoders above (OCP 8-bit floating point specification, table 1).
    assert_eq!(e4m3(0x00), 0.0);
    assert_eq!(e4m3(0x01), 2f64.powi(-9));
    assert_eq!(e4m3(0x07), 7.0 / 8.0 * 2f64.powi(-6));
    assert_eq!(e4m3(0x08), 2f64.powi(-6));
    assert_eq!(e4m3(0x38), 1.0);
    assert_eq!(e4m3(0x7E), 448.0);
    assert_eq!(e4m3(0xFE), -448.0);
    assert!(e4m3(0x7F).is_nan() && e4m3(0xFF).is_nan());
    assert_eq!(e5m2(0x3C), 1.0);
    assert_eq!(e5m2(0x7B), 57344.0);
    assert_eq!(e5m2(0x01), 2f64.powi(-16));
    assert_eq!(e5m2(0x7C), f64::INFINITY);
    assert_eq!(e5m2(0xFC), f64::NEG_INFINITY);
    assert!(e5m2(0x7D).is_nan());
    // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
    assert_eq!(bf16_bits(1.0 + 2f64.powi(-8)), 0x3F80);
    assert_eq!(bf16_bits(1.0 + 3.0 * 2f64.powi(-8)), 0x3F82);
    assert_eq!(bf16_bits(1.0 + 2f64.powi(-8) + 2f64.powi(-20)), 0x3F81);
}

// ---- building quantized checkpoints ----

fn tensor(dtype: &str, shape: &[u64], data: Vec<u8>) -> Tensor {
    Tensor {
        dtype: dtype.to_string(),
        shape: shape.to_vec(),
        data,
    }
}

fn f32_tensor(shape: &[u64], values: &[f32]) -> Tensor {
    tensor(
        "F32",
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

fn bf16_tensor(shape: &[u64], bits: &[u16]) -> Tensor {
    tensor(
        "BF16",
        shape,
        bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
    )
}

/// Replaces `name` (which must exist) by `t`, keeping its place.
fn replace(ck: &mut Checkpoint, name: &str, t: Tensor) {
    *ck.get_mut(name) = t;
}

/// Appends `t` as `name`.
fn add(ck: &mut Checkpoint, name: &str, t: Tensor) {
    ck.tensors.push((name.to_string(), t));
}

/// Codes 0..=255 in row-major order, each once, permuted by `k` (a multiplier, odd, so every
/// code still appears once) and shifted by `shift`.
fn all_codes(k: usize, shift: usize) -> Vec<u8> {
    (0..256).map(|i| ((i * k + shift) % 256) as u8).collect()
}

/// The BF16 bits `--dequantize` must give for `codes` of a format times one `scale`.
fn dequantized(codes: &[u8], decode: fn(u8) -> f64, scale: f32) -> Vec<u16> {
    codes
        .iter()
        .map(|&c| bf16_bits(decode(c) * f64::from(scale)))
        .collect()
}

/// Replaces every BF16 NaN by 0x7FC0 (which NaN a cast gives is not specified).
fn canonical_nans(tensors: &Tensors) -> Tensors {
    tensors
        .iter()
        .map(|(name, t)| {
            let mut t = t.clone();
            if t.dtype == "BF16" {
                for pair in t.data.chunks_exact_mut(2) {
                    if is_bf16_nan(u16::from_le_bytes([pair[0], pair[1]])) {
                        pair.copy_from_slice(&0x7FC0u16.to_le_bytes());
                    }
                }
            }
            (name.clone(), t)
        })
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const ATTN_Q: &str = "backbone.layers.0.mixer.q_proj.weight";

fn expert(layer: u64, k: u64, proj: &str) -> String {
    format!("backbone.layers.{layer}.mixer.experts.{k}.{proj}.weight")
}

/// Per-tensor scales with short mantissas (so each product is exact in F32 and the only
/// rounding is the one to BF16), some leaving three bits to round, so ties occur.
const SCALES: [f32; 5] = [1.046_875, 0.011_718_75, 3.25, 1.0625 / 1024.0, 96.5];

/// A ModelOpt FP8 checkpoint (pattern `*E`, H = I = 16, two experts): the attention q_proj
/// and every expert weight are F8 codes with a per-tensor `weight_scale` and an
/// `input_scale`, each tensor holding every one of the 256 codes. Returns it with the HF
/// tensors `--dequantize` must be equivalent to (BF16, no scales).
pub fn modelopt_checkpoint(word: &str, decode: fn(u8) -> f64) -> (Checkpoint, Tensors) {
    let mut ck = CheckpointBuilder {
        pattern: "*E".to_string(),
        n_experts: 2,
        hidden: 16,
        inter: 16,
        ..CheckpointBuilder::default()
    }
    .build();
    ck.config["quantization_config"] = json!({"quant_method": "modelopt", "quant_algo": "FP8"});
    let quant_config = json!({
        "producer": {"name": "modelopt", "version": "0.29.0"},
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": null}
    });
    ck.other_files.push((
        "hf_quant_config.json".to_string(),
        serde_json::to_vec_pretty(&quant_config).unwrap(),
    ));
    ck.other_files
        .push(("tokenizer.json".to_string(), b"{\"tiny\": true}\n".to_vec()));
    let mut expected = ck.map();
    let weights = [
        (ATTN_Q.to_string(), all_codes(1, 0)),
        (expert(1, 0, "up_proj"), all_codes(255, 0)),
        (expert(1, 1, "up_proj"), all_codes(1, 0)),
        (expert(1, 0, "down_proj"), all_codes(37, 11)),
        (expert(1, 1, "down_proj"), all_codes(101, 200)),
    ];
    for ((name, codes), scale) in weights.into_iter().zip(SCALES) {
        replace(&mut ck, &name, tensor(word, &[16, 16], codes.clone()));
        add(&mut ck, &format!("{name}_scale"), f32_tensor(&[], &[scale]));
        let input_scale = name.replace(".weight", ".input_scale");
        add(&mut ck, &input_scale, f32_tensor(&[], &[0.5]));
        let bits = dequantized(&codes, decode, scale);
        expected.insert(name, bf16_tensor(&[16, 16], &bits));
    }
    (ck, expected)
}

/// Checks a `--dequantize` output against the dequantized HF tensors and the file rules:
/// config.json without `quantization_config`, no `hf_quant_config.json`, other files copied.
fn assert_dequantized_output(out: &Path, ck: &Checkpoint, hf: &Tensors) {
    let actual = canonical_nans(&assert_valid_output(out));
    assert_same_tensors(&actual, &expect::from_hf(hf, Dt::Bf16));
    for name in actual.keys() {
        assert!(
            !name.ends_with("_scale") && !name.ends_with("_scale_inv"),
            "scale tensor {name:?} in the output"
        );
    }
    let mut config = ck.config.clone();
    config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    assert_eq!(
        read_json(&out.join("config.json")),
        config,
        "config.json must be the input's without quantization_config"
    );
    assert!(
        !out.join("hf_quant_config.json").exists(),
        "hf_quant_config.json must not be copied"
    );
    for (rel, bytes) in &ck.other_files {
        if rel != "hf_quant_config.json" {
            assert_eq!(&std::fs::read(out.join(rel)).unwrap(), bytes, "{rel}");
        }
    }
}

// ---- (a) ModelOpt per-tensor FP8, every code point ----

/// `--dequantize` of the ModelOpt checkpoint in format `word`; checks every value, then each
/// code of expert 1's up_proj where it must sit, transposed, in the merged tensor.
fn check_every_code_point(word: &str, decode: fn(u8) -> f64) {
    let tmp = tempdir();
    let (ck, hf) = modelopt_checkpoint(word, decode);
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    from_hf(&["--dequantize"], &input, &out).success();
    assert_dequantized_output(&out, &ck, &hf);

    let actual = read_checkpoint(&out);
    let q = &actual["model.layers.0.mixer.q_proj.weight"];
    assert_eq!((q.dtype.as_str(), &q.shape[..]), ("BF16", &[16, 16][..]));
    let merged = &actual["model.layers.1.mixer.experts.gate_and_up_projs"];
    assert_eq!(
        (merged.dtype.as_str(), &merged.shape[..]),
        ("BF16", &[2, 16, 16][..])
    );
    let at = |t: &Tensor, i: usize| u16::from_le_bytes([t.data[2 * i], t.data[2 * i + 1]]);
    for code in 0..=255u8 {
        let (r, c) = (usize::from(code) / 16, usize::from(code) % 16);
        for (what, got, scale) in [
            ("q_proj", at(q, r * 16 + c), SCALES[0]),
            // Expert 1's up_proj [I, H] at [r, c] is gate_and_up_projs[1, c, r].
            ("expert 1 up_proj", at(merged, 256 + c * 16 + r), SCALES[2]),
        ] {
            let want = bf16_bits(decode(code) * f64::from(scale));
            let ok = if is_bf16_nan(want) {
                is_bf16_nan(got)
            } else {
                got == want
            };
            assert!(
                ok,
                "{word} code {code:#04x} in {what}: got bf16 {got:#06x}, expected {want:#06x}"
            );
        }
    }
}

#[test]
fn dequantize_e4m3_every_code_point_times_per_tensor_scale() {
    check_every_code_point("F8_E4M3", e4m3);
}

#[test]
fn dequantize_e5m2_every_code_point_times_per_tensor_scale() {
    check_every_code_point("F8_E5M2", e5m2);
}

// ---- (b) block FP8 ----

/// A block-FP8 checkpoint (pattern `E`, H = 260, I = 130, two experts): every expert weight
/// and the shared experts' up_proj are E4M3 with `weight_scale_inv` of one distinct scale per
/// 128x128 block, and config.json names the block size. Returns it with the dequantized HF
/// tensors.
fn block_fp8_checkpoint() -> (Checkpoint, Tensors) {
    let (h, i) = (260u64, 130u64);
    let mut ck = CheckpointBuilder {
        pattern: "E".to_string(),
        n_experts: 2,
        hidden: h,
        inter: i,
        vocab: 4,
        ..CheckpointBuilder::default()
    }
    .build();
    ck.config["quantization_config"] = json!({
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128]
    });
    let mut expected = ck.map();
    let weights = [
        (expert(0, 0, "up_proj"), [i, h]),
        (expert(0, 1, "up_proj"), [i, h]),
        (expert(0, 0, "down_proj"), [h, i]),
        (expert(0, 1, "down_proj"), [h, i]),
        (
            "backbone.layers.0.mixer.shared_experts.up_proj.weight".to_string(),
            [i + 1, h],
        ),
    ];
    for (w, (name, [rows, cols])) in weights.into_iter().enumerate() {
        let blocks = [rows.div_ceil(128), cols.div_ceil(128)];
        // Distinct scales, exact products: (1 + b/8 + 1/64) * 2^(b + w - 3).
        let scales: Vec<f32> = (0..blocks[0] * blocks[1])
            .map(|b| (1.0 + b as f32 / 8.0 + 1.0 / 64.0) * 2f32.powi(b as i32 + w as i32 - 3))
            .collect();
        let mut codes = Vec::new();
        let mut bits = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                // Every code but the two NaNs, spread over the blocks.
                let v = ((r * 7 + c * 3 + w as u64 * 5) % 254) as u8;
                let code = if v >= 0x7F { v + 1 } else { v };
                let scale = scales[((r / 128) * blocks[1] + c / 128) as usize];
                codes.push(code);
                bits.push(bf16_bits(e4m3(code) * f64::from(scale)));
            }
        }
        replace(&mut ck, &name, tensor("F8_E4M3", &[rows, cols], codes));
        add(
            &mut ck,
            &format!("{name}_scale_inv"),
            f32_tensor(&blocks, &scales),
        );
        expected.insert(name, bf16_tensor(&[rows, cols], &bits));
    }
    (ck, expected)
}

#[test]
fn dequantize_block_fp8_scales_each_128x128_block() {
    let tmp = tempdir();
    let (ck, hf) = block_fp8_checkpoint();
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(3));
    let out = tmp.path().join("out");
    from_hf(&["--dequantize"], &input, &out).success();
    assert_dequantized_output(&out, &ck, &hf);
}

// ---- (c) what --dequantize leaves out ----

#[test]
fn dequantize_drops_scales_quantization_config_and_hf_quant_config() {
    let tmp = tempdir();
    let (ck, _) = modelopt_checkpoint("F8_E4M3", e4m3);
    let input = tmp.path().join("in");
    ck.write(&input, Files::Single);
    let out = tmp.path().join("out");
    from_hf(&["-q", "--dequantize"], &input, &out).success();
    let names: Vec<String> = read_checkpoint(&out).into_keys().collect();
    let scales: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("scale") && !n.contains("e_score_correction_bias"))
        .collect();
    assert!(scales.is_empty(), "scale tensors in the output: {scales:?}");
    assert!(!names.iter().any(|n| n.contains("input_scale")));
    let config = read_json(&out.join("config.json"));
    assert!(
        config.get("quantization_config").is_none(),
        "config.json keeps quantization_config: {config}"
    );
    assert_eq!(config["model_type"], "nemotron_h");
    let mut files = dir_entries(&out);
    files.retain(|f| !f.ends_with(".safetensors"));
    assert_eq!(
        files,
        vec![
            "config.json".to_string(),
            "model.safetensors.index.json".to_string(),
            "tokenizer.json".to_string()
        ]
    );
}

// ---- (d) refusal without --dequantize ----

/// The ModelOpt checkpoint with only q_proj quantized, in one `model.safetensors`.
fn one_fp8_tensor(dir: &Path, with_quant_config: bool) -> PathBuf {
    let mut ck = CheckpointBuilder {
        pattern: "*E".to_string(),
        hidden: 16,
        inter: 16,
        ..CheckpointBuilder::default()
    }
    .build();
    if with_quant_config {
        ck.config["quantization_config"] = json!({"quant_method": "modelopt"});
    }
    replace(
        &mut ck,
        ATTN_Q,
        tensor("F8_E4M3", &[16, 16], all_codes(1, 0)),
    );
    add(&mut ck, &format!("{ATTN_Q}_scale"), f32_tensor(&[], &[2.0]));
    let input = dir.join("in");
    ck.write(&input, Files::Single);
    input
}

#[test]
fn quantized_input_without_dequantize_is_refused_naming_the_tensor() {
    for with_quant_config in [false, true] {
        let tmp = tempdir();
        let input = one_fp8_tensor(tmp.path(), with_quant_config);
        let out = tmp.path().join("out");
        let run = from_hf(&[], &input, &out);
        assert_refused(&run, &out, "--dequantize", &input.display().to_string());
        if !with_quant_config {
            // The weight or its scale, whichever is met first.
            run.stderr_has(&format!("\"{ATTN_Q}"));
            run.stderr_has("model.safetensors");
        }
    }
}

#[test]
fn block_fp8_input_without_dequantize_is_refused() {
    let tmp = tempdir();
    let (ck, _) = block_fp8_checkpoint();
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(3));
    let out = tmp.path().join("out");
    let run = from_hf(&[], &input, &out);
    assert_refused(&run, &out, "--dequantize", &input.display().to_string());
    run.stderr_has("backbone.layers.0.mixer.");
}

#[test]
fn quantization_config_file_alone_is_refused() {
    let tmp = tempdir();
    let mut ck = CheckpointBuilder::default().build();
    ck.other_files
        .push(("hf_quant_config.json".to_string(), b"{}\n".to_vec()));
    let input = tmp.path().join("in");
    ck.write(&input, Files::Single);
    let out = tmp.path().join("out");
    let run = from_hf(&[], &input, &out);
    assert_refused(&run, &out, "hf_quant_config.json", "--dequantize");
}

// ---- (e) NVFP4 ----

#[test]
fn nvfp4_is_refused_even_with_dequantize() {
    let tmp = tempdir();
    let mut ck = CheckpointBuilder {
        pattern: "*E".to_string(),
        hidden: 32,
        inter: 16,
        ..CheckpointBuilder::default()
    }
    .build();
    ck.config["quantization_config"] = json!({"quant_method": "modelopt", "quant_algo": "NVFP4"});
    let name = expert(1, 0, "up_proj");
    // [I, H] FP4 values, two per byte; FP8 scales per 16 values; a second-level F32 scale.
    replace(&mut ck, &name, tensor("U8", &[16, 16], all_codes(1, 0)));
    add(
        &mut ck,
        &format!("{name}_scale"),
        tensor("F8_E4M3", &[16, 2], vec![0x38; 32]),
    );
    add(
        &mut ck,
        &format!("{name}_scale_2"),
        f32_tensor(&[], &[0.25]),
    );
    add(
        &mut ck,
        &name.replace(".weight", ".input_scale"),
        f32_tensor(&[], &[1.0]),
    );
    let input = tmp.path().join("in");
    ck.write(&input, Files::Single);
    for options in [
        &["--dequantize"][..],
        &[][..],
        &["--dequantize", "--lenient"][..],
    ] {
        let out = tmp.path().join("out");
        let run = from_hf(options, &input, &out);
        assert_refused(&run, &out, "NVFP4", &input.display().to_string());
        if options.contains(&"--dequantize") {
            run.stderr_has(&name);
        }
    }
}

// ---- (f) --lenient reproduces the reference ----

#[test]
fn lenient_without_dequantize_casts_fp8_experts_without_scale_and_drops_scale_inv() {
    let tmp = tempdir();
    let mut ck = CheckpointBuilder {
        pattern: "ME".to_string(),
        hidden: 16,
        inter: 8,
        ..CheckpointBuilder::default()
    }
    .build();
    let mut hf = ck.map();
    let mut scale_names = Vec::new();
    let shared = "backbone.layers.1.mixer.shared_experts.up_proj.weight";
    let mut weights: Vec<(String, [u64; 2])> = (0..4)
        .flat_map(|k| {
            [
                (expert(1, k, "up_proj"), [8, 16]),
                (expert(1, k, "down_proj"), [16, 8]),
            ]
        })
        .collect();
    weights.push((shared.to_string(), [9, 16]));
    for (w, (name, shape)) in weights.into_iter().enumerate() {
        let numel = (shape[0] * shape[1]) as usize;
        let codes: Vec<u8> = (0..numel)
            .map(|i| {
                let v = ((i * 11 + w * 29) % 254) as u8;
                if v >= 0x7F { v + 1 } else { v }
            })
            .collect();
        replace(&mut ck, &name, tensor("F8_E4M3", &shape, codes.clone()));
        let scale_name = format!("{name}_scale_inv");
        add(&mut ck, &scale_name, f32_tensor(&[1, 1], &[3.5]));
        scale_names.push(scale_name);
        // The reference: experts cast to the config dtype with no scale; other tensors as is.
        let t = if name == shared {
            tensor("F8_E4M3", &shape, codes)
        } else {
            bf16_tensor(&shape, &dequantized(&codes, e4m3, 1.0))
        };
        hf.insert(name, t);
    }
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(2));
    let out = tmp.path().join("out");
    let run = from_hf(&["--lenient"], &input, &out);
    run.success();
    for name in &scale_names {
        run.stderr_has(name);
    }
    assert_same_tensors(&assert_valid_output(&out), &expect::from_hf(&hf, Dt::Bf16));
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        std::fs::read(input.join("config.json")).unwrap()
    );
}

#[test]
fn dequantize_of_an_expert_parallel_slice_scales_the_rank_experts() {
    let tmp = tempdir();
    let (ck, hf) = modelopt_checkpoint("F8_E4M3", e4m3);
    let input = tmp.path().join("in");
    ck.write(&input, Files::Indexed(2));
    let out = tmp.path().join("r1");
    from_hf(
        &["--dequantize", "--ep-size=2", "--ep-rank=1"],
        &input,
        &out,
    )
    .success();
    // Rank 1 of 2 holds expert 1: row 1 of each merged tensor of the full conversion.
    let expected: Tensors = expect::from_hf(&hf, Dt::Bf16)
        .into_iter()
        .map(|(name, mut t)| {
            if name.contains(".experts.") {
                let row_bytes = t.data.len() / t.shape[0] as usize;
                t.data = t.data[row_bytes..2 * row_bytes].to_vec();
                t.shape[0] = 1;
            }
            (name, t)
        })
        .collect();
    let actual = canonical_nans(&assert_valid_output(&out));
    assert_same_tensors(&actual, &expected);
}
