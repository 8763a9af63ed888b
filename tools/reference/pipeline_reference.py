#!/usr/bin/env python3
"""Independent float64 NumPy reference of the FLUX.1 text-to-image sampling pipeline after the text
encoders: schedule, packing, position ids, Euler loop, unpacking, autoencoder decode, 8-bit conversion.

Written from FluxNative's specification (docs/flux-model.md §4.3, §4.4, §6.1, §6.2, §7,
§10) alone — not from BFL's or diffusers' code and not from FluxNative's C++ engine. The transformer is
tools/reference/flux_reference.py, the autoencoder tools/reference/ae_reference.py (both float64).

* Schedule (§6.1), float64: t_i = 1 − i/N, i = 0..N; dev (shift=True) maps t ↦ e^μ/(e^μ + (1/t − 1))
  with μ = m·Limg + b on the line through (256, 0.5) and (4096, 1.15), Limg = packed image-token count;
  the end points stay 1 and 0. schnell (shift=False) keeps the linspace.
* Packing (§4.3): P[n, k] = Z[c, y, x] with n = (y div 2)·(w/2) + (x div 2), k = 4c + 2(y mod 2) + (x mod 2).
* Ids (§4.4): img_ids[n] = (0, n div w2, n mod w2), txt_ids zeros; the model concatenates text first.
* Euler loop (§6.2), float64 throughout: for each (t_cur, t_next): v = model(img, …, t = t_cur,
  guidance); img ← img + (t_next − t_cur)·v. Timesteps and guidance are passed UNQUANTISED (the model
  embeds E(1000·t)); `bf16_scalars=True` applies BFL's §6.4 quantisation inside the model instead
  (the Euler step itself always uses the float64 schedule values; no bf16 latent storage is emulated).
* Image-to-image (§6.3): the image is encoded to its posterior mean and mixed with the noise at
  t = ts[floor((1 − strength)·N)]; the loop runs from there.
* Then unpack, decode (the autoencoder applies z/scale + shift, §7.4) and convert to 8 bits (§7.5:
  BFL truncation and diffusers rounding).

CLI:
  pipeline_reference.py --flux FLUX_MODEL --ae AE_MODEL --inputs in.safetensors --steps N
      [--guidance G] [--bf16-scalars] [--strength S] --out out.safetensors
      (inputs: latents [B,16,h,w], txt [B,Ltxt,ctx], y [B,vec]; with --strength also image [H,W,3] U8)
  pipeline_reference.py --selftest
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as stnp  # noqa: E402
import flux_reference as fref  # noqa: E402
import ae_reference as aeref  # noqa: E402

F64 = np.float64

# §6.1: the line through (base_seq_len, base_shift) and (max_seq_len, max_shift).
BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15

# §6.1 test vector: dev, 1024² (Limg 4096, μ = 1.15), 28 steps; and the first values of 50 steps.
SPEC_TABLE_1024_28 = [
    1.000000, 0.988409, 0.976222, 0.963394, 0.949873, 0.935599, 0.920509, 0.904531, 0.887583, 0.869576,
    0.850406, 0.829956, 0.808095, 0.784672, 0.759511, 0.732413, 0.703145, 0.671435, 0.636965, 0.599357,
    0.558163, 0.512844, 0.462748, 0.407078, 0.344849, 0.274828, 0.195455, 0.104721, 0.000000]
SPEC_TABLE_1024_50_HEAD = [1.000000, 0.993580, 0.986979, 0.980190, 0.973204, 0.966014]


# ----------------------------------------------------------------------------------------------
# Schedule (§6.1)
# ----------------------------------------------------------------------------------------------

def shift_mu(image_seq_len: int) -> float:
    m = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    b = BASE_SHIFT - m * BASE_SEQ_LEN
    return m * image_seq_len + b


def time_shift(mu: float, sigma: float, t: np.ndarray) -> np.ndarray:
    """e^μ / (e^μ + (1/t − 1)^σ); 0 at t = 0 (1/0 = ∞)."""
    t = np.asarray(t, dtype=F64)
    out = np.zeros_like(t)
    pos = t > 0
    out[pos] = math.exp(mu) / (math.exp(mu) + (1.0 / t[pos] - 1.0) ** sigma)
    return out


def schedule(num_steps: int, image_seq_len: int, shift: bool) -> np.ndarray:
    """num_steps + 1 float64 values from 1 to 0."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    ts = 1.0 - np.arange(num_steps + 1, dtype=F64) / num_steps
    if shift:
        ts = time_shift(shift_mu(image_seq_len), 1.0, ts)
    return ts


def check_spec_schedule(tol: float = 1e-6) -> float:
    """Asserts the §6.1 28-step 1024² table (and the 50-step head); returns the max deviation."""
    got = schedule(28, 4096, shift=True)
    d28 = float(np.max(np.abs(got - np.array(SPEC_TABLE_1024_28))))
    got50 = schedule(50, 4096, shift=True)[:len(SPEC_TABLE_1024_50_HEAD)]
    d50 = float(np.max(np.abs(got50 - np.array(SPEC_TABLE_1024_50_HEAD))))
    assert abs(shift_mu(4096) - 1.15) < 1e-12 and abs(shift_mu(256) - 0.5) < 1e-12
    assert d28 <= tol, f"28-step 1024² schedule differs from docs/flux-model.md §6.1 by {d28:.2e}"
    assert d50 <= tol, f"50-step 1024² schedule head differs from docs/flux-model.md §6.1 by {d50:.2e}"
    s4 = schedule(4, 4096, shift=False).tolist()
    assert s4 == [1.0, 0.75, 0.5, 0.25, 0.0], s4
    return max(d28, d50)


# ----------------------------------------------------------------------------------------------
# Packing and ids (§4.3, §4.4)
# ----------------------------------------------------------------------------------------------

def pack(z: np.ndarray) -> np.ndarray:
    """[B, C, h, w] → [B, (h/2)(w/2), 4C] (b c (h ph) (w pw) -> b (h w) (c ph pw))."""
    B, C, h, w = z.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent {h}×{w} is not even")
    return z.reshape(B, C, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), 4 * C)


def unpack(p: np.ndarray, h: int, w: int) -> np.ndarray:
    """Exact inverse of pack: [B, (h/2)(w/2), 4C] → [B, C, h, w]."""
    B, n, k = p.shape
    C = k // 4
    if n != (h // 2) * (w // 2) or k != 4 * C:
        raise ValueError(f"packed {p.shape} does not fit a {h}×{w} latent")
    return p.reshape(B, h // 2, w // 2, C, 2, 2).transpose(0, 3, 1, 4, 2, 5).reshape(B, C, h, w)


def image_ids(batch: int, h2: int, w2: int) -> np.ndarray:
    n = np.arange(h2 * w2)
    ids = np.stack([np.zeros_like(n), n // w2, n % w2], axis=-1).astype(np.float32)
    return np.broadcast_to(ids, (batch, h2 * w2, 3)).copy()


def text_ids(batch: int, ltxt: int) -> np.ndarray:
    return np.zeros((batch, ltxt, 3), dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Euler loop (§6.2) and the whole pipeline
# ----------------------------------------------------------------------------------------------

def denoise(flux: "fref.FluxModel", latents: np.ndarray, txt: np.ndarray, y: np.ndarray, ts: np.ndarray,
            guidance: Optional[float], bf16_scalars: bool = False, dtype=F64) -> np.ndarray:
    """Runs the Euler loop over the schedule ts on unpacked latents [B, 16, h, w]; returns the final
    latents unpacked (still FLUX-normalised), in `dtype`."""
    z = np.asarray(latents, dtype=dtype)
    B, _, h, w = z.shape
    img = pack(z)
    img_ids = image_ids(B, h // 2, w // 2)
    tids = text_ids(B, txt.shape[1])
    gvec = None
    if flux.config.guidance_embed:
        if guidance is None:
            raise ValueError("a dev (guidance-distilled) model needs a guidance value")
        gvec = np.full(B, guidance, dtype=dtype)
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        t_vec = np.full(B, t_cur, dtype=dtype)
        v = fref.forward(flux, img, img_ids, txt, tids, y, t_vec, gvec, bf16_scalars=bf16_scalars)
        img = img + dtype(t_next - t_cur) * v
    return unpack(img, h, w)


def image_start(ae: "aeref.AEModel", noise: np.ndarray, image: np.ndarray, ts: np.ndarray,
                strength: float) -> tuple:
    """Image-to-image start (§6.3, BFL's rule): the 8-bit image [H, W, 3] mapped to [-1, 1] by x/127.5 - 1
    (§7.3), encoded to the normalised posterior mean (§7.3, §7.4) and shared by every sample;
    i0 = floor((1 - strength)·N); x = t·noise + (1 - t)·x0 with t = ts[i0]. Returns (x, i0)."""
    n = len(ts) - 1
    i0 = int(math.floor((1.0 - strength) * n))
    pixels = (np.asarray(image, dtype=F64) / 127.5 - 1.0).transpose(2, 0, 1)[None]
    x0 = aeref.encode(ae, pixels)
    t = float(ts[i0])
    return t * np.asarray(noise, dtype=F64) + (1.0 - t) * x0, i0


def generate(flux: "fref.FluxModel", ae: "aeref.AEModel", latents: np.ndarray, txt: np.ndarray,
             y: np.ndarray, steps: int, guidance: Optional[float], bf16_scalars: bool = False,
             dtype=F64, image: Optional[np.ndarray] = None, strength: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Whole pipeline from initial noise to 8-bit images. Returns schedule (F64), final_latents and
    pixels (in `dtype`), rgb_truncate / rgb_round (uint8, computed from pixels rounded to float32).
    With `image` and `strength`: image-to-image, the loop runs ts[i0:] from image_start's mix."""
    B, C, h, w = latents.shape
    ts = schedule(steps, (h // 2) * (w // 2), shift=flux.config.guidance_embed)
    if image is not None:
        latents, i0 = image_start(ae, latents, image, ts, strength)
        final = denoise(flux, latents, txt, y, ts[i0:], guidance, bf16_scalars, dtype)
    else:
        final = denoise(flux, latents, txt, y, ts, guidance, bf16_scalars, dtype)
    pixels = aeref.decode(ae, final)
    p32 = pixels.astype(np.float32)
    return {"schedule": ts, "final_latents": final, "pixels": pixels,
            "rgb_truncate": aeref.to_uint8(p32, "truncate"), "rgb_round": aeref.to_uint8(p32, "round")}


# ----------------------------------------------------------------------------------------------
# Self-tests
# ----------------------------------------------------------------------------------------------

def selftest() -> bool:
    ok = True

    def report(name, passed, detail=""):
        nonlocal ok
        ok &= bool(passed)
        print(f"[{'PASS' if passed else 'FAIL'}] {name}{': ' + detail if detail else ''}")

    try:
        d = check_spec_schedule()
        report("§6.1 schedule: 28-step 1024² table, 50-step head, schnell 4 steps", True, f"max |Δ| {d:.2e}")
    except AssertionError as e:
        report("§6.1 schedule", False, str(e))
    report("μ at 4080 tokens (1360×768)", abs(shift_mu(4080) - (0.45666666666666667 + 0.65 / 3840 * 4080)) < 1e-12,
           f"{shift_mu(4080):.6f}")

    rng = np.random.default_rng(5)
    B, C, h, w = 2, 16, 6, 8
    z = rng.standard_normal((B, C, h, w))
    p = pack(z)
    ok_idx = all(p[b, (y // 2) * (w // 2) + (x // 2), 4 * c + 2 * (y % 2) + (x % 2)] == z[b, c, y, x]
                 for b in range(B) for c in range(C) for y in range(h) for x in range(w))
    report("pack matches the §4.3 index formula", ok_idx and p.shape == (B, 12, 64))
    report("unpack(pack(z)) == z", np.array_equal(unpack(p, h, w), z))
    ids = image_ids(1, 3, 4)[0]
    report("img_ids (0, n div w2, n mod w2)", ids[5].tolist() == [0.0, 1.0, 1.0] and ids[11].tolist() == [0.0, 2.0, 3.0])
    return ok


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flux", help="FLUX transformer (BFL file or diffusers folder)")
    ap.add_argument("--ae", help="autoencoder (BFL file or diffusers folder)")
    ap.add_argument("--inputs", help="safetensors with latents, txt, y (and image [H,W,3] U8 for --strength)")
    ap.add_argument("--strength", type=float, default=None, help="image-to-image from the inputs' image")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.5, help="dev only")
    ap.add_argument("--bf16-scalars", action="store_true", help="quantise t and guidance as BFL (§6.4)")
    ap.add_argument("--out", help="output safetensors")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)
    if args.selftest:
        return 0 if selftest() else 1
    if not (args.flux and args.ae and args.inputs and args.out):
        ap.error("--flux, --ae, --inputs and --out are required (or --selftest)")
    flux = fref.load_model(args.flux)
    ae = aeref.load_model(args.ae)
    inputs, _ = stnp.load_file(args.inputs)
    g = args.guidance if flux.config.guidance_embed else None
    image = inputs["image"] if args.strength is not None else None
    r = generate(flux, ae, inputs["latents"], inputs["txt"], inputs["y"], args.steps, g, args.bf16_scalars,
                 image=image, strength=args.strength)
    out = {"schedule": r["schedule"], "final_latents": r["final_latents"].astype(np.float32),
           "pixels": r["pixels"].astype(np.float32), "rgb_truncate": r["rgb_truncate"], "rgb_round": r["rgb_round"]}
    meta = {"producer": "tools/reference/pipeline_reference.py", "numpy_version": np.__version__,
            "steps": str(args.steps), "guidance": "none" if g is None else repr(g),
            "bf16_scalars": "true" if args.bf16_scalars else "false",
            "flux_config": json.dumps(flux.config.as_dict(), sort_keys=True),
            "ae_config": json.dumps(ae.config.as_dict(), sort_keys=True)}
    stnp.save_file(args.out, out, metadata=meta)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
