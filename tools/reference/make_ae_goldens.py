#!/usr/bin/env python3
"""Writes the FLUX autoencoder golden cases under native/tests/data/ae/.

Each case is a folder with
  inputs.safetensors    latents [2,16,h,w] (F32, FLUX-normalised, non-square), pixels [2,3,H,W] (F32 in [-1,1])
  expected.safetensors  decoded [2,3,h·f,w·f] F32   decoder output for `latents` (z/scale + shift first), NOT clamped
                        encoded [2,16,H/f,W/f] F32  scale·(posterior mean − shift) for `pixels`
                        rgb_truncate, rgb_round [2,h·f,w·f,3] U8   §7.5 conversions of the stored `decoded`
computed by tools/reference/ae_reference.py (float64). f = 2^(levels−1).
The models are FluxNative tiny autoencoders, regenerated deterministically by fx_tiny_model_write
(kind FX_MODEL_AUTOENCODER, called through ctypes as in make_flux_goldens.py); the metadata records the
parameters and a weights fingerprint (same definition as the flux goldens).

Usage:
  /usr/bin/python3 tools/reference/make_ae_goldens.py [--lib build/h-ref/lib/libfluxnative.so]
      [--out native/tests/data/ae] [--check] [--sensitivity]
--check regenerates everything in a temporary folder and compares with the committed files (exit 1 on a
difference). --sensitivity also reruns every case entirely in float32 and prints how far that lands
from the float64 goldens (the basis of the tolerances suggested in the README).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import safetensors_np as stnp  # noqa: E402
import ae_reference as ae  # noqa: E402
from make_flux_goldens import TinyWriter, _TinyParams, _LAYOUTS, _DTYPES  # noqa: E402

INPUT_SEED = 20240802       # NumPy default_rng seed of the golden inputs
MODEL_SEED = 1              # tiny-model writer seed
BATCH = 2
LAYOUT_TOL = 1e-12          # BFL vs diffusers layout: max |Δ| / max |out|
FX_MODEL_AUTOENCODER = 2

PROVENANCE = (
    "Expected outputs computed by tools/reference/ae_reference.py, an independent float64 NumPy "
    "implementation of the FLUX.1 autoencoder written from FluxNative's docs/flux-model.md (sections 2.2, 7.1-7.5, "
    "8.3, 10) alone, without reference to BFL's, diffusers' or FluxNative's own C++ code. Weights are upcast "
    "from their stored dtype to float64; all maths in float64; `decoded` and `encoded` are those results "
    "rounded to float32; rgb_truncate / rgb_round are computed in float64 from the stored float32 `decoded`. "
    "Inputs are drawn from numpy.random.default_rng(input_seed) and stored as float32; the reference reads "
    "those float32 values. Models are FluxNative tiny autoencoders, regenerated from the recorded parameters."
)

# name, layout, dtype, depth (levels; 0 = default 2), depth_single (num_res_blocks; 0 = default 1),
# latent (h, w), pixels (H, W)
CASES = [
    ("ae-f32-bfl", "bfl", "f32", 0, 0, (6, 5), (10, 14)),
    ("ae-f32-diffusers", "diffusers", "f32", 0, 0, (6, 5), (10, 14)),
    ("ae-bf16-bfl", "bfl", "bf16", 0, 0, (6, 5), (10, 14)),
    ("ae-4level-f32-bfl", "bfl", "f32", 4, 2, (3, 4), (16, 24)),
]


# ----------------------------------------------------------------------------------------------
# Tiny autoencoder through fx_tiny_model_write
# ----------------------------------------------------------------------------------------------

def ae_params(layout: str, dtype: str, seed: int, hidden_size: int = 0, depth: int = 0,
              depth_single: int = 0) -> dict:
    """model_params as recorded in the metadata: the keys of the flux goldens. `variant` is irrelevant
    for an autoencoder (the writer ignores `guidance`); "dev" is what the CLI passes by default."""
    return {"kind": "ae", "variant": "dev", "layout": layout, "dtype": dtype, "seed": seed, "shards": 1,
            "hidden_size": hidden_size, "num_heads": 0, "depth": depth, "depth_single": depth_single}


def ae_cli_command(p: dict, out: str) -> str:
    cmd = (f"dotnet run --project src/FluxNative.Cli -c Release -- tiny-model --kind ae "
           f"--layout {p['layout']} --dtype {p['dtype']} --seed {p['seed']}")
    for key, opt in (("hidden_size", "--hidden-size"), ("depth", "--depth"), ("depth_single", "--depth-single")):
        if p.get(key):
            cmd += f" {opt} {p[key]}"
    return cmd + f" -o {out}"


CLI_NOTE = ("The CLI's tiny-model command may not have --hidden-size/--depth/--depth-single options yet "
            "(checked: it has --kind --variant --layout --dtype --shards --seed -o); model_params is "
            "authoritative: fx_tiny_model_params_init, then kind=FX_MODEL_AUTOENCODER (2), layout (bfl 1, "
            "diffusers 2), dtype (f32 0, bf16 2), seed, hidden_size, depth, depth_single as recorded.")


def write_ae(writer: TinyWriter, path: str, p: dict) -> dict:
    tp = _TinyParams()
    writer.lib.fx_tiny_model_params_init(ctypes.byref(tp))
    tp.kind = FX_MODEL_AUTOENCODER
    tp.layout = _LAYOUTS[p["layout"]]
    tp.dtype = _DTYPES[p["dtype"]]
    tp.shards = p["shards"]
    tp.seed = p["seed"]
    tp.hidden_size = p["hidden_size"]
    tp.depth = p["depth"]
    tp.depth_single = p["depth_single"]
    if p["layout"] == "diffusers" and os.path.isdir(path):
        shutil.rmtree(path)
    rc = writer.lib.fx_tiny_model_write(ctypes.byref(tp), path.encode("utf-8"))
    if rc != 0:
        raise RuntimeError(f"fx_tiny_model_write(ae {p}) failed: {rc} "
                           f"{writer.lib.fx_last_error().decode('utf-8', 'replace')}")
    return {f: getattr(tp, f) for f, _ in _TinyParams._fields_}


def fp_json(fp: dict) -> str:
    return json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                       "tensor_count": fp["tensor_count"],
                       "definition": "per stored tensor (as stored: BFL or diffusers names), sum and sum of "
                                     "squares of the values decoded to float64; summed over all tensors. "
                                     "Compare with relative tolerance ~1e-9 (summation order may differ)."},
                      sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Golden cases
# ----------------------------------------------------------------------------------------------

def make_inputs(latent_hw, pixel_hw) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(INPUT_SEED)
    h, w = latent_hw
    H, W = pixel_hw
    latents = rng.standard_normal((BATCH, 16, h, w)).astype(np.float32)
    pixels = rng.uniform(-1.0, 1.0, (BATCH, 3, H, W)).astype(np.float32)
    return {"latents": latents, "pixels": pixels}


def compute(model: "ae.AEModel", inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    decoded = ae.decode(model, inputs["latents"]).astype(np.float32)
    encoded = ae.encode(model, inputs["pixels"]).astype(np.float32)
    return {"decoded": decoded, "encoded": encoded,
            "rgb_truncate": ae.to_uint8(decoded, "truncate"), "rgb_round": ae.to_uint8(decoded, "round")}


def build_case(writer: TinyWriter, models_dir: str, out_dir: str, case) -> Dict[str, object]:
    name, layout, dtype, depth, depth_single, latent_hw, pixel_hw = case
    model_path = os.path.join(models_dir, name + (".safetensors" if layout == "bfl" else ""))
    params = ae_params(layout, dtype, MODEL_SEED, depth=depth, depth_single=depth_single)
    write_ae(writer, model_path, params)
    model = ae.load_model(model_path)
    c = model.config
    f = c.downscale
    if pixel_hw[0] % f or pixel_hw[1] % f:
        raise ValueError(f"{name}: pixels {pixel_hw} are not multiples of {f}")
    inputs = make_inputs(latent_hw, pixel_hw)
    out = compute(model, inputs)
    fp = ae.fingerprint(model.stored)
    margins = ae.rgb_margins(out["decoded"])

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    in_meta = {
        "producer": "tools/reference/make_ae_goldens.py",
        "input_seed": str(INPUT_SEED),
        "generator": "numpy.random.default_rng(input_seed): latents ~ N(0,1) (standard_normal), then pixels ~ "
                     "U[-1,1) (uniform); both cast to float32. latents are FLUX-normalised (the decoder sees "
                     "latents/scale_factor + shift_factor).",
        "shapes": json.dumps({k: list(v.shape) for k, v in inputs.items()}),
    }
    stnp.save_file(os.path.join(case_dir, "inputs.safetensors"), inputs, metadata=in_meta)
    exp_meta = {
        "producer": "tools/reference/make_ae_goldens.py + tools/reference/ae_reference.py",
        "provenance": PROVENANCE,
        "spec": "docs/flux-model.md sections 2.2, 7.1-7.5, 8.3, 10",
        "numpy_version": np.__version__,
        "model_command": ae_cli_command(params, "MODEL_PATH"),
        "model_command_note": CLI_NOTE,
        "model_params": json.dumps(params, sort_keys=True),
        "model_writer": "fx_tiny_model_write (libfluxnative), kind FX_MODEL_AUTOENCODER",
        "model_layout": layout,
        "model_stored_dtypes": json.dumps(sorted(set(model.stored_dtypes.values()))),
        "model_config": json.dumps(c.as_dict(), sort_keys=True),
        "weights_fingerprint": fp_json(fp),
        "input_seed": str(INPUT_SEED),
        "scale_factor": repr(c.scale_factor),
        "shift_factor": repr(c.shift_factor),
        "downscale": str(f),
        "rgb_margins": json.dumps(margins, sort_keys=True),
        "outputs": "decoded: decoder(latents/scale_factor + shift_factor), before clamping; encoded: "
                   "scale_factor*(mean - shift_factor), mean = encoder output channels 0..15; rgb_truncate = "
                   "trunc(127.5*(clamp(decoded,-1,1)+1)) (BFL), rgb_round = round(255*clamp(decoded/2+0.5,0,1)) "
                   "(diffusers; half-to-even), both [B,H,W,3] interleaved, computed in float64 from the stored "
                   "float32 decoded. rgb_margins: smallest distance (in LSB) of an unclamped 127.5*(decoded+1) "
                   "to a truncation / rounding boundary.",
    }
    stnp.save_file(os.path.join(case_dir, "expected.safetensors"), out, metadata=exp_meta)
    return {"model": model, "inputs": inputs, "out": out}


def sensitivity(name: str, model: "ae.AEModel", inputs: Dict[str, np.ndarray], out: Dict[str, np.ndarray]) -> None:
    """All-float32 rerun of the same case; prints max |Δ| / max |expected| and rgb differences."""
    m32 = model.astype(np.float32)
    dec = ae.decode(m32, inputs["latents"].astype(np.float32))
    enc = ae.encode(m32, inputs["pixels"].astype(np.float32))
    assert dec.dtype == np.float32 and enc.dtype == np.float32
    rd = float(np.max(np.abs(dec.astype(np.float64) - out["decoded"])) / np.max(np.abs(out["decoded"])))
    re_ = float(np.max(np.abs(enc.astype(np.float64) - out["encoded"])) / np.max(np.abs(out["encoded"])))
    msg = [f"{name}: all-float32 rerun: decoded max rel {rd:.2e}, encoded max rel {re_:.2e}"]
    for mode in ("truncate", "round"):
        d = np.abs(ae.to_uint8(dec, mode).astype(int) - out["rgb_" + mode].astype(int))
        msg.append(f"rgb_{mode} max |Δ| {d.max()} ({int((d > 0).sum())} of {d.size})")
    print("  " + "; ".join(msg))


def write_all(lib: Optional[str], out_dir: str, keep_models: Optional[str] = None,
              measure: bool = False) -> Dict[str, Dict[str, object]]:
    writer = TinyWriter(lib)
    models_dir = keep_models or tempfile.mkdtemp(prefix="ae-goldens-models-")
    os.makedirs(models_dir, exist_ok=True)
    results: Dict[str, Dict[str, object]] = {}
    try:
        for case in CASES:
            t0 = time.time()
            r = build_case(writer, models_dir, out_dir, case)
            results[case[0]] = r
            o = r["out"]
            print(f"{case[0]}: decoded {list(o['decoded'].shape)} (range {o['decoded'].min():.4g}..{o['decoded'].max():.4g}), "
                  f"encoded {list(o['encoded'].shape)}, {time.time() - t0:.2f}s")
            if measure:
                sensitivity(case[0], r["model"], r["inputs"], o)
    finally:
        if keep_models is None:
            shutil.rmtree(models_dir, ignore_errors=True)
    # The diffusers twin: its tensors must map (§8.3) onto exactly the BFL twin's values, and give the
    # same outputs.
    a, b = results["ae-f32-bfl"], results["ae-f32-diffusers"]
    wa, wb = a["model"].weights, b["model"].weights
    assert set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa), \
        "diffusers tensors do not map onto the BFL tensors of the same seed"
    for k in ("decoded", "encoded"):
        rel = float(np.max(np.abs(a["out"][k] - b["out"][k])) / np.max(np.abs(a["out"][k])))
        assert rel <= LAYOUT_TOL, f"{k}: BFL and diffusers layouts disagree ({rel:.3e})"
    for k in ("rgb_truncate", "rgb_round"):
        assert np.array_equal(a["out"][k], b["out"][k])
    print("f32: BFL vs diffusers layout: same weights after the §8.3 mapping, identical outputs")
    c = results["ae-bf16-bfl"]
    for k in ("decoded", "encoded"):
        rel = float(np.max(np.abs(a["out"][k] - c["out"][k])) / np.max(np.abs(a["out"][k])))
        print(f"bf16 vs f32 weights: {k} max rel diff {rel:.2e}")
    return results


def _compare(name: str, fname: str, new: Dict[str, np.ndarray], old: Dict[str, np.ndarray]) -> bool:
    ok = True
    if set(new) != set(old):
        print(f"DIFF {name}/{fname}: tensor names {sorted(old)} -> {sorted(new)}")
        return False
    for k in new:
        if new[k].shape != old[k].shape or new[k].dtype != old[k].dtype:
            print(f"DIFF {name}/{fname}:{k} {old[k].dtype}{list(old[k].shape)} -> {new[k].dtype}{list(new[k].shape)}")
            ok = False
            continue
        if fname == "inputs.safetensors":
            same, detail = np.array_equal(new[k], old[k]), "inputs differ"
        elif new[k].dtype == np.uint8:
            d = np.abs(new[k].astype(int) - old[k].astype(int))
            # One LSB where a value sits within float32 rounding of a boundary is acceptable.
            same = d.max() <= 1 and (d > 0).sum() <= max(1, d.size // 1000)
            detail = f"max |Δ| {d.max()} in {(d > 0).sum()} entries"
        elif new[k].dtype == np.float64 and new[k].ndim == 1:
            d = float(np.max(np.abs(new[k] - old[k])))
            same, detail = d <= 1e-15, f"max |Δ| {d:.2e}"
        else:
            d = float(np.max(np.abs(new[k].astype(np.float64) - old[k])) / np.max(np.abs(old[k])))
            same = d <= 1e-6  # float32 storage; a few ulp of BLAS reordering is fine
            detail = f"max rel {d:.2e}"
        if not same:
            print(f"DIFF {name}/{fname}:{k} {detail}")
            ok = False
    return ok


def check_dirs(tmp: str, committed: str, names, meta_keys) -> bool:
    ok = True
    for name in names:
        for fname in ("inputs.safetensors", "expected.safetensors"):
            new, new_meta = stnp.load_file(os.path.join(tmp, name, fname))
            old_path = os.path.join(committed, name, fname)
            if not os.path.isfile(old_path):
                print(f"MISSING {old_path}")
                ok = False
                continue
            old, old_meta = stnp.load_file(old_path)
            ok &= _compare(name, fname, new, old)
            if fname == "expected.safetensors":
                for key in meta_keys:
                    if new_meta.get(key) != old_meta.get(key):
                        print(f"DIFF {name}: metadata {key}: {old_meta.get(key)} -> {new_meta.get(key)}")
                        ok = False
    return ok


def check(lib: Optional[str], committed: str) -> bool:
    tmp = tempfile.mkdtemp(prefix="ae-goldens-check-")
    try:
        write_all(lib, tmp)
        ok = check_dirs(tmp, committed, [c[0] for c in CASES], ("weights_fingerprint", "model_params"))
        print("check: " + ("committed goldens reproduce" if ok else "DIFFERENCES (see above)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write FLUX autoencoder golden cases.")
    ap.add_argument("--lib", default=None, help="libfluxnative.so (default build/h-ref/lib/libfluxnative.so)")
    ap.add_argument("--out", default=os.path.join(REPO, "native", "tests", "data", "ae"))
    ap.add_argument("--keep-models", default=None, help="keep the generated tiny models in this folder")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare")
    ap.add_argument("--sensitivity", action="store_true", help="also measure an all-float32 rerun")
    args = ap.parse_args(argv)
    if args.check:
        return 0 if check(args.lib, args.out) else 1
    os.makedirs(args.out, exist_ok=True)
    write_all(args.lib, args.out, args.keep_models, measure=args.sensitivity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
