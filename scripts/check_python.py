#!/usr/bin/env python3
"""Check that nemoconv output directories load with Python's `safetensors` (SPEC section 7).

Usage: check_python.py OUT_DIR [OUT_DIR ...]

For each directory: every *.safetensors shard opens with safetensors.safe_open(framework="numpy"),
its __metadata__ keeps "format": "pt", and every tensor is read (BF16 has no numpy dtype, so its
raw bytes are read and widened to float32 by hand); model.safetensors.index.json's weight_map
lists exactly the tensors the shards hold, each in the shard that holds it, and its
metadata.total_size is the sum of the tensor bytes. Exits 1 naming the first problem of each
directory, 0 when all pass.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "BF16": 2, "F16": 2, "I16": 2, "U16": 2,
    "F32": 4, "I32": 4, "U32": 4,
    "F64": 8, "I64": 8, "U64": 8,
}


class CheckError(Exception):
    """A problem with one output directory."""


def raw_header(path):
    """The JSON header and the byte offset where the data starts, read by hand."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def read_bf16(path, entry, data_start):
    """A BF16 tensor's values as float32, from its raw bytes."""
    start, end = entry["data_offsets"]
    with open(path, "rb") as f:
        f.seek(data_start + start)
        raw = f.read(end - start)
    if len(raw) != end - start:
        raise CheckError(f"{path}: BF16 tensor data is cut short")
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(entry["shape"])


def check_shard(path):
    """Opens and reads every tensor of one shard; returns {name: byte length}."""
    header, data_start = raw_header(path)
    sizes = {}
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != "pt":
            raise CheckError(f'{path}: __metadata__ lacks "format": "pt" (found {metadata!r})')
        for name in f.keys():
            entry = header[name]
            dtype, shape = entry["dtype"], entry["shape"]
            piece = f.get_slice(name)
            if piece.get_dtype() != dtype or list(piece.get_shape()) != shape:
                raise CheckError(f"{path}: tensor {name!r}: safetensors reads {piece.get_dtype()} "
                                 f"{piece.get_shape()}, the header says {dtype} {shape}")
            if dtype == "BF16":
                array = read_bf16(path, entry, data_start)
            else:
                array = f.get_tensor(name)
            if list(array.shape) != shape:
                raise CheckError(f"{path}: tensor {name!r}: read shape {list(array.shape)}, expected {shape}")
            n = 1
            for d in shape:
                n *= d
            sizes[name] = n * DTYPE_BYTES[dtype]
            start, end = entry["data_offsets"]
            if end - start != sizes[name]:
                raise CheckError(f"{path}: tensor {name!r}: {end - start} bytes for {dtype} {shape}")
    return sizes


def check_dir(out):
    """Checks one output directory; returns a one-line summary."""
    shards = sorted(p for p in out.iterdir() if p.suffix == ".safetensors")
    if not shards:
        raise CheckError(f"{out}: no *.safetensors file")
    held = {}
    total = 0
    for shard in shards:
        for name, size in check_shard(shard).items():
            if name in held:
                raise CheckError(f"{shard}: tensor {name!r} is also in {held[name]}")
            held[name] = shard.name
            total += size
    index_path = out / INDEX_FILE
    if not index_path.is_file():
        raise CheckError(f"{index_path}: missing")
    index = json.loads(index_path.read_text())
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckError(f"{index_path}: no weight_map object")
    only_index = sorted(set(weight_map) - set(held))
    only_shards = sorted(set(held) - set(weight_map))
    if only_index or only_shards:
        raise CheckError(f"{index_path}: weight_map lists {only_index} that no shard holds; "
                         f"the shards hold {only_shards} that it does not list")
    wrong = sorted(n for n in held if weight_map[n] != held[n])
    if wrong:
        raise CheckError(f"{index_path}: weight_map names the wrong shard for {wrong}")
    unused = sorted({s.name for s in shards} - set(weight_map.values()))
    if unused:
        raise CheckError(f"{index_path}: shard files {unused} are not in the weight_map")
    total_size = index.get("metadata", {}).get("total_size")
    if total_size != total:
        raise CheckError(f"{index_path}: metadata.total_size is {total_size}, "
                         f"the tensors hold {total} bytes")
    return f"{out}: {len(held)} tensors in {len(shards)} shards, {total} bytes"


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    failed = False
    for arg in argv[1:]:
        out = Path(arg)
        try:
            if not out.is_dir():
                raise CheckError(f"{out}: not a directory")
            print(f"check_python: ok: {check_dir(out)}")
        except CheckError as err:
            print(f"check_python: error: {err}", file=sys.stderr)
            failed = True
        except Exception as err:  # safetensors' own errors, bad JSON, unreadable files
            print(f"check_python: error: {out}: {type(err).__name__}: {err}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
