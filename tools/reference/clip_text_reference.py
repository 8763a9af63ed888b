#!/usr/bin/env python3
"""Independent float64 NumPy reference of the CLIP ViT-L/14 text tower as FLUX uses it.

Written from FluxNative's docs/flux-model.md alone (§2.3 configuration, §3.1 tokens, §3.2 forward pass, §3.4 usage,
§8.0 formats, §8.5 tensor names), without reference to transformers', BFL's, diffusers' or FluxNative's own
C++ code. Forward (§3.2), for ids [B, L] (L <= max_position_embeddings; 77 in FLUX):

  x = token_embedding[ids] + position_embedding[0..L-1]
  per layer (pre-LN):
    a = LayerNorm1(x)                        (eps = config layer_norm_eps, affine)
    q = (a Wq^T + bq) / sqrt(head_dim), k = a Wk^T + bk, v = a Wv^T + bv; heads are head-major channel groups
    attn = softmax(q k^T + causal mask) v    (position i sees 0..i), merge heads, out_proj; x = x + attn
    m = LayerNorm2(x); x = x + fc2(QuickGELU(fc1(m)))           QuickGELU(z) = z * sigmoid(1.702 z)
  hidden = final_layer_norm(x)                                 -> last_hidden_state [B, L, d]
  pooled[b] = hidden[b, p_b], p_b = FIRST index of the maximum id in row b       -> pooler_output [B, d]

No text_projection (FLUX uses the 768-d pooler output). No attention mask besides the causal one. The bf16
casts of §3.2/§3.4 (BFL and diffusers cast the pooled vector to bf16) belong to the consumer and are not
applied here. Weights are upcast from their stored dtype (F32/F16/BF16) to float64 and all maths is float64,
unless a float32 rerun is asked for (compute_dtype=np.float32), which mimics an all-f32 engine.

Usage:
  /usr/bin/python3 tools/reference/clip_text_reference.py --model MODEL_DIR --ids inputs.safetensors
      --out out.safetensors
  /usr/bin/python3 tools/reference/clip_text_reference.py --selftest [--model MODEL_DIR]
MODEL_DIR: a diffusers/transformers `text_encoder/` folder (config.json + model.safetensors or a sharded
index), or a single .safetensors file (then the configuration is inferred from the shapes, eps 1e-5).
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
PREFIX = "text_model."
# Prefixes some third-party single files put in front of the text-encoder names (§8.0): stripped.
FOREIGN_PREFIXES = ("cond_stage_model.transformer.", "text_encoders.clip_l.transformer.",
                    "conditioner.embedders.0.transformer.")
IGNORED = ("text_model.embeddings.position_ids",)   # legacy int64 buffer 0..76 (§8.5)


@dataclass
class ClipConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    layer_norm_eps: float
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClipModel:
    config: ClipConfig
    weights: Dict[str, np.ndarray]        # names without "text_model.", values float64 (or compute dtype)
    stored: Dict[str, np.ndarray]         # as read (float32 / exact bf16 decode), original names
    stored_dtypes: Dict[str, str]

    def astype(self, dtype) -> "ClipModel":
        return ClipModel(self.config, {k: v.astype(dtype) for k, v in self.weights.items()},
                         self.stored, self.stored_dtypes)


def _strip(name: str) -> str:
    for p in FOREIGN_PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def load_model(path: str) -> ClipModel:
    stored, _meta, dtypes = stnp.load(path, with_dtypes=True)
    cfg_json: dict = {}
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    cfg_path = os.path.join(folder, "config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path, "r", encoding="utf-8") as f:
            cfg_json = json.load(f)
        if "text_config" in cfg_json:           # a full CLIPModel config
            cfg_json = cfg_json["text_config"]
    w: Dict[str, np.ndarray] = {}
    for name, arr in stored.items():
        n = _strip(name)
        if n in IGNORED or not n.startswith(PREFIX):
            continue
        w[n[len(PREFIX):]] = np.asarray(arr, dtype=F64)
    tok = w["embeddings.token_embedding.weight"]
    pos = w["embeddings.position_embedding.weight"]
    layers = 0
    while f"encoder.layers.{layers}.self_attn.q_proj.weight" in w:
        layers += 1
    d = tok.shape[1]
    inter = w["encoder.layers.0.mlp.fc1.weight"].shape[0]
    heads = int(cfg_json.get("num_attention_heads", 0))
    if heads <= 0:
        raise ValueError(f"{path}: num_attention_heads is not in config.json (cannot be inferred from shapes)")
    cfg = ClipConfig(
        vocab_size=tok.shape[0], hidden_size=d, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=pos.shape[0],
        layer_norm_eps=float(cfg_json.get("layer_norm_eps", 1e-5)),
        hidden_act=str(cfg_json.get("hidden_act", "quick_gelu")))
    # The configuration must agree with the shapes.
    for key, val in (("vocab_size", cfg.vocab_size), ("hidden_size", d), ("intermediate_size", inter),
                     ("num_hidden_layers", layers), ("max_position_embeddings", cfg.max_position_embeddings)):
        if key in cfg_json and int(cfg_json[key]) != val:
            raise ValueError(f"{path}: config.json {key}={cfg_json[key]} but the tensors say {val}")
    if cfg.hidden_act != "quick_gelu":
        raise ValueError(f"{path}: hidden_act {cfg.hidden_act!r}; FLUX's CLIP uses quick_gelu (docs/flux-model.md §2.3)")
    if d % heads:
        raise ValueError(f"{path}: hidden {d} not divisible by {heads} heads")
    _check_shapes(cfg, w)
    return ClipModel(cfg, w, stored, dtypes)


def _check_shapes(c: ClipConfig, w: Dict[str, np.ndarray]) -> None:
    d, f = c.hidden_size, c.intermediate_size
    want = {"embeddings.token_embedding.weight": (c.vocab_size, d),
            "embeddings.position_embedding.weight": (c.max_position_embeddings, d),
            "final_layer_norm.weight": (d,), "final_layer_norm.bias": (d,)}
    for i in range(c.num_hidden_layers):
        p = f"encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            want[p + f"self_attn.{n}.weight"] = (d, d)
            want[p + f"self_attn.{n}.bias"] = (d,)
        for n in ("layer_norm1", "layer_norm2"):
            want[p + n + ".weight"] = (d,)
            want[p + n + ".bias"] = (d,)
        want[p + "mlp.fc1.weight"] = (f, d)
        want[p + "mlp.fc1.bias"] = (f,)
        want[p + "mlp.fc2.weight"] = (d, f)
        want[p + "mlp.fc2.bias"] = (d,)
    missing = sorted(set(want) - set(w))
    extra = sorted(set(w) - set(want))
    if missing or extra:
        raise ValueError(f"CLIP tensors: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, s in want.items():
        if tuple(w[k].shape) != s:
            raise ValueError(f"CLIP tensor {k}: shape {w[k].shape}, expected {s}")


def fingerprint(stored: Dict[str, np.ndarray]) -> dict:
    """Same definition as the flux/ae goldens: per stored tensor (stored names, values decoded exactly to
    float64), np.sum and np.sum of squares; added over tensors in sorted-name order."""
    total = 0.0
    total_sq = 0.0
    for name in sorted(stored):
        x = np.asarray(stored[name], dtype=F64).ravel()
        total += float(np.sum(x))
        total_sq += float(np.sum(x * x))
    return {"sum": total, "sum_sq": total_sq, "tensor_count": len(stored)}


# ----------------------------------------------------------------------------------------------
# Forward pass (§3.2)
# ----------------------------------------------------------------------------------------------

def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)      # biased (population) variance
    return (x - mean) / np.sqrt(var + x.dtype.type(eps)) * weight + bias


def quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(x.dtype.type(-1.702) * x))        # x * sigmoid(1.702 x)


def softmax(s: np.ndarray) -> np.ndarray:
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def linear(x: np.ndarray, w: Dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def encode(model: ClipModel, ids: np.ndarray, compute_dtype=F64):
    """ids [B, L] integer -> (hidden [B, L, d], pooled [B, d]) in compute_dtype."""
    c = model.config
    w = model.weights if compute_dtype == F64 else model.astype(compute_dtype).weights
    dt = np.dtype(compute_dtype).type
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be [B, L], got {ids.shape}")
    B, L = ids.shape
    if L > c.max_position_embeddings:
        raise ValueError(f"L={L} > max_position_embeddings {c.max_position_embeddings}")
    if ids.min() < 0 or ids.max() >= c.vocab_size:
        raise ValueError(f"ids outside [0, {c.vocab_size})")
    nh, hd = c.num_attention_heads, c.head_dim
    x = w["embeddings.token_embedding.weight"][ids] + w["embeddings.position_embedding.weight"][:L][None]
    causal = np.triu(np.ones((L, L), dtype=bool), k=1)          # True above the diagonal: j > i is hidden
    scale = dt(1.0 / math.sqrt(hd))
    eps = c.layer_norm_eps
    for i in range(c.num_hidden_layers):
        p = f"encoder.layers.{i}."
        a = layer_norm(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps)
        q = linear(a, w, p + "self_attn.q_proj") * scale
        k = linear(a, w, p + "self_attn.k_proj")
        v = linear(a, w, p + "self_attn.v_proj")
        q = q.reshape(B, L, nh, hd).transpose(0, 2, 1, 3)          # channel c = head*hd + j
        k = k.reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        v = v.reshape(B, L, nh, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2)                            # [B, nh, L, L]
        s = np.where(causal, dt(-np.inf), s)
        o = softmax(s) @ v                                         # [B, nh, L, hd]
        o = o.transpose(0, 2, 1, 3).reshape(B, L, nh * hd)
        x = x + linear(o, w, p + "self_attn.out_proj")
        m = layer_norm(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps)
        x = x + linear(quick_gelu(linear(m, w, p + "mlp.fc1")), w, p + "mlp.fc2")
    hidden = layer_norm(x, w["final_layer_norm.weight"], w["final_layer_norm.bias"], eps)
    pos = pooled_positions(ids)
    pooled = hidden[np.arange(B), pos]
    return hidden, pooled


def pooled_positions(ids: np.ndarray) -> np.ndarray:
    """Index of the FIRST occurrence of the maximum id in each row (§3.2 step 4). np.argmax returns the
    first maximal index; with the CLIP tokenizer that is the first <|endoftext|> (49407), since the padding
    is also 49407."""
    return np.argmax(np.asarray(ids), axis=1)


# ----------------------------------------------------------------------------------------------
# Self-test and CLI
# ----------------------------------------------------------------------------------------------

def selftest(model: Optional[ClipModel] = None) -> None:
    """Checks that need no external data; with a model also the causal property and the pooling rule."""
    assert list(pooled_positions(np.array([[5, 9, 3, 9, 9], [9, 1, 2, 3, 4]]))) == [1, 0]
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    ref = x * (1.0 / (1.0 + np.exp(-1.702 * x)))
    assert np.allclose(quick_gelu(x), ref, rtol=0, atol=1e-15)
    ln = layer_norm(np.array([[1.0, 2.0, 3.0, 4.0]]), np.ones(4), np.zeros(4), 0.0)
    assert np.allclose(ln, (np.array([1, 2, 3, 4]) - 2.5) / math.sqrt(1.25))
    if model is None:
        print("clip selftest: helpers ok")
        return
    c = model.config
    rng = np.random.default_rng(0)
    L = min(12, c.max_position_embeddings)
    eos = c.vocab_size - 1
    ids = rng.integers(0, c.vocab_size - 2, size=(2, L))
    ids[:, 5:] = eos
    h, pooled = encode(model, ids)
    # Causal: changing tokens after position 5 must not change positions 0..5 (nor the pooled vector).
    ids2 = ids.copy()
    ids2[:, 6:] = rng.integers(0, c.vocab_size - 2, size=(2, L - 6))
    h2, pooled2 = encode(model, ids2)
    assert np.array_equal(pooled_positions(ids2), [5, 5])
    assert np.max(np.abs(h[:, :6] - h2[:, :6])) < 1e-12, "causal mask leaks future tokens"
    assert np.max(np.abs(pooled - pooled2)) < 1e-12
    assert np.max(np.abs(h[:, 6:] - h2[:, 6:])) > 1e-3
    assert np.array_equal(pooled, h[:, 5])
    # The final LayerNorm makes each row's mean equal to mean(bias) + cov(weight, normalised) -- just check
    # that a float32 rerun lands close to float64.
    h32, _ = encode(model, ids, np.float32)
    assert h32.dtype == np.float32
    rel = np.linalg.norm(h32 - h) / np.linalg.norm(h)
    assert rel < 1e-5, rel
    print(f"clip selftest: ok (float32 rerun rel L2 {rel:.2e})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="float64 CLIP text encoder reference (docs/flux-model.md §3.2)")
    ap.add_argument("--model", help="text_encoder folder or .safetensors file")
    ap.add_argument("--ids", help="safetensors file with `ids` [B, L] (I32 or I64)")
    ap.add_argument("--out", help="output safetensors: hidden, pooled (F32) and hidden_f64, pooled_f64")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)
    model = load_model(args.model) if args.model else None
    if args.selftest:
        selftest(model)
        return 0
    if not (model and args.ids and args.out):
        ap.error("--model, --ids and --out are required (or --selftest)")
    t, _ = stnp.load_file(args.ids)
    hidden, pooled = encode(model, t["ids"])
    fp = fingerprint(model.stored)
    meta = {"producer": "tools/reference/clip_text_reference.py (float64 NumPy reference, docs/flux-model.md §3.2)",
            "numpy_version": np.__version__, "model_path": os.path.abspath(args.model),
            "config": json.dumps(model.config.as_dict(), sort_keys=True),
            "weights_fingerprint": json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                                               "tensor_count": fp["tensor_count"]})}
    stnp.save_file(args.out, {"hidden": hidden.astype(np.float32), "pooled": pooled.astype(np.float32),
                              "hidden_f64": hidden, "pooled_f64": pooled}, metadata=meta)
    print(f"wrote {args.out}: hidden {list(hidden.shape)}, pooled {list(pooled.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
