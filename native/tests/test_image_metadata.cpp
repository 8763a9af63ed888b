// Generation parameters in image files (fx_image_encode_params.parameters_text), read back with readers
// other than the writer: libpng's text API for PNG, libjpeg's saved markers plus a TIFF walk written
// here for JPEG, libwebp's demuxer for WebP. Also: Latin-1 vs. iTXt, non-BMP characters through UTF-16,
// the longest text every format takes, refusal of text that is too long or not UTF-8, and the params
// struct's versioning.
#include <gtest/gtest.h>
#include <png.h>
#include <webp/demux.h>

#include <cstdio>  // before jpeglib.h, which needs FILE
// clang-format off
#include <jpeglib.h>
// clang-format on

#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fluxnative.h"

namespace {

using Bytes = std::vector<uint8_t>;

std::string last_error() { return fx_last_error(); }

// A small image whose pixels vary (so every encoder does real work), deterministic.
Bytes pixels(int width, int height) {
  Bytes rgb(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 37 + i / 7) & 0xFF);
  return rgb;
}

struct Encoded {
  fx_status status = FX_OK;
  Bytes file;
  std::string error;
};

Encoded encode(int format, const char* text, int width = 24, int height = 16) {
  const Bytes rgb = pixels(width, height);
  fx_image_encode_params params;
  fx_image_encode_params_init(&params);
  params.format = format;
  params.quality = 90;
  params.parameters_text = text;
  fx_blob* blob = nullptr;
  Encoded e;
  e.status = fx_image_encode(rgb.data(), width, height, &params, &blob);
  if (e.status != FX_OK) {
    e.error = last_error();
    EXPECT_EQ(blob, nullptr);
    return e;
  }
  const uint8_t* data = nullptr;
  size_t size = 0;
  EXPECT_EQ(fx_blob_data(blob, &data, &size), FX_OK);
  e.file.assign(data, data + size);
  fx_blob_free(blob);
  return e;
}

bool decodes(const Bytes& file) {
  int32_t width = 0, height = 0, format = 0;
  fx_blob* rgb = nullptr;
  const fx_status status = fx_image_decode(file.data(), file.size(), &width, &height, &format, &rgb);
  fx_blob_free(rgb);
  return status == FX_OK && width == 24 && height == 16;
}

// ---- PNG: libpng's own reader -----------------------------------------------------------------------

struct PngText {
  int compression;  // PNG_TEXT_COMPRESSION_NONE (tEXt) or PNG_ITXT_COMPRESSION_NONE (iTXt), ...
  std::string key, text;
};

struct PngReader {
  const Bytes* file;
  size_t offset;
};

void png_read_from(png_structp png, png_bytep out, size_t length) {
  auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
  if (length > reader->file->size() - reader->offset) png_error(png, "truncated");
  std::memcpy(out, reader->file->data() + reader->offset, length);
  reader->offset += length;
}

// The setjmp frame holds nothing with a destructor; the texts are copied out by the caller.
bool png_read_texts(png_structp png, png_infop info, PngReader* reader, png_textp* texts, int* count) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, reader, png_read_from);
  png_read_info(png, info);  // reads up to the first IDAT: the text must come before it
  *count = png_get_text(png, info, texts, nullptr);
  return true;
}

std::vector<PngText> png_texts(const Bytes& file) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  PngReader reader{&file, 0};
  png_textp texts = nullptr;
  int count = 0;
  std::vector<PngText> out;
  const bool ok = png_read_texts(png, info, &reader, &texts, &count);
  EXPECT_TRUE(ok) << "libpng could not read the file's header chunks";
  for (int i = 0; ok && i < count; ++i) out.push_back({texts[i].compression, texts[i].key, texts[i].text});
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

// ---- JPEG: libjpeg's saved APP1 marker, and a TIFF walk -----------------------------------------------

struct JpegError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<JpegError*>(cinfo->err)->jump, 1); }

bool jpeg_app1_steps(jpeg_decompress_struct* cinfo, JpegError* err, const Bytes& file, std::vector<Bytes>* app1) {
  if (setjmp(err->jump)) return false;
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, file.data(), static_cast<unsigned long>(file.size()));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != nullptr; m = m->next) {
    if (m->marker == JPEG_APP0 + 1) app1->emplace_back(m->data, m->data + m->data_length);
  }
  return true;
}

std::vector<Bytes> jpeg_app1_segments(const Bytes& file) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  std::vector<Bytes> app1;
  EXPECT_TRUE(jpeg_app1_steps(&cinfo, &err, file, &app1)) << "libjpeg could not read the header";
  jpeg_destroy_decompress(&cinfo);
  return app1;
}

// Reads a TIFF structure in either byte order; returns the Exif IFD's UserComment value (empty when
// there is none) and checks the structure on the way.
Bytes tiff_user_comment(const uint8_t* tiff, size_t size) {
  if (size < 8) return {};
  const bool big = tiff[0] == 'M';
  EXPECT_TRUE((tiff[0] == 'M' && tiff[1] == 'M') || (tiff[0] == 'I' && tiff[1] == 'I'));
  const auto u16 = [&](size_t at) -> uint32_t {
    if (at + 2 > size) return 0;
    return big ? (tiff[at] << 8 | tiff[at + 1]) : (tiff[at + 1] << 8 | tiff[at]);
  };
  const auto u32 = [&](size_t at) -> uint32_t { return big ? (u16(at) << 16 | u16(at + 2)) : (u16(at + 2) << 16 | u16(at)); };
  EXPECT_EQ(u16(2), 42u);
  const auto find = [&](uint32_t ifd, uint32_t tag, uint32_t* type, uint32_t* count, size_t* value_at) {
    const uint32_t entries = u16(ifd);
    for (uint32_t i = 0; i < entries; ++i) {
      const size_t entry = ifd + 2 + 12 * i;
      if (u16(entry) == tag) {
        *type = u16(entry + 2);
        *count = u32(entry + 4);
        *value_at = *count <= 4 ? entry + 8 : u32(entry + 8);
        return true;
      }
    }
    return false;
  };
  uint32_t type = 0, count = 0;
  size_t at = 0;
  if (!find(u32(4), 0x8769, &type, &count, &at)) return {};
  const uint32_t exif_ifd = u32(at);
  EXPECT_TRUE(find(exif_ifd, 0x9000, &type, &count, &at)) << "no ExifVersion";
  if (!find(exif_ifd, 0x9286, &type, &count, &at)) return {};
  EXPECT_EQ(type, 7u) << "UserComment is UNDEFINED";
  EXPECT_LE(at + count, size);
  if (at + count > size) return {};
  return Bytes(tiff + at, tiff + at + count);
}

// "UNICODE\0" + UTF-16BE -> UTF-8 (written here independently of the library's encoder).
std::string user_comment_text(const Bytes& comment) {
  EXPECT_GE(comment.size(), 8u);
  if (comment.size() < 8 || std::memcmp(comment.data(), "UNICODE\0", 8) != 0) return "<not UNICODE>";
  std::string out;
  for (size_t i = 8; i + 1 < comment.size(); i += 2) {
    uint32_t c = comment[i] << 8 | comment[i + 1];
    if (c >= 0xD800 && c < 0xDC00 && i + 3 < comment.size()) {
      const uint32_t low = comment[i + 2] << 8 | comment[i + 3];
      c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
      i += 2;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | c >> 6);
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | c >> 12);
      out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | c >> 18);
      out += static_cast<char>(0x80 | (c >> 12 & 0x3F));
      out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

std::string jpeg_parameters(const Bytes& file) {
  for (const Bytes& segment : jpeg_app1_segments(file)) {
    if (segment.size() > 6 && std::memcmp(segment.data(), "Exif\0\0", 6) == 0) {
      return user_comment_text(tiff_user_comment(segment.data() + 6, segment.size() - 6));
    }
  }
  return "<no Exif segment>";
}

// ---- WebP: libwebp's demuxer --------------------------------------------------------------------------

std::string webp_parameters(const Bytes& file, bool* has_exif_flag = nullptr) {
  const WebPData data{file.data(), file.size()};
  WebPDemuxer* demux = WebPDemux(&data);
  EXPECT_NE(demux, nullptr) << "libwebp's demuxer refuses the file";
  if (demux == nullptr) return "<not a WebP container>";
  const uint32_t flags = WebPDemuxGetI(demux, WEBP_FF_FORMAT_FLAGS);
  if (has_exif_flag != nullptr) *has_exif_flag = (flags & EXIF_FLAG) != 0;
  WebPChunkIterator chunk;
  std::string text = "<no EXIF chunk>";
  if (WebPDemuxGetChunk(demux, "EXIF", 1, &chunk)) {
    text = user_comment_text(tiff_user_comment(chunk.chunk.bytes, chunk.chunk.size));
    EXPECT_FALSE(WebPDemuxNextChunk(&chunk)) << "more than one EXIF chunk";
    WebPDemuxReleaseChunkIterator(&chunk);
  }
  WebPDemuxDelete(demux);
  return text;
}

const char* const kAscii =
    "a red fox in the snow, \"golden hour\"\n"
    "Steps: 28, Sampler: Euler, CFG scale: 1, Guidance: 3.5, Seed: 42, Size: 1024x1024, Model: flux1-dev";
const char* const kLatin1 = "caf\xC3\xA9 cr\xC3\xA8me \xC2\xB1 \xC3\xBF\nSeed: 7";                            // café crème ± ÿ
const char* const kWide = "a fox \xE7\x8B\x90 in snow \xF0\x9F\xA6\x8A \xE2\x80\x94 \xC3\xA9\nSeed: 9";  // 狐, 🦊, —, é

}  // namespace

TEST(ImageMetadata, PngCarriesTheTextInATextChunkBeforeTheImageData) {
  const Encoded png = encode(FX_IMAGE_PNG, kAscii);
  ASSERT_EQ(png.status, FX_OK) << png.error;
  const std::vector<PngText> texts = png_texts(png.file);
  ASSERT_EQ(texts.size(), 1u);
  EXPECT_EQ(texts[0].compression, PNG_TEXT_COMPRESSION_NONE) << "ASCII text belongs in tEXt";
  EXPECT_EQ(texts[0].key, "parameters");
  EXPECT_EQ(texts[0].text, kAscii);
  EXPECT_TRUE(decodes(png.file));
  // The chunk itself, by a walk of the file: "tEXt" comes before "IDAT".
  const std::string raw(png.file.begin(), png.file.end());
  ASSERT_NE(raw.find("tEXtparameters"), std::string::npos);
  EXPECT_LT(raw.find("tEXtparameters"), raw.find("IDAT"));
}

TEST(ImageMetadata, PngLatin1TextStaysTEXtInLatin1) {
  const Encoded png = encode(FX_IMAGE_PNG, kLatin1);
  ASSERT_EQ(png.status, FX_OK) << png.error;
  const std::vector<PngText> texts = png_texts(png.file);
  ASSERT_EQ(texts.size(), 1u);
  EXPECT_EQ(texts[0].compression, PNG_TEXT_COMPRESSION_NONE);
  EXPECT_EQ(texts[0].text, "caf\xE9 cr\xE8me \xB1 \xFF\nSeed: 7") << "tEXt is Latin-1: one byte per character";
}

TEST(ImageMetadata, PngOtherTextGoesInAnUncompressedITXtChunk) {
  const Encoded png = encode(FX_IMAGE_PNG, kWide);
  ASSERT_EQ(png.status, FX_OK) << png.error;
  const std::vector<PngText> texts = png_texts(png.file);
  ASSERT_EQ(texts.size(), 1u);
  EXPECT_EQ(texts[0].compression, PNG_ITXT_COMPRESSION_NONE);
  EXPECT_EQ(texts[0].key, "parameters");
  EXPECT_EQ(texts[0].text, kWide) << "iTXt holds UTF-8 as given";
  EXPECT_TRUE(decodes(png.file));
}

TEST(ImageMetadata, JpegCarriesTheTextAsExifUserComment) {
  for (const char* text : {kAscii, kLatin1, kWide}) {
    const Encoded jpeg = encode(FX_IMAGE_JPEG, text);
    ASSERT_EQ(jpeg.status, FX_OK) << jpeg.error;
    EXPECT_EQ(jpeg_parameters(jpeg.file), text);
    EXPECT_TRUE(decodes(jpeg.file));
  }
  // Big-endian TIFF, as piexif (and so A1111) writes it.
  const std::vector<Bytes> app1 = jpeg_app1_segments(encode(FX_IMAGE_JPEG, kAscii).file);
  ASSERT_EQ(app1.size(), 1u);
  EXPECT_EQ(std::string(app1[0].begin() + 6, app1[0].begin() + 8), "MM");
}

TEST(ImageMetadata, WebpCarriesTheTextInAnExifChunk) {
  for (const char* text : {kAscii, kLatin1, kWide}) {
    const Encoded webp = encode(FX_IMAGE_WEBP, text);
    ASSERT_EQ(webp.status, FX_OK) << webp.error;
    bool flag = false;
    EXPECT_EQ(webp_parameters(webp.file, &flag), text);
    EXPECT_TRUE(flag) << "the VP8X header announces the EXIF chunk";
    EXPECT_TRUE(decodes(webp.file));
  }
}

TEST(ImageMetadata, NoTextMeansNoChunk) {
  for (const char* none : {static_cast<const char*>(nullptr), ""}) {
    const Encoded png = encode(FX_IMAGE_PNG, none), jpeg = encode(FX_IMAGE_JPEG, none), webp = encode(FX_IMAGE_WEBP, none);
    ASSERT_EQ(png.status, FX_OK) << png.error;
    EXPECT_TRUE(png_texts(png.file).empty());
    EXPECT_TRUE(jpeg_app1_segments(jpeg.file).empty());
    bool flag = true;
    EXPECT_EQ(webp_parameters(webp.file, &flag), "<no EXIF chunk>");
    EXPECT_FALSE(flag);
  }
  // The text changes only the metadata: the pixels decode the same with and without it.
  for (const int format : {FX_IMAGE_PNG, FX_IMAGE_JPEG, FX_IMAGE_WEBP}) {
    const Bytes with = encode(format, kWide).file, without = encode(format, nullptr).file;
    EXPECT_GT(with.size(), without.size());
    int32_t w = 0, h = 0, f = 0;
    fx_blob *a = nullptr, *b = nullptr;
    ASSERT_EQ(fx_image_decode(with.data(), with.size(), &w, &h, &f, &a), FX_OK) << last_error();
    ASSERT_EQ(fx_image_decode(without.data(), without.size(), &w, &h, &f, &b), FX_OK) << last_error();
    const uint8_t *pa = nullptr, *pb = nullptr;
    size_t na = 0, nb = 0;
    fx_blob_data(a, &pa, &na);
    fx_blob_data(b, &pb, &nb);
    EXPECT_EQ(Bytes(pa, pa + na), Bytes(pb, pb + nb)) << "format " << format;
    fx_blob_free(a);
    fx_blob_free(b);
  }
}

// The longest text fits every format, JPEG's single Exif segment included: ASCII is the worst case
// there (one UTF-8 byte becomes two UTF-16 bytes).
TEST(ImageMetadata, TheLongestTextFitsEveryFormatAndOneByteMoreIsRefused) {
  std::string longest(FX_IMAGE_MAX_PARAMETERS_BYTES, 'x');
  longest[100] = '\n';
  EXPECT_EQ(png_texts(encode(FX_IMAGE_PNG, longest.c_str()).file).at(0).text, longest);
  EXPECT_EQ(jpeg_parameters(encode(FX_IMAGE_JPEG, longest.c_str()).file), longest);
  EXPECT_EQ(webp_parameters(encode(FX_IMAGE_WEBP, longest.c_str()).file), longest);

  const std::string too_long(FX_IMAGE_MAX_PARAMETERS_BYTES + 1, 'x');
  for (const int format : {FX_IMAGE_PNG, FX_IMAGE_JPEG, FX_IMAGE_WEBP}) {
    const Encoded e = encode(format, too_long.c_str());
    EXPECT_EQ(e.status, FX_ERR_INVALID_ARGUMENT);
    EXPECT_NE(e.error.find("fx_image_encode"), std::string::npos) << e.error;
    EXPECT_NE(e.error.find(std::to_string(FX_IMAGE_MAX_PARAMETERS_BYTES)), std::string::npos) << e.error;
  }
}

TEST(ImageMetadata, TextThatIsNotUtf8IsRefusedNamingTheByte) {
  const struct {
    const char* text;
    const char* at;
  } cases[] = {
      {"ab\xC3(", "byte 3"},              // a continuation byte missing
      {"\xED\xA0\x80", "byte 0"},         // a UTF-16 surrogate
      {"x\xC0\x80", "byte 1"},            // an overlong NUL
      {"\xF4\x90\x80\x80", "byte 0"},     // above U+10FFFF
      {"abc\xE2\x82", "byte 3"},          // cut at the end
      {"\x80", "byte 0"},                 // a lone continuation byte
      {"\xFF", "byte 0"},
  };
  for (const auto& c : cases) {
    for (const int format : {FX_IMAGE_PNG, FX_IMAGE_JPEG, FX_IMAGE_WEBP}) {
      const Encoded e = encode(format, c.text);
      EXPECT_EQ(e.status, FX_ERR_INVALID_ARGUMENT) << format;
      EXPECT_NE(e.error.find("not valid UTF-8"), std::string::npos) << e.error;
      EXPECT_NE(e.error.find(c.at), std::string::npos) << e.error;
    }
  }
  // The edges that are valid: U+10FFFF, U+FFFF (a noncharacter, but valid UTF-8), U+0080.
  EXPECT_EQ(encode(FX_IMAGE_JPEG, "\xF4\x8F\xBF\xBF \xEF\xBF\xBF \xC2\x80").status, FX_OK) << last_error();
}

TEST(ImageMetadata, ParamsStructIsVersioned) {
  const Bytes rgb = pixels(4, 4);
  fx_blob* blob = nullptr;
  // An older caller's struct that ends before parameters_text: read as far as it goes, no metadata.
  fx_image_encode_params older;
  fx_image_encode_params_init(&older);
  older.parameters_text = kAscii;  // beyond struct_size: must not be read
  older.struct_size = offsetof(fx_image_encode_params, parameters_text);
  ASSERT_EQ(fx_image_encode(rgb.data(), 4, 4, &older, &blob), FX_OK) << last_error();
  const uint8_t* data = nullptr;
  size_t size = 0;
  fx_blob_data(blob, &data, &size);
  EXPECT_TRUE(png_texts(Bytes(data, data + size)).empty());
  fx_blob_free(blob);

  fx_image_encode_params params;
  fx_image_encode_params_init(&params);
  EXPECT_EQ(params.struct_size, sizeof(fx_image_encode_params));
  EXPECT_EQ(params.format, FX_IMAGE_PNG);
  EXPECT_EQ(params.parameters_text, nullptr);
  params.reserved = 1;
  EXPECT_EQ(fx_image_encode(rgb.data(), 4, 4, &params, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("reserved"), std::string::npos) << last_error();
  EXPECT_EQ(fx_image_encode(rgb.data(), 4, 4, nullptr, &blob), FX_ERR_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("NULL"), std::string::npos) << last_error();
}
