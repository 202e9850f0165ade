"""nemoconv from Python: convert NemotronV3 checkpoints between the HF and NeMo Automodel layouts.

Each function runs the `nemoconv` command installed with this package, with `--json`, and
returns the JSON report as a dict. Keyword arguments are the command's long flags with `_`
for `-` (`exclude_regex=` is `--exclude-regex`); the binary validates their values. A failed
run raises `NemoconvError` with the message and the exit code of the command.

    import nemoconv
    report = nemoconv.from_hf("hf/", "internal/", dtype="bf16")
    print(report["tensors"], report["bytes"])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, Literal, Union

from ._process import NemoconvError, binary, run

__all__ = [
    "NemoconvError",
    "binary",
    "consolidate",
    "finalize",
    "from_hf",
    "inspect",
    "to_hf",
    "verify",
]

__version__ = version("nemoconv")

StrPath = Union[str, "os.PathLike[str]"]
"""A path: a string or a `pathlib.Path`."""
Report = dict[str, Any]
"""A report: the JSON object the command prints with `--json`."""
Dtype = Literal["bf16", "f16", "f32"]
"""The values of `--dtype`."""

Split = Literal["bytes", "shards"]
"""The values of `--split`: how workers (`worker=`) divide a run."""


def from_hf(
    src: StrPath,
    dst: StrPath,
    *,
    dtype: Dtype | None = None,
    lenient: bool = False,
    dequantize: bool = False,
    ep_size: int | None = None,
    ep_rank: int | None = None,
    max_shard_size: int | str | None = None,
    threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    worker: str | None = None,
    split: Split | None = None,
) -> Report:
    """`nemoconv from-hf SRC DST`: HF layout to internal layout.

    Returns the summary (`tensors`, `bytes`, `shards`, `seconds`, `dropped`, ...), or the plan
    with `dry_run=True`. Raises NemoconvError (code 1 bad input, 2 bad option value).
    """
    flags = _flags(
        dtype=dtype,
        lenient=lenient,
        dequantize=dequantize,
        ep_size=ep_size,
        ep_rank=ep_rank,
        max_shard_size=max_shard_size,
        threads=threads,
        force=force,
        dry_run=dry_run,
        worker=worker,
        split=split,
    )
    return _report(["from-hf", "--json", *flags, "--", os.fspath(src), os.fspath(dst)])


def to_hf(
    src: StrPath | Sequence[StrPath],
    dst: StrPath,
    *,
    exclude_regex: str | None = None,
    hf_prefix: Literal["backbone", "model"] | None = None,
    max_shard_size: int | str | None = None,
    threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    worker: str | None = None,
    split: Split | None = None,
) -> Report:
    """`nemoconv to-hf SRC... DST`: internal layout to HF layout.

    `src` is one directory or a list of expert-parallel slices of one checkpoint. Returns the
    summary, or the plan with `dry_run=True`. Raises NemoconvError.
    """
    sources = [src] if isinstance(src, (str, os.PathLike)) else list(src)
    flags = _flags(
        exclude_regex=exclude_regex,
        hf_prefix=hf_prefix,
        max_shard_size=max_shard_size,
        threads=threads,
        force=force,
        dry_run=dry_run,
        worker=worker,
        split=split,
    )
    paths = [os.fspath(p) for p in [*sources, dst]]
    return _report(["to-hf", "--json", *flags, "--", *paths])


def consolidate(
    src: StrPath,
    dst: StrPath,
    *,
    dtype: Dtype | None = None,
    lenient: bool = False,
    max_shard_size: int | str | None = None,
    threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    worker: str | None = None,
    split: Split | None = None,
) -> Report:
    """`nemoconv consolidate SRC DST`: NeMo Automodel's sharded training save to HF layout.

    Returns the summary, or the plan with `dry_run=True`. Raises NemoconvError, with code 2
    when the installed binary has no `consolidate` command or does not take one of the flags.
    """
    flags = _flags(
        dtype=dtype,
        lenient=lenient,
        max_shard_size=max_shard_size,
        threads=threads,
        force=force,
        dry_run=dry_run,
        worker=worker,
        split=split,
    )
    return _report(["consolidate", "--json", *flags, "--", os.fspath(src), os.fspath(dst)])


def finalize(out: StrPath) -> None:
    """`nemoconv finalize OUT`: publish the output of a run spread over workers (`worker=`).

    Raises NemoconvError naming what is missing when a worker has not finished.
    """
    run(["finalize", "--", os.fspath(out)])


def inspect(path: StrPath) -> Report:
    """`nemoconv inspect --json PATH`: layout, pattern, experts, dtypes, shards and problems.

    Problems are listed in the report, not raised. Raises NemoconvError (code 1) when the
    checkpoint cannot be read.
    """
    return _report(["inspect", "--json", "--", os.fspath(path)])


def verify(
    a: StrPath,
    b: StrPath,
    *,
    allow: str | Sequence[str] = (),
    max_diffs: int | None = None,
) -> Report:
    """`nemoconv verify --json A B`: compare two checkpoints tensor by tensor.

    Returns the report whether or not they differ: look at `report["identical"]`. `allow`
    takes `"fp32-params"`, `"expert-dtype"`, `"embedding-name"`. Raises NemoconvError (code 2)
    when an input cannot be read.
    """
    rules = [allow] if isinstance(allow, str) else list(allow)
    flags = _flags(allow=",".join(rules) or None, max_diffs=max_diffs)
    args = ["verify", "--json", *flags, "--", os.fspath(a), os.fspath(b)]
    return _report(args, ok_codes=(0, 1))


def _flags(**options: Any) -> list[str]:
    """Command-line flags for the options that are set: `True` gives `--name`, a value
    `--name=value` (so a value starting with `-` stays a value), `None` and `False` nothing."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags.append(f"{flag}={value}")
    return flags


def _report(args: list[str], ok_codes: Sequence[int] = (0,)) -> Report:
    """Runs a command that prints one JSON object and returns it."""
    report: Report = json.loads(run(args, ok_codes))
    return report
