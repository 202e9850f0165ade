"""Runs the `nemoconv` binary that the wheel installed, and turns its outcome into Python.

The module does no conversion itself: every call starts the same binary as the command line,
so exit codes, signals and the atomic output behave exactly as documented for the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

_EXE = "nemoconv.exe" if os.name == "nt" else "nemoconv"


class NemoconvError(Exception):
    """A run of nemoconv that failed: its message (stderr) and its exit code.

    `code` is 1 for bad input or I/O errors, 2 for usage errors (a bad option value) and for
    `verify` when an input cannot be read, 130 after SIGINT/SIGTERM, and minus the signal
    number when the process was killed. `argv` is the command that was run.
    """

    def __init__(self, message: str, code: int, argv: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.argv = list(argv)


def binary() -> str:
    """The path of the `nemoconv` executable installed with this package.

    Looked up where pip puts scripts for this interpreter (the environment, the user scheme,
    or `bin/` beside a `pip install --target` directory), never on PATH, so the module always
    runs the binary of its own wheel.

    Raises FileNotFoundError when it is not there (a broken install).
    """
    dirs = [sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    dirs.append(str(Path(__file__).resolve().parent.parent / "bin"))
    for d in dirs:
        candidate = Path(d) / _EXE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(
        f"the nemoconv executable is not installed beside the nemoconv module "
        f"(looked in {', '.join(dirs)}); reinstall it: pip install --force-reinstall nemoconv"
    )


def run(args: Sequence[str], ok_codes: Sequence[int] = (0,)) -> str:
    """Runs `nemoconv ARGS` and returns its stdout; raises NemoconvError for other exit codes.

    stderr is captured: on failure it becomes the error's message; on success it is copied to
    `sys.stderr` (the `--lenient` drop list, warnings). KeyboardInterrupt is forwarded to the
    child as SIGINT and re-raised only once the child has cleaned up and exited.
    """
    argv = [binary(), *args]
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = child.communicate()
    except KeyboardInterrupt:
        _interrupt(child)
        raise
    errors = stderr.decode("utf-8", "replace")
    code = child.returncode
    if code not in ok_codes:
        raise NemoconvError(_message(errors, code), code, argv)
    if errors:
        sys.stderr.write(errors)
    return stdout.decode("utf-8")


def _interrupt(child: subprocess.Popen[bytes]) -> None:
    """Sends SIGINT (again at each further Ctrl-C) and waits until the child has exited.

    A Ctrl-C at a terminal reaches the child on its own; a KeyboardInterrupt raised any other
    way (a notebook's interrupt, a signal sent to Python alone) would otherwise leave it running.
    nemoconv removes its temporary output on SIGINT, so waiting is short and leaves nothing.
    """
    while True:
        child.send_signal(signal.SIGINT)
        try:
            child.communicate()
            return
        except KeyboardInterrupt:
            continue


def _message(stderr: str, code: int) -> str:
    """The error message: the binary's stderr, or what happened when it printed nothing."""
    text = stderr.strip()
    if code < 0:
        return f"nemoconv was killed by signal {-code}" + (f": {text}" if text else "")
    return text or f"nemoconv exited with code {code}"
