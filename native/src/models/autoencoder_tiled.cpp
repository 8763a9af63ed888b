// Tiled decoding (autoencoder.h, decode_tiled): the latents are cut into overlapping square tiles, each decoded on
// its own, and the tiles' pixels blended where they overlap with weights that ramp linearly from 0 at a tile's
// inner edge to 1 across the overlap, so that neighbouring tiles hand over gradually instead of meeting at a seam.
// Memory then grows with the tile, not the image (the decoder's widest activation is 128 channels at the output
// resolution: 2 GiB per buffer at 2048² untiled). The tiles are not the untiled decode: each GroupNorm and the mid
// block's attention see one tile's statistics; the tests bound the difference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "models/autoencoder.h"

namespace fx::models {

namespace {

// Tile origins along one side of `size` latent cells: tiles of `tile` cells every `tile - overlap`, the last one
// moved back to end at the side (so every tile is whole and the overlaps are at least `overlap`).
std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap) {
  std::vector<int64_t> starts;
  if (size <= tile) return {0};
  const int64_t stride = tile - overlap;
  for (int64_t s = 0;; s += stride) {
    if (s + tile >= size) {
      starts.push_back(size - tile);
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

// The blend weight of pixel `p` (0-based, in a tile of `length` pixels) along one axis: a linear ramp over the
// `ramp` pixels at each side that has a neighbouring tile, 1 elsewhere; never 0, so every pixel has weight.
float ramp_weight(int64_t p, int64_t length, int64_t ramp, bool before, bool after) {
  float w = 1.0f;
  if (before && p < ramp) w = std::min(w, (static_cast<float>(p) + 0.5f) / static_cast<float>(ramp));
  if (after && p >= length - ramp) w = std::min(w, (static_cast<float>(length - p) - 0.5f) / static_cast<float>(ramp));
  return w;
}

}  // namespace

void Autoencoder::decode_tiled(const float* latents, int64_t batch, int64_t height, int64_t width, float* pixels,
                               int64_t tile, int64_t overlap, const volatile int32_t* cancel) const {
  if (tile <= 0 || (height <= tile && width <= tile)) {
    decode(latents, batch, height, width, pixels, cancel);
    return;
  }
  if (overlap < 1 || overlap * 2 > tile)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder tiled decode: the overlap must be between 1 and half the tile (tile " +
                                      std::to_string(tile) + ", overlap " + std::to_string(overlap) + " latent cells)");
  if (batch < 1 || height < 1 || width < 1)
    fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: batch, height and width must be >= 1");
  if (!latents || !pixels) fail(FX_ERR_INVALID_ARGUMENT, "autoencoder decode: latents and pixels are required");
  const AutoencoderConfig& c = config_;
  const int64_t f = c.downscale(), z = c.z_channels, channels = c.out_channels;
  const int64_t th = std::min(tile, height), tw = std::min(tile, width);
  const int64_t out_h = height * f, out_w = width * f, tile_h = th * f, tile_w = tw * f, ramp = overlap * f;
  const std::vector<int64_t> rows = tile_starts(height, th, overlap), cols = tile_starts(width, tw, overlap);

  std::vector<float> tile_latents(static_cast<size_t>(z * th * tw));
  std::vector<float> tile_pixels(static_cast<size_t>(channels * tile_h * tile_w));
  // The tiles form a grid and each tile's weight is wy(y)·wx(x), so the weight at a pixel sums to
  // (Σ over tile rows of wy)·(Σ over tile columns of wx): two lines, not an image, of sums.
  std::vector<float> sum_y(static_cast<size_t>(out_h)), sum_x(static_cast<size_t>(out_w));
  std::vector<float> wy(static_cast<size_t>(tile_h)), wx(static_cast<size_t>(tile_w));
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t y = 0; y < tile_h; ++y) sum_y[rows[i] * f + y] += ramp_weight(y, tile_h, ramp, i > 0, i + 1 < rows.size());
  for (size_t j = 0; j < cols.size(); ++j)
    for (int64_t x = 0; x < tile_w; ++x) sum_x[cols[j] * f + x] += ramp_weight(x, tile_w, ramp, j > 0, j + 1 < cols.size());
  for (int64_t b = 0; b < batch; ++b) {
    const float* lat = latents + b * z * height * width;
    float* out = pixels + b * channels * out_h * out_w;
    std::fill(out, out + channels * out_h * out_w, 0.0f);
    for (size_t i = 0; i < rows.size(); ++i) {
      for (size_t j = 0; j < cols.size(); ++j) {
        const int64_t y0 = rows[i], x0 = cols[j];
        for (int64_t ch = 0; ch < z; ++ch)
          for (int64_t y = 0; y < th; ++y)
            std::memcpy(&tile_latents[static_cast<size_t>((ch * th + y) * tw)], lat + (ch * height + y0 + y) * width + x0,
                        static_cast<size_t>(tw) * sizeof(float));
        decode(tile_latents.data(), 1, th, tw, tile_pixels.data(), cancel);
        for (int64_t y = 0; y < tile_h; ++y) wy[y] = ramp_weight(y, tile_h, ramp, i > 0, i + 1 < rows.size());
        for (int64_t x = 0; x < tile_w; ++x) wx[x] = ramp_weight(x, tile_w, ramp, j > 0, j + 1 < cols.size());
        const int64_t py0 = y0 * f, px0 = x0 * f;
        for (int64_t y = 0; y < tile_h; ++y) {
          for (int64_t ch = 0; ch < channels; ++ch) {
            const float* src = &tile_pixels[static_cast<size_t>((ch * tile_h + y) * tile_w)];
            float* dst = out + (ch * out_h + py0 + y) * out_w + px0;
            for (int64_t x = 0; x < tile_w; ++x) dst[x] += wy[y] * wx[x] * src[x];
          }
        }
      }
    }
    for (int64_t ch = 0; ch < channels; ++ch) {
      float* plane = out + ch * out_h * out_w;
      for (int64_t y = 0; y < out_h; ++y)
        for (int64_t x = 0; x < out_w; ++x) plane[y * out_w + x] /= sum_y[static_cast<size_t>(y)] * sum_x[static_cast<size_t>(x)];
    }
  }
}

}  // namespace fx::models
