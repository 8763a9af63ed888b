// What the C ABI's opaque handles are, for the api/*.cpp files that implement them.
#pragma once

#include <memory>
#include <mutex>

#include "core/thread_pool.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "models/flux_transformer.h"

struct fx_checkpoint {
  std::unique_ptr<const fx::io::Checkpoint> impl;
};

struct fx_flux_model {
  std::unique_ptr<fx::models::FluxTransformer> model;
  std::unique_ptr<fx::ThreadPool> own_pool;  // when the caller asked for a thread count
  std::mutex forward_mutex;                  // one forward at a time: two would fight over one pool
  fx::ThreadPool& pool() { return own_pool ? *own_pool : fx::ThreadPool::global(); }
};
