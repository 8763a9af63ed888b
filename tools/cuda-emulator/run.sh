#!/usr/bin/env bash
# Runs the CUDA test suites on the CPU in the emulator (README.md here): the kernels of native/src/ops/cuda and
# the CUDA backend compiled as host C++, the GoogleTest files of the CUDA tests and the backend-op tests linked
# against them.
#
#   tools/cuda-emulator/run.sh [GTEST_FILTER] [BUILD_DIR]
#
# BUILD_DIR (default build/native) must hold a FX_CUDA=ON build of fluxnative_impl: its CPU code (references,
# models, the backend seam) is linked as it is, and the emulated objects stand in for its CUDA ones.
# Slow (every CUDA thread is a fiber on one core): choose small suites; the default is the quick set.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
filter=${1:-'CudaEncoderOps.Upsample*:CudaEncoderOps.Transpose*:CudaEncoderOps.ScaleLatents*:CudaEncoderOps.Embedding*:CudaEncoderOps.RelativePosition*:CudaEncoderOps.Conv2dF32*:BackendOps.ImageOperations:BackendOps.EmbeddingAndRelativePositionBias:BackendOps.AttentionAtEncoderShapes'}
build=${2:-build/native}
lib=$build/native/libfluxnative_impl.a
[ -f "$lib" ] || { echo "no $lib: configure with -DFX_CUDA=ON and build fluxnative_impl first" >&2; exit 2; }
# (grep reads everything: with -q, nm would die of SIGPIPE and pipefail would report that.)
nm -C "$lib" 2>/dev/null | grep "fx::backend::cuda_backend" >/dev/null ||
  { echo "$lib was built without the CUDA backend (FX_CUDA=ON needed)" >&2; exit 2; }
work=build/cuda-emulator
mkdir -p "$work/gen" "$work/obj" "$work/tmp"
emu=tools/cuda-emulator
src=native/src
flags=(-std=c++20 -O1 -g -pthread -w -I"$emu" -I"$src" -Inative/include -DFX_WITH_CUDA=1 -DFX_CUDA_TOOLKIT_VERSION=11080
       -DFX_TEST_TMPDIR="\"$root/$work/tmp\"" -DFX_TEST_DATA_DIR="\"$root/native/tests/data\"")
jobs=${JOBS:-2}

compile() {  # compile SRC OBJ [extra flags...]: only when the source or the emulator changed
  local in=$1 out=$2
  shift 2
  if [ ! -f "$out" ] || [ "$in" -nt "$out" ] || [ -n "$(find "$emu" -newer "$out" -type f | head -1)" ]; then
    g++ "${flags[@]}" "$@" -c "$in" -o "$out"
  fi
}

objs=()
for cu in "$src"/ops/cuda/*.cu "$src"/backend/cuda_backend.cu; do
  name=$(basename "$cu" .cu)
  python3 "$emu/prep.py" "$cu" "$work/gen/$name.cpp.new"
  cmp -s "$work/gen/$name.cpp.new" "$work/gen/$name.cpp" 2>/dev/null || mv "$work/gen/$name.cpp.new" "$work/gen/$name.cpp"
  rm -f "$work/gen/$name.cpp.new"
  objs+=("$work/obj/$name.o")
  compile "$work/gen/$name.cpp" "$work/obj/$name.o" -include "$emu/shim.h" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
compile "$emu/emu.cpp" "$work/obj/emu.o" -include "$emu/shim.h" &
compile "$emu/emu_runtime.cpp" "$work/obj/emu_runtime.o" &
wait
compile "$emu/emu_cublaslt.cpp" "$work/obj/emu_cublaslt.o" &
objs+=("$work/obj/emu.o" "$work/obj/emu_runtime.o" "$work/obj/emu_cublaslt.o")
for t in native/tests/main.cpp native/tests/test_backend_ops.cpp native/tests/cuda/*.cpp; do
  name=test_$(basename "$t" .cpp)
  objs+=("$work/obj/$name.o")
  compile "$t" "$work/obj/$name.o" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
wait
g++ -pthread -o "$work/emu_tests" "${objs[@]}" "$lib" -lgtest -lpng -ljpeg -lwebp -ldl
exec "$work/emu_tests" --gtest_filter="$filter"
