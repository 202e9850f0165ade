//! Conversions spread over processes (issue 5): `--worker K/M` (or the launcher's RANK /
//! WORLD_SIZE, SLURM_PROCID / SLURM_NTASKS) writes a share of the shards into the shared work
//! directory `.OUT.nemoconv-tmp-work`, and `nemoconv finalize OUT` checks that every shard is
//! there before it makes OUT appear. The result must be the bytes of a one-process run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod split;

use crate::builder::{CheckpointBuilder, Files};
use crate::harness::{Run, dir_entries, file_bytes, nemoconv, sha256_dir, shard_files, tempdir};

/// Workers in every spread run here.
const M: usize = 3;
/// Small enough that the test checkpoint needs several shards per worker.
const SHARD_CAP: &str = "500";
/// Launcher variables a worker may read; removed from every child unless a test sets them.
const LAUNCHER_VARS: [&str; 4] = ["RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"];

/// A `nemoconv` child process with no launcher variables but `env`, output captured.
fn command(args: &[OsString], env: &[(&str, String)]) -> (Command, String) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("nemoconv"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in LAUNCHER_VARS {
        cmd.env_remove(var);
    }
    let mut shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for (k, v) in env {
        cmd.env(k, v);
    }
    shown.push("nemoconv".to_string());
    shown.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    (cmd, shown.join(" "))
}

fn spawn(args: &[OsString], env: &[(&str, String)]) -> (Child, String) {
    let (mut cmd, shown) = command(args, env);
    let child = cmd.spawn().expect("start nemoconv");
    (child, shown)
}

fn wait((child, command): (Child, String)) -> Run {
    let output = child.wait_with_output().expect("wait for nemoconv");
    Run {
        command,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One conversion to spread: `SUBCOMMAND OPTIONS... IN OUT`.
struct Job<'a> {
    subcommand: &'a str,
    options: &'a [&'a str],
    input: &'a Path,
}

impl Job<'_> {
    fn args(&self, extra: &[String], out: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![self.subcommand.into()];
        args.extend(self.options.iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args.extend([self.input.into(), out.into()]);
        args
    }

    /// Starts worker `k` of `M` with `--worker`.
    fn start(&self, k: usize, out: &Path) -> (Child, String) {
        spawn(&self.args(&[format!("--worker={k}/{M}")], out), &[])
    }

    /// Runs worker `k` of `M` to its end and checks it succeeded.
    fn run(&self, k: usize, out: &Path) {
        wait(self.start(k, out)).success();
    }

    /// The one-process run of the same conversion.
    fn single(&self, out: &Path) {
        wait(spawn(&self.args(&[], out), &[])).success();
    }
}

fn finalize(out: &Path) -> Run {
    nemoconv(&[OsString::from("finalize"), out.into()])
}

/// The shared work directory of the workers writing `out`.
fn work_dir(out: &Path) -> PathBuf {
    let name = out.file_name().unwrap().to_string_lossy();
    out.with_file_name(format!(".{name}.nemoconv-tmp-work"))
}

/// Asserts that `actual` holds exactly the files of `expected`, byte for byte.
fn assert_same_files(actual: &Path, expected: &Path) {
    let (a, e) = (file_bytes(actual), file_bytes(expected));
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&e),
        "{} and {} hold different files",
        actual.display(),
        expected.display()
    );
    for (rel, bytes) in &a {
        assert!(
            *bytes == e[rel],
            "{} differs from the one-process run",
            actual.join(rel).display()
        );
    }
}

/// The test input: an HF checkpoint large enough for several output shards per worker.
fn hf_input(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    let mut ck = CheckpointBuilder {
        n_experts: 6,
        hidden: 8,
        inter: 4,
        vocab: 32,
        ..CheckpointBuilder::default()
    }
    .build();
    ck.other_files
        .push(("tokenizer.json".to_string(), b"{\"tiny\": true}\n".to_vec()));
    ck.write(&input, Files::Indexed(3));
    input
}

/// Runs `job` as M workers: K=2 alone, then K=1 and K=0 at the same time; then finalize.
fn spread(job: &Job, out: &Path) {
    job.run(2, out);
    let (a, b) = (job.start(1, out), job.start(0, out));
    let (a, b) = (wait(a), wait(b));
    a.success();
    b.success();
    assert!(!out.exists(), "OUT must not appear before finalize");
    assert!(
        work_dir(out).is_dir(),
        "the workers share {}",
        work_dir(out).display()
    );
    let run = finalize(out);
    run.success();
    assert!(
        !work_dir(out).exists(),
        "finalize must consume the work directory"
    );
}

/// Spreads `job` over M workers and checks the result against a one-process run.
fn check_spread_equals_single(job: &Job, tmp: &Path) {
    let single = tmp.join("single");
    job.single(&single);
    let n_shards: usize = std::iter::once(single.clone())
        .chain(
            std::fs::read_dir(&single)
                .unwrap()
                .map(|e| e.unwrap().path()),
        )
        .filter(|p| p.is_dir())
        .map(|d| shard_files(&d).len())
        .sum();
    assert!(
        n_shards >= 2 * M,
        "the test needs at least {} shards, the one-process run wrote {n_shards}",
        2 * M
    );
    let out = tmp.join("out");
    spread(job, &out);
    assert_same_files(&out, &single);
}

#[test]
fn from_hf_workers_in_any_order_then_finalize_equal_one_process() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    check_spread_equals_single(&job, tmp.path());
    // A second finalize finds nothing to do and leaves the output alone.
    let out = tmp.path().join("out");
    let before = sha256_dir(&out);
    let run = finalize(&out);
    run.code(1);
    assert_eq!(sha256_dir(&out), before);
}

#[test]
fn to_hf_workers_in_any_order_then_finalize_equal_one_process() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let internal = tmp.path().join("internal");
    wait(spawn(
        &[
            "from-hf".into(),
            "-q".into(),
            input.clone().into(),
            internal.clone().into(),
        ],
        &[],
    ))
    .success();
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "to-hf",
        options: &options,
        input: &internal,
    };
    check_spread_equals_single(&job, tmp.path());
}

#[test]
fn ep_all_ranks_workers_then_finalize_equal_one_process() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let options = ["-q", "--ep-size", "2", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    check_spread_equals_single(&job, tmp.path());
}

#[test]
fn finalize_with_a_worker_missing_fails_and_writes_no_output() {
    for missing in 0..M {
        let tmp = tempdir();
        let input = hf_input(tmp.path());
        let options = ["-q", "--max-shard-size", SHARD_CAP];
        let job = Job {
            subcommand: "from-hf",
            options: &options,
            input: &input,
        };
        let single = tmp.path().join("single");
        job.single(&single);
        let out = tmp.path().join("out");
        for k in (0..M).filter(|&k| k != missing) {
            job.run(k, &out);
        }
        let run = finalize(&out);
        run.code(1)
            .stderr_has(&work_dir(&out).display().to_string());
        if out.exists() {
            run.fail(&format!(
                "finalize without worker {missing} must not create OUT"
            ));
        }
        assert!(
            work_dir(&out).is_dir(),
            "a failed finalize must keep the workers' shards"
        );
        // The missing worker can still run, and then finalize succeeds.
        job.run(missing, &out);
        finalize(&out).success();
        assert_same_files(&out, &single);
    }
}

#[test]
fn finalize_before_any_worker_fails() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let run = finalize(&out);
    run.code(1).stderr_has(&out.display().to_string());
    assert!(
        dir_entries(tmp.path()).is_empty(),
        "finalize wrote something"
    );
}

/// Runs M workers that take their share (`--worker auto`) from the launcher variables
/// `rank_var`/`size_var`.
fn check_launcher_vars(rank_var: &'static str, size_var: &'static str) {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    let single = tmp.path().join("single");
    job.single(&single);
    let out = tmp.path().join("out");
    let children: Vec<_> = [1, 0, 2]
        .into_iter()
        .map(|k| {
            let env = [(rank_var, k.to_string()), (size_var, M.to_string())];
            spawn(&job.args(&["--worker=auto".to_string()], &out), &env)
        })
        .collect();
    for child in children {
        wait(child).success();
    }
    assert!(
        !out.exists(),
        "workers from {rank_var}/{size_var} must wait for finalize"
    );
    finalize(&out).success();
    assert_same_files(&out, &single);
}

#[test]
fn torchrun_rank_and_world_size_act_like_worker() {
    check_launcher_vars("RANK", "WORLD_SIZE");
}

#[test]
fn slurm_procid_and_ntasks_act_like_worker() {
    check_launcher_vars("SLURM_PROCID", "SLURM_NTASKS");
}

/// Issue 11, item 15: launcher variables left in the environment never split a plain run.
#[test]
fn launcher_variables_alone_leave_a_plain_run_plain() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    let args: Vec<OsString> = vec!["from-hf".into(), input.into(), out.clone().into()];
    let env = [
        ("SLURM_PROCID", "1".to_string()),
        ("SLURM_NTASKS", M.to_string()),
    ];
    let run = wait(spawn(&args, &env));
    run.success().stderr_has("--worker auto");
    crate::harness::assert_valid_output(&out);
}

#[test]
fn worker_auto_without_launcher_variables_is_a_usage_error() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    let args: Vec<OsString> = vec![
        "from-hf".into(),
        "--worker=auto".into(),
        input.into(),
        out.into(),
    ];
    wait(spawn(&args, &[])).code(2).stderr_has("--worker auto");
}

#[test]
fn worker_option_wins_over_launcher_variables() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    let single = tmp.path().join("single");
    job.single(&single);
    let out = tmp.path().join("out");
    for k in 0..M {
        // Every process is told it is worker 0 by the launcher; --worker must decide.
        let env = [("RANK", "0".to_string()), ("WORLD_SIZE", M.to_string())];
        let args = job.args(&[format!("--worker={k}/{M}")], &out);
        wait(spawn(&args, &env)).success();
    }
    finalize(&out).success();
    assert_same_files(&out, &single);
}

#[test]
fn worker_index_not_below_count_is_a_usage_error() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    for bad in ["3/3", "4/3", "0/0", "1", "a/3", "-1/3"] {
        for subcommand in ["from-hf", "to-hf"] {
            let args: Vec<OsString> = vec![
                subcommand.into(),
                format!("--worker={bad}").into(),
                input.clone().into(),
                out.clone().into(),
            ];
            let run = wait(spawn(&args, &[]));
            run.code(2).stderr_has("--worker");
            assert_eq!(
                dir_entries(tmp.path()),
                vec!["in".to_string()],
                "`{}` left something behind",
                run.command
            );
        }
    }
}

#[test]
fn workers_refuse_an_existing_output() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "precious").unwrap();
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    let run = wait(job.start(1, &out));
    run.code(1).stderr_has(&out.display().to_string());
    assert_eq!(dir_entries(&out), vec!["keep.txt".to_string()]);
    assert!(!work_dir(&out).exists(), "a refused worker wrote its share");
}

#[test]
fn finalize_does_not_replace_an_output_that_appeared_meanwhile() {
    // Spread runs never replace an output (there is no --force for workers): an OUT made
    // between the workers and finalize must survive, and the shards stay for a later finalize.
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    let out = tmp.path().join("out");
    for k in 0..M {
        job.run(k, &out);
    }
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "precious").unwrap();
    let run = finalize(&out);
    run.code(1).stderr_has(&out.display().to_string());
    assert_eq!(
        dir_entries(&out),
        vec!["keep.txt".to_string()],
        "finalize replaced an existing output"
    );
    assert!(work_dir(&out).is_dir());
}

#[test]
fn finalize_refuses_shards_written_under_different_options() {
    // Every worker must compute the same plan. Worker 1 run with another expert dtype (F16,
    // same size as BF16, so the same shard names) writes shards of a different checkpoint;
    // finalize must not join them into one output.
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let f16 = ["-q", "--max-shard-size", SHARD_CAP, "--dtype", "f16"];
    for (k, opts) in [(0, &options[..]), (1, &f16[..]), (2, &options[..])] {
        let job = Job {
            subcommand: "from-hf",
            options: opts,
            input: &input,
        };
        job.run(k, &out);
    }
    let run = finalize(&out);
    run.code(1);
    assert!(
        !out.exists(),
        "finalize joined shards of two different plans"
    );
}

/// Issue 11, item 9: after workers ran with mismatched counts, finalize says how to start over,
/// and `finalize --abandon` does it.
#[test]
fn finalize_after_mismatched_counts_says_how_to_start_over() {
    let tmp = tempdir();
    let input = hf_input(tmp.path());
    let out = tmp.path().join("out");
    let options = ["-q", "--max-shard-size", SHARD_CAP];
    let job = Job {
        subcommand: "from-hf",
        options: &options,
        input: &input,
    };
    wait(spawn(&job.args(&["--worker=0/2".to_string()], &out), &[])).success();
    wait(spawn(&job.args(&["--worker=1/3".to_string()], &out), &[])).success();
    let run = finalize(&out);
    run.code(1)
        .stderr_has("nemoconv finalize --abandon")
        .stderr_has(&work_dir(&out).display().to_string());
    nemoconv(&[
        OsString::from("finalize"),
        "--abandon".into(),
        out.clone().into(),
    ])
    .success();
    assert!(
        !work_dir(&out).exists(),
        "--abandon left the work directory"
    );
    for k in 0..2 {
        wait(spawn(&job.args(&[format!("--worker={k}/2")], &out), &[])).success();
    }
    finalize(&out).success();
    let single = tmp.path().join("single");
    job.single(&single);
    assert_same_files(&out, &single);
}
