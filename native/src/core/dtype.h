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
// Bytes per element.
size_t dtype_size(DType dtype);
// Name as safetensors spells it: "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F64", "I64", ... "BOOL".
const char* dtype_name(DType dtype);
// Parses a safetensors dtype name; false if unknown.
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

// Converts n elements between floating-point dtypes (see dtype_is_float). f64 sources are first
// rounded to f32. Same dtype: memcpy. Throws fx::Error(FX_ERR_UNSUPPORTED) for non-float dtypes.
void convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, size_t n, Overflow overflow);

}  // namespace fx

#include "core/dtype_inl.h"  // definitions of the FX_HD functions
