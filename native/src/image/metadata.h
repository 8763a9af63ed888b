// The generation parameters an encoder stores in an image file: one UTF-8 text in AUTOMATIC1111's
// "parameters" layout (the prompt, then "Steps: 28, Sampler: Euler, ..."), which A1111, Forge,
// ComfyUI, Civitai and exiftool read back. What each format holds (README, "Image metadata"):
//   PNG   a tEXt chunk with the keyword "parameters" when the text is all Latin-1 (what the PNG spec
//         allows in tEXt), else an uncompressed iTXt chunk (UTF-8): the rule Pillow's PngInfo.add_text
//         follows, so A1111 itself writes the same chunk for the same text;
//   JPEG  an APP1 "Exif" segment whose Exif IFD has a UserComment in the UNICODE encoding (UTF-16 in the
//         TIFF byte order, big-endian here): what A1111 writes through piexif and its PNG-info tab reads;
//   WebP  the same TIFF structure in an EXIF chunk (through libwebp's mux), as piexif.insert writes for
//         A1111's WebP files; XMP would need an XML schema no Stable Diffusion tool reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "image/image_codec.h"

namespace fx::image {

// The longest parameters text, in UTF-8 bytes (the C ABI's FX_IMAGE_MAX_PARAMETERS_BYTES). JPEG decides
// it: the Exif segment must fit one APP1 marker (65533 bytes of payload) and UTF-16 takes up to two
// bytes per UTF-8 byte, so 32000 bytes of UTF-8 always fit with the TIFF structure around them.
inline constexpr size_t kMaxParametersBytes = 32000;

// Throws FX_ERR_INVALID_ARGUMENT ("parameters_text ...") when `text` is longer than kMaxParametersBytes or
// not valid UTF-8 (overlong forms, surrogates, code points above U+10FFFF, cut sequences), naming the byte.
void check_parameters_text(std::string_view text);

// The code points of valid UTF-8 (checked by check_parameters_text first).
std::u32string decode_utf8(std::string_view text);

// The text as Latin-1 bytes when every code point is at most U+00FF; false otherwise.
bool to_latin1(const std::u32string& text, std::string* latin1);

// A big-endian TIFF structure (no "Exif\0\0" prefix): IFD0 pointing to an Exif IFD with ExifVersion
// "0232" and UserComment = "UNICODE\0" + the text in UTF-16BE.
Bytes exif_with_user_comment(const std::u32string& text);

}  // namespace fx::image
