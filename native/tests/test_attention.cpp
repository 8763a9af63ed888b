// CPU attention against its double-precision two-pass reference: q/k/v read through strides out of a
// fused [L, 3·H·D] projection, output written into a wider buffer whose padding must survive, output
// poisoned with NaN beforehand so an unwritten element can never pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_support.h"
#include "core/cancel.h"
#include "core/error.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/exp_edges.h"

namespace {

using fx::cpu::AttentionOperand;
using fx::cpu::AttentionOutput;
using fx::cpu::AttentionShape;

constexpr float kSentinel = -7.25f;  // padding value that no kernel result should produce by chance
const float kNaN = std::numeric_limits<float>::quiet_NaN();

void fill_normal(std::vector<float>& v, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  for (float& x : v) x = dist(rng);
}

// A fused projection buffer [batch, seq, 3·H·D + pad] with q, k, v side by side in each row, and an
// output buffer [batch, seq_q, H·D + pad] whose pad columns hold kSentinel.
struct Problem {
  AttentionShape shape;
  std::vector<float> qbuf, kvbuf, bias;
  AttentionOperand q, k, v;
  int64_t out_row = 0;  // output row stride (with padding)

  std::vector<float> make_output() const {
    std::vector<float> out(size_t(shape.batch * shape.seq_q * out_row), kSentinel);
    const int64_t width = shape.heads * shape.head_dim;
    for (int64_t r = 0; r < shape.batch * shape.seq_q; ++r)
      for (int64_t c = 0; c < width; ++c) out[size_t(r * out_row + c)] = kNaN;
    return out;
  }
  AttentionOutput output(std::vector<float>& out) const {
    return AttentionOutput{out.data(), shape.seq_q * out_row, out_row, shape.head_dim};
  }
};

// seq_q == seq_kv: q, k and v all come from one fused buffer. Otherwise q has its own buffer (with
// its own padding) and k/v share the fused one.
Problem make_problem(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_kv, int64_t d, uint32_t seed,
                     bool with_bias = false, float qk_std = 1.0f) {
  Problem p;
  p.shape.batch = batch;
  p.shape.heads = heads;
  p.shape.seq_q = seq_q;
  p.shape.seq_kv = seq_kv;
  p.shape.head_dim = d;
  p.shape.scale = float(1.0 / std::sqrt(double(d)));
  const int64_t hd = heads * d;
  const int64_t fused_row = 3 * hd + 5;
  p.kvbuf.resize(size_t(batch * seq_kv * fused_row));
  fill_normal(p.kvbuf, seed, qk_std);
  // v with unit spread whatever the q/k spread, so outputs stay O(1).
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  for (int64_t r = 0; r < batch * seq_kv; ++r)
    for (int64_t c = 0; c < hd; ++c) p.kvbuf[size_t(r * fused_row + 2 * hd + c)] = unit(rng);
  p.k = AttentionOperand{p.kvbuf.data() + hd, seq_kv * fused_row, fused_row, d};
  p.v = AttentionOperand{p.kvbuf.data() + 2 * hd, seq_kv * fused_row, fused_row, d};
  if (seq_q == seq_kv) {
    p.q = AttentionOperand{p.kvbuf.data(), seq_kv * fused_row, fused_row, d};
  } else {
    const int64_t q_row = hd + 3;
    p.qbuf.resize(size_t(batch * seq_q * q_row));
    fill_normal(p.qbuf, seed + 2, qk_std);
    p.q = AttentionOperand{p.qbuf.data(), seq_q * q_row, q_row, d};
  }
  if (with_bias) {
    p.bias.resize(size_t(heads * seq_q * seq_kv));
    fill_normal(p.bias, seed + 3, 2.0f);
    p.shape.bias = p.bias.data();
  }
  p.out_row = hd + 7;
  return p;
}

struct Diff {
  double rel_l2 = std::numeric_limits<double>::quiet_NaN();
  double max_abs = std::numeric_limits<double>::quiet_NaN();
  bool all_finite = false;
  bool padding_intact = false;
};

// Compares the H·D valid columns of each row; NaN anywhere makes rel_l2 NaN, which fails every <=.
Diff compare(const Problem& p, const std::vector<float>& got, const std::vector<float>& want) {
  Diff diff;
  const int64_t width = p.shape.heads * p.shape.head_dim;
  double num = 0.0, den = 0.0, max_abs = 0.0;
  bool finite = true, intact = true;
  for (int64_t r = 0; r < p.shape.batch * p.shape.seq_q; ++r) {
    for (int64_t c = 0; c < p.out_row; ++c) {
      const size_t i = size_t(r * p.out_row + c);
      if (c >= width) {
        intact = intact && got[i] == kSentinel;
        continue;
      }
      finite = finite && std::isfinite(got[i]);
      const double e = double(got[i]) - double(want[i]);
      num += e * e;
      den += double(want[i]) * double(want[i]);
      max_abs = std::max(max_abs, std::fabs(e));
      if (std::isnan(e)) max_abs = e;
    }
  }
  diff.rel_l2 = std::sqrt(num / std::max(den, 1e-300));
  diff.max_abs = max_abs;
  diff.all_finite = finite;
  diff.padding_intact = intact;
  return diff;
}

std::string describe(const Problem& p) {
  const auto& s = p.shape;
  return "batch " + std::to_string(s.batch) + " heads " + std::to_string(s.heads) + " seq_q " +
         std::to_string(s.seq_q) + " seq_kv " + std::to_string(s.seq_kv) + " head_dim " +
         std::to_string(s.head_dim) + (s.bias ? " with bias" : "") + (s.causal ? " causal" : "");
}

// Runs every path this machine has (the ISA capped at each level) against the reference with f32 tolerances.
void check_against_reference(const Problem& p, fx::ThreadPool& pool, double tol_rel = 1e-5, double tol_abs = 2e-5) {
  std::vector<float> want = p.make_output();
  fx::cpu::attention_reference(p.shape, p.q, p.k, p.v, p.output(want));
  fx::testing::for_each_isa_level([&] {
    std::vector<float> got = p.make_output();
    fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
    const Diff d = compare(p, got, want);
    const char* name = fx::cpu::attention_path_name(p.shape.head_dim);
    EXPECT_TRUE(d.all_finite) << name << " " << describe(p);
    EXPECT_TRUE(d.padding_intact) << name << " " << describe(p);
    EXPECT_LE(d.rel_l2, tol_rel) << name << " " << describe(p);
    EXPECT_LE(d.max_abs, tol_abs) << name << " " << describe(p);
  });
}

TEST(AttentionCpu, FluxLikeFusedQkvMatchesReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 100;
  for (int64_t d : {32, 128})
    for (int64_t heads : {2, 3, 4})
      for (int64_t seq : {1, 7, 100, 333}) {
        if (heads == 3 && seq == 333 && d == 128) continue;  // keeps the double reference quick
        check_against_reference(make_problem(1, heads, seq, seq, d, seed++), pool);
      }
}

// A set cancel flag stops the kernel before its tiles (core/cancel.h): on every thread of the pool,
// nothing is written; the model around it reports the cancel. Without the flag it runs as before.
TEST(AttentionCpu, ACancelledCallWritesNothingOnAnyThread) {
  fx::ThreadPool pool(3);
  const Problem p = make_problem(1, 4, 200, 200, 64, 11);
  volatile int32_t flag = 1;
  std::vector<float> got = p.make_output();
  {
    const fx::CancelScope scope(&flag);
    fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
    EXPECT_THROW(scope.check("attention"), fx::Error);
  }
  const int64_t width = p.shape.heads * p.shape.head_dim;
  for (int64_t r = 0; r < p.shape.seq_q; ++r)
    for (int64_t c = 0; c < width; ++c) ASSERT_TRUE(std::isnan(got[size_t(r * p.out_row + c)])) << r << ", " << c;
  EXPECT_FALSE(fx::cancel_requested());  // the scope ended
  flag = 0;
  const fx::CancelScope clear(&flag);
  check_against_reference(p, pool);
}

TEST(AttentionCpu, BatchOfTwoUsesBatchStrides) {
  fx::ThreadPool pool(3);
  check_against_reference(make_problem(2, 2, 65, 65, 64, 7), pool);
  check_against_reference(make_problem(2, 3, 33, 90, 16, 8), pool);
}

TEST(AttentionCpu, HeadDimsFromTestSizesToVae) {
  fx::ThreadPool pool(2);
  uint32_t seed = 200;
  // 6 only has the portable path; 8, 24 and 40 have AVX2 but not AVX-512 (24 and 40 end in a half
  // 16-column P·V block there); 16/48/80 exercise the partial-64 column tails of the AVX-512 path; 64 is
  // CLIP/T5; 512 the VAE's single head.
  for (int64_t d : {6, 8, 16, 24, 40, 48, 64, 80})
    for (auto [sq, skv] : {std::pair<int64_t, int64_t>{37, 91}, {130, 5}, {1, 300}, {64, 64}})
      check_against_reference(make_problem(1, 2, sq, skv, d, seed++), pool);
  check_against_reference(make_problem(1, 1, 200, 200, 512, seed++), pool);
  check_against_reference(make_problem(1, 1, 45, 77, 512, seed++), pool);
}

TEST(AttentionCpu, AdditiveBiasT5) {
  fx::ThreadPool pool(2);
  for (int64_t d : {64, 6}) {
    Problem p = make_problem(1, 3, 50, 50, d, 300 + uint32_t(d), true);
    p.shape.scale = 1.0f;  // T5 folds the scale into its weights
    check_against_reference(p, pool);
  }
  Problem cross = make_problem(2, 2, 19, 141, 32, 310, true);
  check_against_reference(cross, pool);
}

// CLIP's causal mask: query i sees keys 0..i. Lengths around the 16- and 32-row strips (AVX2, AVX-512)
// and the 128-key blocks (and several query tiles), with and without a bias, on every path.
TEST(AttentionCpu, CausalMaskMatchesReference) {
  fx::ThreadPool pool(2);
  uint32_t seed = 800;
  for (int64_t d : {64, 24, 16, 6})
    for (int64_t seq : {1, 2, 15, 17, 31, 33, 77, 129, 300}) {
      Problem p = make_problem(2, 3, seq, seq, d, seed++, seq == 77);
      p.shape.causal = true;
      check_against_reference(p, pool);
    }
  // Independent of the reference: row 0 sees only key 0, so its output is v[0] exactly (up to the
  // rounding of p/l = 1); and the last row of a causal pass equals the unmasked result for that row.
  Problem p = make_problem(1, 2, 150, 150, 32, 850);
  p.shape.causal = true;
  std::vector<float> got = p.make_output();
  fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t c = 0; c < 32; ++c) EXPECT_NEAR(got[size_t(h * 32 + c)], p.v.data[h * 32 + c], 1e-6);
  Problem full = p;
  full.shape.causal = false;
  std::vector<float> unmasked = full.make_output();
  fx::cpu::attention(full.shape, full.q, full.k, full.v, full.output(unmasked), pool);
  const size_t last = size_t(149 * p.out_row);
  for (int64_t c = 0; c < 64; ++c) EXPECT_NEAR(got[last + c], unmasked[last + c], 1e-5);
  // ... and row 1 differs from the unmasked one (the mask does something).
  double gap = 0.0;
  for (int64_t c = 0; c < 64; ++c) gap += std::fabs(double(got[size_t(p.out_row) + c]) - unmasked[size_t(p.out_row) + c]);
  EXPECT_GT(gap, 1e-2);
}

TEST(AttentionCpu, SameBitsForAnyThreadCount) {
  // Rows are computed independently of how query tiles are cut, so the thread count (which changes
  // the tiling) must not change a single bit.
  const Problem p = make_problem(1, 3, 150, 150, 128, 400);
  std::vector<float> first = p.make_output();
  {
    fx::ThreadPool one(1);
    fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(first), one);
  }
  for (int threads : {2, 3, 5}) {
    fx::ThreadPool pool(threads);
    std::vector<float> again = p.make_output();
    fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(again), pool);
    for (size_t i = 0; i < first.size(); ++i)
      ASSERT_EQ(std::memcmp(&first[i], &again[i], sizeof(float)), 0) << "threads " << threads << " at " << i;
  }
}

TEST(AttentionCpu, HugeLogitsStayFinite) {
  // q and k with spread 100 give scores q·k/sqrt(d) with spread 1e4: exp of an unshifted score would
  // overflow, and a lost running max would give inf/inf = NaN.
  fx::ThreadPool pool(2);
  for (int64_t d : {16, 6, 128, 8, 24}) {
    Problem p = make_problem(1, 2, 70, 200, d, 500 + uint32_t(d), false, 100.0f);
    std::vector<float> want = p.make_output();
    fx::cpu::attention_reference(p.shape, p.q, p.k, p.v, p.output(want));
    fx::testing::for_each_isa_level([&] {
      std::vector<float> got = p.make_output();
      fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
      const Diff diff = compare(p, got, want);
      EXPECT_TRUE(diff.all_finite) << "d " << d << " " << fx::cpu::attention_path_name(d);
      EXPECT_TRUE(diff.padding_intact);
      // f32 dot products of ±1e4 carry absolute errors ~1e-3, which can move near-ties of the almost
      // one-hot softmax; the outputs still agree far better than the spread of v (1).
      EXPECT_LE(diff.rel_l2, 1e-2) << "d " << d;
    });
  }
  // The same through the bias: ±1e4 logits added after the scale.
  Problem p = make_problem(1, 2, 40, 60, 32, 520, true);
  for (float& b : p.bias) b *= 5e3f;
  check_against_reference(p, pool, 1e-4, 1e-3);
}

TEST(AttentionCpu, FullyMaskedRowsGiveZerosPartlyMaskedMatchReference) {
  fx::ThreadPool pool(2);
  Problem p = make_problem(1, 2, 40, 70, 32, 600, true);
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t j = 0; j < 70; ++j) p.bias[size_t((h * 40 + 3) * 70 + j)] = -inf;           // row 3: all masked
    for (int64_t j = 0; j < 70; j += 2) p.bias[size_t((h * 40 + 10) * 70 + j)] = -inf;       // row 10: half
    for (int64_t j = 0; j < 69; ++j) p.bias[size_t((h * 40 + 20) * 70 + j)] = -inf;          // row 20: last key only
  }
  check_against_reference(p, pool);
  std::vector<float> got = p.make_output();
  fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
  for (int64_t c = 0; c < 2 * 32; ++c) EXPECT_EQ(got[size_t(3 * p.out_row + c)], 0.0f);
}

TEST(AttentionCpu, EmptyKeysGiveZerosAndEmptyQueriesWriteNothing) {
  fx::ThreadPool pool(2);
  Problem p = make_problem(1, 2, 9, 0, 16, 700);
  std::vector<float> got = p.make_output();
  fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
  for (int64_t r = 0; r < 9; ++r)
    for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(got[size_t(r * p.out_row + c)], 0.0f);
}

void check_exp_against_double() {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> wide(-87.3f, 88.3f), narrow(-2.0f, 2.0f);
  std::vector<float> x;
  for (int i = 0; i < 20000; ++i) x.push_back(i % 2 ? wide(rng) : narrow(rng));
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 0.34657359f, -0.34657359f, -87.3f, 88.3f, 1e-8f, -1e-8f}) x.push_back(v);
  x.push_back(3.0f);  // odd count: the masked tail is used
  std::vector<float> y(x.size(), kNaN);
  fx::cpu::attention_exp(x.data(), y.data(), int64_t(x.size()));
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    const double rel = std::fabs(double(y[i]) - want) / want;
    ASSERT_TRUE(std::isfinite(y[i])) << x[i];
    worst = std::max(worst, rel);
  }
  EXPECT_LE(worst, 1.5e-7);  // about one f32 ulp; measured 7e-8
  // The edges the softmax relies on, the same on every path (exp_edges.h): -inf and far-negative give
  // exactly 0, large positive stays finite, NaN stays NaN.
  const float edge[5] = {-std::numeric_limits<float>::infinity(), -100.0f, -1e30f, 1000.0f, kNaN};
  float out[5];
  fx::cpu::attention_exp(edge, out, 5);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_TRUE(std::isfinite(out[3]));
  EXPECT_TRUE(std::isnan(out[4]));
}

TEST(AttentionCpu, VectorExpMatchesDoubleExp) { fx::testing::for_each_isa_level(check_exp_against_double); }

// The edges of exp_edges.h on the path in force, value by value against exp_flushed() (the scalar
// definition), up to the last ulp near both ends where the vector paths build 2^n by hand; and every
// length up to 2·16 + 1, so that each vector tail is used and nothing past n is written.
void check_exp_edges_and_tails() {
  const float below = std::nextafter(fx::cpu::kExpLow, -1000.0f);
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {below, -88.0f, -100.0f, -1e30f, -inf}) {
    float y = kNaN;
    fx::cpu::attention_exp(&x, &y, 1);
    EXPECT_EQ(y, 0.0f) << x;  // exactly 0, never a subnormal
  }
  const double top = std::exp(double(fx::cpu::kExpHigh));
  for (float x : {fx::cpu::kExpHigh, std::nextafter(fx::cpu::kExpHigh, 1000.0f), 89.0f, 1000.0f, 1e30f, inf}) {
    float y = kNaN;
    fx::cpu::attention_exp(&x, &y, 1);
    EXPECT_LE(std::fabs(double(y) - top) / top, 1.5e-7) << x;  // saturates at e^kExpHigh, finite
  }
  {
    float x = kNaN, y = 0.0f;
    fx::cpu::attention_exp(&x, &y, 1);
    EXPECT_TRUE(std::isnan(y));
  }
  // Near both ends, where 2^n is largest and smallest: the same accuracy as in the middle, and the
  // bottom end is still a normal number.
  std::vector<float> x;
  for (int i = 0; i <= 2000; ++i) {
    x.push_back(fx::cpu::kExpLow + float(i) * 5e-4f);
    x.push_back(fx::cpu::kExpHigh - float(i) * 5e-4f);
  }
  for (int i = 0; i < 64; ++i) {  // the floats just inside each clamp, one ulp apart
    x.push_back(std::nextafter(fx::cpu::kExpHigh, 0.0f) - float(i) * 7.6e-6f);
    x.push_back(std::nextafter(fx::cpu::kExpLow, 0.0f) + float(i) * 7.6e-6f);
  }
  std::vector<float> y(x.size(), kNaN);
  fx::cpu::attention_exp(x.data(), y.data(), int64_t(x.size()));
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_GE(std::fabs(y[i]), std::numeric_limits<float>::min()) << x[i];
    const double want = double(fx::cpu::exp_flushed(x[i]));
    worst = std::max(worst, std::fabs(double(y[i]) - want) / want);
  }
  EXPECT_LE(worst, 1.5e-7);
  // Tails: y[n..] keeps its sentinel, y[0..n) matches exp_flushed.
  std::vector<float> src(40);
  fill_normal(src, 21, 3.0f);
  for (int64_t n = 0; n <= 33; ++n) {
    std::vector<float> out(src.size(), kSentinel);
    fx::cpu::attention_exp(src.data(), out.data(), n);
    for (int64_t i = 0; i < int64_t(src.size()); ++i) {
      if (i >= n) {
        ASSERT_EQ(out[size_t(i)], kSentinel) << "n " << n << " wrote at " << i;
        continue;
      }
      const double want = double(fx::cpu::exp_flushed(src[size_t(i)]));
      ASSERT_LE(std::fabs(double(out[size_t(i)]) - want), 1.5e-7 * want) << "n " << n << " at " << i;
    }
  }
}

TEST(AttentionCpu, VectorExpEdgesAndTailsOnEveryPath) { fx::testing::for_each_isa_level(check_exp_edges_and_tails); }

// The path each ISA level takes for each head_dim: AVX-512 for multiples of 16, AVX2 for multiples of 8,
// portable otherwise, never above the cap. On an AVX2 machine this is what makes the AVX2 level of every
// other test here really run the AVX2 path.
TEST(AttentionCpu, EachIsaLevelTakesTheWidestPathForTheHeadDim) {
  fx::testing::for_each_isa_level([] {
    const fx::IsaLevel level = fx::isa_level();
    for (int64_t d : {1, 6, 8, 12, 16, 24, 64, 72, 128, 512}) {
      std::string want = "portable";
      if (level >= fx::IsaLevel::Avx512 && d % 16 == 0) want = "avx512";
      else if (level >= fx::IsaLevel::Avx2 && d % 8 == 0) want = "avx2";
      EXPECT_EQ(fx::cpu::attention_path_name(d), want) << "head_dim " << d;
      EXPECT_EQ(fx::cpu::attention_uses_avx512(d), want == "avx512") << "head_dim " << d;
    }
  });
#if defined(__x86_64__)
  if (fx::isa_level_machine() >= fx::IsaLevel::Avx2) {
    fx::ScopedIsaCap cap(fx::IsaLevel::Avx2);
    EXPECT_STREQ(fx::cpu::attention_path_name(128), "avx2");
  }
#endif
}

// Masks that change across key blocks (128 keys): rows hidden for a whole first block and visible
// later, visible in the first block only, visible through the last key only, hidden everywhere; and a
// whole 16-row strip hidden, next to strips that are not. Huge logits on top for the second case.
TEST(AttentionCpu, MasksAcrossKeyBlocksAndWholeStrips) {
  fx::ThreadPool pool(2);
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t sq = 50, skv = 300;
  for (int64_t d : {32, 24, 6})
    for (float logit_scale : {1.0f, 4e3f}) {
      Problem p = make_problem(1, 2, sq, skv, d, 900 + uint32_t(d), true);
      for (float& b : p.bias) b *= logit_scale;
      auto row = [&](int64_t h, int64_t i) { return p.bias.data() + (h * sq + i) * skv; };
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t i = 0; i < 16; ++i)
          for (int64_t j = 0; j < skv; ++j) row(h, i)[j] = -inf;                // rows 0..15: all hidden
        for (int64_t j = 0; j < 128; ++j) row(h, 20)[j] = -inf;                 // first block hidden
        for (int64_t j = 128; j < skv; ++j) row(h, 21)[j] = -inf;               // first block only
        for (int64_t j = 0; j < skv - 1; ++j) row(h, 22)[j] = -inf;             // last key only
        for (int64_t j = 0; j < skv; j += 3) row(h, 23)[j] = -inf;              // every third hidden
        for (int64_t j = 0; j < skv; ++j) row(h, 49)[j] = -inf;                 // last row: all hidden
      }
      const double tol_rel = logit_scale > 1.0f ? 1e-4 : 1e-5, tol_abs = logit_scale > 1.0f ? 1e-3 : 2e-5;
      SCOPED_TRACE("logit scale " + std::to_string(logit_scale));
      check_against_reference(p, pool, tol_rel, tol_abs);
      fx::testing::for_each_isa_level([&] {
        std::vector<float> got = p.make_output();
        fx::cpu::attention(p.shape, p.q, p.k, p.v, p.output(got), pool);
        for (int64_t i : {int64_t(0), int64_t(7), int64_t(15), int64_t(49)})
          for (int64_t c = 0; c < 2 * d; ++c)
            ASSERT_EQ(got[size_t(i * p.out_row + c)], 0.0f) << fx::cpu::attention_path_name(d) << " row " << i;
        // Row 22 sees key 299 alone: its output is v[299] (p/l = 1).
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t c = 0; c < d; ++c)
            EXPECT_NEAR(got[size_t(22 * p.out_row + h * d + c)], p.v.data[299 * p.v.row_stride + h * d + c], 1e-6);
      });
    }
}

}  // namespace
