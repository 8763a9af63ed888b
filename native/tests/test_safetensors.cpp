// safetensors reader/writer: round trips, and every way a header can be wrong producing an
// fx::Error(FX_ERR_FORMAT) that names the file and the tensor at fault.

#include <gtest/gtest.h>

#include "test_support.h"
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace fx::io {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public fx::testing::TempDirTest {};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file assembled by hand, so that the header can be anything at all.
std::vector<uint8_t> raw_file(const std::string& header_json, size_t data_bytes, uint64_t declared_size) {
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(declared_size >> (8 * i));
  bytes.insert(bytes.end(), header_json.begin(), header_json.end());
  for (size_t i = 0; i < data_bytes; ++i) bytes.push_back(static_cast<uint8_t>(i * 7 + 1));
  return bytes;
}
std::vector<uint8_t> raw_file(const std::string& header_json, size_t data_bytes = 0) {
  return raw_file(header_json, data_bytes, header_json.size());
}

struct Failure {
  fx_status status = FX_OK;
  std::string message;
};

// Parses in memory (the fuzzer's path) and from disk (the mmap path); both must fail the same way.
Failure parse_failure(const std::vector<uint8_t>& bytes, const std::string& label) {
  Failure failure;
  try {
    parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), label);
  } catch (const Error& error) {
    failure = {error.status(), error.what()};
  }
  return failure;
}

class SafetensorsCorruptTest : public SafetensorsTest {
 protected:
  // Asserts that `bytes` is rejected with FX_ERR_FORMAT, in memory and from a file, with a message
  // that names the file and contains every one of `expected` (tensor names, numbers).
  void expect_rejected(const std::vector<uint8_t>& bytes, const std::vector<std::string>& expected) {
    const std::string label = "corrupt-" + std::to_string(++counter_) + ".safetensors";
    const Failure in_memory = parse_failure(bytes, label);
    EXPECT_EQ(in_memory.status, FX_ERR_FORMAT) << in_memory.message;
    EXPECT_EQ(in_memory.message.rfind(label + ": ", 0), 0u) << in_memory.message;
    for (const std::string& part : expected) {
      EXPECT_NE(in_memory.message.find(part), std::string::npos) << "missing [" << part << "] in: " << in_memory.message;
    }

    const std::string file = path(label);
    write_bytes(file, bytes);
    try {
      SafetensorsFile::open(file);
      ADD_FAILURE() << "opened a corrupt file; expected: " << in_memory.message;
    } catch (const Error& error) {
      EXPECT_EQ(error.status(), FX_ERR_FORMAT);
      // Same message, with the full path as the label.
      std::string message = error.what();
      EXPECT_EQ(message.rfind(file + ": ", 0), 0u) << message;
      EXPECT_EQ(message.substr(file.size()), in_memory.message.substr(label.size()));
    }
  }
  void expect_rejected(const std::string& header_json, size_t data_bytes, const std::vector<std::string>& expected) {
    expect_rejected(raw_file(header_json, data_bytes), expected);
  }
  int counter_ = 0;
};

const std::vector<DType> kAllDTypes = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3FN, DType::F8_E5M2,
                                       DType::F64, DType::I64, DType::I32,  DType::I16,       DType::I8,
                                       DType::U8,  DType::BOOL, DType::U16, DType::U32,       DType::U64};

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<TensorToWrite> views(const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> out;
  for (const auto& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  return out;
}

uint64_t count_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

OwnedTensor make_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  OwnedTensor t{name, dtype, std::move(shape), {}};
  t.bytes.resize(count_of(t.shape) * dtype_size(dtype));
  for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(seed + i * 31);
  return t;
}

// Checks what the reader sees against what was written, including the byte-level layout rules.
void expect_matches(const SafetensorsFile& file, const std::vector<OwnedTensor>& written,
                    const std::map<std::string, std::string>& metadata) {
  const SafetensorsHeader& header = file.header();
  ASSERT_EQ(header.tensors.size(), written.size());
  EXPECT_EQ(header.metadata, metadata);
  EXPECT_EQ(header.data_start() % 8, 0u) << "data region must start 8-byte aligned";
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < written.size(); ++i) {
    // Tensors come back in data order, which is the order they were written in.
    const TensorEntry& entry = header.tensors[i];
    const OwnedTensor& want = written[i];
    EXPECT_EQ(entry.name, want.name);
    EXPECT_EQ(entry.dtype, want.dtype) << want.name;
    EXPECT_EQ(entry.shape, want.shape) << want.name;
    EXPECT_EQ(entry.begin, expected_begin) << want.name << ": data must be contiguous";
    EXPECT_EQ(entry.byte_size(), want.bytes.size()) << want.name;
    EXPECT_EQ(entry.element_count(), count_of(want.shape)) << want.name;
    if (!want.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(file.tensor_data(entry), want.bytes.data(), want.bytes.size())) << want.name;
    }
    EXPECT_EQ(file.absolute_offset(entry), header.data_start() + entry.begin);
    expected_begin = entry.end;
  }
  EXPECT_EQ(header.data_start() + expected_begin, file.file_size()) << "no bytes after the last tensor";
}

// ---- round trips ----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripsTensorsOfEveryShapeKind) {
  const std::vector<OwnedTensor> tensors = {
      make_tensor("double_blocks.0.img_attn.qkv.weight", DType::BF16, {6, 5}, 1),
      make_tensor("scalar", DType::F32, {}, 2),                 // 0-d
      make_tensor("empty", DType::F16, {3, 0, 2}, 3),           // zero-sized
      make_tensor("odd.bytes", DType::U8, {3}, 4),              // leaves the next block unaligned
      make_tensor("after.odd", DType::F64, {2, 1, 1, 1, 1, 1, 1, 2}, 5),  // FX_MAX_DIMS dims
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode \"quoted\""}};
  write_safetensors(path("model.safetensors"), views(tensors), metadata);
  auto file = SafetensorsFile::open(path("model.safetensors"));
  EXPECT_EQ(file->path(), path("model.safetensors"));
  expect_matches(*file, tensors, metadata);
  EXPECT_FALSE(fs::exists(path("model.safetensors.tmp")));
}

TEST_F(SafetensorsTest, WriterProducesTheReferenceLayoutByteForByte) {
  // What the reference writer produces for the same input: metadata first, tensors in the given
  // order, compact JSON, spaces up to a multiple of 8, then the data with no gaps.
  const std::vector<OwnedTensor> tensors = {make_tensor("z", DType::U8, {3}, 1), make_tensor("a", DType::F16, {1}, 2)};
  write_safetensors(path("golden.safetensors"), views(tensors), {{"format", "pt"}});
  const std::string json_text =
      R"({"__metadata__":{"format":"pt"},"z":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("a":{"dtype":"F16","shape":[1],"data_offsets":[3,5]}})";
  std::string padded = json_text + std::string((8 - json_text.size() % 8) % 8, ' ');
  std::vector<uint8_t> expected = raw_file(padded);
  expected.insert(expected.end(), tensors[0].bytes.begin(), tensors[0].bytes.end());
  expected.insert(expected.end(), tensors[1].bytes.begin(), tensors[1].bytes.end());
  EXPECT_EQ(read_bytes(path("golden.safetensors")), expected);
}

TEST_F(SafetensorsTest, RoundTripsAnEmptyTensorList) {
  write_safetensors(path("none.safetensors"), {});
  auto file = SafetensorsFile::open(path("none.safetensors"));
  EXPECT_TRUE(file->header().tensors.empty());
  EXPECT_TRUE(file->header().metadata.empty());
  EXPECT_EQ(file->header().data_start(), file->file_size());
}

TEST_F(SafetensorsTest, WriterReplacesAnExistingFile) {
  write_bytes(path("m.safetensors"), std::vector<uint8_t>(1000, 0xAB));
  const std::vector<OwnedTensor> tensors = {make_tensor("w", DType::F32, {2}, 9)};
  write_safetensors(path("m.safetensors"), views(tensors));
  expect_matches(*SafetensorsFile::open(path("m.safetensors")), tensors, {});
}

TEST_F(SafetensorsTest, RandomizedRoundTrips) {
  std::mt19937_64 rng(0x5AFE7E45);
  const std::string name_chars = "abcXYZ019._-/ \"\\\t";
  for (int round = 0; round < 60; ++round) {
    const size_t count = rng() % 10;
    std::vector<OwnedTensor> tensors;
    std::set<std::string> names;
    while (tensors.size() < count) {
      std::string name;
      const size_t length = 1 + rng() % 12;
      for (size_t i = 0; i < length; ++i) name += name_chars[rng() % name_chars.size()];
      if (rng() % 4 == 0) name += "\xC3\xA9\xE2\x82\xAC";  // é€: multi-byte UTF-8
      if (name == "__metadata__" || !names.insert(name).second) continue;
      const DType dtype = kAllDTypes[rng() % kAllDTypes.size()];
      std::vector<int64_t> shape(rng() % (FX_MAX_DIMS + 1));
      for (auto& dim : shape) dim = static_cast<int64_t>(rng() % (shape.size() > 3 ? 3 : 6));
      tensors.push_back(make_tensor(name, dtype, shape, static_cast<uint8_t>(rng())));
    }
    std::map<std::string, std::string> metadata;
    for (size_t i = rng() % 3; i > 0; --i) metadata["key" + std::to_string(rng() % 100)] = std::to_string(rng());

    const std::string file = path("random-" + std::to_string(round) + ".safetensors");
    write_safetensors(file, views(tensors), metadata);
    auto opened = SafetensorsFile::open(file);
    // The reader orders by data offset; zero-sized tensors share offsets and are ordered by
    // (begin, end, name), which can differ from the writing order, so compare by name.
    std::vector<OwnedTensor> expected = tensors;
    std::map<std::string, const TensorEntry*> by_name;
    for (const auto& entry : opened->header().tensors) by_name[entry.name] = &entry;
    ASSERT_EQ(by_name.size(), tensors.size()) << "round " << round;
    for (const OwnedTensor& want : tensors) {
      ASSERT_TRUE(by_name.count(want.name)) << want.name;
      const TensorEntry& got = *by_name[want.name];
      EXPECT_EQ(got.dtype, want.dtype);
      EXPECT_EQ(got.shape, want.shape);
      ASSERT_EQ(got.byte_size(), want.bytes.size());
      if (!want.bytes.empty()) {
        EXPECT_EQ(0, std::memcmp(opened->tensor_data(got), want.bytes.data(), want.bytes.size()));
      }
    }
    EXPECT_EQ(opened->header().metadata, metadata);
    EXPECT_EQ(opened->header().data_start() % 8, 0u);
  }
}

// ---- writer input validation ----------------------------------------------------------------------

TEST_F(SafetensorsTest, WriterRejectsBadTensorsAndLeavesNoFile) {
  const std::vector<uint8_t> four(4);
  struct Case {
    const char* why;
    std::vector<TensorToWrite> tensors;
    std::string named;  // what the message must mention
  };
  const std::vector<Case> cases = {
      {"duplicate", {{"w", DType::F32, {1}, four.data(), 4}, {"w", DType::F32, {1}, four.data(), 4}}, "\"w\""},
      {"empty name", {{"", DType::F32, {1}, four.data(), 4}}, "#0"},
      {"reserved name", {{"__metadata__", DType::F32, {1}, four.data(), 4}}, "__metadata__"},
      {"size mismatch", {{"w", DType::F32, {2}, four.data(), 4}}, "needs 8 bytes but 4"},
      {"negative dim", {{"neg", DType::U8, {-4}, four.data(), 4}}, "\"neg\""},
      {"too many dims", {{"deep", DType::U8, std::vector<int64_t>(FX_MAX_DIMS + 1, 1), four.data(), 1}}, "\"deep\""},
      {"null data", {{"null", DType::U8, {4}, nullptr, 4}}, "NULL"},
      {"bad dtype", {{"odd", static_cast<DType>(9999), {1}, four.data(), 4}}, "\"odd\""},
      {"huge shape", {{"huge", DType::F32, {int64_t(1) << 62, 8}, four.data(), 4}}, "\"huge\""},
      {"bad utf8", {{"bad\xFF", DType::U8, {4}, four.data(), 4}}, "UTF-8"},
  };
  for (const Case& c : cases) {
    const std::string file = path("bad.safetensors");
    try {
      write_safetensors(file, c.tensors);
      ADD_FAILURE() << c.why << ": accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.status(), FX_ERR_INVALID_ARGUMENT) << c.why;
      const std::string message = error.what();
      EXPECT_NE(message.find(file), std::string::npos) << c.why << ": " << message;
      EXPECT_NE(message.find(c.named), std::string::npos) << c.why << ": " << message;
    }
    EXPECT_FALSE(fs::exists(file)) << c.why;
    EXPECT_FALSE(fs::exists(file + ".tmp")) << c.why;
  }
}

TEST_F(SafetensorsTest, WriterRejectsNonUtf8Metadata) {
  try {
    write_safetensors(path("m.safetensors"), {}, {{"k", "\xC3"}});
    FAIL() << "accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.what()).find("metadata value"), std::string::npos) << error.what();
  }
}

TEST_F(SafetensorsTest, WriterReportsIoErrorsWithThePath) {
  const std::string file = path("no-such-folder/m.safetensors");
  try {
    write_safetensors(file, {});
    FAIL() << "wrote into a folder that does not exist";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_IO);
    EXPECT_NE(std::string(error.what()).find(file), std::string::npos) << error.what();
  }
}

// ---- mapping ----------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, MappedFileErrorsNameThePath) {
  try {
    MappedFile::open(path("missing.safetensors"));
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_NOT_FOUND);
    EXPECT_NE(std::string(error.what()).find(path("missing.safetensors")), std::string::npos);
  }
  try {
    MappedFile::open(dir_.string());
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_IO);
    EXPECT_NE(std::string(error.what()).find(dir_.string()), std::string::npos);
  }
}

TEST_F(SafetensorsTest, EmptyFileMapsNothingAndIsNotSafetensors) {
  write_bytes(path("empty.safetensors"), {});
  auto mapped = MappedFile::open(path("empty.safetensors"));
  EXPECT_EQ(mapped->size(), 0u);
  EXPECT_EQ(mapped->data(), nullptr);
  try {
    SafetensorsFile::open(path("empty.safetensors"));
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_FORMAT);
    EXPECT_NE(std::string(error.what()).find("empty.safetensors"), std::string::npos);
  }
}

// ---- corrupt headers ------------------------------------------------------------------------------

TEST_F(SafetensorsCorruptTest, TruncationAtEveryKindOfPointNamesFileAndTensor) {
  const std::vector<OwnedTensor> tensors = {make_tensor("a.first", DType::F32, {4}, 1),
                                            make_tensor("b.second", DType::BF16, {8}, 2)};
  write_safetensors(path("whole.safetensors"), views(tensors));
  const std::vector<uint8_t> whole = read_bytes(path("whole.safetensors"));
  const uint64_t data_start = SafetensorsFile::open(path("whole.safetensors"))->header().data_start();

  expect_rejected(std::vector<uint8_t>(), {"too short"});
  expect_rejected(std::vector<uint8_t>(whole.begin(), whole.begin() + 5), {"too short"});
  for (size_t cut : {size_t(8), size_t(9), size_t(data_start / 2), size_t(data_start - 1)}) {
    expect_rejected(std::vector<uint8_t>(whole.begin(), whole.begin() + cut), {"truncated"});
  }
  // Cut inside "b.second"'s data (it comes after "a.first"'s 16 bytes).
  for (size_t cut : {size_t(data_start), size_t(data_start + 16), size_t(whole.size() - 1)}) {
    const std::string culprit = cut < data_start + 16 ? "\"a.first\"" : "\"b.second\"";
    expect_rejected(std::vector<uint8_t>(whole.begin(), whole.begin() + cut), {culprit, "past the end", "truncated"});
  }
}

TEST_F(SafetensorsCorruptTest, HeaderLengthBeyondFileOrLimit) {
  expect_rejected(raw_file("{}", 0, 1000), {"header length 1000", "truncated"});
  // Over the limit, in a file far too small to hold it: the limit is what gets reported.
  expect_rejected(raw_file("{}", 0, kMaxSafetensorsHeaderBytes + 1), {"exceeds the limit"});
  expect_rejected(raw_file("{}", 0, ~uint64_t(0)), {"exceeds the limit"});
  expect_rejected(raw_file("", 0, 0), {"header is empty"});
}

TEST_F(SafetensorsCorruptTest, HeaderThatIsNotAJsonObject) {
  expect_rejected("{\"a\": ", 0, {"header is not valid JSON"});
  expect_rejected("not json at all", 0, {"header is not valid JSON"});
  expect_rejected("{} trailing", 0, {"header is not valid JSON"});
  expect_rejected("[1, 2, 3]", 0, {"must be a JSON object", "an array"});
  expect_rejected("\"text\"", 0, {"must be a JSON object"});
  expect_rejected("{\"bad\xFF\": 1}", 0, {"header is not valid JSON"});  // invalid UTF-8
  expect_rejected(std::string(100000, '[') + std::string(100000, ']'), 0, {"deeper than"});
}

TEST_F(SafetensorsCorruptTest, EntryKeysMustBeExactlyDtypeShapeOffsets) {
  expect_rejected(R"({"w": [1]})", 0, {"\"w\"", "must be a JSON object"});
  expect_rejected(R"({"w": {"shape": [1], "data_offsets": [0, 1]}})", 1, {"\"w\"", "missing key \"dtype\""});
  expect_rejected(R"({"w": {"dtype": "U8", "data_offsets": [0, 1]}})", 1, {"\"w\"", "missing key \"shape\""});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1]}})", 1, {"\"w\"", "missing key \"data_offsets\""});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": 0}})", 1,
                  {"\"w\"", "unexpected key \"extra\""});
}

TEST_F(SafetensorsCorruptTest, EntryValuesOfTheWrongType) {
  expect_rejected(R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 1]}})", 1, {"\"w\"", "\"dtype\" must be a string"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": "1", "data_offsets": [0, 1]}})", 1, {"\"w\"", "\"shape\" must be an array"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": ["1"], "data_offsets": [0, 1]}})", 1, {"\"w\"", "shape dim 0"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}})", 1, {"\"w\"", "shape dim 0"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}})", 2, {"\"w\"", "[begin, end]"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": {"a": 0}}})", 1, {"\"w\"", "[begin, end]"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": ["0", 1]}})", 1, {"\"w\"", "begin must be"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.5]}})", 1, {"\"w\"", "end must be"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}})", 1, {"\"w\"", "begin must be"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 18446744073709551616]}})", 1,
                  {"\"w\"", "end must be"});  // does not fit uint64: nlohmann makes it a float
}

TEST_F(SafetensorsCorruptTest, UnknownDtype) {
  expect_rejected(R"({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})", 16, {"\"w\"", "unknown dtype \"F128\""});
  expect_rejected(R"({"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", 4, {"\"w\"", "unknown dtype"});
}

TEST_F(SafetensorsCorruptTest, BadShapes) {
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [2, -1], "data_offsets": [0, 0]}})", 0, {"\"w\"", "shape dim 1", "-1"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 1]}})", 1,
                  {"\"w\"", "9 dims"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [9223372036854775808], "data_offsets": [0, 0]}})", 0,
                  {"\"w\"", "larger than a 64-bit signed integer"});
}

TEST_F(SafetensorsCorruptTest, ElementCountOverflow) {
  // 2^62 * 4 elements overflows 64 bits; 2^62 F32 elements fit but their bytes do not.
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})", 0,
                  {"\"w\"", "more elements"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0,
                  {"\"w\"", "more elements"});
  // Empty because of the 0, yet the other dims' product would overflow any stride computation.
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})", 0,
                  {"\"w\"", "more elements"});
  // The largest products that do fit are fine when empty.
  auto fine = raw_file(R"({"w": {"dtype": "U8", "shape": [9223372036854775807, 0], "data_offsets": [0, 0]}})");
  EXPECT_EQ(parse_safetensors_header(fine.data(), fine.size(), fine.size(), "x").tensors.at(0).element_count(), 0u);
}

TEST_F(SafetensorsCorruptTest, SizeMismatchNamesShapeDtypeAndBytes) {
  expect_rejected(R"({"double_blocks.0.img_attn.qkv.weight": {"dtype": "BF16", "shape": [9216, 3072], "data_offsets": [0, 100]}})",
                  100,
                  {"tensor \"double_blocks.0.img_attn.qkv.weight\": data_offsets [0, 100] hold 100 bytes but BF16 "
                   "[9216, 3072] needs 56623104"});
  expect_rejected(R"({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 8]}})", 8, {"\"s\"", "F32 [] needs 4"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [5, 4]}})", 8, {"\"w\"", "end before they begin"});
}

TEST_F(SafetensorsCorruptTest, OffsetsOutsideTheFile) {
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [10, 14]}})", 12, {"\"w\"", "[10, 14]", "holds 12 bytes"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [13, 13]}})", 12, {"\"w\"", "past the end"});
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 18446744073709551615]}})", 4,
                  {"\"w\""});
}

TEST_F(SafetensorsCorruptTest, OverlappingTensorsNameBoth) {
  expect_rejected(R"({"x": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                      "y": {"dtype": "U8", "shape": [8], "data_offsets": [7, 15]}})",
                  16, {"\"x\" [0, 8]", "\"y\" [7, 15]", "overlap"});
  // A tensor nested inside a larger one, after a third that does not overlap anything.
  expect_rejected(R"({"big": {"dtype": "U8", "shape": [8], "data_offsets": [2, 10]},
                      "first": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                      "inner": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                  10, {"\"big\"", "\"inner\"", "overlap"});
  // Identical ranges.
  expect_rejected(R"({"p": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]},
                      "q": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})",
                  4, {"\"p\"", "\"q\"", "overlap"});
}

TEST_F(SafetensorsCorruptTest, EmptyRangesOverlapNothingAndGapsAreAllowed) {
  auto bytes = raw_file(R"({"x": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                            "e1": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                            "e2": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]},
                            "after.gap": {"dtype": "U8", "shape": [2], "data_offsets": [10, 12]}}   )",
                        12);
  const SafetensorsHeader header = parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), "ok");
  ASSERT_EQ(header.tensors.size(), 4u);
  // Data order, ties broken by end then name.
  EXPECT_EQ(header.tensors[0].name, "x");
  EXPECT_EQ(header.tensors[1].name, "e1");
  EXPECT_EQ(header.tensors[2].name, "e2");
  EXPECT_EQ(header.tensors[3].name, "after.gap");
}

TEST_F(SafetensorsCorruptTest, DuplicateKeysAreRejectedNotLastOneWins) {
  expect_rejected(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                      "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                  2, {"\"w\"", "appears twice"});
  expect_rejected(R"({"w": {"dtype": "U8", "dtype": "F32", "shape": [1], "data_offsets": [0, 1]}})", 1,
                  {"\"w\"", "\"dtype\" appears twice"});
  expect_rejected(R"({"__metadata__": {"a": "1", "a": "2"}})", 0, {"\"a\" appears twice"});
}

TEST_F(SafetensorsCorruptTest, EmptyTensorName) {
  expect_rejected(R"({"": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})", 1, {"empty name"});
}

TEST_F(SafetensorsCorruptTest, MetadataMustMapStringsToStrings) {
  expect_rejected(R"({"__metadata__": {"format": "pt", "step": 5}})", 0, {"\"step\"", "must be a string", "5"});
  expect_rejected(R"({"__metadata__": {"nested": {"a": "b"}}})", 0, {"\"nested\"", "an object"});
  expect_rejected(R"({"__metadata__": ["pt"]})", 0, {"\"__metadata__\" must be an object"});
  expect_rejected(R"({"__metadata__": null})", 0, {"\"__metadata__\" must be an object", "null"});

  auto fine = raw_file(R"({"__metadata__": {"format": "pt"}, "w": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}})", 1);
  const SafetensorsHeader header = parse_safetensors_header(fine.data(), fine.size(), fine.size(), "ok");
  EXPECT_EQ(header.metadata.at("format"), "pt");
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].element_count(), 1u);  // 0-d: one element
}

TEST_F(SafetensorsCorruptTest, HostileNamesAreEscapedAndClippedInMessages) {
  const std::string long_name(5000, 'n');
  expect_rejected("{\"" + long_name + "\": 1}", 0, {"\"nnnn", "n\"...", "must be a JSON object"});
  const Failure control = parse_failure(raw_file("{\"a\\nb\\u0000c\": 1}"), "f");
  EXPECT_NE(control.message.find(R"("a\nb\u0000c")"), std::string::npos) << control.message;
  EXPECT_LT(parse_failure(raw_file("{\"" + long_name + "\": 1}"), "f").message.size(), 400u);
}

TEST_F(SafetensorsCorruptTest, CallerGivingTooFewBytesIsAnArgumentError) {
  const auto bytes = raw_file(R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})", 1);
  try {
    parse_safetensors_header(bytes.data(), 20, bytes.size(), "partial.safetensors");
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), FX_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(error.what()).find("partial.safetensors"), std::string::npos);
  }
  // The header alone is enough: the data need not be in memory to be validated.
  const uint64_t header_end = 8 + (bytes.size() - 9);
  EXPECT_EQ(parse_safetensors_header(bytes.data(), header_end, bytes.size(), "x").tensors.size(), 1u);
}

// Random damage to a valid file must either be rejected with FX_ERR_FORMAT naming the file, or
// yield a header whose every tensor lies inside the file: nothing else (no crash, no other error).
TEST_F(SafetensorsCorruptTest, RandomDamageIsRejectedOrHarmless) {
  const std::vector<OwnedTensor> tensors = {make_tensor("alpha", DType::F32, {3, 2}, 1),
                                            make_tensor("beta", DType::BF16, {5}, 2),
                                            make_tensor("gamma", DType::U8, {}, 3)};
  write_safetensors(path("valid.safetensors"), views(tensors), {{"k", "v"}});
  const std::vector<uint8_t> valid = read_bytes(path("valid.safetensors"));
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = valid;
    const int damage = static_cast<int>(rng() % 4);
    if (damage == 0) {
      bytes.resize(rng() % bytes.size());
    } else if (damage == 1) {
      for (int flips = 1 + rng() % 3; flips > 0; --flips) bytes[rng() % bytes.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    } else if (damage == 2) {
      // Replace a digit inside the JSON with another: offsets and dims change but stay plausible.
      std::vector<size_t> digits;
      for (size_t i = 8; i < bytes.size(); ++i) if (bytes[i] >= '0' && bytes[i] <= '9') digits.push_back(i);
      if (!digits.empty()) bytes[digits[rng() % digits.size()]] = static_cast<uint8_t>('0' + rng() % 10);
    } else {
      bytes.insert(bytes.begin() + 8 + rng() % (bytes.size() - 8), static_cast<uint8_t>(rng()));
    }
    try {
      const SafetensorsHeader header = parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), "damaged");
      for (const TensorEntry& t : header.tensors) {
        ASSERT_LE(t.begin, t.end);
        ASSERT_LE(header.data_start() + t.end, bytes.size());
        ASSERT_EQ(t.byte_size(), t.element_count() * dtype_size(t.dtype));
      }
    } catch (const Error& error) {
      ASSERT_EQ(error.status(), FX_ERR_FORMAT) << error.what();
      ASSERT_EQ(std::string(error.what()).rfind("damaged: ", 0), 0u) << error.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000) << "damage should mostly be detected";
}

}  // namespace
}  // namespace fx::io
