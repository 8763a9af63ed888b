// The autoencoder's image kernels (ops/cpu/conv2d.h) against their double-precision references, on
// every code path the machine has (AVX-512, AVX2, portable): random inputs, outputs poisoned with NaN first (so an element a
// kernel forgets to write can never pass), f32 tolerances.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "test_support.h"
#include "ops/cpu/conv2d.h"

namespace {

using fx::cpu::Activation;
using fx::cpu::Conv2dShape;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

void fill_normal(std::vector<float>& v, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  for (float& x : v) x = dist(rng);
}

struct Stats {
  double rel_l2 = std::numeric_limits<double>::quiet_NaN();
  double max_abs = std::numeric_limits<double>::quiet_NaN();
};

// NaN anywhere makes both numbers NaN, which fails every <=.
Stats diff(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0, mx = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = double(got[i]) - double(want[i]);
    num += e * e;
    den += double(want[i]) * double(want[i]);
    mx = std::isnan(e) ? e : std::max(mx, std::fabs(e));
  }
  Stats s{std::sqrt(num / std::max(den, 1e-300)), mx};
  if (std::isnan(mx)) s.rel_l2 = mx;
  return s;
}

// Runs a body on every path this machine supports (the ISA capped at each level in turn).
template <typename Body>
void for_each_path(Body body) {
  fx::testing::for_each_isa_level([&] {
    SCOPED_TRACE(std::string(fx::cpu::conv2d_path_name(fx::cpu::conv2d_active_path())) + " path");
    body();
  });
}

struct ConvCase {
  int64_t batch, cin, cout, h, w, k, stride, pt, pb, pl, pr;
  bool bias = true, accumulate = false;
  Activation act = Activation::None;
};

std::string describe(const ConvCase& c) {
  return "batch " + std::to_string(c.batch) + " " + std::to_string(c.cin) + "->" + std::to_string(c.cout) + " " +
         std::to_string(c.h) + "x" + std::to_string(c.w) + " k" + std::to_string(c.k) + " s" + std::to_string(c.stride) +
         " pad " + std::to_string(c.pt) + std::to_string(c.pb) + std::to_string(c.pl) + std::to_string(c.pr) +
         (c.accumulate ? " accumulate" : "") + (c.act == Activation::Silu ? " silu" : "");
}

void check_conv(const ConvCase& c, uint32_t seed, fx::ThreadPool& pool) {
  SCOPED_TRACE(describe(c));
  Conv2dShape s;
  s.in_channels = c.cin;
  s.out_channels = c.cout;
  s.height = c.h;
  s.width = c.w;
  s.kernel_h = s.kernel_w = c.k;
  s.stride = c.stride;
  s.pad_top = c.pt;
  s.pad_bottom = c.pb;
  s.pad_left = c.pl;
  s.pad_right = c.pr;
  const int64_t ho = s.out_height(), wo = s.out_width();
  std::vector<float> x(size_t(c.batch * c.cin * c.h * c.w)), w(size_t(c.cout * c.cin * c.k * c.k)),
      bias(size_t(c.cout)), prior(size_t(c.batch * c.cout * ho * wo));
  fill_normal(x, seed);
  fill_normal(w, seed + 1, float(1.0 / std::sqrt(double(c.cin * c.k * c.k))));
  fill_normal(bias, seed + 2, 0.5f);
  fill_normal(prior, seed + 3);
  const float* b = c.bias ? bias.data() : nullptr;
  std::vector<float> want = c.accumulate ? prior : std::vector<float>(prior.size(), kNaN);
  fx::cpu::conv2d_reference(x.data(), c.batch, s, w.data(), b, c.act, c.accumulate, want.data());
  const fx::cpu::PackedConv packed = fx::cpu::pack_conv_weights(w.data(), c.cout, c.cin, c.k, c.k);
  for_each_path([&] {
    std::vector<float> got = c.accumulate ? prior : std::vector<float>(prior.size(), kNaN);
    fx::cpu::conv2d(x.data(), c.batch, s, packed, b, c.act, c.accumulate, got.data(), pool);
    const Stats st = diff(got, want);
    EXPECT_LE(st.rel_l2, 2e-6);
    EXPECT_LE(st.max_abs, 2e-5);
  });
}

TEST(Conv2dCpu, SamePadding3x3MatchesReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 10;
  // Widths across the 32-pixel tile and its 16-lane halves; channel counts across the 12-channel block.
  for (int64_t w : {1, 5, 16, 17, 32, 37, 70})
    for (int64_t cout : {3, 12, 13, 25}) check_conv({1, 5, cout, 6, w, 3, 1, 1, 1, 1, 1}, seed++, pool);
  // More input channels than one channel block (28 for 3×3), batch of two, tiny images.
  check_conv({2, 64, 16, 9, 20, 3, 1, 1, 1, 1, 1}, seed++, pool);
  check_conv({1, 3, 32, 1, 1, 3, 1, 1, 1, 1, 1}, seed++, pool);
  check_conv({1, 4, 8, 2, 3, 3, 1, 1, 1, 1, 1}, seed++, pool);
}

TEST(Conv2dCpu, PointwiseAndUnpaddedMatchReference) {
  fx::ThreadPool pool(3);
  uint32_t seed = 100;
  check_conv({1, 64, 32, 6, 16, 1, 1, 0, 0, 0, 0}, seed++, pool);
  check_conv({2, 300, 20, 3, 35, 1, 1, 0, 0, 0, 0}, seed++, pool);  // two channel blocks of a 1×1
  check_conv({1, 7, 9, 8, 11, 3, 1, 0, 0, 0, 0}, seed++, pool);     // valid convolution
  check_conv({1, 6, 5, 9, 13, 5, 1, 2, 2, 2, 2}, seed++, pool);     // 5×5
}

TEST(Conv2dCpu, DownsampleStride2WithRightBottomPad) {
  fx::ThreadPool pool(2);
  uint32_t seed = 200;
  // The autoencoder's Downsample: pad (left 0, right 1, top 0, bottom 1), 3×3, stride 2.
  for (int64_t w : {2, 8, 10, 34, 66, 100})
    for (int64_t h : {2, 7, 10}) check_conv({1, 6, 14, h, w, 3, 2, 0, 1, 0, 1}, seed++, pool);
  check_conv({2, 40, 24, 12, 40, 3, 2, 0, 1, 0, 1}, seed++, pool);
  check_conv({1, 5, 7, 9, 45, 3, 2, 1, 1, 1, 1}, seed++, pool);  // symmetric pad, odd sizes
  check_conv({1, 9, 13, 6, 31, 1, 2, 0, 0, 0, 0}, seed++, pool);  // strided 1×1
}

TEST(Conv2dCpu, AccumulateBiasAndSiluEpilogue) {
  fx::ThreadPool pool(2);
  ConvCase c{1, 30, 17, 7, 41, 3, 1, 1, 1, 1, 1};
  c.accumulate = true;
  check_conv(c, 300, pool);
  c.act = Activation::Silu;
  check_conv(c, 301, pool);
  c.accumulate = false;
  c.bias = false;
  check_conv(c, 302, pool);
  c.act = Activation::GeluTanh;
  c.stride = 2;
  check_conv(c, 303, pool);
}

TEST(Conv2dCpu, WideRowsSplitTheChannelBlock) {
  // A 1500-pixel row makes one channel block's input slice larger than L2; the kernel halves the block.
  fx::ThreadPool pool(2);
  check_conv({1, 40, 5, 3, 1500, 3, 1, 1, 1, 1, 1}, 400, pool);
}

TEST(Conv2dCpu, SameBitsForAnyThreadCount) {
  // Tasks only change which thread computes a tile, never the order of a tile's sums.
  Conv2dShape s;
  s.in_channels = 48;
  s.out_channels = 40;
  s.height = 23;
  s.width = 50;
  s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = 1;
  std::vector<float> x(size_t(48 * 23 * 50)), w(size_t(40 * 48 * 9)), b(40);
  fill_normal(x, 500);
  fill_normal(w, 501, 0.05f);
  fill_normal(b, 502);
  const auto packed = fx::cpu::pack_conv_weights(w.data(), 40, 48, 3, 3);
  std::vector<float> first(size_t(40 * 23 * 50), kNaN);
  {
    fx::ThreadPool one(1);
    fx::cpu::conv2d(x.data(), 1, s, packed, b.data(), Activation::None, false, first.data(), one);
  }
  for (int threads : {2, 3, 5}) {
    fx::ThreadPool pool(threads);
    std::vector<float> got(first.size(), kNaN);
    fx::cpu::conv2d(x.data(), 1, s, packed, b.data(), Activation::None, false, got.data(), pool);
    EXPECT_EQ(std::memcmp(got.data(), first.data(), sizeof(float) * got.size()), 0) << threads << " threads";
  }
}

TEST(Conv2dCpu, RefusesBadShapes) {
  std::vector<float> w(2 * 3 * 9, 0.5f), x(3 * 16, 1.0f), y(64);
  const auto packed = fx::cpu::pack_conv_weights(w.data(), 2, 3, 3, 3);
  Conv2dShape s;
  s.in_channels = 3;
  s.out_channels = 2;
  s.height = s.width = 4;
  auto expect_invalid = [&](const Conv2dShape& shape, const char* what) {
    try {
      fx::cpu::conv2d(x.data(), 1, shape, packed, nullptr, Activation::None, false, y.data());
      ADD_FAILURE() << "accepted " << what;
    } catch (const fx::Error& e) {
      EXPECT_EQ(e.status(), FX_ERR_INVALID_ARGUMENT) << what;
    }
  };
  Conv2dShape bad = s;
  bad.stride = 3;
  expect_invalid(bad, "stride 3");
  bad = s;
  bad.in_channels = 4;
  expect_invalid(bad, "weights for 3 input channels used with 4");
  bad = s;
  bad.pad_left = 3;
  expect_invalid(bad, "padding as large as the kernel");
  bad = s;
  bad.height = 1;
  expect_invalid(bad, "an unpadded image smaller than the kernel");
  EXPECT_THROW(fx::cpu::pack_conv_weights(nullptr, 2, 3, 3, 3), fx::Error);
}

struct NormCase {
  int64_t batch, channels, hw, groups;
  float mean, stddev;
  bool silu;
};

TEST(GroupNormCpu, MatchesDoubleReference) {
  fx::ThreadPool pool(3);
  uint32_t seed = 600;
  // hw 1 and 7: tiny groups; 10000 × 2 channels per group: three statistics chunks; a mean of 300 with
  // unit spread checks that the offset does not leak into the variance.
  for (const NormCase& c : {NormCase{1, 64, 1, 32, 0.0f, 1.0f, false}, NormCase{2, 64, 7, 32, 0.5f, 2.0f, true},
                            NormCase{1, 64, 10000, 32, 0.0f, 1.0f, true}, NormCase{2, 96, 333, 32, 300.0f, 1.0f, false},
                            NormCase{1, 128, 4099, 32, -3.0f, 0.01f, true}, NormCase{1, 12, 50, 3, 1.0f, 1.0f, false}}) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + " channels " + std::to_string(c.channels) + " hw " +
                 std::to_string(c.hw) + " mean " + std::to_string(c.mean));
    std::vector<float> x(size_t(c.batch * c.channels * c.hw)), gamma(size_t(c.channels)), beta(size_t(c.channels));
    fill_normal(x, seed++, c.stddev, c.mean);
    fill_normal(gamma, seed++, 0.3f, 1.0f);
    fill_normal(beta, seed++, 0.3f);
    std::vector<float> want(x.size(), kNaN);
    fx::cpu::group_norm_reference(x.data(), c.batch, c.channels, c.hw, c.groups, gamma.data(), beta.data(), 1e-6f,
                                  c.silu, want.data());
    for_each_path([&] {
      std::vector<float> got(x.size(), kNaN);
      fx::cpu::group_norm(x.data(), c.batch, c.channels, c.hw, c.groups, gamma.data(), beta.data(), 1e-6f, c.silu,
                          got.data(), pool);
      const Stats st = diff(got, want);
      EXPECT_LE(st.rel_l2, 1e-6);
      // In place gives the same bits.
      std::vector<float> inplace = x;
      fx::cpu::group_norm(inplace.data(), c.batch, c.channels, c.hw, c.groups, gamma.data(), beta.data(), 1e-6f,
                          c.silu, inplace.data(), pool);
      EXPECT_EQ(std::memcmp(inplace.data(), got.data(), sizeof(float) * got.size()), 0);
    });
  }
}

TEST(GroupNormCpu, UsesBiasedVarianceAndEps) {
  // One group of [1, 3, 5, 7]: mean 4, biased variance 5; with eps 1 the scale is 1/sqrt(6).
  std::vector<float> x = {1, 3, 5, 7}, gamma = {2.0f, 2.0f}, beta = {0.5f, 0.5f}, y(4, kNaN);
  fx::ThreadPool pool(1);
  for_each_path([&] {
    fx::cpu::group_norm(x.data(), 1, 2, 2, 1, gamma.data(), beta.data(), 1.0f, false, y.data(), pool);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[size_t(i)], (x[size_t(i)] - 4.0) / std::sqrt(6.0) * 2.0 + 0.5, 1e-6);
  });
  EXPECT_THROW(fx::cpu::group_norm(x.data(), 1, 3, 1, 2, gamma.data(), beta.data(), 1e-6f, false, y.data()), fx::Error);
}

TEST(UpsampleCpu, NearestTwoTimesIsExact) {
  fx::ThreadPool pool(2);
  for (auto [planes, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 17}, {2, 4, 32}, {5, 9, 40}}) {
    std::vector<float> x(size_t(planes * h * w));
    fill_normal(x, uint32_t(700 + w));
    std::vector<float> want(x.size() * 4, kNaN);
    fx::cpu::upsample_nearest2x_reference(x.data(), planes, h, w, want.data());
    for_each_path([&] {
      std::vector<float> got(want.size(), kNaN);
      fx::cpu::upsample_nearest2x(x.data(), planes, h, w, got.data(), pool);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), sizeof(float) * got.size()), 0) << planes << "x" << h << "x" << w;
    });
  }
}

}  // namespace
