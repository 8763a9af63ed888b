// Tests of the CPU linear layer (ops/cpu/linear.h): every code path this CPU can run, every weight
// dtype and epilogue, on shapes that are not multiples of the blocking, against linear_reference().
//
// Accuracy is checked two ways: the relative L2 error over the whole output (per-path tolerance), and
// per element against the classic dot-product error bound |y - ref| <= tol · (Σ|x·w| + |bias|), which
// catches a single wrong element that an L2 norm would average away. y starts as NaN with a marked
// payload everywhere, including guard rows above and below and the ldy padding; valid outputs must be
// finite and the rest must still hold the marker, bit for bit.
#include "ops/cpu/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/block_quant.h"
#include "core/error.h"

namespace {

using fx::DType;
using fx::cpu::Activation;
using fx::cpu::LinearPath;

constexpr uint32_t kPoisonBits = 0x7FC0DEADu;  // a quiet NaN no computation produces
float poison() {
  float f;
  std::memcpy(&f, &kPoisonBits, 4);
  return f;
}
bool is_poison(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b == kPoisonBits;
}

struct Problem {
  int64_t m, n, k, ldx, ldy;
  DType dtype;
  std::vector<float> x, bias, w_f32;  // w_f32: the real weights (after bf16 / e4m3 rounding and scale)
  std::vector<uint8_t> w_bytes;
  std::vector<float> row_scale;
  std::optional<fx::BlockType> block;
  fx::cpu::Weights weights() const {
    fx::cpu::Weights w;
    w.dtype = dtype;
    w.data = w_bytes.data();
    w.n = n;
    w.k = k;
    w.row_scale = dtype == DType::F8_E4M3FN ? row_scale.data() : nullptr;
    w.block = block;
    return w;
  }
};

// Random non-zero data: x and bias uniform in ±[0.05, 1], weights ~ uniform ±[0.05, 1]/sqrt(k).
Problem make_problem(int64_t m, int64_t n, int64_t k, int64_t ldx, int64_t ldy, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(0.05f, 1.0f);
  std::bernoulli_distribution sign(0.5);
  auto value = [&] { return sign(rng) ? mag(rng) : -mag(rng); };
  Problem p{m, n, k, ldx, ldy, dtype, {}, {}, {}, {}, {}};
  p.x.resize(static_cast<size_t>(m > 0 ? (m - 1) * ldx + k : 0));
  for (float& v : p.x) v = value();
  p.bias.resize(static_cast<size_t>(n));
  for (float& v : p.bias) v = value();
  std::vector<float> w(static_cast<size_t>(n * k));
  const float s = 1.0f / std::sqrt(static_cast<float>(k));
  for (float& v : w) v = value() * s;
  p.w_f32.resize(w.size());
  if (dtype == DType::F32) {
    p.w_bytes.resize(w.size() * 4);
    std::memcpy(p.w_bytes.data(), w.data(), w.size() * 4);
    p.w_f32 = w;
  } else if (dtype == DType::BF16) {
    p.w_bytes.resize(w.size() * 2);
    uint16_t* d = reinterpret_cast<uint16_t*>(p.w_bytes.data());
    for (size_t i = 0; i < w.size(); ++i) d[i] = fx::f32_to_bf16(w[i]), p.w_f32[i] = fx::bf16_to_f32(d[i]);
  } else {
    p.w_bytes.resize(w.size());
    p.row_scale.resize(static_cast<size_t>(n));
    fx::cpu::quantize_e4m3_per_row(w.data(), n, k, p.w_bytes.data(), p.row_scale.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j)
        p.w_f32[i * k + j] = fx::e4m3fn_to_f32(p.w_bytes[i * k + j]) * p.row_scale[i];
  }
  return p;
}

// Tolerances: `elem` scales the per-element bound Σ|x·w| + |b|, `l2` the relative L2 error.
struct Tolerance {
  double elem, l2;
};
Tolerance tolerance_for(LinearPath path, int64_t k) {
  // bf16 activations: each x loses up to 2^-9 relative, so each product does too.
  if (path == LinearPath::Avx512Bf16) return {4e-3, 1e-2};
  // f32 activations and accumulation: each output is one running f32 sum over k, whose rounding error
  // grows like sqrt(k) · 2^-24 (random walk): 1e-6 up to k = 400, 7e-6 at k = 20000.
  return {2e-6, std::max(1e-6, 5e-8 * std::sqrt(static_cast<double>(k)))};
}

const int kGuardRows = 2;

// Runs `path` (on packed weights) on problem p and checks it against the reference.
void check_path(LinearPath path, const Problem& p, Activation act, bool with_bias, fx::ThreadPool& pool) {
  SCOPED_TRACE(std::string("path=") + fx::cpu::linear_path_name(path) + " dtype=" + fx::dtype_name(p.dtype) +
               " m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
               " ldx=" + std::to_string(p.ldx) + " ldy=" + std::to_string(p.ldy) + " act=" +
               std::to_string(static_cast<int>(act)) + " bias=" + std::to_string(with_bias));
  const fx::cpu::Weights w = p.weights();
  const float* bias = with_bias ? p.bias.data() : nullptr;
  std::vector<float> ref(static_cast<size_t>(p.m * p.n));
  fx::cpu::linear_reference(p.x.data(), p.m, p.ldx, w, bias, act, ref.data(), p.n);

  std::vector<float> buffer(static_cast<size_t>((p.m + 2 * kGuardRows) * p.ldy), poison());
  float* y = buffer.data() + kGuardRows * p.ldy;
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(w);
  fx::cpu::linear_with_path(path, p.x.data(), p.m, p.ldx, packed, bias, act, y, p.ldy, pool);

  const Tolerance tol = tolerance_for(path, p.k);
  double err2 = 0.0, ref2 = 0.0, worst_ratio = 0.0;
  int64_t bad = 0, untouched_violations = 0;
  for (int64_t row = -kGuardRows; row < p.m + kGuardRows; ++row) {
    for (int64_t col = 0; col < p.ldy; ++col) {
      const float v = y[row * p.ldy + col];
      const bool inside = row >= 0 && row < p.m && col < p.n;
      if (!inside) {
        untouched_violations += !is_poison(v);
        continue;
      }
      const double r = ref[row * p.n + col];
      // Σ|x·w| + |b|: the scale of the rounding errors any summation order makes. The activations
      // have slopes below 1.2, and their own vector exp adds ~2 ulp of the result.
      double bound = with_bias ? std::fabs(p.bias[col]) : 0.0;
      for (int64_t kk = 0; kk < p.k; ++kk)
        bound += std::fabs(static_cast<double>(p.x[row * p.ldx + kk]) * p.w_f32[col * p.k + kk]);
      const double allowed = tol.elem * bound * 1.2 + 1e-6 * std::fabs(r) + 1e-30;
      const double e = std::fabs(static_cast<double>(v) - r);
      if (!std::isfinite(v) || !(e <= allowed)) {
        if (bad++ < 5)
          ADD_FAILURE() << "y[" << row << "][" << col << "] = " << v << ", reference " << r << ", allowed error "
                        << allowed;
      }
      worst_ratio = std::max(worst_ratio, e / allowed);
      err2 += (v - r) * (v - r);
      ref2 += r * r;
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(untouched_violations, 0) << "elements outside rows [0,m) x cols [0,n) were written";
  const double rel_l2 = std::sqrt(err2 / std::max(ref2, 1e-300));
  EXPECT_LE(rel_l2, tol.l2) << "relative L2 error";  // NaN fails here too
}

std::vector<LinearPath> paths_for(DType dtype) {
  std::vector<LinearPath> out;
  for (LinearPath p : {LinearPath::Portable, LinearPath::Avx2, LinearPath::Avx512, LinearPath::Avx512Bf16})
    if (fx::cpu::linear_path_supported(p, dtype)) out.push_back(p);
  return out;
}

struct Shape {
  int64_t m, n, k, ldx_extra, ldy_extra;
};

// Not multiples of any blocking (MR 4/6/12, panel 32, KC 256/512/1024), odd k for the
// bf16 pairs, k spanning several k blocks, strided x and y, and the m = 1, 2 modulation shapes.
const Shape kShapes[] = {
    {1, 1, 1, 0, 0},      {1, 70, 300, 3, 5},   {2, 64, 64, 0, 0},     {3, 33, 7, 1, 0},
    {13, 37, 29, 2, 3},   {12, 32, 128, 0, 0},  {25, 100, 515, 7, 1},  {7, 95, 257, 0, 9},
    {130, 65, 129, 4, 2}, {6, 31, 600, 0, 0},   {5, 40, 1100, 3, 2},
};

class LinearPaths : public ::testing::TestWithParam<DType> {};

TEST_P(LinearPaths, MatchReferenceOnOddShapes) {
  fx::ThreadPool pool(2);
  const DType dtype = GetParam();
  uint32_t seed = 1;
  for (const Shape& s : kShapes) {
    const Problem p = make_problem(s.m, s.n, s.k, s.k + s.ldx_extra, s.n + s.ldy_extra, dtype, seed++);
    for (LinearPath path : paths_for(dtype)) {
      for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Silu}) {
        check_path(path, p, act, /*with_bias=*/act != Activation::Silu, pool);
      }
      check_path(path, p, Activation::Silu, /*with_bias=*/true, pool);
    }
  }
}

// Shapes past the other blocking levels: several row blocks (a row block is as tall as ~512 KiB of
// packed x allows: 42 tiles of 12 rows for f32) and several x super-blocks (32 MiB of packed x: 400 rows
// at k = 20000 f32, 800 for bf16 pairs), with a single partial panel (n = 8).
TEST_P(LinearPaths, ManyRowBlocksAndSuperBlocks) {
  fx::ThreadPool pool(2);
  const DType dtype = GetParam();
  const Problem tall = make_problem(1100, 40, 300, 301, 41, dtype, 21);
  const Problem deep = make_problem(900, 8, 20000, 20000, 8, dtype, 22);
  for (LinearPath path : paths_for(dtype)) {
    check_path(path, tall, Activation::GeluTanh, true, pool);
    check_path(path, deep, Activation::None, true, pool);
  }
}

TEST_P(LinearPaths, AnyThreadCountGivesTheSameResult) {
  const DType dtype = GetParam();
  const Problem p = make_problem(50, 200, 300, 300, 200, dtype, 77);
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(p.weights());
  for (LinearPath path : paths_for(dtype)) {
    std::vector<float> first;
    for (int threads : {1, 2, 3, 5}) {
      fx::ThreadPool pool(threads);
      std::vector<float> y(static_cast<size_t>(p.m * p.n), poison());
      fx::cpu::linear_with_path(path, p.x.data(), p.m, p.ldx, packed, p.bias.data(), Activation::GeluTanh, y.data(),
                                p.n, pool);
      if (first.empty()) {
        first = y;
        check_path(path, p, Activation::GeluTanh, true, pool);
      } else {
        // Each output's k order does not depend on the split, so the bits must not either.
        EXPECT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4))
            << fx::cpu::linear_path_name(path) << " with " << threads << " threads";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(LinearDtypes, LinearPaths, ::testing::Values(DType::F32, DType::BF16, DType::F8_E4M3FN),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(info.param == DType::F32    ? "F32"
                                              : info.param == DType::BF16 ? "BF16"
                                                                          : "E4M3");
                         });

TEST(LinearApi, UnpackedAndAutoPathsMatchReference) {
  fx::ThreadPool pool(2);
  for (DType dtype : {DType::F32, DType::BF16, DType::F8_E4M3FN}) {
    const Problem p = make_problem(9, 45, 77, 80, 50, dtype, 5);
    std::vector<float> ref(static_cast<size_t>(p.m * p.n)), y(static_cast<size_t>(p.m * p.ldy), poison());
    fx::cpu::linear_reference(p.x.data(), p.m, p.ldx, p.weights(), p.bias.data(), Activation::Silu, ref.data(), p.n);
    fx::cpu::linear(p.x.data(), p.m, p.ldx, p.weights(), p.bias.data(), Activation::Silu, y.data(), p.ldy, pool);
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.ldy; ++j) {
        const float v = y[i * p.ldy + j];
        if (j >= p.n) {
          EXPECT_TRUE(is_poison(v));
        } else {
          ASSERT_TRUE(std::isfinite(v));
          EXPECT_NEAR(v, ref[i * p.n + j], 1e-5 * (1 + std::fabs(ref[i * p.n + j])));
        }
      }
    // Packed + Bf16Activations: the bf16 path where it applies, Exact elsewhere; within bf16 tolerance.
    const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(p.weights());
    std::fill(y.begin(), y.end(), poison());
    fx::cpu::linear(p.x.data(), p.m, p.ldx, packed, p.bias.data(), Activation::Silu, y.data(), p.ldy,
                    fx::cpu::Precision::Bf16Activations, pool);
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) {
        ASSERT_TRUE(std::isfinite(y[i * p.ldy + j]));
        EXPECT_NEAR(y[i * p.ldy + j], ref[i * p.n + j], 2e-2 * (1 + std::fabs(ref[i * p.n + j])));
      }
  }
}

TEST(LinearApi, AutoPathFollowsThePrecisionRule) {
  using fx::cpu::Precision;
  EXPECT_NE(fx::cpu::linear_auto_path(DType::BF16, Precision::Exact), LinearPath::Avx512Bf16);
  EXPECT_NE(fx::cpu::linear_auto_path(DType::F32, Precision::Bf16Activations), LinearPath::Avx512Bf16);
  if (fx::cpu::linear_path_supported(LinearPath::Avx512Bf16, DType::BF16))
    EXPECT_EQ(fx::cpu::linear_auto_path(DType::BF16, Precision::Bf16Activations), LinearPath::Avx512Bf16);
  EXPECT_FALSE(fx::cpu::linear_path_supported(LinearPath::Avx512Bf16, DType::F32));
}

TEST(LinearApi, RejectsBadArguments) {
  const Problem p = make_problem(2, 8, 8, 8, 8, DType::F8_E4M3FN, 3);
  fx::cpu::Weights w = p.weights();
  std::vector<uint8_t> nan_bytes = p.w_bytes;
  nan_bytes[13] = 0xFF;  // e4m3fn -NaN
  w.data = nan_bytes.data();
  EXPECT_THROW(fx::cpu::pack_weights(w), fx::Error);
  nan_bytes[13] = 0x7F;
  EXPECT_THROW(fx::cpu::pack_weights(w), fx::Error);
  w = p.weights();
  w.row_scale = nullptr;
  EXPECT_THROW(fx::cpu::pack_weights(w), fx::Error);
  w = p.weights();
  w.dtype = DType::F16;
  EXPECT_THROW(fx::cpu::pack_weights(w), fx::Error);
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(p.weights());
  std::vector<float> y(64);
  EXPECT_THROW(fx::cpu::linear(p.x.data(), 2, 7, packed, nullptr, Activation::None, y.data(), 8), fx::Error);
  EXPECT_THROW(fx::cpu::linear(p.x.data(), 2, 8, packed, nullptr, Activation::None, y.data(), 7), fx::Error);
  if (!fx::cpu::linear_path_supported(LinearPath::Avx512Bf16, DType::F8_E4M3FN))
    EXPECT_THROW(fx::cpu::linear_with_path(LinearPath::Avx512Bf16, p.x.data(), 2, 8, packed, nullptr,
                                           Activation::None, y.data(), 8),
                 fx::Error);
}

TEST(LinearQuantize, E4m3PerRowRoundTrips) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t n = 17, k = 333;
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& v : w) {
    v = normal(rng);
    if (v == 0.0f) v = 1e-3f;
  }
  std::vector<uint8_t> q(w.size());
  std::vector<float> scale(static_cast<size_t>(n), std::nanf(""));
  fx::cpu::quantize_e4m3_per_row(w.data(), n, k, q.data(), scale.data());
  for (int64_t i = 0; i < n; ++i) {
    float amax = 0;
    for (int64_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(w[i * k + j]));
    ASSERT_TRUE(std::isfinite(scale[i]));
    EXPECT_FLOAT_EQ(scale[i], amax / 448.0f);
    bool hit_max = false;
    for (int64_t j = 0; j < k; ++j) {
      const uint8_t b = q[i * k + j];
      ASSERT_NE(b & 0x7F, 0x7F) << "NaN code";
      hit_max |= (b & 0x7F) == 0x7E;  // ±448
      const double back = static_cast<double>(fx::e4m3fn_to_f32(b)) * scale[i];
      // Half a unit in the last place: 2^-4 relative for normals, 2^-10 · scale absolute for subnormals.
      const double allowed = std::max(std::fabs(w[i * k + j]) * 0.0625, std::ldexp(1.0, -10) * scale[i]);
      EXPECT_LE(std::fabs(back - w[i * k + j]), allowed) << i << "," << j;
    }
    EXPECT_TRUE(hit_max) << "row " << i << ": amax should map to 448";
  }
  // An all-zero row: scale 1 and zero codes, not NaN.
  std::vector<float> zeros(8, 0.0f);
  std::vector<uint8_t> zq(8, 0xAA);
  float zs = std::nanf("");
  fx::cpu::quantize_e4m3_per_row(zeros.data(), 1, 8, zq.data(), &zs);
  EXPECT_EQ(zs, 1.0f);
  for (uint8_t b : zq) EXPECT_EQ(b, 0);
}

}  // namespace

// ---- GGUF blocks kept quantised (Q8_0, Q4_K): every path that has a kernel, against the reference on the
// decoded weights. Rows are whole blocks; n, m and the strides are not multiples of anything.
namespace {

Problem make_block_problem(int64_t m, int64_t n, int64_t k, int64_t ldx, int64_t ldy, fx::BlockType type, uint32_t seed) {
  Problem p = make_problem(m, n, k, ldx, ldy, DType::F32, seed);
  const fx::BlockLayout& layout = fx::block_layout(type);
  std::vector<float> w = p.w_f32;
  // One row far larger and one far smaller than the others: extreme steps and offsets in the same panel.
  for (int64_t j = 0; j < k; ++j) w[j] *= 3e3f;
  if (n > 1)
    for (int64_t j = 0; j < k; ++j) w[k + j] *= 1e-3f;
  p.block = type;
  p.w_bytes.assign(static_cast<size_t>(n * k / layout.elements * layout.bytes), 0);
  fx::quantize_blocks(type, w.data(), n * k, p.w_bytes.data());
  fx::dequantize_blocks(type, p.w_bytes.data(), n * k, p.w_f32.data());
  return p;
}

class LinearBlocks : public ::testing::TestWithParam<fx::BlockType> {};

TEST_P(LinearBlocks, MatchReferenceOnOddShapes) {
  const fx::BlockType type = GetParam();
  const int64_t unit = fx::block_layout(type).elements;
  const Shape shapes[] = {{1, 1, unit, 0, 0},      {3, 33, unit, 1, 0},     {13, 37, 2 * unit, 2, 3},
                          {7, 95, 5 * unit, 0, 9}, {130, 65, 4 * unit, 4, 2}, {5, 40, 1280, 3, 2},
                          {40, 70, 1280, 1, 2}};
  fx::ThreadPool pool(3);
  for (LinearPath path : {LinearPath::Portable, LinearPath::Avx2}) {
    if (!fx::cpu::linear_path_supported(path, DType::F32)) continue;
    uint32_t seed = 1;
    for (const Shape& s : shapes) {
      const Problem p = make_block_problem(s.m, s.n, s.k, s.k + s.ldx_extra, s.n + s.ldy_extra, type, seed++);
      check_path(path, p, seed % 3 == 0 ? Activation::GeluTanh : Activation::None, seed % 2 == 0, pool);
    }
  }
}

TEST_P(LinearBlocks, AutoPathAndPackingRules) {
  const fx::BlockType type = GetParam();
  const Problem p = make_block_problem(9, 45, 512, 512, 45, type, 77);
  const fx::cpu::PackedWeights packed = fx::cpu::pack_weights(p.weights());
  ASSERT_TRUE(packed.block().has_value());
  EXPECT_EQ(*packed.block(), type);
  std::vector<float> ref(9 * 45), y(9 * 45, poison());
  fx::cpu::linear_reference(p.x.data(), 9, 512, p.weights(), p.bias.data(), Activation::Silu, ref.data(), 45);
  fx::cpu::linear(p.x.data(), 9, 512, packed, p.bias.data(), Activation::Silu, y.data(), 45);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-5 * (1 + std::fabs(ref[i]))) << i;
  // No AVX-512 kernel for blocks: asking for one is refused, never silently another path.
  try {
    fx::cpu::linear_with_path(LinearPath::Avx512, p.x.data(), 9, 512, packed, nullptr, Activation::None, y.data(), 45);
    ADD_FAILURE() << "avx512 ran";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), FX_ERR_UNSUPPORTED);
  }
  // Rows that are not whole blocks are refused.
  fx::cpu::Weights bad = p.weights();
  bad.k = 500;
  EXPECT_THROW(fx::cpu::pack_weights(bad), fx::Error);
}

INSTANTIATE_TEST_SUITE_P(Gguf, LinearBlocks, ::testing::Values(fx::BlockType::Q8_0, fx::BlockType::Q4_K),
                         [](const auto& info) { return std::string(fx::block_layout(info.param).name); });

TEST(LinearBlocksApi, TypesWithoutAGemmAreRefusedByPacking) {
  for (fx::BlockType type : {fx::BlockType::Q4_0, fx::BlockType::Q4_1, fx::BlockType::Q5_0, fx::BlockType::Q5_1,
                             fx::BlockType::Q5_K, fx::BlockType::Q6_K}) {
    EXPECT_FALSE(fx::cpu::block_gemm_supported(type));
    std::vector<uint8_t> bytes(4096);
    fx::cpu::Weights w{DType::F32, bytes.data(), 2, 256, nullptr, type};
    try {
      fx::cpu::pack_weights(w);
      ADD_FAILURE() << fx::block_layout(type).name << " packed";
    } catch (const fx::Error& e) {
      EXPECT_EQ(e.status(), FX_ERR_UNSUPPORTED) << e.what();
    }
  }
}

}  // namespace
