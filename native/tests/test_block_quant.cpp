// GGUF block types (core/block_quant.h): the reference decoder against blocks this test builds itself from
// chosen codes and scales, written in the loop form the published layout descriptions use (not the
// decoder's per-value index arithmetic); and the writers' quantiser within half a step of its input,
// including extreme scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/block_quant.h"
#include "core/dtype.h"
#include "core/error.h"

namespace {

using fx::BlockType;

// A block's meaning: codes (as stored, unsigned except Q8_0), and scales.
struct Semantic {
  float d = 0, m = 0;               // f16-exact; m: the min (Q4_1/Q5_1) or dmin (K types)
  std::vector<int> code;            // one per value
  std::vector<int> sub_scale, sub_min;  // K types
};

void put_f16(uint8_t* p, float v) {
  const uint16_t bits = fx::f32_to_f16(v);
  std::memcpy(p, &bits, 2);
}

float f16_exact(std::mt19937& rng, float magnitude) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  return fx::f16_to_f32(fx::f32_to_f16(u(rng) * magnitude));
}

// The expected values, from the formulas of the layout table.
std::vector<float> expected_values(BlockType type, const Semantic& s) {
  std::vector<float> out(s.code.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float q = static_cast<float>(s.code[i]);
    switch (type) {
      case BlockType::Q8_0: out[i] = s.d * q; break;
      case BlockType::Q4_0: out[i] = s.d * (q - 8); break;
      case BlockType::Q5_0: out[i] = s.d * (q - 16); break;
      case BlockType::Q4_1: case BlockType::Q5_1: out[i] = s.d * q + s.m; break;
      case BlockType::Q4_K: case BlockType::Q5_K:
        out[i] = s.d * static_cast<float>(s.sub_scale[i / 32]) * q - s.m * static_cast<float>(s.sub_min[i / 32]);
        break;
      case BlockType::Q6_K: out[i] = s.d * static_cast<float>(s.sub_scale[i / 16]) * (q - 32); break;
    }
  }
  return out;
}

// Bytes of one block, written the way the layout is described.
std::vector<uint8_t> build(BlockType type, const Semantic& s) {
  const auto& layout = fx::block_layout(type);
  std::vector<uint8_t> b(static_cast<size_t>(layout.bytes), 0);
  auto small_nibbles = [&](size_t at) {
    for (int j = 0; j < 16; ++j) b[at + j] = static_cast<uint8_t>((s.code[j] & 0xF) | ((s.code[j + 16] & 0xF) << 4));
  };
  auto fifth_bits = [&](size_t at) {
    uint32_t h = 0;
    for (int i = 0; i < 32; ++i) h |= static_cast<uint32_t>((s.code[i] >> 4) & 1) << i;
    std::memcpy(&b[at], &h, 4);
  };
  switch (type) {
    case BlockType::Q8_0:
      put_f16(&b[0], s.d);
      for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(s.code[i]));
      break;
    case BlockType::Q4_0: put_f16(&b[0], s.d); small_nibbles(2); break;
    case BlockType::Q4_1: put_f16(&b[0], s.d); put_f16(&b[2], s.m); small_nibbles(4); break;
    case BlockType::Q5_0: put_f16(&b[0], s.d); fifth_bits(2); small_nibbles(6); break;
    case BlockType::Q5_1: put_f16(&b[0], s.d); put_f16(&b[2], s.m); fifth_bits(4); small_nibbles(8); break;
    case BlockType::Q4_K:
    case BlockType::Q5_K: {
      put_f16(&b[0], s.d);
      put_f16(&b[2], s.m);
      uint8_t* sc = &b[4];
      for (int j = 0; j < 4; ++j) {
        sc[j] = static_cast<uint8_t>(s.sub_scale[j] | ((s.sub_scale[j + 4] >> 4) << 6));
        sc[j + 4] = static_cast<uint8_t>(s.sub_min[j] | ((s.sub_min[j + 4] >> 4) << 6));
        sc[j + 8] = static_cast<uint8_t>((s.sub_scale[j + 4] & 0xF) | ((s.sub_min[j + 4] & 0xF) << 4));
      }
      const bool five = type == BlockType::Q5_K;
      uint8_t* ql = &b[five ? 48 : 16];
      uint8_t* qh = &b[16];
      // Four chunks of 64: the first 32 values in the low nibbles of 32 bytes, the next 32 in the high.
      for (int chunk = 0; chunk < 4; ++chunk) {
        for (int l = 0; l < 32; ++l) {
          const int lo = s.code[64 * chunk + l], hi = s.code[64 * chunk + 32 + l];
          ql[32 * chunk + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
          if (five) qh[l] = static_cast<uint8_t>(qh[l] | (((lo >> 4) & 1) << (2 * chunk)) | (((hi >> 4) & 1) << (2 * chunk + 1)));
        }
      }
      break;
    }
    case BlockType::Q6_K: {
      uint8_t* ql = &b[0];
      uint8_t* qh = &b[128];
      for (int half = 0; half < 2; ++half) {
        for (int l = 0; l < 32; ++l) {
          const int* q = &s.code[128 * half];
          ql[64 * half + l] = static_cast<uint8_t>((q[l] & 0xF) | ((q[l + 64] & 0xF) << 4));
          ql[64 * half + 32 + l] = static_cast<uint8_t>((q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4));
          qh[32 * half + l] = static_cast<uint8_t>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                                   ((q[l + 96] >> 4) << 6));
        }
      }
      for (int j = 0; j < 16; ++j) b[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(s.sub_scale[j]));
      put_f16(&b[208], s.d);
      break;
    }
  }
  return b;
}

Semantic random_semantic(BlockType type, std::mt19937& rng, float magnitude) {
  const auto& layout = fx::block_layout(type);
  Semantic s;
  s.d = f16_exact(rng, magnitude);
  s.m = f16_exact(rng, magnitude);
  const int bits = type == BlockType::Q8_0 ? 8 : type == BlockType::Q6_K ? 6
                   : (type == BlockType::Q5_0 || type == BlockType::Q5_1 || type == BlockType::Q5_K) ? 5 : 4;
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1), six(0, 63), eight(-128, 127);
  for (int i = 0; i < layout.elements; ++i) s.code.push_back(type == BlockType::Q8_0 ? eight(rng) : code(rng));
  for (int j = 0; j < 16; ++j) {
    s.sub_scale.push_back(type == BlockType::Q6_K ? eight(rng) : six(rng));
    s.sub_min.push_back(six(rng));
  }
  // Every code's extreme once, so the top bits are exercised whatever the draw.
  s.code[0] = type == BlockType::Q8_0 ? -128 : 0;
  s.code[layout.elements - 1] = type == BlockType::Q8_0 ? 127 : (1 << bits) - 1;
  if (type == BlockType::Q6_K) s.sub_scale[15] = -128;
  else s.sub_scale[7] = 63, s.sub_min[7] = 63;
  return s;
}

class BlockTypes : public ::testing::TestWithParam<fx::BlockLayout> {};

TEST_P(BlockTypes, ReferenceDecodesHandBuiltBlocksAsTheLayoutSays) {
  const BlockType type = GetParam().type;
  std::mt19937 rng(static_cast<unsigned>(type) * 7 + 1);
  for (float magnitude : {1.0f, 3e-5f, 6e4f}) {  // ordinary, f16 subnormal-ish, near f16's largest
    const int blocks = 5;
    std::vector<uint8_t> bytes;
    std::vector<float> want;
    for (int k = 0; k < blocks; ++k) {
      const Semantic s = random_semantic(type, rng, magnitude);
      const auto b = build(type, s);
      bytes.insert(bytes.end(), b.begin(), b.end());
      const auto v = expected_values(type, s);
      want.insert(want.end(), v.begin(), v.end());
    }
    std::vector<float> got(want.size(), std::nanf(""));
    fx::dequantize_blocks(type, bytes.data(), static_cast<int64_t>(want.size()), got.data());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_FLOAT_EQ(got[i], want[i]) << GetParam().name << " magnitude " << magnitude << " value " << i;
  }
}

TEST_P(BlockTypes, QuantiserStaysWithinHalfAStepOfItsInput) {
  const BlockType type = GetParam().type;
  const int n = GetParam().elements * 6;
  std::mt19937 rng(static_cast<unsigned>(type) + 100);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float magnitude : {1.0f, 1e-3f, 1e3f}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * magnitude;
    for (int i = 0; i < GetParam().elements; ++i) x[i] = 0.0f;        // an all-zero block
    for (int i = 0; i < 32; ++i) x[GetParam().elements + i] = 5.0f * magnitude;  // constant, positive run
    std::vector<uint8_t> blocks(static_cast<size_t>(n / GetParam().elements * GetParam().bytes));
    fx::quantize_blocks(type, x.data(), n, blocks.data());
    std::vector<float> y(n, std::nanf(""));
    fx::dequantize_blocks(type, blocks.data(), n, y.data());
    double num = 0, den = 0;
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(y[i]));
      num += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
      den += double(x[i]) * x[i];
    }
    for (int i = 0; i < GetParam().elements; ++i) ASSERT_EQ(y[i], 0.0f) << "zero block, value " << i;
    // Relative L2 of a round-to-nearest quantiser: ~2^-bits scaled; generous bounds per width.
    const double bound = type == BlockType::Q8_0 ? 1e-2 : (type == BlockType::Q6_K) ? 4e-2
                         : (type == BlockType::Q5_0 || type == BlockType::Q5_1 || type == BlockType::Q5_K) ? 8e-2 : 1.6e-1;
    EXPECT_LE(std::sqrt(num / den), bound) << GetParam().name << " magnitude " << magnitude;
  }
}

INSTANTIATE_TEST_SUITE_P(Gguf, BlockTypes, ::testing::ValuesIn(fx::kBlockLayouts),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(BlockQuant, RefusesPartialBlocksAndNonFiniteValues) {
  std::vector<float> x(33, 1.0f);
  std::vector<uint8_t> b(68);
  EXPECT_THROW(fx::quantize_blocks(BlockType::Q8_0, x.data(), 33, b.data()), fx::Error);
  x[3] = INFINITY;
  EXPECT_THROW(fx::quantize_blocks(BlockType::Q8_0, x.data(), 32, b.data()), fx::Error);
  EXPECT_THROW(fx::dequantize_blocks(BlockType::Q4_K, b.data(), 32, x.data()), fx::Error);
  fx::BlockType t;
  EXPECT_FALSE(fx::block_type_from_ggml(9, &t));  // Q8_1: not a storage type of FLUX files
  EXPECT_TRUE(fx::block_type_from_ggml(12, &t));
  EXPECT_EQ(t, BlockType::Q4_K);
}

}  // namespace
