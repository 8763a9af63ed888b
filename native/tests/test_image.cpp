// Tests of the image C ABI: 8-bit conversion of model pixels, and PNG / JPEG / WebP files in memory.
// Round trips on smooth-plus-noise images of several shapes, decoders against files written here
// directly with libpng / libjpeg (grey, palette, alpha, 16-bit, interlaced, progressive, CMYK), and
// refusal of garbage, truncated, mislabelled and oversized files without a crash.
#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <cstdio>  // before jpeglib.h, which needs FILE
// clang-format off
#include <jpeglib.h>
// clang-format on

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "fluxnative.h"

namespace {

using Bytes = std::vector<uint8_t>;

std::string last_error() { return fx_last_error(); }

// Smooth colour gradients plus a little noise: compressible, but not trivially so. Deterministic.
Bytes test_image(int width, int height, uint32_t seed = 1) {
  Bytes rgb(static_cast<size_t>(width) * height * 3);
  uint32_t state = seed * 2654435761u + 12345u;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const double smooth =
            128.0 + 90.0 * std::sin(0.07 * x * (c + 1) + 0.05 * y + seed) * std::cos(0.03 * y - 0.02 * x * c);
        state = state * 1664525u + 1013904223u;
        const int noise = static_cast<int>((state >> 24) % 13) - 6;
        rgb[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp(static_cast<int>(std::lround(smooth)) + noise, 0, 255));
      }
    }
  }
  return rgb;
}

double psnr(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || a.empty()) return 0.0;
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  if (sum == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(255.0 * 255.0 / (sum / static_cast<double>(a.size())));
}

fx_blob* const kPoisonBlob = reinterpret_cast<fx_blob*>(uintptr_t{0x1});

// fx_image_encode's parameters: a format and a quality, no generation parameters.
const fx_image_encode_params* as(int format, int quality) {
  thread_local fx_image_encode_params params;
  fx_image_encode_params_init(&params);
  params.format = format;
  params.quality = quality;
  return &params;
}

Bytes encode(const Bytes& rgb, int width, int height, int format, int quality) {
  fx_blob* blob = kPoisonBlob;
  const fx_status status = fx_image_encode(rgb.data(), width, height, as(format, quality), &blob);
  EXPECT_EQ(status, FX_OK) << last_error();
  if (status != FX_OK) return {};
  const uint8_t* data = nullptr;
  size_t size = 0;
  EXPECT_EQ(fx_blob_data(blob, &data, &size), FX_OK) << last_error();
  Bytes out(data, data + size);
  fx_blob_free(blob);
  return out;
}

struct Decoded {
  fx_status status = FX_OK;
  int32_t width = 0, height = 0, format = 0;
  Bytes rgb;
  std::string error;
};

Decoded decode(const void* data, size_t size) {
  Decoded d;
  d.width = d.height = d.format = -7;  // poison: must be overwritten either way
  fx_blob* blob = kPoisonBlob;
  d.status = fx_image_decode(data, size, &d.width, &d.height, &d.format, &blob);
  if (d.status != FX_OK) {
    d.error = last_error();
    EXPECT_EQ(blob, nullptr);
    EXPECT_EQ(d.width, 0);
    EXPECT_EQ(d.height, 0);
    EXPECT_EQ(d.format, 0);
    return d;
  }
  const uint8_t* bytes = nullptr;
  size_t count = 0;
  EXPECT_EQ(fx_blob_data(blob, &bytes, &count), FX_OK) << last_error();
  EXPECT_EQ(count, static_cast<size_t>(d.width) * d.height * 3);
  d.rgb.assign(bytes, bytes + count);
  fx_blob_free(blob);
  return d;
}

Decoded decode(const Bytes& file) { return decode(file.data(), file.size()); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- writing test inputs directly with libpng and libjpeg --------------------------------------------

struct PngSpec {
  int width = 0, height = 0;
  int color_type = PNG_COLOR_TYPE_RGB;
  int bit_depth = 8;
  bool interlace = false;
  Bytes rows;  // packed as libpng expects (16-bit samples big-endian), rowbytes per row
  std::vector<png_color> palette;
  Bytes trns;
};

PngSpec png_spec(int width, int height, int color_type, int bit_depth, bool interlace = false) {
  PngSpec spec;
  spec.width = width;
  spec.height = height;
  spec.color_type = color_type;
  spec.bit_depth = bit_depth;
  spec.interlace = interlace;
  return spec;
}

size_t png_rowbytes(const PngSpec& s) {
  const int channels = s.color_type == PNG_COLOR_TYPE_GRAY || s.color_type == PNG_COLOR_TYPE_PALETTE ? 1
                       : s.color_type == PNG_COLOR_TYPE_GRAY_ALPHA                                 ? 2
                       : s.color_type == PNG_COLOR_TYPE_RGB                                        ? 3
                                                                                                   : 4;
  return (static_cast<size_t>(s.width) * channels * s.bit_depth + 7) / 8;
}

void on_test_png_write(png_structp png, png_bytep data, size_t length) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}

bool write_png_steps(png_structp png, png_infop info, const PngSpec* s, png_bytepp rows, Bytes* out) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, out, on_test_png_write, nullptr);
  png_set_IHDR(png, info, s->width, s->height, s->bit_depth, s->color_type,
               s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s->palette.empty()) png_set_PLTE(png, info, s->palette.data(), static_cast<int>(s->palette.size()));
  if (!s->trns.empty()) png_set_tRNS(png, info, s->trns.data(), static_cast<int>(s->trns.size()), nullptr);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, info);
  return true;
}

Bytes write_png(PngSpec spec) {
  const size_t rowbytes = png_rowbytes(spec);
  EXPECT_EQ(spec.rows.size(), rowbytes * spec.height);
  std::vector<png_bytep> rows(spec.height);
  for (int y = 0; y < spec.height; ++y) rows[y] = spec.rows.data() + y * rowbytes;
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const bool ok = write_png_steps(png, info, &spec, rows.data(), &out);
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok);
  return out;
}

// libjpeg's default error handler exits; the inputs here are always valid.
Bytes write_jpeg(const uint8_t* samples, int width, int height, int components, J_COLOR_SPACE space,
                 bool progressive, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(samples + static_cast<size_t>(cinfo.next_scanline) * width * components);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  Bytes out(buffer, buffer + size);
  std::free(buffer);
  return out;
}

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// Rewrites a PNG's IHDR size (and its CRC), leaving the pixel data as it was.
Bytes with_png_size(Bytes file, uint32_t width, uint32_t height) {
  EXPECT_EQ(std::memcmp(file.data() + 12, "IHDR", 4), 0);
  put_be32(file.data() + 16, width);
  put_be32(file.data() + 20, height);
  put_be32(file.data() + 29, static_cast<uint32_t>(crc32(0, file.data() + 12, 17)));
  return file;
}

// The offset of a JPEG's SOFn segment (FF C0 / C1 / C2), or 0.
size_t jpeg_sof(const Bytes& file) {
  size_t i = 2;
  while (i + 4 <= file.size() && file[i] == 0xFF) {
    const uint8_t marker = file[i + 1];
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) return i;
    i += 2 + (static_cast<size_t>(file[i + 2]) << 8 | file[i + 3]);
  }
  return 0;
}

Bytes with_jpeg_size(Bytes file, uint16_t width, uint16_t height) {
  const size_t sof = jpeg_sof(file);
  EXPECT_NE(sof, 0u);
  file[sof + 5] = static_cast<uint8_t>(height >> 8);
  file[sof + 6] = static_cast<uint8_t>(height);
  file[sof + 7] = static_cast<uint8_t>(width >> 8);
  file[sof + 8] = static_cast<uint8_t>(width);
  return file;
}

const int kFormats[] = {FX_IMAGE_PNG, FX_IMAGE_JPEG, FX_IMAGE_WEBP};
const char* format_text(int format) { return format == FX_IMAGE_PNG ? "PNG" : format == FX_IMAGE_JPEG ? "JPEG" : "WebP"; }

// ---- round trips -----------------------------------------------------------------------------------

struct Shape {
  int width, height;
};
const Shape kShapes[] = {{1, 1}, {67, 45}, {45, 67}, {2, 3}, {512, 384}};

TEST(ImageRoundTrip, PngIsBitExact) {
  for (const Shape s : kShapes) {
    SCOPED_TRACE(std::to_string(s.width) + "x" + std::to_string(s.height));
    const Bytes rgb = test_image(s.width, s.height, 3);
    const Bytes file = encode(rgb, s.width, s.height, FX_IMAGE_PNG, 0);
    ASSERT_GT(file.size(), 8u);
    const Decoded d = decode(file);
    ASSERT_EQ(d.status, FX_OK) << d.error;
    EXPECT_EQ(d.format, FX_IMAGE_PNG);
    EXPECT_EQ(d.width, s.width);
    EXPECT_EQ(d.height, s.height);
    EXPECT_EQ(d.rgb, rgb);
  }
  // Quality does not change a PNG.
  const Bytes rgb = test_image(67, 45);
  EXPECT_EQ(encode(rgb, 67, 45, FX_IMAGE_PNG, 0), encode(rgb, 67, 45, FX_IMAGE_PNG, 100));
}

TEST(ImageRoundTrip, PngCompresses) {
  const Bytes rgb = test_image(512, 384);
  const Bytes file = encode(rgb, 512, 384, FX_IMAGE_PNG, 0);
  EXPECT_LT(file.size(), rgb.size() * 3 / 4) << file.size() << " of " << rgb.size();
}

// Lower bounds about 1 dB under what was measured on these images with Debian 12's libjpeg-turbo 2.1.5
// and libwebp 1.2.4 (67x45 / 512x384): JPEG q95 37.7 / 37.6, q50 33.6 / 34.0, q10 26.3 / 26.9;
// WebP q95 36.7 / 36.5, q50 32.5 / 33.3, q10 29.3 / 30.3 dB. The test prints what it measures.
struct LossyCase {
  int format, quality;
  double min_psnr;
};

TEST(ImageRoundTrip, LossyFormatsAreCloseAndSizesShrinkWithQuality) {
  const LossyCase cases[] = {{FX_IMAGE_JPEG, 95, 36.5}, {FX_IMAGE_JPEG, 50, 32.5}, {FX_IMAGE_JPEG, 10, 25.0},
                             {FX_IMAGE_WEBP, 95, 35.5}, {FX_IMAGE_WEBP, 50, 31.5}, {FX_IMAGE_WEBP, 10, 28.0}};
  for (const Shape s : {Shape{67, 45}, Shape{512, 384}}) {
    const Bytes rgb = test_image(s.width, s.height, 5);
    size_t previous_size[4] = {0, 0, 0, 0};
    for (const LossyCase& c : cases) {
      const std::string label = std::string(format_text(c.format)) + " q" + std::to_string(c.quality) + " " +
                                std::to_string(s.width) + "x" + std::to_string(s.height);
      SCOPED_TRACE(label);
      const Bytes file = encode(rgb, s.width, s.height, c.format, c.quality);
      const Decoded d = decode(file);
      ASSERT_EQ(d.status, FX_OK) << d.error;
      EXPECT_EQ(d.format, c.format);
      ASSERT_EQ(d.width, s.width);
      ASSERT_EQ(d.height, s.height);
      const double p = psnr(rgb, d.rgb);
      std::printf("  %-22s %7zu bytes (%5.2f bits/px)  PSNR %.2f dB\n", label.c_str(), file.size(),
                  8.0 * file.size() / (s.width * s.height), p);
      EXPECT_GE(p, c.min_psnr);
      // The cases run from high to low quality: each file must be smaller than the last.
      if (previous_size[c.format] != 0) {
        EXPECT_LT(file.size(), previous_size[c.format]);
      }
      previous_size[c.format] = file.size();
    }
  }
}

TEST(ImageRoundTrip, TinyLossyImagesDecodeToTheirSize) {
  for (const int format : {FX_IMAGE_JPEG, FX_IMAGE_WEBP}) {
    for (const Shape s : {Shape{1, 1}, Shape{2, 3}, Shape{17, 1}, Shape{1, 17}}) {
      SCOPED_TRACE(std::string(format_text(format)) + " " + std::to_string(s.width) + "x" + std::to_string(s.height));
      const Bytes rgb(static_cast<size_t>(s.width) * s.height * 3, 200);  // flat: any codec keeps it
      const Decoded d = decode(encode(rgb, s.width, s.height, format, 90));
      ASSERT_EQ(d.status, FX_OK) << d.error;
      EXPECT_EQ(d.width, s.width);
      EXPECT_EQ(d.height, s.height);
      for (const uint8_t v : d.rgb) EXPECT_NEAR(v, 200, 3);
    }
  }
}

TEST(ImageRoundTrip, MaximumSides) {
  const Bytes row = test_image(16384, 1);
  const Decoded png = decode(encode(row, 16384, 1, FX_IMAGE_PNG, 0));
  ASSERT_EQ(png.status, FX_OK) << png.error;
  EXPECT_EQ(png.rgb, row);
  const Decoded jpeg = decode(encode(row, 1, 16384, FX_IMAGE_JPEG, 90));
  ASSERT_EQ(jpeg.status, FX_OK) << jpeg.error;
  EXPECT_EQ(jpeg.height, 16384);
  // WebP's own limit is 16383 per side.
  const Decoded webp = decode(encode(Bytes(row.begin(), row.end() - 3), 16383, 1, FX_IMAGE_WEBP, 90));
  ASSERT_EQ(webp.status, FX_OK) << webp.error;
  EXPECT_EQ(webp.width, 16383);
  fx_blob* blob = kPoisonBlob;
  EXPECT_EQ(fx_image_encode(row.data(), 16384, 1, as(FX_IMAGE_WEBP, 90), &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(blob, nullptr);
  EXPECT_TRUE(contains(last_error(), "16383")) << last_error();
}

// The chroma subsampling the header documents: 4:2:0 below quality 90, 4:4:4 from 90.
TEST(ImageRoundTrip, JpegChromaSubsamplingFollowsQuality) {
  const Bytes rgb = test_image(64, 48);
  for (const int quality : {1, 50, 89, 90, 95, 100}) {
    const Bytes file = encode(rgb, 64, 48, FX_IMAGE_JPEG, quality);
    const size_t sof = jpeg_sof(file);
    ASSERT_NE(sof, 0u) << "quality " << quality;
    EXPECT_EQ(file[sof + 1], 0xC0) << "baseline (sequential Huffman) expected";
    ASSERT_EQ(file[sof + 9], 3) << "three components";
    const uint8_t luma = file[sof + 10 + 1], cb = file[sof + 10 + 4], cr = file[sof + 10 + 7];
    EXPECT_EQ(luma, quality >= 90 ? 0x11 : 0x22) << "quality " << quality;
    EXPECT_EQ(cb, 0x11);
    EXPECT_EQ(cr, 0x11);
  }
}

TEST(ImageRoundTrip, EncodersAreDeterministicAndThreadSafe) {
  const Bytes rgb = test_image(96, 64, 9);
  Bytes expected[3];
  for (int f = 0; f < 3; ++f) expected[f] = encode(rgb, 96, 64, kFormats[f], 80);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (int f = 0; f < 3; ++f) {
          fx_blob* blob = nullptr;
          if (fx_image_encode(rgb.data(), 96, 64, as(kFormats[f], 80), &blob) != FX_OK) {
            ++failures[t];
            continue;
          }
          const uint8_t* data = nullptr;
          size_t size = 0;
          fx_blob_data(blob, &data, &size);
          if (Bytes(data, data + size) != expected[f]) ++failures[t];
          int32_t w = 0, h = 0, format = 0;
          fx_blob* pixels = nullptr;
          if (fx_image_decode(data, size, &w, &h, &format, &pixels) != FX_OK || w != 96 || h != 64) ++failures[t];
          fx_blob_free(pixels);
          fx_blob_free(blob);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// ---- PNG inputs of every colour type ---------------------------------------------------------------

TEST(ImagePngDecode, GreyPaletteAlphaAnd16BitBecomeRgb) {
  const int w = 13, h = 7;
  struct Case {
    const char* name;
    PngSpec spec;
    Bytes expected;
  };
  std::vector<Case> cases;
  auto pixel = [](int x, int y, int c) { return static_cast<uint8_t>((x * 37 + y * 11 + c * 71) & 0xFF); };

  {  // grey 8-bit
    Case c{"grey8", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_GRAY, 8);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        c.spec.rows.push_back(pixel(x, y, 0));
        for (int k = 0; k < 3; ++k) c.expected.push_back(pixel(x, y, 0));
      }
    cases.push_back(c);
  }
  {  // grey 1-bit: 0 -> 0, 1 -> 255
    Case c{"grey1", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_GRAY, 1);
    for (int y = 0; y < h; ++y) {
      Bytes row((w + 7) / 8, 0);
      for (int x = 0; x < w; ++x) {
        const int bit = (x + y) % 3 == 0;
        row[x / 8] |= static_cast<uint8_t>(bit << (7 - x % 8));
        for (int k = 0; k < 3; ++k) c.expected.push_back(bit ? 255 : 0);
      }
      c.spec.rows.insert(c.spec.rows.end(), row.begin(), row.end());
    }
    cases.push_back(c);
  }
  {  // grey + alpha 8-bit: alpha dropped
    Case c{"grey-alpha8", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        c.spec.rows.push_back(pixel(x, y, 1));
        c.spec.rows.push_back(static_cast<uint8_t>(x * 19));
        for (int k = 0; k < 3; ++k) c.expected.push_back(pixel(x, y, 1));
      }
    cases.push_back(c);
  }
  {  // palette 4-bit with transparency: the palette's colours, alpha dropped
    Case c{"palette4-trns", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_PALETTE, 4);
    for (int i = 0; i < 16; ++i) {
      c.spec.palette.push_back(png_color{static_cast<png_byte>(i * 16), static_cast<png_byte>(255 - i * 9),
                                         static_cast<png_byte>(i * i)});
      c.spec.trns.push_back(static_cast<uint8_t>(i * 17));
    }
    for (int y = 0; y < h; ++y) {
      Bytes row((w + 1) / 2, 0);
      for (int x = 0; x < w; ++x) {
        const int index = (x * 3 + y * 5) % 16;
        row[x / 2] |= static_cast<uint8_t>(index << (x % 2 == 0 ? 4 : 0));
        const png_color& p = c.spec.palette[index];
        c.expected.insert(c.expected.end(), {p.red, p.green, p.blue});
      }
      c.spec.rows.insert(c.spec.rows.end(), row.begin(), row.end());
    }
    cases.push_back(c);
  }
  {  // palette 8-bit, no transparency
    Case c{"palette8", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_PALETTE, 8);
    for (int i = 0; i < 200; ++i)
      c.spec.palette.push_back(png_color{static_cast<png_byte>(i), static_cast<png_byte>(i * 7),
                                         static_cast<png_byte>(255 - i)});
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int index = (x * 13 + y * 29) % 200;
        c.spec.rows.push_back(static_cast<uint8_t>(index));
        const png_color& p = c.spec.palette[index];
        c.expected.insert(c.expected.end(), {p.red, p.green, p.blue});
      }
    cases.push_back(c);
  }
  {  // RGBA 8-bit: alpha dropped, not composited
    Case c{"rgba8", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        for (int k = 0; k < 3; ++k) {
          c.spec.rows.push_back(pixel(x, y, k));
          c.expected.push_back(pixel(x, y, k));
        }
        c.spec.rows.push_back(static_cast<uint8_t>(y * 30));
      }
    cases.push_back(c);
  }
  // 16-bit: scaled to 8 bits with rounding, (v * 255 + 32767) / 65535 (libpng's png_set_scale_16).
  auto sample16 = [](int x, int y, int c) { return static_cast<uint16_t>((x * 5003 + y * 7919 + c * 21011) & 0xFFFF); };
  auto to8 = [](uint16_t v) { return static_cast<uint8_t>((v * 255u + 32767u) / 65535u); };
  {
    Case c{"rgb16", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_RGB, 16);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < 3; ++k) {
          const uint16_t v = sample16(x, y, k);
          c.spec.rows.insert(c.spec.rows.end(), {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)});
          c.expected.push_back(to8(v));
        }
    cases.push_back(c);
  }
  {  // 16-bit grey + alpha, exact 8-bit values (v * 257)
    Case c{"grey-alpha16", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 16);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const uint8_t g = pixel(x, y, 2);
        const uint16_t v = static_cast<uint16_t>(g * 257);
        c.spec.rows.insert(c.spec.rows.end(), {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v), 0x12, 0x34});
        for (int k = 0; k < 3; ++k) c.expected.push_back(g);
      }
    cases.push_back(c);
  }
  {  // RGB 8-bit, Adam7 interlaced
    Case c{"rgb8-interlaced", {}, {}};
    c.spec = png_spec(w, h, PNG_COLOR_TYPE_RGB, 8, true);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < 3; ++k) {
          c.spec.rows.push_back(pixel(x, y, k));
          c.expected.push_back(pixel(x, y, k));
        }
    cases.push_back(c);
  }

  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Bytes file = write_png(c.spec);
    ASSERT_FALSE(file.empty());
    const Decoded d = decode(file);
    ASSERT_EQ(d.status, FX_OK) << d.error;
    EXPECT_EQ(d.format, FX_IMAGE_PNG);
    EXPECT_EQ(d.width, w);
    EXPECT_EQ(d.height, h);
    EXPECT_EQ(d.rgb, c.expected);
  }
}

// ---- JPEG inputs: grey, progressive, CMYK ----------------------------------------------------------

TEST(ImageJpegDecode, GreyBecomesRgb) {
  const int w = 40, h = 24;
  const Bytes rgb = test_image(w, h);
  Bytes grey(static_cast<size_t>(w) * h);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = rgb[i * 3];
  const Decoded d = decode(write_jpeg(grey.data(), w, h, 1, JCS_GRAYSCALE, false, 95));
  ASSERT_EQ(d.status, FX_OK) << d.error;
  ASSERT_EQ(d.width, w);
  ASSERT_EQ(d.height, h);
  Bytes expected(grey.size() * 3);
  for (size_t i = 0; i < grey.size(); ++i) {
    EXPECT_EQ(d.rgb[i * 3], d.rgb[i * 3 + 1]);
    EXPECT_EQ(d.rgb[i * 3], d.rgb[i * 3 + 2]);
    expected[i * 3] = expected[i * 3 + 1] = expected[i * 3 + 2] = grey[i];
  }
  EXPECT_GE(psnr(expected, d.rgb), 35.0);
}

TEST(ImageJpegDecode, Progressive) {
  const int w = 67, h = 45;
  const Bytes rgb = test_image(w, h, 2);
  const Bytes file = write_jpeg(rgb.data(), w, h, 3, JCS_RGB, true, 95);
  ASSERT_EQ(file[jpeg_sof(file) + 1], 0xC2);  // progressive
  const Decoded d = decode(file);
  ASSERT_EQ(d.status, FX_OK) << d.error;
  EXPECT_GE(psnr(rgb, d.rgb), 30.0);  // libjpeg's defaults: 4:2:0 even at 95
}

TEST(ImageJpegDecode, AdobeCmykConvertsNaively) {
  // Photoshop's convention (Adobe marker): channels stored inverted, 255 = no ink.
  const int w = 16, h = 16;
  const uint8_t ink[4] = {0, 128, 255, 0};  // C, M, Y, K as ink amounts
  Bytes cmyk;
  for (int i = 0; i < w * h; ++i)
    for (const uint8_t v : ink) cmyk.push_back(static_cast<uint8_t>(255 - v));
  const Decoded d = decode(write_jpeg(cmyk.data(), w, h, 4, JCS_CMYK, false, 100));
  ASSERT_EQ(d.status, FX_OK) << d.error;
  // R = (255 - C)(255 - K)/255 etc.: no cyan, half magenta, full yellow, no black.
  for (int i = 0; i < w * h; ++i) {
    EXPECT_NEAR(d.rgb[i * 3 + 0], 255, 3);
    EXPECT_NEAR(d.rgb[i * 3 + 1], 127, 3);
    EXPECT_NEAR(d.rgb[i * 3 + 2], 0, 3);
  }
}

// ---- refusing bad input ----------------------------------------------------------------------------

TEST(ImageDecodeErrors, GarbageAndWrongSignatures) {
  Bytes garbage(1000);
  uint32_t state = 7;
  for (auto& b : garbage) b = static_cast<uint8_t>((state = state * 1103515245u + 12345u) >> 16);
  garbage[0] = 'x';
  const Bytes jpeg = encode(test_image(8, 8), 8, 8, FX_IMAGE_JPEG, 80);
  Bytes png_signature_jpeg_body = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  png_signature_jpeg_body.insert(png_signature_jpeg_body.end(), jpeg.begin(), jpeg.end());
  Bytes jpeg_signature_garbage = {0xFF, 0xD8, 0xFF};
  jpeg_signature_garbage.insert(jpeg_signature_garbage.end(), garbage.begin(), garbage.end());
  Bytes riff_wave = {'R', 'I', 'F', 'F', 100, 0, 0, 0, 'W', 'A', 'V', 'E'};
  riff_wave.resize(108, 0);
  Bytes riff_webp_garbage = {'R', 'I', 'F', 'F', 0xE8, 0x03, 0, 0, 'W', 'E', 'B', 'P'};
  riff_webp_garbage.insert(riff_webp_garbage.end(), garbage.begin(), garbage.end());
  const Bytes gif = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0};

  struct Case {
    const char* name;
    Bytes data;
    const char* message;  // a part of the expected message
  };
  const Case cases[] = {
      {"garbage", garbage, "not a PNG, JPEG or WebP"},
      {"gif", gif, "not a PNG, JPEG or WebP"},
      {"riff-wave", riff_wave, "not a PNG, JPEG or WebP"},
      {"one byte", Bytes{0x89}, "not a PNG, JPEG or WebP"},
      {"png signature only", Bytes{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'}, "PNG"},
      {"png signature, jpeg body", png_signature_jpeg_body, "PNG"},
      {"jpeg signature, garbage", jpeg_signature_garbage, "JPEG"},
      {"jpeg signature only", Bytes{0xFF, 0xD8, 0xFF}, "JPEG"},
      {"riff webp, garbage", riff_webp_garbage, "WebP"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Decoded d = decode(c.data);
    EXPECT_EQ(d.status, FX_ERR_FORMAT) << d.error;
    EXPECT_TRUE(contains(d.error, "fx_image_decode")) << d.error;
    EXPECT_TRUE(contains(d.error, c.message)) << d.error;
  }
  const Decoded empty = decode(nullptr, 0);
  EXPECT_EQ(empty.status, FX_ERR_FORMAT);
  EXPECT_TRUE(contains(empty.error, "empty")) << empty.error;
}

TEST(ImageDecodeErrors, TruncatedFilesAreRefusedAtEveryCut) {
  const Bytes rgb = test_image(67, 45);
  for (const int format : kFormats) {
    const Bytes file = encode(rgb, 67, 45, format, 80);
    ASSERT_GT(file.size(), 100u);
    const size_t n = file.size();
    std::vector<size_t> cuts = {1, 2, 3, 4, 8, 11, 12, 16, 20, 30, 33, 40, 50, 64, 100};
    for (int k = 1; k < 16; ++k) cuts.push_back(n * k / 16);
    for (size_t k = 1; k <= 12; ++k) cuts.push_back(n - k);
    for (const size_t cut : cuts) {
      SCOPED_TRACE(std::string(format_text(format)) + " cut to " + std::to_string(cut) + " of " + std::to_string(n));
      const Decoded d = decode(file.data(), cut);
      EXPECT_EQ(d.status, FX_ERR_FORMAT) << d.error;
      if (cut >= 12) {
        EXPECT_TRUE(contains(d.error, format_text(format))) << d.error;
      }
    }
    EXPECT_EQ(decode(file).status, FX_OK);
  }
}

// Random damage: whatever the decoder makes of it, it answers with a status, never a crash, and a
// success has a consistent size. (The fuzz target does this at scale.)
TEST(ImageDecodeErrors, DamagedFilesNeverCrash) {
  const Bytes rgb = test_image(40, 30);
  uint32_t state = 99;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (const int format : kFormats) {
    const Bytes file = encode(rgb, 40, 30, format, 75);
    int refused = 0;
    for (int trial = 0; trial < 300; ++trial) {
      Bytes damaged = file;
      const int flips = 1 + static_cast<int>(next() % 8);
      for (int i = 0; i < flips; ++i) damaged[next() % damaged.size()] ^= static_cast<uint8_t>(1 + next() % 255);
      const Decoded d = decode(damaged);
      ASSERT_TRUE(d.status == FX_OK || d.status == FX_ERR_FORMAT || d.status == FX_ERR_UNSUPPORTED)
          << fx_status_name(d.status) << ": " << d.error;
      if (d.status != FX_OK) ++refused;
    }
    std::printf("  %s: %d of 300 damaged files refused\n", format_text(format), refused);
    EXPECT_GT(refused, 0);
  }
}

TEST(ImageDecodeErrors, OversizedHeadersAreRefusedBeforeDecoding) {
  const Bytes rgb = test_image(8, 8);
  const Bytes png = encode(rgb, 8, 8, FX_IMAGE_PNG, 0);
  const Bytes jpeg = encode(rgb, 8, 8, FX_IMAGE_JPEG, 80);
  for (const Bytes& file : {with_png_size(png, 16385, 8), with_png_size(png, 8, 16385),
                            with_png_size(png, 100000, 100000), with_jpeg_size(jpeg, 16385, 8),
                            with_jpeg_size(jpeg, 8, 60000)}) {
    const Decoded d = decode(file);
    EXPECT_EQ(d.status, FX_ERR_FORMAT);
    EXPECT_TRUE(contains(d.error, "more than this decoder accepts")) << d.error;
  }
  // Within the limits, a small file claiming a huge image fails when its data runs out, quickly and
  // without touching the memory of the claim.
  for (const Bytes& file : {with_png_size(png, 16384, 16384), with_jpeg_size(jpeg, 16384, 16384)}) {
    const Decoded d = decode(file);
    EXPECT_EQ(d.status, FX_ERR_FORMAT);
    EXPECT_TRUE(contains(d.error, "corrupt or truncated")) << d.error;
  }
  const Decoded zero = decode(with_png_size(png, 0, 8));
  EXPECT_EQ(zero.status, FX_ERR_FORMAT);
}

// ---- argument errors -------------------------------------------------------------------------------

TEST(ImageArguments, EncodeRefusesBadArguments) {
  const Bytes rgb = test_image(4, 4);
  fx_blob* blob = kPoisonBlob;
  auto expect_invalid = [&](fx_status status, const char* part) {
    EXPECT_EQ(status, FX_ERR_INVALID_ARGUMENT) << last_error();
    EXPECT_EQ(blob, nullptr);
    EXPECT_TRUE(contains(last_error(), "fx_image_encode")) << last_error();
    EXPECT_TRUE(contains(last_error(), part)) << last_error();
    blob = kPoisonBlob;
  };
  EXPECT_EQ(fx_image_encode(rgb.data(), 4, 4, as(FX_IMAGE_PNG, 0), nullptr), FX_ERR_INVALID_ARGUMENT);
  expect_invalid(fx_image_encode(nullptr, 4, 4, as(FX_IMAGE_PNG, 0), &blob), "rgb is NULL");
  for (const auto& [w, h] : {std::pair{0, 4}, {4, 0}, {-1, 4}, {4, -5}, {16385, 1}, {1, 16385}}) {
    expect_invalid(fx_image_encode(rgb.data(), w, h, as(FX_IMAGE_PNG, 0), &blob), "1..16384");
  }
  expect_invalid(fx_image_encode(rgb.data(), 4, 4, as(0, 90), &blob), "format");
  expect_invalid(fx_image_encode(rgb.data(), 4, 4, as(4, 90), &blob), "format");
  for (const int format : {FX_IMAGE_JPEG, FX_IMAGE_WEBP}) {
    for (const int quality : {0, -1, 101, 1000}) {
      expect_invalid(fx_image_encode(rgb.data(), 4, 4, as(format, quality), &blob), "quality must be 1..100");
    }
  }
  expect_invalid(fx_image_encode(rgb.data(), 4, 4, as(FX_IMAGE_PNG, -1), &blob), "quality must be 0..100");
  expect_invalid(fx_image_encode(rgb.data(), 4, 4, as(FX_IMAGE_PNG, 101), &blob), "quality must be 0..100");
  // The edges that are allowed.
  for (const auto& [format, quality] : {std::pair{FX_IMAGE_PNG, 0}, {FX_IMAGE_PNG, 100}, {FX_IMAGE_JPEG, 1},
                                        {FX_IMAGE_JPEG, 100}, {FX_IMAGE_WEBP, 1}, {FX_IMAGE_WEBP, 100}}) {
    ASSERT_EQ(fx_image_encode(rgb.data(), 4, 4, as(format, quality), &blob), FX_OK) << last_error();
    fx_blob_free(blob);
  }
}

TEST(ImageArguments, DecodeAndBlobRefuseBadArguments) {
  const Bytes file = encode(test_image(4, 4), 4, 4, FX_IMAGE_PNG, 0);
  int32_t w = -1, h = -1, format = -1;
  fx_blob* blob = kPoisonBlob;
  EXPECT_EQ(fx_image_decode(file.data(), file.size(), nullptr, &h, &format, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(blob, nullptr);  // the outputs that exist are still poisoned
  EXPECT_EQ(h, 0);
  EXPECT_EQ(format, 0);
  EXPECT_EQ(fx_image_decode(file.data(), file.size(), &w, nullptr, &format, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_image_decode(file.data(), file.size(), &w, &h, nullptr, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_image_decode(file.data(), file.size(), &w, &h, &format, nullptr), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_image_decode(nullptr, 10, &w, &h, &format, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(last_error(), "data is NULL")) << last_error();

  const uint8_t* data = reinterpret_cast<const uint8_t*>(uintptr_t{1});
  size_t size = 99;
  EXPECT_EQ(fx_blob_data(nullptr, &data, &size), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(data, nullptr);
  EXPECT_EQ(size, 0u);
  EXPECT_EQ(fx_blob_data(nullptr, nullptr, &size), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_blob_data(nullptr, &data, nullptr), FX_ERR_INVALID_ARGUMENT);
  fx_blob_free(nullptr);  // a no-op
}

// ---- model pixels <-> 8-bit ------------------------------------------------------------------------

// The plain reference: numpy's np.round (half to even) / PyTorch's .byte() (truncation) of
// 127.5 * (x + 1) in float32, after clamping to [-1, 1] with NaN as 0.
uint8_t reference_u8(float x, int rounding) {
  if (std::isnan(x)) x = 0.0f;
  x = std::clamp(x, -1.0f, 1.0f);
  const float v = 127.5f * (x + 1.0f);
  return static_cast<uint8_t>(rounding == FX_PIXELS_ROUND ? std::nearbyint(v) : std::trunc(v));
}

std::vector<float> edge_values() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> v = {-1.0f,
                          1.0f,
                          0.0f,
                          -0.0f,
                          std::nextafter(-1.0f, 0.0f),
                          std::nextafter(1.0f, 0.0f),
                          std::nextafter(-1.0f, -2.0f),
                          std::nextafter(1.0f, 2.0f),
                          -1.5f,
                          2.0f,
                          1e30f,
                          -1e30f,
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::lowest(),
                          std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::denorm_min(),
                          inf,
                          -inf,
                          nan,
                          -nan,
                          std::numeric_limits<float>::signaling_NaN()};
  for (int k = 0; k <= 255; ++k) {
    v.push_back(static_cast<float>(k) / 127.5f - 1.0f);          // exact levels
    v.push_back((static_cast<float>(k) + 0.5f) / 127.5f - 1.0f);  // halfway, ties where exact
    v.push_back((static_cast<float>(k) + 0.4999f) / 127.5f - 1.0f);
    v.push_back((static_cast<float>(k) + 0.5001f) / 127.5f - 1.0f);
  }
  return v;
}

// Converts values laid out as one colour plane of a [3, 1, n] image (the other planes fixed).
Bytes convert(const std::vector<float>& planar, int width, int height, int rounding) {
  Bytes rgb(planar.size(), 0xAB);  // poison
  EXPECT_EQ(fx_pixels_to_rgb8(planar.data(), width, height, rounding, rgb.data(), rgb.size()), FX_OK) << last_error();
  return rgb;
}

TEST(ImagePixels, KnownValues) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // x:          -1   1    0    NaN  +inf -inf  -1.5  2
  const std::vector<float> x = {-1.0f, 1.0f, 0.0f, nan, inf, -inf, -1.5f, 2.0f};
  const uint8_t rounded[] = {0, 255, 128, 128, 255, 0, 0, 255};   // 127.5 rounds to even: 128
  const uint8_t truncated[] = {0, 255, 127, 127, 255, 0, 0, 255};  // 127.5 truncates to 127
  const int n = static_cast<int>(x.size());
  std::vector<float> planar(x.size() * 3);
  for (int c = 0; c < 3; ++c) std::copy(x.begin(), x.end(), planar.begin() + c * n);
  const Bytes r = convert(planar, n, 1, FX_PIXELS_ROUND);
  const Bytes t = convert(planar, n, 1, FX_PIXELS_TRUNCATE);
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(r[i * 3 + c], rounded[i]) << "x = " << x[i];
      EXPECT_EQ(t[i * 3 + c], truncated[i]) << "x = " << x[i];
    }
  }
}

TEST(ImagePixels, EdgeValuesMatchTheReferenceForBothRoundings) {
  const std::vector<float> values = edge_values();
  const int n = static_cast<int>(values.size());
  std::vector<float> planar(values.size() * 3);
  for (int c = 0; c < 3; ++c)  // each plane a rotation of the list, so channels differ
    for (int i = 0; i < n; ++i) planar[c * n + i] = values[(i + c * 7) % n];
  int ties = 0;
  for (int k = 0; k <= 254; ++k) {
    const float x = (static_cast<float>(k) + 0.5f) / 127.5f - 1.0f;
    if (127.5f * (x + 1.0f) == static_cast<float>(k) + 0.5f) {
      ++ties;
      EXPECT_EQ(reference_u8(x, FX_PIXELS_ROUND), k % 2 == 0 ? k : k + 1) << "half to even at " << k;
    }
  }
  EXPECT_GT(ties, 10) << "the edge list should hold exact ties";
  for (const int rounding : {FX_PIXELS_ROUND, FX_PIXELS_TRUNCATE}) {
    const Bytes rgb = convert(planar, n, 1, rounding);
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(rgb[i * 3 + c], reference_u8(planar[c * n + i], rounding))
            << "x = " << planar[c * n + i] << " rounding " << rounding;
  }
}

TEST(ImagePixels, LargeRandomImageMatchesTheReferenceAndLayout) {
  const int w = 1024, h = 768;
  std::vector<float> planar(static_cast<size_t>(w) * h * 3);
  uint32_t state = 5;
  for (auto& v : planar) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / 16777216.0f * 2.4f - 1.2f;  // [-1.2, 1.2)
    if (state % 997 == 0) v = std::numeric_limits<float>::quiet_NaN();
  }
  for (const int rounding : {FX_PIXELS_ROUND, FX_PIXELS_TRUNCATE}) {
    const Bytes rgb = convert(planar, w, h, rounding);
    size_t mismatches = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) {
          const size_t planar_index = (static_cast<size_t>(c) * h + y) * w + x;
          const size_t rgb_index = (static_cast<size_t>(y) * w + x) * 3 + c;
          mismatches += rgb[rgb_index] != reference_u8(planar[planar_index], rounding);
        }
    EXPECT_EQ(mismatches, 0u) << "rounding " << rounding;
  }
}

TEST(ImagePixels, Rgb8ToPixelsIsTheFloatFormulaAndRoundTrips) {
  const int w = 256, h = 2;
  Bytes rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) rgb[(y * w + x) * 3 + c] = static_cast<uint8_t>((x + c * 85 + y * 40) & 0xFF);
  std::vector<float> planar(rgb.size(), std::numeric_limits<float>::quiet_NaN());  // poison
  ASSERT_EQ(fx_rgb8_to_pixels(rgb.data(), w, h, planar.data(), planar.size()), FX_OK) << last_error();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const uint8_t v = rgb[(y * w + x) * 3 + c];
        ASSERT_EQ(planar[(static_cast<size_t>(c) * h + y) * w + x], static_cast<float>(v) / 127.5f - 1.0f);
      }
  // Every level survives the trip back when rounding. Truncation, like PyTorch's in float32, loses a
  // level wherever v / 127.5f - 1 came out just below the level (never more than one, never up).
  EXPECT_EQ(convert(planar, w, h, FX_PIXELS_ROUND), rgb);
  const Bytes truncated = convert(planar, w, h, FX_PIXELS_TRUNCATE);
  int lowered = 0;
  for (size_t i = 0; i < rgb.size(); ++i) {
    ASSERT_TRUE(truncated[i] == rgb[i] || truncated[i] + 1 == rgb[i]) << int(rgb[i]) << " -> " << int(truncated[i]);
    lowered += truncated[i] != rgb[i];
    ASSERT_EQ(truncated[i], reference_u8(static_cast<float>(rgb[i]) / 127.5f - 1.0f, FX_PIXELS_TRUNCATE));
  }
  std::printf("  truncation lowers %d of %zu values by one level after rgb8 -> pixels\n", lowered, rgb.size());
}

TEST(ImagePixels, ArgumentErrorsLeaveTheOutputAlone) {
  std::vector<float> planar(4 * 3 * 3, 0.0f);
  Bytes rgb(4 * 3 * 3, 0xAB);
  const Bytes poison = rgb;
  auto expect_invalid = [&](fx_status status, const char* part) {
    EXPECT_EQ(status, FX_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(contains(last_error(), part)) << last_error();
    EXPECT_EQ(rgb, poison);
  };
  expect_invalid(fx_pixels_to_rgb8(nullptr, 4, 3, 0, rgb.data(), rgb.size()), "pixels is NULL");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, 3, 0, nullptr, rgb.size()), "rgb is NULL");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 0, 3, 0, rgb.data(), rgb.size()), "1..16384");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, -3, 0, rgb.data(), rgb.size()), "1..16384");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 16385, 3, 0, rgb.data(), rgb.size()), "1..16384");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, 3, 2, rgb.data(), rgb.size()), "rounding");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, 3, -1, rgb.data(), rgb.size()), "rounding");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, 3, 0, rgb.data(), rgb.size() - 1), "needs exactly 36");
  expect_invalid(fx_pixels_to_rgb8(planar.data(), 4, 3, 0, rgb.data(), rgb.size() + 1), "needs exactly 36");

  std::vector<float> out(36, -7.0f);
  const std::vector<float> out_poison = out;
  EXPECT_EQ(fx_rgb8_to_pixels(nullptr, 4, 3, out.data(), out.size()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_rgb8_to_pixels(rgb.data(), 4, 3, nullptr, out.size()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_rgb8_to_pixels(rgb.data(), 4, 0, out.data(), out.size()), FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(fx_rgb8_to_pixels(rgb.data(), 4, 3, out.data(), 35), FX_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(last_error(), "needs exactly 36")) << last_error();
  EXPECT_EQ(out, out_poison);
}

}  // namespace
