// C ABI: checkpoints (open, list, read, describe), safetensors writing, tiny random models.
#include <memory>
#include <string>
#include <vector>

#include "api/guard.h"
#include "api/handles.h"
#include "core/dtype.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/recognize.h"
#include "models/tiny.h"

using fx::api::guard;
using fx::api::require;

namespace {

const fx::io::Checkpoint::Tensor& tensor_at(const fx_checkpoint* checkpoint, size_t index, const char* function) {
  require(checkpoint != nullptr, function, "checkpoint is NULL");
  const auto& tensors = checkpoint->impl->tensors();
  if (index >= tensors.size()) {
    fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": tensor index " + std::to_string(index) +
                                          " is out of range (the checkpoint has " +
                                          std::to_string(tensors.size()) + " tensors)");
  }
  return tensors[index];
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

}  // namespace

extern "C" {

FX_API void fx_tensor_info_init(fx_tensor_info* info) {
  if (info == nullptr) return;
  *info = fx_tensor_info{};
  info->struct_size = sizeof(fx_tensor_info);
}

FX_API fx_status fx_checkpoint_open(const char* path, fx_checkpoint** out) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(out != nullptr, function, "out is NULL");
    *out = nullptr;
    require(path != nullptr && *path != '\0', function, "path is NULL or empty");
    auto handle = std::make_unique<fx_checkpoint>();
    handle->impl = fx::io::Checkpoint::open(path);
    *out = handle.release();
  });
}

FX_API void fx_checkpoint_close(fx_checkpoint* checkpoint) { delete checkpoint; }

FX_API fx_status fx_checkpoint_tensor_count(const fx_checkpoint* checkpoint, size_t* count) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(checkpoint != nullptr && count != nullptr, function, "checkpoint or count is NULL");
    *count = checkpoint->impl->tensors().size();
  });
}

FX_API fx_status fx_checkpoint_tensor_info(const fx_checkpoint* checkpoint, size_t index, fx_tensor_info* info) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    const auto& tensor = tensor_at(checkpoint, index, function);
    fx_tensor_info value{};
    value.dtype = static_cast<int32_t>(tensor.dtype);
    value.name = tensor.name.c_str();
    value.file = tensor.file_path().c_str();
    value.ndim = static_cast<int32_t>(tensor.shape.size());
    value.block_type = tensor.block ? static_cast<int32_t>(*tensor.block) : 0;
    for (size_t d = 0; d < tensor.shape.size() && d < FX_MAX_DIMS; ++d) value.shape[d] = tensor.shape[d];
    value.byte_size = tensor.byte_size;
    value.file_offset = tensor.file_offset();
    fx::api::write_versioned(info, function, value);
  });
}

FX_API fx_status fx_checkpoint_find(const fx_checkpoint* checkpoint, const char* name, size_t* index) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(checkpoint != nullptr && name != nullptr && index != nullptr, function,
            "checkpoint, name or index is NULL");
    const auto* tensor = checkpoint->impl->find(name);
    if (tensor == nullptr) {
      fx::fail(FX_ERR_NOT_FOUND, checkpoint->impl->path() + ": no tensor named \"" + name + "\"");
    }
    *index = static_cast<size_t>(tensor - checkpoint->impl->tensors().data());
  });
}

FX_API fx_status fx_checkpoint_read_tensor(const fx_checkpoint* checkpoint, size_t index, int32_t dst_dtype,
                                           void* dst, size_t dst_bytes) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    const auto& tensor = tensor_at(checkpoint, index, function);
    require(fx::dtype_valid(dst_dtype), function, "dst_dtype is not a valid fx_dtype");
    const auto target = static_cast<fx::DType>(dst_dtype);
    const uint64_t count = tensor.element_count();
    const uint64_t needed = count * fx::dtype_size(target);
    const std::string what = tensor.file_path() + ": tensor \"" + tensor.name + "\" (" + tensor.type_name() + " " +
                             shape_text(tensor.shape) + ")";
    if (dst_bytes < needed) {
      fx::fail(FX_ERR_BUFFER_TOO_SMALL, std::string(function) + ": " + what + " needs " + std::to_string(needed) +
                                            " bytes as " + fx::dtype_name(target) + ", the buffer has " +
                                            std::to_string(dst_bytes));
    }
    require(dst != nullptr || needed == 0, function, "dst is NULL");
    if (count == 0) return;
    if (tensor.block) {
      // Block-quantised (GGUF): the decoded values, as f32 and then as `target`.
      if (!fx::dtype_is_float(target))
        fx::fail(FX_ERR_UNSUPPORTED, std::string(function) + ": " + what + " cannot be converted to " +
                                         fx::dtype_name(target) + " (only floating-point dtypes convert)");
      std::vector<float> values(static_cast<size_t>(count));
      fx::dequantize_blocks(*tensor.block, tensor.data(), static_cast<int64_t>(count), values.data());
      fx::convert(fx::DType::F32, values.data(), target, dst, count, fx::Overflow::Saturate);
      return;
    }
    if (target == tensor.dtype) {
      std::memcpy(dst, tensor.data(), tensor.byte_size);
      return;
    }
    if (!fx::dtype_is_float(tensor.dtype) || !fx::dtype_is_float(target)) {
      fx::fail(FX_ERR_UNSUPPORTED, std::string(function) + ": " + what + " cannot be converted to " +
                                       fx::dtype_name(target) + " (only floating-point dtypes convert)");
    }
    fx::convert(tensor.dtype, tensor.data(), target, dst, count, fx::Overflow::Saturate);
  });
}

FX_API fx_status fx_checkpoint_describe_json(const fx_checkpoint* checkpoint, char* buffer, size_t capacity,
                                             size_t* needed) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  fx_status status = FX_OK;
  fx_status guarded = guard(function, [&] {
    require(checkpoint != nullptr, function, "checkpoint is NULL");
    const std::string text = fx::models::describe(*checkpoint->impl).dump(2);
    status = fx::api::copy_string_out(function, text, buffer, capacity, needed);
  });
  return guarded != FX_OK ? guarded : status;
}

FX_API fx_status fx_safetensors_write(const char* path, const fx_tensor_view* tensors, size_t count,
                                      const char* metadata_json) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    require(path != nullptr && *path != '\0', function, "path is NULL or empty");
    require(tensors != nullptr || count == 0, function, "tensors is NULL");
    std::vector<fx::io::TensorToWrite> list;
    list.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const fx_tensor_view& view = tensors[i];
      const std::string label = std::string(function) + ": tensor " + std::to_string(i);
      require(view.name != nullptr, function, (label + " has a NULL name").c_str());
      require(fx::dtype_valid(view.dtype), function, (label + " (\"" + view.name + "\") has an invalid dtype").c_str());
      require(view.ndim >= 0 && view.ndim <= FX_MAX_DIMS, function,
              (label + " (\"" + view.name + "\") has ndim outside 0.." + std::to_string(FX_MAX_DIMS)).c_str());
      require(view.data != nullptr || view.byte_size == 0, function,
              (label + " (\"" + view.name + "\") has NULL data").c_str());
      list.push_back({view.name, static_cast<fx::DType>(view.dtype),
                      std::vector<int64_t>(view.shape, view.shape + view.ndim), view.data, view.byte_size});
    }
    std::map<std::string, std::string> metadata;
    if (metadata_json != nullptr) {
      nlohmann::json parsed;
      try {
        parsed = nlohmann::json::parse(metadata_json);
      } catch (const nlohmann::json::exception& e) {
        fx::fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": metadata_json is not valid JSON: " + e.what());
      }
      require(parsed.is_object(), function, "metadata_json must be a JSON object");
      for (const auto& [key, value] : parsed.items()) {
        require(value.is_string(), function, ("metadata value \"" + key + "\" is not a string").c_str());
        metadata[key] = value.get<std::string>();
      }
    }
    fx::io::write_safetensors(path, list, metadata);
  });
}

FX_API void fx_tiny_model_params_init(fx_tiny_model_params* params) {
  if (params == nullptr) return;
  *params = fx_tiny_model_params{};
  params->struct_size = sizeof(fx_tiny_model_params);
  params->kind = FX_MODEL_FLUX_TRANSFORMER;
  params->layout = FX_LAYOUT_BFL;
  params->dtype = FX_DTYPE_F32;
  params->guidance = 1;
  params->shards = 1;
  params->seed = 0;
}

FX_API fx_status fx_tiny_model_write(const fx_tiny_model_params* params, const char* path) {
  const char* const function = __func__;  // inside the lambdas below __func__ is "operator()"
  return guard(function, [&] {
    fx_tiny_model_params defaults;
    fx_tiny_model_params_init(&defaults);
    const auto value = fx::api::read_versioned(params, function, defaults);
    require(path != nullptr && *path != '\0', function, "path is NULL or empty");
    fx::models::write_tiny_model(value, path);
  });
}

}  // extern "C"
