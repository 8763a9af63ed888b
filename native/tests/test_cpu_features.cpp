// The ISA cap (core/cpu_features.h): names, what a cap removes, and that it never adds.
#include <gtest/gtest.h>

#include "core/cpu_features.h"
#include "fluxnative.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/conv2d.h"
#include "ops/cpu/elementwise.h"

namespace {

using fx::IsaLevel;

TEST(CpuIsaCap, NamesParseBothWays) {
  for (IsaLevel level : {IsaLevel::Portable, IsaLevel::Avx2, IsaLevel::Avx512, IsaLevel::Avx512Bf16}) {
    IsaLevel parsed = IsaLevel::Portable;
    ASSERT_TRUE(fx::parse_isa_level(fx::isa_level_name(level), &parsed)) << fx::isa_level_name(level);
    EXPECT_EQ(parsed, level);
  }
  IsaLevel parsed = IsaLevel::Portable;
  EXPECT_TRUE(fx::parse_isa_level("AVX512_BF16", &parsed));
  EXPECT_EQ(parsed, IsaLevel::Avx512Bf16);
  for (const char* bad : {"", "sse4", "avx-512", "avx2 ", "native"}) EXPECT_FALSE(fx::parse_isa_level(bad, &parsed)) << bad;
}

TEST(CpuIsaCap, CapRemovesFeaturesAboveItAndNeverAdds) {
  const uint32_t machine = fx::cpu_features_machine();
  {
    fx::ScopedIsaCap cap(IsaLevel::Portable);
    EXPECT_EQ(fx::cpu_features(), 0u);
    EXPECT_EQ(fx::isa_level(), IsaLevel::Portable);
    EXPECT_FALSE(fx::cpu::elementwise_uses_avx512());
    EXPECT_STREQ(fx::cpu::elementwise_path_name(), "portable");
    EXPECT_STREQ(fx::cpu::attention_path_name(128), "portable");
    EXPECT_EQ(fx::cpu::conv2d_active_path(), fx::cpu::ConvPath::Portable);
  }
  {
    fx::ScopedIsaCap cap(IsaLevel::Avx2);
    const uint32_t f = fx::cpu_features();
    EXPECT_EQ(f & ~machine, 0u);
    EXPECT_EQ(f & (FX_CPU_AVX512F | FX_CPU_AVX512BW | FX_CPU_AVX512VL | FX_CPU_AVX512_BF16 | FX_CPU_AVX512_FP16), 0u);
    EXPECT_EQ(f, machine & (FX_CPU_AVX2 | FX_CPU_FMA | FX_CPU_F16C));
    EXPECT_FALSE(fx::cpu::elementwise_uses_avx512());
    // The AVX2 paths where the machine has AVX2 + FMA, else the portable ones.
    const bool avx2 = (machine & (FX_CPU_AVX2 | FX_CPU_FMA)) == (FX_CPU_AVX2 | FX_CPU_FMA);
    EXPECT_STREQ(fx::cpu::elementwise_path_name(), avx2 ? "avx2" : "portable");
    EXPECT_STREQ(fx::cpu::attention_path_name(128), avx2 ? "avx2" : "portable");
    EXPECT_NE(fx::cpu::conv2d_active_path(), fx::cpu::ConvPath::Avx512);
  }
  {
    fx::ScopedIsaCap cap(IsaLevel::Avx512);
    EXPECT_EQ(fx::cpu_features() & (FX_CPU_AVX512_BF16 | FX_CPU_AVX512_FP16), 0u);
    EXPECT_EQ(fx::cpu_features() & ~machine, 0u);
  }
  {
    fx::ScopedIsaCap cap(IsaLevel::Avx512Bf16);  // the top level: the machine's own features, nothing more
    EXPECT_EQ(fx::cpu_features(), machine);
    EXPECT_EQ(fx::isa_level(), fx::isa_level_machine());
  }
}

TEST(CpuIsaCap, ScopedCapsNestAndRestore) {
  const IsaLevel before = fx::isa_level();
  {
    fx::ScopedIsaCap outer(IsaLevel::Avx2);
    {
      fx::ScopedIsaCap inner(IsaLevel::Portable);
      EXPECT_EQ(fx::isa_level(), IsaLevel::Portable);
    }
    EXPECT_EQ(static_cast<int>(fx::isa_level()),
              std::min(static_cast<int>(IsaLevel::Avx2), static_cast<int>(fx::isa_level_machine())));
  }
  EXPECT_EQ(fx::isa_level(), before);
}

TEST(CpuIsaCap, BuildInfoReportsTheMachineAndTheFeaturesInForce) {
  fx::ScopedIsaCap cap(IsaLevel::Portable);
  fx_build_info info;
  fx_build_info_init(&info);
  ASSERT_EQ(fx_get_build_info(&info), FX_OK);
  EXPECT_EQ(info.cpu_features, 0u);
  EXPECT_EQ(info.cpu_features_machine, fx::cpu_features_machine());
}

}  // namespace
