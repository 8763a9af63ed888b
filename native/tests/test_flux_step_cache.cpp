// Step caching in the FLUX transformer (models/flux_step_cache.h) through the C ABI, on a tiny random model
// (hidden 64, 2 double + 3 single blocks = 5 blocks): threshold 0 is bit-identical to no cache, the reuse pattern
// follows the policy, a reused step adds the middle residual it saved, batch rows never share a cache, and
// cancellation still stops a cached forward.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fluxnative.h"
#include "models/flux_step_cache.h"
#include "test_support.h"

namespace {

constexpr int kImgTokens = 6, kTxtTokens = 3, kChannels = 64, kContext = 32, kVec = 32, kBlocks = 5;

// One sample's inputs for one step; `seed` draws them (never zeros).
struct SampleInputs {
  std::vector<float> img, img_ids, txt, txt_ids, y;
  float t = 0.5f, guidance = 3.5f;
  explicit SampleInputs(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](size_t n) {
      std::vector<float> v(n);
      for (float& x : v) x = normal(rng);
      return v;
    };
    img = draw(kImgTokens * kChannels);
    txt = draw(kTxtTokens * kContext);
    y = draw(kVec);
    for (int i = 0; i < kImgTokens; ++i) img_ids.insert(img_ids.end(), {0.0f, float(i / 3), float(i % 3)});
    txt_ids.assign(kTxtTokens * 3, 0.0f);
  }
  // The next denoising step: a small move of the latents, a smaller t.
  void advance(unsigned seed, float amount) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : img) x += amount * normal(rng);
    t -= 0.05f;
  }
};

class FluxStepCacheTest : public fx::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    fx_tiny_model_params p;
    fx_tiny_model_params_init(&p);
    p.seed = 11;
    const std::string file = path("m.safetensors");
    ASSERT_EQ(fx_tiny_model_write(&p, file.c_str()), FX_OK) << fx_last_error();
    fx_checkpoint* checkpoint = nullptr;
    ASSERT_EQ(fx_checkpoint_open(file.c_str(), &checkpoint), FX_OK) << fx_last_error();
    fx_flux_load_params load;
    fx_flux_load_params_init(&load);
    ASSERT_EQ(fx_flux_model_load(checkpoint, &load, &model_), FX_OK) << fx_last_error();
    fx_checkpoint_close(checkpoint);
  }
  void TearDown() override {
    for (auto* c : caches_) fx_flux_step_cache_free(c);
    fx_flux_model_free(model_);
    TempDirTest::TearDown();
  }

  fx_flux_step_cache* cache(float threshold, int head, int tail, int warmup, int final_steps, int max_consecutive,
                            int total) {
    fx_flux_step_cache_params p;
    fx_flux_step_cache_params_init(&p);
    p.threshold = threshold;
    p.head_blocks = head;
    p.tail_blocks = tail;
    p.warmup_steps = warmup;
    p.final_steps = final_steps;
    p.max_consecutive = max_consecutive;
    p.total_steps = total;
    fx_flux_step_cache* c = nullptr;
    EXPECT_EQ(fx_flux_step_cache_create(model_, &p, &c), FX_OK) << fx_last_error();
    caches_.push_back(c);
    return c;
  }

  // One forward over `rows` (a batch of their concatenation); `caches` null or one per row. Returns the output,
  // poisoned with NaN before the call; `blocks` receives the blocks each row ran.
  fx_status forward(const std::vector<const SampleInputs*>& rows, fx_flux_step_cache* const* caches,
                    std::vector<float>* out, std::vector<int32_t>* blocks = nullptr,
                    const volatile int32_t* cancel = nullptr) {
    std::vector<float> img, img_ids, txt, txt_ids, y, t, g;
    for (const auto* r : rows) {
      img.insert(img.end(), r->img.begin(), r->img.end());
      img_ids.insert(img_ids.end(), r->img_ids.begin(), r->img_ids.end());
      txt.insert(txt.end(), r->txt.begin(), r->txt.end());
      txt_ids.insert(txt_ids.end(), r->txt_ids.begin(), r->txt_ids.end());
      y.insert(y.end(), r->y.begin(), r->y.end());
      t.push_back(r->t);
      g.push_back(r->guidance);
    }
    fx_flux_inputs in;
    fx_flux_inputs_init(&in);
    in.batch = static_cast<int32_t>(rows.size());
    in.img_tokens = kImgTokens;
    in.txt_tokens = kTxtTokens;
    in.img = img.data();
    in.img_ids = img_ids.data();
    in.txt = txt.data();
    in.txt_ids = txt_ids.data();
    in.y = y.data();
    in.timesteps = t.data();
    in.guidance = g.data();
    in.cancel = cancel;
    in.step_caches = caches;
    if (blocks != nullptr) {
      blocks->assign(rows.size(), -1);
      in.blocks_computed = blocks->data();
    }
    out->assign(rows.size() * kImgTokens * kChannels, std::numeric_limits<float>::quiet_NaN());
    return fx_flux_forward(model_, &in, out->data(), out->size());
  }

  fx_flux_model* model_ = nullptr;
  std::vector<fx_flux_step_cache*> caches_;
};

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

TEST_F(FluxStepCacheTest, ThresholdZeroIsBitIdenticalToNoCache) {
  const int steps = 6;
  fx_flux_step_cache* c = cache(0.0f, 1, 1, 0, 0, 3, steps);
  SampleInputs sample(1);
  for (int s = 0; s < steps; ++s) {
    std::vector<float> plain, cached;
    std::vector<int32_t> blocks;
    ASSERT_EQ(forward({&sample}, nullptr, &plain), FX_OK) << fx_last_error();
    ASSERT_EQ(forward({&sample}, &c, &cached, &blocks), FX_OK) << fx_last_error();
    ASSERT_EQ(std::memcmp(plain.data(), cached.data(), plain.size() * sizeof(float)), 0) << "step " << s;
    EXPECT_EQ(blocks[0], kBlocks);
    for (float v : cached) ASSERT_TRUE(std::isfinite(v));
    sample.advance(100 + s, 0.01f);
  }
  int32_t seen = -1, reused = -1;
  ASSERT_EQ(fx_flux_step_cache_stats(c, &seen, &reused, nullptr), FX_OK);
  EXPECT_EQ(seen, steps);
  EXPECT_EQ(reused, 0);
}

// A threshold nothing stays under: the warm-up, the cap on consecutive reuse and the final steps decide alone.
TEST_F(FluxStepCacheTest, ReuseFollowsWarmupConsecutiveCapAndFinalSteps) {
  const int steps = 9, head = 2, tail = 1;
  fx_flux_step_cache* c = cache(1e30f, head, tail, /*warmup*/ 2, /*final*/ 2, /*max_consecutive*/ 2, steps);
  SampleInputs sample(2);
  const std::vector<int32_t> expected = {5, 5, 3, 3, 5, 3, 3, 5, 5};  // head + tail = 3 on a reused step
  for (int s = 0; s < steps; ++s) {
    std::vector<float> out;
    std::vector<int32_t> blocks;
    ASSERT_EQ(forward({&sample}, &c, &out, &blocks), FX_OK) << fx_last_error();
    EXPECT_EQ(blocks[0], expected[s]) << "step " << s;
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
    sample.advance(200 + s, 0.05f);
  }
  int32_t reused = -1;
  ASSERT_EQ(fx_flux_step_cache_stats(c, nullptr, &reused, nullptr), FX_OK);
  EXPECT_EQ(reused, 4);
  // Reset starts a new run: warm-up again.
  ASSERT_EQ(fx_flux_step_cache_reset(c), FX_OK);
  std::vector<float> out;
  std::vector<int32_t> blocks;
  ASSERT_EQ(forward({&sample}, &c, &out, &blocks), FX_OK) << fx_last_error();
  EXPECT_EQ(blocks[0], kBlocks);
}

// A reused step adds the middle residual of the last full step: with the same input twice it reproduces the full
// output up to rounding; with a changed input it differs from the full output (the middle really was skipped).
TEST_F(FluxStepCacheTest, ReusedStepAddsTheSavedMiddleResidual) {
  fx_flux_step_cache* c = cache(1e30f, 1, 1, 1, 0, 5, 10);
  SampleInputs sample(3);
  std::vector<float> first, again, full;
  std::vector<int32_t> blocks;
  ASSERT_EQ(forward({&sample}, &c, &first, &blocks), FX_OK) << fx_last_error();
  ASSERT_EQ(blocks[0], kBlocks);
  ASSERT_EQ(forward({&sample}, &c, &again, &blocks), FX_OK) << fx_last_error();
  ASSERT_EQ(blocks[0], 2);
  EXPECT_LT(relative_l2(again, first), 1e-5);

  sample.advance(7, 0.5f);
  ASSERT_EQ(forward({&sample}, nullptr, &full), FX_OK) << fx_last_error();
  ASSERT_EQ(forward({&sample}, &c, &again, &blocks), FX_OK) << fx_last_error();
  ASSERT_EQ(blocks[0], 2);
  const double error = relative_l2(again, full);
  EXPECT_GT(error, 1e-4);  // an approximation, not the full forward
  EXPECT_LT(error, 1.0);   // but of it
}

// The decision measures the change: a threshold between a small and a large change reuses only after the small one.
TEST_F(FluxStepCacheTest, ThresholdSeparatesSmallFromLargeChanges) {
  fx_flux_step_cache* c = cache(0.02f, 1, 0, 1, 0, 10, 10);
  SampleInputs sample(4);
  std::vector<float> out;
  std::vector<int32_t> blocks;
  ASSERT_EQ(forward({&sample}, &c, &out, &blocks), FX_OK) << fx_last_error();
  sample.advance(8, 1e-4f);
  sample.t += 0.05f;  // the same timestep: only the tiny latent move
  ASSERT_EQ(forward({&sample}, &c, &out, &blocks), FX_OK) << fx_last_error();
  EXPECT_EQ(blocks[0], 1) << "a 1e-4 move should reuse";
  double change = NAN;
  ASSERT_EQ(fx_flux_step_cache_stats(c, nullptr, nullptr, &change), FX_OK);
  EXPECT_GT(change, 0.0);
  EXPECT_LT(change, 0.02);
  sample.advance(9, 2.0f);
  ASSERT_EQ(forward({&sample}, &c, &out, &blocks), FX_OK) << fx_last_error();
  EXPECT_EQ(blocks[0], kBlocks) << "a large move and a new timestep should run every block";
  ASSERT_EQ(fx_flux_step_cache_stats(c, nullptr, nullptr, &change), FX_OK);
  EXPECT_GT(change, 0.02);
}

// Rows of one batch: a row with a cache and one without, each equal to the same row run alone with its own
// history, so nothing of one row's cache reaches the other.
TEST_F(FluxStepCacheTest, BatchRowsKeepTheirOwnCaches) {
  const int steps = 5;
  fx_flux_step_cache* batched[2] = {cache(1e30f, 1, 1, 1, 1, 2, steps), cache(0.0f, 1, 1, 0, 0, 1, steps)};
  fx_flux_step_cache* alone = cache(1e30f, 1, 1, 1, 1, 2, steps);
  SampleInputs a(5), b(6);
  b.t = 0.9f;
  for (int s = 0; s < steps; ++s) {
    std::vector<float> both, only_a, only_b;
    std::vector<int32_t> blocks, blocks_a;
    ASSERT_EQ(forward({&a, &b}, batched, &both, &blocks), FX_OK) << fx_last_error();
    ASSERT_EQ(forward({&a}, &alone, &only_a, &blocks_a), FX_OK) << fx_last_error();
    ASSERT_EQ(forward({&b}, nullptr, &only_b), FX_OK) << fx_last_error();
    const size_t n = only_a.size();
    EXPECT_EQ(std::memcmp(both.data(), only_a.data(), n * sizeof(float)), 0) << "row 0, step " << s;
    EXPECT_EQ(std::memcmp(both.data() + n, only_b.data(), n * sizeof(float)), 0) << "row 1, step " << s;
    EXPECT_EQ(blocks[0], blocks_a[0]);
    EXPECT_EQ(blocks[1], kBlocks);
    a.advance(300 + s, 0.02f);
    b.advance(400 + s, 0.02f);
  }
  int32_t reused = -1;
  ASSERT_EQ(fx_flux_step_cache_stats(batched[0], nullptr, &reused, nullptr), FX_OK);
  EXPECT_GT(reused, 0);
}

TEST_F(FluxStepCacheTest, RefusesSharedForeignAndMisshapenCaches) {
  SampleInputs a(7), b(8);
  std::vector<float> out;
  fx_flux_step_cache* c = cache(0.1f, 1, 0, 1, 1, 2, 4);
  fx_flux_step_cache* twice[2] = {c, c};
  EXPECT_EQ(forward({&a, &b}, twice, &out), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("same cache"), std::string::npos) << fx_last_error();

  fx_flux_step_cache_params p;
  fx_flux_step_cache_params_init(&p);
  fx_flux_step_cache* bad = nullptr;
  EXPECT_EQ(fx_flux_step_cache_create(model_, &p, &bad), FX_ERR_INVALID_ARGUMENT);  // total_steps unset
  EXPECT_NE(std::string(fx_last_error()).find("total_steps"), std::string::npos) << fx_last_error();
  p.total_steps = 4;
  p.head_blocks = 0;
  EXPECT_EQ(fx_flux_step_cache_create(model_, &p, &bad), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("head_blocks"), std::string::npos) << fx_last_error();
  p.head_blocks = 1;
  p.threshold = -1.0f;
  EXPECT_EQ(fx_flux_step_cache_create(model_, &p, &bad), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("threshold"), std::string::npos) << fx_last_error();
  EXPECT_EQ(bad, nullptr);

  // Bound to 6 image tokens by its first forward: another shape is refused.
  ASSERT_EQ(forward({&a}, &c, &out), FX_OK) << fx_last_error();
  fx_flux_inputs in;
  fx_flux_inputs_init(&in);
  in.img_tokens = kImgTokens - 1;
  in.txt_tokens = kTxtTokens;
  in.img = a.img.data();
  in.img_ids = a.img_ids.data();
  in.txt = a.txt.data();
  in.txt_ids = a.txt_ids.data();
  in.y = a.y.data();
  in.timesteps = &a.t;
  in.guidance = &a.guidance;
  in.step_caches = &c;
  std::vector<float> small((kImgTokens - 1) * kChannels);
  EXPECT_EQ(fx_flux_forward(model_, &in, small.data(), small.size()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("image tokens"), std::string::npos) << fx_last_error();
}

TEST_F(FluxStepCacheTest, CancellationStopsACachedForward) {
  fx_flux_step_cache* c = cache(1e30f, 1, 1, 0, 0, 3, 4);
  SampleInputs a(9);
  std::vector<float> out;
  volatile int32_t cancel = 1;
  EXPECT_EQ(forward({&a}, &c, &out, nullptr, &cancel), FX_ERR_CANCELLED);
  cancel = 0;
  std::vector<int32_t> blocks;
  ASSERT_EQ(forward({&a}, &c, &out, &blocks, &cancel), FX_OK) << fx_last_error();
  for (float v : out) ASSERT_TRUE(std::isfinite(v));
}

TEST(FluxStepCachePolicy, RelativeL1Change) {
  EXPECT_DOUBLE_EQ(fx::models::relative_l1_change({1.0f, -2.0f}, {1.0f, -2.0f}), 0.0);
  EXPECT_DOUBLE_EQ(fx::models::relative_l1_change({1.5f, -2.0f}, {1.0f, -3.0f}), 1.5 / 4.0);
  EXPECT_TRUE(std::isnan(fx::models::relative_l1_change({1.0f}, {0.0f})));
  EXPECT_TRUE(std::isnan(fx::models::relative_l1_change({NAN}, {1.0f})));
}

}  // namespace
