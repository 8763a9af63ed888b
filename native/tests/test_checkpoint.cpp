// Checkpoint resolution: single files, sharded indexes, folders, and every way an index and its
// shards can disagree.

#include <gtest/gtest.h>

#include "test_support.h"
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace fx::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

OwnedTensor make_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  OwnedTensor t{name, dtype, std::move(shape), {}};
  size_t count = 1;
  for (int64_t d : t.shape) count *= static_cast<size_t>(d);
  t.bytes.resize(count * dtype_size(dtype));
  for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(seed * 13 + i * 7);
  return t;
}

void write_tensors(const std::string& path, const std::vector<OwnedTensor>& tensors,
                   const std::map<std::string, std::string>& metadata = {}) {
  std::vector<TensorToWrite> views;
  for (const auto& t : tensors) views.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  write_safetensors(path, views, metadata);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

uint64_t total_bytes(const std::vector<OwnedTensor>& tensors) {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.bytes.size();
  return total;
}

class CheckpointTest : public fx::testing::TempDirTest {
 protected:

  // A valid diffusers-style 3-shard checkpoint in `folder` (relative to the test folder).
  // Returns the tensors per shard, in shard order.
  std::vector<std::vector<OwnedTensor>> write_sharded(const std::string& folder) {
    fs::create_directories(dir_ / folder);
    std::vector<std::vector<OwnedTensor>> shards = {
        {make_tensor("x_embedder.weight", DType::BF16, {6, 4}, 1), make_tensor("x_embedder.bias", DType::BF16, {6}, 2)},
        {make_tensor("transformer_blocks.0.attn.to_q.weight", DType::F32, {3, 3}, 3),
         make_tensor("transformer_blocks.0.norm.scale", DType::F16, {}, 4)},
        {make_tensor("proj_out.weight", DType::BF16, {2, 6}, 5), make_tensor("proj_out.empty", DType::F32, {0}, 6)},
    };
    json weight_map = json::object();
    uint64_t total = 0;
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string file = shard_name(s);
      write_tensors(path(folder + "/" + file), shards[s], {{"shard", std::to_string(s)}, {"format", "pt"}});
      for (const auto& t : shards[s]) weight_map[t.name] = file;
      total += total_bytes(shards[s]);
    }
    index_ = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text(index_path(folder), index_.dump(2));
    return shards;
  }
  static std::string shard_name(size_t s) {
    return "diffusion_pytorch_model-0000" + std::to_string(s + 1) + "-of-00003.safetensors";
  }
  std::string index_path(const std::string& folder) const {
    return path(folder + "/diffusion_pytorch_model.safetensors.index.json");
  }
  // Rewrites the index of `folder` after `edit` changes it.
  template <typename Edit>
  void edit_index(const std::string& folder, Edit edit) {
    edit(index_);
    write_text(index_path(folder), index_.dump(2));
  }

  json index_;
};

struct Failure {
  fx_status status = FX_OK;
  std::string message;
};

Failure open_failure(const std::string& path) {
  try {
    Checkpoint::open(path);
  } catch (const Error& error) {
    return {error.status(), error.what()};
  }
  return {};
}

#define EXPECT_MESSAGE_HAS(failure, part) \
  EXPECT_NE((failure).message.find(part), std::string::npos) << "missing [" << (part) << "] in: " << (failure).message

void expect_holds(const Checkpoint& checkpoint, const std::vector<OwnedTensor>& tensors) {
  ASSERT_EQ(checkpoint.tensors().size(), tensors.size());
  EXPECT_TRUE(std::is_sorted(checkpoint.tensors().begin(), checkpoint.tensors().end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
  for (const OwnedTensor& want : tensors) {
    const Checkpoint::Tensor* got = checkpoint.find(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    EXPECT_EQ(got->name, want.name);
    EXPECT_EQ(got->dtype, want.dtype) << want.name;
    EXPECT_EQ(got->shape, want.shape) << want.name;
    ASSERT_EQ(got->byte_size, want.bytes.size()) << want.name;
    if (!want.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(got->data(), want.bytes.data(), want.bytes.size())) << want.name;
    }
    EXPECT_EQ(got->element_count() * dtype_size(got->dtype), got->byte_size) << want.name;
  }
}

// ---- single files and folders ------------------------------------------------------------------------

TEST_F(CheckpointTest, OpensASingleFile) {
  const std::vector<OwnedTensor> tensors = {make_tensor("img_in.weight", DType::BF16, {4, 2}, 1),
                                            make_tensor("img_in.bias", DType::BF16, {4}, 2),
                                            make_tensor("a", DType::F32, {}, 3)};
  write_tensors(path("flux1-dev.safetensors"), tensors, {{"format", "pt"}});
  auto checkpoint = Checkpoint::open(path("flux1-dev.safetensors"));
  EXPECT_EQ(checkpoint->source(), Checkpoint::Source::File);
  EXPECT_EQ(checkpoint->path(), path("flux1-dev.safetensors"));
  EXPECT_EQ(checkpoint->files().size(), 1u);
  expect_holds(*checkpoint, tensors);
  EXPECT_EQ(checkpoint->metadata().at("format"), "pt");
  EXPECT_FALSE(checkpoint->config().has_value());
}

TEST_F(CheckpointTest, FindUsesExactNames) {
  const std::vector<OwnedTensor> tensors = {make_tensor("b", DType::U8, {1}, 1), make_tensor("b.c", DType::U8, {1}, 2),
                                            make_tensor("d", DType::U8, {1}, 3)};
  write_tensors(path("m.safetensors"), tensors);
  auto checkpoint = Checkpoint::open(path("m.safetensors"));
  for (const char* absent : {"", "a", "b.", "bb", "c", "e", "B"}) EXPECT_EQ(checkpoint->find(absent), nullptr) << absent;
  ASSERT_NE(checkpoint->find("b.c"), nullptr);
  EXPECT_EQ(checkpoint->find("b.c")->name, "b.c");
  EXPECT_EQ(checkpoint->find("d")->data()[0], tensors[2].bytes[0]);
}

TEST_F(CheckpointTest, ReadsConfigBesideTheFile) {
  write_tensors(path("m.safetensors"), {make_tensor("w", DType::U8, {1}, 1)});
  write_text(path("config.json"), R"({"_class_name": "FluxTransformer2DModel", "num_layers": 19})");
  auto checkpoint = Checkpoint::open(path("m.safetensors"));
  ASSERT_TRUE(checkpoint->config().has_value());
  EXPECT_EQ(checkpoint->config()->at("num_layers"), 19);
}

TEST_F(CheckpointTest, InvalidConfigIsAFormatErrorNamingIt) {
  write_tensors(path("m.safetensors"), {make_tensor("w", DType::U8, {1}, 1)});
  write_text(path("config.json"), R"({"num_layers": )");
  const Failure failure = open_failure(path("m.safetensors"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, path("config.json"));
}

TEST_F(CheckpointTest, FolderWithOneFile) {
  fs::create_directories(dir_ / "vae");
  const std::vector<OwnedTensor> tensors = {make_tensor("decoder.conv_in.weight", DType::F32, {2, 2}, 1)};
  write_tensors(path("vae/diffusion_pytorch_model.safetensors"), tensors);
  write_text(path("vae/config.json"), R"({"latent_channels": 16})");
  write_text(path("vae/README.md"), "not a checkpoint");
  auto checkpoint = Checkpoint::open(path("vae"));
  EXPECT_EQ(checkpoint->source(), Checkpoint::Source::Folder);
  EXPECT_EQ(checkpoint->path(), path("vae"));
  expect_holds(*checkpoint, tensors);
  ASSERT_TRUE(checkpoint->config().has_value());
  EXPECT_EQ(checkpoint->config()->at("latent_channels"), 16);
}

TEST_F(CheckpointTest, FolderFollowsSymlinkedFiles) {
  // Hugging Face cache snapshots hold symlinks to blobs stored elsewhere.
  fs::create_directories(dir_ / "blobs");
  fs::create_directories(dir_ / "snapshot");
  const std::vector<OwnedTensor> tensors = {make_tensor("w", DType::F16, {3}, 1)};
  write_tensors(path("blobs/3f2a9c"), tensors);
  fs::create_symlink("../blobs/3f2a9c", dir_ / "snapshot" / "model.safetensors");
  expect_holds(*Checkpoint::open(path("snapshot")), tensors);
}

TEST_F(CheckpointTest, EmptyFolderIsNotFound) {
  fs::create_directories(dir_ / "empty");
  const Failure failure = open_failure(path("empty"));
  EXPECT_EQ(failure.status, FX_ERR_NOT_FOUND);
  EXPECT_MESSAGE_HAS(failure, path("empty"));
  EXPECT_MESSAGE_HAS(failure, "no *.safetensors");
}

TEST_F(CheckpointTest, FolderWithTwoFilesAndNoIndexListsThem) {
  fs::create_directories(dir_ / "two");
  write_tensors(path("two/ae.safetensors"), {make_tensor("w", DType::U8, {1}, 1)});
  write_tensors(path("two/flux1-dev.safetensors"), {make_tensor("v", DType::U8, {1}, 1)});
  const Failure failure = open_failure(path("two"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, path("two"));
  EXPECT_MESSAGE_HAS(failure, "\"ae.safetensors\", \"flux1-dev.safetensors\"");
}

TEST_F(CheckpointTest, FolderWithTwoIndexesListsThem) {
  write_sharded("t");
  fs::copy_file(index_path("t"), path("t/other.safetensors.index.json"));
  const Failure failure = open_failure(path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, "\"diffusion_pytorch_model.safetensors.index.json\", \"other.safetensors.index.json\"");
}

TEST_F(CheckpointTest, MissingPathIsNotFound) {
  for (const char* missing : {"nope.safetensors", "nope.safetensors.index.json"}) {
    const Failure failure = open_failure(path(missing));
    EXPECT_EQ(failure.status, FX_ERR_NOT_FOUND) << failure.message;
    EXPECT_MESSAGE_HAS(failure, path(missing));
  }
}

TEST_F(CheckpointTest, CorruptSingleFileNamesIt) {
  write_text(path("bad.safetensors"), "this is not a safetensors file at all");
  const Failure failure = open_failure(path("bad.safetensors"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, path("bad.safetensors"));
}

// ---- sharded ----------------------------------------------------------------------------------------

TEST_F(CheckpointTest, OpensThreeShardsByIndexAndByFolder) {
  const auto shards = write_sharded("transformer");
  write_text(path("transformer/config.json"), R"({"num_layers": 19})");
  std::vector<OwnedTensor> all;
  for (const auto& shard : shards) all.insert(all.end(), shard.begin(), shard.end());

  auto by_index = Checkpoint::open(index_path("transformer"));
  EXPECT_EQ(by_index->source(), Checkpoint::Source::Index);
  EXPECT_EQ(by_index->files().size(), 3u);
  expect_holds(*by_index, all);
  EXPECT_EQ(by_index->metadata().at("shard"), "0") << "the first shard's metadata wins";
  ASSERT_TRUE(by_index->config().has_value());
  EXPECT_EQ(by_index->config()->at("num_layers"), 19);
  // Each tensor points into the shard the index assigned it to.
  EXPECT_NE(by_index->find("proj_out.weight")->file->path().find(shard_name(2)), std::string::npos);

  auto by_folder = Checkpoint::open(path("transformer"));
  EXPECT_EQ(by_folder->source(), Checkpoint::Source::Folder);
  expect_holds(*by_folder, all);
  ASSERT_TRUE(by_folder->config().has_value());
}

TEST_F(CheckpointTest, IndexWithoutTotalSizeIsAccepted) {
  const auto shards = write_sharded("t");
  edit_index("t", [](json& index) { index.erase("metadata"); });
  EXPECT_EQ(Checkpoint::open(index_path("t"))->tensors().size(), 6u);
}

TEST_F(CheckpointTest, WeightMapNamingTheWrongShard) {
  write_sharded("t");
  edit_index("t", [](json& index) { index["weight_map"]["proj_out.weight"] = shard_name(0); });
  // proj_out.weight is in shard 3 (which the index still names for proj_out.empty), not in shard 1.
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, "\"proj_out.weight\"");
  EXPECT_MESSAGE_HAS(failure, shard_name(2));
  EXPECT_MESSAGE_HAS(failure, shard_name(0));
}

TEST_F(CheckpointTest, MissingShardFile) {
  write_sharded("t");
  fs::remove(path("t/" + shard_name(1)));
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_NOT_FOUND);
  EXPECT_MESSAGE_HAS(failure, path("t/" + shard_name(1)));
  EXPECT_MESSAGE_HAS(failure, index_path("t"));
  // By folder too: the index is found, the shard is not.
  EXPECT_EQ(open_failure(path("t")).status, FX_ERR_NOT_FOUND);
}

TEST_F(CheckpointTest, CorruptShardNamesShardAndIndex) {
  write_sharded("t");
  write_text(path("t/" + shard_name(2)), "garbage");
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, path("t/" + shard_name(2)));
  EXPECT_MESSAGE_HAS(failure, index_path("t"));
}

TEST_F(CheckpointTest, WeightMapEntryMissingFromItsShard) {
  write_sharded("t");
  edit_index("t", [](json& index) { index["weight_map"]["ghost.weight"] = shard_name(1); });
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, "\"ghost.weight\"");
  EXPECT_MESSAGE_HAS(failure, index_path("t"));
  EXPECT_MESSAGE_HAS(failure, "does not hold it");
}

TEST_F(CheckpointTest, ShardTensorMissingFromWeightMap) {
  write_sharded("t");
  edit_index("t", [](json& index) { index["weight_map"].erase("x_embedder.bias"); });
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, "\"x_embedder.bias\"");
  EXPECT_MESSAGE_HAS(failure, path("t/" + shard_name(0)));
  EXPECT_MESSAGE_HAS(failure, "not listed");
}

TEST_F(CheckpointTest, TotalSizeMismatch) {
  write_sharded("t");
  const uint64_t right = index_["metadata"]["total_size"];
  edit_index("t", [](json& index) { index["metadata"]["total_size"] = index["metadata"]["total_size"].get<uint64_t>() + 2; });
  const Failure failure = open_failure(index_path("t"));
  EXPECT_EQ(failure.status, FX_ERR_FORMAT);
  EXPECT_MESSAGE_HAS(failure, index_path("t"));
  EXPECT_MESSAGE_HAS(failure, std::to_string(right + 2));
  EXPECT_MESSAGE_HAS(failure, std::to_string(right));

  edit_index("t", [](json& index) { index["metadata"]["total_size"] = "12"; });
  EXPECT_EQ(open_failure(index_path("t")).status, FX_ERR_FORMAT);
  edit_index("t", [](json& index) { index["metadata"]["total_size"] = -1; });
  EXPECT_EQ(open_failure(index_path("t")).status, FX_ERR_FORMAT);
  // An integral float, as some exporters write it, is the same number.
  edit_index("t", [right](json& index) { index["metadata"]["total_size"] = static_cast<double>(right); });
  EXPECT_NO_THROW(Checkpoint::open(index_path("t")));
}

TEST_F(CheckpointTest, ShardNamesMustStayInTheIndexFolder) {
  write_sharded("t");
  // A real shard outside the folder, which a careless resolver would happily open.
  write_tensors(path("outside.safetensors"), {make_tensor("x_embedder.weight", DType::BF16, {6, 4}, 1)});
  const std::vector<std::string> escaping_names = {"../outside.safetensors", path("outside.safetensors"),
                                                   "sub/x.safetensors", "..", ".", "", "a\\b.safetensors"};
  for (const std::string& escaping : escaping_names) {
    edit_index("t", [&](json& index) { index["weight_map"]["x_embedder.weight"] = escaping; });
    const Failure failure = open_failure(index_path("t"));
    EXPECT_EQ(failure.status, FX_ERR_FORMAT) << escaping << ": " << failure.message;
    EXPECT_MESSAGE_HAS(failure, index_path("t"));
    EXPECT_MESSAGE_HAS(failure, "\"x_embedder.weight\"");
    EXPECT_MESSAGE_HAS(failure, "not a plain file name");
  }
}

TEST_F(CheckpointTest, MalformedIndexes) {
  write_sharded("t");
  const std::string index = index_path("t");
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"weight_map": )", "invalid JSON"},
      {R"([1, 2])", "must be a JSON object"},
      {R"({"metadata": {}})", "no \"weight_map\""},
      {R"({"weight_map": []})", "\"weight_map\" must be an object"},
      {R"({"weight_map": {}})", "lists no tensors"},
      {R"({"weight_map": {"x_embedder.weight": 3}})", "\"x_embedder.weight\""},
      {R"({"metadata": [], "weight_map": {"x_embedder.weight": "a.safetensors"}})", "\"metadata\" must be an object"},
  };
  for (const Case& c : cases) {
    write_text(index, c.text);
    const Failure failure = open_failure(index);
    EXPECT_EQ(failure.status, FX_ERR_FORMAT) << c.text;
    EXPECT_MESSAGE_HAS(failure, index);
    EXPECT_MESSAGE_HAS(failure, c.expected);
  }
}

TEST_F(CheckpointTest, RandomShardingsRoundTrip) {
  std::mt19937 rng(77);
  const std::vector<DType> dtypes = {DType::F32, DType::BF16, DType::F16, DType::U8, DType::I64, DType::F8_E4M3FN};
  for (int round = 0; round < 15; ++round) {
    const std::string folder = "r" + std::to_string(round);
    fs::create_directories(dir_ / folder);
    const size_t shard_count = 1 + rng() % 4;
    std::vector<std::vector<OwnedTensor>> shards(shard_count);
    std::vector<OwnedTensor> all;
    json weight_map = json::object();
    const size_t tensor_count = shard_count + rng() % 12;
    for (size_t i = 0; i < tensor_count; ++i) {
      // Every shard gets at least one tensor; an index cannot name a shard that holds none.
      const size_t shard = i < shard_count ? i : rng() % shard_count;
      std::vector<int64_t> shape(rng() % 4);
      for (auto& d : shape) d = rng() % 5;
      OwnedTensor t = make_tensor("blocks." + std::to_string(rng() % 1000) + "." + std::to_string(i),
                                  dtypes[rng() % dtypes.size()], shape, static_cast<uint8_t>(rng()));
      weight_map[t.name] = "model-" + std::to_string(shard) + ".safetensors";
      shards[shard].push_back(t);
      all.push_back(t);
    }
    for (size_t s = 0; s < shard_count; ++s) {
      write_tensors(path(folder + "/model-" + std::to_string(s) + ".safetensors"), shards[s]);
    }
    const json index = {{"metadata", {{"total_size", total_bytes(all)}}}, {"weight_map", weight_map}};
    write_text(path(folder + "/model.safetensors.index.json"), index.dump());
    auto checkpoint = Checkpoint::open(path(folder));
    EXPECT_EQ(checkpoint->files().size(), shard_count);
    expect_holds(*checkpoint, all);
  }
}

}  // namespace
}  // namespace fx::io
