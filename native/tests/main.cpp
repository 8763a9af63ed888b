// The test binary's main. Besides the usual GoogleTest run it has one mode for ctest's per-ISA runs:
//
//   FX_CPU_ISA=avx2 fluxnative_tests --isa-run
//
// runs every test with the kernels capped at that instruction-set level (core/cpu_features.h), so one
// CI run on an AVX-512 machine also runs the AVX2 and portable paths of every kernel and every model.
// A level the machine lacks, or its own level (which the ordinary run covers), exits with
// kSkipReturnCode, which ctest reports as skipped. `fluxnative_tests --machine-isa` prints the machine's level.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/cpu_features.h"

namespace {

constexpr int kSkipReturnCode = 77;  // SKIP_RETURN_CODE of the isa_* tests in CMakeLists.txt

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--machine-isa") == 0) {  // for test.sh's coverage line
    std::printf("%s\n", fx::isa_level_name(fx::isa_level_machine()));
    return 0;
  }
  bool isa_run = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--isa-run") == 0) {
      isa_run = true;
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      break;
    }
  }
  if (isa_run) {
    const char* requested = std::getenv("FX_CPU_ISA");
    fx::IsaLevel level;
    if (requested == nullptr || !fx::parse_isa_level(requested, &level)) {
      std::fprintf(stderr, "--isa-run needs FX_CPU_ISA set to portable, avx2, avx512 or avx512-bf16\n");
      return 2;
    }
    const fx::IsaLevel machine = fx::isa_level_machine();
    if (static_cast<int>(level) >= static_cast<int>(machine)) {
      std::printf("[ isa      ] skipped: this machine's level is %s; the ordinary run covers %s\n",
                  fx::isa_level_name(machine), fx::isa_level_name(level));
      return kSkipReturnCode;
    }
    std::printf("[ isa      ] every test with the kernels capped at %s (machine: %s)\n", fx::isa_level_name(level),
                fx::isa_level_name(machine));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
