// The CUDA backend's factory, for backend.cpp (plain C++: no CUDA type here).
//
// The backend (cuda_backend.cu) owns, per model: a non-blocking stream on its GPU, a cudaMalloc-backed
// arena (never managed memory) whose out-of-memory errors say what was asked and what was free, and a
// cuBLASLt handle with a per-shape algorithm cache. cuBLASLt is loaded at run time (dlopen), like the
// driver, so the library still loads on machines without it; activations are f32 on this first version,
// the GEMM runs bf16 × bf16 with f32 accumulation (f32 weights: f32 GEMM). Every operation of backend.h
// has a CUDA kernel, the text encoders' and the autoencoder's included (convolutions: exact f32 for f32
// activations, bf16 tensor cores for bf16 ones).
//
// Unverified: neither this backend nor its kernels (ops/cuda) have run on a GPU yet.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace fx::backend {

#if defined(FX_WITH_CUDA)
// Throws fx::Error(FX_ERR_BACKEND / FX_ERR_NOT_FOUND) when the device or cuBLASLt cannot be set up.
std::shared_ptr<Backend> cuda_backend(const Device& device);
#endif

}  // namespace fx::backend
