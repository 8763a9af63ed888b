// The GPU's dtype conversion against the CPU's, bit for bit. The CPU side is fx::convert on its
// portable loop (the scalar functions of dtype_inl.h, which test_dtype.cpp checks against references
// written from the format definitions), so agreement here means the GPU is right too.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "ops/cuda/convert.h"

namespace {

using fx::DType;
using fx::Overflow;

constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3FN, DType::F8_E5M2, DType::F64};
constexpr Overflow kModes[] = {Overflow::Saturate, Overflow::Ieee};
constexpr uint8_t kPoison = 0xA7;

class CudaConvert : public ::testing::Test {
 protected:
  void SetUp() override {
    if (fx::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  }
};

// The CPU's answer, from the scalar loop.
std::vector<uint8_t> cpu_convert(DType src, const std::vector<uint8_t>& source, DType dst, size_t n, Overflow mode) {
  fx::ScopedIsaCap portable(fx::IsaLevel::Portable);
  std::vector<uint8_t> out(n * fx::dtype_size(dst), kPoison);
  fx::convert(src, source.data(), dst, out.data(), n, mode);
  return out;
}

// Compares the GPU's conversion of `source` with the CPU's, element by element.
void expect_same_as_cpu(DType src, const std::vector<uint8_t>& source, DType dst, Overflow mode) {
  const size_t n = source.size() / fx::dtype_size(src);
  const size_t dst_size = fx::dtype_size(dst);
  const std::vector<uint8_t> want = cpu_convert(src, source, dst, n, mode);
  std::vector<uint8_t> got(n * dst_size, kPoison);
  fx::cuda::convert_on_device(src, source.data(), dst, got.data(), n, mode);
  size_t mismatches = 0;
  std::string first;
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(&got[i * dst_size], &want[i * dst_size], dst_size) != 0) {
      if (mismatches++ < 5) first += " " + std::to_string(i);
    }
  }
  EXPECT_EQ(mismatches, 0u) << fx::dtype_name(src) << " -> " << fx::dtype_name(dst)
                            << (mode == Overflow::Saturate ? " Saturate" : " Ieee") << ", first elements:" << first;
}

template <typename T>
std::vector<uint8_t> as_bytes(const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

TEST_F(CudaConvert, EveryCodeOfTheNarrowFormatsConvertsToEveryFloatDtypeLikeTheCpu) {
  std::vector<uint16_t> codes16(65536);
  for (uint32_t c = 0; c < 65536; ++c) codes16[c] = uint16_t(c);
  std::vector<uint8_t> codes8(256);
  for (uint32_t c = 0; c < 256; ++c) codes8[c] = uint8_t(c);
  for (DType dst : kFloatTypes) {
    for (Overflow mode : kModes) {
      if (dst != DType::F16) expect_same_as_cpu(DType::F16, as_bytes(codes16), dst, mode);
      if (dst != DType::BF16) expect_same_as_cpu(DType::BF16, as_bytes(codes16), dst, mode);
      if (dst != DType::F8_E4M3FN) expect_same_as_cpu(DType::F8_E4M3FN, codes8, dst, mode);
      if (dst != DType::F8_E5M2) expect_same_as_cpu(DType::F8_E5M2, codes8, dst, mode);
    }
  }
}

// f32 values at, between and one ulp beside every code of each narrow format: where rounding decides.
TEST_F(CudaConvert, F32AtAndAroundEveryCodeAndMidpointRoundsLikeTheCpu) {
  std::vector<float> inputs;
  auto add_around = [&](float value, float next) {
    for (const float v : {value, -value}) inputs.push_back(v);
    if (!std::isfinite(value) || !std::isfinite(next)) return;
    const float midpoint = float((double(value) + double(next)) / 2);
    for (const float v : {midpoint, -midpoint}) {
      inputs.push_back(v);
      inputs.push_back(std::nextafter(v, -INFINITY));
      inputs.push_back(std::nextafter(v, INFINITY));
    }
  };
  for (uint32_t c = 0; c < 0x7C00; ++c) add_around(fx::f16_to_f32(uint16_t(c)), fx::f16_to_f32(uint16_t(c + 1)));
  for (uint32_t c = 0; c < 0x7F80; ++c) add_around(fx::bf16_to_f32(uint16_t(c)), fx::bf16_to_f32(uint16_t(c + 1)));
  for (uint32_t c = 0; c < 0x7F; ++c) add_around(fx::e4m3fn_to_f32(uint8_t(c)), fx::e4m3fn_to_f32(uint8_t(c + 1)));
  // e4m3fn's overflow boundary: between 448 and the 480 the format would have next.
  add_around(448.0f, 480.0f);
  for (uint32_t c = 0; c < 0x7C; ++c) add_around(fx::e5m2_to_f32(uint8_t(c)), fx::e5m2_to_f32(uint8_t(c + 1)));
  for (const float special : {INFINITY, NAN, FLT_MAX, FLT_MIN, FLT_TRUE_MIN}) add_around(special, special);
  const std::vector<uint8_t> source = as_bytes(inputs);
  for (DType dst : kFloatTypes) {
    for (Overflow mode : kModes) expect_same_as_cpu(DType::F32, source, dst, mode);
  }
}

TEST_F(CudaConvert, RandomArraysOfEveryPairMatchTheCpu) {
  std::mt19937_64 random(31337);
  // Odd length: the grid-stride loop's last partial block is covered.
  const size_t n = (size_t(1) << 20) + 3;
  for (DType src : kFloatTypes) {
    std::vector<uint8_t> source(n * fx::dtype_size(src));
    if (src == DType::F32 || src == DType::F64) {
      // Values of every magnitude and sign, and now and then a raw bit pattern (NaNs, infinities).
      for (size_t i = 0; i < n; ++i) {
        const uint64_t r = random();
        const double value = ((r & 1) ? -1.0 : 1.0) * std::ldexp(double(r >> 11) / double(1ull << 53) + 0.5,
                                                                  int((r >> 3) % 120) - 70);
        if (src == DType::F32) {
          const float f = (r % 11 == 0) ? fx::f32_from_bits(uint32_t(r >> 32)) : float(value);
          std::memcpy(&source[i * 4], &f, 4);
        } else {
          const double d = (r % 11 == 0) ? fx::f64_from_bits(r * 0x9E3779B97F4A7C15ull) : value;
          std::memcpy(&source[i * 8], &d, 8);
        }
      }
    } else {
      for (uint8_t& byte : source) byte = uint8_t(random());
    }
    for (DType dst : kFloatTypes) {
      if (dst == src) continue;
      for (Overflow mode : kModes) expect_same_as_cpu(src, source, dst, mode);
    }
  }
}

TEST_F(CudaConvert, SameDtypeIsACopyAndEmptyIsNothing) {
  std::vector<uint8_t> source(1000);
  std::mt19937 random(8);
  for (uint8_t& byte : source) byte = uint8_t(random());
  std::vector<uint8_t> out(source.size(), kPoison);
  fx::cuda::convert_on_device(DType::BF16, source.data(), DType::BF16, out.data(), 500, Overflow::Ieee);
  EXPECT_EQ(out, source);
  fx::cuda::convert_on_device(DType::F32, nullptr, DType::F16, nullptr, 0, Overflow::Ieee);
}

fx_status status_of_device_convert(DType src, const void* s, DType dst, void* d, size_t n, Overflow mode) {
  try {
    fx::cuda::convert_on_device(src, s, dst, d, n, mode);
  } catch (const fx::Error& error) {
    return error.status();
  }
  return FX_OK;
}

// Runs with or without a GPU: argument errors are found before CUDA is touched, and a machine without
// a GPU gets an fx::Error, not a crash.
TEST(CudaRuntime, ArgumentErrorsMatchTheCpuAndNoGpuIsABackendError) {
  EXPECT_GE(fx::cuda::device_count(), 0);
  EXPECT_GE(fx::cuda::driver_version(), 0);
  float f32[4] = {1, 2, 3, 4};
  uint8_t bytes[16] = {};
  EXPECT_EQ(status_of_device_convert(DType::F32, f32, DType::I32, bytes, 4, Overflow::Ieee), FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of_device_convert(static_cast<DType>(-3), f32, DType::F16, bytes, 4, Overflow::Ieee),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(status_of_device_convert(DType::F32, f32, DType::F8_E5M2, bytes, 4, static_cast<Overflow>(5)),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(status_of_device_convert(DType::F32, nullptr, DType::F16, bytes, 4, Overflow::Ieee),
            FX_ERR_INVALID_ARGUMENT);
  if (fx::cuda::device_count() == 0) {
    EXPECT_EQ(status_of_device_convert(DType::F32, f32, DType::F16, bytes, 4, Overflow::Ieee), FX_ERR_BACKEND);
    try {
      fx::cuda::convert_on_device(DType::F32, f32, DType::F16, bytes, 4, Overflow::Ieee);
    } catch (const fx::Error& error) {
      EXPECT_NE(std::string(error.what()).find("cuda"), std::string::npos) << "names the CUDA call: " << error.what();
    }
  }
}

}  // namespace
