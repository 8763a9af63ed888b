#include "core/cancel.h"

#include <string>

#include "core/error.h"

namespace fx {

namespace {
thread_local const volatile int32_t* t_cancel = nullptr;
}  // namespace

const volatile int32_t* current_cancel_flag() noexcept { return t_cancel; }

CancelScope::CancelScope(const volatile int32_t* flag) noexcept : flag_(flag), previous_(t_cancel) { t_cancel = flag; }

CancelScope::~CancelScope() { t_cancel = previous_; }

void CancelScope::check(const char* what) const {
  if (flag_ != nullptr && *flag_ != 0) fail(FX_ERR_CANCELLED, std::string(what) + ": cancelled");
}

}  // namespace fx
