#!/usr/bin/env python3
"""Independent float64 NumPy reference of the T5-v1.1 encoder as FLUX uses it.

Written from FluxNative's docs/flux-model.md alone (§2.3 configuration, §3.1 tokens, §3.3 forward pass and relative
position buckets, §3.4 usage, §8.0 formats, §8.4 tensor names), without reference to transformers', BFL's,
diffusers' or FluxNative's own C++ code. Forward (§3.3), for ids [B, L], no attention mask (§3.4: padding
tokens are attended to like any other token):

  x = shared[ids]                            (no sqrt(d) scaling, no absolute positions)
  P[h, i, j] = block0.relative_attention_bias[bucket(j - i), h]     computed once, used by every block
  per block:
    a = RMSNorm_0(x); q, k, v = a Wq^T, a Wk^T, a Wv^T (no bias), heads of d_kv (head-major channels)
    attn = softmax(q k^T + P) v              (NO 1/sqrt(d_kv) scaling); merge heads; o; x = x + attn
    f = RMSNorm_1(x); x = x + wo(GELU_tanh(wi_0 f) * wi_1 f)
  hidden = final_layer_norm(x)               RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps)

bucket(rel), bidirectional, nb = relative_attention_num_buckets, md = relative_attention_max_distance:
  half = nb/2, exact = half/2; base = half if rel > 0 else 0; n = |rel|
  n < exact: base + n; else base + min(half - 1, exact + floor(ln(n/exact) / ln(md/exact) * (half - exact)))
(§3.3 states it for nb 32, md 128: half 16, exact 8; check_bucket_test_vector() asserts its table.)

Weights are upcast from their stored dtype to float64 and all maths is float64 (compute_dtype=np.float32 gives
an all-float32 rerun that mimics an f32 engine). The bf16 activation casts of transformers in bf16 mode
(§3.3: the RMS-normalised value is cast to the weight dtype before the multiply) are an engine precision policy
and are NOT modelled: with bf16 weights the reference still computes in float64 from the exact bf16 values.

Usage:
  /usr/bin/python3 tools/reference/t5_reference.py --model MODEL_DIR --ids inputs.safetensors --out out.safetensors
  /usr/bin/python3 tools/reference/t5_reference.py --selftest [--model MODEL_DIR]
MODEL_DIR: a diffusers/transformers `text_encoder_2/` folder (config.json + model.safetensors or a sharded
index). Accepts `shared.weight` or `encoder.embed_tokens.weight` (§8.4); decoder tensors are ignored.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, asdict
from typing import Dict, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_np as stnp  # noqa: E402

F64 = np.float64
FOREIGN_PREFIXES = ("text_encoders.t5xxl.transformer.", "cond_stage_model.transformer.")  # §8.0: stripped
BIAS_NAME = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


@dataclass
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    layer_norm_epsilon: float
    embedding_name: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class T5Model:
    config: T5Config
    weights: Dict[str, np.ndarray]      # "embed" + encoder.* names, float64 (or compute dtype)
    stored: Dict[str, np.ndarray]       # as read, original names
    stored_dtypes: Dict[str, str]

    def astype(self, dtype) -> "T5Model":
        return T5Model(self.config, {k: v.astype(dtype) for k, v in self.weights.items()},
                       self.stored, self.stored_dtypes)


def _strip(name: str) -> str:
    for p in FOREIGN_PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def load_model(path: str) -> T5Model:
    stored, _meta, dtypes = stnp.load(path, with_dtypes=True)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path}: config.json is required (num_heads, buckets, max distance, eps)")
    with open(cfg_path, "r", encoding="utf-8") as f:
        cj = json.load(f)
    names = {_strip(n): n for n in stored}
    w: Dict[str, np.ndarray] = {}
    emb_name = None
    for cand in ("shared.weight", "encoder.embed_tokens.weight"):
        if cand in names:
            if emb_name is None:
                emb_name = cand
                w["embed"] = np.asarray(stored[names[cand]], dtype=F64)
            elif not np.array_equal(stored[names[cand]], stored[names[emb_name]]):
                raise ValueError(f"{path}: shared.weight and encoder.embed_tokens.weight differ")
    if emb_name is None:
        raise ValueError(f"{path}: no shared.weight / encoder.embed_tokens.weight")
    for short, full in names.items():
        if short.startswith("encoder.") and short != "encoder.embed_tokens.weight":
            w[short] = np.asarray(stored[full], dtype=F64)
    layers = 0
    while f"encoder.block.{layers}.layer.0.SelfAttention.q.weight" in w:
        layers += 1
    heads = int(cj["num_heads"])
    d_kv = int(cj["d_kv"])
    if cj.get("feed_forward_proj", "gated-gelu") != "gated-gelu":
        raise ValueError(f"{path}: feed_forward_proj {cj.get('feed_forward_proj')!r}; FLUX's T5 is gated-gelu")
    act = cj.get("dense_act_fn", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path}: dense_act_fn {act!r}; expected the tanh GELU (gelu_new)")
    cfg = T5Config(
        vocab_size=w["embed"].shape[0], d_model=w["embed"].shape[1], d_kv=d_kv,
        d_ff=w["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0], num_heads=heads,
        num_layers=layers,
        relative_attention_num_buckets=int(cj.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(cj.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(cj.get("layer_norm_epsilon", 1e-6)), embedding_name=emb_name)
    for key, val in (("vocab_size", cfg.vocab_size), ("d_model", cfg.d_model), ("d_ff", cfg.d_ff),
                     ("num_layers", layers)):
        if key in cj and int(cj[key]) != val:
            raise ValueError(f"{path}: config.json {key}={cj[key]} but the tensors say {val}")
    _check_shapes(cfg, w)
    return T5Model(cfg, w, stored, dtypes)


def _check_shapes(c: T5Config, w: Dict[str, np.ndarray]) -> None:
    d, inner, f = c.d_model, c.num_heads * c.d_kv, c.d_ff
    want = {"embed": (c.vocab_size, d), BIAS_NAME: (c.relative_attention_num_buckets, c.num_heads),
            "encoder.final_layer_norm.weight": (d,)}
    for i in range(c.num_layers):
        p = f"encoder.block.{i}.layer."
        for n in ("q", "k", "v"):
            want[p + f"0.SelfAttention.{n}.weight"] = (inner, d)
        want[p + "0.SelfAttention.o.weight"] = (d, inner)
        want[p + "0.layer_norm.weight"] = (d,)
        want[p + "1.DenseReluDense.wi_0.weight"] = (f, d)
        want[p + "1.DenseReluDense.wi_1.weight"] = (f, d)
        want[p + "1.DenseReluDense.wo.weight"] = (d, f)
        want[p + "1.layer_norm.weight"] = (d,)
    missing = sorted(set(want) - set(w))
    extra = sorted(set(w) - set(want))
    if missing or extra:
        raise ValueError(f"T5 tensors: missing {missing[:5]}, unexpected {extra[:5]} "
                         f"(relative_attention_bias must exist in block 0 only)")
    for k, s in want.items():
        if tuple(w[k].shape) != s:
            raise ValueError(f"T5 tensor {k}: shape {w[k].shape}, expected {s}")


def fingerprint(stored: Dict[str, np.ndarray]) -> dict:
    """Same definition as the flux/ae goldens (stored names, exact decode, float64 sums, sorted order)."""
    total = 0.0
    total_sq = 0.0
    for name in sorted(stored):
        x = np.asarray(stored[name], dtype=F64).ravel()
        total += float(np.sum(x))
        total_sq += float(np.sum(x * x))
    return {"sum": total, "sum_sq": total_sq, "tensor_count": len(stored)}


# ----------------------------------------------------------------------------------------------
# Relative position buckets (§3.3)
# ----------------------------------------------------------------------------------------------

def relative_bucket(rel: np.ndarray, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """Bidirectional T5 bucket of rel = key position - query position (float64 logarithm)."""
    rel = np.asarray(rel, dtype=np.int64)
    half = num_buckets // 2
    exact = half // 2
    base = np.where(rel > 0, half, 0)
    n = np.abs(rel)
    safe = np.maximum(n, exact).astype(F64)                  # log of n >= exact only
    large = exact + np.floor(np.log(safe / exact) / math.log(max_distance / exact) * (half - exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return base + np.where(n < exact, n, large)


# §3.3 test vector for 32 buckets / max distance 128: (lo, hi, bucket) for rel in [lo, hi].
BUCKET_TEST_VECTOR = [
    (0, 0, 0), (1, 7, None), (8, 11, 24), (12, 15, 25), (16, 22, 26), (23, 31, 27), (32, 45, 28),
    (46, 63, 29), (64, 90, 30), (91, 1000, 31),
    (-7, -1, None), (-11, -8, 8), (-15, -12, 9), (-22, -16, 10), (-31, -23, 11), (-45, -32, 12),
    (-63, -46, 13), (-90, -64, 14), (-1000, -91, 15),
]


def check_bucket_test_vector() -> None:
    """Asserts the §3.3 table for every rel in [-1000, 1000] (32 buckets, max distance 128)."""
    rel = np.arange(-1000, 1001)
    got = relative_bucket(rel, 32, 128)
    expect = np.full(rel.shape, -1, dtype=np.int64)
    for lo, hi, b in BUCKET_TEST_VECTOR:
        sel = (rel >= lo) & (rel <= hi)
        if b is None:   # 1..7 -> 17..23, -1..-7 -> 1..7
            expect[sel] = np.where(rel[sel] > 0, 16 + rel[sel], -rel[sel])
        else:
            expect[sel] = b
    assert np.all(expect >= 0), "test vector does not cover [-1000, 1000]"
    bad = np.nonzero(got != expect)[0]
    assert bad.size == 0, f"bucket test vector fails at rel {rel[bad[:5]].tolist()}: {got[bad[:5]].tolist()} " \
                          f"vs {expect[bad[:5]].tolist()}"
    # The same in float32 arithmetic (the spec says both agree for |rel| <= 1000).
    n = np.abs(rel[np.abs(rel) >= 8]).astype(np.float32)
    l32 = 8 + np.floor(np.log(n / np.float32(8)) / np.float32(math.log(16.0)) * np.float32(8)).astype(np.int64)
    l64 = 8 + np.floor(np.log(n.astype(F64) / 8) / math.log(16.0) * 8).astype(np.int64)
    assert np.array_equal(np.minimum(l32, 15), np.minimum(l64, 15))


def position_bias(model: T5Model, L: int, compute_dtype=F64) -> np.ndarray:
    """P [num_heads, L, L] from block 0's table: P[h, i, j] = table[bucket(j - i), h]."""
    c = model.config
    pos = np.arange(L)
    rel = pos[None, :] - pos[:, None]                         # [i, j] = j - i
    b = relative_bucket(rel, c.relative_attention_num_buckets, c.relative_attention_max_distance)
    table = model.weights[BIAS_NAME].astype(compute_dtype)   # [num_buckets, heads]
    return np.ascontiguousarray(table[b].transpose(2, 0, 1))


# ----------------------------------------------------------------------------------------------
# Forward pass (§3.3)
# ----------------------------------------------------------------------------------------------

def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + x.dtype.type(eps)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    t = x.dtype.type
    return t(0.5) * x * (t(1.0) + np.tanh(t(math.sqrt(2.0 / math.pi)) * (x + t(0.044715) * x * x * x)))


def softmax(s: np.ndarray) -> np.ndarray:
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def encode(model: T5Model, ids: np.ndarray, compute_dtype=F64) -> np.ndarray:
    """ids [B, L] -> last_hidden_state [B, L, d_model] in compute_dtype."""
    c = model.config
    w = model.weights if compute_dtype == F64 else model.astype(compute_dtype).weights
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be [B, L], got {ids.shape}")
    if ids.min() < 0 or ids.max() >= c.vocab_size:
        raise ValueError(f"ids outside [0, {c.vocab_size})")
    B, L = ids.shape
    nh, hd = c.num_heads, c.d_kv
    eps = c.layer_norm_epsilon
    x = w["embed"][ids]
    P = position_bias(model, L, compute_dtype)[None]           # [1, nh, L, L]
    for i in range(c.num_layers):
        p = f"encoder.block.{i}.layer."
        a = rms_norm(x, w[p + "0.layer_norm.weight"], eps)
        q = (a @ w[p + "0.SelfAttention.q.weight"].T).reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        k = (a @ w[p + "0.SelfAttention.k.weight"].T).reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        v = (a @ w[p + "0.SelfAttention.v.weight"].T).reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) + P                    # no 1/sqrt(d_kv)
        o = (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, L, nh * hd)
        x = x + o @ w[p + "0.SelfAttention.o.weight"].T
        f = rms_norm(x, w[p + "1.layer_norm.weight"], eps)
        g = gelu_tanh(f @ w[p + "1.DenseReluDense.wi_0.weight"].T) * (f @ w[p + "1.DenseReluDense.wi_1.weight"].T)
        x = x + g @ w[p + "1.DenseReluDense.wo.weight"].T
    return rms_norm(x, w["encoder.final_layer_norm.weight"], eps)


# ----------------------------------------------------------------------------------------------
# Self-test and CLI
# ----------------------------------------------------------------------------------------------

def selftest(model: Optional[T5Model] = None) -> None:
    check_bucket_test_vector()
    x = np.array([[3.0, 4.0]])
    assert np.allclose(rms_norm(x, np.ones(2), 0.0), x / math.sqrt(12.5))
    assert abs(gelu_tanh(np.array([1.0]))[0] - 0.8411919906082768) < 1e-15
    if model is None:
        print("t5 selftest: bucket test vector and helpers ok")
        return
    rng = np.random.default_rng(0)
    ids = rng.integers(2, model.config.vocab_size, size=(2, 10))
    h = encode(model, ids)
    # Batch rows are independent; no mask, so a pad change at the end changes every position.
    h0 = encode(model, ids[:1])
    assert np.max(np.abs(h[:1] - h0)) < 1e-12
    ids2 = ids.copy()
    ids2[:, -1] = 0
    assert np.min(np.max(np.abs(encode(model, ids2) - h), axis=-1)) > 0, "a token did not influence every position"
    h32 = encode(model, ids, np.float32)
    assert h32.dtype == np.float32
    rel = np.linalg.norm(h32 - h) / np.linalg.norm(h)
    assert rel < 1e-5, rel
    print(f"t5 selftest: ok (float32 rerun rel L2 {rel:.2e})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="float64 T5 encoder reference (docs/flux-model.md §3.3)")
    ap.add_argument("--model", help="text_encoder_2 folder")
    ap.add_argument("--ids", help="safetensors file with `ids` [B, L] (I32 or I64)")
    ap.add_argument("--out", help="output safetensors: hidden (F32) and hidden_f64")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)
    check_bucket_test_vector()
    model = load_model(args.model) if args.model else None
    if args.selftest:
        selftest(model)
        return 0
    if not (model and args.ids and args.out):
        ap.error("--model, --ids and --out are required (or --selftest)")
    t, _ = stnp.load_file(args.ids)
    hidden = encode(model, t["ids"])
    fp = fingerprint(model.stored)
    meta = {"producer": "tools/reference/t5_reference.py (float64 NumPy reference, docs/flux-model.md §3.3)",
            "numpy_version": np.__version__, "model_path": os.path.abspath(args.model),
            "config": json.dumps(model.config.as_dict(), sort_keys=True),
            "weights_fingerprint": json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                                               "tensor_count": fp["tensor_count"]})}
    stnp.save_file(args.out, {"hidden": hidden.astype(np.float32), "hidden_f64": hidden}, metadata=meta)
    print(f"wrote {args.out}: hidden {list(hidden.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
