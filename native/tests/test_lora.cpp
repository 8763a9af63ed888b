// LoRA merged at load (models/lora.h) through the C API: the same update written in each of the four
// namings loads to the model whose weights were merged by hand here (a plain double-precision merge in
// BFL terms, with the diffusers row ranges written out explicitly, not taken from the code under test);
// strength, quantisation after merging, and every kind of bad file.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "fluxnative.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace {

using fx::DType;

// One logical update of a BFL weight: rows [row0, row0 + up rows) += alpha/rank · up · down.
struct Update {
  std::string weight;  // BFL name
  int64_t row0 = 0;
  int64_t rank = 0;
  std::vector<float> down, up;  // [rank, in], [rows, rank]
  float alpha = 0;              // 0: none stored (scale 1)
  int64_t rows() const { return static_cast<int64_t>(up.size()) / rank; }
  int64_t in() const { return static_cast<int64_t>(down.size()) / rank; }
  double scale() const { return alpha == 0 ? 1.0 : static_cast<double>(alpha) / static_cast<double>(rank); }
};

std::vector<float> random_values(size_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

class Lora : public fx::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    fx_tiny_model_params p;
    fx_tiny_model_params_init(&p);
    p.kind = FX_MODEL_FLUX_TRANSFORMER;
    p.seed = 7;
    base_ = path("base.safetensors");
    ASSERT_EQ(fx_tiny_model_write(&p, base_.c_str()), FX_OK) << fx_last_error();
    const auto checkpoint = fx::io::Checkpoint::open(base_);
    metadata_ = checkpoint->metadata();   // the tiny model's RoPE axes travel in it
    for (const auto& t : checkpoint->tensors()) {
      std::vector<float> values(static_cast<size_t>(t.element_count()));
      fx::convert(t.dtype, t.data(), DType::F32, values.data(), values.size(), fx::Overflow::Ieee);
      weights_[t.name] = {t.shape, std::move(values)};
    }
    hidden_ = weights_.at("img_in.weight").shape[0];
    mlp_ = weights_.at("double_blocks.0.img_mlp.0.weight").shape[0];
  }

  int64_t cols(const std::string& weight) const { return weights_.at(weight).shape[1]; }

  Update make(const std::string& weight, int64_t row0, int64_t rows, int64_t rank, float alpha, uint32_t seed) const {
    Update u;
    u.weight = weight;
    u.row0 = row0;
    u.rank = rank;
    u.alpha = alpha;
    u.down = random_values(static_cast<size_t>(rank * cols(weight)), seed, 0.3f);
    u.up = random_values(static_cast<size_t>(rows * rank), seed + 1, 0.3f);
    return u;
  }

  // The four updates of the test: the query part of a fused qkv, the MLP part of linear1, the final
  // modulation (whose halves diffusers swaps), and the text projection of a double block.
  std::vector<Update> updates() const {
    const int64_t h = hidden_;
    return {make("double_blocks.0.img_attn.qkv.weight", 0, h, 4, 2.0f, 11),
            make("single_blocks.0.linear1.weight", 3 * h, mlp_, 2, 0.0f, 21),
            make("final_layer.adaLN_modulation.1.weight", 0, 2 * h, 3, 6.0f, 31),
            make("double_blocks.0.txt_attn.proj.weight", 0, h, 2, 1.0f, 41)};
  }

  // The reference: the base weights with each update added in double and rounded once, written as a model.
  std::string merged_model(const std::vector<Update>& list, double strength, DType dtype, const std::string& name) {
    // Merged onto the base as the file holds it: a bf16 file's weights are the bf16-rounded values.
    std::map<std::string, Tensor> merged = weights_;
    for (auto& [_, t] : merged) {
      std::vector<uint8_t> stored(t.values.size() * fx::dtype_size(dtype));
      fx::convert(DType::F32, t.values.data(), dtype, stored.data(), t.values.size(), fx::Overflow::Ieee);
      fx::convert(dtype, stored.data(), DType::F32, t.values.data(), t.values.size(), fx::Overflow::Ieee);
    }
    for (const Update& u : list) {
      Tensor& w = merged.at(u.weight);
      const int64_t k = w.shape[1];
      for (int64_t j = 0; j < u.rows(); ++j) {
        for (int64_t i = 0; i < k; ++i) {
          double delta = 0;
          for (int64_t r = 0; r < u.rank; ++r)
            delta += static_cast<double>(u.up[static_cast<size_t>(j * u.rank + r)]) * u.down[static_cast<size_t>(r * k + i)];
          float& x = w.values[static_cast<size_t>((u.row0 + j) * k + i)];
          x = static_cast<float>(x + strength * u.scale() * delta);
        }
      }
    }
    return write(merged, dtype, name);
  }

  std::string write(const std::map<std::string, Tensor>& tensors, DType dtype, const std::string& name,
                    bool model = true) {
    std::vector<std::vector<uint8_t>> bytes;
    std::vector<fx::io::TensorToWrite> out;
    bytes.reserve(tensors.size());
    for (const auto& [tensor_name, t] : tensors) {
      bytes.emplace_back(t.values.size() * fx::dtype_size(dtype));
      fx::convert(DType::F32, t.values.data(), dtype, bytes.back().data(), t.values.size(), fx::Overflow::Ieee);
      out.push_back({tensor_name, dtype, t.shape, bytes.back().data(), bytes.back().size()});
    }
    const std::string file = path(name);
    fx::io::write_safetensors(file, out, model ? metadata_ : std::map<std::string, std::string>{});
    return file;
  }

  // A LoRA file: every tensor given by name.
  std::string write_lora(const std::map<std::string, Tensor>& tensors, const std::string& name) {
    return write(tensors, DType::F32, name, false);
  }

  // The full-height `up` of an update for a naming that can only name the whole weight (zeros elsewhere).
  std::vector<float> whole_up(const Update& u) const {
    const int64_t rows = weights_.at(u.weight).shape[0];
    std::vector<float> up(static_cast<size_t>(rows * u.rank), 0.0f);
    std::copy(u.up.begin(), u.up.end(), up.begin() + u.row0 * u.rank);
    return up;
  }

  static std::string bfl_module(const std::string& weight) { return weight.substr(0, weight.size() - 7); }

  void add(std::map<std::string, Tensor>& file, const std::string& module, const std::string& down_suffix,
           const std::string& up_suffix, const Update& u, const std::vector<float>& up, float alpha) const {
    file[module + down_suffix] = {{u.rank, u.in()}, u.down};
    file[module + up_suffix] = {{static_cast<int64_t>(up.size()) / u.rank, u.rank}, up};
    if (alpha != 0) file[module + ".alpha"] = {{}, {alpha}};
  }

  std::string bfl_file(const std::vector<Update>& list) {
    std::map<std::string, Tensor> file;
    for (const Update& u : list)
      add(file, "diffusion_model." + bfl_module(u.weight), ".lora_A.weight", ".lora_B.weight", u, whole_up(u), u.alpha);
    return write_lora(file, "bfl.safetensors");
  }

  std::string kohya_file(const std::vector<Update>& list) {
    std::map<std::string, Tensor> file;
    for (const Update& u : list) {
      std::string module = bfl_module(u.weight);
      std::replace(module.begin(), module.end(), '.', '_');
      add(file, "lora_unet_" + module, ".lora_down.weight", ".lora_up.weight", u, whole_up(u), u.alpha);
    }
    return write_lora(file, "kohya.safetensors");
  }

  // diffusers/PEFT: no alpha in the file, so the scale is folded into up; the rows are written out here.
  std::string diffusers_file(const std::vector<Update>& list) {
    const int64_t h = hidden_;
    std::map<std::string, Tensor> file;
    for (const Update& u : list) {
      std::vector<float> up = u.up;
      for (float& x : up) x = static_cast<float>(x * u.scale());
      std::string module;
      if (u.weight == "double_blocks.0.img_attn.qkv.weight") module = "transformer_blocks.0.attn.to_q";
      if (u.weight == "single_blocks.0.linear1.weight") module = "single_transformer_blocks.0.proj_mlp";
      if (u.weight == "double_blocks.0.txt_attn.proj.weight") module = "transformer_blocks.0.attn.to_add_out";
      if (u.weight == "final_layer.adaLN_modulation.1.weight") {
        module = "norm_out.linear";  // diffusers stores (scale, shift); BFL (shift, scale)
        std::vector<float> swapped(up.size());
        std::copy(up.begin() + h * u.rank, up.end(), swapped.begin());
        std::copy(up.begin(), up.begin() + h * u.rank, swapped.begin() + h * u.rank);
        up = swapped;
      }
      EXPECT_FALSE(module.empty()) << u.weight;
      add(file, "transformer." + module, ".lora_A.weight", ".lora_B.weight", u, up, 0.0f);
    }
    return write_lora(file, "diffusers.safetensors");
  }

  // XLabs names only the attention of double blocks: the qkv (lora1: image) and proj (lora2: text) updates.
  std::string xlabs_file(const std::vector<Update>& list) {
    std::map<std::string, Tensor> file;
    for (const Update& u : list) {
      std::vector<float> up = whole_up(u);
      for (float& x : up) x = static_cast<float>(x * u.scale());
      const std::string module = u.weight == "double_blocks.0.img_attn.qkv.weight" ? "double_blocks.0.processor.qkv_lora1"
                                                                                     : "double_blocks.0.processor.proj_lora2";
      add(file, module, ".down.weight", ".up.weight", u, up, 0.0f);
    }
    return write_lora(file, "xlabs.safetensors");
  }

  // Loads `model` (with LoRAs) and runs one forward on fixed random inputs.
  fx_status run(const std::string& model, const std::vector<std::pair<std::string, float>>& loras, std::vector<float>& out,
                int32_t format = FX_WEIGHTS_AS_STORED) {
    fx_checkpoint* checkpoint = nullptr;
    EXPECT_EQ(fx_checkpoint_open(model.c_str(), &checkpoint), FX_OK) << fx_last_error();
    std::vector<fx_checkpoint*> opened;
    std::vector<fx_lora> list;
    for (const auto& [file, strength] : loras) {
      fx_checkpoint* lora = nullptr;
      EXPECT_EQ(fx_checkpoint_open(file.c_str(), &lora), FX_OK) << fx_last_error();
      opened.push_back(lora);
      list.push_back({lora, strength});
    }
    fx_flux_load_params load;
    fx_flux_load_params_init(&load);
    load.weight_format = format;
    load.loras = list.data();
    load.lora_count = static_cast<int32_t>(list.size());
    fx_flux_model* flux = nullptr;
    const fx_status status = fx_flux_model_load(checkpoint, &load, &flux);
    last_error_ = status == FX_OK ? "" : fx_last_error();
    fx_checkpoint_close(checkpoint);
    for (fx_checkpoint* c : opened) fx_checkpoint_close(c);
    if (status != FX_OK) return status;

    const int Li = 6, Lt = 3;
    const auto img = random_values(Li * 64, 5, 1.0f), txt = random_values(Lt * 32, 6, 1.0f), y = random_values(32, 7, 1.0f);
    std::vector<float> img_ids(Li * 3), txt_ids(Lt * 3, 0.0f);
    for (int n = 0; n < Li; ++n) img_ids[n * 3 + 1] = static_cast<float>(n / 3), img_ids[n * 3 + 2] = static_cast<float>(n % 3);
    const float t = 0.6f, g = 3.5f;
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
    out.assign(Li * 64, std::nanf(""));
    const fx_status forward = fx_flux_forward(flux, &in, out.data(), out.size());
    fx_flux_model_free(flux);
    return forward;
  }

  std::vector<float> run_ok(const std::string& model, const std::vector<std::pair<std::string, float>>& loras = {},
                            int32_t format = FX_WEIGHTS_AS_STORED) {
    std::vector<float> out;
    EXPECT_EQ(run(model, loras, out, format), FX_OK) << last_error_;
    for (float v : out) EXPECT_TRUE(std::isfinite(v));
    return out;
  }

  static double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += double(b[i]) * b[i];
    }
    return std::sqrt(num / den);
  }

  std::string base_, last_error_;
  std::map<std::string, Tensor> weights_;
  std::map<std::string, std::string> metadata_;
  int64_t hidden_ = 0, mlp_ = 0;
};

TEST_F(Lora, EveryNamingMergesToTheHandMergedModel) {
  const std::vector<Update> all = updates();
  const std::vector<float> want = run_ok(merged_model(all, 1.0, DType::F32, "merged.safetensors"));
  const std::vector<float> base = run_ok(base_);
  ASSERT_GT(rel_l2(base, want), 1e-3) << "the updates must change the output for the test to mean anything";

  for (const auto& [naming, file] : std::vector<std::pair<std::string, std::string>>{
           {"bfl", bfl_file(all)}, {"kohya", kohya_file(all)}, {"diffusers", diffusers_file(all)}}) {
    const std::vector<float> got = run_ok(base_, {{file, 1.0f}});
    EXPECT_LT(rel_l2(got, want), 1e-6) << naming;
  }
  const std::vector<Update> attention = {all[0], all[3]};
  const std::vector<float> want_attention = run_ok(merged_model(attention, 1.0, DType::F32, "merged-attn.safetensors"));
  EXPECT_LT(rel_l2(run_ok(base_, {{xlabs_file(attention), 1.0f}}), want_attention), 1e-6) << "xlabs";
}

TEST_F(Lora, StrengthScalesAndSeveralFilesAdd) {
  const std::vector<Update> all = updates();
  const std::string kohya = kohya_file(all);
  EXPECT_LT(rel_l2(run_ok(base_, {{kohya, 0.5f}}), run_ok(merged_model(all, 0.5, DType::F32, "half.safetensors"))), 1e-6);
  EXPECT_EQ(run_ok(base_, {{kohya, 0.0f}}), run_ok(base_));
  // The same update twice at 0.25 each is the update at 0.5 (to rounding); +1 then −1 is the base model.
  const std::string bfl = bfl_file(all);
  EXPECT_LT(rel_l2(run_ok(base_, {{kohya, 0.25f}, {bfl, 0.25f}}), run_ok(base_, {{kohya, 0.5f}})), 1e-6);
  EXPECT_LT(rel_l2(run_ok(base_, {{kohya, 1.0f}, {bfl, -1.0f}}), run_ok(base_)), 1e-6);
}

TEST_F(Lora, QuantisesAfterMerging) {
  const std::vector<Update> all = updates();
  const std::string merged = merged_model(all, 1.0, DType::F32, "merged.safetensors");
  // kohya keeps alpha apart from up, so the merged weights are bit-for-bit the hand merge's (folding the scale
  // into up, as the diffusers file must, moves some by an ulp, which can move a whole row's FP8 scale).
  const std::string lora = kohya_file(all);
  // FP8 of the merged weights, and bf16 "as stored" for a bf16 file: exactly what the merged model gives.
  EXPECT_EQ(run_ok(base_, {{lora, 1.0f}}, FX_WEIGHTS_FP8), run_ok(merged, {}, FX_WEIGHTS_FP8));
  const std::string base_bf16 = write(weights_, DType::BF16, "base-bf16.safetensors");
  const std::string merged_bf16 = merged_model(all, 1.0, DType::BF16, "merged-bf16.safetensors");
  EXPECT_EQ(run_ok(base_bf16, {{lora, 1.0f}}), run_ok(merged_bf16));
}

TEST_F(Lora, BadFilesAreRefusedNamingWhatIsWrong) {
  const Update u = updates()[0];
  auto refused = [&](const std::map<std::string, Tensor>& tensors, fx_status want, const std::string& words) {
    std::vector<float> out;
    const std::string file = write_lora(tensors, "bad.safetensors");
    EXPECT_EQ(run(base_, {{file, 1.0f}}, out), want) << words;
    EXPECT_NE(last_error_.find(words), std::string::npos) << last_error_;
  };
  const Tensor down{{u.rank, u.in()}, u.down}, up{{3 * hidden_, u.rank}, whole_up(u)};
  refused({{"lora_unet_double_blocks_9_img_attn_qkv.lora_down.weight", down},
           {"lora_unet_double_blocks_9_img_attn_qkv.lora_up.weight", up}},
          FX_ERR_FORMAT, "modules this FLUX transformer does not have: lora_unet_double_blocks_9_img_attn_qkv");
  refused({{"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", down},
           {"lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight", {{hidden_, u.rank}, u.up}}},
          FX_ERR_FORMAT, "do not fit double_blocks.0.img_attn.qkv.weight");
  refused({{"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", down}}, FX_ERR_FORMAT, "without its up weight");
  refused({{"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", down},
           {"lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight", up},
           {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", down}},
          FX_ERR_UNSUPPORTED, "text encoders");
  refused({{"transformer.transformer_blocks.0.attn.to_q.lora_A.weight", down},
           {"transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector", {{hidden_}, std::vector<float>(hidden_, 1.0f)}}},
          FX_ERR_UNSUPPORTED, "DoRA");
  refused({{"double_blocks.0.img_attn.qkv.weight", {{3 * hidden_, hidden_}, std::vector<float>(3 * hidden_ * hidden_)}}},
          FX_ERR_FORMAT, "not LoRA down/up/alpha weights: double_blocks.0.img_attn.qkv.weight");

  // A model refused by the C API's own checks.
  fx_checkpoint* checkpoint = nullptr;
  ASSERT_EQ(fx_checkpoint_open(base_.c_str(), &checkpoint), FX_OK);
  fx_flux_load_params load;
  fx_flux_load_params_init(&load);
  load.lora_count = 1;
  fx_flux_model* model = nullptr;
  EXPECT_EQ(fx_flux_model_load(checkpoint, &load, &model), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fx_last_error()).find("loras is NULL"), std::string::npos) << fx_last_error();
  fx_checkpoint_close(checkpoint);
}

}  // namespace
