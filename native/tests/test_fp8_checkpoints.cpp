// Community single files (issue 14 item 3): fp8 e4m3 transformers with and without ComfyUI's per-tensor
// "scale_weight", and ComfyUI "all in one" files (model.diffusion_model. + vae. + ... in one file).
// Each file is written here from a tiny f32 model; the fp8 model must give the same output as an f32
// model holding exactly its dequantised weights (fp8 · scale), whatever weight format it is loaded in.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "flux_test_inputs.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/autoencoder.h"
#include "models/flux_transformer.h"
#include "models/recognize.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using fx::DType;
using fx::backend::WeightFormat;

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

void write_all(const std::string& path, const std::vector<OwnedTensor>& tensors,
               const std::map<std::string, std::string>& metadata = {}) {
  std::vector<fx::io::TensorToWrite> out;
  for (const auto& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  fx::io::write_safetensors(path, out, metadata);
}

std::vector<float> as_f32(const fx::io::Checkpoint::Tensor& t) {
  std::vector<float> v(t.element_count());
  fx::convert(t.dtype, t.data(), DType::F32, v.data(), v.size(), fx::Overflow::Ieee);
  return v;
}

OwnedTensor f32_tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  OwnedTensor t{name, DType::F32, shape, std::vector<uint8_t>(v.size() * 4)};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

struct Fp8Files {
  std::string fp8;        // the community file
  std::string reference;  // f32, the same values
};

// From the tiny f32 transformer at `source`: every linear weight (2-D "*.weight") as e4m3 with one
// per-tensor scale (amax / 448, stored as "<linear>.scale_weight" when `scaled`; without it the weights
// are quantised unscaled), every other tensor as it is; names prefixed with `prefix`. `extra` tensors
// (another model's, already prefixed) are appended. The reference file holds fp8 · scale in f32.
Fp8Files make_fp8(const std::string& source, const fs::path& dir, bool scaled, const std::string& prefix,
                  const std::vector<OwnedTensor>& extra = {}) {
  const auto checkpoint = fx::io::Checkpoint::open(source);
  std::vector<OwnedTensor> fp8, reference;
  for (const auto& t : checkpoint->tensors()) {
    std::vector<float> v = as_f32(t);
    const bool linear = t.shape.size() == 2 && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
    if (!linear) {
      fp8.push_back(f32_tensor(prefix + t.name, t.shape, v));
      reference.push_back(f32_tensor(t.name, t.shape, v));
      continue;
    }
    float amax = 0;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    // Unscaled files hold the values themselves: multiply them up first so e4m3 keeps some precision.
    const float scale = scaled ? amax / 448.0f : 1.0f;
    if (!scaled)
      for (float& x : v) x *= 64.0f;
    OwnedTensor q{prefix + t.name, DType::F8_E4M3FN, t.shape, std::vector<uint8_t>(v.size())};
    std::vector<float> dequantised(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      q.bytes[i] = fx::f32_to_e4m3fn(v[i] / scale, fx::Overflow::Saturate);
      dequantised[i] = fx::e4m3fn_to_f32(q.bytes[i]) * scale;
    }
    fp8.push_back(std::move(q));
    if (scaled) {
      const std::string base = t.name.substr(0, t.name.size() - 7);
      fp8.push_back(f32_tensor(prefix + base + ".scale_weight", {}, {scale}));
      fp8.push_back(f32_tensor(prefix + base + ".scale_input", {}, {1.0f}));  // read past: activations stay f32
    }
    reference.push_back(f32_tensor(t.name, t.shape, dequantised));
  }
  if (scaled) fp8.push_back(OwnedTensor{prefix + "scaled_fp8", DType::F8_E4M3FN, {0}, {}});
  for (const auto& e : extra) fp8.push_back(e);
  Fp8Files files{(dir / (scaled ? "scaled.safetensors" : "plain.safetensors")).string(),
                 (dir / (scaled ? "scaled-ref.safetensors" : "plain-ref.safetensors")).string()};
  write_all(files.fp8, fp8, checkpoint->metadata());  // axes_dim: the tiny head dim is not 128
  write_all(files.reference, reference, checkpoint->metadata());
  return files;
}

std::vector<float> forward(const fx::io::Checkpoint& checkpoint, WeightFormat format) {
  const auto model = fx::models::FluxTransformer::load(checkpoint, format);
  return fx::test::forward_on_random_inputs(*model, /*li=*/6, /*lt=*/5, /*seed=*/11, /*timestep=*/0.7f);
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string tiny(const fs::path& dir, int kind, const std::string& file, uint64_t seed) {
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = kind;
  p.seed = seed;
  const std::string path = (dir / file).string();
  fx::models::write_tiny_model(p, path);
  return path;
}

class Fp8SingleFile : public ::testing::TestWithParam<bool> {};

TEST_P(Fp8SingleFile, RunsFromItsFp8WeightsAsTheirDequantisedValuesDo) {
  const bool scaled = GetParam();
  const fs::path dir = fresh_dir(scaled ? "fp8-scaled" : "fp8-plain");
  const Fp8Files files = make_fp8(tiny(dir, FX_MODEL_FLUX_TRANSFORMER, "f32.safetensors", 5), dir, scaled, "");
  const auto fp8 = fx::io::Checkpoint::open(files.fp8);
  const auto reference = fx::io::Checkpoint::open(files.reference);

  const nlohmann::json d = fx::models::describe(*fp8);
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_TRUE(d["problems"].empty()) << d["problems"].dump();
  EXPECT_GT(d["dtypes"].value("F8_E4M3", 0), 0) << d["dtypes"].dump();
  if (scaled) EXPECT_NE(d["notes"].dump().find("scale_weight"), std::string::npos) << d["notes"].dump();

  const std::vector<float> want = forward(*reference, WeightFormat::F32);
  // As stored and FP8 keep the e4m3 bytes (the scale folded into the per-channel scales); F32 and BF16
  // widen fp8 · scale at load (BF16 then rounds: the only lossy one).
  for (const auto [format, tolerance] : {std::pair{WeightFormat::AsStored, 2e-5}, std::pair{WeightFormat::FP8, 2e-5},
                                         std::pair{WeightFormat::F32, 2e-5}, std::pair{WeightFormat::BF16, 2e-2}}) {
    const double error = relative_l2(forward(*fp8, format), want);
    EXPECT_LE(error, tolerance) << "format " << int(format);
  }
}

INSTANTIATE_TEST_SUITE_P(Scales, Fp8SingleFile, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "WithScaleWeight" : "WithoutScale"; });

TEST(Fp8SingleFile, BadScalesAreRefusedNamingTheTensor) {
  const fs::path dir = fresh_dir("fp8-bad-scale");
  const Fp8Files files = make_fp8(tiny(dir, FX_MODEL_FLUX_TRANSFORMER, "f32.safetensors", 6), dir, true, "");
  const auto good = fx::io::Checkpoint::open(files.fp8);
  for (const auto& [label, values] : {std::pair<std::string, std::vector<float>>{"two", {1.0f, 2.0f}},
                                      std::pair<std::string, std::vector<float>>{"nan", {NAN}}}) {
    std::vector<OwnedTensor> tensors;
    for (const auto& t : good->tensors()) {
      OwnedTensor o{t.name, t.dtype, t.shape, std::vector<uint8_t>(t.data(), t.data() + t.byte_size)};
      if (t.name == "img_in.scale_weight") o = f32_tensor(t.name, {int64_t(values.size())}, values);
      tensors.push_back(std::move(o));
    }
    const std::string path = (dir / (label + ".safetensors")).string();
    write_all(path, tensors, good->metadata());
    const auto bad = fx::io::Checkpoint::open(path);
    try {
      fx::models::FluxTransformer::load(*bad, WeightFormat::AsStored);
      ADD_FAILURE() << label << ": loaded";
    } catch (const fx::Error& e) {
      EXPECT_EQ(e.status(), FX_ERR_FORMAT) << e.what();
      EXPECT_NE(std::string(e.what()).find("img_in.scale_weight"), std::string::npos) << e.what();
    }
  }
}

// ComfyUI's "all in one" file: the transformer under model.diffusion_model. (scaled fp8 here) and the
// VAE under vae.; inspect lists both components, and each loader takes its own part.
TEST(AllInOneFile, DescribesEveryComponentAndLoadsEachPart) {
  const fs::path dir = fresh_dir("all-in-one");
  const std::string ae_path = tiny(dir, FX_MODEL_AUTOENCODER, "ae.safetensors", 7);
  std::vector<OwnedTensor> vae;
  const auto ae = fx::io::Checkpoint::open(ae_path);
  for (const auto& t : ae->tensors()) vae.push_back(f32_tensor("vae." + t.name, t.shape, as_f32(t)));
  const Fp8Files files = make_fp8(tiny(dir, FX_MODEL_FLUX_TRANSFORMER, "f32.safetensors", 8), dir, true,
                                  "model.diffusion_model.", vae);
  const auto combined = fx::io::Checkpoint::open(files.fp8);

  const nlohmann::json d = fx::models::describe(*combined);
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["key_prefix"], "model.diffusion_model.");
  EXPECT_TRUE(d["problems"].empty()) << d["problems"].dump();
  ASSERT_EQ(d["components"].size(), 2u) << d["components"].dump();
  EXPECT_EQ(d["components"][0]["prefix"], "model.diffusion_model.");
  EXPECT_EQ(d["components"][1]["prefix"], "vae.");
  EXPECT_EQ(d["components"][1]["kind"], "autoencoder");
  EXPECT_EQ(d["components"][1]["tensor_count"], ae->tensors().size());

  const auto reference = fx::io::Checkpoint::open(files.reference);
  EXPECT_LE(relative_l2(forward(*combined, WeightFormat::AsStored), forward(*reference, WeightFormat::F32)), 2e-5);

  const auto from_combined = fx::models::Autoencoder::load(*combined);
  const auto from_own_file = fx::models::Autoencoder::load(*ae);
  EXPECT_EQ(from_combined->config().z_channels, from_own_file->config().z_channels);
  EXPECT_EQ(from_combined->config().ch_mult, from_own_file->config().ch_mult);

  // A tensor under no known prefix is still unexpected.
  std::vector<OwnedTensor> with_stray = vae;
  with_stray.push_back(f32_tensor("stray.weight", {2}, {1.0f, 2.0f}));
  const Fp8Files stray = make_fp8(tiny(dir, FX_MODEL_FLUX_TRANSFORMER, "f32b.safetensors", 8), dir / "..", true,
                                  "model.diffusion_model.", with_stray);
  const nlohmann::json s = fx::models::describe(*fx::io::Checkpoint::open(stray.fp8));
  EXPECT_NE(s["problems"].dump().find("stray.weight"), std::string::npos) << s["problems"].dump();
}

}  // namespace
