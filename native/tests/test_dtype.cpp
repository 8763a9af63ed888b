// Tests of the dtype table and the bit-exact conversions (dtype.h).
//
// The references here are written from the format definitions alone and share no code with the
// library: a decoder doing sign/exponent/mantissa arithmetic with ldexp in double, a rounding
// reference doing the arithmetic in double with nearbyint (ties to even), and for the 8-bit formats a
// brute-force search over all codes. Every code of every format is checked both ways.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr
#endif

namespace {

using fx::DType;
using fx::Overflow;

// ---- the formats, as data ------------------------------------------------------------------------

struct Format {
  const char* name;
  int exponent_bits;
  int mantissa_bits;
  int bias;
  // IEEE style: the all-ones exponent holds infinities and NaNs. Otherwise ("fn" formats) there is no
  // infinity and only the all-ones code of each sign is NaN.
  bool has_infinity;
  uint32_t largest_finite_code;  // positive
  bool has_overflow_modes;       // the fp8 formats saturate on request; f16 and bf16 always follow IEEE
};

constexpr Format kBf16{"bf16", 8, 7, 127, true, 0x7F7F, false};
constexpr Format kF16{"f16", 5, 10, 15, true, 0x7BFF, false};
constexpr Format kE4m3fn{"e4m3fn", 4, 3, 7, false, 0x7E, true};
constexpr Format kE5m2{"e5m2", 5, 2, 15, true, 0x7B, true};

uint32_t sign_bit(const Format& format) { return 1u << (format.exponent_bits + format.mantissa_bits); }
uint32_t code_count(const Format& format) { return sign_bit(format) << 1; }

// The value of a code straight from the format definition. Every value of these formats is exact in double.
double reference_decode(const Format& format, uint32_t code) {
  const bool negative = (code & sign_bit(format)) != 0;
  const uint32_t exponent = (code >> format.mantissa_bits) & ((1u << format.exponent_bits) - 1);
  const uint32_t mantissa = code & ((1u << format.mantissa_bits) - 1);
  const uint32_t all_ones_exponent = (1u << format.exponent_bits) - 1;
  const uint32_t all_ones_mantissa = (1u << format.mantissa_bits) - 1;
  double magnitude;
  if (format.has_infinity && exponent == all_ones_exponent) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (!format.has_infinity && exponent == all_ones_exponent && mantissa == all_ones_mantissa) {
    magnitude = std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(double(mantissa), 1 - format.bias - format.mantissa_bits);
  } else {
    magnitude = std::ldexp(double(mantissa + (1u << format.mantissa_bits)),
                           int(exponent) - format.bias - format.mantissa_bits);
  }
  return std::copysign(magnitude, negative ? -1.0 : 1.0);
}

double largest_finite(const Format& format) { return reference_decode(format, format.largest_finite_code); }

// Round to nearest even onto the format's grid, in double: scale so that the format's unit in the last
// place is 1, round with nearbyint (ties to even in the default rounding mode), scale back. The
// exponent is unbounded above: the caller compares the result with the largest finite value.
double reference_round(const Format& format, double x) {
  if (x == 0 || std::isinf(x)) return x;
  int frexp_exponent;
  std::frexp(std::fabs(x), &frexp_exponent);  // |x| = m * 2^e with m in [0.5, 1)
  const int min_normal_exponent = 1 - format.bias;
  const int exponent = std::max(frexp_exponent - 1, min_normal_exponent);
  const double quantum = std::ldexp(1.0, exponent - format.mantissa_bits);
  return std::copysign(std::nearbyint(std::fabs(x) / quantum) * quantum, x);
}

// Brute force for the 8-bit formats: the nearest of all finite codes of x's sign, by absolute
// difference in double, ties to the even code (the mantissa's last bit is the code's last bit). One
// more candidate stands past the largest finite value, one top-binade step further, as the code the
// rounding would give if the exponents went on; choosing it means overflow.
uint32_t brute_force_nearest(const Format& format, double x, bool* overflowed) {
  const uint32_t sign = std::signbit(x) ? sign_bit(format) : 0;
  const double magnitude = std::fabs(x);
  const double top_step = largest_finite(format) - reference_decode(format, format.largest_finite_code - 1);
  const uint32_t beyond_code = format.largest_finite_code + 1;
  const double beyond_value = largest_finite(format) + top_step;
  // Past the last candidate the nearest one is that candidate; deciding it here also keeps huge
  // inputs, whose differences to all candidates round to the same double, out of the search.
  *overflowed = std::isinf(x) || magnitude >= beyond_value;
  if (*overflowed) return sign | beyond_code;
  uint32_t best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (uint32_t code = 0; code <= beyond_code; ++code) {
    const double value = code == beyond_code ? beyond_value : reference_decode(format, code);
    const double distance = std::fabs(magnitude - value);
    if (distance < best_distance || (distance == best_distance && (code & 1) == 0)) {
      best = code;
      best_distance = distance;
    }
  }
  *overflowed = best == beyond_code;
  return sign | best;
}

// ---- the library's functions behind one shape per format ------------------------------------------

struct Codec {
  Format format;
  std::function<float(uint32_t)> decode;
  std::function<uint32_t(float, Overflow)> encode;  // f16/bf16 ignore the mode (always IEEE)
};

std::vector<Codec> all_codecs() {
  return {
      {kBf16, [](uint32_t c) { return fx::bf16_to_f32(uint16_t(c)); },
       [](float x, Overflow) { return uint32_t(fx::f32_to_bf16(x)); }},
      {kF16, [](uint32_t c) { return fx::f16_to_f32(uint16_t(c)); },
       [](float x, Overflow) { return uint32_t(fx::f32_to_f16(x)); }},
      {kE4m3fn, [](uint32_t c) { return fx::e4m3fn_to_f32(uint8_t(c)); },
       [](float x, Overflow o) { return uint32_t(fx::f32_to_e4m3fn(x, o)); }},
      {kE5m2, [](uint32_t c) { return fx::e5m2_to_f32(uint8_t(c)); },
       [](float x, Overflow o) { return uint32_t(fx::f32_to_e5m2(x, o)); }},
  };
}

constexpr Overflow kModes[] = {Overflow::Saturate, Overflow::Ieee};

const char* mode_name(Overflow mode) { return mode == Overflow::Saturate ? "Saturate" : "Ieee"; }

// The code a conversion must give for an input that rounds beyond the largest finite value.
uint32_t overflow_code(const Format& format, Overflow mode, bool negative) {
  const uint32_t sign = negative ? sign_bit(format) : 0;
  const uint32_t all_ones_exponent = ((1u << format.exponent_bits) - 1) << format.mantissa_bits;
  if (format.has_infinity) {
    const bool saturates = mode == Overflow::Saturate && format.has_overflow_modes;
    return sign | (saturates ? format.largest_finite_code : all_ones_exponent);
  }
  return sign | (mode == Overflow::Saturate ? format.largest_finite_code : (sign_bit(format) - 1));
}

std::string hex(uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof text, "0x%llX", static_cast<unsigned long long>(value));
  return text;
}

std::string describe(float x) {
  char text[64];
  std::snprintf(text, sizeof text, "%.9g (bits %s)", double(x), hex(fx::f32_bits(x)).c_str());
  return text;
}

// Collects mismatches so that an exhaustive loop reports a count and the first few, not 65536 lines.
class Mismatches {
 public:
  void add(const std::string& what) {
    if (count_ < 10) text_ += "  " + what + "\n";
    ++count_;
  }
  int count() const { return count_; }
  std::string report() const { return std::to_string(count_) + " mismatch(es), first ones:\n" + text_; }

 private:
  int count_ = 0;
  std::string text_;
};

// Same number or both NaN, and the same sign either way (so -0 != +0).
bool same_value(double got, double want) {
  if (std::signbit(got) != std::signbit(want)) return false;
  if (std::isnan(want)) return std::isnan(got);
  return got == want;
}

bool is_nan_code(const Format& format, uint32_t code) { return std::isnan(reference_decode(format, code)); }

// ---- the dtype table -----------------------------------------------------------------------------

TEST(Dtype, NamesSizesAndKindsFollowSafetensors) {
  struct Row {
    DType dtype;
    const char* name;
    size_t size;
    bool is_float;
  };
  const Row rows[] = {
      {DType::F32, "F32", 4, true},          {DType::F16, "F16", 2, true},         {DType::BF16, "BF16", 2, true},
      {DType::F8_E4M3FN, "F8_E4M3", 1, true}, {DType::F8_E5M2, "F8_E5M2", 1, true}, {DType::F64, "F64", 8, true},
      {DType::I64, "I64", 8, false},         {DType::I32, "I32", 4, false},        {DType::I16, "I16", 2, false},
      {DType::I8, "I8", 1, false},           {DType::U8, "U8", 1, false},          {DType::BOOL, "BOOL", 1, false},
      {DType::U16, "U16", 2, false},         {DType::U32, "U32", 4, false},        {DType::U64, "U64", 8, false},
  };
  ASSERT_EQ(sizeof(rows) / sizeof(rows[0]), size_t(FX_DTYPE_COUNT_));
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    EXPECT_TRUE(fx::dtype_valid(static_cast<int32_t>(row.dtype)));
    EXPECT_STREQ(fx::dtype_name(row.dtype), row.name);
    EXPECT_EQ(fx::dtype_size(row.dtype), row.size);
    EXPECT_EQ(fx::dtype_is_float(row.dtype), row.is_float);
    DType parsed = static_cast<DType>(-7);
    ASSERT_TRUE(fx::dtype_from_name(row.name, &parsed));
    EXPECT_EQ(parsed, row.dtype);
  }
}

TEST(Dtype, UnknownNamesAreRejected) {
  for (const char* name : {"", "F8_E4M3FN", "f32", "Bf16", "F32 ", " F32", "FP8", "F8_E5M2FNUZ", "F", "BOOLEAN"}) {
    DType parsed = DType::U64;
    EXPECT_FALSE(fx::dtype_from_name(name, &parsed)) << '"' << name << '"';
    EXPECT_EQ(parsed, DType::U64) << "untouched on failure";
  }
  // A name with a NUL after "F32" is not "F32": the whole view is compared.
  DType parsed = DType::U64;
  EXPECT_FALSE(fx::dtype_from_name(std::string_view("F32\0", 4), &parsed));
}

TEST(Dtype, InvalidEnumValuesAreRejected) {
  for (int32_t value : {int32_t(-1), int32_t(FX_DTYPE_COUNT_), int32_t(99), std::numeric_limits<int32_t>::min()}) {
    SCOPED_TRACE(value);
    const auto dtype = static_cast<DType>(value);
    EXPECT_FALSE(fx::dtype_valid(value));
    EXPECT_FALSE(fx::dtype_is_float(dtype));
    try {
      (void)fx::dtype_size(dtype);
      ADD_FAILURE() << "dtype_size accepted an invalid value";
    } catch (const fx::Error& error) {
      EXPECT_EQ(error.status(), FX_ERR_INVALID_ARGUMENT);
    }
    try {
      (void)fx::dtype_name(dtype);
      ADD_FAILURE() << "dtype_name accepted an invalid value";
    } catch (const fx::Error& error) {
      EXPECT_EQ(error.status(), FX_ERR_INVALID_ARGUMENT);
    }
  }
  EXPECT_THROW((void)fx::dtype_from_name("F32", nullptr), fx::Error);
}

// ---- every code decodes to its value, and encodes back -------------------------------------------

TEST(DtypeCodes, EveryCodeDecodesToTheValueTheFormatDefines) {
  for (const Codec& codec : all_codecs()) {
    SCOPED_TRACE(codec.format.name);
    Mismatches mismatches;
    for (uint32_t code = 0; code < code_count(codec.format); ++code) {
      const float got = codec.decode(code);
      const double want = reference_decode(codec.format, code);
      if (!same_value(got, want)) mismatches.add(hex(code) + " -> " + describe(got) + ", want " + std::to_string(want));
      // Decoded NaNs are quiet, so that no signalling NaN comes out of a conversion.
      if (std::isnan(want) && (fx::f32_bits(got) & 0x00400000u) == 0) mismatches.add(hex(code) + " -> signalling NaN");
    }
    EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
  }
}

TEST(DtypeCodes, EveryDecodedValueEncodesToTheSameCode) {
  for (const Codec& codec : all_codecs()) {
    for (Overflow mode : kModes) {
      SCOPED_TRACE(std::string(codec.format.name) + " " + mode_name(mode));
      Mismatches mismatches;
      for (uint32_t code = 0; code < code_count(codec.format); ++code) {
        const uint32_t back = codec.encode(codec.decode(code), mode);
        const double value = reference_decode(codec.format, code);
        if (std::isinf(value) && mode == Overflow::Saturate && codec.format.has_overflow_modes) {
          // Saturation clamps infinities too (e5m2): the largest finite code of the same sign.
          const uint32_t want = (code & sign_bit(codec.format)) | codec.format.largest_finite_code;
          if (back != want) mismatches.add(hex(code) + " -> " + hex(back) + ", want " + hex(want));
        } else if (is_nan_code(codec.format, code)) {
          // Any NaN code comes back as a NaN of the same sign (not necessarily the same payload).
          const bool same_sign = (back & sign_bit(codec.format)) == (code & sign_bit(codec.format));
          if (!is_nan_code(codec.format, back) || !same_sign) mismatches.add(hex(code) + " -> " + hex(back));
        } else if (back != code) {
          mismatches.add(hex(code) + " -> " + hex(back));
        }
      }
      EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
    }
  }
}

// ---- rounding at and around every midpoint ---------------------------------------------------------

TEST(DtypeRounding, MidpointsTieToEvenAndOneUlpAsideGoesToTheNearer) {
  for (const Codec& codec : all_codecs()) {
    for (Overflow mode : kModes) {
      SCOPED_TRACE(std::string(codec.format.name) + " " + mode_name(mode));
      Mismatches mismatches;
      for (uint32_t low = 0; low < codec.format.largest_finite_code; ++low) {
        const uint32_t high = low + 1;
        const double low_value = reference_decode(codec.format, low);
        const double high_value = reference_decode(codec.format, high);
        const double midpoint = (low_value + high_value) / 2;
        ASSERT_EQ(double(float(midpoint)), midpoint) << "midpoint of " << hex(low) << " not exact in f32";
        const uint32_t even = (low & 1) == 0 ? low : high;
        for (const bool negative : {false, true}) {
          const uint32_t sign = negative ? sign_bit(codec.format) : 0;
          const float at = float(negative ? -midpoint : midpoint);
          const float toward_zero = std::nextafter(at, 0.0f);
          const float away_from_zero = std::nextafter(at, negative ? -INFINITY : INFINITY);
          const struct {
            float input;
            uint32_t want;
          } cases[] = {{at, sign | even}, {toward_zero, sign | low}, {away_from_zero, sign | high}};
          for (const auto& c : cases) {
            const uint32_t got = codec.encode(c.input, mode);
            if (got != c.want) mismatches.add(describe(c.input) + " -> " + hex(got) + ", want " + hex(c.want));
          }
        }
      }
      EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
    }
  }
}

// The pair (largest finite, one step beyond) decides overflow: its midpoint ties to the even side,
// which is the largest finite value in e4m3fn (S.1111.110) and the next binade (inf) in the others.
TEST(DtypeRounding, OverflowBoundaryFollowsTiesToEven) {
  for (const Codec& codec : all_codecs()) {
    for (Overflow mode : kModes) {
      SCOPED_TRACE(std::string(codec.format.name) + " " + mode_name(mode));
      const Format& format = codec.format;
      const double max = largest_finite(format);
      const double step = max - reference_decode(format, format.largest_finite_code - 1);
      const double midpoint = max + step / 2;
      ASSERT_EQ(double(float(midpoint)), midpoint);
      const bool tie_goes_beyond = ((format.largest_finite_code + 1) & 1) == 0;
      for (const bool negative : {false, true}) {
        const float sign = negative ? -1.0f : 1.0f;
        const uint32_t max_code = format.largest_finite_code | (negative ? sign_bit(format) : 0);
        const uint32_t beyond = overflow_code(format, mode, negative);
        const float at = sign * float(midpoint);
        EXPECT_EQ(codec.encode(sign * float(max), mode), max_code);
        EXPECT_EQ(codec.encode(std::nextafter(at, 0.0f), mode), max_code);
        EXPECT_EQ(codec.encode(at, mode), tie_goes_beyond ? beyond : max_code) << describe(at);
        EXPECT_EQ(codec.encode(std::nextafter(at, sign * INFINITY), mode), beyond);
        EXPECT_EQ(codec.encode(sign * FLT_MAX, mode), beyond);
        EXPECT_EQ(codec.encode(sign * INFINITY, mode), beyond);
      }
    }
  }
}

TEST(DtypeRounding, OverflowRulesOfEachFormat) {
  // e4m3fn: 448 = S.1111.110; Saturate clamps, Ieee gives the NaN (there is no infinity).
  EXPECT_EQ(fx::f32_to_e4m3fn(448.0f, Overflow::Ieee), 0x7E);
  EXPECT_EQ(fx::f32_to_e4m3fn(464.0f, Overflow::Ieee), 0x7E);  // tie to even: 448
  EXPECT_EQ(fx::f32_to_e4m3fn(465.0f, Overflow::Ieee), 0x7F);
  EXPECT_EQ(fx::f32_to_e4m3fn(-465.0f, Overflow::Ieee), 0xFF);
  EXPECT_EQ(fx::f32_to_e4m3fn(465.0f, Overflow::Saturate), 0x7E);
  EXPECT_EQ(fx::f32_to_e4m3fn(-1e30f, Overflow::Saturate), 0xFE);
  EXPECT_EQ(fx::f32_to_e4m3fn(INFINITY, Overflow::Saturate), 0x7E);
  EXPECT_EQ(fx::f32_to_e4m3fn(-INFINITY, Overflow::Saturate), 0xFE);
  EXPECT_EQ(fx::f32_to_e4m3fn(INFINITY, Overflow::Ieee), 0x7F);
  EXPECT_EQ(fx::f32_to_e4m3fn(-INFINITY, Overflow::Ieee), 0xFF);
  // e5m2: 57344 = S.11110.11; 61440 ties to the even S.11111.00 = inf.
  EXPECT_EQ(fx::f32_to_e5m2(61439.0f, Overflow::Ieee), 0x7B);
  EXPECT_EQ(fx::f32_to_e5m2(61440.0f, Overflow::Ieee), 0x7C);
  EXPECT_EQ(fx::f32_to_e5m2(-61440.0f, Overflow::Ieee), 0xFC);
  EXPECT_EQ(fx::f32_to_e5m2(61440.0f, Overflow::Saturate), 0x7B);
  EXPECT_EQ(fx::f32_to_e5m2(-INFINITY, Overflow::Saturate), 0xFB);
  EXPECT_EQ(fx::f32_to_e5m2(-INFINITY, Overflow::Ieee), 0xFC);
  EXPECT_EQ(fx::e5m2_to_f32(0x7B), 57344.0f);
  EXPECT_EQ(fx::e4m3fn_to_f32(0xFE), -448.0f);
  // f16 and bf16 overflow to infinity.
  EXPECT_EQ(fx::f32_to_f16(65519.996f), 0x7BFF);
  EXPECT_EQ(fx::f32_to_f16(65520.0f), 0x7C00);
  EXPECT_EQ(fx::f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(fx::f32_to_bf16(fx::f32_from_bits(0x7F7F7FFF)), 0x7F7F);
  EXPECT_EQ(fx::f32_to_bf16(fx::f32_from_bits(0x7F7F8000)), 0x7F80);  // tie to even: inf
  EXPECT_EQ(fx::f32_to_bf16(-FLT_MAX), 0xFF80);
  // Smallest subnormals: 2^-9 (e4m3fn), 2^-16 (e5m2), 2^-24 (f16), 2^-133 (bf16); half of one ties to 0.
  EXPECT_EQ(fx::e4m3fn_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fx::e5m2_to_f32(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(fx::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fx::bf16_to_f32(0x0001), std::ldexp(1.0f, -133));
  EXPECT_EQ(fx::f32_to_e4m3fn(std::ldexp(1.0f, -10), Overflow::Ieee), 0x00);
  EXPECT_EQ(fx::f32_to_e4m3fn(-std::ldexp(1.0f, -10), Overflow::Ieee), 0x80);
  EXPECT_EQ(fx::f32_to_e4m3fn(std::ldexp(1.5f, -10), Overflow::Ieee), 0x01);
  EXPECT_EQ(fx::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(fx::f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(fx::f32_to_f16(-FLT_TRUE_MIN), 0x8000);
}

// ---- NaN inputs ----------------------------------------------------------------------------------

TEST(DtypeNan, NanInputsGiveTheDocumentedNanWithTheirSignInEveryMode) {
  std::mt19937 random(12345);
  std::vector<uint32_t> nans = {0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0x7FA00000, 0x7F802000, 0x7FBFFFFF};
  for (int i = 0; i < 1000; ++i) nans.push_back(0x7F800000u | (1u + random() % 0x7FFFFFu));
  for (const uint32_t positive : nans) {
    for (const uint32_t bits : {positive, positive | 0x80000000u}) {
      const float x = fx::f32_from_bits(bits);
      ASSERT_TRUE(std::isnan(x));
      const uint32_t sign16 = (bits >> 16) & 0x8000u;
      const uint32_t sign8 = (bits >> 24) & 0x80u;
      // f16 and bf16 keep the payload's top bits and set the quiet bit; the fp8 NaNs are fixed codes.
      EXPECT_EQ(fx::f32_to_bf16(x), (bits >> 16) | 0x0040u) << hex(bits);
      EXPECT_EQ(fx::f32_to_f16(x), sign16 | 0x7E00u | ((bits >> 13) & 0x1FFu)) << hex(bits);
      for (Overflow mode : kModes) {
        EXPECT_EQ(fx::f32_to_e4m3fn(x, mode), sign8 | 0x7Fu) << hex(bits);
        EXPECT_EQ(fx::f32_to_e5m2(x, mode), sign8 | 0x7Eu) << hex(bits);
      }
      // Never an infinity: check through the reference decoder too.
      EXPECT_TRUE(std::isnan(reference_decode(kBf16, fx::f32_to_bf16(x))));
      EXPECT_TRUE(std::isnan(reference_decode(kF16, fx::f32_to_f16(x))));
      EXPECT_TRUE(std::isnan(reference_decode(kE5m2, fx::f32_to_e5m2(x, Overflow::Saturate))));
      EXPECT_TRUE(std::isnan(reference_decode(kE4m3fn, fx::f32_to_e4m3fn(x, Overflow::Saturate))));
    }
  }
}

// ---- random inputs against the references -----------------------------------------------------------

// Random f32 inputs that reach every corner: any bit pattern (NaNs, infinities, f32 subnormals, huge
// values), values around each format's largest value and smallest subnormal, values at and next to
// the format's own codes and midpoints, and the special values themselves.
std::vector<float> random_inputs(const Format& format, std::mt19937_64& random, size_t count) {
  std::vector<float> inputs = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN,
                               FLT_TRUE_MIN, -FLT_TRUE_MIN, 1.0f, -1.0f};
  const double max = largest_finite(format);
  const double min_subnormal = reference_decode(format, 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto random_sign = [&](double v) { return (random() & 1) ? -v : v; };
  auto nudge = [&](float v) {  // up to 3 f32 ulps either way
    const int steps = int(random() % 7) - 3;
    for (int s = 0; s < std::abs(steps); ++s) v = std::nextafter(v, steps > 0 ? INFINITY : -INFINITY);
    return v;
  };
  while (inputs.size() < count) {
    switch (random() % 6) {
      case 0:
        inputs.push_back(fx::f32_from_bits(uint32_t(random())));
        break;
      case 1:
        inputs.push_back(float(random_sign(max * (0.9 + 0.2 * unit(random)))));
        break;
      case 2: {  // the overflow boundary: halfway from the largest value to one top-binade step beyond
        const double top_step = max - reference_decode(format, format.largest_finite_code - 1);
        inputs.push_back(nudge(float(random_sign(max + top_step / 2))));
        break;
      }
      case 3:
        inputs.push_back(float(random_sign(min_subnormal * 4 * unit(random))));
        break;
      case 4: {
        const uint32_t code = uint32_t(random() % format.largest_finite_code);
        const double value = reference_decode(format, code);
        const double next = reference_decode(format, code + 1);
        const double point = (random() & 1) ? value : (value + next) / 2;
        inputs.push_back(nudge(float(random_sign(point))));
        break;
      }
      default: {
        // Any magnitude a model weight might have, and far beyond.
        const double exponent = -160 + 200 * unit(random);
        inputs.push_back(float(random_sign(std::exp2(exponent))));
        break;
      }
    }
  }
  return inputs;
}

TEST(DtypeRandom, F16AndBf16MatchRoundingInDouble) {
  std::mt19937_64 random(20240601);
  for (const Codec& codec : all_codecs()) {
    if (codec.format.has_overflow_modes) continue;
    SCOPED_TRACE(codec.format.name);
    Mismatches mismatches;
    for (const float x : random_inputs(codec.format, random, 400000)) {
      const uint32_t code = codec.encode(x, Overflow::Ieee);
      const double got = reference_decode(codec.format, code);
      double want;
      if (std::isnan(x)) {
        want = std::copysign(std::numeric_limits<double>::quiet_NaN(), std::signbit(x) ? -1.0 : 1.0);
      } else {
        want = reference_round(codec.format, double(x));
        if (std::fabs(want) > largest_finite(codec.format)) want = std::copysign(INFINITY, want);
      }
      if (!same_value(got, want)) mismatches.add(describe(x) + " -> " + hex(code) + ", want " + std::to_string(want));
    }
    EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
  }
}

TEST(DtypeRandom, Fp8MatchesBruteForceNearestCode) {
  std::mt19937_64 random(777);
  for (const Codec& codec : all_codecs()) {
    if (!codec.format.has_overflow_modes) continue;
    const std::vector<float> inputs = random_inputs(codec.format, random, 100000);
    for (Overflow mode : kModes) {
      SCOPED_TRACE(std::string(codec.format.name) + " " + mode_name(mode));
      Mismatches mismatches;
      for (const float x : inputs) {
        const uint32_t got = codec.encode(x, mode);
        if (std::isnan(x)) {
          const bool same_sign = ((got & sign_bit(codec.format)) != 0) == std::signbit(x);
          if (!is_nan_code(codec.format, got) || !same_sign) mismatches.add(describe(x) + " -> " + hex(got));
          continue;
        }
        bool overflowed = false;
        uint32_t want = brute_force_nearest(codec.format, double(x), &overflowed);
        if (overflowed) want = overflow_code(codec.format, mode, std::signbit(x));
        if (got != want) mismatches.add(describe(x) + " -> " + hex(got) + ", want " + hex(want));
      }
      EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
    }
  }
}

// The brute force agrees with the double-arithmetic rounding; a check of the references themselves.
TEST(DtypeRandom, ReferencesAgreeWithEachOther) {
  std::mt19937_64 random(99);
  for (const Format& format : {kE4m3fn, kE5m2}) {
    for (const float x : random_inputs(format, random, 20000)) {
      if (std::isnan(x)) continue;
      bool overflowed = false;
      const uint32_t code = brute_force_nearest(format, double(x), &overflowed);
      const double rounded = reference_round(format, double(x));
      if (overflowed) {
        EXPECT_GT(std::fabs(rounded), largest_finite(format)) << describe(x);
      } else {
        EXPECT_TRUE(same_value(reference_decode(format, code), rounded)) << describe(x);
      }
    }
  }
}

TEST(DtypeRandom, F32AndF64ConvertLikeTheHardware) {
  // x86 SSE converts between f32 and f64 exactly as IEEE specifies (round to nearest even, subnormals
  // kept) and is an independent reference for the integer versions.
  std::mt19937_64 random(4242);
  Mismatches mismatches;
  for (int i = 0; i < 1000000; ++i) {
    const float f = fx::f32_from_bits(uint32_t(random()));
    const double widened = fx::f32_to_f64(f);
    if (std::isnan(f)) {
      const uint64_t want = (uint64_t(fx::f32_bits(f) & 0x80000000u) << 32) | 0x7FF8000000000000ull |
                            (uint64_t(fx::f32_bits(f) & 0x7FFFFFu) << 29);
      if (fx::f64_bits(widened) != want) mismatches.add("widen " + describe(f));
    } else if (fx::f64_bits(widened) != fx::f64_bits(double(f))) {
      mismatches.add("widen " + describe(f));
    }
    // Doubles of every magnitude, and doubles near f32 values and f32 midpoints (ties), both signs.
    double d;
    switch (i % 3) {
      case 0: d = fx::f64_from_bits(random()); break;
      case 1: {  // f plus -2..2 half-ulps: exact ties among them (ilogb needs a finite nonzero f)
        const bool has_ulp = std::isfinite(f) && f != 0;
        d = has_ulp ? double(f) + std::ldexp(double(int(random() % 5) - 2), std::ilogb(double(f)) - 24) : double(f);
        break;
      }
      default: d = std::ldexp(double(random() >> 11), int(random() % 400) - 260); break;
    }
    if ((random() & 1) != 0) d = -d;
    const float narrowed = fx::f64_to_f32(d);
    if (std::isnan(d)) {
      const uint64_t bits = fx::f64_bits(d);
      const uint32_t want = (uint32_t(bits >> 32) & 0x80000000u) | 0x7FC00000u | uint32_t((bits >> 29) & 0x3FFFFFu);
      if (fx::f32_bits(narrowed) != want) mismatches.add("narrow NaN " + hex(bits));
    } else if (fx::f32_bits(narrowed) != fx::f32_bits(float(d))) {
      mismatches.add("narrow " + hex(fx::f64_bits(d)) + " -> " + describe(narrowed));
    }
  }
  EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
}

// ---- convert(): bulk, every pair, against the scalar functions ----------------------------------------

constexpr DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3FN, DType::F8_E5M2, DType::F64};

// Random source bytes: for the narrow formats every code is equally likely; for f32 and f64 the values
// cover all magnitudes and the specials (random bit patterns alone would be mostly huge or tiny).
std::vector<uint8_t> random_source(DType dtype, size_t n, std::mt19937_64& random) {
  std::vector<uint8_t> bytes(n * fx::dtype_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = random();
    const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 448.0, 464.0, 57344.0, 65520.0, 1e-45};
    double value = std::ldexp(double(r >> 12) / double(1ull << 52) + 1.0, int(r % 80) - 40);
    if ((r >> 7) % 2) value = -value;
    if (r % 17 == 0) value = special[(r >> 20) % 10];
    switch (dtype) {
      case DType::F32: {
        const float f = (r % 13 == 0) ? fx::f32_from_bits(uint32_t(r >> 32)) : float(value);
        std::memcpy(&bytes[i * 4], &f, 4);
        break;
      }
      case DType::F64: {
        const double d = (r % 13 == 0) ? fx::f64_from_bits(r * 0x9E3779B97F4A7C15ull) : value * (1 + 1e-12);
        std::memcpy(&bytes[i * 8], &d, 8);
        break;
      }
      case DType::F16:
      case DType::BF16: {
        const uint16_t code = uint16_t(r >> 40);
        std::memcpy(&bytes[i * 2], &code, 2);
        break;
      }
      default:
        bytes[i] = uint8_t(r >> 48);
        break;
    }
  }
  return bytes;
}

// Element i converted by the public scalar functions, as the bytes convert() must write.
void expected_element(DType src, const uint8_t* src_bytes, DType dst, uint8_t* out, size_t i, Overflow mode) {
  if (src == dst) {  // a copy: NaN payloads stay as they are
    std::memcpy(out, src_bytes + i * fx::dtype_size(src), fx::dtype_size(src));
    return;
  }
  float value = 0;
  switch (src) {
    case DType::F32: std::memcpy(&value, src_bytes + i * 4, 4); break;
    case DType::F16: { uint16_t c; std::memcpy(&c, src_bytes + i * 2, 2); value = fx::f16_to_f32(c); break; }
    case DType::BF16: { uint16_t c; std::memcpy(&c, src_bytes + i * 2, 2); value = fx::bf16_to_f32(c); break; }
    case DType::F8_E4M3FN: value = fx::e4m3fn_to_f32(src_bytes[i]); break;
    case DType::F8_E5M2: value = fx::e5m2_to_f32(src_bytes[i]); break;
    case DType::F64: {
      double d;
      std::memcpy(&d, src_bytes + i * 8, 8);
      value = fx::f64_to_f32(d);
      break;
    }
    default: FAIL() << "not a float dtype";
  }
  switch (dst) {
    case DType::F32: std::memcpy(out, &value, 4); break;
    case DType::F16: { const uint16_t c = fx::f32_to_f16(value); std::memcpy(out, &c, 2); break; }
    case DType::BF16: { const uint16_t c = fx::f32_to_bf16(value); std::memcpy(out, &c, 2); break; }
    case DType::F8_E4M3FN: *out = fx::f32_to_e4m3fn(value, mode); break;
    case DType::F8_E5M2: *out = fx::f32_to_e5m2(value, mode); break;
    case DType::F64: { const double d = fx::f32_to_f64(value); std::memcpy(out, &d, 8); break; }
    default: FAIL() << "not a float dtype";
  }
}

// Restores the F16C path when a test that turned it off ends, even by a failed assertion.
// SIMD allowed: the level in force (the machine's, or FX_CPU_ISA's); not allowed: capped at portable.
class SimdSetting {
 public:
  explicit SimdSetting(bool allowed) : cap_(allowed ? fx::isa_level() : fx::IsaLevel::Portable) {}

 private:
  fx::ScopedIsaCap cap_;
};

void check_bulk_convert_every_pair(bool simd_allowed) {
  SimdSetting setting(simd_allowed);
  std::mt19937_64 random(simd_allowed ? 1 : 2);
  constexpr size_t kGuard = 16;  // bytes after the output that must stay poisoned
  constexpr uint8_t kPoison = 0xA7;
  for (const size_t n : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(31), size_t(4099)}) {
    for (DType src : kFloatTypes) {
      const std::vector<uint8_t> source = random_source(src, n, random);
      for (DType dst : kFloatTypes) {
        for (Overflow mode : kModes) {
          SCOPED_TRACE(std::string(fx::dtype_name(src)) + " -> " + fx::dtype_name(dst) + " " + mode_name(mode) +
                       " n=" + std::to_string(n) + (simd_allowed ? " simd allowed" : " scalar"));
          const size_t dst_size = fx::dtype_size(dst);
          std::vector<uint8_t> out(n * dst_size + kGuard, kPoison);
          fx::convert(src, source.data(), dst, out.data(), n, mode);
          Mismatches mismatches;
          std::vector<uint8_t> want(dst_size);
          for (size_t i = 0; i < n; ++i) {
            expected_element(src, source.data(), dst, want.data(), i, mode);
            if (std::memcmp(want.data(), &out[i * dst_size], dst_size) != 0) {
              mismatches.add("element " + std::to_string(i));
            }
          }
          for (size_t i = n * dst_size; i < out.size(); ++i) {
            if (out[i] != kPoison) mismatches.add("wrote past the end at byte " + std::to_string(i));
          }
          EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
        }
      }
    }
  }
}

TEST(DtypeConvert, EveryPairMatchesTheScalarFunctions) { check_bulk_convert_every_pair(true); }

TEST(DtypeConvert, EveryPairMatchesTheScalarFunctionsWithoutSimd) {
  check_bulk_convert_every_pair(false);
  EXPECT_FALSE([] {
    SimdSetting off(false);
    return fx::convert_uses_simd();
  }());
}

// The bulk f32 <-> f16 (F16C where the CPU has it) against the scalar functions on every f16 code, on
// f32 values at, around and between every f16 code, and on f32 NaNs (whose f16 payload F16C chooses).
void check_bulk_f16_against_scalar() {
  std::vector<uint16_t> codes(65536);
  for (uint32_t c = 0; c < 65536; ++c) codes[c] = uint16_t(c);
  std::vector<float> widened(codes.size(), fx::f32_from_bits(0x7FBADBAD));
  fx::convert(DType::F16, codes.data(), DType::F32, widened.data(), codes.size(), Overflow::Ieee);
  Mismatches mismatches;
  for (uint32_t c = 0; c < 65536; ++c) {
    if (fx::f32_bits(widened[c]) != fx::f32_bits(fx::f16_to_f32(uint16_t(c)))) mismatches.add("decode " + hex(c));
  }
  std::vector<float> inputs;
  for (uint32_t c = 0; c < 65536; ++c) {
    const float value = fx::f16_to_f32(uint16_t(c));
    const float next = fx::f16_to_f32(uint16_t(c + 1));
    inputs.push_back(value);
    if (std::isfinite(value) && std::isfinite(next) && (c & 0x7FFF) != 0x7FFF) {
      const float midpoint = float((double(value) + double(next)) / 2);
      inputs.push_back(midpoint);
      inputs.push_back(std::nextafter(midpoint, -INFINITY));
      inputs.push_back(std::nextafter(midpoint, INFINITY));
    }
  }
  std::mt19937 random(5);
  for (int i = 0; i < 100000; ++i) inputs.push_back(fx::f32_from_bits(random()));
  std::vector<uint16_t> narrowed(inputs.size(), 0xBEEF);
  fx::convert(DType::F32, inputs.data(), DType::F16, narrowed.data(), inputs.size(), Overflow::Ieee);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (narrowed[i] != fx::f32_to_f16(inputs[i])) {
      mismatches.add("encode " + describe(inputs[i]) + " -> " + hex(narrowed[i]));
    }
  }
  EXPECT_EQ(mismatches.count(), 0) << mismatches.report();
}

TEST(DtypeConvert, F16cPathMatchesScalarOnEveryCodeAndMidpoint) { check_bulk_f16_against_scalar(); }

#if defined(__SSE__) || defined(__x86_64__)
// A host process may run with flush-to-zero and denormals-are-zero set (some numeric libraries do);
// the conversions must still give the same bits, subnormals included.
TEST(DtypeConvert, ResultsDoNotDependOnFlushToZeroModes) {
  class FlushModes {
   public:
    FlushModes() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
    ~FlushModes() { _mm_setcsr(saved_); }

   private:
    unsigned saved_;
  };
  FlushModes flush;
  check_bulk_f16_against_scalar();
  check_bulk_convert_every_pair(true);
}
#endif

TEST(DtypeConvert, SameDtypeIsACopyForEveryDtype) {
  std::mt19937_64 random(3);
  for (int32_t value = 0; value < FX_DTYPE_COUNT_; ++value) {
    const auto dtype = static_cast<DType>(value);
    const size_t n = 37;
    std::vector<uint8_t> source(n * fx::dtype_size(dtype));
    for (uint8_t& byte : source) byte = uint8_t(random());
    std::vector<uint8_t> out(source.size(), 0xA7);
    fx::convert(dtype, source.data(), dtype, out.data(), n, Overflow::Saturate);
    EXPECT_EQ(out, source) << fx::dtype_name(dtype);
  }
}

fx_status status_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const fx::Error& error) {
    return error.status();
  }
  return FX_OK;
}

TEST(DtypeConvert, ErrorsSayWhatKindOfProblem) {
  float f32[4] = {1, 2, 3, 4};
  uint8_t bytes[64] = {};
  const auto bad_dtype = static_cast<DType>(FX_DTYPE_COUNT_);
  const auto bad_mode = static_cast<Overflow>(2);
  auto convert = [](DType s, const void* src, DType d, void* dst, size_t n, Overflow o) {
    return status_of([&] { fx::convert(s, src, d, dst, n, o); });
  };
  // Valid dtypes that do not convert.
  for (DType other : {DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL, DType::U16, DType::U32,
                      DType::U64}) {
    SCOPED_TRACE(fx::dtype_name(other));
    EXPECT_EQ(convert(DType::F32, f32, other, bytes, 4, Overflow::Saturate), FX_ERR_UNSUPPORTED);
    EXPECT_EQ(convert(other, bytes, DType::F32, f32, 4, Overflow::Saturate), FX_ERR_UNSUPPORTED);
    EXPECT_EQ(convert(other, bytes, DType::BF16, f32, 0, Overflow::Saturate), FX_ERR_UNSUPPORTED) << "even with n = 0";
  }
  EXPECT_EQ(convert(DType::I32, bytes, DType::U32, f32, 4, Overflow::Saturate), FX_ERR_UNSUPPORTED);
  // Values outside the enums.
  EXPECT_EQ(convert(bad_dtype, bytes, DType::F32, f32, 4, Overflow::Saturate), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, f32, static_cast<DType>(-1), bytes, 4, Overflow::Saturate), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, f32, DType::F8_E4M3FN, bytes, 4, bad_mode), FX_ERR_INVALID_ARGUMENT);
  // Null buffers, overlap, size overflow.
  EXPECT_EQ(convert(DType::F32, nullptr, DType::F16, bytes, 4, Overflow::Ieee), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, f32, DType::F16, nullptr, 4, Overflow::Ieee), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, nullptr, DType::F16, nullptr, 0, Overflow::Ieee), FX_OK);
  EXPECT_EQ(convert(DType::F16, bytes, DType::F32, bytes + 4, 4, Overflow::Ieee), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, bytes + 7, DType::BF16, bytes, 4, Overflow::Ieee), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(convert(DType::F32, bytes + 8, DType::BF16, bytes, 4, Overflow::Ieee), FX_OK) << "adjacent is fine";
  EXPECT_EQ(convert(DType::F64, bytes, DType::F32, bytes + 32, SIZE_MAX / 4, Overflow::Ieee), FX_ERR_INVALID_ARGUMENT);
  // The thrown error is an fx::Error carrying a message that names the dtypes.
  try {
    fx::convert(DType::F32, f32, DType::I32, bytes, 4, Overflow::Saturate);
    FAIL() << "no error";
  } catch (const fx::Error& error) {
    EXPECT_NE(std::string(error.what()).find("I32"), std::string::npos) << error.what();
  }
  // validate_convert_arguments is the same check without the conversion.
  EXPECT_EQ(status_of([&] { fx::validate_convert_arguments(DType::F32, f32, DType::U8, bytes, 4, Overflow::Ieee); }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] { fx::validate_convert_arguments(DType::F32, f32, DType::F16, bytes, 4, Overflow::Ieee); }),
            FX_OK);
}

}  // namespace
