//! What the binary shows a person: the progress bar on stderr and the closing summary line.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nemoconv::options::Worker;
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

/// Prints the `--lenient` drop list and, unless quiet, the one-line summary, on stderr.
pub fn finish(report: &Report, worker: Option<Worker>, quiet: bool) {
    for name in &report.dropped {
        eprintln!("nemoconv: dropped {name:?}");
    }
    if let Some(w) = worker {
        eprintln!(
            "nemoconv: worker {}/{} done; run `nemoconv finalize OUT` once every worker is",
            w.index, w.count
        );
    }
    if !quiet {
        let s = &report.summary;
        let rate = s.bytes as f64 / s.seconds.max(1e-9) / 1e9;
        eprintln!(
            "nemoconv: wrote {} tensors, {} bytes in {} shards in {:.2} s ({rate:.2} GB/s)",
            s.tensors, s.bytes, s.shards, s.seconds
        );
    }
}
