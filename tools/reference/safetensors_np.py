"""Minimal safetensors reader and writer in pure Python + NumPy.

Written from the format description (FluxNative docs/flux-model.md §8.0): an 8-byte little-endian u64 header
length N, N bytes of UTF-8 JSON mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the first byte after the header) plus an optional "__metadata__" object of
strings, then the raw little-endian, row-major data.

Reading returns NumPy arrays. Dtypes NumPy has natively come back as that dtype; the others are decoded
to float32 (exactly: every BF16 / F8 value is representable in float32):

* BF16 -> float32 by shifting the 16 bits into the top half of a 32-bit word.
* F8_E4M3 (E4M3FN: 1 sign, 4 exponent, 3 mantissa bits, bias 7, no infinity, S.1111.111 = NaN,
  max 448) and F8_E5M2 (1-5-2, bias 15, IEEE-like) via 256-entry decode tables built from those
  definitions.

A sharded checkpoint is read through its `*.safetensors.index.json` ("weight_map": name -> shard file).

No dependency beyond the standard library and NumPy.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "read_header",
    "load_file",
    "load",
    "save_file",
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
    "F8_E4M3_TABLE",
    "F8_E5M2_TABLE",
]

# dtypes NumPy stores directly (little-endian explicitly).
_NATIVE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# Element sizes of the dtypes decoded by hand.
_DECODED_SIZE = {"BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}

_MAX_HEADER = 100 * 1024 * 1024


def _build_f8_table(exp_bits: int, man_bits: int, bias: int, ieee_special: bool) -> np.ndarray:
    """Decode table for an 8-bit float 1-exp_bits-man_bits with the given bias.

    ieee_special=False: E4M3FN rules (no infinities; only S.1111.111 is NaN).
    ieee_special=True: IEEE rules (all-ones exponent: mantissa 0 = inf, else NaN).
    """
    table = np.empty(256, dtype=np.float32)
    exp_max = (1 << exp_bits) - 1
    man_max = (1 << man_bits) - 1
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> man_bits) & exp_max
        m = code & man_max
        if ieee_special and e == exp_max:
            table[code] = sign * np.inf if m == 0 else np.nan
            continue
        if not ieee_special and e == exp_max and m == man_max:
            table[code] = np.nan
            continue
        if e == 0:  # subnormal
            value = (m / (1 << man_bits)) * 2.0 ** (1 - bias)
        else:
            value = (1.0 + m / (1 << man_bits)) * 2.0 ** (e - bias)
        table[code] = sign * value
    return table


F8_E4M3_TABLE = _build_f8_table(4, 3, 7, ieee_special=False)
F8_E5M2_TABLE = _build_f8_table(5, 2, 15, ieee_special=True)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bits, round-to-nearest-even; NaN stays a (quiet) NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint64(16)).astype(np.uint16)) | np.uint16(0x0040)
    return out


def read_header(path: str) -> Tuple[dict, int]:
    """Returns (header dict including "__metadata__" if present, byte offset of the data section)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: truncated (no 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise ValueError(f"{path}: header length {n} is implausible")
        text = f.read(n)
        if len(text) != n:
            raise ValueError(f"{path}: truncated header")
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    return header, 8 + n


def _decode(name: str, dtype: str, shape, buf: bytes, path: str) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if dtype in _NATIVE:
        dt = _NATIVE[dtype]
        if len(buf) != count * dt.itemsize:
            raise ValueError(f"{path}: tensor {name}: {len(buf)} bytes for {dtype}{list(shape)}")
        arr = np.frombuffer(buf, dtype=dt).astype(dt.newbyteorder("="), copy=True)
    elif dtype == "BF16":
        if len(buf) != count * 2:
            raise ValueError(f"{path}: tensor {name}: {len(buf)} bytes for BF16{list(shape)}")
        arr = bf16_bits_to_f32(np.frombuffer(buf, dtype="<u2"))
    elif dtype == "F8_E4M3":
        if len(buf) != count:
            raise ValueError(f"{path}: tensor {name}: {len(buf)} bytes for F8_E4M3{list(shape)}")
        arr = F8_E4M3_TABLE[np.frombuffer(buf, dtype=np.uint8)]
    elif dtype == "F8_E5M2":
        if len(buf) != count:
            raise ValueError(f"{path}: tensor {name}: {len(buf)} bytes for F8_E5M2{list(shape)}")
        arr = F8_E5M2_TABLE[np.frombuffer(buf, dtype=np.uint8)]
    else:
        raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
    return arr.reshape(tuple(int(s) for s in shape))


def load_file(path: str, names: Optional[Iterable[str]] = None,
              with_dtypes: bool = False):
    """Loads one .safetensors file.

    Returns (tensors, metadata) — or (tensors, metadata, stored_dtypes) with with_dtypes=True —
    where tensors maps name -> np.ndarray and metadata is the "__metadata__" dict ({} if absent).
    """
    header, data_start = read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    wanted = None if names is None else set(names)
    file_size = os.path.getsize(path)
    tensors: Dict[str, np.ndarray] = {}
    dtypes: Dict[str, str] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if wanted is not None and name not in wanted:
                continue
            begin, end = (int(v) for v in info["data_offsets"])
            if not (0 <= begin <= end and data_start + end <= file_size):
                raise ValueError(f"{path}: tensor {name}: data_offsets {begin},{end} outside the file")
            f.seek(data_start + begin)
            buf = f.read(end - begin)
            tensors[name] = _decode(name, info["dtype"], info["shape"], buf, path)
            dtypes[name] = info["dtype"]
    if with_dtypes:
        return tensors, metadata, dtypes
    return tensors, metadata


def load(path: str, with_dtypes: bool = False):
    """Loads a checkpoint: a .safetensors file, an *.safetensors.index.json, or a folder.

    A folder is resolved as: exactly one *.safetensors.index.json -> sharded; else exactly one
    *.safetensors file. Returns like load_file; for sharded checkpoints the metadata is the index's
    "metadata" merged with each shard's "__metadata__" (first shard wins on conflicts).
    """
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        indexes = [e for e in entries if e.endswith(".safetensors.index.json")]
        files = [e for e in entries if e.endswith(".safetensors")]
        if len(indexes) == 1:
            path = os.path.join(path, indexes[0])
        elif len(indexes) > 1:
            raise ValueError(f"{path}: several index files: {indexes}")
        elif len(files) == 1:
            path = os.path.join(path, files[0])
        else:
            raise ValueError(f"{path}: expected one .safetensors file or one index, found {files}")
    if path.endswith(".index.json"):
        with open(path, "r", encoding="utf-8") as f:
            index = json.load(f)
        weight_map: Mapping[str, str] = index["weight_map"]
        folder = os.path.dirname(path)
        by_shard: Dict[str, list] = {}
        for name, shard in weight_map.items():
            by_shard.setdefault(shard, []).append(name)
        tensors: Dict[str, np.ndarray] = {}
        dtypes: Dict[str, str] = {}
        metadata: Dict[str, str] = {}
        for shard in sorted(by_shard):
            t, m, d = load_file(os.path.join(folder, shard), by_shard[shard], with_dtypes=True)
            missing = set(by_shard[shard]) - set(t)
            if missing:
                raise ValueError(f"{shard}: tensors named by the index are missing: {sorted(missing)[:5]}")
            tensors.update(t)
            dtypes.update(d)
            for k, v in m.items():
                metadata.setdefault(k, v)
        for k, v in (index.get("metadata") or {}).items():
            metadata.setdefault(k, str(v))
        return (tensors, metadata, dtypes) if with_dtypes else (tensors, metadata)
    return load_file(path, with_dtypes=with_dtypes)


_NP_TO_ST = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64",
    np.dtype("uint32"): "U32",
    np.dtype("uint16"): "U16",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def save_file(path: str, tensors: Mapping[str, np.ndarray],
              metadata: Optional[Mapping[str, str]] = None,
              dtypes: Optional[Mapping[str, str]] = None) -> None:
    """Writes a .safetensors file: no holes in the data section, widest dtypes first (so every
    tensor is naturally aligned), otherwise in the order given.

    dtypes may name a stored dtype per tensor: "BF16" stores a float array rounded to bfloat16
    (nearest-even); any other name must match the array's own dtype. Without an entry the array's
    NumPy dtype decides. Metadata values must be strings.
    """
    dtypes = dict(dtypes or {})
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise TypeError(f"metadata {k!r} must be a string, got {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    encoded = []
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        st = dtypes.get(name)
        if st == "BF16":
            data = f32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
            size = 2
        else:
            own = _NP_TO_ST.get(arr.dtype)
            if own is None:
                raise TypeError(f"tensor {name}: NumPy dtype {arr.dtype} has no safetensors name")
            if st is not None and st != own:
                raise TypeError(f"tensor {name}: asked for {st} but the array is {own}")
            st = own
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            size = arr.dtype.itemsize
        encoded.append((name, st, arr.shape, data, size))
    # The format wants the data section fully covered, without holes. Storing the widest elements
    # first (stable otherwise) keeps every tensor naturally aligned within the 8-aligned data section.
    encoded.sort(key=lambda e: -e[4])
    blobs = []
    offset = 0
    for name, st, shape, data, _ in encoded:
        header[name] = {"dtype": st, "shape": [int(s) for s in shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # data section starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
