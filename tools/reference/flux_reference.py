#!/usr/bin/env python3
"""Independent float64 NumPy reference of the FLUX.1 flow-transformer forward pass.

Written from FluxNative's specification (docs/flux-model.md, §2.1, §4.4, §5, §8.1, §8.2,
§10) alone — not from BFL's or diffusers' code and not from FluxNative's C++ engine — so that it can
serve as an independent check of the engine.

Everything is computed in float64: weights are upcast from their stored dtype (F32/F16/BF16/F8), the
inputs from theirs. Timesteps and guidance are used exactly as given (s' = 1000·t in float64) unless
`bf16_scalars=True`, which applies the §6.4 BFL quantisation s' = bf16(1000·bf16(t)) first (the
embedding maths stays float64).

Checkpoint layouts (both published ones):
  * BFL single file (`flux1-dev.safetensors` names, §8.1), optionally prefixed `model.diffusion_model.`;
  * diffusers `transformer/` folder (config.json + one file or shards with an index, §8.2), or the
    model root that contains it. Its tensors are converted to the BFL structure: q/k/v (and proj_mlp)
    rows concatenated, `norm_out.linear` halves swapped back to (shift, scale).

The configuration is inferred from tensor shapes: hidden size from img_in, head dim from the QK-norm
scale, depths by counting blocks, dev vs schnell by the presence of guidance_in. axes_dim comes from the
diffusers config.json `axes_dims_rope`, else from the safetensors `__metadata__` key `axes_dim` (a JSON
list string), else the published [16, 56, 56].

CLI:
  flux_reference.py --model PATH --inputs in.safetensors --out out.safetensors [--bf16-scalars]
  flux_reference.py --selftest [--lib build/.../libfluxnative.so]
Inputs (names as in docs/flux-model.md §5): img [B,Limg,in_ch], img_ids [B,Limg,3], txt [B,Ltxt,ctx],
txt_ids [B,Ltxt,3], y [B,vec], timesteps [B], guidance [B] (dev only). Output `out` [B,Limg,out_ch]
(stored F32, plus `out_f64`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as stnp  # noqa: E402

F64 = np.float64
DEFAULT_AXES_DIM = [16, 56, 56]
THETA = 10000.0
EPS = 1e-6
TIME_FACTOR = 1000.0
MAX_PERIOD = 10000.0


# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------

@dataclass
class FluxConfig:
    in_channels: int
    out_channels: int
    context_in_dim: int
    vec_in_dim: int
    hidden_size: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    depth: int
    depth_single: int
    guidance_embed: bool
    time_embed_dim: int
    axes_dim: List[int]
    axes_dim_source: str = ""
    layout: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FluxModel:
    config: FluxConfig
    weights: Dict[str, np.ndarray]          # BFL names, float64
    stored: Dict[str, np.ndarray] = field(default_factory=dict)  # as read (decoded), stored names
    stored_dtypes: Dict[str, str] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)


_BFL_PREFIXES = ("model.diffusion_model.",)


def _strip_prefixes(tensors: dict) -> dict:
    for prefix in _BFL_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            return {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _resolve_diffusers_folder(path: str) -> Optional[str]:
    """A folder: the transformer folder itself, or a model root holding transformer/."""
    if not os.path.isdir(path):
        return None
    sub = os.path.join(path, "transformer")
    if os.path.isdir(sub):
        return sub
    return path


def _count_blocks(names, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for n in names for m in [pat.match(n)] if m}
    if idx and idx != set(range(len(idx))):
        raise ValueError(f"{prefix}N blocks are not numbered 0..{len(idx) - 1}: {sorted(idx)}")
    return len(idx)


def diffusers_to_bfl(d: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Converts diffusers FluxTransformer2DModel tensor names/layout to BFL's (docs/flux-model.md §8.2).

    Every input tensor must be consumed; leftovers are an error (strict, like a real loader).
    """
    used = set()

    def take(name):
        if name not in d:
            raise KeyError(f"diffusers checkpoint lacks {name}")
        used.add(name)
        return d[name]

    out: Dict[str, np.ndarray] = {}

    def lin(bfl, dif):
        out[bfl + ".weight"] = take(dif + ".weight")
        out[bfl + ".bias"] = take(dif + ".bias")

    def cat(bfl, difs):
        out[bfl + ".weight"] = np.concatenate([take(x + ".weight") for x in difs], axis=0)
        out[bfl + ".bias"] = np.concatenate([take(x + ".bias") for x in difs], axis=0)

    lin("img_in", "x_embedder")
    lin("txt_in", "context_embedder")
    lin("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    lin("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    if "time_text_embed.guidance_embedder.linear_1.weight" in d:
        lin("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        lin("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    lin("vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    lin("vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    lin("final_layer.linear", "proj_out")
    w = take("norm_out.linear.weight")
    b = take("norm_out.linear.bias")
    if w.shape[0] % 2 or b.shape[0] != w.shape[0]:
        raise ValueError(f"norm_out.linear has {w.shape[0]} rows; expected an even number")
    half = w.shape[0] // 2
    # diffusers stores (scale, shift); BFL wants (shift, scale).
    out["final_layer.adaLN_modulation.1.weight"] = np.concatenate([w[half:], w[:half]], axis=0)
    out["final_layer.adaLN_modulation.1.bias"] = np.concatenate([b[half:], b[:half]], axis=0)

    for n in range(_count_blocks(d, "transformer_blocks.")):
        s, t = f"transformer_blocks.{n}.", f"double_blocks.{n}."
        lin(t + "img_mod.lin", s + "norm1.linear")
        lin(t + "txt_mod.lin", s + "norm1_context.linear")
        cat(t + "img_attn.qkv", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v"])
        cat(t + "txt_attn.qkv", [s + "attn.add_q_proj", s + "attn.add_k_proj", s + "attn.add_v_proj"])
        out[t + "img_attn.norm.query_norm.scale"] = take(s + "attn.norm_q.weight")
        out[t + "img_attn.norm.key_norm.scale"] = take(s + "attn.norm_k.weight")
        out[t + "txt_attn.norm.query_norm.scale"] = take(s + "attn.norm_added_q.weight")
        out[t + "txt_attn.norm.key_norm.scale"] = take(s + "attn.norm_added_k.weight")
        lin(t + "img_attn.proj", s + "attn.to_out.0")
        lin(t + "txt_attn.proj", s + "attn.to_add_out")
        lin(t + "img_mlp.0", s + "ff.net.0.proj")
        lin(t + "img_mlp.2", s + "ff.net.2")
        lin(t + "txt_mlp.0", s + "ff_context.net.0.proj")
        lin(t + "txt_mlp.2", s + "ff_context.net.2")

    for n in range(_count_blocks(d, "single_transformer_blocks.")):
        s, t = f"single_transformer_blocks.{n}.", f"single_blocks.{n}."
        lin(t + "modulation.lin", s + "norm.linear")
        cat(t + "linear1", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v", s + "proj_mlp"])
        out[t + "norm.query_norm.scale"] = take(s + "attn.norm_q.weight")
        out[t + "norm.key_norm.scale"] = take(s + "attn.norm_k.weight")
        lin(t + "linear2", s + "proj_out")

    leftover = sorted(set(d) - used)
    if leftover:
        raise ValueError(f"diffusers checkpoint has tensors this converter does not know: {leftover[:8]}")
    return out


def infer_config(w: Dict[str, np.ndarray]) -> FluxConfig:
    """Configuration from BFL-named tensor shapes (docs/flux-model.md §2.1 / §8.1)."""
    def shape(name):
        if name not in w:
            raise KeyError(f"checkpoint lacks {name}")
        return w[name].shape

    hidden, in_ch = shape("img_in.weight")
    _, ctx = shape("txt_in.weight")
    _, vec_in = shape("vector_in.in_layer.weight")
    _, time_dim = shape("time_in.in_layer.weight")
    out_ch, _ = shape("final_layer.linear.weight")
    depth = _count_blocks(w, "double_blocks.")
    depth_single = _count_blocks(w, "single_blocks.")
    if depth:
        (head_dim,) = shape("double_blocks.0.img_attn.norm.query_norm.scale")
        mlp_hidden = shape("double_blocks.0.img_mlp.0.weight")[0]
    elif depth_single:
        (head_dim,) = shape("single_blocks.0.norm.query_norm.scale")
        mlp_hidden = shape("single_blocks.0.linear1.weight")[0] - 3 * hidden
    else:
        raise ValueError("checkpoint has neither double nor single blocks")
    if hidden % head_dim:
        raise ValueError(f"hidden size {hidden} is not a multiple of head dim {head_dim}")
    if time_dim % 2:
        raise ValueError(f"time embedding dim {time_dim} is odd")
    return FluxConfig(in_channels=in_ch, out_channels=out_ch, context_in_dim=ctx, vec_in_dim=vec_in,
                      hidden_size=hidden, num_heads=hidden // head_dim, head_dim=head_dim,
                      mlp_hidden=mlp_hidden, depth=depth, depth_single=depth_single,
                      guidance_embed="guidance_in.in_layer.weight" in w, time_embed_dim=time_dim,
                      axes_dim=list(DEFAULT_AXES_DIM), axes_dim_source="default")


def expected_shapes(c: FluxConfig) -> Dict[str, Tuple[int, ...]]:
    """Every BFL tensor and its shape for a configuration (docs/flux-model.md §8.1)."""
    H, M = c.hidden_size, c.mlp_hidden
    s: Dict[str, Tuple[int, ...]] = {}

    def lin(name, o, i):
        s[name + ".weight"] = (o, i)
        s[name + ".bias"] = (o,)

    lin("img_in", H, c.in_channels)
    lin("txt_in", H, c.context_in_dim)
    lin("time_in.in_layer", H, c.time_embed_dim)
    lin("time_in.out_layer", H, H)
    lin("vector_in.in_layer", H, c.vec_in_dim)
    lin("vector_in.out_layer", H, H)
    if c.guidance_embed:
        lin("guidance_in.in_layer", H, c.time_embed_dim)
        lin("guidance_in.out_layer", H, H)
    lin("final_layer.linear", c.out_channels, H)
    lin("final_layer.adaLN_modulation.1", 2 * H, H)
    for n in range(c.depth):
        for S in ("img", "txt"):
            p = f"double_blocks.{n}.{S}_"
            lin(p + "mod.lin", 6 * H, H)
            lin(p + "attn.qkv", 3 * H, H)
            s[p + "attn.norm.query_norm.scale"] = (c.head_dim,)
            s[p + "attn.norm.key_norm.scale"] = (c.head_dim,)
            lin(p + "attn.proj", H, H)
            lin(p + "mlp.0", M, H)
            lin(p + "mlp.2", H, M)
    for n in range(c.depth_single):
        p = f"single_blocks.{n}."
        lin(p + "linear1", 3 * H + M, H)
        lin(p + "linear2", H, H + M)
        s[p + "norm.query_norm.scale"] = (c.head_dim,)
        s[p + "norm.key_norm.scale"] = (c.head_dim,)
        lin(p + "modulation.lin", 3 * H, H)
    return s


def _parse_axes(value, where: str) -> List[int]:
    if isinstance(value, str):
        value = json.loads(value)
    axes = [int(a) for a in value]
    if not axes or any(a <= 0 or a % 2 for a in axes):
        raise ValueError(f"{where}: axes_dim {axes} must be positive even numbers")
    return axes


def load_model(path: str) -> FluxModel:
    """Loads a FLUX transformer in BFL or diffusers layout; returns float64 BFL-named weights."""
    folder = _resolve_diffusers_folder(path)
    diffusers_config = None
    if folder is not None:
        cfg_path = os.path.join(folder, "config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path, "r", encoding="utf-8") as f:
                diffusers_config = json.load(f)
        stored, metadata, dtypes = stnp.load(folder, with_dtypes=True)
    else:
        stored, metadata, dtypes = stnp.load(path, with_dtypes=True)
    stored = _strip_prefixes(stored)
    dtypes = _strip_prefixes(dtypes)
    if "x_embedder.weight" in stored:
        layout = "diffusers"
        bfl = diffusers_to_bfl(stored)
    elif "img_in.weight" in stored:
        layout = "bfl"
        bfl = dict(stored)
    else:
        raise ValueError(f"{path}: neither a BFL (img_in) nor a diffusers (x_embedder) FLUX transformer")
    weights = {k: np.asarray(v, dtype=F64) for k, v in bfl.items()}
    cfg = infer_config(weights)
    cfg.layout = layout

    if diffusers_config is not None and "axes_dims_rope" in diffusers_config:
        cfg.axes_dim = _parse_axes(diffusers_config["axes_dims_rope"], "config.json")
        cfg.axes_dim_source = "config.json axes_dims_rope"
    elif "axes_dim" in metadata:
        cfg.axes_dim = _parse_axes(metadata["axes_dim"], "__metadata__")
        cfg.axes_dim_source = "__metadata__ axes_dim"
    if sum(cfg.axes_dim) != cfg.head_dim:
        raise ValueError(f"axes_dim {cfg.axes_dim} (from {cfg.axes_dim_source}) sums to "
                         f"{sum(cfg.axes_dim)}, head dim is {cfg.head_dim}")

    if diffusers_config is not None:  # cross-check what config.json claims against the shapes
        checks = {
            "num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim,
            "num_layers": cfg.depth, "num_single_layers": cfg.depth_single,
            "in_channels": cfg.in_channels, "joint_attention_dim": cfg.context_in_dim,
            "pooled_projection_dim": cfg.vec_in_dim, "guidance_embeds": cfg.guidance_embed,
        }
        for key, inferred in checks.items():
            if key in diffusers_config and diffusers_config[key] != inferred:
                raise ValueError(f"config.json {key}={diffusers_config[key]!r} but tensors say {inferred!r}")

    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(weights))
    extra = sorted(set(weights) - set(want))
    if missing or extra:
        raise ValueError(f"{path}: tensor set mismatch: missing {missing[:6]}, unexpected {extra[:6]}")
    for k, shp in want.items():
        if tuple(weights[k].shape) != shp:
            raise ValueError(f"{path}: {k} has shape {tuple(weights[k].shape)}, expected {shp}")
    return FluxModel(config=cfg, weights=weights, stored=stored, stored_dtypes=dtypes, metadata=metadata)


def fingerprint(stored: Dict[str, np.ndarray]) -> dict:
    """Weight fingerprint: per tensor, sum and sum of squares of the stored values in float64
    (np.sum's pairwise summation over the flattened tensor); tensors added in sorted-name order.
    Layout-independent in value (a diffusers split/concat moves the same numbers), not in count."""
    total = 0.0
    total_sq = 0.0
    for name in sorted(stored):
        x = np.asarray(stored[name], dtype=F64).ravel()
        total += float(np.sum(x))
        total_sq += float(np.sum(x * x))
    return {"sum": total, "sum_sq": total_sq, "tensor_count": len(stored)}


# ----------------------------------------------------------------------------------------------
# Forward pass (docs/flux-model.md §5), float64 throughout
# ----------------------------------------------------------------------------------------------

def linear(x: np.ndarray, w: Dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x: np.ndarray) -> np.ndarray:
    """LayerNorm over the last dim, no affine, eps 1e-6, biased variance (§5.3)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def rms_norm(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """QK RMSNorm over the head dim with a learnable per-dim scale, eps 1e-6 (§5.3)."""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + EPS) * scale


def modulate(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (1.0 + scale) * layer_norm(x) + shift


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float -> float32 -> nearest-even bfloat16, returned as float64 (for §6.4 emulation only)."""
    return stnp.bf16_bits_to_f32(stnp.f32_to_bf16_bits(np.asarray(x, dtype=np.float32))).astype(F64)


def timestep_embedding(s: np.ndarray, dim: int = 256, prescaled: bool = False) -> np.ndarray:
    """E(s) of §5.1: [cos(s'·f_0..f_{half-1}), sin(...)] with s' = 1000·s, f_i = exp(-ln(1e4)·i/half)."""
    s = np.asarray(s, dtype=F64)
    half = dim // 2
    freqs = np.exp(-math.log(MAX_PERIOD) * np.arange(half, dtype=F64) / half)
    sp = s if prescaled else TIME_FACTOR * s
    args = sp[..., None] * freqs
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


def mlp_embedder(x: np.ndarray, w, name: str) -> np.ndarray:
    return linear(silu(linear(x, w, name + ".in_layer")), w, name + ".out_layer")


def rope_angles(ids: np.ndarray, axes_dim: List[int]) -> np.ndarray:
    """φ [B, L, sum(axes_dim)/2] in float64 (§5.2): axis a, ω_{a,j} = θ^(-2j/d_a), φ = p·ω."""
    ids = np.asarray(ids, dtype=F64)
    parts = []
    for a, d in enumerate(axes_dim):
        omega = THETA ** (-np.arange(0, d, 2, dtype=F64) / d)
        parts.append(ids[..., a:a + 1] * omega)
    return np.concatenate(parts, axis=-1)


def apply_rope(x: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """x [B, nh, L, hd], phi [B, L, hd/2]; rotates adjacent pairs (x[2m], x[2m+1]) by φ_m."""
    cos = np.cos(phi)[:, None]
    sin = np.sin(phi)[:, None]
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = cos * x0 - sin * x1
    out[..., 1::2] = sin * x0 + cos * x1
    return out


def split_heads(qkv: np.ndarray, nh: int, hd: int):
    """[B, L, 3·nh·hd] laid out [q | k | v], each head-major -> three [B, nh, L, hd]."""
    B, L, _ = qkv.shape
    t = qkv.reshape(B, L, 3, nh, hd).transpose(2, 0, 3, 1, 4)
    return t[0], t[1], t[2]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q·kᵀ/√hd)·v per head, no mask; returns [B, L, nh·hd] (heads concatenated)."""
    hd = q.shape[-1]
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    o = p @ v  # [B, nh, L, hd]
    B, nh, L, _ = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, L, nh * hd)


def _chunks(m: np.ndarray, k: int):
    """Modulation output [B, k·H] -> k chunks [B, 1, H] (order shift, scale, gate, ...)."""
    H = m.shape[-1] // k
    return [m[:, None, i * H:(i + 1) * H] for i in range(k)]


def double_block(img, txt, vec, phi, w, n: int, c: FluxConfig):
    p = f"double_blocks.{n}."
    nh, hd = c.num_heads, c.head_dim
    s1, c1, g1, s2, c2, g2 = _chunks(linear(silu(vec), w, p + "img_mod.lin"), 6)
    ts1, tc1, tg1, ts2, tc2, tg2 = _chunks(linear(silu(vec), w, p + "txt_mod.lin"), 6)

    iq, ik, iv = split_heads(linear(modulate(img, s1, c1), w, p + "img_attn.qkv"), nh, hd)
    iq = rms_norm(iq, w[p + "img_attn.norm.query_norm.scale"])
    ik = rms_norm(ik, w[p + "img_attn.norm.key_norm.scale"])
    tq, tk, tv = split_heads(linear(modulate(txt, ts1, tc1), w, p + "txt_attn.qkv"), nh, hd)
    tq = rms_norm(tq, w[p + "txt_attn.norm.query_norm.scale"])
    tk = rms_norm(tk, w[p + "txt_attn.norm.key_norm.scale"])

    q = apply_rope(np.concatenate([tq, iq], axis=2), phi)  # text first
    k = apply_rope(np.concatenate([tk, ik], axis=2), phi)
    v = np.concatenate([tv, iv], axis=2)
    a = attention(q, k, v)
    lt = txt.shape[1]
    a_txt, a_img = a[:, :lt], a[:, lt:]

    img = img + g1 * linear(a_img, w, p + "img_attn.proj")
    img = img + g2 * linear(gelu_tanh(linear(modulate(img, s2, c2), w, p + "img_mlp.0")), w, p + "img_mlp.2")
    txt = txt + tg1 * linear(a_txt, w, p + "txt_attn.proj")
    txt = txt + tg2 * linear(gelu_tanh(linear(modulate(txt, ts2, tc2), w, p + "txt_mlp.0")), w, p + "txt_mlp.2")
    return img, txt


def single_block(x, vec, phi, w, n: int, c: FluxConfig):
    p = f"single_blocks.{n}."
    nh, hd, H = c.num_heads, c.head_dim, c.hidden_size
    s, sc, g = _chunks(linear(silu(vec), w, p + "modulation.lin"), 3)
    u = linear(modulate(x, s, sc), w, p + "linear1")
    q, k, v = split_heads(u[..., :3 * H], nh, hd)
    mlp = u[..., 3 * H:]
    q = apply_rope(rms_norm(q, w[p + "norm.query_norm.scale"]), phi)
    k = apply_rope(rms_norm(k, w[p + "norm.key_norm.scale"]), phi)
    a = attention(q, k, v)
    o = linear(np.concatenate([a, gelu_tanh(mlp)], axis=-1), w, p + "linear2")
    return x + g * o


def forward(model: FluxModel, img, img_ids, txt, txt_ids, y, timesteps, guidance=None,
            bf16_scalars: bool = False) -> np.ndarray:
    """FLUX transformer forward (docs/flux-model.md §5) in float64; returns [B, Limg, out_channels]."""
    c, w = model.config, model.weights
    img = np.asarray(img, dtype=F64)
    txt = np.asarray(txt, dtype=F64)
    y = np.asarray(y, dtype=F64)
    img_ids = np.asarray(img_ids, dtype=F64)
    txt_ids = np.asarray(txt_ids, dtype=F64)
    t = np.asarray(timesteps, dtype=F64).reshape(-1)
    B, limg, cin = img.shape
    _, ltxt, ctx = txt.shape
    if cin != c.in_channels or ctx != c.context_in_dim or y.shape != (B, c.vec_in_dim):
        raise ValueError(f"input shapes img {img.shape}, txt {txt.shape}, y {y.shape} do not fit the model "
                         f"(in {c.in_channels}, ctx {c.context_in_dim}, vec {c.vec_in_dim})")
    naxes = len(c.axes_dim)
    if img_ids.shape != (B, limg, naxes) or txt_ids.shape != (B, ltxt, naxes) or txt.shape[0] != B:
        raise ValueError(f"ids shapes img_ids {img_ids.shape}, txt_ids {txt_ids.shape} for B={B}")
    if t.shape != (B,):
        raise ValueError(f"timesteps has shape {t.shape}, expected ({B},)")

    def scaled(v):
        # s' = 1000·s (default), or BFL's bf16(1000·bf16(s)) (§6.4) when emulating quantisation.
        return bf16_round(TIME_FACTOR * bf16_round(v)) if bf16_scalars else TIME_FACTOR * v

    dim = c.time_embed_dim
    vec = mlp_embedder(timestep_embedding(scaled(t), dim, prescaled=True), w, "time_in")
    if c.guidance_embed:
        if guidance is None:
            raise ValueError("this is a guidance-distilled (dev) model: guidance [B] is required")
        g = np.asarray(guidance, dtype=F64).reshape(-1)
        if g.shape != (B,):
            raise ValueError(f"guidance has shape {g.shape}, expected ({B},)")
        vec = vec + mlp_embedder(timestep_embedding(scaled(g), dim, prescaled=True), w, "guidance_in")
    vec = vec + mlp_embedder(y, w, "vector_in")

    img = linear(img, w, "img_in")
    txt = linear(txt, w, "txt_in")
    phi = rope_angles(np.concatenate([txt_ids, img_ids], axis=1), c.axes_dim)  # text first

    for n in range(c.depth):
        img, txt = double_block(img, txt, vec, phi, w, n, c)
    x = np.concatenate([txt, img], axis=1)
    for n in range(c.depth_single):
        x = single_block(x, vec, phi, w, n, c)
    img = x[:, ltxt:]

    shift, scale = _chunks(linear(silu(vec), w, "final_layer.adaLN_modulation.1"), 2)  # BFL: shift, scale
    return linear(modulate(img, shift, scale), w, "final_layer.linear")


def run_inputs(model: FluxModel, inputs: Dict[str, np.ndarray], bf16_scalars: bool = False) -> np.ndarray:
    return forward(model, inputs["img"], inputs["img_ids"], inputs["txt"], inputs["txt_ids"], inputs["y"],
                   inputs["timesteps"], inputs.get("guidance"), bf16_scalars=bf16_scalars)


def image_ids(batch: int, h2: int, w2: int) -> np.ndarray:
    """§4.4: img_ids[n] = (0, n div w2, n mod w2), [B, h2·w2, 3] float32."""
    n = np.arange(h2 * w2)
    ids = np.stack([np.zeros_like(n), n // w2, n % w2], axis=-1).astype(np.float32)
    return np.broadcast_to(ids, (batch, h2 * w2, 3)).copy()


# ----------------------------------------------------------------------------------------------
# Self-tests
# ----------------------------------------------------------------------------------------------

def _random_inputs(c: FluxConfig, rng: np.random.Generator, B=2, h2=4, w2=4, ltxt=8) -> Dict[str, np.ndarray]:
    f32 = np.float32
    out = {
        "img": rng.standard_normal((B, h2 * w2, c.in_channels)).astype(f32),
        "img_ids": image_ids(B, h2, w2),
        "txt": rng.standard_normal((B, ltxt, c.context_in_dim)).astype(f32),
        "txt_ids": np.zeros((B, ltxt, len(c.axes_dim)), dtype=f32),
        "y": rng.standard_normal((B, c.vec_in_dim)).astype(f32),
        "timesteps": np.array([1.0, 0.37], dtype=f32)[:B],
    }
    if c.guidance_embed:
        out["guidance"] = np.array([3.5, 1.25], dtype=f32)[:B]
    return out


def selftest(lib: Optional[str], workdir: Optional[str]) -> bool:
    ok = True

    def report(name, passed, detail=""):
        nonlocal ok
        ok &= bool(passed)
        print(f"[{'PASS' if passed else 'FAIL'}] {name}{': ' + detail if detail else ''}")

    # 1. Sinusoidal embedding test values of §5.1.
    e = timestep_embedding(np.array([1.0]))[0]
    want_cos = [0.562379, 0.789615, 0.439954]
    want_sin = [0.826880, 0.613603, -0.898020]
    got_cos, got_sin = e[0:3], e[128:131]
    report("E(1.0)[0..2] and [128..130]",
           np.allclose(got_cos, want_cos, atol=5e-7) and np.allclose(got_sin, want_sin, atol=5e-7),
           f"{np.round(got_cos, 6).tolist()} / {np.round(got_sin, 6).tolist()}")
    f = np.exp(-math.log(MAX_PERIOD) * np.arange(128) / 128)
    report("f_127 ≈ 1.0746e-4", abs(f[127] - 1.0746e-4) < 5e-9, f"{f[127]:.6e}")

    # 2. bf16 quantisation examples of §6.4 (the optional emulation).
    q = bf16_round(1000.0 * bf16_round(np.array([3.5, 0.9, 0.988409])))
    report("§6.4 bf16 scalar examples 3.5→3504, 0.9→900, 0.988409→988",
           q.tolist() == [3504.0, 900.0, 988.0], str(q.tolist()))

    # 3. RoPE: identity at position 0; pair layout matches the 2×2 rotation per pair.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 3, 32))
    ids = np.zeros((1, 3, 3))
    report("RoPE identity at ids (0,0,0)", np.array_equal(apply_rope(x, rope_angles(ids, [4, 14, 14])), x))
    ids = rng.integers(0, 9, size=(1, 3, 3)).astype(F64)
    phi = rope_angles(ids, [4, 14, 14])
    r = apply_rope(x, phi)
    m = 5
    xx = x[0, 1, 2, 2 * m:2 * m + 2]
    cs, sn = math.cos(phi[0, 2, m]), math.sin(phi[0, 2, m])
    want = np.array([[cs, -sn], [sn, cs]]) @ xx
    report("RoPE pair m rotates (x[2m], x[2m+1]) by [[cos,-sin],[sin,cos]]",
           np.allclose(r[0, 1, 2, 2 * m:2 * m + 2], want, rtol=0, atol=1e-15))
    # axis-1 frequency of pair 2 (axis 0 has 2 pairs for d=4): ω = θ^(-0/14) = 1 → φ = p_1
    report("RoPE pair 2 is axis 1, j = 0 (ω = 1)", phi[0, 2, 2] == ids[0, 2, 1])

    # 4. split_heads + attention against a scalar-loop evaluation for one (sample, head, query).
    B_, L_, nh_, hd_ = 2, 5, 3, 4
    qkv = rng.standard_normal((B_, L_, 3 * nh_ * hd_))
    q_, k_, v_ = split_heads(qkv, nh_, hd_)
    o_ = attention(q_, k_, v_)
    b_, h_, i_ = 1, 2, 3
    col = lambda part, j: qkv[b_, j, part * nh_ * hd_ + h_ * hd_: part * nh_ * hd_ + (h_ + 1) * hd_]
    sc = [sum(col(0, i_)[d] * col(1, j)[d] for d in range(hd_)) / math.sqrt(hd_) for j in range(L_)]
    ex = [math.exp(v0 - max(sc)) for v0 in sc]
    want = sum((ex[j] / sum(ex)) * col(2, j) for j in range(L_))
    report("attention head split/merge vs scalar loop",
           np.allclose(o_[b_, i_, h_ * hd_:(h_ + 1) * hd_], want, rtol=1e-13, atol=1e-14))

    # 5. safetensors reader/writer: decode tables and a round trip.
    t8 = stnp.F8_E4M3_TABLE
    report("F8_E4M3: 0x7E = 448, 0x7F/0xFF NaN, 0x01 = 2^-9, 0x08 = 2^-6, 0x38 = 1, 0xC0 = -2",
           t8[0x7E] == 448 and np.isnan(t8[0x7F]) and np.isnan(t8[0xFF]) and t8[0x01] == 2.0 ** -9
           and t8[0x08] == 2.0 ** -6 and t8[0x38] == 1.0 and t8[0xC0] == -2.0
           and np.isfinite(np.delete(t8, [0x7F, 0xFF])).all())
    t5 = stnp.F8_E5M2_TABLE
    report("F8_E5M2: 0x7B = 57344, 0x7C = inf, 0x7D NaN, 0x3C = 1",
           t5[0x7B] == 57344 and np.isposinf(t5[0x7C]) and np.isnan(t5[0x7D]) and t5[0x3C] == 1.0)
    bits = stnp.f32_to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875, -3.5, 1e-40], dtype=np.float32))
    report("bf16 round to nearest even (1+2^-8 -> 1, 1+3·2^-8 -> 1+2^-6)",
           bits.tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC060, 0x0001], str([hex(b) for b in bits.tolist()]))
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        fn = os.path.join(td, "rt.safetensors")
        data = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
                "c": rng.standard_normal(3).astype(np.float16), "d": np.array([1.5, -2.25]),
                "e": np.array([1.0, 3.0, -0.5], dtype=np.float32)}
        stnp.save_file(fn, data, metadata={"k": "v"}, dtypes={"e": "BF16"})
        back, meta, dts = stnp.load_file(fn, with_dtypes=True)
        hdr, start = stnp.read_header(fn)
        offs = sorted(tuple(v["data_offsets"]) for k, v in hdr.items() if k != "__metadata__")
        contiguous = offs[0][0] == 0 and all(a[1] == b[0] for a, b in zip(offs, offs[1:])) and \
            offs[-1][1] == os.path.getsize(fn) - start and start % 8 == 0
        report("safetensors write/read round trip (F32, I64, F16, F64, BF16; no holes; metadata)",
               all(np.array_equal(back[k], data[k]) for k in data) and meta == {"k": "v"}
               and dts["e"] == "BF16" and back["d"].dtype == np.float64 and contiguous)

    if lib is None:
        print("[SKIP] model-based self-tests need --lib PATH/libfluxnative.so (tiny-model writer)")
        return ok

    import tempfile
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_flux_goldens import TinyWriter  # the ctypes bridge lives with the golden script

    writer = TinyWriter(lib)
    tmp = workdir or tempfile.mkdtemp(prefix="fluxref-selftest-")
    for variant in ("dev", "schnell"):
        bfl_path = os.path.join(tmp, f"{variant}-bfl.safetensors")
        dif_path = os.path.join(tmp, f"{variant}-diffusers")
        writer.write(bfl_path, variant=variant, layout="bfl", dtype="f32", seed=1)
        writer.write(dif_path, variant=variant, layout="diffusers", dtype="f32", seed=1)
        mb, md = load_model(bfl_path), load_model(dif_path)
        report(f"{variant}: config inferred", mb.config.guidance_embed == (variant == "dev"),
               f"H={mb.config.hidden_size} heads={mb.config.num_heads} hd={mb.config.head_dim} "
               f"depth={mb.config.depth}/{mb.config.depth_single} axes={mb.config.axes_dim} "
               f"({mb.config.axes_dim_source}); diffusers axes from {md.config.axes_dim_source}")
        same_w = all(np.array_equal(mb.weights[k], md.weights[k]) for k in mb.weights) and \
            set(mb.weights) == set(md.weights)
        report(f"{variant}: diffusers → BFL conversion reproduces the BFL tensors exactly", same_w)

        # Sharded diffusers folder (index.json) and 16-bit BFL files load to the same structure.
        shard_path = os.path.join(tmp, f"{variant}-diffusers-3shards")
        writer.write(shard_path, variant=variant, layout="diffusers", dtype="f32", seed=1, shards=3)
        ms = load_model(shard_path)
        report(f"{variant}: 3-shard diffusers folder (index.json) == single file",
               any(f.endswith(".index.json") for f in os.listdir(shard_path))
               and all(np.array_equal(ms.weights[k], md.weights[k]) for k in md.weights))
        bf_path = os.path.join(tmp, f"{variant}-bfl-bf16.safetensors")
        writer.write(bf_path, variant=variant, layout="bfl", dtype="bf16", seed=1)
        mbf = load_model(bf_path)
        report(f"{variant}: BF16 file loads (stored dtypes {sorted(set(mbf.stored_dtypes.values()))})",
               set(mbf.stored_dtypes.values()) == {"BF16"} and set(mbf.weights) == set(mb.weights))

        inp = _random_inputs(mb.config, np.random.default_rng(11))
        ob, od = run_inputs(mb, inp), run_inputs(md, inp)
        rel = float(np.max(np.abs(ob - od)) / np.max(np.abs(ob)))
        report(f"{variant}: BFL and diffusers layouts give the same output", rel <= 1e-12, f"max rel {rel:.2e}")

        # Permutation: swapping two text tokens (zero txt_ids) changes nothing in the image output.
        perm = dict(inp)
        t = inp["txt"].copy()
        t[:, [1, 5]] = t[:, [5, 1]]
        perm["txt"] = t
        op = run_inputs(mb, perm)
        rel = float(np.max(np.abs(op - ob)) / np.max(np.abs(ob)))
        report(f"{variant}: swapping txt tokens 1 and 5 leaves the image output unchanged",
               rel <= 1e-12, f"max rel {rel:.2e}")
        # ...while a change of a text token's content does change it (the test above is not vacuous).
        pert = dict(inp)
        t = inp["txt"].copy()
        t[:, 1] += 0.5
        pert["txt"] = t
        rel_c = float(np.max(np.abs(run_inputs(mb, pert) - ob)) / np.max(np.abs(ob)))
        report(f"{variant}: perturbing a txt token does change the output", rel_c > 1e-4, f"max rel {rel_c:.2e}")
        # ...and swapping two image tokens does not merely permute the output (image RoPE is live).
        pimg = dict(inp)
        im = inp["img"].copy()
        im[:, [1, 6]] = im[:, [6, 1]]
        pimg["img"] = im
        oi = run_inputs(mb, pimg)
        oi[:, [1, 6]] = oi[:, [6, 1]]
        rel_i = float(np.max(np.abs(oi - ob)) / np.max(np.abs(ob)))
        report(f"{variant}: swapping two img tokens is not equivariant (positions matter)", rel_i > 1e-4,
               f"max rel {rel_i:.2e}")

        # Batch independence: sample 1 alone equals sample 1 of the batch.
        one = {k: v[1:2] for k, v in inp.items()}
        rel_b = float(np.max(np.abs(run_inputs(mb, one)[0] - ob[1])) / np.max(np.abs(ob[1])))
        report(f"{variant}: batch of 2 == per-sample runs (per-sample timesteps/guidance)", rel_b <= 1e-13,
               f"max rel {rel_b:.2e}")
        if variant == "dev":
            g2 = dict(inp)
            g2["guidance"] = inp["guidance"] + 1.0
            rel_g = float(np.max(np.abs(run_inputs(mb, g2) - ob)) / np.max(np.abs(ob)))
            report("dev: guidance changes the output", rel_g > 1e-4, f"max rel {rel_g:.2e}")
        else:
            g2 = dict(inp)
            g2["guidance"] = np.array([9.0, 2.0], dtype=np.float32)
            report("schnell: guidance is ignored", np.array_equal(run_inputs(mb, g2), ob))
    return ok


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="BFL .safetensors file, diffusers transformer/ folder or model root")
    ap.add_argument("--inputs", help="safetensors with img, img_ids, txt, txt_ids, y, timesteps[, guidance]")
    ap.add_argument("--out", help="output safetensors (out F32, out_f64 F64)")
    ap.add_argument("--bf16-scalars", action="store_true",
                    help="quantise timesteps/guidance as BFL does (§6.4) before the embedding")
    ap.add_argument("--selftest", action="store_true", help="run the self-checks")
    ap.add_argument("--lib", help="libfluxnative.so, for the self-checks that need tiny models")
    ap.add_argument("--workdir", help="where the self-checks write tiny models (default: a temp dir)")
    args = ap.parse_args(argv)

    if args.selftest:
        lib = args.lib
        if lib is None:
            guess = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "h-ref", "lib",
                                 "libfluxnative.so")
            lib = os.path.abspath(guess) if os.path.isfile(guess) else None
        return 0 if selftest(lib, args.workdir) else 1
    if not (args.model and args.inputs and args.out):
        ap.error("--model, --inputs and --out are required (or --selftest)")
    model = load_model(args.model)
    inputs, _ = stnp.load_file(args.inputs)
    out = run_inputs(model, inputs, bf16_scalars=args.bf16_scalars)
    fp = fingerprint(model.stored)
    meta = {
        "producer": "tools/reference/flux_reference.py (float64 NumPy reference, FluxNative docs/flux-model.md §5)",
        "numpy_version": np.__version__,
        "model_path": os.path.abspath(args.model),
        "config": json.dumps(model.config.as_dict(), sort_keys=True),
        "weights_fingerprint": json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                                           "tensor_count": fp["tensor_count"]}),
        "bf16_scalars": "true" if args.bf16_scalars else "false",
    }
    stnp.save_file(args.out, {"out_f64": out, "out": out.astype(np.float32)}, metadata=meta)
    print(f"wrote {args.out}: out {list(out.shape)}, max |out| {np.max(np.abs(out)):.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
