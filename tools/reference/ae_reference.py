#!/usr/bin/env python3
"""Independent float64 NumPy reference of the FLUX.1 autoencoder (decoder and encoder).

Written from FluxNative's specification (docs/flux-model.md, §2.2, §7, §8.3, §10) alone —
not from BFL's or diffusers' code and not from FluxNative's C++ engine — so that it can serve as an
independent check of the engine.

Building blocks (§7.1): GroupNorm with 32 groups (eps 1e-6, biased variance, per-channel affine),
ResnetBlock (norm1 → SiLU → conv1 3×3 → norm2 → SiLU → conv2 3×3, 1×1 `nin_shortcut` when the width
changes), single-head mid-block attention with scale 1/√C, nearest ×2 upsample + 3×3 conv, downsample
by a (0,1,0,1) zero pad + 3×3 stride-2 conv, SiLU.

Structure (§7.2/§7.3, generalised to any number of levels L and num_res_blocks R, as FluxNative's tiny
models use it; the published model has ch 128, ch_mult [1, 2, 4, 4], R = 2):
  decoder: conv_in z→W[L-1]; mid (block_1, attn_1, block_2); levels i = L-1 … 0, each R+1 ResnetBlocks
           to width W[i], then an upsample for i > 0; norm_out → SiLU → conv_out W[0]→3.
  encoder: conv_in 3→W[0]; levels i = 0 … L-1, each R ResnetBlocks to width W[i], then a downsample for
           i < L-1; mid; norm_out → SiLU → conv_out W[L-1]→2z; channels 0..z-1 are the posterior mean.
All of it (widths, L, R, z) is inferred from the tensor shapes and the tensor set is checked against it.

Latent normalisation (§7.4): `decode` takes FLUX-normalised latents z and feeds z/scale + shift to the
decoder; `encode` returns scale·(mean − shift). scale/shift come from a diffusers config.json
(`scaling_factor`, `shift_factor`), else 0.3611 / 0.1159 (§2.2).

Pixel conversion (§7.5): clamp to [-1, 1]; BFL truncates 127.5·(x+1) toward zero, diffusers rounds
255·(x/2 + 0.5) (NumPy round-half-to-even; ties do not occur on real data). Output interleaved
[B, H, W, 3] uint8.

Checkpoint layouts: BFL `ae.safetensors` names (§8.3) and the diffusers `AutoencoderKL` folder
(`vae/` or the folder itself, config.json + weights), mapped to BFL names: up_blocks.i ↔ up.(L-1-i),
resnets ↔ block, conv_shortcut ↔ nin_shortcut, mid_block.resnets.0/1 ↔ mid.block_1/2,
attentions.0.{group_norm,to_q,to_k,to_v,to_out.0} ↔ attn_1.{norm,q,k,v,proj_out} (the [C, C] linears
become [C, C, 1, 1] convs), conv_norm_out ↔ norm_out, {up,down}samplers.0 ↔ {up,down}sample.

Every operation works in the dtype of its inputs: the model's weights are float64 (upcast from the
stored dtype) and inputs are upcast to float64 by `decode`/`encode`; `AEModel.astype(np.float32)` plus
float32 inputs gives an all-float32 run (used to estimate what an f32 engine can achieve).

CLI:
  ae_reference.py --model PATH --inputs in.safetensors --out out.safetensors
      (inputs: `latents` [B,z,h,w] and/or `pixels` [B,3,H,W]; outputs decoded, encoded, rgb_*)
  ae_reference.py --selftest
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
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as stnp  # noqa: E402

F64 = np.float64
EPS = 1e-6
GROUPS = 32
DEFAULT_SCALE = 0.3611
DEFAULT_SHIFT = 0.1159


# ----------------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------------

@dataclass
class AEConfig:
    ch: int                  # base width (W[0])
    ch_mult: List[int]       # W[i] = ch·ch_mult[i]
    num_res_blocks: int      # encoder blocks per level; the decoder has one more
    z_channels: int
    in_channels: int         # image channels (3)
    out_ch: int
    scale_factor: float
    shift_factor: float
    scale_source: str = ""
    layout: str = ""

    @property
    def levels(self) -> int:
        return len(self.ch_mult)

    @property
    def widths(self) -> List[int]:
        return [self.ch * m for m in self.ch_mult]

    @property
    def downscale(self) -> int:
        return 2 ** (self.levels - 1)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["levels"] = self.levels
        d["downscale"] = self.downscale
        return d


@dataclass
class AEModel:
    config: AEConfig
    weights: Dict[str, np.ndarray]          # BFL names, float64 (or the dtype given to astype)
    stored: Dict[str, np.ndarray] = field(default_factory=dict)  # as read (decoded), stored names
    stored_dtypes: Dict[str, str] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)

    def astype(self, dtype) -> "AEModel":
        return AEModel(self.config, {k: v.astype(dtype) for k, v in self.weights.items()},
                       self.stored, self.stored_dtypes, self.metadata)


def _indices(names, pattern: str) -> List[int]:
    pat = re.compile(pattern)
    idx = sorted({int(m.group(1)) for n in names for m in [pat.match(n)] if m})
    if idx != list(range(len(idx))):
        raise ValueError(f"blocks matching {pattern} are not numbered 0..{len(idx) - 1}: {idx}")
    return idx


def diffusers_to_bfl(d: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Renames diffusers AutoencoderKL tensors to BFL ae.safetensors names (docs/flux-model.md §8.3)."""
    levels = len(_indices(d, r"decoder\.up_blocks\.(\d+)\."))
    out: Dict[str, np.ndarray] = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for name, t in d.items():
        n = name
        n = re.sub(r"\.conv_shortcut\.", ".nin_shortcut.", n)
        n = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", n)
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(.*)$", n)
        if m:
            i = levels - 1 - int(m.group(1))
            rest = re.sub(r"^resnets\.", "block.", m.group(2))
            rest = re.sub(r"^upsamplers\.0\.", "upsample.", rest)
            n = f"decoder.up.{i}.{rest}"
        m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", n)
        if m:
            rest = re.sub(r"^resnets\.", "block.", m.group(2))
            rest = re.sub(r"^downsamplers\.0\.", "downsample.", rest)
            n = f"encoder.down.{m.group(1)}.{rest}"
        m = re.match(r"^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.*)$", n)
        if m:
            n = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\."
                     r"(weight|bias)$", n)
        if m:
            n = f"{m.group(1)}.mid.attn_1.{attn[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight" and t.ndim == 2:
                t = t.reshape(t.shape[0], t.shape[1], 1, 1)   # linear [C, C] -> 1×1 conv [C, C, 1, 1]
        if n in out:
            raise ValueError(f"two diffusers tensors map to {n}")
        out[n] = t
    return out


def _resolve_diffusers_folder(path: str) -> Optional[str]:
    if not os.path.isdir(path):
        return None
    sub = os.path.join(path, "vae")
    return sub if os.path.isdir(sub) else path


def infer_config(w: Dict[str, np.ndarray]) -> AEConfig:
    def shape(name):
        if name not in w:
            raise ValueError(f"missing tensor {name}")
        return tuple(w[name].shape)

    ch = shape("decoder.conv_out.weight")[1]
    levels = len(_indices(w, r"decoder\.up\.(\d+)\."))
    if levels == 0:
        raise ValueError("no decoder.up.N tensors")
    widths = [shape(f"decoder.up.{i}.block.0.conv1.weight")[0] for i in range(levels)]
    if any(x % ch for x in widths) or widths[0] != ch:
        raise ValueError(f"level widths {widths} are not multiples of ch {ch}")
    nrb = len(_indices(w, r"encoder\.down\.0\.block\.(\d+)\."))
    z = shape("decoder.conv_in.weight")[1]
    return AEConfig(ch=ch, ch_mult=[x // ch for x in widths], num_res_blocks=nrb, z_channels=z,
                    in_channels=shape("encoder.conv_in.weight")[1], out_ch=shape("decoder.conv_out.weight")[0],
                    scale_factor=DEFAULT_SCALE, shift_factor=DEFAULT_SHIFT, scale_source="docs/flux-model.md §2.2 default")


def expected_shapes(c: AEConfig) -> Dict[str, Tuple[int, ...]]:
    s: Dict[str, Tuple[int, ...]] = {}
    W = c.widths
    L = c.levels

    def conv(name, o, i, k):
        s[name + ".weight"] = (o, i, k, k)
        s[name + ".bias"] = (o,)

    def norm(name, n):
        s[name + ".weight"] = (n,)
        s[name + ".bias"] = (n,)

    def resnet(p, cin, cout):
        norm(p + ".norm1", cin)
        conv(p + ".conv1", cout, cin, 3)
        norm(p + ".norm2", cout)
        conv(p + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(p + ".nin_shortcut", cout, cin, 1)

    def mid(p, n):
        resnet(p + ".mid.block_1", n, n)
        norm(p + ".mid.attn_1.norm", n)
        for q in ("q", "k", "v", "proj_out"):
            conv(p + ".mid.attn_1." + q, n, n, 1)
        resnet(p + ".mid.block_2", n, n)

    # encoder
    conv("encoder.conv_in", W[0], c.in_channels, 3)
    cin = W[0]
    for i in range(L):
        for j in range(c.num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", cin, W[i])
            cin = W[i]
        if i != L - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder", cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", 2 * c.z_channels, cin, 3)
    # decoder
    cin = W[L - 1]
    conv("decoder.conv_in", cin, c.z_channels, 3)
    mid("decoder", cin)
    for i in reversed(range(L)):
        for j in range(c.num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, W[i])
            cin = W[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", c.out_ch, cin, 3)
    return s


def load_model(path: str) -> AEModel:
    """Loads a FLUX autoencoder in BFL (one file) or diffusers (folder) layout; float64 BFL names."""
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
    if "decoder.up_blocks.0.resnets.0.conv1.weight" in stored:
        layout = "diffusers"
        bfl = diffusers_to_bfl(stored)
    elif "decoder.up.0.block.0.conv1.weight" in stored:
        layout = "bfl"
        bfl = dict(stored)
    else:
        raise ValueError(f"{path}: neither a BFL (decoder.up.N) nor a diffusers (decoder.up_blocks.N) autoencoder")
    weights = {k: np.asarray(v, dtype=F64) for k, v in bfl.items()}
    cfg = infer_config(weights)
    cfg.layout = layout
    if diffusers_config is not None:
        if "scaling_factor" in diffusers_config:
            cfg.scale_factor = float(diffusers_config["scaling_factor"])
            cfg.shift_factor = float(diffusers_config.get("shift_factor") or 0.0)
            cfg.scale_source = "config.json scaling_factor/shift_factor"
        checks = {"block_out_channels": cfg.widths, "layers_per_block": cfg.num_res_blocks,
                  "latent_channels": cfg.z_channels, "in_channels": cfg.in_channels,
                  "out_channels": cfg.out_ch, "norm_num_groups": GROUPS}
        for key, inferred in checks.items():
            if key in diffusers_config and diffusers_config[key] != inferred:
                raise ValueError(f"config.json {key}={diffusers_config[key]!r} but tensors say {inferred!r}")
        for key in ("use_quant_conv", "use_post_quant_conv"):
            if diffusers_config.get(key):
                raise ValueError(f"config.json {key} is true: not a FLUX autoencoder (§2.2)")
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(weights))
    extra = sorted(set(weights) - set(want))
    if missing or extra:
        raise ValueError(f"{path}: tensor set mismatch: missing {missing[:6]}, unexpected {extra[:6]}")
    for k, shp in want.items():
        if tuple(weights[k].shape) != shp:
            raise ValueError(f"{path}: {k} has shape {tuple(weights[k].shape)}, expected {shp}")
    if any(wd % GROUPS for wd in cfg.widths):
        raise ValueError(f"level widths {cfg.widths} are not multiples of {GROUPS} (GroupNorm32)")
    return AEModel(config=cfg, weights=weights, stored=stored, stored_dtypes=dtypes, metadata=metadata)


def fingerprint(stored: Dict[str, np.ndarray]) -> dict:
    """Same definition as flux_reference.fingerprint: per stored tensor, float64 sum and sum of squares
    (np.sum pairwise over the flattened tensor), added in sorted-name order."""
    total = 0.0
    total_sq = 0.0
    for name in sorted(stored):
        x = np.asarray(stored[name], dtype=F64).ravel()
        total += float(np.sum(x))
        total_sq += float(np.sum(x * x))
    return {"sum": total, "sum_sq": total_sq, "tensor_count": len(stored)}


# ----------------------------------------------------------------------------------------------
# Building blocks (docs/flux-model.md §7.1); x is [B, C, H, W]
# ----------------------------------------------------------------------------------------------

def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1,
           pad: Tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Cross-correlation as PyTorch's Conv2d: weight [Cout, Cin, kh, kw]; pad = (top, bottom, left, right)
    zeros; out[b, o, y, x] = bias[o] + Σ_{c,i,j} w[o, c, i, j]·xp[b, c, y·stride + i, x·stride + j]."""
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    kh, kw = weight.shape[2:]
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # [B, C, Ho, Wo, kh, kw]
    out = np.einsum("bcyxij,ocij->boyx", win, weight, optimize=True)
    return out + bias[None, :, None, None]


def conv(x: np.ndarray, w: Dict[str, np.ndarray], name: str, stride: int = 1, pad=None) -> np.ndarray:
    weight = w[name + ".weight"]
    if pad is None:  # "same" padding for odd kernels at stride 1
        p = weight.shape[2] // 2
        pad = (p, p, p, p)
    return conv2d(x, weight, w[name + ".bias"], stride, pad)


def group_norm(x: np.ndarray, w: Dict[str, np.ndarray], name: str) -> np.ndarray:
    """32 groups of C/32 consecutive channels; statistics over (group channels × H × W), biased
    variance, eps 1e-6; per-channel affine."""
    B, C, H, W = x.shape
    g = x.reshape(B, GROUPS, C // GROUPS, H, W)
    mean = g.mean(axis=(2, 3, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(2, 3, 4), keepdims=True)
    y = ((g - mean) / np.sqrt(var + EPS)).reshape(B, C, H, W)
    return y * w[name + ".weight"][None, :, None, None] + w[name + ".bias"][None, :, None, None]


def resnet_block(x: np.ndarray, w: Dict[str, np.ndarray], p: str) -> np.ndarray:
    h = conv(silu(group_norm(x, w, p + ".norm1")), w, p + ".conv1")
    h = conv(silu(group_norm(h, w, p + ".norm2")), w, p + ".conv2")
    shortcut = conv(x, w, p + ".nin_shortcut") if (p + ".nin_shortcut.weight") in w else x
    return shortcut + h


def attn_block(x: np.ndarray, w: Dict[str, np.ndarray], p: str) -> np.ndarray:
    """Single-head self-attention over the H·W positions (row-major), scale 1/√C; residual."""
    B, C, H, W = x.shape
    a = group_norm(x, w, p + ".norm")
    tokens = a.reshape(B, C, H * W).transpose(0, 2, 1)   # [B, N, C]

    def proj(t, q):
        return t @ w[f"{p}.{q}.weight"][:, :, 0, 0].T + w[f"{p}.{q}.bias"]

    q, k, v = proj(tokens, "q"), proj(tokens, "k"), proj(tokens, "v")
    s = q @ k.transpose(0, 2, 1) / math.sqrt(C)
    s = s - s.max(axis=-1, keepdims=True)
    pr = np.exp(s)
    pr /= pr.sum(axis=-1, keepdims=True)
    o = proj(pr @ v, "proj_out")                            # [B, N, C]
    return x + o.transpose(0, 2, 1).reshape(B, C, H, W)


def upsample(x: np.ndarray, w: Dict[str, np.ndarray], p: str) -> np.ndarray:
    x = x.repeat(2, axis=2).repeat(2, axis=3)              # nearest neighbour ×2
    return conv(x, w, p + ".conv")


def downsample(x: np.ndarray, w: Dict[str, np.ndarray], p: str) -> np.ndarray:
    return conv(x, w, p + ".conv", stride=2, pad=(0, 1, 0, 1))   # zero pad bottom and right by one


def mid_block(x: np.ndarray, w: Dict[str, np.ndarray], p: str) -> np.ndarray:
    x = resnet_block(x, w, p + ".mid.block_1")
    x = attn_block(x, w, p + ".mid.attn_1")
    return resnet_block(x, w, p + ".mid.block_2")


# ----------------------------------------------------------------------------------------------
# Decoder / encoder (docs/flux-model.md §7.2, §7.3) and the normalised entry points (§7.4)
# ----------------------------------------------------------------------------------------------

def decoder(model: AEModel, z_vae: np.ndarray) -> np.ndarray:
    """Decoder on VAE-space latents [B, z, h, w] → [B, 3, h·2^(L-1), w·2^(L-1)] (not clamped)."""
    c, w = model.config, model.weights
    h = conv(z_vae, w, "decoder.conv_in")
    h = mid_block(h, w, "decoder")
    for i in reversed(range(c.levels)):
        for j in range(c.num_res_blocks + 1):
            h = resnet_block(h, w, f"decoder.up.{i}.block.{j}")
        if i != 0:
            h = upsample(h, w, f"decoder.up.{i}.upsample")
    h = silu(group_norm(h, w, "decoder.norm_out"))
    return conv(h, w, "decoder.conv_out")


def encoder(model: AEModel, x: np.ndarray) -> np.ndarray:
    """Encoder on pixels [B, 3, H, W] in [-1, 1] → moments [B, 2z, H/f, W/f] (mean, then log-variance)."""
    c, w = model.config, model.weights
    h = conv(x, w, "encoder.conv_in")
    for i in range(c.levels):
        for j in range(c.num_res_blocks):
            h = resnet_block(h, w, f"encoder.down.{i}.block.{j}")
        if i != c.levels - 1:
            h = downsample(h, w, f"encoder.down.{i}.downsample")
    h = mid_block(h, w, "encoder")
    h = silu(group_norm(h, w, "encoder.norm_out"))
    return conv(h, w, "encoder.conv_out")


def _dtype_of(model: AEModel):
    return next(iter(model.weights.values())).dtype


def decode(model: AEModel, latents: np.ndarray) -> np.ndarray:
    """FLUX-normalised latents [B, z, h, w] → decoder output (before clamping): z/scale + shift first."""
    c = model.config
    z = np.asarray(latents, dtype=_dtype_of(model))
    if z.ndim != 4 or z.shape[1] != c.z_channels:
        raise ValueError(f"latents must be [B, {c.z_channels}, h, w], got {z.shape}")
    return decoder(model, z / c.scale_factor + c.shift_factor)


def encode(model: AEModel, pixels: np.ndarray) -> np.ndarray:
    """Pixels [B, 3, H, W] in [-1, 1] (H, W multiples of 2^(L-1)) → scale·(posterior mean − shift)."""
    c = model.config
    x = np.asarray(pixels, dtype=_dtype_of(model))
    f = c.downscale
    if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[2] % f or x.shape[3] % f:
        raise ValueError(f"pixels must be [B, {c.in_channels}, H, W] with H, W multiples of {f}, got {x.shape}")
    mean = encoder(model, x)[:, :c.z_channels]
    return c.scale_factor * (mean - c.shift_factor)


def to_uint8(x: np.ndarray, mode: str) -> np.ndarray:
    """§7.5: [B, 3, H, W] decoder output → [B, H, W, 3] uint8. Computed in float64 from the values given.
    truncate (BFL): trunc(127.5·(clamp(x, -1, 1) + 1)); round (diffusers): round(255·clamp(x/2 + 0.5, 0, 1))."""
    x = np.asarray(x, dtype=F64)
    if mode == "truncate":
        v = np.trunc(127.5 * (np.clip(x, -1.0, 1.0) + 1.0))
    elif mode == "round":
        v = np.round(255.0 * np.clip(x / 2.0 + 0.5, 0.0, 1.0))
    else:
        raise ValueError(f"mode {mode!r}: truncate or round")
    return v.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def rgb_margins(x: np.ndarray) -> Dict[str, float]:
    """How close the unclamped values come to a quantisation boundary (in LSB): for truncate the
    distance of 127.5(x+1) to the nearest integer, for round to the nearest half-integer. A tiny margin
    means an engine within tolerance of `x` may still differ by one LSB there."""
    x = np.asarray(x, dtype=F64)
    inside = np.abs(x) < 1.0
    u = 127.5 * (x[inside] + 1.0)
    if u.size == 0:
        return {"truncate": float("inf"), "round": float("inf"), "clamped_fraction": 1.0}
    return {"truncate": float(np.min(np.abs(u - np.round(u)))),
            "round": float(np.min(np.abs(u - np.floor(u) - 0.5))),
            "clamped_fraction": float(1.0 - inside.mean())}


# ----------------------------------------------------------------------------------------------
# Self-tests
# ----------------------------------------------------------------------------------------------

def _naive_conv(x, weight, bias, stride, pad):
    top, bottom, left, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    B, C, H, W = xp.shape
    O, _, kh, kw = weight.shape
    Ho, Wo = (H - kh) // stride + 1, (W - kw) // stride + 1
    out = np.zeros((B, O, Ho, Wo))
    for y in range(Ho):
        for xx in range(Wo):
            patch = xp[:, :, y * stride:y * stride + kh, xx * stride:xx * stride + kw]
            out[:, :, y, xx] = np.einsum("bcij,ocij->bo", patch, weight) + bias
    return out


def selftest(lib: Optional[str] = None, workdir: Optional[str] = None) -> bool:
    ok = True

    def report(name, passed, detail=""):
        nonlocal ok
        ok &= bool(passed)
        print(f"[{'PASS' if passed else 'FAIL'}] {name}{': ' + detail if detail else ''}")

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    wt = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    for stride, pad in ((1, (1, 1, 1, 1)), (2, (0, 1, 0, 1)), (1, (0, 0, 0, 0))):
        d = np.max(np.abs(conv2d(x, wt, b, stride, pad) - _naive_conv(x, wt, b, stride, pad)))
        report(f"conv2d stride {stride} pad {pad} vs loops", d < 1e-12, f"{d:.1e}")
    xe = rng.standard_normal((1, 2, 6, 8))
    we = rng.standard_normal((2, 2, 3, 3))
    report("downsample of 6×8 is 3×4",
           conv2d(xe, we, np.zeros(2), 2, (0, 1, 0, 1)).shape == (1, 2, 3, 4))
    g = rng.standard_normal((2, 64, 3, 5))
    gw = {"n.weight": np.ones(64), "n.bias": np.zeros(64)}
    y = group_norm(g, gw, "n").reshape(2, 32, 2 * 15)
    report("GroupNorm32 groups have mean 0, var 1/(1+eps/var)",
           np.allclose(y.mean(-1), 0, atol=1e-12) and np.allclose(y.var(-1), 1, atol=1e-5))
    u = np.array([[[[-1.5, -1.0, -0.25, 0.0]], [[0.5, 0.999, 1.0, 2.0]], [[0.125, 0.0, 0.0, 0.0]]]])
    got_t, got_r = to_uint8(u, "truncate")[0, 0].tolist(), to_uint8(u, "round")[0, 0].tolist()
    report("to_uint8 truncate (clamp, toward zero, interleaved)",
           got_t == [[0, 191, 143], [0, 254, 127], [95, 255, 127], [127, 255, 127]], str(got_t))
    report("to_uint8 round (clamp, nearest, 127.5 -> 128 half-to-even)",
           got_r == [[0, 191, 143], [0, 255, 128], [96, 255, 128], [128, 255, 128]], str(got_r))
    return ok


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="BFL ae.safetensors file, or a diffusers vae/ folder or model root")
    ap.add_argument("--inputs", help="safetensors with latents [B,z,h,w] and/or pixels [B,3,H,W]")
    ap.add_argument("--out", help="output safetensors")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)
    if args.selftest:
        return 0 if selftest() else 1
    if not (args.model and args.inputs and args.out):
        ap.error("--model, --inputs and --out are required (or --selftest)")
    model = load_model(args.model)
    inputs, _ = stnp.load_file(args.inputs)
    out = {}
    if "latents" in inputs:
        dec = decode(model, inputs["latents"]).astype(np.float32)
        out.update(decoded=dec, rgb_truncate=to_uint8(dec, "truncate"), rgb_round=to_uint8(dec, "round"))
    if "pixels" in inputs:
        out["encoded"] = encode(model, inputs["pixels"]).astype(np.float32)
    if not out:
        ap.error("inputs hold neither `latents` nor `pixels`")
    fp = fingerprint(model.stored)
    meta = {"producer": "tools/reference/ae_reference.py (float64 NumPy reference, FluxNative docs/flux-model.md §7)",
            "numpy_version": np.__version__, "model_path": os.path.abspath(args.model),
            "config": json.dumps(model.config.as_dict(), sort_keys=True),
            "weights_fingerprint": json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                                               "tensor_count": fp["tensor_count"]})}
    stnp.save_file(args.out, out, metadata=meta)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
