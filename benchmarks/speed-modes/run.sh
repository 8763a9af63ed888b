#!/usr/bin/env bash
# Writes benchmarks/results/speed-modes.md: every speed mode, and a sweep of step-cache thresholds, on the tiny
# demo transformer and on a real-width (hidden 3072, 24 heads) reduced-depth (1 double + 2 single blocks) random
# transformer, both with the demo's tiny random autoencoder. The real-width run is small (128x128, 16 text tokens,
# one seed) so that it fits in minutes on a 2-core machine.
# Usage: benchmarks/speed-modes/run.sh [workdir]   (default /tmp/fluxnative-speed-modes; the models are written once)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/fluxnative-speed-modes}"
mkdir -p "$work"
# The tool is not in FluxNative.sln: built here, with the CLI (both Release, as dotnet build -c Release builds them).
dotnet build "$root/src/FluxNative.Cli" -c Release -nologo -v:quiet
dotnet build "$root/benchmarks/speed-modes" -c Release -nologo -v:quiet
flux=(dotnet "$root/src/FluxNative.Cli/bin/Release/net10.0/flux.dll")
bench=(dotnet "$root/benchmarks/speed-modes/bin/Release/net10.0/SpeedModesBenchmark.dll")
[[ -f $work/flux-tiny.safetensors ]] || "${flux[@]}" tiny-model --kind flux --variant dev --dtype f32 --seed 1 -o "$work/flux-tiny.safetensors"
[[ -f $work/flux-realwidth-1-2.safetensors ]] || "${flux[@]}" tiny-model --kind flux --variant dev --dtype bf16 --seed 1 \
  --hidden-size 3072 --num-heads 24 --depth 1 --depth-single 2 -o "$work/flux-realwidth-1-2.safetensors"
[[ -f $work/ae-tiny.safetensors ]] || "${flux[@]}" tiny-model --kind ae --depth 4 --depth-single 2 --seed 1 -o "$work/ae-tiny.safetensors"

"${bench[@]}" --label "Tiny demo transformer (hidden 64), 256x256, 28 steps" --transformer "$work/flux-tiny.safetensors" \
  --ae "$work/ae-tiny.safetensors" --size 256 --steps 28 --seeds 1,2,3,4 --thresholds 0.3,0.5,1,2 --out "$work/tiny.md"
"${bench[@]}" --label "Real-width reduced-depth transformer (hidden 3072, 1 double + 2 single blocks, bf16 weights), 128x128, 28 steps" \
  --transformer "$work/flux-realwidth-1-2.safetensors" --ae "$work/ae-tiny.safetensors" --size 128 --steps 28 --seeds 1 \
  --text-tokens 16 --thresholds 0.5,1 --out "$work/realwidth.md"

out="$root/benchmarks/results/speed-modes.md"
{
  echo "# Speed modes: blocks run, time and quality cost against lossless"
  echo
  echo "Written by \`benchmarks/speed-modes/run.sh\` (what is measured: benchmarks/speed-modes/README.md)."
  echo
  echo "- git commit: \`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- src native || echo ' (working tree has uncommitted changes)')"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  cat "$work/tiny.md" "$work/realwidth.md"
} > "$out"
echo "wrote $out"
