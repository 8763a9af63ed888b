#!/usr/bin/env python3
"""Writes the text-encoder golden cases (CLIP text tower, T5 encoder) under native/tests/data/text/.

Each case is a folder with
  inputs.safetensors    ids I32 [B, L]
  expected.safetensors  hidden F32 [B, L, d]   last hidden state (after the final norm)
                        pooled F32 [B, d]      CLIP only: hidden at the first occurrence of the row's max id
computed by tools/reference/clip_text_reference.py / t5_reference.py (float64, from docs/flux-model.md §3.2 / §3.3
alone) and rounded to float32. The models are FluxNative tiny text encoders, regenerated deterministically by
fx_tiny_model_write (kind FX_MODEL_CLIP_TEXT / FX_MODEL_T5_ENCODER, layout diffusers, called through ctypes as
in make_flux_goldens.py); the metadata records the parameters and a weights fingerprint (same definition as
the flux goldens).

Usage:
  /usr/bin/python3 tools/reference/make_text_goldens.py [--lib build/h-ref2/lib/libfluxnative.so]
      [--out native/tests/data/text] [--check] [--keep-models DIR]
--check regenerates everything in a temporary folder and compares with the committed files (exit 1 on a
difference). Every run also reruns each case entirely in float32 and prints how far that lands from the
float64 goldens (the basis of the tolerances suggested in the README).
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
import clip_text_reference as clipref  # noqa: E402
import t5_reference as t5ref  # noqa: E402
from make_flux_goldens import TinyWriter, _TinyParams, _LAYOUTS, _DTYPES  # noqa: E402

INPUT_SEED = 20240803       # NumPy default_rng seed of the golden ids
MODEL_SEED = 1              # tiny-model writer seed
FX_MODEL_T5_ENCODER = 3
FX_MODEL_CLIP_TEXT = 4
KIND_NAMES = {"clip": "clip_text", "t5": "t5_encoder"}

PROVENANCE = {
    "clip": (
        "Expected outputs computed by tools/reference/clip_text_reference.py, an independent float64 NumPy "
        "implementation of the CLIP ViT-L/14 text tower as FLUX uses it, written from FluxNative's docs/flux-model.md "
        "(sections 2.3, 3.1, 3.2, 3.4, 8.0, 8.5) alone, without reference to transformers', BFL's, diffusers' "
        "or FluxNative's own C++ code. Weights are upcast from their stored dtype to float64; all maths in "
        "float64; `hidden` and `pooled` are those results rounded to float32 (no bf16 cast of `pooled`). "
        "ids are built from numpy.random.default_rng(input_seed) as the CLIP tokenizer would lay them out. "
        "Models are FluxNative tiny CLIP text encoders, regenerated from the recorded parameters."),
    "t5": (
        "Expected outputs computed by tools/reference/t5_reference.py, an independent float64 NumPy "
        "implementation of the T5-v1.1 encoder as FLUX uses it (no attention mask), written from FluxNative's "
        "docs/flux-model.md (sections 2.3, 3.1, 3.3 including its relative-position bucket test vector, which the "
        "script asserts, 3.4, 8.0, 8.4) alone, without reference to transformers', BFL's, diffusers' or "
        "FluxNative's own C++ code. Weights are upcast from their stored dtype to float64; all maths in "
        "float64 (bf16 activation casts are not modelled); `hidden` is that result rounded to float32. ids are "
        "built from numpy.random.default_rng(input_seed) as the T5 tokenizer would lay them out. Models are "
        "FluxNative tiny T5 encoders, regenerated from the recorded parameters."),
}
SPEC = {
    "clip": "docs/flux-model.md sections 2.3, 3.1, 3.2, 3.4, 8.0, 8.5",
    "t5": "docs/flux-model.md sections 2.3, 3.1, 3.3, 3.4, 8.0, 8.4",
}

# name, kind, dtype, shards, ids layout (see make_ids)
CASES = [
    ("clip-f32", "clip", "f32", 1, "clip"),
    ("clip-bf16", "clip", "bf16", 1, "clip"),
    ("t5-f32", "t5", "f32", 1, "t5"),
    ("t5-f32-sharded", "t5", "f32", 3, "t5"),
    ("t5-bf16", "t5", "bf16", 1, "t5"),
    ("t5-long", "t5", "f32", 1, "t5-long"),
]

# Prompt lengths (content tokens, without specials) of each row.
CLIP_LEN = 77
CLIP_CONTENT = (6, 29)                 # EOS at positions 7 and 30
T5_LEN = 16
T5_CONTENT = (5, 13)                   # </s> at 5 and 13; 10 and 2 <pad>
T5_LONG_LEN = 512
T5_LONG_CONTENT = (300,)               # </s> at 300, 211 <pad>
# Legacy config ids that a wrong pooling rule might look for (config eos_token_id 2, pad 1, bos 0): row 1 of
# the CLIP case contains them as ordinary content tokens.
CLIP_LEGACY_IDS = (2, 1, 0)


# ----------------------------------------------------------------------------------------------
# Tiny text encoders through fx_tiny_model_write
# ----------------------------------------------------------------------------------------------

def text_params(kind: str, dtype: str, seed: int, shards: int = 1) -> dict:
    """model_params as recorded in the metadata: the keys of the flux goldens. `variant` is irrelevant
    for a text encoder; "dev" is what the CLI passes by default."""
    return {"kind": kind, "variant": "dev", "layout": "diffusers", "dtype": dtype, "seed": seed,
            "shards": shards, "hidden_size": 0, "num_heads": 0, "depth": 0, "depth_single": 0}


def cli_command(p: dict, out: str) -> str:
    cmd = (f"dotnet run --project src/FluxNative.Cli -c Release -- tiny-model --kind {p['kind']} "
           f"--layout diffusers --dtype {p['dtype']} --seed {p['seed']}")
    if p["shards"] != 1:
        cmd += f" --shards {p['shards']}"
    return cmd + f" -o {out}"


def write_text_model(writer: TinyWriter, path: str, p: dict) -> dict:
    tp = _TinyParams()
    writer.lib.fx_tiny_model_params_init(ctypes.byref(tp))
    tp.kind = FX_MODEL_T5_ENCODER if p["kind"] == "t5" else FX_MODEL_CLIP_TEXT
    tp.layout = _LAYOUTS[p["layout"]]
    tp.dtype = _DTYPES[p["dtype"]]
    tp.shards = p["shards"]
    tp.seed = p["seed"]
    tp.hidden_size = p["hidden_size"]
    tp.num_heads = p["num_heads"]
    tp.depth = p["depth"]
    tp.depth_single = p["depth_single"]
    if os.path.isdir(path):
        shutil.rmtree(path)
    rc = writer.lib.fx_tiny_model_write(ctypes.byref(tp), path.encode("utf-8"))
    if rc != 0:
        raise RuntimeError(f"fx_tiny_model_write({p}) failed: {rc} "
                           f"{writer.lib.fx_last_error().decode('utf-8', 'replace')}")
    files = sorted(os.listdir(path))
    index = [f for f in files if f.endswith(".safetensors.index.json")]
    shards = [f for f in files if f.endswith(".safetensors")]
    if "config.json" not in files:
        raise RuntimeError(f"{path}: no config.json")
    if p["shards"] > 1:
        if len(index) != 1 or len(shards) != p["shards"]:
            raise RuntimeError(f"{path}: shards={p['shards']} wrote {files}")
        with open(os.path.join(path, index[0]), "r", encoding="utf-8") as f:
            wm = json.load(f)["weight_map"]
        if sorted(set(wm.values())) != shards:
            raise RuntimeError(f"{path}: the index names {sorted(set(wm.values()))}, the folder has {shards}")
    elif index or len(shards) != 1:
        raise RuntimeError(f"{path}: shards=1 wrote {files}")
    return {"files": files}


def fp_json(fp: dict) -> str:
    return json.dumps({"sum": repr(fp["sum"]), "sum_sq": repr(fp["sum_sq"]),
                       "tensor_count": fp["tensor_count"],
                       "definition": "per stored tensor (stored names), sum and sum of squares of the values "
                                     "decoded to float64; summed over all tensors in sorted-name order. "
                                     "Compare with relative tolerance ~1e-9 (summation order may differ)."},
                      sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Token ids laid out as the tokenizers would (§3.1)
# ----------------------------------------------------------------------------------------------

def make_ids(layout: str, vocab_size: int) -> np.ndarray:
    rng = np.random.default_rng(INPUT_SEED)
    if layout == "clip":
        # [BOS, content…, EOS, EOS padding…]; EOS = vocab_size-1 (the largest id, 49407 in the real and the
        # tiny vocabulary), BOS = vocab_size-2 (49406). Content ids are < BOS, so the FIRST maximum is the EOS.
        bos, eos = vocab_size - 2, vocab_size - 1
        ids = np.full((len(CLIP_CONTENT), CLIP_LEN), eos, dtype=np.int32)
        for r, n in enumerate(CLIP_CONTENT):
            content = rng.integers(3, bos, size=n)
            if r == 1:
                content[[3, 9, 17]] = CLIP_LEGACY_IDS
            ids[r, 0] = bos
            ids[r, 1:1 + n] = content
            ids[r, 1 + n] = eos
        return ids
    if layout in ("t5", "t5-long"):
        # [content…, </s>=1, <pad>=0…]; no BOS. Content ids in [2, 32100) (SentencePiece pieces, not the
        # <extra_id_*> sentinels at the top of the 32128 vocabulary).
        L, contents = (T5_LEN, T5_CONTENT) if layout == "t5" else (T5_LONG_LEN, T5_LONG_CONTENT)
        ids = np.zeros((len(contents), L), dtype=np.int32)
        hi = min(32100, vocab_size)
        for r, n in enumerate(contents):
            ids[r, :n] = rng.integers(2, hi, size=n)
            ids[r, n] = 1
        return ids
    raise ValueError(layout)


# ----------------------------------------------------------------------------------------------
# Golden cases
# ----------------------------------------------------------------------------------------------

def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    a = a.astype(np.float64)
    ref = ref.astype(np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    a = a.astype(np.float64)
    ref = ref.astype(np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def build_case(writer: TinyWriter, models_dir: str, out_dir: str, case) -> Dict[str, object]:
    name, kind, dtype, shards, layout = case
    model_path = os.path.join(models_dir, name)
    params = text_params(kind, dtype, MODEL_SEED, shards)
    info = write_text_model(writer, model_path, params)
    ref = clipref if kind == "clip" else t5ref
    model = ref.load_model(model_path)
    c = model.config
    ids = make_ids(layout, c.vocab_size)
    if kind == "clip":
        hidden, pooled = clipref.encode(model, ids)
        pos = clipref.pooled_positions(ids)
        assert all(ids[b, p] == c.vocab_size - 1 and ids[b, p - 1] != c.vocab_size - 1 and
                   not np.any(ids[b, :p] == c.vocab_size - 1) for b, p in enumerate(pos))
        out = {"hidden": hidden.astype(np.float32), "pooled": pooled.astype(np.float32)}
    else:
        hidden = t5ref.encode(model, ids)
        out = {"hidden": hidden.astype(np.float32)}
    fp = ref.fingerprint(model.stored)

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    if kind == "clip":
        gen = (f"numpy.random.default_rng(input_seed): per row, content ids = integers(3, vocab_size-2, n) for "
               f"n = {list(CLIP_CONTENT)}; row = [BOS=vocab_size-2, content, EOS=vocab_size-1] padded to "
               f"{CLIP_LEN} with EOS (the CLIP tokenizer pads with <|endoftext|>). Row 1 content positions 3, 9, "
               f"17 are set to the legacy config ids {list(CLIP_LEGACY_IDS)} (eos/pad/bos_token_id of config.json).")
    else:
        L, contents = (T5_LEN, T5_CONTENT) if layout == "t5" else (T5_LONG_LEN, T5_LONG_CONTENT)
        gen = (f"numpy.random.default_rng(input_seed): per row, content ids = integers(2, 32100, n) for "
               f"n = {list(contents)}; row = [content, </s>=1] padded to {L} with <pad>=0 (no BOS).")
    in_meta = {
        "producer": "tools/reference/make_text_goldens.py",
        "input_seed": str(INPUT_SEED),
        "kind": KIND_NAMES[kind],
        "generator": gen,
        "shapes": json.dumps({"ids": list(ids.shape)}),
    }
    stnp.save_file(os.path.join(case_dir, "inputs.safetensors"), {"ids": ids}, metadata=in_meta)
    exp_meta = {
        "producer": f"tools/reference/make_text_goldens.py + tools/reference/"
                    f"{'clip_text_reference.py' if kind == 'clip' else 't5_reference.py'}",
        "provenance": PROVENANCE[kind],
        "spec": SPEC[kind],
        "kind": KIND_NAMES[kind],
        "numpy_version": np.__version__,
        "model_command": cli_command(params, "MODEL_DIR"),
        "model_params": json.dumps(params, sort_keys=True),
        "model_writer": "fx_tiny_model_write (libfluxnative), kind "
                        + ("FX_MODEL_CLIP_TEXT (4)" if kind == "clip" else "FX_MODEL_T5_ENCODER (3)")
                        + ", layout FX_LAYOUT_DIFFUSERS (2)",
        "model_layout": "diffusers",
        "model_files": json.dumps(info["files"]),
        "model_stored_dtypes": json.dumps(sorted(set(model.stored_dtypes.values()))),
        "model_config": json.dumps(c.as_dict(), sort_keys=True),
        "weights_fingerprint": fp_json(fp),
        "input_seed": str(INPUT_SEED),
    }
    if kind == "clip":
        exp_meta["pooled_positions"] = json.dumps([int(p) for p in clipref.pooled_positions(ids)])
        exp_meta["outputs"] = ("hidden: final_layer_norm output (last_hidden_state) [B, L, d]; pooled: "
                               "hidden[b, p_b], p_b = first index of the maximum id of row b (pooled_positions); "
                               "both float64 results rounded to float32; no bf16 cast, no text_projection.")
    else:
        exp_meta["eos_positions"] = json.dumps([int(np.nonzero(r == 1)[0][0]) for r in ids])
        L = ids.shape[1]
        rel = np.arange(-(L - 1), L)
        used = sorted(set(t5ref.relative_bucket(rel, c.relative_attention_num_buckets,
                                                c.relative_attention_max_distance).tolist()))
        exp_meta["buckets_used"] = json.dumps(used)
        exp_meta["outputs"] = ("hidden: encoder.final_layer_norm output (last_hidden_state) [B, L, d], every "
                               "position including </s> and <pad> (no attention mask, docs/flux-model.md 3.4); float64 result "
                               "rounded to float32.")
    stnp.save_file(os.path.join(case_dir, "expected.safetensors"), out, metadata=exp_meta)
    return {"model": model, "ids": ids, "out": out, "kind": kind}


def sensitivity(name: str, r: Dict[str, object]) -> Dict[str, float]:
    """All-float32 rerun of the same case: relative L2 and max-abs/max errors against the golden."""
    model, ids, out = r["model"], r["ids"], r["out"]
    res: Dict[str, float] = {}
    if r["kind"] == "clip":
        h32, p32 = clipref.encode(model, ids, np.float32)
        assert h32.dtype == np.float32 and p32.dtype == np.float32
        res.update(hidden_rel_l2=rel_l2(h32, out["hidden"]), hidden_max_rel=max_rel(h32, out["hidden"]),
                   pooled_rel_l2=rel_l2(p32, out["pooled"]), pooled_max_rel=max_rel(p32, out["pooled"]))
    else:
        h32 = t5ref.encode(model, ids, np.float32)
        assert h32.dtype == np.float32
        res.update(hidden_rel_l2=rel_l2(h32, out["hidden"]), hidden_max_rel=max_rel(h32, out["hidden"]))
        # Per row: the worst row-wise relative L2 (a per-token comparison).
        d = np.linalg.norm(h32.astype(np.float64) - out["hidden"], axis=-1) / np.linalg.norm(out["hidden"], axis=-1)
        res["hidden_worst_token_rel_l2"] = float(d.max())
    print(f"  {name}: all-float32 rerun: " + ", ".join(f"{k} {v:.2e}" for k, v in res.items()))
    return res


def write_all(lib: Optional[str], out_dir: str, keep_models: Optional[str] = None) -> Dict[str, Dict[str, object]]:
    t5ref.check_bucket_test_vector()      # §3.3 test vector, before anything is written
    clipref.selftest()
    t5ref.selftest()
    writer = TinyWriter(lib)
    models_dir = keep_models or tempfile.mkdtemp(prefix="text-goldens-models-")
    os.makedirs(models_dir, exist_ok=True)
    results: Dict[str, Dict[str, object]] = {}
    try:
        for case in CASES:
            t0 = time.time()
            r = build_case(writer, models_dir, out_dir, case)
            results[case[0]] = r
            o = r["out"]
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in o.items())
            print(f"{case[0]}: ids {list(r['ids'].shape)} -> {shapes}; |hidden| max {np.max(np.abs(o['hidden'])):.4g}, "
                  f"{time.time() - t0:.2f}s")
            r["sensitivity"] = sensitivity(case[0], r)
    finally:
        if keep_models is None:
            shutil.rmtree(models_dir, ignore_errors=True)
    # The sharded twin: same tensors, same outputs, bit for bit.
    a, b = results["t5-f32"], results["t5-f32-sharded"]
    wa, wb = a["model"].weights, b["model"].weights
    assert set(wa) == set(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa), \
        "the 3-shard T5 does not hold the single-file T5's tensors"
    assert np.array_equal(a["out"]["hidden"], b["out"]["hidden"]), "sharded and single-file T5 outputs differ"
    print("t5 f32: 3 shards vs single file: identical tensors and outputs")
    for f32, bf in (("clip-f32", "clip-bf16"), ("t5-f32", "t5-bf16")):
        for k in results[f32]["out"]:
            print(f"{bf} vs {f32}: {k} rel L2 {rel_l2(results[bf]['out'][k], results[f32]['out'][k]):.2e}")
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
        else:
            d = max_rel(new[k], old[k])
            same = d <= 1e-6  # float32 storage; a few ulp of BLAS reordering is fine
            detail = f"max rel {d:.2e}"
        if not same:
            print(f"DIFF {name}/{fname}:{k} {detail}")
            ok = False
    return ok


def check(lib: Optional[str], committed: str) -> bool:
    tmp = tempfile.mkdtemp(prefix="text-goldens-check-")
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
                ok &= _compare(name, fname, new, old)
                if fname == "expected.safetensors":
                    for key in ("weights_fingerprint", "model_params", "model_config", "kind"):
                        if new_meta.get(key) != old_meta.get(key):
                            print(f"DIFF {name}: metadata {key}: {old_meta.get(key)} -> {new_meta.get(key)}")
                            ok = False
        print("check: " + ("committed goldens reproduce" if ok else "DIFFERENCES (see above)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def default_lib() -> str:
    for sub in ("h-ref2", "h-ref"):
        p = os.path.join(REPO, "build", sub, "lib", "libfluxnative.so")
        if os.path.isfile(p):
            return p
    return os.path.join(REPO, "build", "h-ref", "lib", "libfluxnative.so")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write CLIP / T5 text-encoder golden cases.")
    ap.add_argument("--lib", default=None, help="libfluxnative.so (default build/h-ref2 or build/h-ref)")
    ap.add_argument("--out", default=os.path.join(REPO, "native", "tests", "data", "text"))
    ap.add_argument("--keep-models", default=None, help="keep the generated tiny models in this folder")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare")
    args = ap.parse_args(argv)
    lib = args.lib or default_lib()
    t0 = time.time()
    if args.check:
        ok = check(lib, args.out)
        print(f"total {time.time() - t0:.1f}s")
        return 0 if ok else 1
    os.makedirs(args.out, exist_ok=True)
    write_all(lib, args.out, args.keep_models)
    print(f"total {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
