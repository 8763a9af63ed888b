#!/usr/bin/python3
"""One real-width FLUX transformer step on the CPU: FluxNative vs PyTorch (float32 and bf16 autocast).

The model: hidden 3072, 24 heads of 128, RoPE axes [16, 56, 56], MLP 4x, 1 double + 2 single blocks,
dev variant (guidance embedder), bf16 weights, written by FluxNative's tiny-model writer
(fx_tiny_model_write, through ctypes) with seed 1. The inputs: B=1, 256 image tokens (a 16x16 latent
grid, img_ids per docs/flux-model.md §4.4), 64 text tokens (txt_ids zero), img/txt/y drawn from N(0, 1),
timestep 0.7, guidance 3.5.

Three implementations of the same computation on the same weights:
  * FluxNative: `flux forward --repeat N` (the CLI, a separate process; its own threads, 2 by default);
  * PyTorch float32: the weights upcast to f32 (exact), every op in f32;
  * PyTorch bf16 autocast: bf16 weights, `torch.autocast("cpu", dtype=torch.bfloat16)` (oneDNN).

The PyTorch forward is written here from docs/flux-model.md §5 (it follows tools/reference/flux_reference.py,
the float64 NumPy reference, op for op, in torch). Each is warmed up once and timed N times; the
median is reported. FluxNative's output is compared with PyTorch f32's (relative L2).

One run prints a table and writes benchmarks/results/transformer-step-cpu.md.

Needs Debian 12's python3-torch (1.13), python3-numpy and libopenblas0-pthread (without OpenBLAS the
Debian torch falls back to the reference BLAS and the f32 numbers mean nothing).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import math
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
import safetensors_np as stnp  # noqa: E402

HIDDEN, HEADS, DEPTH, DEPTH_SINGLE = 3072, 24, 1, 2
AXES = [16, 56, 56]
GRID = 16          # 16x16 latent patches = 256 image tokens
LTXT = 64
TIMESTEP, GUIDANCE = 0.7, 3.5
EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# Machine / environment
# ----------------------------------------------------------------------------------------------

def sh(cmd, cwd=None) -> str:
    try:
        return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_info() -> dict:
    lscpu = sh("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.M)
    tpc = re.search(r"Thread\(s\) per core:\s*(\d+)", lscpu)
    flags = re.search(r"Flags:\s*(.+)", lscpu)
    flagset = set(flags.group(1).split()) if flags else set()
    interest = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16",
                "amx_tile"]
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    return {
        "model": model.group(1).strip() if model else "?",
        "cpus": cpus.group(1) if cpus else "?",
        "threads_per_core": tpc.group(1) if tpc else "?",
        "flags": {f: (f in flagset) for f in interest},
        "mem_gib": mem,
        "kernel": sh("uname -r"),
    }


def torch_info() -> dict:
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,]+)", cfg)
    dnnl = re.search(r"(Intel\(R\) MKL-DNN v[\d.]+|oneDNN v[\d.]+)", cfg)
    cap = re.search(r"CPU capability usage: (\S+)", cfg)
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    linked = sh(f"ldd {libdir}/libtorch_cpu.so | grep -iE 'blas|lapack|dnnl|gomp|mkl' | "
                f"awk '{{print $1\" -> \"$3}}'")
    resolved = sh("readlink -f /lib/x86_64-linux-gnu/libblas.so.3")
    return {
        "version": torch.__version__,
        "blas_info": blas.group(1) if blas else "?",
        "onednn": dnnl.group(1) if dnnl else "?",
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "cpu_capability": cap.group(1) if cap else "?",
        "linked": linked.replace("\n", "; "),
        "libblas_resolves_to": resolved,
        "has_sdpa": hasattr(F, "scaled_dot_product_attention"),
    }


# ----------------------------------------------------------------------------------------------
# Model and inputs
# ----------------------------------------------------------------------------------------------

def write_model(lib_path: str, path: str, seed: int) -> None:
    """fx_tiny_model_write at real width (the CLI's tiny-model has no width/depth options)."""
    import make_flux_goldens as goldens  # its TinyWriter checks the fx_tiny_model_params ABI
    writer = goldens.TinyWriter(lib_path)
    p = goldens._TinyParams()
    writer.lib.fx_tiny_model_params_init(ctypes.byref(p))
    p.kind = 1      # FX_MODEL_FLUX_TRANSFORMER
    p.layout = 1    # FX_LAYOUT_BFL
    p.dtype = goldens._DTYPES["bf16"]
    p.guidance = 1  # dev
    p.shards = 1
    p.seed = seed
    p.hidden_size, p.num_heads, p.depth, p.depth_single = HIDDEN, HEADS, DEPTH, DEPTH_SINGLE
    rc = writer.lib.fx_tiny_model_write(ctypes.byref(p), path.encode("utf-8"))
    if rc != 0:
        raise RuntimeError(f"fx_tiny_model_write failed: {rc} {writer.lib.fx_last_error().decode()}")


def write_inputs(path: str, in_ch: int, ctx: int, vec: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = np.arange(GRID * GRID)
    img_ids = np.stack([np.zeros_like(n), n // GRID, n % GRID], axis=-1).astype(np.float32)[None]  # §4.4
    f32 = np.float32
    tensors = {
        "img": rng.standard_normal((1, GRID * GRID, in_ch)).astype(f32),
        "img_ids": img_ids,
        "txt": rng.standard_normal((1, LTXT, ctx)).astype(f32),
        "txt_ids": np.zeros((1, LTXT, 3), dtype=f32),
        "y": rng.standard_normal((1, vec)).astype(f32),
        "timesteps": np.array([TIMESTEP], dtype=f32),
        "guidance": np.array([GUIDANCE], dtype=f32),
    }
    stnp.save_file(path, tensors, metadata={"producer": "benchmarks/transformer-step/compare_pytorch.py",
                                            "seed": str(seed)})


# ----------------------------------------------------------------------------------------------
# PyTorch forward (docs/flux-model.md §5), written for torch 1.13 (no scaled_dot_product_attention there)
# ----------------------------------------------------------------------------------------------

def silu(x):
    return F.silu(x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def layer_norm(x):
    return F.layer_norm(x, (x.shape[-1],), None, None, EPS)


def rms_norm(x, scale):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS) * scale


def modulate(x, shift, scale):
    return (1.0 + scale) * layer_norm(x) + shift


def lin(x, w, name):
    return F.linear(x, w[name + ".weight"], w[name + ".bias"])


def timestep_embedding(t64: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """[cos(1000 t f_i), sin(1000 t f_i)], f_i = exp(-ln(1e4) i / half), computed in float64."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = (1000.0 * t64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).float()


def rope_cos_sin(ids: torch.Tensor):
    """ids [B, L, 3] -> cos, sin [B, 1, L, hd/2] (float32), angles in float64 (§5.2)."""
    ids = ids.double()
    parts = []
    for a, d in enumerate(AXES):
        omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        parts.append(ids[..., a:a + 1] * omega)
    phi = torch.cat(parts, dim=-1)
    return torch.cos(phi).float()[:, None], torch.sin(phi).float()[:, None]


def apply_rope(x, cos, sin):
    """Rotates adjacent pairs (x[2m], x[2m+1]) by φ_m."""
    xp = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).flatten(-2)


def split_heads(qkv, nh, hd):
    B, L, _ = qkv.shape
    t = qkv.reshape(B, L, 3, nh, hd).permute(2, 0, 3, 1, 4)
    return t[0], t[1], t[2]


def attention(q, k, v):
    hd = q.shape[-1]
    p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)), dim=-1)
    o = torch.matmul(p, v)
    B, nh, L, _ = o.shape
    return o.transpose(1, 2).reshape(B, L, nh * hd)


def chunks(m, k):
    return [c[:, None] for c in m.chunk(k, dim=-1)]


def double_block(img, txt, vec, cs, w, n):
    p = f"double_blocks.{n}."
    nh, hd = HEADS, HIDDEN // HEADS
    sv = silu(vec)
    s1, c1, g1, s2, c2, g2 = chunks(lin(sv, w, p + "img_mod.lin"), 6)
    ts1, tc1, tg1, ts2, tc2, tg2 = chunks(lin(sv, w, p + "txt_mod.lin"), 6)
    iq, ik, iv = split_heads(lin(modulate(img, s1, c1), w, p + "img_attn.qkv"), nh, hd)
    iq = rms_norm(iq, w[p + "img_attn.norm.query_norm.scale"])
    ik = rms_norm(ik, w[p + "img_attn.norm.key_norm.scale"])
    tq, tk, tv = split_heads(lin(modulate(txt, ts1, tc1), w, p + "txt_attn.qkv"), nh, hd)
    tq = rms_norm(tq, w[p + "txt_attn.norm.query_norm.scale"])
    tk = rms_norm(tk, w[p + "txt_attn.norm.key_norm.scale"])
    q = apply_rope(torch.cat([tq, iq], dim=2), *cs)  # text first
    k = apply_rope(torch.cat([tk, ik], dim=2), *cs)
    v = torch.cat([tv, iv], dim=2)
    a = attention(q, k, v)
    lt = txt.shape[1]
    a_txt, a_img = a[:, :lt], a[:, lt:]
    img = img + g1 * lin(a_img, w, p + "img_attn.proj")
    img = img + g2 * lin(gelu_tanh(lin(modulate(img, s2, c2), w, p + "img_mlp.0")), w, p + "img_mlp.2")
    txt = txt + tg1 * lin(a_txt, w, p + "txt_attn.proj")
    txt = txt + tg2 * lin(gelu_tanh(lin(modulate(txt, ts2, tc2), w, p + "txt_mlp.0")), w, p + "txt_mlp.2")
    return img, txt


def single_block(x, vec, cs, w, n):
    p = f"single_blocks.{n}."
    nh, hd, H = HEADS, HIDDEN // HEADS, HIDDEN
    s, sc, g = chunks(lin(silu(vec), w, p + "modulation.lin"), 3)
    u = lin(modulate(x, s, sc), w, p + "linear1")
    q, k, v = split_heads(u[..., :3 * H], nh, hd)
    q = apply_rope(rms_norm(q, w[p + "norm.query_norm.scale"]), *cs)
    k = apply_rope(rms_norm(k, w[p + "norm.key_norm.scale"]), *cs)
    a = attention(q, k, v)
    o = lin(torch.cat([a, gelu_tanh(u[..., 3 * H:])], dim=-1), w, p + "linear2")
    return x + g * o


def mlp_embedder(x, w, name):
    return lin(silu(lin(x, w, name + ".in_layer")), w, name + ".out_layer")


def torch_forward(w, inp):
    img, txt, y = inp["img"], inp["txt"], inp["y"]
    vec = mlp_embedder(timestep_embedding(inp["timesteps"].double()), w, "time_in")
    vec = vec + mlp_embedder(timestep_embedding(inp["guidance"].double()), w, "guidance_in")
    vec = vec + mlp_embedder(y, w, "vector_in")
    img = lin(img, w, "img_in")
    txt = lin(txt, w, "txt_in")
    cs = rope_cos_sin(torch.cat([inp["txt_ids"], inp["img_ids"]], dim=1))
    for n in range(DEPTH):
        img, txt = double_block(img, txt, vec, cs, w, n)
    lt = txt.shape[1]
    x = torch.cat([txt, img], dim=1)
    for n in range(DEPTH_SINGLE):
        x = single_block(x, vec, cs, w, n)
    img = x[:, lt:]
    shift, scale = chunks(lin(silu(vec), w, "final_layer.adaLN_modulation.1"), 2)
    return lin(modulate(img, shift, scale), w, "final_layer.linear")


def time_torch(w, inp, autocast: bool, repeat: int):
    def once():
        with torch.inference_mode():
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return torch_forward(w, inp).float()
            return torch_forward(w, inp)

    out = once()  # warm-up (its output is the one compared)
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        ms.append((time.perf_counter() - t0) * 1e3)
    return out.numpy().astype(np.float64), ms


# ----------------------------------------------------------------------------------------------
# FluxNative
# ----------------------------------------------------------------------------------------------

def run_fluxnative(model, inputs, out, repeat, threads, activations="f32"):
    cmd = ["dotnet", "run", "--project", os.path.join(REPO, "src", "FluxNative.Cli"), "-c", "Release",
           "--no-build", "--", "forward", "--model", model, "--inputs", inputs, "--out", out,
           "--repeat", str(repeat), "--activations", activations]
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"flux forward failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    m = re.search(r"median ([\d.]+) ms, min ([\d.]+) ms, max ([\d.]+) ms", r.stdout)
    if not m:
        raise RuntimeError(f"no timing line in flux forward output:\n{r.stdout}")
    res, _ = stnp.load_file(out)
    return res["out"].astype(np.float64), [float(m.group(i)) for i in (1, 2, 3)], r.stdout.strip(), " ".join(cmd)


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def flop_count(limg, ltxt):
    """Multiply-adds x2 of the token-wise linears and the attention matmuls (the GEMM work)."""
    H, M, L = HIDDEN, 4 * HIDDEN, limg + ltxt
    per_tok_double = 3 * H * H + H * H + 2 * H * M           # qkv, proj, mlp (each token, its stream's weights)
    per_tok_single = (3 * H + M) * H + (H + M) * H           # linear1, linear2
    attn = 2 * L * L * H                                     # q k^T and p v, all heads
    macs = DEPTH * (L * per_tok_double + attn) + DEPTH_SINGLE * (L * per_tok_single + attn)
    macs += limg * (64 * H + H * 64)                         # img_in, final linear
    return 2 * macs


# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp", help="where the model, inputs and outputs go")
    ap.add_argument("--lib", default=os.path.join(REPO, "build", "native", "lib", "libfluxnative.so"),
                    help="libfluxnative.so used to write the model")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads; FluxNative uses its default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results", "transformer-step-cpu.md"))
    ap.add_argument("--rewrite-model", action="store_true")
    args = ap.parse_args(argv)

    load_start = loadavg()
    uptime_start = sh("uptime")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = sh("git rev-parse --short HEAD", cwd=REPO)
    dirty = sh("git status --porcelain --untracked-files=no", cwd=REPO)
    mach, tinfo = machine_info(), torch_info()

    model = os.path.join(args.workdir, "flux-realwidth.safetensors")
    inputs = os.path.join(args.workdir, "flux-realwidth-inputs.safetensors")
    fx_out = os.path.join(args.workdir, "flux-realwidth-out-fluxnative.safetensors")
    if args.rewrite_model or not os.path.isfile(model):
        print(f"writing {model} ...", flush=True)
        write_model(args.lib, model, args.seed)
    w_np, meta = stnp.load_file(model)
    in_ch, ctx, vec_in = w_np["img_in.weight"].shape[1], w_np["txt_in.weight"].shape[1], \
        w_np["vector_in.in_layer.weight"].shape[1]
    if w_np["img_in.weight"].shape[0] != HIDDEN or meta.get("axes_dim", "").replace(" ", "") != "[16,56,56]":
        raise SystemExit(f"{model} is not the real-width model (rerun with --rewrite-model)")
    nparams = sum(int(v.size) for v in w_np.values())
    write_inputs(inputs, in_ch, ctx, vec_in, args.seed)
    limg, gflop = GRID * GRID, flop_count(GRID * GRID, LTXT) / 1e9

    print(f"model {model}: {nparams / 1e6:.1f} M params (bf16), in {in_ch}, ctx {ctx}, vec {vec_in}; "
          f"{limg} img + {LTXT} txt tokens; ~{gflop:.1f} GFLOP of GEMM work", flush=True)

    # 1. FluxNative (separate process; nothing else of ours is running while it is timed).
    fx, fx_t, fx_stdout, fx_cmd = run_fluxnative(model, inputs, fx_out, args.repeat, 0)
    print(fx_stdout, flush=True)
    fxb, fxb_t, fxb_stdout, _ = run_fluxnative(model, inputs, fx_out + ".bf16act", args.repeat, 0, "bf16")
    print(fxb_stdout, flush=True)

    # 2. PyTorch.
    torch.set_num_threads(args.threads)
    inp = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in stnp.load_file(inputs)[0].items()}
    w32 = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in w_np.items()}
    del w_np
    t32, t32_ms = time_torch(w32, inp, autocast=False, repeat=args.repeat)
    print(f"torch f32 done: median {statistics.median(t32_ms):.1f} ms", flush=True)
    wbf = {k: v.to(torch.bfloat16) for k, v in w32.items()}  # exact: the stored values are bf16
    del w32
    tbf, tbf_ms = time_torch(wbf, inp, autocast=True, repeat=args.repeat)
    print(f"torch bf16 autocast done: median {statistics.median(tbf_ms):.1f} ms", flush=True)

    load_end = loadavg()
    uptime_end = sh("uptime")

    rows = [
        ("FluxNative (flux forward)", "bf16 weights, f32 activations", fx_t[0], fx_t[1], fx_t[2], rel_l2(fx, t32)),
        ("FluxNative (flux forward --activations bf16)", "bf16 weights, bf16 activations (vdpbf16ps)", fxb_t[0],
         fxb_t[1], fxb_t[2], rel_l2(fxb, t32)),
        ("PyTorch " + torch.__version__, "float32", statistics.median(t32_ms), min(t32_ms), max(t32_ms), 0.0),
        ("PyTorch " + torch.__version__, "bf16 autocast (oneDNN)", statistics.median(tbf_ms), min(tbf_ms),
         max(tbf_ms), rel_l2(tbf, t32)),
    ]
    header = "| implementation | precision | median ms | min ms | max ms | GFLOP/s (median) | rel. L2 vs torch f32 |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for name, prec, med, mn, mx, rl in rows:
        lines.append(f"| {name} | {prec} | {med:.1f} | {mn:.1f} | {mx:.1f} | {gflop / (med / 1e3):.0f} | "
                     f"{rl:.2e} |")
    table = "\n".join(lines)
    extra = {"FluxNative f32 act. vs torch bf16 autocast": rel_l2(fx, tbf),
             "FluxNative bf16 act. vs torch bf16 autocast": rel_l2(fxb, tbf)}
    fx_f32_ms, fx_bf16_ms, torch_f32_ms, torch_bf16_ms = rows[0][2], rows[1][2], rows[2][2], rows[3][2]
    speed = {"torch f32 / FluxNative f32 act.": torch_f32_ms / fx_f32_ms,
             "torch bf16 autocast / FluxNative f32 act.": torch_bf16_ms / fx_f32_ms,
             "torch f32 / FluxNative bf16 act.": torch_f32_ms / fx_bf16_ms,
             "torch bf16 autocast / FluxNative bf16 act.": torch_bf16_ms / fx_bf16_ms}

    print()
    print(table)
    for k, v in extra.items():
        print(f"rel. L2 {k}: {v:.2e}")
    for k, v in speed.items():
        print(f"speed ratio {k}: {v:.2f}x")
    print(f"load average: start {load_start}, end {load_end}")

    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in mach["flags"].items())
    md = f"""# One real-width FLUX transformer step on the CPU: FluxNative vs PyTorch

Written by `benchmarks/transformer-step/compare_pytorch.py` (see the README next to it for what is measured
and what is not).

- date: {date}
- git commit: `{commit}`{' (working tree has uncommitted changes to tracked files)' if dirty else ''}
- machine: {mach['model']}, {mach['cpus']} CPUs ({mach['threads_per_core']} thread per core), {mach['mem_gib']} GiB,
  kernel {mach['kernel']}
- CPU flags: {flags}
- load average (1/5/15 min): start {load_start}, end {load_end}
  - `uptime` at start: `{uptime_start}`
  - `uptime` at end: `{uptime_end}`
- torch {tinfo['version']} (Debian python3-torch), BLAS_INFO={tinfo['blas_info']}, {tinfo['onednn']},
  mkldnn available: {tinfo['mkldnn_available']}, ATen CPU capability: {tinfo['cpu_capability']},
  scaled_dot_product_attention: {'yes' if tinfo['has_sdpa'] else 'no (explicit softmax(q kᵀ/√d) v)'}
- libtorch_cpu links: {tinfo['linked']}; libblas.so.3 resolves to `{tinfo['libblas_resolves_to']}`
- threads: torch.set_num_threads({args.threads}); FluxNative its default pool (one thread per core)

Model: hidden {HIDDEN}, {HEADS} heads of {HIDDEN // HEADS}, axes {AXES}, MLP 4x, {DEPTH} double + {DEPTH_SINGLE}
single blocks, dev (guidance embedder), bf16 weights, {nparams / 1e6:.1f} M parameters, written by
`fx_tiny_model_write` (seed {args.seed}); in_channels {in_ch}, context_in_dim {ctx}, vec_in_dim {vec_in}.
Inputs: B=1, {limg} image tokens ({GRID}x{GRID} grid), {LTXT} text tokens, timestep {TIMESTEP}, guidance {GUIDANCE}.
GEMM work per forward ≈ {gflop:.1f} GFLOP. Warm-up 1, then {args.repeat} timed forwards each.

{table}

{chr(10).join(f"- rel. L2, {k}: {v:.2e}" for k, v in extra.items())}
{chr(10).join(f"- median time ratio {k}: {v:.2f}x" for k, v in speed.items())}

FluxNative command (the second run adds `--activations bf16`): `{fx_cmd.replace(REPO + '/', '')}`

```
{fx_stdout}
{fxb_stdout}
```
"""
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as f:
        f.write(md)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
