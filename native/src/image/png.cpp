// PNG through libpng, in memory.
//
// libpng reports errors by calling our error function, which records the message and longjmps back
// to the setjmp in the one small function that made the libpng call. Those functions (png_*_steps)
// hold nothing with a destructor, and every C++ object (the output vector, the row pointers) lives in
// the caller's frame, which longjmp never leaves, so no destructor is skipped. Callbacks that can fail
// in C++ (growing the output) catch inside, leave the catch block, and only then call png_error.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"
#include "image/image_codec.h"
#include "image/metadata.h"

namespace fx::image {
namespace {

// Everything a libpng call reports into. Trivially destructible: setjmp/longjmp may cross it.
struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;  // reading: the file
  size_t size = 0;
  size_t offset = 0;
  Bytes* out = nullptr;  // writing: the file being built (owned by the caller's frame)
  bool out_of_memory = false;
  char message[256] = {};
};

void record(PngState* state, const char* message) {
  std::snprintf(state->message, sizeof(state->message), "%s", message != nullptr ? message : "unknown error");
}

void on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  if (state != nullptr) record(state, message);
  png_longjmp(png, 1);
}

// Warnings (a damaged ancillary chunk, which libpng then skips) do not stop decoding and are not printed.
void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep out, size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (length > state->size - state->offset) png_error(png, "the file ends early (truncated)");
  std::memcpy(out, state->data + state->offset, length);
  state->offset += length;
}

bool append(Bytes* out, const uint8_t* data, size_t length) noexcept {
  try {
    out->insert(out->end(), data, data + length);
    return true;
  } catch (...) {
    return false;
  }
}

void on_write(png_structp png, png_bytep data, size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (!append(state->out, data, length)) {
    state->out_of_memory = true;
    png_error(png, "out of memory while growing the output");
  }
}

void on_flush(png_structp) {}

// ---- the setjmp frames -----------------------------------------------------------------------------

// `text` is NULL or the one text chunk to write (its strings live in the caller's frame).
bool write_steps(PngState* s, png_uint_32 width, png_uint_32 height, png_bytepp rows, png_textp text) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_write_fn(s->png, s, on_write, on_flush);
  png_set_IHDR(s->png, s->info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  // Set before png_write_info, so the chunk goes before IDAT: readers that stop at the image data
  // (Pillow's Image.open, browsers' upload previews) still see it.
  if (text != nullptr) png_set_text(s->png, s->info, text, 1);
  // zlib level 6 (zlib's own default) with libpng's adaptive per-row filters: within a few percent of
  // level 9's size at a fraction of its time.
  png_set_compression_level(s->png, 6);
  png_write_info(s->png, s->info);
  png_write_image(s->png, rows);
  png_write_end(s->png, nullptr);
  return true;
}

bool read_header_steps(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, s, on_read);
  // Our own size check runs after the header; libpng's limit only has to be at least as wide.
  png_set_user_limits(s->png, 0x7fffffffu, 0x7fffffffu);
  png_read_info(s->png, s->info);
  return true;
}

bool read_pixels_steps(PngState* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_expand(s->png);  // palette -> RGB, grey < 8 bits -> 8 bits, tRNS -> alpha
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
  png_set_scale_16(s->png);  // 16 -> 8 bits rounded (v * 255 / 65535), not just the high byte
#else
  png_set_strip_16(s->png);
#endif
  png_set_strip_alpha(s->png);
  png_set_gray_to_rgb(s->png);
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  if (png_get_channels(s->png, s->info) != 3 || png_get_bit_depth(s->png, s->info) != 8 ||
      png_get_rowbytes(s->png, s->info) != static_cast<size_t>(png_get_image_width(s->png, s->info)) * 3) {
    png_error(s->png, "the pixel layout after conversion is not 8-bit RGB");
  }
  png_read_image(s->png, rows);
  png_read_end(s->png, nullptr);  // through IEND: a file cut after its pixel data is still truncated
  return true;
}

}  // namespace

Bytes encode_png(const uint8_t* rgb, int width, int height, std::string_view parameters) {
  const size_t stride = static_cast<size_t>(width) * 3;
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = const_cast<png_bytep>(rgb + y * stride);  // libpng only reads
  Bytes out;
  out.reserve(stride * static_cast<size_t>(height) / 4 + 1024);

  PngState state;
  state.out = &out;
  state.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, on_error, on_warning);
  if (state.png == nullptr) fail(FX_ERR_OUT_OF_MEMORY, "PNG: could not create the libpng writer");
  struct Destroy {
    PngState& s;
    ~Destroy() { png_destroy_write_struct(&s.png, &s.info); }
  } destroy{state};
  state.info = png_create_info_struct(state.png);
  if (state.info == nullptr) fail(FX_ERR_OUT_OF_MEMORY, "PNG: could not create the libpng info structure");
  // The text chunk (metadata.h): tEXt holds Latin-1 only, so other text goes in an uncompressed iTXt
  // (UTF-8), as Pillow does; both are "uncompressed text" that every PNG reader lists.
  std::string keyword = "parameters", chunk_text, empty;
  png_text text{};
  const bool with_text = !parameters.empty();
  if (with_text) {
    text.key = keyword.data();
    if (to_latin1(decode_utf8(parameters), &chunk_text)) {
      text.compression = PNG_TEXT_COMPRESSION_NONE;
    } else {
      chunk_text.assign(parameters);
      text.compression = PNG_ITXT_COMPRESSION_NONE;
      text.lang = empty.data();  // no language tag, no translated keyword
      text.lang_key = empty.data();
    }
    text.text = chunk_text.data();
    text.text_length = chunk_text.size();
  }
  if (!write_steps(&state, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), rows.data(),
                   with_text ? &text : nullptr)) {
    fail(state.out_of_memory ? FX_ERR_OUT_OF_MEMORY : FX_ERR_INTERNAL,
         std::string("PNG: encoding failed: ") + state.message);
  }
  return out;
}

Image decode_png(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  PngState state;
  state.data = data;
  state.size = size;
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, on_error, on_warning);
  if (state.png == nullptr) fail(FX_ERR_OUT_OF_MEMORY, "PNG: could not create the libpng reader");
  struct Destroy {
    PngState& s;
    ~Destroy() { png_destroy_read_struct(&s.png, &s.info, nullptr); }
  } destroy{state};
  state.info = png_create_info_struct(state.png);
  if (state.info == nullptr) fail(FX_ERR_OUT_OF_MEMORY, "PNG: could not create the libpng info structure");

  if (!read_header_steps(&state)) fail(FX_ERR_FORMAT, std::string("PNG: bad header: ") + state.message);
  const png_uint_32 width = png_get_image_width(state.png, state.info);
  const png_uint_32 height = png_get_image_height(state.png, state.info);
  check_decoded_size(Format::Png, width, height, limits);

  Image image;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.format = Format::Png;
  image.rgb.resize(static_cast<size_t>(width) * height * 3);
  std::vector<png_bytep> rows(height);
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = image.rgb.data() + y * width * 3;
  if (!read_pixels_steps(&state, rows.data())) {
    fail(FX_ERR_FORMAT, std::string("PNG: corrupt or truncated image data: ") + state.message);
  }
  return image;
}

}  // namespace fx::image
