// JPEG through libjpeg-turbo, in memory.
//
// libjpeg's default error handler prints and calls exit(). Ours formats the message into the
// JpegError and longjmps back to the setjmp in the one small function that made the libjpeg calls
// (*_steps). Those functions hold nothing with a destructor; every C++ object (the output vector, a
// row buffer) lives in the caller's frame, which longjmp never leaves. The destination manager that
// grows the output vector catches bad_alloc inside a noexcept helper and only then raises a libjpeg
// error, so no C++ exception ever unwinds through libjpeg's C frames.
#include <cstdio>  // jpeglib.h uses FILE and size_t without including anything

// clang-format off
#include <jpeglib.h>
#include <jerror.h>  // after jpeglib.h: which warnings it declares depends on jconfig.h's macros
// clang-format on

#include <algorithm>
#include <climits>
#include <csetjmp>
#include <string>

#include "core/error.h"
#include "image/image_codec.h"
#include "image/metadata.h"

namespace fx::image {
namespace {

struct JpegError {
  jpeg_error_mgr pub;  // first: libjpeg hands us cinfo->err, and we cast it back
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings are not printed. Those that mean pixel data is missing or undecodable are errors here:
// libjpeg would fill the rest of the image with grey and report success. The rest (extraneous bytes
// between markers, an odd JFIF version, a bad ICC chunk, an unusual progression) are tolerated, as
// browsers do.
void on_emit_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:        // "Premature end of JPEG file"
    case JWRN_HIT_MARKER:      // "Corrupt JPEG data: premature end of data segment"
    case JWRN_HUFF_BAD_CODE:   // "Corrupt JPEG data: bad Huffman code"
#if JPEG_LIB_VERSION >= 70 || defined(D_ARITH_CODING_SUPPORTED)
    case JWRN_ARITH_BAD_CODE:  // "Corrupt JPEG data: bad arithmetic code"
#endif
    case JWRN_MUST_RESYNC:     // "Corrupt JPEG data: found marker ... instead of RST..."
      on_error_exit(cinfo);
    default:
      cinfo->err->num_warnings++;
  }
}

void on_output_message(j_common_ptr) {}

void init_error(JpegError* err) {
  jpeg_std_error(&err->pub);
  err->pub.error_exit = on_error_exit;
  err->pub.emit_message = on_emit_message;
  err->pub.output_message = on_output_message;
  err->message[0] = '\0';
}

// A progressive file can hold any number of scans, and each one walks the whole coefficient buffer:
// libjpeg-turbo's own TurboJPEG API caps them the same way (TJPARAM_SCANLIMIT).
struct ScanLimit {
  jpeg_progress_mgr pub;  // first, as above
  int max_scans;
};

void on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  const auto* limit = reinterpret_cast<const ScanLimit*>(cinfo->progress);
  const int scans = reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number;
  if (scans > limit->max_scans) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    std::snprintf(err->message, sizeof(err->message), "more than %d scans (a progressive-scan bomb?)",
                  limit->max_scans);
    std::longjmp(err->jump, 1);
  }
}

// ---- destination: a std::vector owned by the caller's frame ----------------------------------------

struct VectorDest {
  jpeg_destination_mgr pub;  // first, as above
  Bytes* out;
  bool out_of_memory;
};

bool grow(Bytes* out) noexcept {
  try {
    out->resize(std::max<size_t>(out->size() * 2, 16384));
    return true;
  } catch (...) {
    return false;
  }
}

void dest_init(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<VectorDest*>(cinfo->dest);
  if (dest->out->empty() && !grow(dest->out)) {
    dest->out_of_memory = true;
    ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
  }
  dest->pub.next_output_byte = dest->out->data();
  dest->pub.free_in_buffer = dest->out->size();
}

boolean dest_empty(j_compress_ptr cinfo) {  // called when the whole buffer is full
  auto* dest = reinterpret_cast<VectorDest*>(cinfo->dest);
  const size_t used = dest->out->size();
  if (!grow(dest->out)) {
    dest->out_of_memory = true;
    ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
  }
  dest->pub.next_output_byte = dest->out->data() + used;
  dest->pub.free_in_buffer = dest->out->size() - used;
  return TRUE;
}

void dest_term(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<VectorDest*>(cinfo->dest);
  dest->out->resize(dest->out->size() - dest->pub.free_in_buffer);  // shrinking never allocates
}

// ---- the setjmp frames -----------------------------------------------------------------------------

struct Encoder {
  jpeg_compress_struct cinfo;
  JpegError err;
  VectorDest dest;
};

// `exif` is NULL or the APP1 payload ("Exif\0\0" + TIFF) to write after the JFIF header.
bool encode_steps(Encoder* e, const uint8_t* rgb, int width, int height, int quality, const Bytes* exif) {
  if (setjmp(e->err.jump)) return false;
  jpeg_create_compress(&e->cinfo);
  e->cinfo.dest = &e->dest.pub;
  e->cinfo.image_width = static_cast<JDIMENSION>(width);
  e->cinfo.image_height = static_cast<JDIMENSION>(height);
  e->cinfo.input_components = 3;
  e->cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&e->cinfo);
  jpeg_set_quality(&e->cinfo, quality, TRUE);
  e->cinfo.optimize_coding = TRUE;  // Huffman tables fitted to the image: smaller, same pixels
  e->cinfo.dct_method = JDCT_ISLOW;
  // Chroma subsampling: 4:2:0 below quality 90 (the usual trade: half the chroma for ~a third of the
  // size), 4:4:4 from 90, where a caller asks for fidelity and subsampled colour edges would show.
  const int luma = quality >= 90 ? 1 : 2;
  e->cinfo.comp_info[0].h_samp_factor = luma;
  e->cinfo.comp_info[0].v_samp_factor = luma;
  for (int c = 1; c < 3; ++c) e->cinfo.comp_info[c].h_samp_factor = e->cinfo.comp_info[c].v_samp_factor = 1;
  jpeg_start_compress(&e->cinfo, TRUE);
  // Markers go between jpeg_start_compress (which wrote SOI and JFIF APP0) and the first scanline.
  if (exif != nullptr) {
    jpeg_write_marker(&e->cinfo, JPEG_APP0 + 1, exif->data(), static_cast<unsigned int>(exif->size()));
  }
  const size_t stride = static_cast<size_t>(width) * 3;
  while (e->cinfo.next_scanline < e->cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb + e->cinfo.next_scanline * stride);  // libjpeg only reads
    jpeg_write_scanlines(&e->cinfo, &row, 1);
  }
  jpeg_finish_compress(&e->cinfo);
  return true;
}

struct Decoder {
  jpeg_decompress_struct cinfo;
  JpegError err;
  ScanLimit scan_limit;
};

bool read_header_steps(Decoder* d, const uint8_t* data, size_t size, long max_memory) {
  if (setjmp(d->err.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  // Progressive files keep every coefficient in memory; past this libjpeg-turbo (no backing store)
  // fails cleanly instead of growing.
  d->cinfo.mem->max_memory_to_use = max_memory;
  d->cinfo.progress = &d->scan_limit.pub;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

void cmyk_to_rgb(const uint8_t* cmyk, uint8_t* rgb, size_t width, bool adobe) {
  // Naive conversion without a colour profile (as browsers without CMS and stb_image do). Files with
  // an Adobe marker (nearly all CMYK JPEGs, from Photoshop) store the channels inverted.
  for (size_t x = 0; x < width; ++x) {
    const uint8_t* p = cmyk + x * 4;
    const unsigned k = adobe ? p[3] : 255u - p[3];
    for (int c = 0; c < 3; ++c) {
      const unsigned v = adobe ? p[c] : 255u - p[c];
      rgb[x * 3 + c] = static_cast<uint8_t>((v * k + 127) / 255);
    }
  }
}

bool decode_steps(Decoder* d, uint8_t* out, uint8_t* cmyk_row) {
  if (setjmp(d->err.jump)) return false;
  jpeg_start_decompress(&d->cinfo);
  if (d->cinfo.output_width != d->cinfo.image_width || d->cinfo.output_height != d->cinfo.image_height ||
      d->cinfo.output_components != (cmyk_row != nullptr ? 4 : 3)) {
    ERREXIT(&d->cinfo, JERR_CONVERSION_NOTIMPL);
  }
  const size_t width = d->cinfo.output_width;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    uint8_t* target = out + static_cast<size_t>(d->cinfo.output_scanline) * width * 3;
    JSAMPROW row = cmyk_row != nullptr ? cmyk_row : target;
    if (jpeg_read_scanlines(&d->cinfo, &row, 1) != 1) {  // only a suspending source returns 0
      ERREXIT(&d->cinfo, JERR_INPUT_EMPTY);
    }
    if (cmyk_row != nullptr) cmyk_to_rgb(cmyk_row, target, width, d->cinfo.saw_Adobe_marker);
  }
  jpeg_finish_decompress(&d->cinfo);  // reads through EOI: a file cut after its last scan is truncated
  return true;
}

}  // namespace

Bytes encode_jpeg(const uint8_t* rgb, int width, int height, int quality, std::string_view parameters) {
  if (quality < 1 || quality > 100) {
    fail(FX_ERR_INVALID_ARGUMENT, "JPEG: quality must be 1..100, got " + std::to_string(quality));
  }
  Bytes exif;
  if (!parameters.empty()) {
    static const uint8_t kExifHeader[6] = {'E', 'x', 'i', 'f', 0, 0};
    const Bytes tiff = exif_with_user_comment(decode_utf8(parameters));
    exif.assign(kExifHeader, kExifHeader + sizeof(kExifHeader));
    exif.insert(exif.end(), tiff.begin(), tiff.end());
    // One marker segment holds 65535 bytes including its 2-byte length; kMaxParametersBytes keeps the
    // longest text inside that, and this guards the arithmetic.
    if (exif.size() > 65533) {
      fail(FX_ERR_INTERNAL, "JPEG: the Exif segment is " + std::to_string(exif.size()) + " bytes, over 65533");
    }
  }
  Bytes out;
  out.resize(static_cast<size_t>(width) * height / 2 + 16384);
  Encoder encoder{};
  init_error(&encoder.err);
  encoder.cinfo.err = &encoder.err.pub;
  encoder.dest.pub.init_destination = dest_init;
  encoder.dest.pub.empty_output_buffer = dest_empty;
  encoder.dest.pub.term_destination = dest_term;
  encoder.dest.out = &out;
  struct Destroy {
    jpeg_compress_struct& cinfo;
    ~Destroy() { jpeg_destroy_compress(&cinfo); }  // safe on a zeroed or partly created struct
  } destroy{encoder.cinfo};
  if (!encode_steps(&encoder, rgb, width, height, quality, parameters.empty() ? nullptr : &exif)) {
    fail(encoder.dest.out_of_memory ? FX_ERR_OUT_OF_MEMORY : FX_ERR_INTERNAL,
         std::string("JPEG: encoding failed: ") + encoder.err.message);
  }
  return out;
}

Image decode_jpeg(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  Decoder decoder{};
  init_error(&decoder.err);
  decoder.cinfo.err = &decoder.err.pub;
  decoder.scan_limit.pub.progress_monitor = on_progress;
  decoder.scan_limit.max_scans = limits.max_jpeg_scans;
  struct Destroy {
    jpeg_decompress_struct& cinfo;
    ~Destroy() { jpeg_destroy_decompress(&cinfo); }
  } destroy{decoder.cinfo};
  // Coefficients of a progressive 4:4:4 file take 6 bytes a pixel; allow that plus working buffers.
  const uint64_t max_memory = std::min<uint64_t>(limits.max_pixels * 8 + (64u << 20), LONG_MAX);
  if (!read_header_steps(&decoder, data, size, static_cast<long>(max_memory))) {
    fail(FX_ERR_FORMAT, std::string("JPEG: bad header: ") + decoder.err.message);
  }
  check_decoded_size(Format::Jpeg, decoder.cinfo.image_width, decoder.cinfo.image_height, limits);
  const bool cmyk = decoder.cinfo.jpeg_color_space == JCS_CMYK || decoder.cinfo.jpeg_color_space == JCS_YCCK;
  // Grey, YCbCr and RGB files convert to RGB inside libjpeg; anything else it refuses (FX_ERR_FORMAT).
  decoder.cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;

  Image image;
  image.width = static_cast<int>(decoder.cinfo.image_width);
  image.height = static_cast<int>(decoder.cinfo.image_height);
  image.format = Format::Jpeg;
  image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
  std::vector<uint8_t> cmyk_row(cmyk ? static_cast<size_t>(image.width) * 4 : 0);
  if (!decode_steps(&decoder, image.rgb.data(), cmyk ? cmyk_row.data() : nullptr)) {
    fail(FX_ERR_FORMAT, std::string("JPEG: corrupt or truncated image data: ") + decoder.err.message);
  }
  return image;
}

}  // namespace fx::image
