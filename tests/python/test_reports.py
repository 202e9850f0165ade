"""inspect and verify through the Python module: their `--json` reports as dicts."""

from __future__ import annotations

from pathlib import Path

import nemoconv


def test_inspect_describes_the_golden_hf_checkpoint(golden: Path) -> None:
    report = nemoconv.inspect(golden / "hf")
    assert report["schema"] == 1
    assert (report["layout"], report["pattern"], report["n_routed_experts"]) == ("hf", "ME*E-M", 4)
    assert (report["n_tensors"], report["payload_bytes"]) == (55, 18208)
    assert report["dtypes"] == {"BF16": 47, "F32": 8}
    assert report["problems"] == []


def test_verify_of_a_round_trip_is_identical(golden: Path, tmp_path: Path) -> None:
    nemoconv.from_hf(golden / "hf", tmp_path / "internal")
    nemoconv.to_hf(tmp_path / "internal", tmp_path / "hf")
    report = nemoconv.verify(golden / "hf", tmp_path / "hf", allow=["fp32-params"])
    assert report["identical"] is True
    assert (report["n_compared"], report["n_differences"]) == (55, 0)


def test_verify_of_different_checkpoints_returns_the_differences(golden: Path) -> None:
    report = nemoconv.verify(golden / "hf", golden / "roundtrip_hf_excl_sel", max_diffs=1)
    assert report["identical"] is False
    assert report["n_differences"] > 1
    assert len(report["differences"]) == 1
    assert report["counts"]["only_in_a"] > 0


def test_verify_takes_one_allow_rule_as_a_string(golden: Path) -> None:
    report = nemoconv.verify(golden / "roundtrip_hf", golden / "roundtrip_hf", allow="expert-dtype")
    assert report["identical"] is True
