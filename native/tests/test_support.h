// Shared GoogleTest helpers.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>

#include "core/cpu_features.h"

namespace fx::testing {

// A fresh folder per test under FX_TEST_TMPDIR, so tests can run in parallel (ctest -j) without
// sharing files; removed after the test.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "." + info->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = std::filesystem::path(FX_TEST_TMPDIR) / (name + "." + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& file) const { return (dir_ / file).string(); }
  std::filesystem::path dir_;
};

// Runs `body` once per instruction-set level in force here, highest first, with the ISA capped at that
// level (core/cpu_features.h), so every kernel path this machine can run is compared in one test. The
// cap before the call is restored even when the body fails. A level's name is in the failure trace.
template <typename Body>
void for_each_isa_level(Body body) {
  const IsaLevel top = isa_level();
  for (int level = static_cast<int>(top); level >= 0; --level) {
    ScopedIsaCap cap(static_cast<IsaLevel>(level));
    SCOPED_TRACE(std::string("ISA capped at ") + isa_level_name(static_cast<IsaLevel>(level)));
    body();
  }
}

}  // namespace fx::testing
