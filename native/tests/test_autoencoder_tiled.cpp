// Tiled decoding (models/autoencoder_tiled.cpp): an image within one tile is the whole decode bit for bit; a tiled
// decode stays close to the whole one, with no seam where tiles meet (the blend hands over across the overlap), and
// bad tilings are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/autoencoder.h"
#include "models/tiny.h"

namespace {

namespace fs = std::filesystem;
using fx::models::Autoencoder;

std::unique_ptr<fx::io::Checkpoint> tiny_ae(const std::string& name) {
  const fs::path dir = fs::path(FX_TEST_TMPDIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fx_tiny_model_params p;
  fx_tiny_model_params_init(&p);
  p.kind = FX_MODEL_AUTOENCODER;
  p.seed = 31;
  p.depth = 3;  // 3 levels: 4 pixels a latent cell
  const std::string path = (dir / "ae.safetensors").string();
  fx::models::write_tiny_model(p, path);
  return fx::io::Checkpoint::open(path);
}

// A smooth latent field (as trained latents of an image are, unlike white noise) plus a little noise.
std::vector<float> latents(int64_t z, int64_t h, int64_t w) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> v(static_cast<size_t>(z * h * w));
  for (int64_t c = 0; c < z; ++c)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        v[static_cast<size_t>((c * h + y) * w + x)] =
            std::sin(0.21f * y + 0.7f * c) * std::cos(0.17f * x - 0.3f * c) + normal(rng);
  return v;
}

std::vector<float> decode(const Autoencoder& ae, const std::vector<float>& z, int64_t h, int64_t w, int64_t tile,
                          int64_t overlap) {
  const auto& c = ae.config();
  const int64_t f = c.downscale();
  std::vector<float> out(static_cast<size_t>(c.out_channels * h * f * w * f), std::numeric_limits<float>::quiet_NaN());
  ae.decode_tiled(z.data(), 1, h, w, out.data(), tile, overlap);
  for (float v : out) EXPECT_TRUE(std::isfinite(v));
  return out;
}

// Mean |difference between adjacent pixels| across positions [p0, p1): along x (columns) or, with `vertical`, along
// y (rows), over every channel and the whole other axis.
double mean_step(const std::vector<float>& img, int64_t channels, int64_t height, int64_t width, int64_t p0, int64_t p1,
                 bool vertical = false) {
  double sum = 0;
  int64_t n = 0;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t a = 0; a < (vertical ? width : height); ++a)
      for (int64_t p = std::max<int64_t>(1, p0); p < p1; ++p, ++n) {
        const int64_t y = vertical ? p : a, x = vertical ? a : p;
        const size_t i = static_cast<size_t>((c * height + y) * width + x);
        sum += std::fabs(img[i] - img[i - (vertical ? static_cast<size_t>(width) : 1)]);
      }
  return sum / static_cast<double>(n);
}

TEST(AutoencoderTiled, AnImageWithinOneTileIsTheWholeDecodeBitForBit) {
  const auto ckpt = tiny_ae("ae-tiled-one");
  const auto ae = Autoencoder::load(*ckpt);
  const auto z = latents(ae->config().z_channels, 12, 10);
  const auto whole = decode(*ae, z, 12, 10, 0, 0);
  for (int64_t tile : {12, 16}) {
    const auto tiled = decode(*ae, z, 12, 10, tile, 4);
    ASSERT_EQ(tiled.size(), whole.size());
    for (size_t i = 0; i < whole.size(); ++i) ASSERT_EQ(tiled[i], whole[i]) << "tile " << tile << " [" << i << "]";
  }
}

TEST(AutoencoderTiled, TilesStayCloseToTheWholeDecodeWithoutSeams) {
  const auto ckpt = tiny_ae("ae-tiled-close");
  const auto ae = Autoencoder::load(*ckpt);
  const auto& c = ae->config();
  const int64_t f = c.downscale(), h = 24, w = 40, tile = 16, overlap = 4;
  const auto z = latents(c.z_channels, h, w);
  const auto whole = decode(*ae, z, h, w, 0, 0);
  const auto tiled = decode(*ae, z, h, w, tile, overlap);

  double num = 0, den = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    num += (double(tiled[i]) - whole[i]) * (double(tiled[i]) - whole[i]);
    den += double(whole[i]) * whole[i];
  }
  const double relative_l2 = std::sqrt(num / den);
  RecordProperty("relative_l2", std::to_string(relative_l2));
  EXPECT_GT(relative_l2, 0.0) << "tiles normalise with their own statistics: not the whole decode";
  // A loose bound: these random weights make each tile's GroupNorm statistics and mid-block attention differ a lot
  // from the whole image's (0.57 measured); how close a tiled decode is on the trained autoencoder is not measured
  // here (no weights). What this test holds to is the seams below.
  EXPECT_LT(relative_l2, 0.8);

  // Across the overlaps, where a tile ends, the image changes no more from one pixel to the next than the whole
  // decode does there. Tiles start every tile - overlap = 12 cells: overlaps at x cells [12, 16) and [24, 28)...
  const int64_t width_px = w * f, height_px = h * f;
  for (int64_t start = tile - overlap; start + overlap <= w; start += tile - overlap) {
    const int64_t x0 = start * f - 2, x1 = (start + overlap) * f + 2;
    const double seam = mean_step(tiled, c.out_channels, height_px, width_px, x0, x1);
    const double reference = mean_step(whole, c.out_channels, height_px, width_px, x0, x1);
    EXPECT_LT(seam, reference * 1.25) << "overlap at latent column " << start;
  }
  // Rows: 24 cells in tiles of 16 start at 0 and 8 (the last tile moved back to end at the side): overlap [8, 16).
  const double seam = mean_step(tiled, c.out_channels, height_px, width_px, 8 * f - 2, 16 * f + 2, true);
  const double reference = mean_step(whole, c.out_channels, height_px, width_px, 8 * f - 2, 16 * f + 2, true);
  EXPECT_LT(seam, reference * 1.25) << "overlap at latent rows 8-16";
}

TEST(AutoencoderTiled, EachImageOfABatchIsTiledAsItIsAlone) {
  const auto ckpt = tiny_ae("ae-tiled-batch");
  const auto ae = Autoencoder::load(*ckpt);
  const auto& c = ae->config();
  const int64_t h = 20, w = 18, f = c.downscale(), per_image = c.out_channels * h * f * w * f;
  auto first = latents(c.z_channels, h, w), second = first;
  for (float& v : second) v = -0.5f * v + 0.1f;
  std::vector<float> both(first);
  both.insert(both.end(), second.begin(), second.end());
  std::vector<float> out(static_cast<size_t>(2 * per_image), std::numeric_limits<float>::quiet_NaN());
  ae->decode_tiled(both.data(), 2, h, w, out.data(), 12, 3);
  const auto a = decode(*ae, first, h, w, 12, 3), b = decode(*ae, second, h, w, 12, 3);
  for (int64_t i = 0; i < per_image; ++i) {
    ASSERT_EQ(out[static_cast<size_t>(i)], a[static_cast<size_t>(i)]) << i;
    ASSERT_EQ(out[static_cast<size_t>(per_image + i)], b[static_cast<size_t>(i)]) << i;
  }
}

TEST(AutoencoderTiled, BadTilingsAreRefused) {
  const auto ckpt = tiny_ae("ae-tiled-bad");
  const auto ae = Autoencoder::load(*ckpt);
  const auto z = latents(ae->config().z_channels, 20, 20);
  std::vector<float> out(static_cast<size_t>(3 * 80 * 80));
  for (const auto& [tile, overlap] : {std::pair{8, 0}, std::pair{8, 5}, std::pair{8, -1}}) {
    try {
      ae->decode_tiled(z.data(), 1, 20, 20, out.data(), tile, overlap);
      ADD_FAILURE() << "tile " << tile << " overlap " << overlap << " accepted";
    } catch (const fx::Error& e) {
      EXPECT_EQ(e.status(), FX_ERR_INVALID_ARGUMENT);
      EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
