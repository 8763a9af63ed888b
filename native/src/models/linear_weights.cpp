#include "models/linear_weights.h"

#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace fx::models {

cpu::PackedWeights pack_linear_weights(const cpu::Weights& stored, FluxWeightFormat format, const std::string& label,
                                       ThreadPool& pool) {
  const DType dtype = stored.dtype;
  const bool keep = (format == FluxWeightFormat::AsStored && (dtype == DType::F32 || dtype == DType::BF16)) ||
                    (format == FluxWeightFormat::F32 && dtype == DType::F32) ||
                    (format == FluxWeightFormat::BF16 && dtype == DType::BF16);
  if (keep) return cpu::pack_weights(stored);
  if (!dtype_is_float(dtype) || dtype == DType::F8_E4M3FN || dtype == DType::F8_E5M2)
    fail(FX_ERR_UNSUPPORTED, label + " is stored as " + dtype_name(dtype) + ", which linear weights are not loaded from");

  cpu::Weights view = stored;
  const size_t count = static_cast<size_t>(stored.n * stored.k);
  std::vector<uint8_t> converted;
  std::vector<float> scales;
  if (format == FluxWeightFormat::FP8) {
    converted.resize(count);
    scales.resize(static_cast<size_t>(stored.n));
    const size_t row_bytes = static_cast<size_t>(stored.k) * dtype_size(dtype);
    const auto* src = static_cast<const uint8_t*>(stored.data);
    pool.parallel_for(stored.n, [&](int64_t i0, int64_t i1) {
      std::vector<float> row(static_cast<size_t>(stored.k));
      for (int64_t i = i0; i < i1; ++i) {
        convert(dtype, src + static_cast<size_t>(i) * row_bytes, DType::F32, row.data(), row.size(), Overflow::Ieee);
        cpu::quantize_e4m3_per_row(row.data(), 1, stored.k, converted.data() + static_cast<size_t>(i * stored.k),
                                   scales.data() + i);
      }
    });
    view.dtype = DType::F8_E4M3FN;
    view.row_scale = scales.data();
  } else {
    // f16 as stored has no kernel: widen exactly to f32. BF16 format: round whatever is stored.
    const DType target = format == FluxWeightFormat::BF16 ? DType::BF16 : DType::F32;
    converted.resize(count * dtype_size(target));
    convert(dtype, stored.data, target, converted.data(), count, Overflow::Ieee);
    view.dtype = target;
  }
  view.data = converted.data();
  return cpu::pack_weights(view);
}

}  // namespace fx::models
