"""The `nemoconv` command the wheel installs: the golden case both ways, `--json`, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nemoconv
from checkpoint import assert_same_tensors, read_checkpoint, read_output


def run(command: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """Runs the installed command with `args`, capturing stdout and stderr."""
    return subprocess.run(
        [str(command), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_command_converts_the_golden_case_both_ways(
    golden: Path, command: Path, tmp_path: Path
) -> None:
    internal, hf = tmp_path / "internal", tmp_path / "hf"
    done = run(command, "from-hf", "--json", golden / "hf", internal)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tensors"] == 43
    assert_same_tensors(read_output(internal), read_checkpoint(golden / "internal"))
    done = run(command, "to-hf", internal, hf)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("nemoconv: wrote 55 tensors, 18208 bytes in 1 shard")
    assert_same_tensors(read_output(hf), read_checkpoint(golden / "roundtrip_hf"))


def test_command_exit_codes(golden: Path, command: Path, tmp_path: Path) -> None:
    missing = run(command, "from-hf", tmp_path / "missing", tmp_path / "out")
    assert missing.returncode == 1
    assert missing.stderr.startswith("nemoconv: error: ") and "missing" in missing.stderr
    assert (
        run(command, "from-hf", "--dtype", "f64", golden / "hf", tmp_path / "out").returncode == 2
    )
    assert run(command, "verify", golden / "roundtrip_hf", golden / "roundtrip_hf").returncode == 0
    assert run(command, "verify", golden / "hf", golden / "internal").returncode == 1
    assert run(command, "verify", golden / "hf", tmp_path / "missing").returncode == 2
    assert not (tmp_path / "out").exists()


def test_command_is_the_binary_the_module_runs(command: Path) -> None:
    assert nemoconv.binary() == str(command)
    version = run(command, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"nemoconv {nemoconv.__version__}"
