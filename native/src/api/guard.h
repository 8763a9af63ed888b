// The boundary between the C ABI and the C++ inside. Every exported function runs its body through
// fx::api::guard, which catches everything, records the message in the thread-local last error and
// returns a status: no exception ever crosses the ABI.
#pragma once

#include <cstring>
#include <string>

#include "core/error.h"
#include "fluxnative.h"

namespace fx::api {

// Records `message` as the calling thread's last error and returns `status`.
fx_status set_error(fx_status status, const std::string& message) noexcept;

template <class Body>
fx_status guard(const char* function, Body&& body) noexcept {
  try {
    body();
    return FX_OK;
  } catch (const fx::Error& e) {
    return set_error(e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return set_error(FX_ERR_OUT_OF_MEMORY, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return set_error(FX_ERR_INTERNAL, std::string(function) + ": internal error: " + e.what());
  } catch (...) {
    return set_error(FX_ERR_INTERNAL, std::string(function) + ": internal error: unknown exception");
  }
}

inline void require(bool condition, const char* function, const char* what) {
  if (!condition) fail(FX_ERR_INVALID_ARGUMENT, std::string(function) + ": " + what);
}

// Copies a string into a caller buffer following the header's (buffer, capacity, needed) rule.
fx_status copy_string_out(const char* function, const std::string& value, char* buffer, size_t capacity,
                          size_t* needed);

// Reads a caller's versioned input struct: copies min(struct_size, sizeof(T)) bytes over `defaults`.
// A struct_size larger than ours is accepted only if the bytes we do not know are all zero (a newer
// caller leaving new fields at their defaults).
template <class T>
T read_versioned(const T* in, const char* function, T defaults) {
  require(in != nullptr, function, "parameter struct is NULL");
  const uint32_t size = in->struct_size;
  require(size >= sizeof(uint32_t), function, "struct_size is too small (call the *_init function first)");
  if (size > sizeof(T)) {
    const auto* extra = reinterpret_cast<const unsigned char*>(in) + sizeof(T);
    for (size_t i = 0; i < size - sizeof(T); ++i)
      require(extra[i] == 0, function, "struct_size is larger than this library knows and the unknown fields are set");
  }
  std::memcpy(&defaults, in, size < sizeof(T) ? size : sizeof(T));
  defaults.struct_size = sizeof(T);
  return defaults;
}

// Writes a versioned output struct: only the part the caller's struct_size covers.
template <class T>
void write_versioned(T* out, const char* function, T value) {
  require(out != nullptr, function, "output struct is NULL");
  const uint32_t size = out->struct_size;
  require(size >= sizeof(uint32_t), function, "struct_size is too small (call the *_init function first)");
  value.struct_size = size;
  std::memcpy(out, &value, size < sizeof(T) ? size : sizeof(T));
}

}  // namespace fx::api
