#!/usr/bin/env bash
# Writes benchmarks/results/engine-load-cpu.md: load time of a real-width model (the published widths: hidden 3072,
# T5-XXL 4096, CLIP-L; reduced depth to fit the machine) from its bf16 safetensors source, from a bf16 engine and from
# an fp8 engine built from it, side by side in one run, plus the first request after the load (where an engine's
# mapped pages are first read) and the fp8 engine's quality check. Each setup is loaded `rounds` times in turn
# (A B C A B C ...), so that all see the same page cache; the files are on the same disk.
# Usage: benchmarks/engine-load/run.sh [workdir] [rounds]   (default /tmp/fluxnative-engine-load, 3)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/fluxnative-engine-load}"
rounds="${2:-3}"
depth=2 single=4 layers=2
mkdir -p "$work"
dotnet build "$root/src/FluxNative.Cli" -c Release -nologo -v:quiet
flux=(dotnet "$root/src/FluxNative.Cli/bin/Release/net10.0/flux.dll")

# The source: flux bench writes the synthetic folder (bf16, published shapes) once into the cache dir.
"${flux[@]}" bench --synthetic schnell --depth $depth --depth-single $single --encoder-layers $layers --cache-dir "$work/synthetic" \
  --width 64 --height 64 --steps 1 --runs 1 --warmup 0 --progress none > /dev/null
source_dir=$(find "$work/synthetic" -mindepth 1 -maxdepth 1 -type d | head -1)
# The synthetic folder holds BFL-style files; the tokenizers go where a model folder keeps them, beside the encoders.
tokenizers="$root/src/FluxNative.Cli/bin/Release/net10.0/tokenizers"
[[ -d $source_dir/tokenizer ]] || cp -r "$tokenizers/clip" "$source_dir/tokenizer"
[[ -d $source_dir/tokenizer_2 ]] || cp -r "$tokenizers/t5" "$source_dir/tokenizer_2"
source_args=(--transformer "$source_dir/transformer.safetensors" --ae "$source_dir/ae.safetensors" --clip "$source_dir/text_encoder"
  --t5 "$source_dir/text_encoder_2")
[[ -f $work/bf16.fluxengine ]] || "${flux[@]}" build "${source_args[@]}" --precision bf16 -o "$work/bf16.fluxengine" --no-check --no-hash
[[ -f $work/fp8.fluxengine ]] || "${flux[@]}" build "${source_args[@]}" --precision fp8 -o "$work/fp8.fluxengine" --no-hash \
  --check-size 256 --check-steps 4 2> "$work/fp8-build.log"

bench() {  # label, model arguments...; prints "label load_s first_request_s host_GiB"
  local label=$1
  shift
  "${flux[@]}" bench "$@" --width 256 --height 256 --steps 1 --runs 1 --warmup 0 --max-length 64 --progress none \
    --json "$work/$label.json" > /dev/null
  /usr/bin/python3 - "$work/$label.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], f"{r['load_s']:.2f}", f"{r['runs_ms'][0]['total'] / 1000:.2f}", f"{r['memory']['host_bytes_after_load'] / 2**30:.2f}")
PY
}
: > "$work/rows.txt"
for round in $(seq "$rounds"); do
  bench source "${source_args[@]}" >> "$work/rows.txt"
  bench bf16-engine --model "$work/bf16.fluxengine" >> "$work/rows.txt"
  bench fp8-engine --model "$work/fp8.fluxengine" >> "$work/rows.txt"
done

out="$root/benchmarks/results/engine-load-cpu.md"
{
  echo "# Loading from an engine against loading the bf16 source (CPU)"
  echo
  echo "Written by \`benchmarks/engine-load/run.sh\`: the synthetic schnell model at the published widths with $depth double and $single"
  echo "single blocks and $layers layers per text encoder (\`flux bench --synthetic\`, random bf16 weights), its bf16 and fp8 engines"
  echo "(\`flux build\`), each loaded by \`flux bench\` (the whole pipeline: transformer, autoencoder, CLIP, T5) $rounds times in turn."
  echo "\"first request\" is the one 256x256, 1-step request after the load: an engine's pages are read from the mapping then."
  echo
  echo "- git commit: \`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- src native || echo ' (working tree has uncommitted changes)')"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- sizes: source $(du -sh "$source_dir" | cut -f1), bf16 engine $(du -h "$work/bf16.fluxengine" | cut -f1), fp8 engine $(du -h "$work/fp8.fluxengine" | cut -f1)"
  echo
  echo "| setup | load (s), each round | median load (s) | first request (s), each round | host memory after load (GiB) |"
  echo "|---|---|---:|---|---:|"
  /usr/bin/python3 - "$work/rows.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, load, first, mem = line.split()
    rows.setdefault(label, []).append((float(load), float(first), float(mem)))
base = statistics.median(l for l, _, _ in rows["source"])
for label, runs in rows.items():
    med = statistics.median(l for l, _, _ in runs)
    ratio = "" if label == "source" else f" ({base / med:.1f}x faster)"
    print(f"| {label} | {', '.join(f'{l:.2f}' for l, _, _ in runs)} | {med:.2f}{ratio} | {', '.join(f'{f:.2f}' for _, f, _ in runs)} | {runs[-1][2]:.2f} |")
PY
  echo
  echo "The fp8 engine's quality check (\`flux build\` against the bf16 model, 4 built-in prompts, 256x256, 4 steps):"
  echo
  echo '```'
  grep -E "quality|checking" "$work/fp8-build.log" || true
  echo '```'
} > "$out"
echo "wrote $out"
