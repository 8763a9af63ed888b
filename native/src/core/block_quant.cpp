// The block layouts of block_quant.h, decoded one value at a time (the reference) and encoded by
// round-to-nearest (the writers'). Both walk the same index arithmetic, written out per type so that each
// can be read against the layout table in the header.
#include "core/block_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace fx {

namespace {

float f16_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// Stores `value` as f16 and returns what was stored (the encoders quantise against the stored scale).
float put_f16(uint8_t* p, float value) {
  const uint16_t bits = f32_to_f16(value);
  std::memcpy(p, &bits, 2);
  return f16_to_f32(bits);
}

uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

int clamp_round(float v, int lo, int hi) {
  return static_cast<int>(std::clamp(std::nearbyint(v), static_cast<float>(lo), static_cast<float>(hi)));
}

// ---- the 32-value types: value i of a block ----
// Nibble of value i (0..31) in 16 packed bytes: low half for i < 16, high half of byte i − 16 otherwise.
int nibble(const uint8_t* qs, int i) { return i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4; }

void set_nibble(uint8_t* qs, int i, int q) {
  if (i < 16)
    qs[i] = static_cast<uint8_t>((qs[i] & 0xF0) | q);
  else
    qs[i - 16] = static_cast<uint8_t>((qs[i - 16] & 0x0F) | (q << 4));
}

float decode_small(BlockType type, const uint8_t* b, int i) {
  switch (type) {
    case BlockType::Q8_0:
      return f16_at(b) * static_cast<float>(static_cast<int8_t>(b[2 + i]));
    case BlockType::Q4_0:
      return f16_at(b) * static_cast<float>(nibble(b + 2, i) - 8);
    case BlockType::Q4_1:
      return f16_at(b) * static_cast<float>(nibble(b + 4, i)) + f16_at(b + 2);
    case BlockType::Q5_0: {
      const int q = nibble(b + 6, i) | (((u32_at(b + 2) >> i) & 1) << 4);
      return f16_at(b) * static_cast<float>(q - 16);
    }
    case BlockType::Q5_1: {
      const int q = nibble(b + 8, i) | (((u32_at(b + 4) >> i) & 1) << 4);
      return f16_at(b) * static_cast<float>(q) + f16_at(b + 2);
    }
    default:
      fail(FX_ERR_INTERNAL, "decode_small: not a 32-value type");
  }
}

void encode_small(BlockType type, const float* x, uint8_t* b) {
  const int n = 32;
  float lo = x[0], hi = x[0], signed_max = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    if (std::fabs(x[i]) > std::fabs(signed_max)) signed_max = x[i];
  }
  switch (type) {
    case BlockType::Q8_0: {
      const float d = put_f16(b, std::fabs(signed_max) / 127.0f);
      for (int i = 0; i < n; ++i) b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(d > 0 ? clamp_round(x[i] / d, -128, 127) : 0));
      return;
    }
    case BlockType::Q4_0:
    case BlockType::Q5_0: {
      // The largest magnitude maps to code 0 (−8 / −16), so its sign chooses d's sign.
      const int half = type == BlockType::Q4_0 ? 8 : 16;
      const float d = put_f16(b, signed_max / -static_cast<float>(half));
      uint8_t* qs = b + (type == BlockType::Q4_0 ? 2 : 6);
      uint32_t fifth = 0;
      std::memset(qs, 0, 16);
      for (int i = 0; i < n; ++i) {
        const int q = d != 0 ? clamp_round(x[i] / d + half, 0, 2 * half - 1) : half;
        set_nibble(qs, i, q & 0xF);
        fifth |= static_cast<uint32_t>(q >> 4) << i;
      }
      if (type == BlockType::Q5_0) std::memcpy(b + 2, &fifth, 4);
      return;
    }
    case BlockType::Q4_1:
    case BlockType::Q5_1: {
      const int top = type == BlockType::Q4_1 ? 15 : 31;
      const float d = put_f16(b, (hi - lo) / static_cast<float>(top));
      const float m = put_f16(b + 2, lo);
      uint8_t* qs = b + (type == BlockType::Q4_1 ? 4 : 8);
      uint32_t fifth = 0;
      std::memset(qs, 0, 16);
      for (int i = 0; i < n; ++i) {
        const int q = d != 0 ? clamp_round((x[i] - m) / d, 0, top) : 0;
        set_nibble(qs, i, q & 0xF);
        fifth |= static_cast<uint32_t>(q >> 4) << i;
      }
      if (type == BlockType::Q5_1) std::memcpy(b + 4, &fifth, 4);
      return;
    }
    default:
      fail(FX_ERR_INTERNAL, "encode_small: not a 32-value type");
  }
}

// ---- the 256-value K types ----
// Q4_K / Q5_K: value v (0..255) is in chunk c = v / 64; its sub-block is v / 32; its nibble is the low
// half of qs[32c + v % 32] in the chunk's first 32 values and the high half in the second 32; Q5_K's
// fifth bit is bit (v / 32) of qh[v % 32].
constexpr int kKOffsetScales = 4, kKOffsetQs4 = 16, kKOffsetQh5 = 16, kKOffsetQs5 = 48;

int k_nibble(const uint8_t* qs, int v) {
  const uint8_t byte = qs[32 * (v / 64) + v % 32];
  return (v % 64) < 32 ? byte & 0xF : byte >> 4;
}

void set_k_nibble(uint8_t* qs, int v, int q) {
  uint8_t& byte = qs[32 * (v / 64) + v % 32];
  byte = (v % 64) < 32 ? static_cast<uint8_t>((byte & 0xF0) | q) : static_cast<uint8_t>((byte & 0x0F) | (q << 4));
}

float decode_k(BlockType type, const uint8_t* b, int v) {
  if (type == BlockType::Q6_K) {
    // ql[128], qh[64], int8 scale[16], f16 d. Half h = v / 128, group g = (v % 128) / 32, l = v % 32: the
    // low nibble of ql[64h + l] (g = 0), ql[64h + 32 + l] (g = 1), their high nibbles (g = 2, 3); the
    // high two bits are bits 2g, 2g + 1 of qh[32h + l]; the scale is scale[v / 16].
    const int h = v / 128, g = (v % 128) / 32, l = v % 32;
    const uint8_t low_byte = b[64 * h + 32 * (g & 1) + l];
    const int low = g < 2 ? low_byte & 0xF : low_byte >> 4;
    const int high = (b[128 + 32 * h + l] >> (2 * g)) & 3;
    const int scale = static_cast<int8_t>(b[192 + v / 16]);
    return f16_at(b + 208) * static_cast<float>(scale) * static_cast<float>((low | (high << 4)) - 32);
  }
  int scale, min;
  k_quant_scale_min(b + kKOffsetScales, v / 32, &scale, &min);
  int q;
  if (type == BlockType::Q4_K) {
    q = k_nibble(b + kKOffsetQs4, v);
  } else {
    q = k_nibble(b + kKOffsetQs5, v) | (((b[kKOffsetQh5 + v % 32] >> (v / 32)) & 1) << 4);
  }
  return f16_at(b) * static_cast<float>(scale) * static_cast<float>(q) - f16_at(b + 2) * static_cast<float>(min);
}

void encode_k(BlockType type, const float* x, uint8_t* b) {
  const int bytes = block_layout(type).bytes;
  std::memset(b, 0, static_cast<size_t>(bytes));
  if (type == BlockType::Q6_K) {
    float sub_scale[16], amax = 0;
    for (int s = 0; s < 16; ++s) {
      float signed_max = 0;
      for (int i = 0; i < 16; ++i)
        if (std::fabs(x[16 * s + i]) > std::fabs(signed_max)) signed_max = x[16 * s + i];
      sub_scale[s] = signed_max / -32.0f;
      amax = std::max(amax, std::fabs(sub_scale[s]));
    }
    const float d = put_f16(b + 208, amax / 127.0f);
    for (int s = 0; s < 16; ++s) b[192 + s] = static_cast<uint8_t>(static_cast<int8_t>(d > 0 ? clamp_round(sub_scale[s] / d, -128, 127) : 0));
    for (int v = 0; v < 256; ++v) {
      const float step = d * static_cast<float>(static_cast<int8_t>(b[192 + v / 16]));
      const int q = step != 0 ? clamp_round(x[v] / step + 32, 0, 63) : 32;
      const int h = v / 128, g = (v % 128) / 32, l = v % 32;
      uint8_t& low_byte = b[64 * h + 32 * (g & 1) + l];
      low_byte = g < 2 ? static_cast<uint8_t>((low_byte & 0xF0) | (q & 0xF)) : static_cast<uint8_t>((low_byte & 0x0F) | ((q & 0xF) << 4));
      b[128 + 32 * h + l] = static_cast<uint8_t>(b[128 + 32 * h + l] | ((q >> 4) << (2 * g)));
    }
    return;
  }
  const int top = type == BlockType::Q4_K ? 15 : 31;
  // Per sub-block: x = step·q − offset with offset = −min(x, 0) ≥ 0 and step = (max − min) / top.
  float step[8], offset[8], step_max = 0, offset_max = 0;
  for (int s = 0; s < 8; ++s) {
    float lo = 0, hi = x[32 * s];
    for (int i = 0; i < 32; ++i) lo = std::min(lo, x[32 * s + i]), hi = std::max(hi, x[32 * s + i]);
    offset[s] = -lo;
    step[s] = std::max(0.0f, hi - lo) / static_cast<float>(top);
    step_max = std::max(step_max, step[s]);
    offset_max = std::max(offset_max, offset[s]);
  }
  const float d = put_f16(b, step_max / 63.0f), dmin = put_f16(b + 2, offset_max / 63.0f);
  int sc[8], mn[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = d > 0 ? clamp_round(step[s] / d, 0, 63) : 0;
    mn[s] = dmin > 0 ? clamp_round(offset[s] / dmin, 0, 63) : 0;
  }
  uint8_t* packed = b + kKOffsetScales;
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
  for (int v = 0; v < 256; ++v) {
    const int s = v / 32;
    const float sub_step = d * static_cast<float>(sc[s]), sub_offset = dmin * static_cast<float>(mn[s]);
    const int q = sub_step > 0 ? clamp_round((x[v] + sub_offset) / sub_step, 0, top) : 0;
    if (type == BlockType::Q4_K) {
      set_k_nibble(b + kKOffsetQs4, v, q);
    } else {
      set_k_nibble(b + kKOffsetQs5, v, q & 0xF);
      b[kKOffsetQh5 + v % 32] = static_cast<uint8_t>(b[kKOffsetQh5 + v % 32] | ((q >> 4) << s));
    }
  }
}

void check_elements(BlockType type, int64_t elements, const char* what) {
  const BlockLayout& layout = block_layout(type);
  if (elements < 0 || elements % layout.elements != 0)
    fail(FX_ERR_INVALID_ARGUMENT, std::string(what) + ": " + std::to_string(elements) + " values are not whole " +
                                      layout.name + " blocks of " + std::to_string(layout.elements));
}

}  // namespace

const BlockLayout& block_layout(BlockType type) {
  for (const BlockLayout& l : kBlockLayouts)
    if (l.type == type) return l;
  fail(FX_ERR_INVALID_ARGUMENT, "block type " + std::to_string(static_cast<int32_t>(type)) + " is not supported");
}

bool block_type_from_ggml(uint32_t ggml_type, BlockType* out) {
  for (const BlockLayout& l : kBlockLayouts)
    if (static_cast<uint32_t>(l.type) == ggml_type) {
      *out = l.type;
      return true;
    }
  return false;
}

bool block_type_from_name(std::string_view name, BlockType* out) {
  for (const BlockLayout& l : kBlockLayouts)
    if (name == l.name) {
      *out = l.type;
      return true;
    }
  return false;
}

void k_quant_scale_min(const uint8_t* q, int s, int* scale, int* min) {
  if (s < 4) {
    *scale = q[s] & 63;
    *min = q[s + 4] & 63;
  } else {
    *scale = (q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4);
    *min = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

void dequantize_blocks(BlockType type, const uint8_t* blocks, int64_t elements, float* out) {
  check_elements(type, elements, "dequantize_blocks");
  const BlockLayout& layout = block_layout(type);
  const int64_t count = elements / layout.elements;
  for (int64_t blk = 0; blk < count; ++blk) {
    const uint8_t* b = blocks + blk * layout.bytes;
    float* y = out + blk * layout.elements;
    for (int v = 0; v < layout.elements; ++v) y[v] = layout.elements == 32 ? decode_small(type, b, v) : decode_k(type, b, v);
  }
}

void quantize_blocks(BlockType type, const float* values, int64_t elements, uint8_t* out) {
  check_elements(type, elements, "quantize_blocks");
  const BlockLayout& layout = block_layout(type);
  for (int64_t i = 0; i < elements; ++i)
    if (!std::isfinite(values[i]))
      fail(FX_ERR_INVALID_ARGUMENT, std::string("quantize_blocks: value ") + std::to_string(i) + " is not finite");
  const int64_t count = elements / layout.elements;
  for (int64_t blk = 0; blk < count; ++blk) {
    if (layout.elements == 32)
      encode_small(type, values + blk * 32, out + blk * layout.bytes);
    else
      encode_k(type, values + blk * 256, out + blk * layout.bytes);
  }
}

}  // namespace fx
