#!/usr/bin/env python3
"""The PyTorch side of the GPU step benchmark: the same transformer forward as fluxnative_step_bench, on the same
weights and inputs, timed on the same GPU, and its output compared with FluxNative's.

fluxnative_step_bench (native/tools/step_bench.cpp) writes a transformer of the published shapes (random bf16
weights), runs it on --device and writes its inputs and output (--inputs, --out). This script reads those three
files, runs the forward of docs/flux-model.md §5 in PyTorch (the functions of compare_pytorch.py, op for op) with
bf16 weights under torch.autocast(bfloat16) and scaled_dot_product_attention (flash attention on a recent GPU),
optionally torch.compile'd (what flux-fast does first), and prints the median time and the relative L2 between the
two outputs (~1e-2 is expected: PyTorch rounds every activation to bf16, FluxNative keeps f32 activations by
default). tools/device/check.sh runs both, one after the other, in the GPU check.

    python3 benchmarks/transformer-step/compare_pytorch_cuda.py --model M.safetensors --inputs in.safetensors \\
        --out out.safetensors [--device cuda] [--repeat 10] [--compile] [--json result.json]

Needs PyTorch (>= 2.0 for scaled_dot_product_attention; older ones fall back to the explicit softmax) and NumPy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_pytorch as cp  # noqa: E402  (the forward, op for op; its reader of safetensors files)


def load_weights(path: str, device: str) -> dict:
    # The NumPy reader widens bf16 to f32 exactly; on the device the weights are bf16 again, bit for bit.
    tensors, _ = cp.stnp.load_file(path)
    return {name: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=torch.bfloat16) for name, a in tensors.items()}


def device_aware(device: str) -> None:
    """compare_pytorch's embeddings build float64 tables on the CPU: make them on the inputs' device."""

    def timestep_embedding(t64, dim=256):
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t64.device) / half)
        args = (1000.0 * t64)[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).float()

    def rope_cos_sin(ids):
        ids = ids.double()
        parts = []
        for a, d in enumerate(cp.AXES):
            omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
            parts.append(ids[..., a:a + 1] * omega)
        phi = torch.cat(parts, dim=-1)
        return torch.cos(phi).float()[:, None], torch.sin(phi).float()[:, None]

    def attention(q, k, v):
        hd = q.shape[-1]
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)), dim=-1), v)
        B, nh, L, _ = o.shape
        return o.transpose(1, 2).reshape(B, L, nh * hd)

    cp.timestep_embedding = timestep_embedding
    cp.rope_cos_sin = rope_cos_sin
    cp.attention = attention


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the transformer fluxnative_step_bench wrote")
    ap.add_argument("--inputs", required=True, help="its --inputs file")
    ap.add_argument("--out", required=True, help="its --out file (FluxNative's output)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward first (flux-fast's first step)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)

    weights = load_weights(args.model, args.device)
    cp.DEPTH = len({n for n in weights if n.startswith("double_blocks.") and n.endswith("img_mod.lin.weight")})
    cp.DEPTH_SINGLE = len({n for n in weights if n.startswith("single_blocks.") and n.endswith("modulation.lin.weight")})
    cp.HIDDEN = weights["img_in.weight"].shape[0]
    cp.HEADS = cp.HIDDEN // weights["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]   # hidden / head_dim
    device_aware(args.device)

    inputs_np, _ = cp.stnp.load_file(args.inputs)
    inp = {k: torch.from_numpy(np.ascontiguousarray(v)).to(args.device) for k, v in inputs_np.items()}
    if "guidance_in.in_layer.weight" not in weights:
        # schnell: no guidance embedder, the forward must not add one.
        def forward_schnell(w, x):
            saved = cp.mlp_embedder

            def embed(v, w_, name):
                return torch.zeros_like(saved(v, w_, "time_in")) if name == "guidance_in" else saved(v, w_, name)

            cp.mlp_embedder = embed
            try:
                return cp.torch_forward(w, x)
            finally:
                cp.mlp_embedder = saved
        forward = forward_schnell
    else:
        forward = cp.torch_forward

    def once():
        with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
            return forward(weights, inp).float()

    run = torch.compile(once) if args.compile else once
    compile_s = None
    t0 = time.perf_counter()
    out = run()  # the first call compiles (with --compile); its output is the one compared
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    if args.compile:
        compile_s = time.perf_counter() - t0
    for _ in range(max(0, args.warmup - 1)):
        run()
    ms = []
    for _ in range(args.repeat):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)

    fluxnative, _ = cp.stnp.load_file(args.out)
    a = out.double().cpu().numpy()
    b = fluxnative["out"].astype(np.float64)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "depth": cp.DEPTH,
        "depth_single": cp.DEPTH_SINGLE,
        "compile": args.compile,
        "compile_s": compile_s,
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "rel_l2_vs_fluxnative": rel,
    }
    print(f"pytorch     {result['torch']} on {result['device']}, bf16 autocast, "
          f"{'sdpa' if hasattr(F, 'scaled_dot_product_attention') else 'explicit softmax'}"
          f"{', torch.compile' if args.compile else ''}: median {result['median_ms']:.2f} ms "
          f"(min {result['min_ms']:.2f}, max {result['max_ms']:.2f}) over {args.repeat}")
    print(f"agreement   relative L2 of FluxNative's output against PyTorch's: {rel:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if math.isfinite(rel) else 1


if __name__ == "__main__":
    sys.exit(main())
