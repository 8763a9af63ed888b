// cuBLASLt as the emulator answers it: the entry points the CUDA backend uses, with a plain column-major
// GEMM D = op(A)·op(B) (f32 or bf16 operands, f32 accumulation) and the BIAS / GELU epilogues.
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cublaslt_loader.h"
#include "core/dtype.h"
#include "core/error.h"

namespace {

struct Desc {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const float* bias = nullptr;
};
struct Layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

float element(const Layout& l, const void* p, uint64_t i, uint64_t j) {
  const size_t idx = size_t(i + j * uint64_t(l.ld));
  if (l.type == CUDA_R_32F) return static_cast<const float*>(p)[idx];
  return fx::bf16_to_f32(static_cast<const uint16_t*>(p)[idx]);
}

cublasStatus_t create(cublasLtHandle_t* h) { *h = reinterpret_cast<cublasLtHandle_t>(new int(1)); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t destroy(cublasLtHandle_t h) { delete reinterpret_cast<int*>(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t desc_create(cublasLtMatmulDesc_t* d, cublasComputeType_t, cudaDataType_t) {
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t desc_destroy(cublasLtMatmulDesc_t d) { delete reinterpret_cast<Desc*>(d); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t desc_set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void* buf, size_t) {
  Desc* desc = reinterpret_cast<Desc*>(d);
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA) std::memcpy(&desc->ta, buf, sizeof(desc->ta));
  if (attr == CUBLASLT_MATMUL_DESC_TRANSB) std::memcpy(&desc->tb, buf, sizeof(desc->tb));
  if (attr == CUBLASLT_MATMUL_DESC_EPILOGUE) std::memcpy(&desc->epilogue, buf, sizeof(desc->epilogue));
  if (attr == CUBLASLT_MATMUL_DESC_BIAS_POINTER) std::memcpy(&desc->bias, buf, sizeof(desc->bias));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t layout_create(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{t, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t layout_destroy(cublasLtMatrixLayout_t l) { delete reinterpret_cast<Layout*>(l); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t pref_create(cublasLtMatmulPreference_t* p) {
  *p = reinterpret_cast<cublasLtMatmulPreference_t>(new int(0));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t pref_destroy(cublasLtMatmulPreference_t p) { delete reinterpret_cast<int*>(p); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t pref_set(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t heuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                         cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                         cublasLtMatmulHeuristicResult_t* r, int* found) {
  std::memset(r, 0, sizeof(*r));
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t matmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A, cublasLtMatrixLayout_t la,
                      const void* B, cublasLtMatrixLayout_t lb, const void* beta, const void*, cublasLtMatrixLayout_t,
                      void* D, cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  const Desc& desc = *reinterpret_cast<Desc*>(d);
  const Layout &a = *reinterpret_cast<Layout*>(la), &b = *reinterpret_cast<Layout*>(lb), &o = *reinterpret_cast<Layout*>(ld);
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  if (be != 0.0f) return CUBLAS_STATUS_NOT_SUPPORTED;
  const uint64_t m = o.rows, n = o.cols, k = desc.ta == CUBLAS_OP_T ? a.rows : a.cols;
  for (uint64_t j = 0; j < n; ++j)
    for (uint64_t i = 0; i < m; ++i) {
      float s = 0.0f;
      for (uint64_t p = 0; p < k; ++p) {
        const float av = desc.ta == CUBLAS_OP_T ? element(a, A, p, i) : element(a, A, i, p);
        const float bv = desc.tb == CUBLAS_OP_T ? element(b, B, j, p) : element(b, B, p, j);
        s = std::fma(av, bv, s);
      }
      s *= al;
      const auto ep = desc.epilogue;
      if (ep == CUBLASLT_EPILOGUE_BIAS || ep == CUBLASLT_EPILOGUE_GELU_BIAS) s += desc.bias[i];
      if (ep == CUBLASLT_EPILOGUE_GELU || ep == CUBLASLT_EPILOGUE_GELU_BIAS)
        s = float(0.5 * s * (1.0 + std::tanh(0.7978845608028654 * (s + 0.044715 * double(s) * s * s))));
      const size_t idx = size_t(i + j * uint64_t(o.ld));
      if (o.type == CUDA_R_32F) static_cast<float*>(D)[idx] = s;
      else static_cast<uint16_t*>(D)[idx] = fx::f32_to_bf16(s);
    }
  return CUBLAS_STATUS_SUCCESS;
}
size_t version() { return 110800; }

}  // namespace

namespace fx::cuda {

const CublasLt& cublaslt() {
  static const CublasLt table = [] {
    CublasLt t;
    t.create = create;
    t.destroy = destroy;
    t.desc_create = desc_create;
    t.desc_destroy = desc_destroy;
    t.desc_set = desc_set;
    t.layout_create = layout_create;
    t.layout_destroy = layout_destroy;
    t.pref_create = pref_create;
    t.pref_destroy = pref_destroy;
    t.pref_set = pref_set;
    t.heuristic = heuristic;
    t.matmul = matmul;
    t.version = version;
    return t;
  }();
  return table;
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(FX_ERR_BACKEND, std::string("cuBLASLt ") + what + ": status " + std::to_string(int(status)));
}

}  // namespace fx::cuda
