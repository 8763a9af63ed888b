#include "backend/cublaslt_loader.h"

#include <dlfcn.h>

#include <mutex>

#include "core/error.h"

namespace fx::cuda {

namespace {

template <typename F>
void resolve(void* library, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(library, name));
  if (*out == nullptr) fail(FX_ERR_NOT_FOUND, std::string("cuBLASLt: the loaded library has no ") + name);
}

CublasLt load() {
  // The soname of the toolkit we were built with first; then the unversioned name (a newer toolkit's).
  const std::string versioned = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
  void* library = dlopen(versioned.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) library = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr)
    fail(FX_ERR_NOT_FOUND, "cuBLASLt (" + versioned + ") could not be loaded: " + std::string(dlerror()) +
                               "; install the CUDA toolkit's libcublasLt or put it on the loader path");
  CublasLt t;
  resolve(library, "cublasLtCreate", &t.create);
  resolve(library, "cublasLtDestroy", &t.destroy);
  resolve(library, "cublasLtMatmulDescCreate", &t.desc_create);
  resolve(library, "cublasLtMatmulDescDestroy", &t.desc_destroy);
  resolve(library, "cublasLtMatmulDescSetAttribute", &t.desc_set);
  resolve(library, "cublasLtMatrixLayoutCreate", &t.layout_create);
  resolve(library, "cublasLtMatrixLayoutDestroy", &t.layout_destroy);
  resolve(library, "cublasLtMatmulPreferenceCreate", &t.pref_create);
  resolve(library, "cublasLtMatmulPreferenceDestroy", &t.pref_destroy);
  resolve(library, "cublasLtMatmulPreferenceSetAttribute", &t.pref_set);
  resolve(library, "cublasLtMatmulAlgoGetHeuristic", &t.heuristic);
  resolve(library, "cublasLtMatmul", &t.matmul);
  resolve(library, "cublasLtGetVersion", &t.version);
  return t;  // the library stays loaded for the life of the process
}

}  // namespace

const CublasLt& cublaslt() {
  static std::once_flag once;
  static CublasLt table;
  static std::string error;
  static fx_status error_status = FX_OK;
  std::call_once(once, [] {
    try {
      table = load();
    } catch (const Error& e) {
      error = e.what();
      error_status = e.status();
    }
  });
  if (error_status != FX_OK) fail(error_status, error);
  return table;
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(FX_ERR_BACKEND, std::string("cuBLASLt ") + what + ": status " + std::to_string(static_cast<int>(status)));
}

}  // namespace fx::cuda
