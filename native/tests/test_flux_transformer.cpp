// The FLUX transformer forward against golden outputs of the independent float64 NumPy reference
// (tools/reference/flux_reference.py; provenance in tests/data/flux/README.md). Each case regenerates
// its tiny model with the recorded parameters and checks the weights fingerprint first, so a change to
// the tiny-model writer reads as "regenerate the goldens", not as a numerical failure.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "models/flux_transformer.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using fx::backend::WeightFormat;

std::vector<float> read_f32(const fx::io::Checkpoint& file, const std::string& name) {
  const auto* t = file.find(name);
  if (t == nullptr) throw std::runtime_error(file.path() + " has no tensor " + name);
  std::vector<float> values(t->element_count());
  fx::convert(t->dtype, t->data(), fx::DType::F32, values.data(), values.size(), fx::Overflow::Ieee);
  return values;
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

struct GoldenCase {
  std::string name;
  WeightFormat format;
  double tolerance;  // relative L2 of the output
  fx::backend::Precision precision = fx::backend::Precision::Exact;
};

class FluxGolden : public ::testing::TestWithParam<GoldenCase> {};

// Writes the case's tiny model from the recorded fx_tiny_model_params and checks its fingerprint.
std::unique_ptr<fx::io::Checkpoint> regenerate_model(const nlohmann::json& meta, const fs::path& dir) {
  const auto params_json = nlohmann::json::parse(meta["model_params"].get<std::string>());
  fx_tiny_model_params params{};
  params.struct_size = sizeof(params);
  params.kind = FX_MODEL_FLUX_TRANSFORMER;
  params.layout = params_json["layout"] == "bfl" ? FX_LAYOUT_BFL : FX_LAYOUT_DIFFUSERS;
  const std::string dtype = params_json["dtype"];
  params.dtype = dtype == "f32" ? FX_DTYPE_F32 : dtype == "bf16" ? FX_DTYPE_BF16 : FX_DTYPE_F16;
  params.guidance = params_json["variant"] == "dev" ? 1 : 0;
  params.shards = params_json["shards"];
  params.seed = params_json["seed"];
  params.hidden_size = params_json["hidden_size"];
  params.num_heads = params_json["num_heads"];
  params.depth = params_json["depth"];
  params.depth_single = params_json["depth_single"];
  const fs::path path = params.layout == FX_LAYOUT_BFL ? dir / "model.safetensors" : dir / "transformer";
  fx::models::write_tiny_model(params, path.string());
  auto checkpoint = fx::io::Checkpoint::open(path.string());

  const auto fingerprint = nlohmann::json::parse(meta["weights_fingerprint"].get<std::string>());
  double sum = 0, sum_sq = 0;
  for (const auto& t : checkpoint->tensors()) {
    for (float v : read_f32(*checkpoint, t.name)) {
      sum += v;
      sum_sq += static_cast<double>(v) * v;
    }
  }
  const double want_sum = std::stod(fingerprint["sum"].get<std::string>());
  const double want_sq = std::stod(fingerprint["sum_sq"].get<std::string>());
  EXPECT_EQ(checkpoint->tensors().size(), fingerprint["tensor_count"].get<size_t>());
  EXPECT_NEAR(sum, want_sum, 1e-9 * std::abs(want_sum) + 1e-9)
      << "the tiny-model writer changed: regenerate the goldens (tests/data/flux/README.md)";
  EXPECT_NEAR(sum_sq, want_sq, 1e-9 * want_sq) << "the tiny-model writer changed: regenerate the goldens";
  return checkpoint;
}

TEST_P(FluxGolden, ForwardMatchesTheReference) {
  const GoldenCase& c = GetParam();
  const fs::path data = fs::path(FX_TEST_DATA_DIR) / "flux" / c.name;
  const auto inputs = fx::io::Checkpoint::open((data / "inputs.safetensors").string());
  const auto expected_file = fx::io::Checkpoint::open((data / "expected.safetensors").string());
  const auto& meta = expected_file->metadata();
  nlohmann::json meta_json(meta);

  const fs::path dir = fs::path(FX_TEST_TMPDIR) / ("flux-golden-" + c.name + "-" + std::to_string(int(c.format)));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto checkpoint = regenerate_model(meta_json, dir);
  auto model = fx::models::FluxTransformer::load(*checkpoint, c.format, c.precision);

  const auto img = read_f32(*inputs, "img");
  const auto img_ids = read_f32(*inputs, "img_ids");
  const auto txt = read_f32(*inputs, "txt");
  const auto txt_ids = read_f32(*inputs, "txt_ids");
  const auto y = read_f32(*inputs, "y");
  const auto timesteps = read_f32(*inputs, "timesteps");
  std::vector<float> guidance;
  if (inputs->find("guidance")) guidance = read_f32(*inputs, "guidance");
  const auto expected = read_f32(*expected_file, "out");

  const auto& img_shape = inputs->find("img")->shape;
  fx::models::FluxInputs in;
  in.batch = img_shape[0];
  in.img_tokens = img_shape[1];
  in.txt_tokens = inputs->find("txt")->shape[1];
  in.img = img.data();
  in.img_ids = img_ids.data();
  in.txt = txt.data();
  in.txt_ids = txt_ids.data();
  in.y = y.data();
  in.timesteps = timesteps.data();
  in.guidance = guidance.empty() ? nullptr : guidance.data();

  std::vector<float> out(expected.size(), std::nanf(""));
  model->forward(in, out.data());
  const double error = relative_l2(out, expected);
  RecordProperty("relative_l2", std::to_string(error));
  std::printf("[ golden   ] %s format %d: relative L2 %.3g (tolerance %.3g)\n", c.name.c_str(), int(c.format), error,
              c.tolerance);
  EXPECT_LE(error, c.tolerance);
}

// Tolerances (relative L2 of the output): f32 weights 5e-5 (the bound; a correct f32
// implementation lands near 1e-5 of float64). bf16 files are exact bf16 values, so the same 5e-5
// holds for them read as stored; rounding f32 weights to bf16 at load costs ~1e-2 (issue bound).
// fp8 e4m3 with per-channel scales: measured, bound set just above (see README).
INSTANTIATE_TEST_SUITE_P(
    Cases, FluxGolden,
    ::testing::Values(GoldenCase{"dev-f32-bfl", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"schnell-f32-bfl", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"dev-f32-diffusers", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"schnell-f32-diffusers", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"dev-bf16-bfl", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"schnell-bf16-bfl", WeightFormat::AsStored, 5e-5},
                      GoldenCase{"dev-bf16-bfl", WeightFormat::F32, 5e-5},
                      GoldenCase{"dev-f32-bfl", WeightFormat::BF16, 1e-2},
                      GoldenCase{"schnell-f32-diffusers", WeightFormat::BF16, 1e-2},
                      GoldenCase{"dev-f32-bfl", WeightFormat::FP8, 1e-1},
                      GoldenCase{"schnell-f32-bfl", WeightFormat::FP8, 1e-1},
                      // bf16 weights meeting bf16-rounded activations (vdpbf16ps where the CPU has it).
                      GoldenCase{"dev-bf16-bfl", WeightFormat::AsStored, 1e-2, fx::backend::Precision::Bf16Activations},
                      GoldenCase{"schnell-bf16-bfl", WeightFormat::AsStored, 1e-2, fx::backend::Precision::Bf16Activations}),
    [](const ::testing::TestParamInfo<GoldenCase>& info) {
      std::string name = info.param.name + (info.param.precision == fx::backend::Precision::Bf16Activations ? "_bf16act_" : "_") +
                         (info.param.format == WeightFormat::AsStored ? "stored"
                          : info.param.format == WeightFormat::F32    ? "f32"
                          : info.param.format == WeightFormat::BF16   ? "bf16"
                                                                           : "fp8");
      for (char& ch : name)
        if (ch == '-') ch = '_';
      return name;
    });

TEST(FluxTransformer, RefusesOtherModelsAndBadInputs) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / "flux-refuse";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fx_tiny_model_params params{};
  params.struct_size = sizeof(params);
  params.kind = FX_MODEL_AUTOENCODER;
  params.layout = FX_LAYOUT_BFL;
  params.dtype = FX_DTYPE_F32;
  params.shards = 1;
  fx::models::write_tiny_model(params, (dir / "ae.safetensors").string());
  auto ae = fx::io::Checkpoint::open((dir / "ae.safetensors").string());
  try {
    fx::models::FluxTransformer::load(*ae, WeightFormat::AsStored);
    FAIL() << "an autoencoder loaded as a transformer";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), FX_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("autoencoder"), std::string::npos) << e.what();
  }

  params.kind = FX_MODEL_FLUX_TRANSFORMER;
  params.guidance = 1;
  fx::models::write_tiny_model(params, (dir / "dev.safetensors").string());
  auto dev = fx::io::Checkpoint::open((dir / "dev.safetensors").string());
  auto model = fx::models::FluxTransformer::load(*dev, WeightFormat::AsStored);
  std::vector<float> buffer(4096, 0.5f), out(4096);
  fx::models::FluxInputs in;
  in.batch = 1;
  in.img_tokens = 4;
  in.txt_tokens = 2;
  in.img = in.img_ids = in.txt = in.txt_ids = in.y = in.timesteps = buffer.data();
  in.guidance = nullptr;  // dev needs guidance
  try {
    model->forward(in, out.data());
    FAIL() << "a dev forward without guidance ran";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), FX_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("guidance"), std::string::npos) << e.what();
  }
}

TEST(FluxTransformer, TimestepEmbeddingMatchesTheSpecValues) {
  std::vector<float> e(256);
  fx::models::timestep_embedding(1.0f, 256, e.data());
  EXPECT_NEAR(e[0], 0.562379, 1e-6);
  EXPECT_NEAR(e[1], 0.789615, 1e-6);
  EXPECT_NEAR(e[2], 0.439954, 1e-6);
  EXPECT_NEAR(e[128], 0.826880, 1e-6);
  EXPECT_NEAR(e[129], 0.613603, 1e-6);
  EXPECT_NEAR(e[130], -0.898020, 1e-6);
}

}  // namespace

// Cancellation: with the flag already set, the forward stops at its first block boundary, writes an error
// naming the cause, and the model stays usable.
TEST(FluxTransformer, ForwardStopsWhenTheCancelFlagIsSet) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / "flux-cancel";
  fs::create_directories(dir);
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = FX_MODEL_FLUX_TRANSFORMER;
  p.seed = 3;
  const std::string path = (dir / "m.safetensors").string();
  ASSERT_EQ(fx_tiny_model_write(&p, path.c_str()), FX_OK) << fx_last_error();
  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(path.c_str(), &checkpoint), FX_OK) << fx_last_error();
  fx_flux_load_params load;
  fx_flux_load_params_init(&load);
  fx_flux_model* model = nullptr;
  ASSERT_EQ(fx_flux_model_load(checkpoint, &load, &model), FX_OK) << fx_last_error();
  fx_checkpoint_close(checkpoint);

  const int Li = 4, Lt = 3;
  std::vector<float> img(Li * 64, 0.25f), img_ids(Li * 3, 1.0f), txt(Lt * 32, -0.5f), txt_ids(Lt * 3, 0.0f), y(32, 0.1f);
  float t = 0.5f, g = 3.5f;
  volatile int32_t cancel = 1;
  fx_flux_inputs in;
  fx_flux_inputs_init(&in);
  in.img_tokens = Li;
  in.txt_tokens = Lt;
  in.img = img.data();
  in.img_ids = img_ids.data();
  in.txt = txt.data();
  in.txt_ids = txt_ids.data();
  in.y = y.data();
  in.timesteps = &t;
  in.guidance = &g;
  in.cancel = &cancel;
  std::vector<float> out(Li * 64, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(fx_flux_forward(model, &in, out.data(), out.size()), FX_ERR_CANCELLED);
  EXPECT_NE(std::string(fx_last_error()).find("cancelled"), std::string::npos) << fx_last_error();

  cancel = 0;
  ASSERT_EQ(fx_flux_forward(model, &in, out.data(), out.size()), FX_OK) << fx_last_error();
  for (float v : out) ASSERT_TRUE(std::isfinite(v));
  fx_flux_model_free(model);
}
