// The dtype table (sizes, safetensors names) and the bulk CPU convert().
//
// convert() is the scalar conversions of dtype_inl.h in a loop, instantiated per (source, target)
// pair so that the compiler can inline and vectorise each one, and compiled twice: for the baseline
// and for AVX2 (chosen at run time). The one exception is f32 <-> f16 on CPUs with F16C, whose
// instructions round to nearest even with subnormals and produce the same NaNs as f32_to_f16 /
// f16_to_f32 (that choice of NaN was made to match them), so the results are the same bits; the
// tests compare every path with the scalar functions.
#include "core/dtype.h"

#include <string>

#include "core/cpu_features.h"
#include "core/error.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FX_DTYPE_HAVE_F16C_PATH 1
#include <immintrin.h>
#endif

namespace fx {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
  bool is_float;
};

// Indexed by the enum value (fluxnative.h numbers them 0..FX_DTYPE_COUNT_-1).
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4, true},       {DType::F16, "F16", 2, true},      {DType::BF16, "BF16", 2, true},
    {DType::F8_E4M3FN, "F8_E4M3", 1, true}, {DType::F8_E5M2, "F8_E5M2", 1, true}, {DType::F64, "F64", 8, true},
    {DType::I64, "I64", 8, false},      {DType::I32, "I32", 4, false},     {DType::I16, "I16", 2, false},
    {DType::I8, "I8", 1, false},        {DType::U8, "U8", 1, false},       {DType::BOOL, "BOOL", 1, false},
    {DType::U16, "U16", 2, false},      {DType::U32, "U32", 4, false},     {DType::U64, "U64", 8, false},
};
static_assert(sizeof(kDTypes) / sizeof(kDTypes[0]) == FX_DTYPE_COUNT_, "one row per fx_dtype");

constexpr bool table_is_in_enum_order() {
  for (size_t i = 0; i < sizeof(kDTypes) / sizeof(kDTypes[0]); ++i) {
    if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(table_is_in_enum_order(), "kDTypes is indexed by the enum value");

const DTypeInfo& info_of(DType dtype, const char* caller) {
  const auto value = static_cast<int32_t>(dtype);
  if (!dtype_valid(value)) {
    fail(FX_ERR_INVALID_ARGUMENT, std::string(caller) + ": " + std::to_string(value) + " is not a valid dtype");
  }
  return kDTypes[value];
}

#if defined(FX_DTYPE_HAVE_F16C_PATH)
bool cpu_has_f16c() {
  // AVX is checked too: F16C writes ymm registers, which the OS must have enabled (the CPUID bit for
  // F16C alone does not say so, and __builtin_cpu_supports("avx") does).
  // Asked on every call (not cached): the ISA cap (core/cpu_features.h) may change between calls.
  return (cpu_features() & FX_CPU_F16C) != 0 && __builtin_cpu_supports("avx");
}

__attribute__((target("avx,f16c"))) void f32_to_f16_f16c(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 values = _mm256_loadu_ps(src + i);
    const __m128i halves = _mm256_cvtps_ph(values, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), halves);
  }
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(halves));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
#endif

bool f16c_in_use() {
#if defined(FX_DTYPE_HAVE_F16C_PATH)
  return cpu_has_f16c();
#else
  return false;
#endif
}

template <DType kSrc, DType kDst>
void convert_loop(const void* src, void* dst, size_t n, Overflow overflow) {
  for (size_t i = 0; i < n; ++i) dtype_detail::convert_element<kSrc, kDst>(src, dst, i, overflow);
}

#if defined(FX_DTYPE_HAVE_F16C_PATH)
// The same loop compiled for AVX2, whose per-lane variable shifts let the compiler vectorise the
// rounding (SSE2, the baseline, has none). The code is integer arithmetic on bit patterns, so the
// instruction set cannot change a result.
template <DType kSrc, DType kDst>
__attribute__((target("avx2"))) void convert_loop_avx2(const void* src, void* dst, size_t n, Overflow overflow) {
  for (size_t i = 0; i < n; ++i) dtype_detail::convert_element<kSrc, kDst>(src, dst, i, overflow);
}
#endif

bool avx2_in_use() {
#if defined(FX_DTYPE_HAVE_F16C_PATH)
  return (cpu_features() & FX_CPU_AVX2) != 0;
#else
  return false;
#endif
}

// The loop for one (source, target) pair, in the widest instruction set allowed.
struct ConvertLoop {
  const void* src;
  void* dst;
  size_t n;
  Overflow overflow;

  template <DType kSrc, DType kDst>
  void operator()() const {
#if defined(FX_DTYPE_HAVE_F16C_PATH)
    if (avx2_in_use()) {
      convert_loop_avx2<kSrc, kDst>(src, dst, n, overflow);
      return;
    }
#endif
    convert_loop<kSrc, kDst>(src, dst, n, overflow);
  }
};

}  // namespace

bool dtype_valid(int32_t value) { return value >= 0 && value < FX_DTYPE_COUNT_; }

size_t dtype_size(DType dtype) { return info_of(dtype, "dtype_size").size; }

const char* dtype_name(DType dtype) { return info_of(dtype, "dtype_name").name; }

bool dtype_from_name(std::string_view name, DType* out) {
  if (out == nullptr) fail(FX_ERR_INVALID_ARGUMENT, "dtype_from_name: out is null");
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) {
      *out = info.dtype;
      return true;
    }
  }
  return false;
}

bool dtype_is_float(DType dtype) {
  const auto value = static_cast<int32_t>(dtype);
  return dtype_valid(value) && kDTypes[value].is_float;
}

void validate_convert_arguments(DType src_dtype, const void* src, DType dst_dtype, const void* dst, size_t n,
                                Overflow overflow) {
  const size_t src_size = info_of(src_dtype, "convert (source dtype)").size;
  const size_t dst_size = info_of(dst_dtype, "convert (target dtype)").size;
  if (overflow != Overflow::Saturate && overflow != Overflow::Ieee) {
    fail(FX_ERR_INVALID_ARGUMENT,
         "convert: " + std::to_string(static_cast<int32_t>(overflow)) + " is not a valid overflow mode");
  }
  if (src_dtype != dst_dtype && (!dtype_is_float(src_dtype) || !dtype_is_float(dst_dtype))) {
    fail(FX_ERR_UNSUPPORTED, std::string("convert: ") + dtype_name(src_dtype) + " -> " + dtype_name(dst_dtype) +
                                 " is not supported (only floating-point dtypes convert)");
  }
  if (n == 0) return;
  if (src == nullptr || dst == nullptr) fail(FX_ERR_INVALID_ARGUMENT, "convert: null buffer with a nonzero count");
  if (n > SIZE_MAX / src_size || n > SIZE_MAX / dst_size) {
    fail(FX_ERR_INVALID_ARGUMENT, "convert: " + std::to_string(n) + " elements overflow the address space");
  }
  const auto src_begin = reinterpret_cast<uintptr_t>(src);
  const auto dst_begin = reinterpret_cast<uintptr_t>(dst);
  if (src_begin < dst_begin + n * dst_size && dst_begin < src_begin + n * src_size) {
    fail(FX_ERR_INVALID_ARGUMENT, "convert: the source and target buffers overlap");
  }
}

void convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, size_t n, Overflow overflow) {
  validate_convert_arguments(src_dtype, src, dst_dtype, dst, n, overflow);
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, n * dtype_size(src_dtype));
    return;
  }
#if defined(FX_DTYPE_HAVE_F16C_PATH)
  if (f16c_in_use()) {
    if (src_dtype == DType::F32 && dst_dtype == DType::F16) {
      f32_to_f16_f16c(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
      return;
    }
    if (src_dtype == DType::F16 && dst_dtype == DType::F32) {
      f16_to_f32_f16c(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n);
      return;
    }
  }
#endif
  ConvertLoop loop{src, dst, n, overflow};
  dtype_detail::visit_float_pair(src_dtype, dst_dtype, loop);
}

bool convert_uses_simd() noexcept { return f16c_in_use() || avx2_in_use(); }

}  // namespace fx
