// The GGUF reader (io/gguf.h): round trips through the project's writer, every kind of corruption refused
// with FX_ERR_FORMAT naming what is wrong, every truncation and random damage refused or harmless; and GGUF
// FLUX transformers (tiny, BFL names, each block type) loaded and run from their stored blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "flux_test_inputs.h"
#include "core/block_quant.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "models/flux_transformer.h"
#include "models/gguf_export.h"
#include "models/recognize.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using fx::BlockType;
using fx::DType;

// A GGUF file built byte by byte, for the corruption tests.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  Bytes& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& pad(size_t alignment) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;  // innermost first, as the file stores it
  uint32_t type;
  uint64_t offset;
};

// header + KV "axes_dim" + tensors + data of `data_bytes` (filled with 0x11).
Bytes gguf(const std::vector<TensorSpec>& tensors, uint64_t data_bytes, uint32_t version = 3) {
  Bytes f;
  f.b = {'G', 'G', 'U', 'F'};
  f.put<uint32_t>(version).put<uint64_t>(tensors.size()).put<uint64_t>(1);
  f.str("axes_dim").put<uint32_t>(8).str("[4, 14, 14]");
  for (const auto& t : tensors) {
    f.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) f.put<uint64_t>(d);
    f.put<uint32_t>(t.type).put<uint64_t>(t.offset);
  }
  f.pad(32);
  f.b.insert(f.b.end(), data_bytes, 0x11);
  return f;
}

fx_status parse_status(const std::vector<uint8_t>& b, std::string* message = nullptr) {
  try {
    fx::io::parse_gguf_header(b.data(), b.size(), "test.gguf");
    return FX_OK;
  } catch (const fx::Error& e) {
    if (message) *message = e.what();
    return e.status();
  }
}

void expect_refused(const std::vector<uint8_t>& b, const std::string& mention) {
  std::string message;
  EXPECT_EQ(parse_status(b, &message), FX_ERR_FORMAT) << mention;
  EXPECT_NE(message.find(mention), std::string::npos) << message;
  EXPECT_NE(message.find("test.gguf"), std::string::npos) << message;
}

TEST(GgufReader, ReadsWhatTheWriterWrites) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / "gguf-roundtrip";
  fs::create_directories(dir);
  std::vector<float> f32(3 * 64);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = 0.25f * static_cast<float>(i) - 3.0f;
  std::vector<uint16_t> f16(64), bf16(64);
  fx::convert(DType::F32, f32.data(), DType::F16, f16.data(), 64, fx::Overflow::Ieee);
  fx::convert(DType::F32, f32.data(), DType::BF16, bf16.data(), 64, fx::Overflow::Ieee);
  std::vector<uint8_t> q8(6 * 34), q4k(144);
  fx::quantize_blocks(BlockType::Q8_0, f32.data(), 192, q8.data());
  std::vector<float> row(256, 0.5f);
  fx::quantize_blocks(BlockType::Q4_K, row.data(), 256, q4k.data());
  const std::string path = (dir / "t.gguf").string();
  fx::io::write_gguf(path,
                     {{"a.weight", DType::F32, std::nullopt, {3, 64}, f32.data(), f32.size() * 4},
                      {"b", DType::F16, std::nullopt, {64}, f16.data(), 128},
                      {"c", DType::BF16, std::nullopt, {64}, bf16.data(), 128},
                      {"q8.weight", DType::F32, BlockType::Q8_0, {3, 64}, q8.data(), q8.size()},
                      {"q4k.weight", DType::F32, BlockType::Q4_K, {1, 256}, q4k.data(), q4k.size()}},
                     {{"axes_dim", "[4, 14, 14]"}}, 64);
  const auto file = fx::io::GgufFile::open(path);
  EXPECT_EQ(file->header().alignment, 64u);
  EXPECT_EQ(file->header().data_start % 64, 0u);
  ASSERT_EQ(file->header().tensors.size(), 5u);
  EXPECT_EQ(file->metadata().at("axes_dim"), "[4, 14, 14]");
  EXPECT_EQ(file->metadata().at("general.alignment"), "64");

  const auto checkpoint = fx::io::Checkpoint::open(path);
  const auto* a = checkpoint->find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{3, 64}));  // ne [64, 3] reversed
  EXPECT_EQ(std::memcmp(a->data(), f32.data(), f32.size() * 4), 0);
  EXPECT_EQ(a->file_offset() % 64, 0u);
  const auto* q = checkpoint->find("q8.weight");
  ASSERT_NE(q, nullptr);
  ASSERT_TRUE(q->block.has_value());
  EXPECT_EQ(*q->block, BlockType::Q8_0);
  EXPECT_EQ(q->byte_size, q8.size());
  EXPECT_EQ(q->element_count(), 192u);
  EXPECT_EQ(std::memcmp(q->data(), q8.data(), q8.size()), 0);
  EXPECT_EQ(std::string(checkpoint->find("q4k.weight")->type_name()), "Q4_K");
  EXPECT_EQ(checkpoint->find("b")->dtype, DType::F16);
  EXPECT_EQ(checkpoint->find("c")->dtype, DType::BF16);
  EXPECT_EQ(checkpoint->metadata().at("axes_dim"), "[4, 14, 14]");
}

TEST(GgufReader, CorruptHeadersAreRefusedNamingWhatIsWrong) {
  const TensorSpec ok{"w", {32, 2}, 8, 0};  // Q8_0, 2 rows of one block: 68 bytes
  ASSERT_EQ(parse_status(gguf({ok}, 68).b), FX_OK);

  auto bad_magic = gguf({ok}, 68);
  bad_magic.b[0] = 'X';
  expect_refused(bad_magic.b, "magic");
  expect_refused(gguf({ok}, 68, 1).b, "version 1");
  expect_refused(gguf({ok}, 68, 0x03000000).b, "big-endian");
  expect_refused(gguf({{"w", {32, 2}, 9, 0}}, 68).b, "ggml type 9");                     // Q8_1
  expect_refused(gguf({{"w", {32, 2}, 99, 0}}, 68).b, "ggml type 99");
  expect_refused(gguf({{"w", {48, 2}, 8, 0}}, 68).b, "not whole Q8_0 blocks");
  expect_refused(gguf({{"w", {32, 2, 1, 1, 1}, 8, 0}}, 68).b, "5 dims");
  expect_refused(gguf({{"w", {32, 2}, 8, 16}}, 68).b, "not a multiple of the alignment");
  expect_refused(gguf({{"w", {32, 3}, 8, 0}}, 68).b, "runs past the end");
  expect_refused(gguf({{"w", {32, uint64_t(1) << 62, 4}, 8, 0}}, 68).b, "overflows");
  expect_refused(gguf({{"w", {32, uint64_t(1) << 63}, 8, 0}}, 68).b, "negative");
  expect_refused(gguf({ok, {"w", {32, 1}, 8, 96}}, 200).b, "appears twice");
  expect_refused(gguf({ok, {"v", {32, 1}, 8, 32}}, 200).b, "overlap");
  expect_refused(gguf({{"", {32, 1}, 8, 0}}, 68).b, "empty name");
  expect_refused(gguf({{"w", {32, 2}, 8, uint64_t(-32)}}, 68).b, "runs past the end");

  // KVs: unknown type, duplicate key, a bad alignment, a count past the file, an array that claims too much.
  auto kv_file = [](const std::function<void(Bytes&)>& kvs, uint64_t count) {
    Bytes f;
    f.b = {'G', 'G', 'U', 'F'};
    f.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(count);
    kvs(f);
    return f.b;
  };
  expect_refused(kv_file([](Bytes& f) { f.str("k").put<uint32_t>(13).put<uint32_t>(0); }, 1), "unknown value type 13");
  expect_refused(kv_file([](Bytes& f) { f.str("k").put<uint32_t>(4).put<uint32_t>(1).str("k").put<uint32_t>(4).put<uint32_t>(2); }, 2),
                 "appears twice");
  expect_refused(kv_file([](Bytes& f) { f.str("general.alignment").put<uint32_t>(4).put<uint32_t>(48); }, 1), "power of two");
  expect_refused(kv_file([](Bytes& f) { f.str("general.alignment").put<uint32_t>(5).put<int32_t>(32); }, 1), "must be a u32");
  expect_refused(kv_file([](Bytes& f) { f.str("k").put<uint32_t>(4).put<uint32_t>(1); }, 1000), "KV count");
  expect_refused(kv_file([](Bytes& f) { f.str("k").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(1ull << 40); }, 1),
                 "more than the file holds");
  expect_refused(kv_file([](Bytes& f) { f.str("k").put<uint32_t>(7).put<uint8_t>(2); }, 1), "bool");
  expect_refused(kv_file([](Bytes& f) { f.put<uint64_t>(2); f.b.push_back(0xC3); f.b.push_back(0x28); f.put<uint32_t>(4).put<uint32_t>(1); }, 1),
                 "UTF-8");
  expect_refused(kv_file([](Bytes& f) { f.put<uint64_t>(uint64_t(1) << 40).put<uint64_t>(0); }, 1), "1 MiB");
}

TEST(GgufReader, EveryTruncationIsRefused) {
  const auto f = gguf({{"w", {32, 2}, 8, 0}, {"v", {64}, 0, 96}}, 96 + 256);
  ASSERT_EQ(parse_status(f.b), FX_OK);
  for (size_t n = 0; n < f.b.size() - 1; ++n) {
    std::vector<uint8_t> cut(f.b.begin(), f.b.begin() + static_cast<ptrdiff_t>(n));
    ASSERT_EQ(parse_status(cut), FX_ERR_FORMAT) << "cut at " << n;
  }
}

// Random byte damage: refused with FX_ERR_FORMAT, or accepted with every promise kept (and the blocks
// then decode). Never a crash, a hang, another status or an exception of another type.
TEST(GgufReader, RandomDamageIsRejectedOrHarmless) {
  const auto f = gguf({{"w", {32, 2}, 8, 0}, {"k", {256}, 12, 96}, {"v", {64}, 1, 256}}, 256 + 128);
  ASSERT_EQ(parse_status(f.b), FX_OK);
  std::mt19937 rng(42);
  int accepted = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<uint8_t> b = f.b;
    const int hits = 1 + static_cast<int>(rng() % 4);
    for (int h = 0; h < hits; ++h) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    try {
      const auto header = fx::io::parse_gguf_header(b.data(), b.size(), "damaged");
      ++accepted;
      for (const auto& t : header.tensors) {
        ASSERT_LE(header.data_start + t.offset + t.byte_size, b.size());
        if (t.block && t.element_count() < 4096) {
          std::vector<float> v(t.element_count());
          fx::dequantize_blocks(*t.block, b.data() + header.data_start + t.offset, static_cast<int64_t>(v.size()), v.data());
        }
      }
    } catch (const fx::Error& e) {
      ASSERT_EQ(e.status(), FX_ERR_FORMAT) << e.what();
    }
  }
  EXPECT_GT(accepted, 0);  // damage to the data section is harmless
}

// ---- GGUF FLUX transformers ----

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> run_flux(const fx::io::Checkpoint& checkpoint, fx::backend::WeightFormat format) {
  const auto model = fx::models::FluxTransformer::load(checkpoint, format);
  return fx::test::forward_on_random_inputs(*model, /*li=*/6, /*lt=*/5, /*seed=*/3, /*timestep=*/0.6f);
}

// The GGUF file's values, decoded, as an f32 safetensors file: what the GGUF model must compute.
std::string decoded_reference(const fx::io::Checkpoint& gguf, const fs::path& path) {
  std::vector<std::vector<float>> values;
  std::vector<fx::io::TensorToWrite> out;
  values.reserve(gguf.tensors().size());
  for (const auto& t : gguf.tensors()) {
    values.emplace_back(t.element_count());
    if (t.block)
      fx::dequantize_blocks(*t.block, t.data(), static_cast<int64_t>(t.element_count()), values.back().data());
    else
      fx::convert(t.dtype, t.data(), DType::F32, values.back().data(), values.back().size(), fx::Overflow::Ieee);
    out.push_back({t.name, DType::F32, t.shape, values.back().data(), values.back().size() * 4});
  }
  fx::io::write_safetensors(path.string(), out, gguf.metadata());
  return path.string();
}

class GgufFlux : public ::testing::TestWithParam<fx::BlockLayout> {};

// Tiny models: hidden 256 (so the K types' 256-value rows fit the attention and MLP weights), head dim
// 128 would need no axes; 4 heads of 64 carry their RoPE axes in the "axes_dim" KV.
TEST_P(GgufFlux, RunsFromItsBlocksAsItsDecodedValuesDo) {
  const BlockType type = GetParam().type;
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / (std::string("gguf-flux-") + GetParam().name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = FX_MODEL_FLUX_TRANSFORMER;
  p.seed = 9;
  p.hidden_size = 256;
  p.num_heads = 4;
  p.depth = 1;
  p.depth_single = 1;
  fx::models::write_tiny_model(p, (dir / "f32.safetensors").string());
  const auto source = fx::io::Checkpoint::open((dir / "f32.safetensors").string());
  const std::string path = (dir / "model.gguf").string();
  fx::models::write_gguf_checkpoint(*source, path, type);

  const auto checkpoint = fx::io::Checkpoint::open(path);
  const nlohmann::json d = fx::models::describe(*checkpoint);
  EXPECT_EQ(d["kind"], "flux_transformer");
  EXPECT_EQ(d["layout"], "bfl");
  EXPECT_TRUE(d["problems"].empty()) << d["problems"].dump();
  EXPECT_GT(d["dtypes"].value(GetParam().name, 0), 0) << d["dtypes"].dump();
  EXPECT_EQ(d["config"]["axes_dim"], nlohmann::json::parse(source->metadata().at("axes_dim")));

  const auto reference = fx::io::Checkpoint::open(decoded_reference(*checkpoint, dir / "decoded.safetensors"));
  const std::vector<float> want = run_flux(*reference, fx::backend::WeightFormat::F32);
  // F32: decoded at load, exact. As stored: Q8_0 and Q4_K run from their blocks (exact f32 arithmetic);
  // the other types are decoded at load to bf16 (one rounding).
  EXPECT_LE(relative_l2(run_flux(*checkpoint, fx::backend::WeightFormat::F32), want), 2e-5);
  // F32: decoded at load, exact. As stored: Q8_0 and Q4_K run from their blocks (f32 arithmetic); the
  // other types are decoded at load to bf16 (one rounding).
  const bool kept = type == BlockType::Q8_0 || type == BlockType::Q4_K;
  const double as_stored = relative_l2(run_flux(*checkpoint, fx::backend::WeightFormat::AsStored), want);
  RecordProperty("as_stored_relative_l2", std::to_string(as_stored));
  EXPECT_LE(as_stored, kept ? 2e-5 : 2e-2);
  // And the quantisation itself is visible against the f32 model it came from (the check can fail).
  EXPECT_GT(relative_l2(want, run_flux(*source, fx::backend::WeightFormat::F32)), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Types, GgufFlux, ::testing::ValuesIn(fx::kBlockLayouts),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
