#include "core/cpu_features.h"

#include "fluxnative.h"

namespace fx {

uint32_t cpu_features() {
  uint32_t flags = 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) flags |= FX_CPU_AVX2;
  if (__builtin_cpu_supports("fma")) flags |= FX_CPU_FMA;
  if (__builtin_cpu_supports("avx512f")) flags |= FX_CPU_AVX512F;
  if (__builtin_cpu_supports("avx512bw")) flags |= FX_CPU_AVX512BW;
  if (__builtin_cpu_supports("avx512vl")) flags |= FX_CPU_AVX512VL;
  if (__builtin_cpu_supports("avx512bf16")) flags |= FX_CPU_AVX512_BF16;
  // F16C and AVX512-FP16 have no __builtin_cpu_supports name in every compiler we build with
  // (clang-14 lacks "avx512fp16"), so read them from CPUID: leaf 1 ECX bit 29, leaf 7 EDX bit 23.
  // The OS-support check for the zmm state is implied by avx512f above.
  unsigned eax, ebx, ecx, edx;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  if (ecx & (1u << 29)) flags |= FX_CPU_F16C;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
  if (eax >= 7) {
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
    if ((edx & (1u << 23)) && (flags & FX_CPU_AVX512F)) flags |= FX_CPU_AVX512_FP16;
  }
#endif
  return flags;
}

}  // namespace fx
