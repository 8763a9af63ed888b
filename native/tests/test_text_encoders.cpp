// The CLIP text tower and the T5 encoder against golden outputs of the independent float64 NumPy
// references (tools/reference/{clip_text,t5}_reference.py; provenance and tolerances in
// tests/data/text/README.md), through the C ABI. Each case regenerates its tiny model from the recorded
// fx_tiny_model_params and checks the weights fingerprint first, so a change to the tiny-model writer
// reads as "regenerate the goldens", not as a numerical failure. Then: the §3.3 bucket test vector,
// properties that hold whatever the weights (causality, batch independence, T5 has no mask), the
// argument checks of fx_text_encode, and cancellation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/text_encoders.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> read_f32(const fx::io::Checkpoint& file, const std::string& name) {
  const auto* t = file.find(name);
  if (t == nullptr) throw std::runtime_error(file.path() + " has no tensor " + name);
  std::vector<float> values(t->element_count());
  fx::convert(t->dtype, t->data(), fx::DType::F32, values.data(), values.size(), fx::Overflow::Ieee);
  return values;
}

std::vector<int32_t> read_i32(const fx::io::Checkpoint& file, const std::string& name) {
  const auto* t = file.find(name);
  if (t == nullptr || t->dtype != fx::DType::I32) throw std::runtime_error(file.path() + " has no I32 tensor " + name);
  std::vector<int32_t> values(t->element_count());
  std::memcpy(values.data(), t->data(), values.size() * sizeof(int32_t));
  return values;
}

// NaN or inf anywhere gives inf, which fails every bound.
double relative_l2(const float* got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// A text model through the C ABI, freed on scope exit.
struct TextModel {
  fx_text_model* model = nullptr;
  ~TextModel() { fx_text_model_free(model); }
  nlohmann::json config() const {
    size_t needed = 0;
    EXPECT_EQ(fx_text_model_config_json(model, nullptr, 0, &needed), FX_ERR_BUFFER_TOO_SMALL);
    std::string s(needed, '\0');
    EXPECT_EQ(fx_text_model_config_json(model, s.data(), s.size(), &needed), FX_OK) << fx_last_error();
    s.resize(needed - 1);
    return nlohmann::json::parse(s);
  }
};

// Opens `path`, loads the encoder in `format` and closes the checkpoint again at once (the model must
// not need it any more).
std::unique_ptr<TextModel> load_text_model(const std::string& path, int32_t format = FX_WEIGHTS_AS_STORED,
                                           int32_t threads = 0) {
  fx_checkpoint* checkpoint = nullptr;
  EXPECT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << fx_last_error();
  if (checkpoint == nullptr) return nullptr;
  fx_text_load_params params;
  fx_text_load_params_init(&params);
  params.weight_format = format;
  params.num_threads = threads;
  auto model = std::make_unique<TextModel>();
  const fx_status status = fx_text_model_load(checkpoint, &params, &model->model);
  fx_checkpoint_close(checkpoint);
  EXPECT_EQ(status, FX_OK) << fx_last_error();
  if (status != FX_OK) return nullptr;
  return model;
}

fx_tiny_model_params tiny_params(int32_t kind, int32_t dtype, uint64_t seed, int32_t shards = 1) {
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = kind;
  p.layout = FX_LAYOUT_DIFFUSERS;
  p.dtype = dtype;
  p.seed = seed;
  p.shards = shards;
  return p;
}

// Writes the case's tiny model from the recorded fx_tiny_model_params and checks its fingerprint.
void regenerate_model(const nlohmann::json& meta, const fs::path& path) {
  const auto j = nlohmann::json::parse(meta["model_params"].get<std::string>());
  const std::string dtype = j["dtype"];
  fx_tiny_model_params p = tiny_params(j["kind"] == "clip" ? FX_MODEL_CLIP_TEXT : FX_MODEL_T5_ENCODER,
                                       dtype == "f32" ? FX_DTYPE_F32 : dtype == "bf16" ? FX_DTYPE_BF16 : FX_DTYPE_F16,
                                       j["seed"].get<uint64_t>(), j["shards"].get<int32_t>());
  ASSERT_EQ(j["layout"], "diffusers");
  p.hidden_size = j["hidden_size"];
  p.num_heads = j["num_heads"];
  p.depth = j["depth"];
  p.depth_single = j["depth_single"];
  fs::remove_all(path);
  ASSERT_EQ(fx_tiny_model_write(&p, path.string().c_str()), FX_OK) << fx_last_error();

  auto checkpoint = fx::io::Checkpoint::open(path.string());
  const auto fingerprint = nlohmann::json::parse(meta["weights_fingerprint"].get<std::string>());
  double sum = 0, sum_sq = 0;
  for (const auto& t : checkpoint->tensors())
    for (float v : read_f32(*checkpoint, t.name)) {
      sum += v;
      sum_sq += static_cast<double>(v) * v;
    }
  const double want_sum = std::stod(fingerprint["sum"].get<std::string>());
  const double want_sq = std::stod(fingerprint["sum_sq"].get<std::string>());
  EXPECT_EQ(checkpoint->tensors().size(), fingerprint["tensor_count"].get<size_t>());
  ASSERT_NEAR(sum, want_sum, 1e-9 * std::abs(want_sum) + 1e-9)
      << "the tiny-model writer changed: regenerate the goldens (tests/data/text/README.md)";
  ASSERT_NEAR(sum_sq, want_sq, 1e-9 * want_sq) << "the tiny-model writer changed: regenerate the goldens";
}

// ---------------------------------------------------------------------------------------------------
// Golden cases

struct GoldenCase {
  std::string name;
  int32_t format;
  double tolerance;        // relative L2 of hidden (and pooled)
  double min_error = 0.0;  // rounding at load must show: a format that silently kept f32 fails
};

class TextGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(TextGolden, EncodeMatchesTheReference) {
  const GoldenCase& c = GetParam();
  const fs::path data = fs::path(FX_TEST_DATA_DIR) / "text" / c.name;
  const auto inputs = fx::io::Checkpoint::open((data / "inputs.safetensors").string());
  const auto expected_file = fx::io::Checkpoint::open((data / "expected.safetensors").string());
  const nlohmann::json meta(expected_file->metadata());
  const bool clip = meta["kind"] == "clip_text";

  const fs::path dir =
      fs::path(FX_TEST_TMPDIR) / ("text-golden-" + c.name + "-" + std::to_string(c.format) + "." + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path model_dir = dir / (clip ? "text_encoder" : "text_encoder_2");
  regenerate_model(meta, model_dir);
  if (HasFatalFailure()) return;
  auto model = load_text_model(model_dir.string(), c.format);
  ASSERT_TRUE(model);
  const auto config = model->config();
  EXPECT_EQ(config["kind"], meta["kind"]);

  const auto ids = read_i32(*inputs, "ids");
  const auto& shape = inputs->find("ids")->shape;
  const int32_t B = int32_t(shape[0]), L = int32_t(shape[1]);
  const auto want_hidden = read_f32(*expected_file, "hidden");
  const int64_t H = config["hidden_size"];
  ASSERT_EQ(want_hidden.size(), size_t(B) * L * H);

  std::vector<float> hidden(want_hidden.size(), kNaN), pooled;
  if (clip) pooled.assign(size_t(B) * H, kNaN);
  ASSERT_EQ(fx_text_encode(model->model, ids.data(), B, L, hidden.data(), hidden.size(), clip ? pooled.data() : nullptr,
                           pooled.size(), nullptr),
            FX_OK)
      << fx_last_error();
  const double error = relative_l2(hidden.data(), want_hidden.data(), hidden.size());
  RecordProperty("relative_l2", std::to_string(error));
  std::printf("[ golden   ] %s format %d: hidden relative L2 %.3g (bound %.3g)\n", c.name.c_str(), c.format, error,
              c.tolerance);
  EXPECT_LE(error, c.tolerance);
  EXPECT_GE(error, c.min_error);
  // The worst single token as well: a wrong row must not hide in the average.
  double worst = 0;
  for (int64_t r = 0; r < int64_t(B) * L; ++r)
    worst = std::max(worst, relative_l2(hidden.data() + r * H, want_hidden.data() + r * H, size_t(H)));
  std::printf("[ golden   ] %s format %d: worst token relative L2 %.3g\n", c.name.c_str(), c.format, worst);
  EXPECT_LE(worst, 20 * c.tolerance);

  if (clip) {
    const auto want_pooled = read_f32(*expected_file, "pooled");
    const double pooled_error = relative_l2(pooled.data(), want_pooled.data(), pooled.size());
    std::printf("[ golden   ] %s format %d: pooled relative L2 %.3g\n", c.name.c_str(), c.format, pooled_error);
    EXPECT_LE(pooled_error, c.tolerance);
    // pooled is the hidden row at the recorded position (the first EOS), bit for bit.
    const auto positions = nlohmann::json::parse(meta["pooled_positions"].get<std::string>());
    for (int32_t b = 0; b < B; ++b) {
      const int64_t p = positions[size_t(b)];
      EXPECT_EQ(std::memcmp(pooled.data() + b * H, hidden.data() + (b * L + p) * H, sizeof(float) * size_t(H)), 0)
          << "row " << b;
    }
    // Pooled alone (the encoder may stop after the last pooled position): the same vector.
    std::vector<float> pooled_only(pooled.size(), kNaN);
    ASSERT_EQ(fx_text_encode(model->model, ids.data(), B, L, nullptr, 0, pooled_only.data(), pooled_only.size(), nullptr),
              FX_OK)
        << fx_last_error();
    EXPECT_LE(relative_l2(pooled_only.data(), pooled.data(), pooled.size()), 1e-6);
  }
  fs::remove_all(dir);
}

// Bounds (relative L2 of hidden against float64). f32 compute with the stored weights (f32, or the exact
// bf16 values read as stored, widened to f32, or kept as bf16) 2e-5, 3e-5 at 512 tokens (README: >10x
// over float32 noise, still catches erf-vs-tanh GELU in T5); measured 1.6e-7 (CLIP), 3.4e-7 (T5),
// 2.4e-6 (t5-long). weight_format BF16 rounds f32 weights at load: measured 1.6e-3 (clip-f32), 4.6e-3
// (t5-f32), 5.2e-3 (t5-long); bound 1e-2, and at least 1e-4 so that the rounding is known to happen.
// FP8 e4m3 with one scale per output row: measured 2.5e-2 (clip-f32), 7.0e-2 (t5-f32), 7.3e-2 (t5-bf16),
// loose by nature (3 mantissa bits: ~3% per weight); bound 1e-1 as for the transformer, at least 1e-3.
INSTANTIATE_TEST_SUITE_P(
    Cases, TextGolden,
    ::testing::Values(GoldenCase{"clip-f32", FX_WEIGHTS_AS_STORED, 2e-5}, GoldenCase{"clip-bf16", FX_WEIGHTS_AS_STORED, 2e-5},
                      GoldenCase{"clip-bf16", FX_WEIGHTS_F32, 2e-5}, GoldenCase{"t5-f32", FX_WEIGHTS_AS_STORED, 2e-5},
                      GoldenCase{"t5-f32-sharded", FX_WEIGHTS_AS_STORED, 2e-5},
                      GoldenCase{"t5-bf16", FX_WEIGHTS_AS_STORED, 2e-5}, GoldenCase{"t5-bf16", FX_WEIGHTS_F32, 2e-5},
                      GoldenCase{"t5-bf16", FX_WEIGHTS_BF16, 2e-5}, GoldenCase{"t5-long", FX_WEIGHTS_AS_STORED, 3e-5},
                      GoldenCase{"clip-f32", FX_WEIGHTS_BF16, 1e-2, 1e-4}, GoldenCase{"t5-f32", FX_WEIGHTS_BF16, 1e-2, 1e-4},
                      GoldenCase{"t5-long", FX_WEIGHTS_BF16, 1e-2, 1e-4}, GoldenCase{"clip-f32", FX_WEIGHTS_FP8, 1e-1, 1e-3},
                      GoldenCase{"t5-f32", FX_WEIGHTS_FP8, 1e-1, 1e-3}, GoldenCase{"t5-bf16", FX_WEIGHTS_FP8, 1e-1, 1e-3}),
    [](const ::testing::TestParamInfo<GoldenCase>& info) {
      std::string name = info.param.name + "_" +
                         (info.param.format == FX_WEIGHTS_AS_STORED ? "stored"
                          : info.param.format == FX_WEIGHTS_F32     ? "f32"
                          : info.param.format == FX_WEIGHTS_BF16    ? "bf16"
                                                                    : "fp8");
      for (char& ch : name)
        if (ch == '-') ch = '_';
      return name;
    });

// ---------------------------------------------------------------------------------------------------
// The relative-position buckets of docs/flux-model.md §3.3

// The spec's test vector, written out as its table: 32 buckets, max distance 128.
int32_t spec_bucket(int64_t rel) {
  const int64_t n = rel < 0 ? -rel : rel;
  const int32_t base = rel > 0 ? 16 : 0;
  if (n < 8) return base + int32_t(n);
  const int64_t upper[] = {12, 16, 23, 32, 46, 64, 91};  // 8..11 -> 8, 12..15 -> 9, ..., 64..90 -> 14
  int32_t b = 8;
  for (int64_t u : upper) {
    if (n < u) return base + b;
    ++b;
  }
  return base + 15;
}

TEST(TextT5Buckets, MatchTheSpecTestVector) {
  for (int64_t rel = -1000; rel <= 1000; ++rel)
    ASSERT_EQ(fx::models::t5_relative_bucket(rel, 32, 128), spec_bucket(rel)) << "rel " << rel;
  // A few values straight from the spec's prose.
  EXPECT_EQ(fx::models::t5_relative_bucket(0, 32, 128), 0);
  EXPECT_EQ(fx::models::t5_relative_bucket(1, 32, 128), 17);
  EXPECT_EQ(fx::models::t5_relative_bucket(-1, 32, 128), 1);
  EXPECT_EQ(fx::models::t5_relative_bucket(90, 32, 128), 30);
  EXPECT_EQ(fx::models::t5_relative_bucket(91, 32, 128), 31);
  EXPECT_EQ(fx::models::t5_relative_bucket(-91, 32, 128), 15);
  EXPECT_EQ(fx::models::t5_relative_bucket(100000, 32, 128), 31);
  EXPECT_EQ(fx::models::t5_relative_bucket(-100000, 32, 128), 15);
  // The generalisation (README "Decisions"): 8 buckets, max distance 16: half 4, exact 2.
  // n = 2, 3 -> 2 + floor(ln(n/2)/ln(8) * 2) = 2; n = 6 -> 2 + floor(0.528*2) = 3; n >= 16 -> 3 (capped).
  EXPECT_EQ(fx::models::t5_relative_bucket(1, 8, 16), 5);
  EXPECT_EQ(fx::models::t5_relative_bucket(-3, 8, 16), 2);
  EXPECT_EQ(fx::models::t5_relative_bucket(6, 8, 16), 7);
  EXPECT_EQ(fx::models::t5_relative_bucket(-40, 8, 16), 3);
}

// ---------------------------------------------------------------------------------------------------
// Properties and the C ABI's checks

class TextEncoderApi : public fx::testing::TempDirTest {
 protected:
  std::unique_ptr<TextModel> make(int32_t kind, int32_t dtype = FX_DTYPE_F32, uint64_t seed = 5) {
    const std::string dir = path(kind == FX_MODEL_CLIP_TEXT ? "clip" : "t5");
    const fx_tiny_model_params p = tiny_params(kind, dtype, seed);
    EXPECT_EQ(fx_tiny_model_write(&p, dir.c_str()), FX_OK) << fx_last_error();
    return load_text_model(dir);
  }
  static std::vector<float> encode(const TextModel& m, const std::vector<int32_t>& ids, int32_t batch, int64_t hidden) {
    const int32_t length = int32_t(ids.size()) / batch;
    std::vector<float> out(ids.size() * size_t(hidden), kNaN);
    EXPECT_EQ(fx_text_encode(m.model, ids.data(), batch, length, out.data(), out.size(), nullptr, 0, nullptr), FX_OK)
        << fx_last_error();
    return out;
  }
};

TEST_F(TextEncoderApi, ConfigJsonDescribesBothModels) {
  auto clip = make(FX_MODEL_CLIP_TEXT);
  ASSERT_TRUE(clip);
  auto c = clip->config();
  EXPECT_EQ(c["kind"], "clip_text");
  EXPECT_EQ(c["vocab_size"], 49408);
  EXPECT_EQ(c["hidden_size"], 32);
  EXPECT_EQ(c["num_layers"], 2);
  EXPECT_EQ(c["num_heads"], 2);
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_EQ(c["intermediate_size"], 64);
  EXPECT_EQ(c["max_positions"], 77);
  EXPECT_EQ(c["num_buckets"], 0);
  EXPECT_NEAR(c["eps"].get<double>(), 1e-5, 1e-12);

  auto t5 = make(FX_MODEL_T5_ENCODER);
  ASSERT_TRUE(t5);
  c = t5->config();
  EXPECT_EQ(c["kind"], "t5_encoder");
  EXPECT_EQ(c["vocab_size"], 32128);
  EXPECT_EQ(c["hidden_size"], 32);
  EXPECT_EQ(c["num_heads"], 4);
  EXPECT_EQ(c["head_dim"], 8);
  EXPECT_EQ(c["intermediate_size"], 64);
  EXPECT_EQ(c["max_positions"], 0);
  EXPECT_EQ(c["num_buckets"], 32);
  EXPECT_EQ(c["max_distance"], 128);
  EXPECT_NEAR(c["eps"].get<double>(), 1e-6, 1e-12);
}

TEST_F(TextEncoderApi, ClipIsCausalAndRowsAreIndependent) {
  auto m = make(FX_MODEL_CLIP_TEXT);
  ASSERT_TRUE(m);
  const int64_t H = 32, L = 20;
  std::vector<int32_t> a(L), b(L);
  for (int64_t i = 0; i < L; ++i) a[size_t(i)] = int32_t(100 + 37 * i);
  b = a;
  b[12] = 4242;  // changes positions 12.. only
  const auto ya = encode(*m, a, 1, H), yb = encode(*m, b, 1, H);
  for (int64_t i = 0; i < 12 * H; ++i) ASSERT_EQ(ya[size_t(i)], yb[size_t(i)]) << "position " << i / H;
  EXPECT_GT(relative_l2(yb.data() + 12 * H, ya.data() + 12 * H, size_t(H)), 1e-3);
  // Batch of two = each row alone.
  std::vector<int32_t> both = a;
  both.insert(both.end(), b.begin(), b.end());
  const auto yab = encode(*m, both, 2, H);
  EXPECT_LE(relative_l2(yab.data(), ya.data(), ya.size()), 1e-6);
  EXPECT_LE(relative_l2(yab.data() + L * H, yb.data(), yb.size()), 1e-6);
}

TEST_F(TextEncoderApi, T5HasNoMaskEveryPositionSeesTheLastToken) {
  auto m = make(FX_MODEL_T5_ENCODER);
  ASSERT_TRUE(m);
  const int64_t H = 32, L = 24;
  std::vector<int32_t> a(L, 0);
  for (int64_t i = 0; i < 10; ++i) a[size_t(i)] = int32_t(50 + 71 * i);
  a[10] = 1;  // </s>, then pads
  std::vector<int32_t> b = a;
  b[L - 1] = 7;  // the last pad changes: every output must change
  const auto ya = encode(*m, a, 1, H), yb = encode(*m, b, 1, H);
  for (int64_t i = 0; i < L; ++i)
    EXPECT_GT(relative_l2(yb.data() + i * H, ya.data() + i * H, size_t(H)), 1e-7) << "position " << i;
  std::vector<int32_t> both = b;
  both.insert(both.end(), a.begin(), a.end());
  const auto yba = encode(*m, both, 2, H);
  EXPECT_LE(relative_l2(yba.data(), yb.data(), yb.size()), 1e-6);
  EXPECT_LE(relative_l2(yba.data() + L * H, ya.data(), ya.size()), 1e-6);
}

TEST_F(TextEncoderApi, EncodeChecksItsArguments) {
  auto clip = make(FX_MODEL_CLIP_TEXT);
  auto t5 = make(FX_MODEL_T5_ENCODER);
  ASSERT_TRUE(clip && t5);
  std::vector<int32_t> ids(2 * 77, 49407);
  std::vector<float> hidden(2 * 77 * 32), pooled(2 * 32);
  auto error = [] { return std::string(fx_last_error()); };

  // Counts must be exact, and the message names the expected shape.
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 2, 77, hidden.data(), hidden.size() - 1, nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("[2, 77, 32]"), std::string::npos) << error();
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 2, 77, nullptr, 0, pooled.data(), pooled.size() + 1, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("[2, 32]"), std::string::npos) << error();
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 2, 77, nullptr, 5, nullptr, 0, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("hidden is NULL"), std::string::npos) << error();
  // CLIP: at most max_positions tokens.
  std::vector<int32_t> long_ids(78, 1);
  std::vector<float> long_hidden(78 * 32);
  EXPECT_EQ(fx_text_encode(clip->model, long_ids.data(), 1, 78, long_hidden.data(), long_hidden.size(), nullptr, 0,
                           nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("77"), std::string::npos) << error();
  // Ids outside [0, vocab): the message names row and position.
  ids[77 + 9] = 49408;
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 2, 77, hidden.data(), hidden.size(), nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("row 1, position 9"), std::string::npos) << error();
  ids[77 + 9] = -1;
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 2, 77, hidden.data(), hidden.size(), nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("row 1, position 9"), std::string::npos) << error();
  ids[77 + 9] = 49407;
  // Batch and length >= 1, non-null handles.
  EXPECT_EQ(fx_text_encode(clip->model, ids.data(), 0, 77, nullptr, 0, nullptr, 0, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_text_encode(clip->model, nullptr, 2, 77, hidden.data(), hidden.size(), nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_text_encode(nullptr, ids.data(), 2, 77, hidden.data(), hidden.size(), nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);

  // T5: ids < 32128, no pooled output, any length.
  std::vector<int32_t> t5_ids(2 * 9, 3);
  std::vector<float> t5_hidden(2 * 9 * 32, kNaN), t5_pooled(2 * 32);
  EXPECT_EQ(fx_text_encode(t5->model, t5_ids.data(), 2, 9, t5_hidden.data(), t5_hidden.size(), t5_pooled.data(),
                           t5_pooled.size(), nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("pooled"), std::string::npos) << error();
  t5_ids[5] = 32128;
  EXPECT_EQ(fx_text_encode(t5->model, t5_ids.data(), 2, 9, t5_hidden.data(), t5_hidden.size(), nullptr, 0, nullptr),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(error().find("row 0, position 5"), std::string::npos) << error();
  t5_ids[5] = 32127;
  ASSERT_EQ(fx_text_encode(t5->model, t5_ids.data(), 2, 9, t5_hidden.data(), t5_hidden.size(), nullptr, 0, nullptr),
            FX_OK)
      << error();
  for (float v : t5_hidden) ASSERT_TRUE(std::isfinite(v));
  std::vector<int32_t> t5_long(600, 3);
  std::vector<float> t5_long_hidden(600 * 32, kNaN);
  EXPECT_EQ(fx_text_encode(t5->model, t5_long.data(), 1, 600, t5_long_hidden.data(), t5_long_hidden.size(), nullptr, 0,
                           nullptr),
            FX_OK)
      << error();
}

TEST_F(TextEncoderApi, LoadRefusesOtherModelsAndBadParams) {
  const std::string ae = path("ae.safetensors");
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = FX_MODEL_AUTOENCODER;
  ASSERT_EQ(fx_tiny_model_write(&p, ae.c_str()), FX_OK) << fx_last_error();
  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(ae.c_str(), &checkpoint), FX_OK) << fx_last_error();
  fx_text_model* model = nullptr;
  EXPECT_EQ(fx_text_model_load(checkpoint, nullptr, &model), FX_ERR_INVALID_ARGUMENT);
  fx_text_load_params params;
  fx_text_load_params_init(&params);
  EXPECT_EQ(fx_text_model_load(checkpoint, &params, &model), FX_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(fx_last_error()).find("autoencoder"), std::string::npos) << fx_last_error();
  EXPECT_EQ(model, nullptr);
  fx_checkpoint_close(checkpoint);

  const std::string t5 = path("t5");
  const fx_tiny_model_params tp = tiny_params(FX_MODEL_T5_ENCODER, FX_DTYPE_F32, 2);
  ASSERT_EQ(fx_tiny_model_write(&tp, t5.c_str()), FX_OK) << fx_last_error();
  ASSERT_EQ(fx_checkpoint_open(t5.c_str(), &checkpoint), FX_OK) << fx_last_error();
  params.weight_format = 9;
  EXPECT_EQ(fx_text_model_load(checkpoint, &params, &model), FX_ERR_INVALID_ARGUMENT);
  params.weight_format = FX_WEIGHTS_AS_STORED;
  params.num_threads = -1;
  EXPECT_EQ(fx_text_model_load(checkpoint, &params, &model), FX_ERR_INVALID_ARGUMENT);
  params.num_threads = 3;  // a pool of its own
  ASSERT_EQ(fx_text_model_load(checkpoint, &params, &model), FX_OK) << fx_last_error();
  fx_checkpoint_close(checkpoint);
  std::vector<int32_t> ids = {5, 6, 1, 0};
  std::vector<float> hidden(4 * 32, kNaN);
  EXPECT_EQ(fx_text_encode(model, ids.data(), 1, 4, hidden.data(), hidden.size(), nullptr, 0, nullptr), FX_OK)
      << fx_last_error();
  fx_text_model_free(model);
  fx_text_model_free(nullptr);
}

// The embedding may be stored as encoder.embed_tokens.weight instead of shared.weight (docs/flux-model.md §8.4), or
// under both names if they agree.
TEST_F(TextEncoderApi, T5EmbeddingUnderEitherName) {
  const std::string original = path("t5");
  const fx_tiny_model_params p = tiny_params(FX_MODEL_T5_ENCODER, FX_DTYPE_BF16, 4);
  ASSERT_EQ(fx_tiny_model_write(&p, original.c_str()), FX_OK) << fx_last_error();
  auto reference = load_text_model(original);
  ASSERT_TRUE(reference);
  const std::vector<int32_t> ids = {31, 7, 900, 1, 0, 0};
  const auto want = encode(*reference, ids, 1, 32);

  const auto source = fx::io::Checkpoint::open(original);
  for (int variant = 0; variant < 3; ++variant) {
    const fs::path dir = dir_ / ("variant" + std::to_string(variant));
    fs::create_directories(dir);
    fs::copy_file(fs::path(original) / "config.json", dir / "config.json");
    std::vector<fx::io::TensorToWrite> tensors;
    std::vector<uint8_t> changed;
    for (const auto& t : source->tensors()) {
      if (t.name == "shared.weight") {
        if (variant == 0 || variant == 1) tensors.push_back({"encoder.embed_tokens.weight", t.dtype, t.shape, t.data(), t.byte_size});
        if (variant == 1) tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
        if (variant == 2) {
          changed.assign(t.data(), t.data() + t.byte_size);
          changed[100] ^= 0x40;
          tensors.push_back({"encoder.embed_tokens.weight", t.dtype, t.shape, changed.data(), t.byte_size});
          tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
        }
        continue;
      }
      tensors.push_back({t.name, t.dtype, t.shape, t.data(), t.byte_size});
    }
    fx::io::write_safetensors((dir / "model.safetensors").string(), tensors);
    if (variant < 2) {
      auto model = load_text_model(dir.string());
      ASSERT_TRUE(model) << "variant " << variant;
      const auto got = encode(*model, ids, 1, 32);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << "variant " << variant;
    } else {
      fx_checkpoint* checkpoint = nullptr;
      ASSERT_EQ(fx_checkpoint_open(dir.string().c_str(), &checkpoint), FX_OK) << fx_last_error();
      fx_text_load_params params;
      fx_text_load_params_init(&params);
      fx_text_model* model = nullptr;
      EXPECT_EQ(fx_text_model_load(checkpoint, &params, &model), FX_ERR_FORMAT);
      EXPECT_NE(std::string(fx_last_error()).find("differ"), std::string::npos) << fx_last_error();
      fx_checkpoint_close(checkpoint);
    }
  }
}

// Third-party single files: a key prefix (docs/flux-model.md §8.0) and no config.json, so the configuration comes from
// the shapes alone (T5: heads from the bucket table, max distance and eps the published defaults; CLIP:
// heads = hidden / 64). Same outputs, bit for bit, as the diffusers folder.
TEST_F(TextEncoderApi, PrefixedSingleFileWithoutConfigJson) {
  struct Variant {
    int32_t kind;
    int32_t hidden, heads;
    const char* prefix;
    std::vector<int32_t> ids;
  };
  const Variant variants[] = {
      {FX_MODEL_T5_ENCODER, 0, 0, "text_encoders.t5xxl.transformer.", {31, 7, 900, 1, 0, 0}},
      {FX_MODEL_CLIP_TEXT, 64, 1, "cond_stage_model.transformer.", {49406, 320, 1125, 49407, 49407}},
  };
  for (const Variant& v : variants) {
    const std::string folder = path(std::string("folder-") + std::to_string(v.kind));
    fx_tiny_model_params p = tiny_params(v.kind, FX_DTYPE_BF16, 6);
    p.hidden_size = v.hidden;
    p.num_heads = v.heads;
    ASSERT_EQ(fx_tiny_model_write(&p, folder.c_str()), FX_OK) << fx_last_error();
    auto reference = load_text_model(folder);
    ASSERT_TRUE(reference);
    const int64_t H = reference->config()["hidden_size"];
    const auto want = encode(*reference, v.ids, 1, H);

    const fs::path single = dir_ / ("single-" + std::to_string(v.kind));
    fs::create_directories(single);
    const auto source = fx::io::Checkpoint::open(folder);
    std::vector<fx::io::TensorToWrite> tensors;
    std::vector<std::string> names;
    names.reserve(source->tensors().size());
    for (const auto& t : source->tensors()) {
      names.push_back(v.prefix + t.name);
      tensors.push_back({names.back(), t.dtype, t.shape, t.data(), t.byte_size});
    }
    const std::string file = (single / "model.safetensors").string();
    fx::io::write_safetensors(file, tensors);
    auto model = load_text_model(file);
    ASSERT_TRUE(model) << v.prefix;
    EXPECT_EQ(model->config(), reference->config()) << v.prefix;
    const auto got = encode(*model, v.ids, 1, H);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << v.prefix;
  }
}

// With the flag already set, the encode stops at its first layer boundary, names the cause, and the
// model stays usable.
TEST_F(TextEncoderApi, EncodeStopsWhenTheCancelFlagIsSet) {
  for (int32_t kind : {FX_MODEL_CLIP_TEXT, FX_MODEL_T5_ENCODER}) {
    auto m = make(kind);
    ASSERT_TRUE(m);
    std::vector<int32_t> ids = {3, 4, 5, 6};
    std::vector<float> hidden(4 * 32, kNaN);
    volatile int32_t cancel = 1;
    EXPECT_EQ(fx_text_encode(m->model, ids.data(), 1, 4, hidden.data(), hidden.size(), nullptr, 0, &cancel),
              FX_ERR_CANCELLED);
    EXPECT_NE(std::string(fx_last_error()).find("cancelled"), std::string::npos) << fx_last_error();
    cancel = 0;
    ASSERT_EQ(fx_text_encode(m->model, ids.data(), 1, 4, hidden.data(), hidden.size(), nullptr, 0, &cancel), FX_OK)
        << fx_last_error();
    for (float v : hidden) ASSERT_TRUE(std::isfinite(v));
  }
}

}  // namespace
