// CPU features detected at run time (kernels choose their path from these, never from compile flags alone).
#pragma once

#include <cstdint>

namespace fx {

// FX_CPU_* bit flags (fluxnative.h) of the machine we run on.
uint32_t cpu_features();

}  // namespace fx
