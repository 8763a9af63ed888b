#include "ops/cpu/latents.h"

#include <cstring>

namespace fx::cpu {

// Both directions walk the latent row by row and move pairs of columns: a packed token's four values of
// one channel come from two rows of two adjacent columns, so each inner step reads (or writes) two
// contiguous floats of the latent.
void pack_latents(const LatentShape& s, const float* latents, float* packed) {
  const int64_t C = s.channels, h = s.height, w = s.width, w2 = w / 2, K = 4 * C;
  const int64_t per_sample = C * h * w;
  for (int64_t b = 0; b < s.batch; ++b) {
    const float* z = latents + b * per_sample;
    float* p = packed + b * per_sample;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < h; ++y) {
        const float* row = z + (c * h + y) * w;
        float* dst = p + (y / 2) * w2 * K + 4 * c + 2 * (y % 2);
        for (int64_t x2 = 0; x2 < w2; ++x2) {
          dst[x2 * K] = row[2 * x2];
          dst[x2 * K + 1] = row[2 * x2 + 1];
        }
      }
  }
}

void unpack_latents(const LatentShape& s, const float* packed, float* latents) {
  const int64_t C = s.channels, h = s.height, w = s.width, w2 = w / 2, K = 4 * C;
  const int64_t per_sample = C * h * w;
  for (int64_t b = 0; b < s.batch; ++b) {
    const float* p = packed + b * per_sample;
    float* z = latents + b * per_sample;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < h; ++y) {
        float* row = z + (c * h + y) * w;
        const float* src = p + (y / 2) * w2 * K + 4 * c + 2 * (y % 2);
        for (int64_t x2 = 0; x2 < w2; ++x2) {
          row[2 * x2] = src[x2 * K];
          row[2 * x2 + 1] = src[x2 * K + 1];
        }
      }
  }
}

void pack_latents_reference(const LatentShape& s, const float* latents, float* packed) {
  const int64_t C = s.channels, h = s.height, w = s.width;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t n = (y / 2) * (w / 2) + x / 2, k = 4 * c + 2 * (y % 2) + (x % 2);
          packed[(b * (h / 2) * (w / 2) + n) * 4 * C + k] = latents[((b * C + c) * h + y) * w + x];
        }
}

void unpack_latents_reference(const LatentShape& s, const float* packed, float* latents) {
  const int64_t C = s.channels, h = s.height, w = s.width;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t n = (y / 2) * (w / 2) + x / 2, k = 4 * c + 2 * (y % 2) + (x % 2);
          latents[((b * C + c) * h + y) * w + x] = packed[(b * (h / 2) * (w / 2) + n) * 4 * C + k];
        }
}

void euler_step(float* x, const float* v, int64_t count, float dt, ThreadPool& pool) {
  pool.parallel_for(count, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] += dt * v[i];
  }, /*grain=*/1 << 16);
}

}  // namespace fx::cpu
