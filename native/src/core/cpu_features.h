// CPU features detected at run time (kernels choose their path from these, never from compile flags
// alone), and the instruction-set cap that lets one machine run the paths of lesser machines.
//
// The cap: every kernel asks cpu_features(), which reports the machine's features minus those above
// the cap in force. The cap starts from the environment variable FX_CPU_ISA (avx512-bf16, avx512, avx2,
// portable; unset = no cap) and tests change it with ScopedIsaCap, so that one run on an AVX-512 machine
// also runs the AVX2 and portable paths of every kernel. A cap never adds what the machine lacks.
#pragma once

#include <cstdint>
#include <string>

#include "fluxnative.h"  // the FX_CPU_* flags

namespace fx {

// The instruction-set levels the kernels have paths for, lowest first.
enum class IsaLevel : int {
  Portable = 0,    // plain C++: the compiler's baseline vectorisation
  Avx2 = 1,        // AVX2 + FMA + F16C
  Avx512 = 2,      // AVX-512 F/BW/VL (+FMA)
  Avx512Bf16 = 3,  // AVX-512 with the BF16 dot products (and FP16 where present)
};

// FX_CPU_* bit flags (fluxnative.h) of the machine we run on, less those above the cap in force.
uint32_t cpu_features();
// The machine's own flags, whatever the cap.
uint32_t cpu_features_machine();

// What the kernels' vector paths need, under the cap in force. Asked on every call (never cached by a
// kernel), so a test's ScopedIsaCap takes effect at once.
inline bool cpu_has(uint32_t flags) { return (cpu_features() & flags) == flags; }
inline bool cpu_has_avx512() { return cpu_has(FX_CPU_AVX512F | FX_CPU_AVX512BW | FX_CPU_AVX512VL | FX_CPU_FMA); }
inline bool cpu_has_avx2_fma() { return cpu_has(FX_CPU_AVX2 | FX_CPU_FMA); }

// The highest level the machine itself has.
IsaLevel isa_level_machine();
// The highest level in force: min(machine, cap).
IsaLevel isa_level();
// Sets the cap (process-wide; not meant to be changed while other threads run kernels).
void set_isa_cap(IsaLevel cap);
// Removes the cap (the machine's own level is in force again), including one from FX_CPU_ISA.
void clear_isa_cap();

const char* isa_level_name(IsaLevel level);
// Parses "portable", "avx2", "avx512", "avx512-bf16" (case-insensitive; '_' for '-'). False if unknown.
bool parse_isa_level(const std::string& text, IsaLevel* out);

// Caps the ISA for one scope and restores the cap before it on exit (tests: run a path of a lesser machine).
class ScopedIsaCap {
 public:
  explicit ScopedIsaCap(IsaLevel cap);
  ~ScopedIsaCap();
  ScopedIsaCap(const ScopedIsaCap&) = delete;
  ScopedIsaCap& operator=(const ScopedIsaCap&) = delete;

 private:
  int previous_;
};

}  // namespace fx
