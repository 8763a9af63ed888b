// fx::Error — the one exception type the library throws on purpose. It carries the fx_status that
// the C ABI returns, so every layer reports "what kind of failure" and "which file/tensor" together.
#pragma once

#include <stdexcept>
#include <string>

#include "fluxnative.h"

namespace fx {

class Error : public std::runtime_error {
 public:
  Error(fx_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  fx_status status() const noexcept { return status_; }

 private:
  fx_status status_;
};

[[noreturn]] inline void fail(fx_status status, const std::string& message) { throw Error(status, message); }

}  // namespace fx
