#!/usr/bin/env bash
# The GPU check, run in ONE call of the device tool on an H100/H200 machine (CUDA 13 nvcc, CMake, ninja,
# PyTorch; no .NET, no Debian packages, no network):
#
#   here:   bash tools/device/prepare.sh            (gathers .device-deps/)
#   device: run(command="bash tools/device/check.sh", carry=[".device-deps"], timeout_s=480)
#
# It builds the native library and its tests for sm_90 with every core, runs the CUDA tests (the kernels
# against the CPU references, and every backend operation of the CUDA backend against the CPU backend),
# and writes a report (GPU, driver, toolkit, commit, test results, timings) to $OUT/report.md and
# $OUT/report.json, to commit under benchmarks/results/. Each step is timed and bounded; a failing step
# is recorded and the script goes on to the next, so one call always brings back a report.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/fx-device-out}
mkdir -p "$out"
deps=$PWD/.device-deps
log="$out/log.txt"
: >"$log"
declare -A status seconds
step() {  # step NAME TIMEOUT COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "== $name" | tee -a "$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  status[$name]=$?
  seconds[$name]=$(( $(date +%s) - t0 ))
  echo "   rc=${status[$name]} in ${seconds[$name]} s" | tee -a "$log"
}

[ -d "$deps/root" ] || { echo "no .device-deps: run tools/device/prepare.sh here and carry it" | tee -a "$log"; exit 2; }
export CMAKE_PREFIX_PATH="$deps/gtest-install:$deps/root/usr"
export PKG_CONFIG_PATH="$deps/root/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/root/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR=""
export LD_LIBRARY_PATH="$deps/root/usr/lib/x86_64-linux-gnu:$deps/root/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
jobs=$(nproc)

step gtest 180 bash -c "cmake -S '$deps/googletest' -B '$deps/gtest-build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX='$deps/gtest-install' && cmake --build '$deps/gtest-build' -j $jobs && cmake --install '$deps/gtest-build'"
step configure 120 cmake -S . -B build/device -G Ninja -DCMAKE_BUILD_TYPE=Release -DFX_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DFX_BUILD_TESTS=ON -DFX_BUILD_BENCH=OFF \
  -DPNG_PNG_INCLUDE_DIR="$deps/root/usr/include" -DPNG_LIBRARY="$deps/root/usr/lib/x86_64-linux-gnu/libpng.so" \
  -DJPEG_INCLUDE_DIR="$deps/root/usr/include" -DJPEG_LIBRARY="$deps/root/usr/lib/x86_64-linux-gnu/libjpeg.so" \
  -DZLIB_INCLUDE_DIR="$deps/root/usr/include" -DZLIB_LIBRARY="$deps/root/usr/lib/x86_64-linux-gnu/libz.so"
step build 300 cmake --build build/device -j "$jobs" --target fluxnative_tests
tests=build/device/native/fluxnative_tests
step cuda-tests 240 "$tests" --gtest_filter='Cuda*:BackendOps*:BackendSelection*' --gtest_output=json:"$out/cuda-tests.json"
step cpu-tests 240 "$tests" --gtest_filter='-Cuda*' --gtest_brief=1

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
nvcc_version=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
{
  echo "# FluxNative GPU check"
  echo
  echo "- GPU, driver, memory: ${gpu:-unknown}"
  echo "- CUDA toolkit (nvcc): ${nvcc_version:-unknown}"
  echo "- commit: $commit"
  echo "- date: $(date -u +%FT%TZ)"
  echo
  echo "| step | rc | seconds |"
  echo "|---|---|---|"
  for name in gtest configure build cuda-tests cpu-tests; do
    echo "| $name | ${status[$name]:-not run} | ${seconds[$name]:-} |"
  done
  echo
  echo "CUDA test results (failures and skips):"
  echo '```'
  grep -E "^\[  (FAILED|SKIPPED) |Failure|Expected|Which is|relative L2|cuda backend" "$log" | head -80
  echo '```'
} >"$out/report.md"
{
  printf '{"gpu": "%s", "nvcc": "%s", "commit": "%s", "steps": {' "${gpu:-unknown}" "${nvcc_version:-unknown}" "$commit"
  first=1
  for name in gtest configure build cuda-tests cpu-tests; do
    [ $first -eq 1 ] || printf ', '
    first=0
    printf '"%s": {"rc": %s, "seconds": %s}' "$name" "${status[$name]:-null}" "${seconds[$name]:-null}"
  done
  printf '}}\n'
} >"$out/report.json"
cat "$out/report.md"
