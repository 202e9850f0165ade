"""The installed distribution: metadata from Cargo.toml, type information, the module's place."""

from __future__ import annotations

from importlib.metadata import metadata
from pathlib import Path

import nemoconv
import tomllib
from conftest import REPO


def test_metadata_matches_cargo_toml() -> None:
    package = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
    meta = metadata("nemoconv")
    assert meta["Name"] == package["name"]
    assert meta["Version"] == package["version"] == nemoconv.__version__
    assert meta["Summary"] == package["description"]
    assert meta["License-Expression"] == package["license"]


def test_the_installed_package_is_typed_and_not_the_source_tree() -> None:
    installed = Path(nemoconv.__file__).resolve().parent
    assert REPO not in installed.parents, f"{installed}: tests must run on the installed wheel"
    assert (installed / "py.typed").is_file()
