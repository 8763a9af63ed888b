#!/usr/bin/env python3
"""Writes the seed headers of fuzz_engine_header: small safetensors headers (no data beyond what they list) whose
metadata holds an engine description, one valid and a few near misses. Run from this folder; standard library only."""
import json
import struct


def header(engine, tensors):
    entries, offset = {}, 0
    for name, dtype, count, size in tensors:
        entries[name] = {"dtype": dtype, "shape": [count], "data_offsets": [offset, offset + size]}
        offset += size
    entries["__metadata__"] = {"fluxnative.engine": json.dumps(engine)}
    text = json.dumps(entries).encode()
    return struct.pack("<Q", len(text)) + text + bytes(offset)


def engine(dtype="BF16", n=32, k=2, version=1):
    return {
        "format_version": version, "builder": "seed", "precision": "bf16",
        "target": {"backend": "cpu", "layout": "cpu-panels32.v1"},
        "components": [{"name": "transformer", "kind": "flux_transformer", "prefix": "transformer/", "config": {},
                        "linears": {"img_in": {"dtype": dtype, "n": n, "k": k, "bias": True}}}],
        "files": [],
    }


# A bf16 [32, 2] layer packs to one panel of 2 * 32 bf16 values (128 bytes).
good = [("transformer/img_in.weight.panels", "BF16", 64, 128), ("transformer/img_in.bias", "F32", 32, 128)]
fp8 = [("transformer/img_in.weight.panels", "F8_E4M3", 64, 64), ("transformer/img_in.weight.scales", "F32", 32, 128)]
seeds = {
    "engine-bf16": header(engine(), good),
    "engine-fp8": header(engine("F8_E4M3"), fp8),
    "engine-wrong-k": header(engine(k=3), good),
    "engine-version-2": header(engine(version=2), good),
    "engine-bad-dtype": header(engine("I8"), good),
}
for name, data in seeds.items():
    with open(name, "wb") as f:
        f.write(data)
