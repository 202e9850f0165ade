"""Fixtures of the Python suite: the golden case and the `nemoconv` command installed with the
wheel (the suite runs in the environment the wheel was installed into, never on the sources)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "fixtures" / "golden" / "tiny"


@pytest.fixture
def golden() -> Path:
    """`fixtures/golden/tiny`: the HF input and the reference adapter's outputs."""
    assert (GOLDEN / "hf" / "config.json").is_file(), f"missing fixture {GOLDEN}"
    return GOLDEN


@pytest.fixture
def command() -> Path:
    """The `nemoconv` command that `pip install` put in this environment's scripts directory."""
    path = Path(sysconfig.get_path("scripts")) / "nemoconv"
    assert path.is_file(), f"{path}: the wheel did not install the nemoconv command"
    return path


@pytest.fixture
def excl_sel_regex(golden: Path) -> str:
    """The exclude regex the reference was given for `roundtrip_hf_excl_sel`."""
    manifest = json.loads((golden / "manifest.json").read_text())
    return str(manifest["exclude_key_regex"]["roundtrip_hf_excl_sel"]["regex"])
