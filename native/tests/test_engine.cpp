// Engine files (engine/): an engine built from the tiny models gives the outputs of its sources loaded in the
// same formats (bit for bit: the engine holds the very bytes the backend packed), keeps working after its
// checkpoint handle is closed (the weights are used in place from the mapping), and every damaged, foreign or
// misused engine is refused with a reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "flux_test_inputs.h"
#include "core/error.h"
#include "engine/engine_build.h"
#include "engine/engine_format.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/autoencoder.h"
#include "models/flux_transformer.h"
#include "models/lora.h"
#include "models/recognize.h"
#include "models/text_encoders.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using fx::DType;
using fx::backend::WeightFormat;
using nlohmann::json;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string tiny(const fs::path& path, int kind, int layout, uint64_t seed) {
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = kind;
  p.layout = layout;
  p.seed = seed;
  p.guidance = 1;
  fx::models::write_tiny_model(p, path.string());
  return path.string();
}

struct Sources {
  std::unique_ptr<fx::io::Checkpoint> transformer, autoencoder, clip, t5;
};

Sources tiny_sources(const fs::path& dir) {
  Sources s;
  s.transformer = fx::io::Checkpoint::open(tiny(dir / "flux.safetensors", FX_MODEL_FLUX_TRANSFORMER, FX_LAYOUT_BFL, 21));
  s.autoencoder = fx::io::Checkpoint::open(tiny(dir / "ae.safetensors", FX_MODEL_AUTOENCODER, FX_LAYOUT_BFL, 22));
  s.clip = fx::io::Checkpoint::open(tiny(dir / "text_encoder", FX_MODEL_CLIP_TEXT, FX_LAYOUT_DIFFUSERS, 23));
  s.t5 = fx::io::Checkpoint::open(tiny(dir / "text_encoder_2", FX_MODEL_T5_ENCODER, FX_LAYOUT_DIFFUSERS, 24));
  return s;
}

std::string build(const Sources& s, const fs::path& path, WeightFormat precision,
                  WeightFormat t5_precision = WeightFormat::AsStored, std::vector<fx::engine::EmbeddedFile> files = {}) {
  fx::engine::BuildOptions o;
  o.transformer = s.transformer.get();
  o.autoencoder = s.autoencoder.get();
  o.clip = s.clip.get();
  o.t5 = s.t5.get();
  o.precision = precision;
  o.t5_precision = t5_precision;
  o.files = std::move(files);
  o.build_info = {{"test", "engine"}};
  fx::engine::build_engine(o, path.string());
  return path.string();
}

std::vector<int32_t> ids_for(int64_t vocab, int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab - 1));
  ids.back() = static_cast<int32_t>(vocab - 1);  // CLIP pools at the largest id
  return ids;
}

std::vector<float> encode(const fx::models::TextEncoder& model, bool pooled) {
  const int64_t length = 7, hidden = model.config().hidden;
  const auto ids = ids_for(model.config().vocab_size, length, 5);
  std::vector<float> out(static_cast<size_t>(length * hidden + (pooled ? hidden : 0)),
                         std::numeric_limits<float>::quiet_NaN());
  model.encode(ids.data(), 1, length, out.data(), pooled ? out.data() + length * hidden : nullptr);
  return out;
}

std::vector<float> decode(const fx::models::Autoencoder& model) {
  const auto& c = model.config();
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> z(static_cast<size_t>(c.z_channels * 4 * 4));
  for (float& v : z) v = normal(rng);
  const int64_t f = int64_t{1} << (c.ch_mult.size() - 1);
  std::vector<float> pixels(static_cast<size_t>(c.out_channels * 16 * f * f), std::numeric_limits<float>::quiet_NaN());
  model.decode(z.data(), 1, 4, 4, pixels.data());
  return pixels;
}

std::vector<float> flux_out(const fx::models::FluxTransformer& model) {
  return fx::test::forward_on_random_inputs(model, /*li=*/6, /*lt=*/5, /*seed=*/13, /*timestep=*/0.6f);
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

void expect_bitwise_equal(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " [" << i << "]";
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0) << what << " [" << i << "]: " << got[i] << " vs " << want[i];
  }
}

template <typename F>
void expect_refused(F&& f, fx_status status, const std::string& says, const std::string& label) {
  try {
    f();
    ADD_FAILURE() << label << ": not refused";
  } catch (const fx::Error& e) {
    EXPECT_EQ(e.status(), status) << label << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << label << ": " << e.what();
  }
}

TEST(Engine, Bf16EngineGivesTheSourcesOutputsBitForBitAndOutlivesItsHandle) {
  const fs::path dir = fresh_dir("engine-bf16");
  const Sources s = tiny_sources(dir);
  const std::string path = build(s, dir / "tiny.fluxengine", WeightFormat::BF16);

  auto engine = fx::io::Checkpoint::open(path);
  const json d = fx::models::describe(*engine, "flux_transformer");
  ASSERT_TRUE(d.contains("engine")) << d.dump();
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["engine"]["format_version"], fx::engine::kFormatVersion);
  EXPECT_EQ(d["engine"]["precision"], "bf16");
  EXPECT_EQ(d["engine"]["linears"]["double_blocks.0.img_attn.qkv"]["dtype"], "BF16");
  EXPECT_EQ(d["engine"]["build"]["test"], "engine");
  EXPECT_EQ(d["engine"]["components"].size(), 4u);
  // Every packed layer starts on a 64-byte boundary of the file.
  for (const auto& t : engine->tensors())
    if (t.name.find(".weight.panels") != std::string::npos) EXPECT_EQ(t.file_offset() % 64, 0u) << t.name;

  const auto flux = fx::models::FluxTransformer::load(*engine, WeightFormat::AsStored);
  const auto t5 = fx::models::TextEncoder::load(*engine, WeightFormat::AsStored, nullptr, "t5_encoder");
  const auto clip = fx::models::TextEncoder::load(*engine, WeightFormat::AsStored, nullptr, "clip_text");
  const auto ae = fx::models::Autoencoder::load(*engine);
  engine.reset();  // the weights stay mapped for as long as the models use them

  expect_bitwise_equal(flux_out(*flux), flux_out(*fx::models::FluxTransformer::load(*s.transformer, WeightFormat::BF16)),
                       "transformer");
  expect_bitwise_equal(encode(*t5, false), encode(*fx::models::TextEncoder::load(*s.t5, WeightFormat::AsStored), false),
                       "t5");
  expect_bitwise_equal(encode(*clip, true), encode(*fx::models::TextEncoder::load(*s.clip, WeightFormat::AsStored), true),
                       "clip");
  expect_bitwise_equal(decode(*ae), decode(*fx::models::Autoencoder::load(*s.autoencoder)), "autoencoder");
}

TEST(Engine, Fp8EngineQuantisesTheBlocksKeepsTheSensitiveLayersAndStaysClose) {
  const fs::path dir = fresh_dir("engine-fp8");
  const Sources s = tiny_sources(dir);
  const std::string path = build(s, dir / "fp8.fluxengine", WeightFormat::FP8, WeightFormat::FP8);
  const auto engine = fx::io::Checkpoint::open(path);
  const json linears = fx::models::describe(*engine, "flux_transformer")["engine"]["linears"];
  for (const auto& [layer, info] : linears.items())
    EXPECT_EQ(info["dtype"], fx::engine::fp8_keeps_bf16(layer) ? "BF16" : "F8_E4M3") << layer;
  for (const char* kept : {"img_in", "txt_in", "time_in.in_layer", "vector_in.out_layer", "guidance_in.in_layer",
                           "double_blocks.0.img_mod.lin", "single_blocks.1.modulation.lin", "final_layer.linear",
                           "final_layer.adaLN_modulation.1"})
    EXPECT_EQ(linears[kept]["dtype"], "BF16") << kept;
  EXPECT_EQ(linears["single_blocks.0.linear1"]["dtype"], "F8_E4M3");
  EXPECT_EQ(fx::models::describe(*engine, "t5_encoder")["engine"]["linears"]["encoder.block.0.layer.0.SelfAttention.q"]
                ["dtype"],
            "F8_E4M3");

  const auto want = flux_out(*fx::models::FluxTransformer::load(*s.transformer, WeightFormat::F32));
  const auto fp8 = flux_out(*fx::models::FluxTransformer::load(*engine, WeightFormat::AsStored));
  const double error = relative_l2(fp8, want);
  EXPECT_GT(error, 1e-4) << "fp8 weights cannot be exact";
  EXPECT_LT(error, 6e-2);
  // The engine is the load-time FP8 quantisation, less the layers it keeps in bf16: closer than FP8 everywhere.
  const auto all_fp8 = flux_out(*fx::models::FluxTransformer::load(*s.transformer, WeightFormat::FP8));
  EXPECT_LT(error, relative_l2(all_fp8, want) * 1.05);
  const double t5_error = relative_l2(encode(*fx::models::TextEncoder::load(*engine, WeightFormat::AsStored, nullptr,
                                                                            "t5_encoder"),
                                             false),
                                      encode(*fx::models::TextEncoder::load(*s.t5, WeightFormat::F32), false));
  EXPECT_GT(t5_error, 1e-4);
  EXPECT_LT(t5_error, 6e-2);
}

TEST(Engine, CarriesFilesAndIsAPlainSafetensorsFile) {
  const fs::path dir = fresh_dir("engine-files");
  const Sources s = tiny_sources(dir);
  const std::string vocab = "{\"a\": 1, \"b\": 2}";
  const std::string path = build(s, dir / "files.fluxengine", WeightFormat::BF16, WeightFormat::AsStored,
                                 {{"tokenizer/vocab.json", vocab.data(), vocab.size()}, {"empty.txt", nullptr, 0}});
  const auto engine = fx::io::Checkpoint::open(path);
  const auto* file = engine->find("files/tokenizer/vocab.json");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->dtype, DType::U8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->data()), file->byte_size), vocab);
  ASSERT_NE(engine->find("files/empty.txt"), nullptr);
  const json e = fx::models::describe(*engine)["engine"];
  ASSERT_EQ(e["files"].size(), 2u);
  EXPECT_EQ(e["files"][0]["tensor"], "files/tokenizer/vocab.json");
}

// Rewrites the engine at `from` with its metadata's engine JSON changed by `change` (tensors copied as they are).
std::string rewritten(const std::string& from, const fs::path& to, const std::function<void(json&)>& change) {
  const auto engine = fx::io::Checkpoint::open(from);
  json e = json::parse(engine->metadata().at(fx::engine::kMetadataKey));
  change(e);
  // The stream writer keeps the 64-byte alignment, as the builder does.
  fx::io::SafetensorsStreamWriter out(to.string(), 1 << 20);
  for (const auto& t : engine->tensors())
    if (t.name.rfind(fx::io::SafetensorsStreamWriter::kPaddingPrefix, 0) != 0)
      out.add({t.name, t.dtype, t.shape, t.data(), t.byte_size}, 64);
  out.finish({{fx::engine::kMetadataKey, e.dump()}});
  return to.string();
}

TEST(Engine, DamagedForeignAndMisusedEnginesAreRefusedWithAReason) {
  const fs::path dir = fresh_dir("engine-refused");
  const Sources s = tiny_sources(dir);
  const std::string good = build(s, dir / "good.fluxengine", WeightFormat::BF16);
  auto load_flux = [](const std::string& path, WeightFormat format = WeightFormat::AsStored) {
    const auto c = fx::io::Checkpoint::open(path);
    fx::models::FluxTransformer::load(*c, format);
  };

  {  // Truncated: the header's offsets run past the end of the file.
    const fs::path cut = dir / "cut.fluxengine";
    fs::copy_file(good, cut);
    fs::resize_file(cut, fs::file_size(cut) / 2);
    expect_refused([&] { load_flux(cut.string()); }, FX_ERR_FORMAT, "cut.fluxengine", "truncated");
  }
  expect_refused([&] { load_flux(rewritten(good, dir / "v2.fluxengine", [](json& e) { e["format_version"] = 2; })); },
                 FX_ERR_UNSUPPORTED, "build the engine again", "format version");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "gpu.fluxengine", [](json& e) { e["target"]["layout"] = "cuda-sm90.v1"; }));
      },
      FX_ERR_UNSUPPORTED, "cuda-sm90.v1", "another target");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "shape.fluxengine",
                            [](json& e) {
                              e["components"][0]["linears"]["img_in"]["k"] = 66;  // and the model agrees: only the
                              e["components"][0]["config"]["in_channels"] = 66;   // panels' size is wrong
                            }));
      },
      FX_ERR_FORMAT, "bytes", "layer size disagreeing with its panels");
  // Sizes the panels' byte count cannot tell apart (bf16 pads k to even, every layer pads n to 32 rows) are caught
  // against the configuration; so is a bias the layer does not have.
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "odd-k.fluxengine",
                            [](json& e) { e["components"][0]["linears"]["img_in"]["k"] = 63; }));
      },
      FX_ERR_FORMAT, "configuration needs", "k within the padding");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "n-1.fluxengine",
                            [](json& e) { e["components"][0]["linears"]["img_in"]["n"] = 63; }));
      },
      FX_ERR_FORMAT, "configuration needs", "n within the padding");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "bias.fluxengine",
                            [](json& e) { e["components"][0]["linears"]["img_in"]["bias"] = false; }));
      },
      FX_ERR_FORMAT, "no bias", "a bias dropped");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "config.fluxengine",
                            [](json& e) { e["components"][0]["config"]["depth"] = "two"; }));
      },
      FX_ERR_FORMAT, "config", "a configuration of the wrong type");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "deep.fluxengine",
                            [](json& e) { e["components"][0]["config"]["depth"] = 1 << 19; }));
      },
      FX_ERR_FORMAT, "over 1024", "a depth no model has");
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "file.fluxengine", [](json& e) {
          e["files"] = json::array({{{"name", "../escape"}, {"tensor", "files/../escape"}, {"bytes", 1}}});
        }));
      },
      FX_ERR_FORMAT, "plain relative file name", "a carried file escaping its folder");
  {
    const auto c = fx::io::Checkpoint::open(good);
    const auto lora_file = fx::io::Checkpoint::open(s.transformer->path());  // any file: refused before it is read
    expect_refused([&] { fx::models::FluxTransformer::load(*c, WeightFormat::AsStored, fx::backend::Precision::Exact,
                                                           nullptr, {{lora_file.get(), 1.0f}}); },
                   FX_ERR_UNSUPPORTED, "LoRA", "a LoRA at load");
    fx::engine::BuildOptions o;
    o.transformer = c.get();
    expect_refused([&] { fx::engine::build_engine(o, (dir / "again.fluxengine").string()); }, FX_ERR_INVALID_ARGUMENT,
                   "an engine already", "an engine as a source");
  }
  expect_refused(
      [&] {
        load_flux(rewritten(good, dir / "dtype.fluxengine",
                            [](json& e) { e["components"][0]["linears"]["img_in"]["dtype"] = "I64"; }));
      },
      FX_ERR_FORMAT, "dtype", "unknown dtype");
  expect_refused([&] { load_flux(rewritten(good, dir / "kind.fluxengine", [](json& e) { e["components"][0]["kind"] = 7; })); },
                 FX_ERR_FORMAT, "kind", "wrong type");
  expect_refused([&] { load_flux(good, WeightFormat::FP8); }, FX_ERR_UNSUPPORTED, "as stored", "weight format at load");
  {
    const auto c = fx::io::Checkpoint::open(good);
    expect_refused([&] { fx::models::TextEncoder::load(*c, WeightFormat::AsStored); }, FX_ERR_UNSUPPORTED, "",
                   "text encoder of an engine without a kind: the transformer comes first");
  }
  {  // An engine without text encoders has none to give.
    fx::engine::BuildOptions o;
    o.transformer = s.transformer.get();
    const std::string bare = (dir / "bare.fluxengine").string();
    fx::engine::build_engine(o, bare);
    const auto c = fx::io::Checkpoint::open(bare);
    expect_refused([&] { fx::models::TextEncoder::load(*c, WeightFormat::AsStored, nullptr, "t5_encoder"); },
                   FX_ERR_UNSUPPORTED, "holds no t5_encoder", "missing component");
    expect_refused([&] { fx::models::Autoencoder::load(*c); }, FX_ERR_UNSUPPORTED, "holds no autoencoder",
                   "missing autoencoder");
  }
  expect_refused(
      [&] {
        fx::engine::BuildOptions o;
        o.transformer = s.transformer.get();
        o.precision = WeightFormat::F32;
        fx::engine::build_engine(o, (dir / "f32.fluxengine").string());
      },
      FX_ERR_INVALID_ARGUMENT, "bf16 or fp8", "f32 engine");
  EXPECT_FALSE(fs::exists(dir / "f32.fluxengine.tmp"));
}

TEST(Engine, BuildRecordIsAmendedInPlaceWithoutMovingTheWeights) {
  const fs::path dir = fresh_dir("engine-amend");
  const Sources s = tiny_sources(dir);
  const std::string path = build(s, dir / "amend.fluxengine", WeightFormat::BF16);
  const auto size = fs::file_size(path);
  std::vector<float> before;
  {
    const auto engine = fx::io::Checkpoint::open(path);
    before = flux_out(*fx::models::FluxTransformer::load(*engine, WeightFormat::AsStored));
  }
  fx::engine::amend_build_info(path, {{"quality", {{"relative_l2", 0.01}, {"psnr_db", 41.5}}}});
  EXPECT_EQ(fs::file_size(path), size);
  {
    const auto engine = fx::io::Checkpoint::open(path);
    const json e = fx::models::describe(*engine)["engine"];
    EXPECT_EQ(e["build"]["quality"]["psnr_db"], 41.5);
    EXPECT_FALSE(e["build"].contains("test")) << "the record is replaced, not merged";
    expect_bitwise_equal(flux_out(*fx::models::FluxTransformer::load(*engine, WeightFormat::AsStored)), before, "amended");
  }
  expect_refused([&] { fx::engine::amend_build_info(path, {{"padding", std::string(4 << 20, 'x')}}); },
                 FX_ERR_INVALID_ARGUMENT, "more than", "a record too large for the header");
  expect_refused([&] { fx::engine::amend_build_info(path, json::array()); }, FX_ERR_INVALID_ARGUMENT, "object",
                 "not an object");
  expect_refused([&] { fx::engine::amend_build_info((dir / "flux.safetensors").string(), json::object()); },
                 FX_ERR_FORMAT, "not a FluxNative engine", "published weights");
}

TEST(SafetensorsStreamWriter, AlignsWithPaddingTensorsAndRefusesAnOverfullHeader) {
  const fs::path dir = fresh_dir("stream-writer");
  const std::vector<float> a(3, 1.5f), b(16, -2.0f);
  {
    fx::io::SafetensorsStreamWriter out((dir / "aligned.safetensors").string(), 1024);
    out.add({"a", DType::F32, {3}, a.data(), 12});
    out.add({"b", DType::F32, {16}, b.data(), 64}, 64);
    out.finish({{"k", "v"}});
  }
  const auto c = fx::io::Checkpoint::open((dir / "aligned.safetensors").string());
  ASSERT_NE(c->find("b"), nullptr);
  EXPECT_EQ(c->find("b")->file_offset() % 64, 0u);
  EXPECT_EQ(std::memcmp(c->find("b")->data(), b.data(), 64), 0);
  EXPECT_EQ(std::memcmp(c->find("a")->data(), a.data(), 12), 0);
  EXPECT_NE(c->find(std::string(fx::io::SafetensorsStreamWriter::kPaddingPrefix) + "0"), nullptr);
  EXPECT_EQ(c->metadata().at("k"), "v");

  std::vector<std::string> names;
  expect_refused(
      [&] {
        fx::io::SafetensorsStreamWriter out((dir / "full.safetensors").string(), 64);
        for (int i = 0; i < 8; ++i) out.add({"tensor_with_a_long_name_" + std::to_string(i), DType::F32, {3}, a.data(), 12});
        out.finish({});
      },
      FX_ERR_INTERNAL, "reserved", "header over its reserve");
  EXPECT_FALSE(fs::exists(dir / "full.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "full.safetensors.tmp"));
}

}  // namespace
