#include "core/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "fluxnative.h"

namespace fx {

namespace {

uint32_t detect() {
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

constexpr uint32_t kAvx2Flags = FX_CPU_AVX2 | FX_CPU_FMA | FX_CPU_F16C;
constexpr uint32_t kAvx512Flags = FX_CPU_AVX512F | FX_CPU_AVX512BW | FX_CPU_AVX512VL;
constexpr uint32_t kBf16Flags = FX_CPU_AVX512_BF16 | FX_CPU_AVX512_FP16;

// The flags a level allows.
uint32_t allowed(IsaLevel level) {
  switch (level) {
    case IsaLevel::Portable: return 0;
    case IsaLevel::Avx2: return kAvx2Flags;
    case IsaLevel::Avx512: return kAvx2Flags | kAvx512Flags;
    case IsaLevel::Avx512Bf16: return ~0u;
  }
  return 0;
}

constexpr int kNoCap = -1;

// The cap from FX_CPU_ISA, read once. An unknown value is reported on stderr (not silently ignored)
// and leaves the machine uncapped: a library must not abort its host over an environment variable.
int cap_from_environment() {
  const char* text = std::getenv("FX_CPU_ISA");
  if (text == nullptr || *text == '\0') return kNoCap;
  IsaLevel level;
  if (parse_isa_level(text, &level)) return static_cast<int>(level);
  std::fprintf(stderr, "fluxnative: FX_CPU_ISA=\"%s\" is not one of portable, avx2, avx512, avx512-bf16; "
                       "ignoring it\n", text);
  return kNoCap;
}

std::atomic<int>& cap_state() {
  static std::atomic<int> cap{cap_from_environment()};
  return cap;
}

}  // namespace

uint32_t cpu_features_machine() {
  static const uint32_t flags = detect();
  return flags;
}

IsaLevel isa_level_machine() {
  const uint32_t f = cpu_features_machine();
  if ((f & kAvx2Flags) != kAvx2Flags) return IsaLevel::Portable;
  if ((f & kAvx512Flags) != kAvx512Flags) return IsaLevel::Avx2;
  if ((f & FX_CPU_AVX512_BF16) == 0) return IsaLevel::Avx512;
  return IsaLevel::Avx512Bf16;
}

IsaLevel isa_level() {
  const int cap = cap_state().load(std::memory_order_relaxed);
  const IsaLevel machine = isa_level_machine();
  if (cap == kNoCap) return machine;
  return static_cast<IsaLevel>(std::min(cap, static_cast<int>(machine)));
}

uint32_t cpu_features() {
  const int cap = cap_state().load(std::memory_order_relaxed);
  const uint32_t flags = cpu_features_machine();
  return cap == kNoCap ? flags : flags & allowed(static_cast<IsaLevel>(cap));
}

void set_isa_cap(IsaLevel cap) { cap_state().store(static_cast<int>(cap)); }
void clear_isa_cap() { cap_state().store(kNoCap); }

const char* isa_level_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::Portable: return "portable";
    case IsaLevel::Avx2: return "avx2";
    case IsaLevel::Avx512: return "avx512";
    case IsaLevel::Avx512Bf16: return "avx512-bf16";
  }
  return "?";
}

bool parse_isa_level(const std::string& text, IsaLevel* out) {
  std::string t;
  for (char c : text) t += c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (IsaLevel level : {IsaLevel::Portable, IsaLevel::Avx2, IsaLevel::Avx512, IsaLevel::Avx512Bf16}) {
    if (t == isa_level_name(level)) {
      *out = level;
      return true;
    }
  }
  return false;
}

ScopedIsaCap::ScopedIsaCap(IsaLevel cap) : previous_(cap_state().load()) { set_isa_cap(cap); }
ScopedIsaCap::~ScopedIsaCap() { cap_state().store(previous_); }

}  // namespace fx
