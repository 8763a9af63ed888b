// The edge behaviour every exp of the CPU kernels shares, whichever instruction set runs it, so that
// a result never depends on the machine: below kExpLow the result is exactly 0 (the true value is
// subnormal in f32, and subnormals would slow every later multiply); above kExpHigh it saturates to
// e^kExpHigh ≈ 2.4e38 instead of inf; NaN stays NaN. The vector versions (avx512_math.h) clamp with
// these constants; exp_flushed() is the scalar one the portable paths use.
#pragma once

#include <cmath>

namespace fx::cpu {

inline constexpr float kExpLow = -87.33654f;
inline constexpr float kExpHigh = 88.37626f;

inline float exp_flushed(float x) {
  if (x < kExpLow) return 0.0f;  // false for NaN, which std::exp passes through
  return std::exp(x > kExpHigh ? kExpHigh : x);
}

}  // namespace fx::cpu
