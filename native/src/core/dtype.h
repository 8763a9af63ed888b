// Data types and bit-exact scalar conversions between them.
//
// The scalar conversions are header-only and marked FX_HD so that the CPU code and the CUDA kernels
// compile the very same functions: a value converts to the same bits on every backend.
// Rounding is round-to-nearest, ties-to-even everywhere. NaN inputs give a quiet NaN of the target
// with the input's sign (e4m3fn has a single NaN pattern per sign: S.1111.111).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "fluxnative.h"

#if defined(__CUDACC__)
#define FX_HD __host__ __device__ __forceinline__
#else
#define FX_HD inline
#endif

namespace fx {

enum class DType : int32_t {
  F32 = FX_DTYPE_F32,
  F16 = FX_DTYPE_F16,
  BF16 = FX_DTYPE_BF16,
  F8_E4M3FN = FX_DTYPE_F8_E4M3FN,
  F8_E5M2 = FX_DTYPE_F8_E5M2,
  F64 = FX_DTYPE_F64,
  I64 = FX_DTYPE_I64,
  I32 = FX_DTYPE_I32,
  I16 = FX_DTYPE_I16,
  I8 = FX_DTYPE_I8,
  U8 = FX_DTYPE_U8,
  BOOL = FX_DTYPE_BOOL,
  U16 = FX_DTYPE_U16,
  U32 = FX_DTYPE_U32,
  U64 = FX_DTYPE_U64,
};

enum class Overflow : int32_t { Saturate = FX_OVERFLOW_SATURATE, Ieee = FX_OVERFLOW_IEEE };

// Valid enum value?
bool dtype_valid(int32_t value);
// Bytes per element. dtype_size and dtype_name throw fx::Error(FX_ERR_INVALID_ARGUMENT) for a value
// outside the enum; the predicates (dtype_valid, dtype_is_float) never throw.
size_t dtype_size(DType dtype);
// Name as safetensors spells it: "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F64", "I64", ... "BOOL".
const char* dtype_name(DType dtype);
// Parses a safetensors dtype name (exact, case-sensitive spelling); false if unknown.
bool dtype_from_name(std::string_view name, DType* out);
// f32, f64, f16, bf16, e4m3fn, e5m2.
bool dtype_is_float(DType dtype);

// ---- scalar conversions (bit patterns in unsigned integers) ----
FX_HD uint32_t f32_bits(float x);
FX_HD float f32_from_bits(uint32_t bits);

FX_HD float bf16_to_f32(uint16_t bits);
FX_HD uint16_t f32_to_bf16(float x);  // overflow rounds to ±inf, as IEEE defines

FX_HD float f16_to_f32(uint16_t bits);
FX_HD uint16_t f32_to_f16(float x);   // overflow rounds to ±inf; subnormals handled exactly

FX_HD float e4m3fn_to_f32(uint8_t bits);
FX_HD uint8_t f32_to_e4m3fn(float x, Overflow overflow);  // Saturate: ±448; Ieee: NaN (no inf in e4m3fn)

FX_HD float e5m2_to_f32(uint8_t bits);
FX_HD uint8_t f32_to_e5m2(float x, Overflow overflow);    // Saturate: ±57344; Ieee: ±inf

// f64 <-> f32 in integer arithmetic, so that a GPU (whose float conversions may flush subnormals or
// canonicalise NaNs) gives the same bits as the CPU. Widening is exact; narrowing rounds to nearest even.
FX_HD uint64_t f64_bits(double x);
FX_HD double f64_from_bits(uint64_t bits);
FX_HD double f32_to_f64(float x);
FX_HD float f64_to_f32(double x);

// Converts n elements between floating-point dtypes (see dtype_is_float). f64 sources are first
// rounded to f32. Same dtype: memcpy. Throws fx::Error(FX_ERR_UNSUPPORTED) for non-float dtypes.
void convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, size_t n, Overflow overflow);
//
// Details of convert(): the same dtype is a plain copy for every valid dtype (integers included).
// Other errors: FX_ERR_INVALID_ARGUMENT for values outside the DType or Overflow enums, a null buffer
// with n > 0, overlapping buffers, or n * element size beyond size_t.

// Throws what convert() throws for these arguments; other backends' converts call it first so that
// every backend rejects the same calls with the same status.
void validate_convert_arguments(DType src_dtype, const void* src, DType dst_dtype, const void* dst, size_t n,
                                Overflow overflow);

// Tests only: convert() uses F16C (f32 <-> f16) and an AVX2 build of its loop when the CPU has them
// and the ISA cap (core/cpu_features.h) allows them; capping at IsaLevel::Portable lets the tests check
// the baseline loop on the same machine. convert_uses_simd says whether any of those paths is in use now.
bool convert_uses_simd() noexcept;

}  // namespace fx

#include "core/dtype_inl.h"  // definitions of the FX_HD functions
