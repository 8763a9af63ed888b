// Generation parameters as text chunks and Exif (see metadata.h for the layout of each format).
#include "image/metadata.h"

#include <string>

#include "core/error.h"

namespace fx::image {
namespace {

[[noreturn]] void bad_utf8(size_t offset) {
  fail(FX_ERR_INVALID_ARGUMENT, "parameters_text is not valid UTF-8 (at byte " + std::to_string(offset) + ")");
}

// Decodes one UTF-8 sequence at text[*i] (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF)
// and advances *i past it.
char32_t next_code_point(std::string_view text, size_t* i) {
  const size_t start = *i;
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(start);
  if (lead < 0x80) {
    *i = start + 1;
    return lead;
  }
  size_t length;
  char32_t value, min;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, value = lead & 0x1F, min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, value = lead & 0x0F, min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, value = lead & 0x07, min = 0x10000;
  } else {
    bad_utf8(start);  // a continuation byte where a character should start, or 0xF8..0xFF
  }
  if (text.size() - start < length) bad_utf8(start);
  for (size_t k = 1; k < length; ++k) {
    if ((byte(start + k) & 0xC0) != 0x80) bad_utf8(start + k);
    value = (value << 6) | (byte(start + k) & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) bad_utf8(start);
  *i = start + length;
  return value;
}

void put16(Bytes& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put32(Bytes& out, uint32_t v) {
  put16(out, v >> 16);
  put16(out, v & 0xFFFF);
}

// One 12-byte IFD entry; `value` is the value itself when it fits in 4 bytes, else its offset.
void put_entry(Bytes& out, uint16_t tag, uint16_t type, uint32_t count, uint32_t value) {
  put16(out, tag);
  put16(out, type);
  put32(out, count);
  put32(out, value);
}

}  // namespace

void check_parameters_text(std::string_view text) {
  if (text.size() > kMaxParametersBytes) {
    fail(FX_ERR_INVALID_ARGUMENT, "parameters_text is " + std::to_string(text.size()) + " bytes; at most " +
                                      std::to_string(kMaxParametersBytes) + " fit every format (JPEG's Exif segment)");
  }
  for (size_t i = 0; i < text.size();) next_code_point(text, &i);
}

std::u32string decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) out.push_back(next_code_point(text, &i));
  return out;
}

bool to_latin1(const std::u32string& text, std::string* latin1) {
  latin1->clear();
  latin1->reserve(text.size());
  for (const char32_t c : text) {
    if (c > 0xFF) return false;
    latin1->push_back(static_cast<char>(static_cast<uint8_t>(c)));
  }
  return true;
}

Bytes exif_with_user_comment(const std::u32string& text) {
  constexpr uint16_t kLong = 4, kUndefined = 7;
  constexpr uint16_t kExifIfdPointer = 0x8769, kExifVersion = 0x9000, kUserComment = 0x9286;
  // Header (8) | IFD0: count, 1 entry, next (18) | Exif IFD: count, 2 entries, next (30) | UserComment.
  constexpr uint32_t kIfd0 = 8, kExifIfd = kIfd0 + 2 + 12 + 4, kComment = kExifIfd + 2 + 2 * 12 + 4;

  Bytes comment;  // "UNICODE\0" then UTF-16BE, as piexif.helper.UserComment.dump(..., encoding="unicode")
  comment.reserve(8 + 2 * text.size() + 4);
  for (const char c : std::string_view("UNICODE\0", 8)) comment.push_back(static_cast<uint8_t>(c));
  for (const char32_t c : text) {
    if (c < 0x10000) {
      put16(comment, c);
    } else {  // a surrogate pair
      put16(comment, 0xD800 + ((c - 0x10000) >> 10));
      put16(comment, 0xDC00 + ((c - 0x10000) & 0x3FF));
    }
  }

  Bytes tiff;
  tiff.reserve(kComment + comment.size());
  tiff.push_back('M');  // big-endian ("Motorola"), as piexif writes: the UNICODE comment is then
  tiff.push_back('M');  // UTF-16BE under either reading of the Exif spec (fixed BE, or the TIFF order)
  put16(tiff, 42);
  put32(tiff, kIfd0);
  put16(tiff, 1);
  put_entry(tiff, kExifIfdPointer, kLong, 1, kExifIfd);
  put32(tiff, 0);  // no IFD1 (no thumbnail)
  put16(tiff, 2);  // entries in ascending tag order, as TIFF requires
  // ExifVersion is mandatory in an Exif IFD; "0232" (Exif 2.32) fits in the entry itself.
  put_entry(tiff, kExifVersion, kUndefined, 4, uint32_t{'0'} << 24 | uint32_t{'2'} << 16 | uint32_t{'3'} << 8 | '2');
  put_entry(tiff, kUserComment, kUndefined, static_cast<uint32_t>(comment.size()), kComment);
  put32(tiff, 0);
  tiff.insert(tiff.end(), comment.begin(), comment.end());
  return tiff;
}

}  // namespace fx::image
