// The elementwise kernels against double references and, for RoPE and GELU, against values computed
// here independently from the formulas in docs/flux-model.md, on every path the machine has (AVX-512, AVX2,
// portable).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"
#include "ops/cpu/elementwise.h"

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = -7.25f;

void fill_normal(std::vector<float>& v, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  for (float& x : v) x = dist(rng);
}

// Runs a body on every path this machine has (the ISA capped at each level in turn).
struct PathLoop {
  template <typename Body>
  static void run(Body body) {
    fx::testing::for_each_isa_level([&] {
      SCOPED_TRACE(std::string(fx::cpu::elementwise_path_name()) + " path");
      body();
    });
  }
};

struct Stats {
  double rel_l2 = std::numeric_limits<double>::quiet_NaN();
  double max_abs = std::numeric_limits<double>::quiet_NaN();
};

// Over the [rows, cols] region of two buffers with row stride ld; NaN propagates into both numbers.
Stats diff(const std::vector<float>& got, const std::vector<float>& want, int64_t rows, int64_t cols, int64_t ld) {
  double num = 0.0, den = 0.0, mx = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double e = double(got[size_t(r * ld + c)]) - double(want[size_t(r * ld + c)]);
      num += e * e;
      den += double(want[size_t(r * ld + c)]) * double(want[size_t(r * ld + c)]);
      mx = std::isnan(e) ? e : std::max(mx, std::fabs(e));
    }
  return Stats{std::sqrt(num / std::max(den, 1e-300)), mx};
}

bool padding_intact(const std::vector<float>& buf, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = cols; c < ld; ++c)
      if (buf[size_t(r * ld + c)] != kSentinel) return false;
  return true;
}

// ---- RoPE ----

// The spec's formula written independently of the kernel: ω = exp(−(2j/d_a)·ln θ), φ = p·ω.
double spec_angle(double pos, int j, int axis_dim, double theta) {
  return pos * std::exp(-(2.0 * j / axis_dim) * std::log(theta));
}

TEST(ElementwiseRope, TablesMatchSpecFormulaWithPerAxisExponent) {
  const int axes[3] = {16, 56, 56};
  const int64_t seq = 300;
  std::vector<float> ids(size_t(seq * 3));
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> pos(0, 127);
  for (int64_t l = 0; l < seq; ++l) {
    ids[size_t(l * 3 + 0)] = float(l % 3);
    ids[size_t(l * 3 + 1)] = float(pos(rng));
    ids[size_t(l * 3 + 2)] = float(pos(rng)) + (l % 5 == 0 ? 0.5f : 0.0f);  // fractional positions too
  }
  std::vector<float> c(size_t(seq * 64), kNaN), s(size_t(seq * 64), kNaN);
  fx::cpu::rope_tables(ids.data(), seq, 3, axes, 10000.0, c.data(), s.data());
  double worst = 0.0;
  for (int64_t l = 0; l < seq; ++l) {
    int m = 0;
    for (int a = 0; a < 3; ++a)
      for (int j = 0; j < axes[a] / 2; ++j, ++m) {
        const double phi = spec_angle(ids[size_t(l * 3 + a)], j, axes[a], 10000.0);
        const double ec = std::fabs(double(c[size_t(l * 64 + m)]) - std::cos(phi));
        const double es = std::fabs(double(s[size_t(l * 64 + m)]) - std::sin(phi));
        ASSERT_FALSE(std::isnan(ec) || std::isnan(es)) << l << " " << m;
        worst = std::max({worst, ec, es});
      }
  }
  EXPECT_LE(worst, 1e-7);  // f32 rounding of cos/sin is 6e-8 at most

  // The per-axis exponent matters: pair 9 (axis 1, j = 1) at position 50 against what an exponent
  // over the head dim (2·9/128) would give.
  const float one_id[3] = {0.0f, 50.0f, 0.0f};
  float c1[64], s1[64];
  fx::cpu::rope_tables(one_id, 1, 3, axes, 10000.0, c1, s1);
  const double right = 50.0 * std::pow(10000.0, -2.0 / 56.0);
  const double wrong = 50.0 * std::pow(10000.0, -18.0 / 128.0);
  EXPECT_NEAR(c1[9], std::cos(right), 1e-7);
  EXPECT_NEAR(s1[9], std::sin(right), 1e-7);
  EXPECT_GT(std::fabs(std::cos(right) - std::cos(wrong)), 0.1);
}

TEST(ElementwiseRope, TextTokensAtOriginAreTheIdentity) {
  const int axes[3] = {16, 56, 56};
  const float ids[6] = {0, 0, 0, 0, 0, 0};
  std::vector<float> c(128), s(128);
  fx::cpu::rope_tables(ids, 2, 3, axes, 10000.0, c.data(), s.data());
  for (int i = 0; i < 128; ++i) {
    ASSERT_EQ(c[size_t(i)], 1.0f);
    ASSERT_EQ(s[size_t(i)], 0.0f);
  }
  fx::ThreadPool pool(2);
  PathLoop::run([&] {
    std::vector<float> x(size_t(2 * 3 * 128));
    fill_normal(x, 3);
    const std::vector<float> before = x;
    fx::cpu::rope_apply(x.data(), 2, 3 * 128, 3, 128, c.data(), s.data(), pool);
    EXPECT_EQ(std::memcmp(x.data(), before.data(), x.size() * sizeof(float)), 0);
  });
}

TEST(ElementwiseRope, ApplyMatchesReferenceAndRotatesAdjacentPairs) {
  fx::ThreadPool pool(2);
  uint32_t seed = 10;
  for (int64_t d : {128, 32, 20, 6}) {
    const int64_t heads = 3, seq = 57;
    const int64_t ld = 3 * heads * d + 4;  // q inside a fused qkv row: only the first heads·d columns rotate
    std::vector<float> tc(size_t(seq * d / 2)), ts(tc.size());
    std::vector<float> angles(tc.size());
    fill_normal(angles, seed++, 3.0f);
    for (size_t i = 0; i < angles.size(); ++i) {
      tc[i] = float(std::cos(double(angles[i])));
      ts[i] = float(std::sin(double(angles[i])));
    }
    std::vector<float> base(size_t(seq * ld));
    fill_normal(base, seed++);
    PathLoop::run([&] {
      std::vector<float> got = base, want = base;
      fx::cpu::rope_apply(got.data(), seq, ld, heads, d, tc.data(), ts.data(), pool);
      fx::cpu::rope_apply_reference(want.data(), seq, ld, heads, d, tc.data(), ts.data());
      const Stats st = diff(got, want, seq, heads * d, ld);
      EXPECT_LE(st.rel_l2, 1e-6) << "d " << d;
      EXPECT_LE(st.max_abs, 1e-6) << "d " << d;
      for (int64_t r = 0; r < seq; ++r)
        for (int64_t col = heads * d; col < ld; ++col)
          ASSERT_EQ(got[size_t(r * ld + col)], base[size_t(r * ld + col)]) << "untouched columns";
      // Independent check of the convention on one element pair: (x0, x1) of pair 1 of head 2, row 5.
      const int64_t r = 5, h = 2, m = 1;
      const size_t at = size_t(r * ld + h * d + 2 * m);
      const double c = tc[size_t(r * d / 2 + m)], s = ts[size_t(r * d / 2 + m)];
      EXPECT_NEAR(got[at], c * base[at] - s * base[at + 1], 1e-6);
      EXPECT_NEAR(got[at + 1], s * base[at] + c * base[at + 1], 1e-6);
    });
  }
}

// ---- LayerNorm + modulation ----

TEST(ElementwiseLayerNorm, ModulateMatchesDoubleReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 20;
  for (int64_t dim : {3072, 64, 37, 1})
    for (int64_t rows : {1, 5, 33})
      for (float offset : {0.0f, 40.0f}) {  // a large common offset tests the precision of the mean
        const int64_t ldx = dim + 3, ldy = dim + 5;
        std::vector<float> x(size_t(rows * ldx)), shift(static_cast<size_t>(dim)), scale(static_cast<size_t>(dim));
        fill_normal(x, seed++, 2.0f, offset);
        fill_normal(shift, seed++, 0.5f);
        fill_normal(scale, seed++, 0.5f);
        std::vector<float> want(size_t(rows * ldy), kSentinel);
        fx::cpu::layernorm_modulate_reference(x.data(), rows, dim, ldx, shift.data(), scale.data(), 1e-6f,
                                              want.data(), ldy);
        PathLoop::run([&] {
          std::vector<float> got(size_t(rows * ldy), kSentinel);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < dim; ++c) got[size_t(r * ldy + c)] = kNaN;
          fx::cpu::layernorm_modulate(x.data(), rows, dim, ldx, shift.data(), scale.data(), 1e-6f, got.data(), ldy,
                                      pool);
          const Stats st = diff(got, want, rows, dim, ldy);
          if (dim == 1) {
            // One element: x − mean is 0, so the output is the shift alone.
            EXPECT_LE(st.max_abs, 1e-6);
          } else {
            EXPECT_LE(st.rel_l2, 1e-5) << "dim " << dim << " rows " << rows << " offset " << offset;
            EXPECT_LE(st.max_abs, 3e-5) << "dim " << dim << " rows " << rows << " offset " << offset;
          }
          EXPECT_TRUE(padding_intact(got, rows, dim, ldy));
        });
      }
}

TEST(ElementwiseLayerNorm, UsesBiasedVarianceAndEps) {
  // x = (−1, 1): mean 0, biased variance 1 (unbiased would be 2). With eps 1e-6 the normalised values
  // are ±1/sqrt(1 + 1e-6).
  const float x[2] = {-1.0f, 1.0f}, zero[2] = {0.0f, 0.0f};
  PathLoop::run([&] {
    float y[2] = {kNaN, kNaN};
    fx::cpu::layernorm_modulate(x, 1, 2, 2, zero, zero, 1e-6f, y, 2);
    EXPECT_NEAR(y[1], 1.0 / std::sqrt(1.0 + 1e-6), 1e-7);
    EXPECT_NEAR(y[0], -1.0 / std::sqrt(1.0 + 1e-6), 1e-7);
  });
}

// ---- RMSNorm over heads ----

TEST(ElementwiseRmsNorm, HeadsMatchDoubleReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 40;
  for (int64_t d : {128, 64, 20, 3})
    for (int64_t rows : {1, 9, 200}) {
      const int64_t heads = 3, ld = 3 * heads * d + 2;  // q of a fused row; k/v columns must not change
      std::vector<float> base(size_t(rows * ld)), w(static_cast<size_t>(d));
      fill_normal(base, seed++, 1.5f);
      fill_normal(w, seed++, 0.3f, 1.0f);
      std::vector<float> want = base;
      fx::cpu::rms_norm_heads_reference(want.data(), rows, ld, heads, d, w.data(), 1e-6f);
      PathLoop::run([&] {
        std::vector<float> got = base;
        fx::cpu::rms_norm_heads(got.data(), rows, ld, heads, d, w.data(), 1e-6f, pool);
        const Stats st = diff(got, want, rows, heads * d, ld);
        EXPECT_LE(st.rel_l2, 1e-6) << "d " << d << " rows " << rows;
        EXPECT_LE(st.max_abs, 5e-6) << "d " << d << " rows " << rows;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = heads * d; c < ld; ++c) ASSERT_EQ(got[size_t(r * ld + c)], base[size_t(r * ld + c)]);
      });
    }
  // Independent check of one head: rms of (3, 4) is sqrt(12.5).
  const float w2[2] = {2.0f, 0.5f};
  PathLoop::run([&] {
    float x[2] = {3.0f, 4.0f};
    fx::cpu::rms_norm_heads(x, 1, 2, 1, 2, w2, 1e-6f);
    const double r = 1.0 / std::sqrt(12.5 + 1e-6);
    EXPECT_NEAR(x[0], 3.0 * r * 2.0, 1e-6);
    EXPECT_NEAR(x[1], 4.0 * r * 0.5, 1e-6);
  });
}

// ---- activations ----

double gelu_tanh_formula(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

TEST(ElementwiseGelu, TanhFormMatchesFormulaAndIsNotErfForm) {
  std::vector<float> x;
  for (int i = -4000; i <= 4000; ++i) x.push_back(float(i) * 0.0025f);  // dense over [-10, 10]
  std::mt19937 rng(5);
  std::normal_distribution<float> wide(0.0f, 30.0f);
  for (int i = 0; i < 5000; ++i) x.push_back(wide(rng));
  for (float v : {0.0f, -0.0f, 1e-6f, -1e-6f, 80.0f, -80.0f, 1e3f, -1e3f, 1e20f, -1e20f}) x.push_back(v);
  double worst_erf_gap = 0.0;
  for (float v : x) worst_erf_gap = std::max(worst_erf_gap, std::fabs(gelu_tanh_formula(v) - gelu_erf(v)));
  EXPECT_GT(worst_erf_gap, 1e-4);  // the two GELUs differ by far more than the tolerance below

  fx::ThreadPool pool(2);
  PathLoop::run([&] {
    std::vector<float> y = x;
    fx::cpu::gelu_tanh(y.data(), int64_t(y.size()), pool);
    double worst = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double want = gelu_tanh_formula(x[i]);
      const double err = std::fabs(double(y[i]) - want) / std::max(1.0, std::fabs(want));
      ASSERT_FALSE(std::isnan(y[i])) << x[i];
      worst = std::max(worst, err);
    }
    EXPECT_LE(worst, 2e-6);
    EXPECT_LT(worst * 50.0, worst_erf_gap);

    std::vector<float> r = x;
    fx::cpu::gelu_tanh_reference(r.data(), int64_t(r.size()));
    const Stats st = diff(y, r, 1, int64_t(x.size()), int64_t(x.size()));
    EXPECT_LE(st.rel_l2, 1e-6);
  });
}

TEST(ElementwiseSilu, MatchesReference) {
  std::vector<float> x(100003);
  fill_normal(x, 60, 6.0f);
  x[0] = 90.0f;
  x[1] = -90.0f;
  x[2] = 0.0f;
  std::vector<float> want = x;
  fx::cpu::silu_reference(want.data(), int64_t(want.size()));
  fx::ThreadPool pool(3);
  PathLoop::run([&] {
    std::vector<float> got = x;
    fx::cpu::silu(got.data(), int64_t(got.size()), pool);
    const Stats st = diff(got, want, 1, int64_t(x.size()), int64_t(x.size()));
    EXPECT_LE(st.rel_l2, 1e-6);
    EXPECT_LE(st.max_abs, 1e-5);
    // spot values from the definition x·σ(x)
    EXPECT_NEAR(got[5], double(x[5]) / (1.0 + std::exp(-double(x[5]))), 1e-5);
  });
}

TEST(ElementwiseGatedAdd, MatchesReference) {
  fx::ThreadPool pool(2);
  for (int64_t dim : {3072, 45}) {
    const int64_t rows = 70, ldx = dim + 6, ldy = dim + 1;
    std::vector<float> x(size_t(rows * ldx)), y(size_t(rows * ldy)), g(static_cast<size_t>(dim));
    fill_normal(x, 70, 1.0f);
    fill_normal(y, 71, 1.0f);
    fill_normal(g, 72, 0.5f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = dim; c < ldx; ++c) x[size_t(r * ldx + c)] = kSentinel;
    std::vector<float> want = x;
    fx::cpu::gated_add_reference(want.data(), rows, dim, ldx, g.data(), y.data(), ldy);
    PathLoop::run([&] {
      std::vector<float> got = x;
      fx::cpu::gated_add(got.data(), rows, dim, ldx, g.data(), y.data(), ldy, pool);
      const Stats st = diff(got, want, rows, dim, ldx);
      EXPECT_LE(st.rel_l2, 1e-6);
      EXPECT_LE(st.max_abs, 1e-6);
      EXPECT_TRUE(padding_intact(got, rows, dim, ldx));
    });
  }
}

// ---- text-encoder kernels ----

TEST(ElementwiseLayerNormAffine, MatchesDoubleReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 900;
  for (int64_t dim : {768, 32, 37, 1})
    for (int64_t rows : {1, 5, 77})
      for (float offset : {0.0f, 40.0f}) {
        const int64_t ldx = dim + 3, ldy = dim + 5;
        std::vector<float> x(size_t(rows * ldx)), w(static_cast<size_t>(dim)), b(static_cast<size_t>(dim));
        fill_normal(x, seed++, 2.0f, offset);
        fill_normal(w, seed++, 0.5f, 1.0f);
        fill_normal(b, seed++, 0.5f);
        std::vector<float> want(size_t(rows * ldy), kSentinel);
        fx::cpu::layernorm_affine_reference(x.data(), rows, dim, ldx, w.data(), b.data(), 1e-5f, want.data(), ldy);
        PathLoop::run([&] {
          std::vector<float> got(size_t(rows * ldy), kSentinel);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < dim; ++c) got[size_t(r * ldy + c)] = kNaN;
          fx::cpu::layernorm_affine(x.data(), rows, dim, ldx, w.data(), b.data(), 1e-5f, got.data(), ldy, pool);
          const Stats st = diff(got, want, rows, dim, ldy);
          if (dim == 1) {
            EXPECT_LE(st.max_abs, 1e-6);  // x − mean = 0: the bias alone
          } else {
            EXPECT_LE(st.rel_l2, 1e-5) << "dim " << dim << " rows " << rows << " offset " << offset;
            EXPECT_LE(st.max_abs, 3e-5) << "dim " << dim << " rows " << rows << " offset " << offset;
          }
          EXPECT_TRUE(padding_intact(got, rows, dim, ldy));
        });
      }
  // Independent values: x = (−1, 1) has mean 0 and biased variance 1; weight (2, 3), bias (0.5, −0.25).
  const float x2[2] = {-1.0f, 1.0f}, w2[2] = {2.0f, 3.0f}, b2[2] = {0.5f, -0.25f};
  PathLoop::run([&] {
    float y[2] = {kNaN, kNaN};
    fx::cpu::layernorm_affine(x2, 1, 2, 2, w2, b2, 1e-5f, y, 2);
    const double n = 1.0 / std::sqrt(1.0 + 1e-5);
    EXPECT_NEAR(y[0], -n * 2.0 + 0.5, 1e-6);
    EXPECT_NEAR(y[1], n * 3.0 - 0.25, 1e-6);
  });
}

TEST(ElementwiseRmsNormRows, MatchesDoubleReferenceInAndOutOfPlace) {
  fx::ThreadPool pool(2);
  uint32_t seed = 950;
  for (int64_t dim : {4096, 32, 45, 3})
    for (int64_t rows : {1, 9, 70}) {
      const int64_t ldx = dim + 2, ldy = dim + 7;
      std::vector<float> x(size_t(rows * ldx)), w(static_cast<size_t>(dim));
      fill_normal(x, seed++, 1.5f, 0.3f);
      fill_normal(w, seed++, 0.3f, 1.0f);
      std::vector<float> want(size_t(rows * ldy), kSentinel);
      fx::cpu::rms_norm_reference(x.data(), rows, dim, ldx, w.data(), 1e-6f, want.data(), ldy);
      PathLoop::run([&] {
        std::vector<float> got(size_t(rows * ldy), kSentinel);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < dim; ++c) got[size_t(r * ldy + c)] = kNaN;
        fx::cpu::rms_norm(x.data(), rows, dim, ldx, w.data(), 1e-6f, got.data(), ldy, pool);
        Stats st = diff(got, want, rows, dim, ldy);
        EXPECT_LE(st.rel_l2, 1e-6) << "dim " << dim << " rows " << rows;
        EXPECT_LE(st.max_abs, 1e-5) << "dim " << dim << " rows " << rows;
        EXPECT_TRUE(padding_intact(got, rows, dim, ldy));
        // In place (y = x, same stride): same values.
        std::vector<float> inplace(size_t(rows * ldy), kSentinel);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < dim; ++c) inplace[size_t(r * ldy + c)] = x[size_t(r * ldx + c)];
        fx::cpu::rms_norm(inplace.data(), rows, dim, ldy, w.data(), 1e-6f, inplace.data(), ldy, pool);
        st = diff(inplace, want, rows, dim, ldy);
        EXPECT_LE(st.rel_l2, 1e-6) << "in place, dim " << dim << " rows " << rows;
      });
    }
  // Independent values: rms of (3, 4) is sqrt(12.5); no mean subtraction (the mean 3.5 is kept).
  const float x2[2] = {3.0f, 4.0f}, w2[2] = {2.0f, 0.5f};
  PathLoop::run([&] {
    float y[2] = {kNaN, kNaN};
    fx::cpu::rms_norm(x2, 1, 2, 2, w2, 1e-6f, y, 2);
    const double r = 1.0 / std::sqrt(12.5 + 1e-6);
    EXPECT_NEAR(y[0], 3.0 * r * 2.0, 1e-6);
    EXPECT_NEAR(y[1], 4.0 * r * 0.5, 1e-6);
  });
}

TEST(ElementwiseQuickGelu, MatchesFormula) {
  std::vector<float> x(50001);
  fill_normal(x, 980, 5.0f);
  for (float v : {0.0f, -0.0f, 90.0f, -90.0f, 1e-6f, 1.0f, -1.0f}) x.push_back(v);
  std::vector<float> want = x;
  fx::cpu::quick_gelu_reference(want.data(), int64_t(want.size()));
  fx::ThreadPool pool(2);
  PathLoop::run([&] {
    std::vector<float> got = x;
    fx::cpu::quick_gelu(got.data(), int64_t(got.size()), pool);
    const Stats st = diff(got, want, 1, int64_t(x.size()), int64_t(x.size()));
    EXPECT_LE(st.rel_l2, 1e-6);
    EXPECT_LE(st.max_abs, 1e-5);
    // The formula x·σ(1.702x) written out here, and not x·σ(x) (SiLU) nor the tanh GELU.
    for (size_t i : {size_t(3), size_t(50000), x.size() - 2, x.size() - 1}) {
      const double v = x[i];
      EXPECT_NEAR(got[i], v / (1.0 + std::exp(-1.702 * v)), 1e-5 * std::max(1.0, std::fabs(v))) << v;
    }
    EXPECT_NEAR(got[x.size() - 2], 1.0 / (1.0 + std::exp(-1.702)), 1e-6);  // 0.845796...
  });
}

TEST(ElementwiseAddMul, MatchReference) {
  fx::ThreadPool pool(2);
  for (int64_t n : {int64_t(1), int64_t(15), int64_t(4096 * 7 + 3)}) {
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    fill_normal(x, 990 + uint32_t(n), 2.0f);
    fill_normal(y, 991 + uint32_t(n), 2.0f);
    std::vector<float> want_add = x, want_mul = x;
    fx::cpu::add_inplace_reference(want_add.data(), y.data(), n);
    fx::cpu::mul_inplace_reference(want_mul.data(), y.data(), n);
    PathLoop::run([&] {
      std::vector<float> a = x, m = x;
      fx::cpu::add_inplace(a.data(), y.data(), n, pool);
      fx::cpu::mul_inplace(m.data(), y.data(), n, pool);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(a[size_t(i)], want_add[size_t(i)]) << i;  // one f32 rounding either way: bit-identical
        ASSERT_EQ(m[size_t(i)], want_mul[size_t(i)]) << i;
        ASSERT_EQ(a[size_t(i)], x[size_t(i)] + y[size_t(i)]);
      }
    });
  }
}

// ---- paths, tails, edges ----

// The path each ISA level takes: the widest one at or below the cap. On an AVX2 machine this is what
// makes the AVX2 level of every PathLoop above really run the AVX2 bodies.
TEST(ElementwisePaths, EachIsaLevelTakesTheWidestPath) {
  fx::testing::for_each_isa_level([] {
    const fx::IsaLevel level = fx::isa_level();
    const char* want = level >= fx::IsaLevel::Avx512 ? "avx512" : level >= fx::IsaLevel::Avx2 ? "avx2" : "portable";
    EXPECT_STREQ(fx::cpu::elementwise_path_name(), want);
    EXPECT_EQ(fx::cpu::elementwise_uses_avx512(), level >= fx::IsaLevel::Avx512);
  });
#if defined(__x86_64__)
  if (fx::isa_level_machine() >= fx::IsaLevel::Avx2) {
    fx::ScopedIsaCap cap(fx::IsaLevel::Avx2);
    EXPECT_STREQ(fx::cpu::elementwise_path_name(), "avx2");
  }
#endif
}

// Every length from 1 to 40 (every tail of the 8- and 16-lane loops, and one to five full vectors
// before it) for each kernel, against its reference, with outputs poisoned with NaN and a sentinel
// past the end that must survive.
TEST(ElementwiseTails, EveryLengthUpTo40MatchesReference) {
  fx::ThreadPool pool(2);
  constexpr int64_t kPad = 9;  // sentinel floats after each row / range
  auto poisoned = [](int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> v(size_t(rows * ld), kSentinel);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) v[size_t(r * ld + c)] = kNaN;
    return v;
  };
  auto expect_close = [](const std::vector<float>& got, const std::vector<float>& want, int64_t rows, int64_t cols,
                         int64_t ld, double tol, const char* what, int64_t n) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < ld; ++c) {
        const size_t i = size_t(r * ld + c);
        if (c >= cols) {
          ASSERT_EQ(got[i], kSentinel) << what << " n " << n << " wrote past the end at " << c;
          continue;
        }
        ASSERT_LE(std::fabs(double(got[i]) - double(want[i])), tol * std::max(1.0, std::fabs(double(want[i]))))
            << what << " n " << n << " at " << r << "," << c << ": " << got[i] << " vs " << want[i];
      }
  };
  uint32_t seed = 3000;
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<float> a(size_t(3 * (n + kPad))), b(a.size()), w(size_t(2 * n)), bias(static_cast<size_t>(n));
    fill_normal(a, seed++, 2.0f, 0.5f);
    fill_normal(b, seed++, 1.0f);
    fill_normal(w, seed++, 0.5f, 1.0f);
    fill_normal(bias, seed++, 0.5f);
    const int64_t ld = n + kPad;
    PathLoop::run([&] {
      // Flat activations and add/mul over n elements (sentinels after n).
      using Flat = void (*)(float*, int64_t, fx::ThreadPool&);
      using FlatRef = void (*)(float*, int64_t);
      const std::pair<Flat, FlatRef> flat[] = {{fx::cpu::gelu_tanh, fx::cpu::gelu_tanh_reference},
                                               {fx::cpu::silu, fx::cpu::silu_reference},
                                               {fx::cpu::quick_gelu, fx::cpu::quick_gelu_reference}};
      const char* flat_names[] = {"gelu_tanh", "silu", "quick_gelu"};
      for (int f = 0; f < 3; ++f) {
        std::vector<float> got(size_t(ld), kSentinel), want(size_t(ld), kSentinel);
        std::copy(a.begin(), a.begin() + n, got.begin());
        std::copy(a.begin(), a.begin() + n, want.begin());
        flat[f].first(got.data(), n, pool);
        flat[f].second(want.data(), n);
        expect_close(got, want, 1, n, ld, 2e-6, flat_names[f], n);
      }
      {
        std::vector<float> add(size_t(ld), kSentinel), mul(size_t(ld), kSentinel);
        std::copy(a.begin(), a.begin() + n, add.begin());
        std::copy(a.begin(), a.begin() + n, mul.begin());
        std::vector<float> want_add = add, want_mul = mul;
        fx::cpu::add_inplace(add.data(), b.data(), n, pool);
        fx::cpu::mul_inplace(mul.data(), b.data(), n, pool);
        fx::cpu::add_inplace_reference(want_add.data(), b.data(), n);
        fx::cpu::mul_inplace_reference(want_mul.data(), b.data(), n);
        expect_close(add, want_add, 1, n, ld, 0.0, "add_inplace", n);
        expect_close(mul, want_mul, 1, n, ld, 0.0, "mul_inplace", n);
      }
      // Row kernels: 3 rows of n with padding between rows.
      {
        std::vector<float> got = poisoned(3, n, ld), want = poisoned(3, n, ld);
        fx::cpu::layernorm_modulate(a.data(), 3, n, ld, bias.data(), w.data(), 1e-6f, got.data(), ld, pool);
        fx::cpu::layernorm_modulate_reference(a.data(), 3, n, ld, bias.data(), w.data(), 1e-6f, want.data(), ld);
        expect_close(got, want, 3, n, ld, 3e-5, "layernorm_modulate", n);
        got = poisoned(3, n, ld);
        want = poisoned(3, n, ld);
        fx::cpu::layernorm_affine(a.data(), 3, n, ld, w.data(), bias.data(), 1e-5f, got.data(), ld, pool);
        fx::cpu::layernorm_affine_reference(a.data(), 3, n, ld, w.data(), bias.data(), 1e-5f, want.data(), ld);
        expect_close(got, want, 3, n, ld, 3e-5, "layernorm_affine", n);
        got = poisoned(3, n, ld);
        want = poisoned(3, n, ld);
        fx::cpu::rms_norm(a.data(), 3, n, ld, w.data(), 1e-6f, got.data(), ld, pool);
        fx::cpu::rms_norm_reference(a.data(), 3, n, ld, w.data(), 1e-6f, want.data(), ld);
        expect_close(got, want, 3, n, ld, 5e-6, "rms_norm", n);
        got = a;
        want = a;
        for (int64_t r = 0; r < 3; ++r)
          for (int64_t c = n; c < ld; ++c) got[size_t(r * ld + c)] = want[size_t(r * ld + c)] = kSentinel;
        fx::cpu::gated_add(got.data(), 3, n, ld, bias.data(), b.data(), ld, pool);
        fx::cpu::gated_add_reference(want.data(), 3, n, ld, bias.data(), b.data(), ld);
        expect_close(got, want, 3, n, ld, 1e-6, "gated_add", n);
      }
      // Per-head kernels on 3 rows of one head of n (RMSNorm) or of 2n = n pairs (RoPE), in place.
      {
        std::vector<float> got = a, want = a;
        for (int64_t r = 0; r < 3; ++r)
          for (int64_t c = n; c < ld; ++c) got[size_t(r * ld + c)] = want[size_t(r * ld + c)] = kSentinel;
        fx::cpu::rms_norm_heads(got.data(), 3, ld, 1, n, w.data(), 1e-6f, pool);
        fx::cpu::rms_norm_heads_reference(want.data(), 3, ld, 1, n, w.data(), 1e-6f);
        expect_close(got, want, 3, n, ld, 5e-6, "rms_norm_heads", n);
        const int64_t ld2 = 2 * n + kPad;
        std::vector<float> x(size_t(3 * ld2), kSentinel), c(size_t(3 * n)), sn(size_t(3 * n));
        for (int64_t r = 0; r < 3; ++r)
          for (int64_t i = 0; i < 2 * n; ++i) x[size_t(r * ld2 + i)] = b[size_t((r * 2 * n + i) % b.size())];
        for (size_t i = 0; i < c.size(); ++i) {
          const double angle = 0.37 * double(i) + 0.1;
          c[i] = float(std::cos(angle));
          sn[i] = float(std::sin(angle));
        }
        std::vector<float> rot = x, rot_want = x;
        fx::cpu::rope_apply(rot.data(), 3, ld2, 1, 2 * n, c.data(), sn.data(), pool);
        fx::cpu::rope_apply_reference(rot_want.data(), 3, ld2, 1, 2 * n, c.data(), sn.data());
        expect_close(rot, rot_want, 3, 2 * n, ld2, 1e-6, "rope_apply", n);
      }
    });
  }
}

// The activations' exp edges on every path: NaN stays NaN; inputs far past the exp clamps give the
// limits (x for large x, 0 for very negative x) rather than inf or NaN.
TEST(ElementwiseActivations, NanStaysNanAndHugeInputsGiveTheLimits) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {kNaN, 88.0f, 89.0f, 100.0f, 1e30f, -88.0f, -89.0f, -100.0f, -1e30f, 0.0f, kNaN};
  fx::ThreadPool pool(2);
  PathLoop::run([&] {
    using Fn = void (*)(float*, int64_t, fx::ThreadPool&);
    for (Fn fn : {Fn(fx::cpu::gelu_tanh), Fn(fx::cpu::silu), Fn(fx::cpu::quick_gelu)}) {
      std::vector<float> y = x;
      fn(y.data(), int64_t(y.size()), pool);
      EXPECT_TRUE(std::isnan(y[0]));
      EXPECT_TRUE(std::isnan(y[10]));
      for (size_t i = 1; i < 5; ++i) EXPECT_NEAR(y[i], x[i], 1e-6 * x[i]) << x[i];
      for (size_t i = 5; i < 9; ++i) {
        EXPECT_NE(std::fabs(y[i]), inf) << x[i];
        EXPECT_LE(std::fabs(y[i]), 1e-8) << x[i];  // x·e^x: at most 89·e^-88 for these
      }
      EXPECT_EQ(y[9], 0.0f);
    }
  });
}

}  // namespace
