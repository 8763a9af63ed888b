// How a model holds its linear-layer weights, and the one function that turns a checkpoint matrix into
// the GEMM's packed form in that format (shared by the FLUX transformer and the text encoders).
#pragma once

#include <string>

#include "core/thread_pool.h"
#include "ops/cpu/linear.h"

namespace fx::models {

// How linear-layer weights are held in memory. Biases, norm scales and embeddings are always f32.
enum class FluxWeightFormat {
  AsStored,  // f32 and bf16 kept in the dtype the file has; f16 widened to f32
  F32,       // widened to f32 at load (exact)
  BF16,      // rounded to bf16 (round-to-nearest-even) at load
  FP8,       // e4m3fn with one scale per output channel, quantised at load
};

// Packs `stored` (the matrix as the checkpoint has it: f32, f16 or bf16) in `format`. A dtype change goes
// through temporaries that die with the call (pack_weights copies what it needs); FP8 quantises row by
// row on `pool`, so no f32 copy of the whole matrix exists. `label` names the tensor in errors:
// FX_ERR_UNSUPPORTED for a matrix stored as fp8 or a non-float dtype.
cpu::PackedWeights pack_linear_weights(const cpu::Weights& stored, FluxWeightFormat format, const std::string& label,
                                       ThreadPool& pool);

}  // namespace fx::models
