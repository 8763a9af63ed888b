// What the C ABI's opaque handles are, for the api/*.cpp files that implement them.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "models/flux_step_cache.h"
#include "models/flux_transformer.h"

struct fx_checkpoint {
  std::unique_ptr<const fx::io::Checkpoint> impl;
};

struct fx_flux_model {
  std::unique_ptr<fx::ThreadPool> own_pool;  // when the caller asked for a thread count (outlives the model)
  std::unique_ptr<fx::models::FluxTransformer> model;
  std::mutex forward_mutex;                  // one forward at a time: two would fight over one pool
};

struct fx_flux_step_cache {
  const fx_flux_model* model = nullptr;  // the model it was created for
  std::unique_ptr<fx::models::FluxStepCache> impl;
};

namespace fx::api {

// The backend for a load call's `device` field (NULL: the CPU) over `pool` (null: the process-wide
// pool). Throws fx::Error: FX_ERR_INVALID_ARGUMENT for an unknown device name, else what
// backend::backend_for says is missing, each prefixed with the function's name.
inline std::shared_ptr<backend::Backend> backend_from(const char* device, ThreadPool* pool, const char* function) {
  try {
    return backend::backend_for(backend::Device::parse(device == nullptr ? "cpu" : device), pool);
  } catch (const Error& e) {
    fail(e.status(), std::string(function) + ": " + e.what());
  }
}

}  // namespace fx::api
