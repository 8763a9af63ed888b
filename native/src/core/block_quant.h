// ggml's block-quantised weight types, as GGUF files store them (docs/checkpoints.md has the layouts in
// our words). A row of a quantised tensor is a run of blocks; each block holds `elements` values in
// `bytes` bytes, and a value is an integer code times a scale (minus a min for the "_1" and K types):
//
//   Q8_0  32 values, 34 bytes:  f16 d, int8 q[32]                                  x = d·q
//   Q4_0  32 values, 18 bytes:  f16 d, 16 bytes of nibbles                         x = d·(q − 8)
//   Q4_1  32 values, 20 bytes:  f16 d, f16 m, nibbles                              x = d·q + m
//   Q5_0  32 values, 22 bytes:  f16 d, u32 fifth bits, nibbles                     x = d·(q − 16)
//   Q5_1  32 values, 24 bytes:  f16 d, f16 m, u32 fifth bits, nibbles              x = d·q + m
//   (nibbles: byte j holds value j in its low half and value j + 16 in its high half; fifth bit of value
//    i is bit i of the u32)
//   Q4_K 256 values, 144 bytes: f16 d, f16 dmin, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes
//        of nibbles; sub-block s (32 values) is x = d·scale_s·q − dmin·min_s
//   Q5_K 256 values, 176 bytes: as Q4_K plus 32 bytes of fifth bits (value 64c + i of chunk c: bit 2c of
//        byte i for i < 32 of the low sub-block, bit 2c + 1 for the high one)
//   Q6_K 256 values, 210 bytes: 128 bytes of low nibbles, 64 bytes of high bit pairs, int8 scale[16],
//        f16 d; sub-block s (16 values) is x = d·scale_s·(q − 32)
//
// dequantize_blocks is the plain reference (one value at a time, straight from the layout) that every
// faster decoder is tested against; quantize_blocks is a simple round-to-nearest quantiser for the
// project's writers and tests (not ggml's error-minimising one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fx {

// Values are ggml's type ids (as GGUF stores them).
enum class BlockType : int32_t {
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
};

struct BlockLayout {
  BlockType type;
  int elements;  // values per block
  int bytes;     // bytes per block
  const char* name;  // "Q8_0", as ggml names it
};

// Every supported type, in ggml id order.
constexpr BlockLayout kBlockLayouts[] = {
    {BlockType::Q4_0, 32, 18, "Q4_0"},   {BlockType::Q4_1, 32, 20, "Q4_1"},   {BlockType::Q5_0, 32, 22, "Q5_0"},
    {BlockType::Q5_1, 32, 24, "Q5_1"},   {BlockType::Q8_0, 32, 34, "Q8_0"},   {BlockType::Q4_K, 256, 144, "Q4_K"},
    {BlockType::Q5_K, 256, 176, "Q5_K"}, {BlockType::Q6_K, 256, 210, "Q6_K"},
};

const BlockLayout& block_layout(BlockType type);  // throws FX_ERR_INVALID_ARGUMENT outside the enum
// A ggml type id that is one of these types; false otherwise.
bool block_type_from_ggml(uint32_t ggml_type, BlockType* out);
// "Q4_K" -> BlockType::Q4_K (exact spelling); false if unknown.
bool block_type_from_name(std::string_view name, BlockType* out);

// `elements` values (a multiple of the block size) from consecutive blocks. Plain reference.
void dequantize_blocks(BlockType type, const uint8_t* blocks, int64_t elements, float* out);
// `elements` finite values (a multiple of the block size) into consecutive blocks. Round to nearest.
void quantize_blocks(BlockType type, const float* values, int64_t elements, uint8_t* out);

// Q4_K / Q5_K: sub-block s's 6-bit scale and min from the 12 packed bytes.
void k_quant_scale_min(const uint8_t* packed12, int s, int* scale, int* min);

}  // namespace fx
