"""Reading and writing safetensors checkpoints for the tests, with Python's `safetensors` (numpy).

Tensors are compared as (dtype, shape, bytes). numpy has no BF16, so bytes are read from the
header offsets; for every dtype numpy does know, `safe_open(..., framework="numpy")` must give
the same bytes, so the files are checked by the library users load them with.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

INDEX_FILE = "model.safetensors.index.json"
Tensor = tuple[str, tuple[int, ...], bytes]
"""A tensor as the tests compare it: dtype, shape, bytes."""
NUMPY_DTYPES = {"F16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}


def read_shard(path: Path) -> dict[str, Tensor]:
    """Every tensor of one *.safetensors file; fails unless safetensors opens it and agrees."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    tensors = {}
    with safe_open(str(path), framework="numpy") as st:
        assert sorted(st.keys()) == sorted(header), f"{path}: safetensors lists other names"
        for name in st.keys():
            view = st.get_slice(name)
            start, end = header[name]["data_offsets"]
            raw = data[start:end]
            assert len(raw) == end - start, f"{path}: tensor {name!r} is cut short"
            if view.get_dtype() in NUMPY_DTYPES:
                assert st.get_tensor(name).tobytes() == raw, f"{path}: {name!r} reads differently"
            tensors[name] = (view.get_dtype(), tuple(view.get_shape()), raw)
    return tensors


def read_checkpoint(directory: Path) -> dict[str, Tensor]:
    """Every tensor of every shard of a checkpoint directory; a name in two shards fails."""
    tensors: dict[str, Tensor] = {}
    shards = sorted(Path(directory).glob("*.safetensors"))
    assert shards, f"{directory}: no *.safetensors"
    for shard in shards:
        for name, tensor in read_shard(shard).items():
            assert name not in tensors, f"{directory}: tensor {name!r} is in two shards"
            tensors[name] = tensor
    return tensors


def read_output(directory: Path) -> dict[str, Tensor]:
    """The tensors of a nemoconv output, after checking its index and each shard's metadata."""
    directory = Path(directory)
    index = json.loads((directory / INDEX_FILE).read_text())
    tensors: dict[str, Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as st:
            assert (st.metadata() or {}).get("format") == "pt", f"{shard}: format is not pt"
        found = read_shard(shard)
        assert {n: shard.name for n in found}.items() <= index["weight_map"].items(), shard
        tensors.update(found)
    assert sorted(index["weight_map"]) == sorted(tensors), f"{directory}: index and shards differ"
    total = sum(len(raw) for _, _, raw in tensors.values())
    assert index["metadata"]["total_size"] == total, f"{directory}: wrong total_size"
    return tensors


def assert_same_tensors(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Names, dtypes, shapes and bytes equal; the message names what differs."""
    only_actual = sorted(set(actual) - set(expected))
    only_expected = sorted(set(expected) - set(actual))
    assert not only_actual and not only_expected, (
        f"names differ: only in actual {only_actual[:5]}, only in expected {only_expected[:5]}"
    )
    for name in sorted(expected):
        (a_dtype, a_shape, a_raw), (e_dtype, e_shape, e_raw) = actual[name], expected[name]
        assert (a_dtype, a_shape) == (e_dtype, e_shape), (
            f"{name!r}: {a_dtype} {a_shape} != {e_dtype} {e_shape}"
        )
        assert a_raw == e_raw, f"{name!r}: bytes differ"


def write_moe_checkpoint(
    directory: Path, n_layers: int, n_experts: int, inter: int, hidden: int
) -> int:
    """An HF checkpoint of MoE layers of F32 experts (for runs long enough to interrupt);
    returns its payload bytes."""
    directory.mkdir(parents=True)
    config = {
        "model_type": "nemotron_h",
        "hybrid_override_pattern": "E" * n_layers,
        "n_routed_experts": n_experts,
        "moe_intermediate_size": inter,
        "hidden_size": hidden,
        "torch_dtype": "float32",
        "mlp_bias": False,
    }
    (directory / "config.json").write_text(json.dumps(config))
    up = np.arange(inter * hidden, dtype=np.float32).reshape(inter, hidden)
    down = np.ascontiguousarray(up.T)
    tensors = {}
    for layer in range(n_layers):
        for e in range(n_experts):
            prefix = f"backbone.layers.{layer}.mixer.experts.{e}"
            tensors[f"{prefix}.up_proj.weight"] = up + e
            tensors[f"{prefix}.down_proj.weight"] = down + layer
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.nbytes for t in tensors.values())
