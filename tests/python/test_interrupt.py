"""Ctrl-C in Python stops the run and cleans up: the module forwards KeyboardInterrupt to
nemoconv as SIGINT and re-raises it only once nemoconv has removed its temporary output.

The interrupt goes to the Python process alone (as a notebook's interrupt does), so nemoconv
gets SIGINT only if the module forwards it. To make the order certain, the test stops nemoconv
(SIGSTOP) once it is writing, interrupts Python, waits until a SIGINT is pending on the stopped
nemoconv, and only then lets it go on. Linux only: it reads /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from checkpoint import write_moe_checkpoint

T = TypeVar("T")
# Exits 42 on KeyboardInterrupt once nemoconv has been waited for (no child left), 43 if not.
DRIVER = """
import os, signal, sys
import nemoconv
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    nemoconv.from_hf(sys.argv[1], sys.argv[2], threads=1, max_shard_size="1MB")
except KeyboardInterrupt:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        sys.exit(42)
    sys.exit(43)
"""
SIGINT_MASK = 1 << (signal.SIGINT - 1)
TIMEOUT_S = 60.0


def wait_for(what: str, probe: Callable[[], T | None]) -> T:
    """Polls `probe` until it returns something other than None or False."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = probe()
        if found is not None and found is not False:
            return found
        time.sleep(0.001)
    raise AssertionError(f"timed out after {TIMEOUT_S} s waiting for {what}")


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict; empty once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def writing_pid(work: Path, driver: subprocess.Popen[bytes]) -> int | None:
    """The pid of the nemoconv run once its temporary output holds a shard."""
    assert driver.poll() is None, (
        f"Python ended before the test saw nemoconv writing: {driver.communicate()}"
    )
    # The run's temporary directory is `.out.nemoconv-tmp-PID`; its lock `.out.nemoconv-tmp-lock`
    # is a file beside it.
    for tmp in work.glob(".out.nemoconv-tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        try:
            if pid.isdigit() and tmp.is_dir() and any(tmp.iterdir()):
                return int(pid)
        except FileNotFoundError:
            pass
    return None


def is_stopped(pid: int) -> bool:
    """True once `pid` is stopped; fails if it already finished."""
    state = status(pid).get("State", "gone")
    assert not state.startswith(("Z", "gone")), (
        "nemoconv finished before the test could stop it; make the checkpoint bigger"
    )
    return state.startswith("T")


def sigint_pending(pid: int) -> bool:
    """True once a SIGINT waits for the stopped `pid`."""
    fields = status(pid)
    return any(int(fields.get(k, "0"), 16) & SIGINT_MASK for k in ("SigPnd", "ShdPnd"))


def test_keyboard_interrupt_stops_nemoconv_and_cleans_up(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    # 64 MiB into 32 shards of one merged tensor each, one thread: about 0.2 s of writing.
    write_moe_checkpoint(src, n_layers=16, n_experts=2, inter=256, hidden=1024)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(src), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child = None
    try:
        child = wait_for("nemoconv to write", lambda: writing_pid(tmp_path, driver))
        os.kill(child, signal.SIGSTOP)
        wait_for("nemoconv to stop", lambda: is_stopped(child))
        os.kill(driver.pid, signal.SIGINT)
        wait_for("the module to forward SIGINT to nemoconv", lambda: sigint_pending(child))
        os.kill(child, signal.SIGCONT)
        _, stderr = driver.communicate(timeout=TIMEOUT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if child is not None and status(child).get("Name") == "nemoconv":
            os.kill(child, signal.SIGKILL)
    assert driver.returncode == 42, stderr.decode()
    assert not out.exists(), "an output appeared after the interrupt"
    assert list(tmp_path.glob(".out.nemoconv-tmp-*")) == [], "the temporary output was left"
