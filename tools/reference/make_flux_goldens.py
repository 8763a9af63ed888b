#!/usr/bin/env python3
"""Writes the FLUX transformer golden cases under native/tests/data/flux/.

Each case is a folder with
  inputs.safetensors    img, img_ids, txt, txt_ids, y, timesteps[, guidance] (F32)
  expected.safetensors  out (F32): the float64 reference output (tools/reference/flux_reference.py)
                        rounded to float32, and out_bf16_scalars (F32): the same with timesteps and
                        guidance quantised as BFL does (docs/flux-model.md §6.4), for engines that do that.
The models are not stored: they are FluxNative tiny models, regenerated deterministically by the
library's tiny-model writer (fx_tiny_model_write, called here through ctypes; the CLI equivalent is
`flux tiny-model ...`, recorded in the metadata). The expected file's __metadata__ records the
generation parameters and a fingerprint of the weights, so a test can regenerate the model, check the
fingerprint (a mismatch means "the tiny-model writer changed: regenerate the goldens", not a numerical
failure) and only then compare outputs.

Usage:
  /usr/bin/python3 tools/reference/make_flux_goldens.py [--lib build/h-ref/lib/libfluxnative.so]
      [--out native/tests/data/flux] [--check]
--check regenerates everything in a temporary folder and compares with the committed files instead
of writing (exit 1 on a difference).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import safetensors_np as stnp  # noqa: E402
import flux_reference as ref  # noqa: E402

INPUT_SEED = 20240801       # NumPy default_rng seed of the golden inputs
MODEL_SEED = 1              # tiny-model writer seed
BATCH, H2, W2, LTXT = 2, 4, 4, 8
LAYOUT_TOL = 1e-12          # BFL vs diffusers layout: max |Δ| / max |out|

PROVENANCE = (
    "Expected outputs computed by tools/reference/flux_reference.py, an independent float64 NumPy "
    "implementation of the FLUX.1 transformer forward written from FluxNative's docs/flux-model.md "
    "(sections 2.1, 4.4, 5.1-5.6, 8.1, 8.2, 10) alone, without reference to BFL's, diffusers' or "
    "FluxNative's own C++ code. Weights are upcast from their stored dtype to float64; all maths in "
    "float64; `out` is that result rounded to float32. Timesteps/guidance are used unquantised in `out` "
    "(s' = 1000*t) and with BFL's bf16 quantisation (docs/flux-model.md 6.4) in `out_bf16_scalars`. Inputs are drawn "
    "from numpy.random.default_rng(input_seed) and stored as float32; the reference reads those float32 "
    "values. Models are FluxNative tiny models, regenerated from the recorded parameters."
)

CASES = [
    # name, variant, layout, dtype
    ("dev-f32-bfl", "dev", "bfl", "f32"),
    ("dev-bf16-bfl", "dev", "bfl", "bf16"),
    ("schnell-f32-bfl", "schnell", "bfl", "f32"),
    ("schnell-bf16-bfl", "schnell", "bfl", "bf16"),
    ("dev-f32-diffusers", "dev", "diffusers", "f32"),
    ("schnell-f32-diffusers", "schnell", "diffusers", "f32"),
]


# ----------------------------------------------------------------------------------------------
# ctypes bridge to fx_tiny_model_write (native/include/fluxnative.h)
# ----------------------------------------------------------------------------------------------

class _TinyParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("layout", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("guidance", ctypes.c_int32),
        ("shards", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("hidden_size", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("depth", ctypes.c_int32),
        ("depth_single", ctypes.c_int32),
    ]


_FX_MODEL_FLUX_TRANSFORMER = 1
_LAYOUTS = {"bfl": 1, "diffusers": 2}
_DTYPES = {"f32": 0, "f16": 1, "bf16": 2}


def default_lib() -> str:
    return os.path.join(REPO, "build", "h-ref", "lib", "libfluxnative.so")


class TinyWriter:
    """Calls fx_tiny_model_write of a built libfluxnative through ctypes."""

    def __init__(self, lib_path: Optional[str] = None):
        self.path = os.path.abspath(lib_path or default_lib())
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"{self.path} not found; build it with: cmake -S . -B build/h-ref -DFX_CUDA=OFF "
                f"-DFX_BUILD_BENCH=OFF && cmake --build build/h-ref -j2 --target fluxnative")
        lib = ctypes.CDLL(self.path)
        lib.fx_last_error.restype = ctypes.c_char_p
        lib.fx_tiny_model_write.argtypes = [ctypes.POINTER(_TinyParams), ctypes.c_char_p]
        lib.fx_tiny_model_write.restype = ctypes.c_int32
        lib.fx_tiny_model_params_init.argtypes = [ctypes.POINTER(_TinyParams)]
        lib.fx_abi_struct_size.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.fx_abi_field_offset.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        size = ctypes.c_size_t()
        if lib.fx_abi_struct_size(b"fx_tiny_model_params", ctypes.byref(size)) != 0 or \
                size.value != ctypes.sizeof(_TinyParams):
            raise RuntimeError(f"fx_tiny_model_params is {size.value} bytes in the library, "
                               f"{ctypes.sizeof(_TinyParams)} here: update _TinyParams")
        for fname, _ in _TinyParams._fields_:
            off = ctypes.c_size_t()
            if lib.fx_abi_field_offset(b"fx_tiny_model_params", fname.encode(), ctypes.byref(off)) != 0 or \
                    off.value != getattr(_TinyParams, fname).offset:
                raise RuntimeError(f"fx_tiny_model_params.{fname} offset differs from the library's")
        self.lib = lib

    @staticmethod
    def params(variant: str, layout: str, dtype: str, seed: int, shards: int = 1) -> dict:
        return {"kind": "flux", "variant": variant, "layout": layout, "dtype": dtype, "seed": seed,
                "shards": shards, "hidden_size": 0, "num_heads": 0, "depth": 0, "depth_single": 0}

    @staticmethod
    def cli_command(p: dict, out: str) -> str:
        cmd = (f"dotnet run --project src/FluxNative.Cli -c Release -- tiny-model --kind flux "
               f"--variant {p['variant']} --layout {p['layout']} --dtype {p['dtype']} --seed {p['seed']}")
        if p.get("shards", 1) != 1:
            cmd += f" --shards {p['shards']}"
        return cmd + f" -o {out}"

    def write(self, path: str, variant: str, layout: str, dtype: str, seed: int, shards: int = 1) -> dict:
        p = _TinyParams()
        self.lib.fx_tiny_model_params_init(ctypes.byref(p))
        p.kind = _FX_MODEL_FLUX_TRANSFORMER
        p.layout = _LAYOUTS[layout]
        p.dtype = _DTYPES[dtype]
        p.guidance = 1 if variant == "dev" else 0
        p.shards = shards
        p.seed = seed
        if layout == "diffusers" and os.path.isdir(path):
            shutil.rmtree(path)
        rc = self.lib.fx_tiny_model_write(ctypes.byref(p), path.encode("utf-8"))
        if rc != 0:
            raise RuntimeError(f"fx_tiny_model_write({variant}, {layout}, {dtype}) failed: "
                               f"{rc} {self.lib.fx_last_error().decode('utf-8', 'replace')}")
        return {f: getattr(p, f) for f, _ in _TinyParams._fields_}


# ----------------------------------------------------------------------------------------------
# Golden cases
# ----------------------------------------------------------------------------------------------

def make_inputs(cfg: "ref.FluxConfig", guidance: bool) -> Dict[str, np.ndarray]:
    """Random inputs from a fixed seed (identical for every case; schnell simply has no guidance)."""
    rng = np.random.default_rng(INPUT_SEED)
    f32 = np.float32
    limg = H2 * W2
    img = rng.standard_normal((BATCH, limg, cfg.in_channels)).astype(f32)
    txt = rng.standard_normal((BATCH, LTXT, cfg.context_in_dim)).astype(f32)
    y = rng.standard_normal((BATCH, cfg.vec_in_dim)).astype(f32)
    t = (1.0 - rng.random(BATCH)).astype(f32)          # (0, 1]
    g = (1.0 + 4.0 * rng.random(BATCH)).astype(f32)    # [1, 5)
    assert len(set(t.tolist())) == BATCH and len(set(g.tolist())) == BATCH
    assert np.all((t > 0) & (t <= 1)) and np.all((g >= 1) & (g <= 5))
    out = {
        "img": img,
        "img_ids": ref.image_ids(BATCH, H2, W2),
        "txt": txt,
        "txt_ids": np.zeros((BATCH, LTXT, len(cfg.axes_dim)), dtype=f32),
        "y": y,
        "timesteps": t,
    }
    if guidance:
        out["guidance"] = g
    return out


def _fp_json(fp: dict) -> str:
    return json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                       "tensor_count": fp["tensor_count"],
                       "definition": "per stored tensor (as stored: BFL or diffusers names), sum and sum of "
                                     "squares of the values decoded to float64; summed over all tensors. "
                                     "Compare with relative tolerance ~1e-9 (summation order may differ)."},
                      sort_keys=True)


def build_case(writer: TinyWriter, models_dir: str, out_dir: str, name: str, variant: str, layout: str,
               dtype: str) -> np.ndarray:
    model_path = os.path.join(models_dir, name + (".safetensors" if layout == "bfl" else ""))
    params = TinyWriter.params(variant, layout, dtype, MODEL_SEED)
    writer.write(model_path, variant, layout, dtype, MODEL_SEED)
    model = ref.load_model(model_path)
    inputs = make_inputs(model.config, guidance=model.config.guidance_embed)
    out = ref.run_inputs(model, inputs)
    out_q = ref.run_inputs(model, inputs, bf16_scalars=True)
    fp = ref.fingerprint(model.stored)
    stored_dtypes = sorted(set(model.stored_dtypes.values()))

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    in_meta = {
        "producer": "tools/reference/make_flux_goldens.py",
        "input_seed": str(INPUT_SEED),
        "generator": "numpy.random.default_rng(input_seed): img, txt, y ~ N(0,1) (standard_normal, in that "
                     "order), then timesteps = 1 - random(B) in (0,1], guidance = 1 + 4*random(B) in [1,5); "
                     "all cast to float32. img_ids per docs/flux-model.md 4.4 for a 4x4 grid; txt_ids zeros.",
        "shapes": json.dumps({k: list(v.shape) for k, v in inputs.items()}),
    }
    stnp.save_file(os.path.join(case_dir, "inputs.safetensors"), inputs, metadata=in_meta)
    cfg = model.config.as_dict()
    exp_meta = {
        "producer": "tools/reference/make_flux_goldens.py + tools/reference/flux_reference.py",
        "provenance": PROVENANCE,
        "spec": "docs/flux-model.md sections 2.1, 4.4, 5, 6.4 (out_bf16_scalars only), 8.1, 8.2, 10",
        "numpy_version": np.__version__,
        "model_command": TinyWriter.cli_command(params, "MODEL_PATH"),
        "model_params": json.dumps(params, sort_keys=True),
        "model_writer": "fx_tiny_model_write (libfluxnative), kind FX_MODEL_FLUX_TRANSFORMER",
        "model_layout": layout,
        "model_stored_dtypes": json.dumps(stored_dtypes),
        "model_config": json.dumps(cfg, sort_keys=True),
        "weights_fingerprint": _fp_json(fp),
        "input_seed": str(INPUT_SEED),
        "outputs": "out: unquantised timesteps/guidance; out_bf16_scalars: s' = bf16(1000*bf16(t)), "
                   "g' = bf16(1000*bf16(g)) (docs/flux-model.md 6.4). Both float64 results rounded to float32.",
    }
    stnp.save_file(os.path.join(case_dir, "expected.safetensors"),
                   {"out": out.astype(np.float32), "out_bf16_scalars": out_q.astype(np.float32)},
                   metadata=exp_meta)
    return out


def write_all(lib: Optional[str], out_dir: str, keep_models: Optional[str] = None) -> Dict[str, np.ndarray]:
    writer = TinyWriter(lib)
    models_dir = keep_models or tempfile.mkdtemp(prefix="flux-goldens-models-")
    os.makedirs(models_dir, exist_ok=True)
    results: Dict[str, np.ndarray] = {}
    try:
        for name, variant, layout, dtype in CASES:
            results[name] = build_case(writer, models_dir, out_dir, name, variant, layout, dtype)
            print(f"{name}: out {list(results[name].shape)}, max |out| {np.max(np.abs(results[name])):.6g}")
    finally:
        if keep_models is None:
            shutil.rmtree(models_dir, ignore_errors=True)
    for variant in ("dev", "schnell"):
        a, b = results[f"{variant}-f32-bfl"], results[f"{variant}-f32-diffusers"]
        rel = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        print(f"{variant} f32: BFL vs diffusers layout max rel diff {rel:.3e}")
        assert rel <= LAYOUT_TOL, f"{variant}: BFL and diffusers layouts disagree ({rel:.3e} > {LAYOUT_TOL})"
    return results


def check(lib: Optional[str], committed: str) -> bool:
    tmp = tempfile.mkdtemp(prefix="flux-goldens-check-")
    ok = True
    try:
        write_all(lib, tmp)
        for name, *_ in CASES:
            for fname in ("inputs.safetensors", "expected.safetensors"):
                new, new_meta = stnp.load_file(os.path.join(tmp, name, fname))
                old_path = os.path.join(committed, name, fname)
                if not os.path.isfile(old_path):
                    print(f"MISSING {old_path}")
                    ok = False
                    continue
                old, old_meta = stnp.load_file(old_path)
                if set(new) != set(old):
                    print(f"DIFF {name}/{fname}: tensor names {sorted(old)} -> {sorted(new)}")
                    ok = False
                    continue
                for k in new:
                    if fname == "inputs.safetensors":
                        same = np.array_equal(new[k], old[k])
                        detail = "" if same else "inputs differ"
                    else:
                        d = float(np.max(np.abs(new[k].astype(np.float64) - old[k])) / np.max(np.abs(old[k])))
                        same = d <= 1e-6  # float32 storage; a few ulp of BLAS reordering is fine
                        detail = f"max rel {d:.2e}"
                    if not same:
                        print(f"DIFF {name}/{fname}:{k} {detail}")
                        ok = False
                if fname == "expected.safetensors":
                    for key in ("weights_fingerprint", "model_params"):
                        if new_meta.get(key) != old_meta.get(key):
                            print(f"DIFF {name}: metadata {key}: {old_meta.get(key)} -> {new_meta.get(key)}")
                            ok = False
        print("check: " + ("committed goldens reproduce" if ok else "DIFFERENCES (see above)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write FLUX transformer golden cases.")
    ap.add_argument("--lib", default=None, help=f"libfluxnative.so (default {default_lib()})")
    ap.add_argument("--out", default=os.path.join(REPO, "native", "tests", "data", "flux"))
    ap.add_argument("--keep-models", default=None, help="keep the generated tiny models in this folder")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare")
    args = ap.parse_args(argv)
    if args.check:
        return 0 if check(args.lib, args.out) else 1
    os.makedirs(args.out, exist_ok=True)
    write_all(args.lib, args.out, args.keep_models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
