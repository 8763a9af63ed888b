// The sm_80 primitives of native/src/ops/cuda/mma.cuh, emulated (this file comes first on the include path):
// cp.async copies at once (so a missing wait goes unseen); ldmatrix and mma.sync exchange the warp's
// addresses and fragments through the emulator and rebuild the PTX fragment layouts
// (m8n8.x4 [.trans] b16; m16n8k16 row.col bf16 -> f32) lane by lane.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>
#include <cstring>

namespace fx::cuda::dev::sm80 {

inline void cp_async16(void* smem, const void* gmem, int src_bytes) {
  if (src_bytes == 16) std::memcpy(smem, gmem, 16); else std::memset(smem, 0, 16);
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {}

inline uint16_t bits_of(const __nv_bfloat16* p) { uint16_t b; std::memcpy(&b, p, 2); return b; }
inline uint32_t pack(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

inline void ldmatrix_impl(uint32_t (&r)[4], const __nv_bfloat16* p, bool trans) {
  const __nv_bfloat16* const* rows = static_cast<const __nv_bfloat16* const*>(emu::exchange(&p, sizeof(p)));
  const int l = int(threadIdx.x % 32);
  for (int i = 0; i < 4; ++i) {
    if (!trans) {
      const __nv_bfloat16* row = rows[8 * i + l / 4];
      r[i] = pack(bits_of(row + 2 * (l % 4)), bits_of(row + 2 * (l % 4) + 1));
    } else {
      r[i] = pack(bits_of(rows[8 * i + 2 * (l % 4)] + l / 4), bits_of(rows[8 * i + 2 * (l % 4) + 1] + l / 4));
    }
  }
  emu::syncwarp();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16* p) { ldmatrix_impl(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) { ldmatrix_impl(r, p, true); }

inline float lo_f(uint32_t w) { uint32_t b = w << 16; float f; std::memcpy(&f, &b, 4); return f; }
inline float hi_f(uint32_t w) { uint32_t b = w & 0xFFFF0000u; float f; std::memcpy(&f, &b, 4); return f; }

struct MmaIn { uint32_t a[4]; uint32_t b0, b1; };
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  MmaIn mine{{a[0], a[1], a[2], a[3]}, b0, b1};
  const MmaIn* all = static_cast<const MmaIn*>(emu::exchange(&mine, sizeof(mine)));
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const MmaIn& m = all[l];
    A[g][2 * t] = lo_f(m.a[0]); A[g][2 * t + 1] = hi_f(m.a[0]);
    A[g + 8][2 * t] = lo_f(m.a[1]); A[g + 8][2 * t + 1] = hi_f(m.a[1]);
    A[g][2 * t + 8] = lo_f(m.a[2]); A[g][2 * t + 9] = hi_f(m.a[2]);
    A[g + 8][2 * t + 8] = lo_f(m.a[3]); A[g + 8][2 * t + 9] = hi_f(m.a[3]);
    B[2 * t][g] = lo_f(m.b0); B[2 * t + 1][g] = hi_f(m.b0);
    B[2 * t + 8][g] = lo_f(m.b1); B[2 * t + 9][g] = hi_f(m.b1);
  }
  const int l = int(threadIdx.x % 32), g = l / 4, t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float s = d[e];
    for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
    d[e] = s;
  }
  emu::syncwarp();
}

}  // namespace fx::cuda::dev::sm80
