// Tests of the C ABI layer itself: statuses, the thread-local last error, the catch-all at the
// boundary, versioned structs, the (buffer, capacity, needed) protocol, and checkpoint calls through
// the ABI on a tiny generated model.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "fluxnative.h"

namespace {

std::filesystem::path fresh_dir(const std::string& name) {
  auto dir = std::filesystem::path(FX_TEST_TMPDIR) / ("api-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string last_error() { return fx_last_error(); }

TEST(ApiErrors, DebugThrowNeverEscapesAndMapsToStatus) {
  EXPECT_EQ(fx_debug_throw(0), FX_ERR_INTERNAL);
  EXPECT_NE(last_error().find("std::runtime_error"), std::string::npos) << last_error();
  EXPECT_EQ(fx_debug_throw(1), FX_ERR_OUT_OF_MEMORY);
  EXPECT_NE(last_error().find("out of memory"), std::string::npos) << last_error();
  EXPECT_EQ(fx_debug_throw(2), FX_ERR_INTERNAL);
  EXPECT_NE(last_error().find("unknown exception"), std::string::npos) << last_error();
  EXPECT_EQ(fx_debug_throw(7), FX_ERR_INVALID_ARGUMENT);
}

TEST(ApiErrors, LastErrorIsPerThread) {
  ASSERT_EQ(fx_debug_throw(0), FX_ERR_INTERNAL);
  const std::string mine = last_error();
  std::string theirs_before, theirs_after;
  std::thread other([&] {
    theirs_before = fx_last_error();
    EXPECT_EQ(fx_debug_throw(1), FX_ERR_OUT_OF_MEMORY);
    theirs_after = fx_last_error();
  });
  other.join();
  EXPECT_EQ(theirs_before, "");
  EXPECT_NE(theirs_after.find("out of memory"), std::string::npos);
  EXPECT_EQ(last_error(), mine);
}

TEST(ApiErrors, StatusNames) {
  EXPECT_STREQ(fx_status_name(FX_OK), "FX_OK");
  EXPECT_STREQ(fx_status_name(FX_ERR_FORMAT), "FX_ERR_FORMAT");
  EXPECT_STREQ(fx_status_name(FX_ERR_INTERNAL), "FX_ERR_INTERNAL");
  EXPECT_STREQ(fx_status_name(-3), "FX_UNKNOWN_STATUS");
  EXPECT_STREQ(fx_status_name(11), "FX_UNKNOWN_STATUS");
}

TEST(ApiErrors, NullArgumentsAreRejectedNotDereferenced) {
  fx_checkpoint* checkpoint = reinterpret_cast<fx_checkpoint*>(0x1);
  EXPECT_EQ(fx_checkpoint_open(nullptr, &checkpoint), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(checkpoint, nullptr);
  EXPECT_EQ(fx_checkpoint_open("x", nullptr), FX_ERR_INVALID_ARGUMENT);
  size_t count = 0;
  EXPECT_EQ(fx_checkpoint_tensor_count(nullptr, &count), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_get_build_info(nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_tiny_model_write(nullptr, "x"), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_convert(FX_DTYPE_F32, nullptr, FX_DTYPE_BF16, nullptr, 4, FX_OVERFLOW_SATURATE),
            FX_ERR_INVALID_ARGUMENT);
  fx_checkpoint_close(nullptr);  // documented no-op
}

// A message starts with the entry point's own name (not the lambda's "operator()" that guard() runs).
TEST(ApiErrors, MessagesNameTheEntryPoint) {
  auto starts_with = [](const char* function) { return std::string(fx_last_error()).rfind(std::string(function) + ":", 0) == 0; };
  fx_checkpoint* checkpoint = nullptr;
  EXPECT_NE(fx_checkpoint_open(nullptr, &checkpoint), FX_OK);
  EXPECT_TRUE(starts_with("fx_checkpoint_open")) << fx_last_error();
  fx_flux_model* flux = nullptr;
  EXPECT_NE(fx_flux_model_load(nullptr, nullptr, &flux), FX_OK);
  EXPECT_TRUE(starts_with("fx_flux_model_load")) << fx_last_error();
  fx_ae_model* ae = nullptr;
  EXPECT_NE(fx_ae_model_load(nullptr, nullptr, &ae), FX_OK);
  EXPECT_TRUE(starts_with("fx_ae_model_load")) << fx_last_error();
  float x = 0;
  EXPECT_NE(fx_euler_step(&x, nullptr, 1, 0.5f), FX_OK);
  EXPECT_TRUE(starts_with("fx_euler_step")) << fx_last_error();
  size_t size = 0;
  EXPECT_NE(fx_abi_struct_size("fx_no_such_struct", &size), FX_OK);
  EXPECT_TRUE(starts_with("fx_abi_struct_size")) << fx_last_error();
  uint8_t rgb[3] = {1, 2, 3};
  fx_blob* blob = nullptr;
  fx_image_encode_params jpeg_quality_0;
  fx_image_encode_params_init(&jpeg_quality_0);
  jpeg_quality_0.format = FX_IMAGE_JPEG;
  jpeg_quality_0.quality = 0;
  EXPECT_NE(fx_image_encode(rgb, 1, 1, &jpeg_quality_0, &blob), FX_OK);
  EXPECT_TRUE(starts_with("fx_image_encode")) << fx_last_error();
}

TEST(ApiVersion, VersionAndBuildInfo) {
  EXPECT_EQ(fx_abi_version(), FX_ABI_VERSION);
  EXPECT_STRNE(fx_version(), "");
  fx_build_info info;
  fx_build_info_init(&info);
  ASSERT_EQ(fx_get_build_info(&info), FX_OK) << last_error();
  EXPECT_EQ(info.struct_size, sizeof(fx_build_info));
  EXPECT_EQ(info.abi_version, FX_ABI_VERSION);
  EXPECT_TRUE(info.backends & FX_BACKEND_CPU);
#if defined(FX_WITH_CUDA)
  EXPECT_TRUE(info.backends & FX_BACKEND_CUDA);
  EXPECT_GT(info.cuda_toolkit_version, 10000);
#else
  EXPECT_FALSE(info.backends & FX_BACKEND_CUDA);
  EXPECT_EQ(info.cuda_device_count, 0);
#endif
}

TEST(ApiCudaDevices, EveryVisibleDeviceIsDescribedAndNoOtherIs) {
  fx_build_info build;
  fx_build_info_init(&build);
  ASSERT_EQ(fx_get_build_info(&build), FX_OK) << last_error();
  for (int32_t d = 0; d < build.cuda_device_count; ++d) {
    fx_cuda_device_info info;
    fx_cuda_device_info_init(&info);
    std::memset(info.name, 0x7f, sizeof info.name);  // poisoned: the call must write a terminated name
    info.struct_size = sizeof info;
    ASSERT_EQ(fx_cuda_device_info_get(d, &info), FX_OK) << last_error();
    EXPECT_LT(std::strlen(info.name), sizeof info.name);
    EXPECT_GT(std::strlen(info.name), 0u);
    EXPECT_GE(info.compute_major, 3);
    EXPECT_GT(info.multiprocessors, 0);
    EXPECT_GT(info.total_memory_bytes, 0u);
    EXPECT_LE(info.free_memory_bytes, info.total_memory_bytes);
    EXPECT_LE(info.arena_bytes_held, info.arena_bytes_peak);
  }
  // One past the last device, and a negative index: not found (no CUDA in the build: unsupported).
  for (int32_t d : {build.cuda_device_count, -1}) {
    fx_cuda_device_info info;
    fx_cuda_device_info_init(&info);
    const fx_status expected = (build.backends & FX_BACKEND_CUDA) ? FX_ERR_NOT_FOUND : FX_ERR_UNSUPPORTED;
    EXPECT_EQ(fx_cuda_device_info_get(d, &info), expected) << last_error();
    EXPECT_NE(std::string(fx_last_error()).find("cuda:" + std::to_string(d)), std::string::npos) << fx_last_error();
    EXPECT_EQ(info.total_memory_bytes, 0u);  // nothing written on failure
  }
  EXPECT_EQ(fx_cuda_device_info_get(0, nullptr), FX_ERR_INVALID_ARGUMENT);
}

TEST(ApiVersion, OutputStructWritesOnlyWhatTheCallerKnows) {
  // An older caller whose fx_build_info ended after cpu_features: nothing past it may be touched.
  struct Older {
    fx_build_info head;
    unsigned char guard[8];
  } older;
  std::memset(&older, 0xAB, sizeof(older));
  older.head.struct_size = offsetof(fx_build_info, cuda_toolkit_version);
  ASSERT_EQ(fx_get_build_info(&older.head), FX_OK) << last_error();
  EXPECT_EQ(older.head.abi_version, FX_ABI_VERSION);
  const auto* bytes = reinterpret_cast<const unsigned char*>(&older);
  for (size_t i = offsetof(fx_build_info, cuda_toolkit_version); i < sizeof(older); ++i)
    ASSERT_EQ(bytes[i], 0xAB) << "byte " << i << " was written";

  fx_build_info too_small{};
  too_small.struct_size = 2;
  EXPECT_EQ(fx_get_build_info(&too_small), FX_ERR_INVALID_ARGUMENT);
}

TEST(ApiVersion, InputStructFromANewerCallerNeedsItsUnknownFieldsZero) {
  const auto dir = fresh_dir("newer-caller");
  struct Newer {
    fx_tiny_model_params known;
    int64_t future_field;
  } newer{};
  fx_tiny_model_params_init(&newer.known);
  newer.known.struct_size = sizeof(Newer);
  newer.future_field = 0;
  EXPECT_EQ(fx_tiny_model_write(&newer.known, (dir / "a.safetensors").c_str()), FX_OK) << last_error();
  newer.future_field = 5;
  EXPECT_EQ(fx_tiny_model_write(&newer.known, (dir / "b.safetensors").c_str()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("unknown fields"), std::string::npos) << last_error();
}

TEST(ApiVersion, AbiSelfDescription) {
  size_t size = 0, offset = 0;
  ASSERT_EQ(fx_abi_struct_size("fx_tensor_info", &size), FX_OK);
  EXPECT_EQ(size, sizeof(fx_tensor_info));
  ASSERT_EQ(fx_abi_field_offset("fx_tensor_info", "shape", &offset), FX_OK);
  EXPECT_EQ(offset, offsetof(fx_tensor_info, shape));
  ASSERT_EQ(fx_abi_field_offset("fx_tiny_model_params", "seed", &offset), FX_OK);
  EXPECT_EQ(offset, offsetof(fx_tiny_model_params, seed));
  EXPECT_EQ(fx_abi_struct_size("fx_nothing", &size), FX_ERR_NOT_FOUND);
  EXPECT_EQ(fx_abi_field_offset("fx_tensor_info", "nothing", &offset), FX_ERR_NOT_FOUND);
}

TEST(ApiStrings, BufferProtocol) {
  size_t needed = 0;
  ASSERT_EQ(fx_library_path(nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
  ASSERT_GT(needed, 1u);
  std::vector<char> small(needed - 1, 'x');
  size_t needed_again = 0;
  EXPECT_EQ(fx_library_path(small.data(), small.size(), &needed_again), FX_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(needed_again, needed);
  std::vector<char> exact(needed, 'x');
  ASSERT_EQ(fx_library_path(exact.data(), exact.size(), &needed_again), FX_OK);
  EXPECT_EQ(std::strlen(exact.data()) + 1, needed);
  EXPECT_EQ(fx_library_path(nullptr, 5, &needed), FX_ERR_INVALID_ARGUMENT);
}

TEST(ApiDtypes, NamesSizesAndConvert) {
  EXPECT_EQ(fx_dtype_size(FX_DTYPE_BF16), 2u);
  EXPECT_EQ(fx_dtype_size(FX_DTYPE_F8_E4M3FN), 1u);
  EXPECT_EQ(fx_dtype_size(99), 0u);
  EXPECT_STREQ(fx_dtype_name(FX_DTYPE_F8_E4M3FN), "F8_E4M3");
  EXPECT_STREQ(fx_dtype_name(-1), "?");

  const float src[4] = {1.0f, -2.5f, 1000.0f, std::nanf("")};
  uint8_t e4m3[4] = {0x55, 0x55, 0x55, 0x55};
  ASSERT_EQ(fx_convert(FX_DTYPE_F32, src, FX_DTYPE_F8_E4M3FN, e4m3, 4, FX_OVERFLOW_SATURATE), FX_OK);
  EXPECT_EQ(e4m3[0], 0x38);  // 1.0 = 0.0111.000
  EXPECT_EQ(e4m3[1], 0xC2);  // -2.5 = 1.1000.010
  EXPECT_EQ(e4m3[2], 0x7E);  // saturated to 448
  EXPECT_EQ(e4m3[3] & 0x7F, 0x7F);
  ASSERT_EQ(fx_convert(FX_DTYPE_F32, src, FX_DTYPE_F8_E4M3FN, e4m3, 4, FX_OVERFLOW_IEEE), FX_OK);
  EXPECT_EQ(e4m3[2], 0x7F);  // no infinity in e4m3fn: NaN
  EXPECT_EQ(fx_convert(FX_DTYPE_F32, src, FX_DTYPE_I32, e4m3, 1, FX_OVERFLOW_SATURATE), FX_ERR_UNSUPPORTED);
  EXPECT_EQ(fx_convert(FX_DTYPE_F32, src, FX_DTYPE_BF16, e4m3, 1, 9), FX_ERR_INVALID_ARGUMENT);
}

TEST(ApiCheckpoint, TinyModelThroughTheAbi) {
  const auto dir = fresh_dir("tiny");
  const auto path = (dir / "flux.safetensors").string();
  fx_tiny_model_params params;
  fx_tiny_model_params_init(&params);
  params.dtype = FX_DTYPE_BF16;
  params.seed = 7;
  ASSERT_EQ(fx_tiny_model_write(&params, path.c_str()), FX_OK) << last_error();

  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << last_error();
  size_t count = 0;
  ASSERT_EQ(fx_checkpoint_tensor_count(checkpoint, &count), FX_OK);
  EXPECT_GT(count, 20u);

  // Sorted by name, and find() agrees with the index.
  std::string previous;
  for (size_t i = 0; i < count; ++i) {
    fx_tensor_info info;
    fx_tensor_info_init(&info);
    ASSERT_EQ(fx_checkpoint_tensor_info(checkpoint, i, &info), FX_OK);
    ASSERT_LT(previous, std::string(info.name));
    previous = info.name;
    size_t found = 0;
    ASSERT_EQ(fx_checkpoint_find(checkpoint, info.name, &found), FX_OK);
    EXPECT_EQ(found, i);
    EXPECT_EQ(std::string(info.file), path);
  }
  fx_tensor_info info;
  fx_tensor_info_init(&info);
  EXPECT_EQ(fx_checkpoint_tensor_info(checkpoint, count, &info), FX_ERR_INVALID_ARGUMENT);
  size_t index = 0;
  EXPECT_EQ(fx_checkpoint_find(checkpoint, "no.such.tensor", &index), FX_ERR_NOT_FOUND);
  EXPECT_NE(last_error().find("no.such.tensor"), std::string::npos);

  // Reading: raw bf16 bits, and the same converted to f32 by the library, must agree.
  ASSERT_EQ(fx_checkpoint_find(checkpoint, "img_in.weight", &index), FX_OK);
  ASSERT_EQ(fx_checkpoint_tensor_info(checkpoint, index, &info), FX_OK);
  ASSERT_EQ(info.dtype, FX_DTYPE_BF16);
  ASSERT_EQ(info.ndim, 2);
  const size_t n = static_cast<size_t>(info.shape[0] * info.shape[1]);
  std::vector<uint16_t> raw(n, 0xFFFF);
  std::vector<float> as_f32(n, std::nanf(""));
  ASSERT_EQ(fx_checkpoint_read_tensor(checkpoint, index, FX_DTYPE_BF16, raw.data(), n * 2), FX_OK);
  ASSERT_EQ(fx_checkpoint_read_tensor(checkpoint, index, FX_DTYPE_F32, as_f32.data(), n * 4), FX_OK);
  size_t nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(as_f32[i], fx::bf16_to_f32(raw[i])) << "element " << i;
    nonzero += as_f32[i] != 0.0f;
  }
  EXPECT_GT(nonzero, n / 2);
  EXPECT_EQ(fx_checkpoint_read_tensor(checkpoint, index, FX_DTYPE_F32, as_f32.data(), n * 4 - 1),
            FX_ERR_BUFFER_TOO_SMALL);
  EXPECT_NE(last_error().find("img_in.weight"), std::string::npos) << last_error();
  EXPECT_EQ(fx_checkpoint_read_tensor(checkpoint, index, FX_DTYPE_I64, as_f32.data(), n * 8),
            FX_ERR_UNSUPPORTED);

  // Describe: size query then the document.
  size_t needed = 0;
  ASSERT_EQ(fx_checkpoint_describe_json(checkpoint, nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
  std::vector<char> json(needed);
  ASSERT_EQ(fx_checkpoint_describe_json(checkpoint, json.data(), json.size(), &needed), FX_OK);
  const std::string text(json.data());
  EXPECT_NE(text.find("\"flux_transformer\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"dev\""), std::string::npos) << text;
  fx_checkpoint_close(checkpoint);
}

TEST(ApiCheckpoint, OpenErrorsNameTheFile) {
  const auto dir = fresh_dir("errors");
  fx_checkpoint* checkpoint = nullptr;
  const auto missing = (dir / "missing.safetensors").string();
  EXPECT_EQ(fx_checkpoint_open(missing.c_str(), &checkpoint), FX_ERR_NOT_FOUND);
  EXPECT_NE(last_error().find("missing.safetensors"), std::string::npos) << last_error();

  const auto garbage = (dir / "garbage.safetensors").string();
  FILE* f = std::fopen(garbage.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not a safetensors file at all", f);
  std::fclose(f);
  EXPECT_EQ(fx_checkpoint_open(garbage.c_str(), &checkpoint), FX_ERR_FORMAT);
  EXPECT_NE(last_error().find("garbage.safetensors"), std::string::npos) << last_error();
  EXPECT_EQ(checkpoint, nullptr);
}

TEST(ApiSafetensors, WriteThroughTheAbiAndReadBack) {
  const auto dir = fresh_dir("write");
  const auto path = (dir / "t.safetensors").string();
  float a[6] = {1, 2, 3, 4, 5, 6};
  fx_tensor_view views[1]{};
  views[0].name = "a";
  views[0].dtype = FX_DTYPE_F32;
  views[0].ndim = 2;
  views[0].shape[0] = 2;
  views[0].shape[1] = 3;
  views[0].data = a;
  views[0].byte_size = sizeof(a);
  ASSERT_EQ(fx_safetensors_write(path.c_str(), views, 1, "{\"format\": \"pt\"}"), FX_OK) << last_error();
  EXPECT_EQ(fx_safetensors_write(path.c_str(), views, 1, "[1]"), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_safetensors_write(path.c_str(), views, 1, "{\"n\": 3}"), FX_ERR_INVALID_ARGUMENT);
  views[0].byte_size = 20;  // does not match [2, 3] F32
  EXPECT_NE(fx_safetensors_write(path.c_str(), views, 1, nullptr), FX_OK);

  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << last_error();
  float back[6] = {-1, -1, -1, -1, -1, -1};
  ASSERT_EQ(fx_checkpoint_read_tensor(checkpoint, 0, FX_DTYPE_F32, back, sizeof(back)), FX_OK);
  EXPECT_EQ(std::memcmp(a, back, sizeof(a)), 0);
  fx_checkpoint_close(checkpoint);
}

TEST(ApiFlux, ForwardThroughTheAbiOutlivesTheCheckpointHandle) {
  const auto dir = fresh_dir("flux");
  const auto path = (dir / "schnell.safetensors").string();
  fx_tiny_model_params params;
  fx_tiny_model_params_init(&params);
  params.guidance = 0;
  ASSERT_EQ(fx_tiny_model_write(&params, path.c_str()), FX_OK) << last_error();
  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << last_error();

  fx_flux_load_params load;
  fx_flux_load_params_init(&load);
  load.weight_format = 17;
  fx_flux_model* model = nullptr;
  EXPECT_EQ(fx_flux_model_load(checkpoint, &load, &model), FX_ERR_INVALID_ARGUMENT);
  load.weight_format = FX_WEIGHTS_BF16;
  load.activations = 7;
  EXPECT_EQ(fx_flux_model_load(checkpoint, &load, &model), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("activations"), std::string::npos) << last_error();
  load.activations = FX_ACTIVATIONS_BF16;
  load.num_threads = 2;
  ASSERT_EQ(fx_flux_model_load(checkpoint, &load, &model), FX_OK) << last_error();
  fx_checkpoint_close(checkpoint);  // the model keeps the mapped weights alive

  size_t needed = 0;
  ASSERT_EQ(fx_flux_model_config_json(model, nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
  std::vector<char> config(needed);
  ASSERT_EQ(fx_flux_model_config_json(model, config.data(), config.size(), &needed), FX_OK);
  EXPECT_NE(std::string(config.data()).find("\"guidance_embed\":false"), std::string::npos) << config.data();

  // Tiny defaults: in 64, context 32, vec 32, out 64. Two samples, 4 image and 3 text tokens.
  const int B = 2, Li = 4, Lt = 3;
  std::vector<float> img(B * Li * 64), img_ids(B * Li * 3, 0.0f), txt(B * Lt * 32), txt_ids(B * Lt * 3, 0.0f),
      y(B * 32), t = {0.3f, 0.9f};
  for (size_t i = 0; i < img.size(); ++i) img[i] = std::sin(0.1f * i);
  for (size_t i = 0; i < txt.size(); ++i) txt[i] = std::cos(0.2f * i);
  for (size_t i = 0; i < y.size(); ++i) y[i] = 0.05f * i - 0.5f;
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < Li; ++n) img_ids[(b * Li + n) * 3 + 1] = n / 2, img_ids[(b * Li + n) * 3 + 2] = n % 2;
  fx_flux_inputs in;
  fx_flux_inputs_init(&in);
  in.batch = B;
  in.img_tokens = Li;
  in.txt_tokens = Lt;
  in.img = img.data();
  in.img_ids = img_ids.data();
  in.txt = txt.data();
  in.txt_ids = txt_ids.data();
  in.y = y.data();
  in.timesteps = t.data();
  std::vector<float> out(B * Li * 64, std::nanf(""));
  EXPECT_EQ(fx_flux_forward(model, &in, out.data(), out.size() - 1), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("[2, 4, 64]"), std::string::npos) << last_error();
  ASSERT_EQ(fx_flux_forward(model, &in, out.data(), out.size()), FX_OK) << last_error();
  for (float v : out) ASSERT_TRUE(std::isfinite(v));
  // Each sample is computed with its own inputs and timestep.
  EXPECT_NE(std::memcmp(out.data(), out.data() + Li * 64, Li * 64 * sizeof(float)), 0);
  fx_flux_model_free(model);
  fx_flux_model_free(nullptr);
}

TEST(ApiThreads, ConcurrentReadsOfOneCheckpoint) {
  const auto dir = fresh_dir("threads");
  const auto path = (dir / "ae.safetensors").string();
  fx_tiny_model_params params;
  fx_tiny_model_params_init(&params);
  params.kind = FX_MODEL_AUTOENCODER;
  ASSERT_EQ(fx_tiny_model_write(&params, path.c_str()), FX_OK) << last_error();
  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << last_error();
  size_t count = 0;
  ASSERT_EQ(fx_checkpoint_tensor_count(checkpoint, &count), FX_OK);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (size_t i = 0; i < count; ++i) {
        fx_tensor_info info;
        fx_tensor_info_init(&info);
        if (fx_checkpoint_tensor_info(checkpoint, i, &info) != FX_OK) { ++failures; continue; }
        std::vector<float> values(info.byte_size / 4 + 1);
        if (fx_checkpoint_read_tensor(checkpoint, i, FX_DTYPE_F32, values.data(), values.size() * 4) != FX_OK)
          ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  fx_checkpoint_close(checkpoint);
}

}  // namespace
