// The latent layout of FLUX (docs/flux-model.md §4.3) and the Euler step of its flow ODE (§6.2).
//
// The autoencoder works on latents [B, C, h, w]; the transformer on 2x2 patches of them, packed into
// tokens [B, (h/2)(w/2), 4C]. Token n = (y/2)(w/2) + x/2, channel k = 4c + 2(y%2) + (x%2).
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace fx::cpu {

struct LatentShape {
  int64_t batch = 1, channels = 16, height = 0, width = 0;  // height and width even
};

void pack_latents(const LatentShape& s, const float* latents, float* packed);
void unpack_latents(const LatentShape& s, const float* packed, float* latents);

// Plain index-by-index versions of the two above, for the tests.
void pack_latents_reference(const LatentShape& s, const float* latents, float* packed);
void unpack_latents_reference(const LatentShape& s, const float* packed, float* latents);

// x[i] += dt * v[i].
void euler_step(float* x, const float* v, int64_t count, float dt, ThreadPool& pool = ThreadPool::global());

}  // namespace fx::cpu
