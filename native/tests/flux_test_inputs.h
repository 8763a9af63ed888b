// One forward of a tiny FLUX transformer on random inputs, for the tests that compare a model loaded from one
// file or format with the same model from another (test_fp8_checkpoints.cpp, test_gguf.cpp): li image tokens on a
// 3-wide grid (ids per docs/flux-model.md §4.4), lt text tokens, img/txt/y from N(0, 1) with `seed`, guidance 3.5.
#pragma once

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "models/flux_transformer.h"

namespace fx::test {

inline std::vector<float> forward_on_random_inputs(const fx::models::FluxTransformer& model, int64_t li, int64_t lt,
                                                   uint32_t seed, float timestep) {
  const auto& c = model.config();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  };
  const auto img = random(li * c.in_channels), txt = random(lt * c.context_in_dim), y = random(c.vec_in_dim);
  std::vector<float> img_ids(li * 3, 0.0f), txt_ids(lt * 3, 0.0f);
  for (int64_t i = 0; i < li; ++i) img_ids[i * 3 + 1] = float(i / 3), img_ids[i * 3 + 2] = float(i % 3);
  const float t = timestep, g = 3.5f;
  fx::models::FluxInputs in;
  in.img_tokens = li;
  in.txt_tokens = lt;
  in.img = img.data();
  in.img_ids = img_ids.data();
  in.txt = txt.data();
  in.txt_ids = txt_ids.data();
  in.y = y.data();
  in.timesteps = &t;
  in.guidance = &g;
  std::vector<float> out(li * c.out_channels, std::numeric_limits<float>::quiet_NaN());
  model.forward(in, out.data());
  return out;
}

}  // namespace fx::test
