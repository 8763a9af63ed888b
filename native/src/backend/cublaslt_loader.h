// cuBLASLt loaded at run time: the entry points the CUDA backend uses, resolved with dlopen/dlsym from
// libcublasLt.so (the toolkit's soname first, then any), so that libfluxnative.so has no link-time
// dependency on it and loads on machines without CUDA. Only for .cu files (it names cuBLASLt's types).
#pragma once

#include <cublasLt.h>

#include <string>

namespace fx::cuda {

struct CublasLt {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  decltype(&cublasLtGetVersion) version = nullptr;
};

// The process-wide table, loaded on first use. Throws fx::Error(FX_ERR_NOT_FOUND) naming the library and
// the missing symbol when it cannot be loaded.
const CublasLt& cublaslt();

// Throws fx::Error(FX_ERR_BACKEND) ("cuBLASLt <what>: status N") unless status is CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t status, const char* what);

}  // namespace fx::cuda
