/* The shared library's own translation unit. Every symbol of the C ABI lives in the static
 * fluxnative_impl (linked whole-archive); this file only gives the linker a target to build. */
#include "fluxnative.h"
