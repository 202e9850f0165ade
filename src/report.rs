//! What the binary shows a person: the progress bar on stderr and the closing summary line.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nemoconv::options::Worker;
use std::path::{Path, PathBuf};

use nemoconv::convert::Planned;
use nemoconv::{Progress, Report};

/// An indicatif bar of bytes written, hidden when stderr is not a terminal or with `-q`.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar that draws only where a person can see it.
    pub fn new(quiet: bool) -> Bar {
        let bar = ProgressBar::hidden();
        if !quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid"),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Writes one line to stderr with control characters escaped (names from files may hold
/// ESC, NUL or newlines, issue 11, item 12); a closed stderr is ignored, never a panic (item 10).
pub fn say(line: &str) {
    use std::io::Write as _;
    let mut text = String::with_capacity(line.len() + 1);
    for c in line.chars() {
        match c.is_control() {
            true => text.extend(c.escape_default()),
            false => text.push(c),
        }
    }
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints the `--lenient` drop list and, unless quiet, the one-line summary, on stderr.
pub fn finish(report: &Report, worker: Option<Worker>, quiet: bool) {
    for name in &report.dropped {
        say(&format!("nemoconv: dropped {name:?}"));
    }
    for note in &report.summary.notes {
        say(&format!("nemoconv: note: {note}"));
    }
    if let Some(w) = worker
        && !quiet
    {
        say(&format!(
            "nemoconv: worker {}/{} done; run `nemoconv finalize OUT` once every worker has finished",
            w.index, w.count
        ));
    }
    if !quiet {
        let s = &report.summary;
        let rate = s.bytes as f64 / s.seconds.max(1e-9) / 1e9;
        let shards = if s.shards == 1 { "shard" } else { "shards" };
        say(&format!(
            "nemoconv: wrote {} tensors, {} bytes in {} {shards} and copied {} bytes of other files in {:.2} s ({rate:.2} GB/s)",
            s.tensors, s.bytes, s.shards, s.copied_bytes, s.seconds
        ));
    }
}

/// Says on stderr how many dtype-mapping names `consolidate` completed, unless quiet.
pub fn completed(names: &[String], quiet: bool) {
    if !quiet && !names.is_empty() {
        eprintln!(
            "nemoconv: completed the original dtype of {} tensors missing from fqn_to_dtype_mapping.json (--lenient keeps the reference's dtypes)",
            names.len()
        );
    }
}

/// The `--dry-run` output: per output checkpoint, each tensor with its recipe.
pub fn dry_run(planned: &Planned, json: bool) -> Vec<u8> {
    let targets: Vec<_> = planned
        .plans
        .iter()
        .map(|(subdir, plan)| {
            (
                subdir.display().to_string(),
                plan,
                nemoconv::plan::describe(plan, &planned.catalog),
            )
        })
        .collect();
    if json {
        let value = serde_json::json!({
            "outputs": targets.iter().map(|(subdir, plan, tensors)| serde_json::json!({
                "subdir": subdir,
                "shards": plan.shards.iter().map(|s| &s.file_name).collect::<Vec<_>>(),
                "bytes": plan.payload_bytes(),
                "dropped": plan.dropped,
                "tensors": tensors,
            })).collect::<Vec<_>>(),
        });
        return json_line(&value);
    }
    let mut out = String::new();
    for (subdir, plan, tensors) in &targets {
        if !subdir.is_empty() {
            out.push_str(&format!("# {subdir}\n"));
        }
        for t in tensors {
            let inputs = match &t.inputs[..] {
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
                [] => String::new(),
            };
            out.push_str(&format!(
                "{} {} {:?} {} {} <- {inputs}\n",
                t.name, t.dtype, t.shape, t.shard, t.op
            ));
        }
        for name in &plan.dropped {
            out.push_str(&format!("dropped {name}\n"));
        }
        out.push_str(&format!(
            "{} tensors, {} bytes, {} shards\n",
            tensors.len(),
            plan.payload_bytes(),
            plan.shards.len()
        ));
    }
    out.into_bytes()
}

/// The `--json` summary of a finished conversion.
pub fn json_summary(
    command: &str,
    inputs: &[PathBuf],
    output: &Path,
    report: &Report,
) -> serde_json::Value {
    let s = &report.summary;
    serde_json::json!({
        "command": command,
        "inputs": inputs.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        "output": output.to_string_lossy(),
        "tensors": s.tensors,
        "bytes": s.bytes,
        "shards": s.shards,
        "copied_bytes": s.copied_bytes,
        "seconds": s.seconds,
        "dropped": report.dropped,
    })
}

/// An `inspect` or `verify` report: pretty JSON with `--json`, else its text form.
pub fn show<T: serde::Serialize + std::fmt::Display>(found: &T, json: bool) -> Vec<u8> {
    if json {
        let mut bytes = serde_json::to_vec_pretty(found).expect("reports serialize");
        bytes.push(b'\n');
        return bytes;
    }
    found.to_string().into_bytes()
}

/// A JSON value on one line, newline-terminated.
pub fn json_line(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}
