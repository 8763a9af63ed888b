// Definitions of the FX_HD scalar conversions declared in dtype.h (include dtype.h, not this file).
//
// Everything here is integer arithmetic on bit patterns. Float arithmetic would depend on the
// backend's modes (a GPU built with fast math flushes subnormals; CPUs differ in NaN payloads), and
// the whole point of these functions is that every backend produces the same bits.
//
// Narrowing uses one scheme for every target: the source magnitude (exponent and mantissa fields,
// sign removed) is shifted right until only the target's mantissa bits remain, rounding the dropped
// bits to nearest, ties to even. In the normal range the exponent field rides along, so a mantissa
// that rounds up past all ones carries into the exponent, which is exactly the next binade. The
// result may exceed the target's largest finite code (the format is treated as if its exponent range
// went on); each target then decides what overflow means for it.
//
// NaN results (the sign of the input NaN is always kept):
//   f32 -> bf16, f16:  a quiet NaN holding the top payload bits (what F16C and AVX512-BF16 produce);
//   f32 -> e4m3fn:     S.1111.111, the format's only NaN;   f32 -> e5m2: S.11111.10 (quiet);
//   bf16, f16 -> f32:  the payload moved up, quiet bit set; e4m3fn, e5m2 -> f32: 0x7FC00000 | sign;
//   f32 <-> f64:       payload moved (truncated when narrowing), quiet bit set (what x86 does).
#pragma once

namespace fx {

FX_HD uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

FX_HD float f32_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

FX_HD uint64_t f64_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

FX_HD double f64_from_bits(uint64_t bits) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

namespace dtype_detail {

// v >> shift, rounded to nearest with ties to even. 1 <= shift < bit width of U.
template <typename U>
FX_HD U shift_right_round_even(U v, int shift) {
  const U kept = v >> shift;
  const U dropped = v & ((U(1) << shift) - 1);
  const U half = U(1) << (shift - 1);
  const bool round_up = dropped > half || (dropped == half && (kept & 1) != 0);
  return kept + U(round_up ? 1 : 0);
}

// Narrows a non-NaN magnitude (infinity allowed) of a binary format with kSrcMan mantissa bits and
// exponent bias kSrcBias to one with kDstMan / kDstBias. The result may exceed the target's largest
// finite code; the caller clamps it (see the top of this file).
//
// Written with selects instead of branches: weights straddle the fp8 normal/subnormal boundary at
// random, so branches here would mispredict about as often as not (and would stop vectorisation).
template <typename U, int kSrcMan, int kSrcBias, int kDstMan, int kDstBias>
FX_HD U narrow_magnitude(U magnitude) {
  static_assert(kSrcMan > kDstMan && kSrcBias >= kDstBias, "narrow_magnitude only narrows");
  const int exponent = static_cast<int>(magnitude >> kSrcMan);
  // The target's smallest normal exponent, as a biased exponent of the source format.
  constexpr int kDstMinNormal = kSrcBias - kDstBias + 1;
  const bool normal = exponent >= kDstMinNormal;

  // Normal range: drop the extra mantissa bits of the whole magnitude, then rebias the exponent.
  constexpr int kNormalShift = kSrcMan - kDstMan;
  constexpr U kRebias = U(kSrcBias - kDstBias) << kDstMan;

  // Target subnormal range: the code is the value in units of the target's smallest subnormal,
  // 2^(1 - kDstBias - kDstMan), and the source value is significand * 2^(exponent - kSrcBias - kSrcMan)
  // (a source subnormal has no implicit bit and the scale of exponent 1).
  const U implicit_bit = exponent != 0 ? (U(1) << kSrcMan) : U(0);
  const U significand = (magnitude & ((U(1) << kSrcMan) - 1)) | implicit_bit;
  const int scale_exponent = exponent != 0 ? exponent : 1;
  int subnormal_shift = kSrcBias + kSrcMan + 1 - kDstBias - kDstMan - scale_exponent;
  // From kSrcMan + 2 on, every significand (< 2^(kSrcMan+1)) is below half a unit and rounds to 0;
  // capping keeps the shift inside the integer's width.
  if (subnormal_shift > kSrcMan + 2) subnormal_shift = kSrcMan + 2;

  const U rounded =
      shift_right_round_even<U>(normal ? magnitude : significand, normal ? kNormalShift : subnormal_shift);
  return normal ? rounded - kRebias : rounded;
}

// Widens a finite magnitude of a narrow format (exponent and mantissa fields, no sign) to f32 bits.
// Exact: every such value, subnormals included, is a normal f32.
template <int kMan, int kBias>
FX_HD uint32_t widen_magnitude_to_f32(uint32_t magnitude) {
  static_assert(kBias + kMan <= 126, "the narrow format's subnormals must be normal f32 values");
  int exponent = static_cast<int>(magnitude >> kMan);
  uint32_t mantissa = magnitude & ((1u << kMan) - 1);
  if (exponent == 0) {
    if (mantissa == 0) return 0;
    // Subnormal: f32 has an implicit leading one, so move the highest set bit into that position,
    // lowering the exponent by one per step.
    exponent = 1;
    while ((mantissa & (1u << kMan)) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= (1u << kMan) - 1;
  }
  return (static_cast<uint32_t>(exponent - kBias + 127) << 23) | (mantissa << (23 - kMan));
}

constexpr uint32_t kF32Infinity = 0x7F800000u;
constexpr uint32_t kF32QuietBit = 0x00400000u;
constexpr uint32_t kF32QuietNan = 0x7FC00000u;

}  // namespace dtype_detail

// ---- bf16: the top half of an f32 ----------------------------------------------------------------

// Written without branches so that the bulk loops vectorise.
FX_HD float bf16_to_f32(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  const bool is_nan = (bits & 0x7FFFu) > 0x7F80u;
  return f32_from_bits(is_nan ? (widened | dtype_detail::kF32QuietBit) : widened);
}

FX_HD uint16_t f32_to_bf16(float x) {
  const uint32_t bits = f32_bits(x);
  const bool is_nan = (bits & 0x7FFFFFFFu) > dtype_detail::kF32Infinity;
  // Adding just under half of the dropped range, plus one when the kept part is odd, makes the
  // truncation round to nearest even; a carry out of the mantissa lands in the exponent (up to inf).
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(is_nan ? ((bits >> 16) | 0x0040u) : rounded);
}

// ---- f16: IEEE binary16 (1-5-10, bias 15) -------------------------------------------------------

FX_HD float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t magnitude = bits & 0x7FFFu;
  if (magnitude >= 0x7C00u) {
    const uint32_t mantissa = magnitude & 0x3FFu;
    if (mantissa == 0) return f32_from_bits(sign | dtype_detail::kF32Infinity);
    return f32_from_bits(sign | dtype_detail::kF32QuietNan | (mantissa << 13));
  }
  return f32_from_bits(sign | dtype_detail::widen_magnitude_to_f32<10, 15>(magnitude));
}

FX_HD uint16_t f32_to_f16(float x) {
  const uint32_t bits = f32_bits(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > dtype_detail::kF32Infinity) {
    return static_cast<uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x1FFu));
  }
  uint32_t code = dtype_detail::narrow_magnitude<uint32_t, 23, 127, 10, 15>(magnitude);
  if (code > 0x7C00u) code = 0x7C00u;  // beyond the largest finite: inf (0x7C00 itself already is)
  return static_cast<uint16_t>(sign | code);
}

// ---- e4m3fn (1-4-3, bias 7, no inf, NaN = S.1111.111) -------------------------------------------

FX_HD float e4m3fn_to_f32(uint8_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x80u) << 24;
  const uint32_t magnitude = bits & 0x7Fu;
  if (magnitude == 0x7Fu) return f32_from_bits(sign | dtype_detail::kF32QuietNan);
  return f32_from_bits(sign | dtype_detail::widen_magnitude_to_f32<3, 7>(magnitude));
}

FX_HD uint8_t f32_to_e4m3fn(float x, Overflow overflow) {
  const uint32_t bits = f32_bits(x);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > dtype_detail::kF32Infinity) return static_cast<uint8_t>(sign | 0x7Fu);
  uint32_t code = dtype_detail::narrow_magnitude<uint32_t, 23, 127, 3, 7>(magnitude);
  // 0x7F would be 480 if the format went on, but it is the NaN: anything rounding there or beyond
  // (from 464 exclusive, since 464 ties to the even 448) has overflowed, infinities included.
  if (code > 0x7Eu) code = overflow == Overflow::Saturate ? 0x7Eu : 0x7Fu;
  return static_cast<uint8_t>(sign | code);
}

// ---- e5m2 (1-5-2, bias 15, IEEE-like: inf = S.11111.00) -----------------------------------------

FX_HD float e5m2_to_f32(uint8_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x80u) << 24;
  const uint32_t magnitude = bits & 0x7Fu;
  if (magnitude == 0x7Cu) return f32_from_bits(sign | dtype_detail::kF32Infinity);
  if (magnitude > 0x7Cu) return f32_from_bits(sign | dtype_detail::kF32QuietNan);
  return f32_from_bits(sign | dtype_detail::widen_magnitude_to_f32<2, 15>(magnitude));
}

FX_HD uint8_t f32_to_e5m2(float x, Overflow overflow) {
  const uint32_t bits = f32_bits(x);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > dtype_detail::kF32Infinity) return static_cast<uint8_t>(sign | 0x7Eu);
  uint32_t code = dtype_detail::narrow_magnitude<uint32_t, 23, 127, 2, 15>(magnitude);
  // Saturation also turns an infinite input into ±57344: quantisation wants finite values only.
  if (code > 0x7Bu) code = overflow == Overflow::Saturate ? 0x7Bu : 0x7Cu;
  return static_cast<uint8_t>(sign | code);
}

// ---- f32 <-> f64 ----------------------------------------------------------------------------------

FX_HD double f32_to_f64(float x) {
  const uint32_t bits = f32_bits(x);
  const uint64_t sign = static_cast<uint64_t>(bits & 0x80000000u) << 32;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= dtype_detail::kF32Infinity) {
    const uint64_t payload = static_cast<uint64_t>(magnitude & 0x7FFFFFu) << 29;
    if (payload == 0) return f64_from_bits(sign | 0x7FF0000000000000ull);
    return f64_from_bits(sign | 0x7FF8000000000000ull | payload);
  }
  int exponent = static_cast<int>(magnitude >> 23);
  uint32_t mantissa = magnitude & 0x7FFFFFu;
  if (exponent == 0) {
    if (mantissa == 0) return f64_from_bits(sign);
    // f32 subnormal: normal in f64 once the leading one moves to the implicit-bit position.
    exponent = 1;
    while ((mantissa & 0x800000u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= 0x7FFFFFu;
  }
  return f64_from_bits(sign | (static_cast<uint64_t>(exponent - 127 + 1023) << 52) |
                       (static_cast<uint64_t>(mantissa) << 29));
}

FX_HD float f64_to_f32(double x) {
  const uint64_t bits = f64_bits(x);
  const uint32_t sign = static_cast<uint32_t>(bits >> 32) & 0x80000000u;
  const uint64_t magnitude = bits & 0x7FFFFFFFFFFFFFFFull;
  if (magnitude > 0x7FF0000000000000ull) {
    return f32_from_bits(sign | dtype_detail::kF32QuietNan | static_cast<uint32_t>((magnitude >> 29) & 0x3FFFFFu));
  }
  uint64_t code = dtype_detail::narrow_magnitude<uint64_t, 52, 1023, 23, 127>(magnitude);
  if (code > dtype_detail::kF32Infinity) code = dtype_detail::kF32Infinity;
  return f32_from_bits(sign | static_cast<uint32_t>(code));
}

namespace dtype_detail {

// Element i of a float array of dtype kSrc as an f32 (f64 is rounded; every other source is exact).
template <DType kSrc>
FX_HD float load_as_f32(const void* src, size_t i) {
  if constexpr (kSrc == DType::F32) {
    return static_cast<const float*>(src)[i];
  } else if constexpr (kSrc == DType::F16) {
    return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
  } else if constexpr (kSrc == DType::BF16) {
    return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
  } else if constexpr (kSrc == DType::F8_E4M3FN) {
    return e4m3fn_to_f32(static_cast<const uint8_t*>(src)[i]);
  } else if constexpr (kSrc == DType::F8_E5M2) {
    return e5m2_to_f32(static_cast<const uint8_t*>(src)[i]);
  } else {
    static_assert(kSrc == DType::F64, "load_as_f32: not a float dtype");
    return f64_to_f32(static_cast<const double*>(src)[i]);
  }
}

template <DType kDst>
FX_HD void store_from_f32(float value, void* dst, size_t i, Overflow overflow) {
  if constexpr (kDst == DType::F32) {
    static_cast<float*>(dst)[i] = value;
  } else if constexpr (kDst == DType::F16) {
    static_cast<uint16_t*>(dst)[i] = f32_to_f16(value);
  } else if constexpr (kDst == DType::BF16) {
    static_cast<uint16_t*>(dst)[i] = f32_to_bf16(value);
  } else if constexpr (kDst == DType::F8_E4M3FN) {
    static_cast<uint8_t*>(dst)[i] = f32_to_e4m3fn(value, overflow);
  } else if constexpr (kDst == DType::F8_E5M2) {
    static_cast<uint8_t*>(dst)[i] = f32_to_e5m2(value, overflow);
  } else {
    static_assert(kDst == DType::F64, "store_from_f32: not a float dtype");
    static_cast<double*>(dst)[i] = f32_to_f64(value);
  }
}

// One element of convert(). Every backend's convert calls this, so they agree bit for bit. Going
// through f32 rounds once: every source but f64 widens to f32 exactly.
template <DType kSrc, DType kDst>
FX_HD void convert_element(const void* src, void* dst, size_t i, Overflow overflow) {
  if constexpr (kSrc == DType::F64 && kDst == DType::F64) {
    static_cast<double*>(dst)[i] = static_cast<const double*>(src)[i];
  } else {
    store_from_f32<kDst>(load_as_f32<kSrc>(src, i), dst, i, overflow);
  }
}

// Calls visitor.template operator()<kSrc, kDst>() for the runtime pair, so that each backend writes
// its loop once and gets it instantiated for all 36 pairs of float dtypes. Both must be float dtypes
// (the caller has validated them).
template <DType kSrc, typename Visitor>
void visit_float_dst(DType dst, Visitor& visitor) {
  switch (dst) {
    case DType::F32: visitor.template operator()<kSrc, DType::F32>(); return;
    case DType::F16: visitor.template operator()<kSrc, DType::F16>(); return;
    case DType::BF16: visitor.template operator()<kSrc, DType::BF16>(); return;
    case DType::F8_E4M3FN: visitor.template operator()<kSrc, DType::F8_E4M3FN>(); return;
    case DType::F8_E5M2: visitor.template operator()<kSrc, DType::F8_E5M2>(); return;
    case DType::F64: visitor.template operator()<kSrc, DType::F64>(); return;
    default: return;
  }
}

template <typename Visitor>
void visit_float_pair(DType src, DType dst, Visitor& visitor) {
  switch (src) {
    case DType::F32: visit_float_dst<DType::F32>(dst, visitor); return;
    case DType::F16: visit_float_dst<DType::F16>(dst, visitor); return;
    case DType::BF16: visit_float_dst<DType::BF16>(dst, visitor); return;
    case DType::F8_E4M3FN: visit_float_dst<DType::F8_E4M3FN>(dst, visitor); return;
    case DType::F8_E5M2: visit_float_dst<DType::F8_E5M2>(dst, visitor); return;
    case DType::F64: visit_float_dst<DType::F64>(dst, visitor); return;
    default: return;
  }
}

}  // namespace dtype_detail
}  // namespace fx
