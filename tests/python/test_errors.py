"""Failures through the Python module: NemoconvError with the binary's message and exit code,
TypeError for unknown keyword arguments before anything runs, and nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import nemoconv
import pytest
from checkpoint import read_output


def test_missing_input_is_error_code_1_naming_it(tmp_path: Path) -> None:
    missing, out = tmp_path / "missing", tmp_path / "out"
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.from_hf(missing, out)
    err = info.value
    assert err.code == 1
    assert err.message.startswith("nemoconv: error: from-hf")
    assert str(missing) in err.message and str(err) == err.message
    assert err.argv[0] == nemoconv.binary() and err.argv[1] == "from-hf"
    assert not out.exists()


def test_bad_option_values_are_usage_errors_code_2(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases: list[tuple[Callable[..., object], dict[str, Any], str]] = [
        (nemoconv.from_hf, {"dtype": "f64"}, "--dtype"),
        (nemoconv.from_hf, {"ep_size": 2, "ep_rank": 2}, "must be below"),
        (nemoconv.from_hf, {"ep_rank": 0}, "--ep-size"),
        (nemoconv.from_hf, {"max_shard_size": "5XB"}, "unknown unit"),
        (nemoconv.from_hf, {"worker": "2/2"}, "K must be below M"),
        (nemoconv.to_hf, {"exclude_regex": "("}, "--exclude-regex"),
        (nemoconv.to_hf, {"hf_prefix": "model."}, "--hf-prefix"),
    ]
    for function, options, needle in cases:
        with pytest.raises(nemoconv.NemoconvError) as info:
            function(golden / "hf", out, **options)
        assert info.value.code == 2, (options, info.value.message)
        assert needle in info.value.message, (options, info.value.message)
        assert not out.exists()


def test_unknown_keyword_arguments_raise_type_error_before_running(
    golden: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(TypeError, match="ep_sise"):
        nemoconv.from_hf(golden / "hf", out, ep_sise=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="exclude_regex"):
        nemoconv.from_hf(golden / "hf", out, exclude_regex="lm_head")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="dtype"):
        nemoconv.to_hf(golden / "hf", out, dtype="f32")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="json"):
        nemoconv.inspect(golden / "hf", json=True)  # type: ignore[call-arg]
    assert not out.exists()


def test_an_existing_output_is_refused_without_force(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.from_hf(golden / "hf", out)
    assert info.value.code == 1 and "--force" in info.value.message
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unreadable_inputs_of_inspect_and_verify(golden: Path, tmp_path: Path) -> None:
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.inspect(tmp_path / "missing")
    assert info.value.code == 1 and "missing" in info.value.message
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.verify(golden / "hf", tmp_path / "missing")
    assert info.value.code == 2 and "missing" in info.value.message


def test_finalize_before_the_workers_names_what_is_missing(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    nemoconv.from_hf(golden / "hf", out, max_shard_size="4KB", worker="0/2")
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.finalize(out)
    assert info.value.code == 1 and "worker" in info.value.message
    assert not out.exists()


def test_values_and_paths_starting_with_a_dash_stay_values(
    golden: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    nemoconv.from_hf(golden / "hf", "-internal")
    report = nemoconv.to_hf("-internal", "-hf", exclude_regex="-x")
    assert report["tensors"] == 55
    assert len(read_output(tmp_path / "-hf")) == 55
