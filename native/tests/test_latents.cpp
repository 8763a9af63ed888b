// Latent packing (docs/flux-model.md §4.3) against the index formulas, and the Euler step, through the C ABI.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fluxnative.h"
#include "ops/cpu/latents.h"

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(Latents, PackMatchesTheSpecIndexFormulaAndUnpackInvertsIt) {
  for (auto [b, c, h, w] : {std::array<int, 4>{1, 16, 2, 2}, {2, 16, 6, 8}, {3, 4, 10, 4}, {1, 1, 8, 14}}) {
    SCOPED_TRACE(testing::Message() << "B " << b << " C " << c << " h " << h << " w " << w);
    const size_t n = static_cast<size_t>(b) * c * h * w;
    const auto z = random_values(n, 7u + h * 31u + w);
    std::vector<float> packed(n, kNaN), want(n, kNaN), back(n, kNaN);
    ASSERT_EQ(fx_latents_pack(z.data(), b, c, h, w, packed.data(), n), FX_OK) << fx_last_error();
    fx::cpu::pack_latents_reference({b, c, h, w}, z.data(), want.data());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(packed[i], want[i]) << "packed index " << i;  // NaN fails too

    // One element against the formula written out here: Z[1, 3, 2] -> P[n, k].
    if (c > 1 && h >= 4 && w >= 4) {
      const int cc = 1, y = 3, x = 2;
      const int token = (y / 2) * (w / 2) + x / 2, k = 4 * cc + 2 * (y % 2) + (x % 2);
      EXPECT_EQ(packed[static_cast<size_t>(token) * 4 * c + k], z[(static_cast<size_t>(cc) * h + y) * w + x]);
    }
    ASSERT_EQ(fx_latents_unpack(packed.data(), b, c, h, w, back.data(), n), FX_OK) << fx_last_error();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], z[i]) << "round trip index " << i;
  }
}

TEST(Latents, RefusesBadShapes) {
  std::vector<float> a(64, 1.0f), b(64, kNaN);
  EXPECT_EQ(fx_latents_pack(a.data(), 1, 4, 3, 4, b.data(), 48), FX_ERR_INVALID_ARGUMENT);  // odd height
  EXPECT_NE(std::string(fx_last_error()).find("even"), std::string::npos) << fx_last_error();
  EXPECT_EQ(fx_latents_pack(a.data(), 1, 4, 4, 4, b.data(), 63), FX_ERR_INVALID_ARGUMENT);  // wrong count
  EXPECT_NE(std::string(fx_last_error()).find("[1, 4, 4, 4]"), std::string::npos) << fx_last_error();
  EXPECT_EQ(fx_latents_unpack(nullptr, 1, 4, 4, 4, b.data(), 64), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_latents_pack(a.data(), 1, 4, 4, 4, a.data(), 64), FX_ERR_INVALID_ARGUMENT);  // in place
  EXPECT_TRUE(std::isnan(b[0])) << "a refused call must not write";
}

TEST(Latents, EulerStepAddsDtTimesVelocity) {
  for (size_t n : {size_t{1}, size_t{17}, size_t{300000}}) {
    auto x = random_values(n, 3), v = random_values(n, 4);
    const auto x0 = x;
    const float dt = -0.0361f;
    ASSERT_EQ(fx_euler_step(x.data(), v.data(), n, dt), FX_OK) << fx_last_error();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(x[i], x0[i] + dt * v[i]) << i;
  }
  float x = 1.0f, v = 1.0f;
  EXPECT_EQ(fx_euler_step(&x, &v, 1, std::numeric_limits<float>::infinity()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_euler_step(nullptr, &v, 1, 0.5f), FX_ERR_INVALID_ARGUMENT);
}

}  // namespace
