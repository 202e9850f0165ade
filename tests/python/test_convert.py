"""Conversions through the Python module: the golden case both ways, expert-parallel slices,
workers with finalize, dry runs and shard caps; outputs compared tensor by tensor."""

from __future__ import annotations

import json
from pathlib import Path

import nemoconv
import pytest
from checkpoint import assert_same_tensors, read_checkpoint, read_output, write_moe_checkpoint


def test_from_hf_of_golden_equals_reference_internal(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "internal"
    report = nemoconv.from_hf(golden / "hf", out)
    assert report["command"] == "from-hf"
    assert report["inputs"] == [str(golden / "hf")]
    assert report["output"] == str(out)
    assert (report["tensors"], report["bytes"], report["shards"]) == (43, 18208, 1)
    assert report["dropped"] == []
    assert_same_tensors(read_output(out), read_checkpoint(golden / "internal"))
    assert (out / "config.json").read_bytes() == (golden / "hf" / "config.json").read_bytes()


def test_to_hf_of_our_internal_equals_reference_roundtrip(golden: Path, tmp_path: Path) -> None:
    internal, out = str(tmp_path / "internal"), str(tmp_path / "hf")
    nemoconv.from_hf(str(golden / "hf"), internal)
    report = nemoconv.to_hf(internal, out)
    assert (report["command"], report["tensors"], report["bytes"]) == ("to-hf", 55, 18208)
    assert_same_tensors(read_output(Path(out)), read_checkpoint(golden / "roundtrip_hf"))


def test_exclude_regex_equals_reference_excl_sel(
    golden: Path, tmp_path: Path, excl_sel_regex: str
) -> None:
    nemoconv.from_hf(golden / "hf", tmp_path / "internal")
    nemoconv.to_hf(tmp_path / "internal", tmp_path / "hf", exclude_regex=excl_sel_regex)
    expected = read_checkpoint(golden / "roundtrip_hf_excl_sel")
    assert_same_tensors(read_output(tmp_path / "hf"), expected)


def test_ep_slices_equal_reference_and_merge_back(golden: Path, tmp_path: Path) -> None:
    nemoconv.from_hf(golden / "hf", tmp_path / "r1", ep_size=2, ep_rank=1)
    assert_same_tensors(read_output(tmp_path / "r1"), read_checkpoint(golden / "internal_ep2_r1"))
    nemoconv.from_hf(golden / "hf", tmp_path / "slices", ep_size=2)
    slices = sorted((tmp_path / "slices").glob("rank-*"))
    assert [s.name for s in slices] == ["rank-00000-of-00002", "rank-00001-of-00002"]
    nemoconv.to_hf(slices, tmp_path / "merged")
    assert_same_tensors(read_output(tmp_path / "merged"), read_checkpoint(golden / "roundtrip_hf"))


@pytest.mark.parametrize("split", [None, "bytes", "shards"])
def test_workers_then_finalize_give_the_bytes_of_one_run(
    golden: Path, tmp_path: Path, split: nemoconv.Split | None
) -> None:
    one, spread = tmp_path / "one", tmp_path / "spread"
    nemoconv.from_hf(golden / "hf", one, max_shard_size="4KB")
    for k in (0, 1):
        nemoconv.from_hf(golden / "hf", spread, max_shard_size="4KB", worker=f"{k}/2", split=split)
        assert not spread.exists(), "a worker's output is visible before finalize"
    nemoconv.finalize(spread)
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in spread.iterdir())
    assert len([f for f in files if f.endswith(".safetensors")]) > 1
    for name in files:
        assert (one / name).read_bytes() == (spread / name).read_bytes(), name


def test_dry_run_returns_the_plan_and_writes_nothing(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "internal"
    plan = nemoconv.from_hf(golden / "hf", out, dry_run=True)
    assert not out.exists()
    [target] = plan["outputs"]
    names = sorted(t["name"] for t in target["tensors"])
    assert names == sorted(read_checkpoint(golden / "internal"))
    assert target["bytes"] == 18208


def test_shard_cap_in_bytes_and_threads(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "internal"
    report = nemoconv.from_hf(golden / "hf", out, max_shard_size=4000, threads=1, dtype="bf16")
    assert report["shards"] == len(list(out.glob("*.safetensors"))) > 1
    assert_same_tensors(read_output(out), read_checkpoint(golden / "internal"))


def test_force_replaces_an_existing_output(golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    nemoconv.from_hf(golden / "hf", out)
    nemoconv.to_hf(out, tmp_path / "hf")
    nemoconv.from_hf(tmp_path / "hf", out, force=True)
    assert_same_tensors(read_output(out), read_checkpoint(golden / "internal"))


def test_lenient_drops_are_in_the_report_and_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    write_moe_checkpoint(src, n_layers=1, n_experts=2, inter=8, hidden=16)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "n_routed_experts": 1}))
    with pytest.raises(nemoconv.NemoconvError) as info:
        nemoconv.from_hf(src, tmp_path / "strict")
    assert info.value.code == 1 and "--lenient" in info.value.message
    report = nemoconv.from_hf(src, tmp_path / "lenient", lenient=True)
    prefix = "backbone.layers.0.mixer.experts.1"
    assert sorted(report["dropped"]) == [f"{prefix}.down_proj.weight", f"{prefix}.up_proj.weight"]
    printed = "".join(f'nemoconv: dropped "{name}"\n' for name in report["dropped"])
    assert capsys.readouterr().err == printed
