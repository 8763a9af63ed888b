#!/usr/bin/env bash
# Runs every FluxNative test: brings in the system packages the build needs when some are missing,
# builds everything (`dotnet build` drives the native CMake build), then runs the native GoogleTest
# suites (ctest) and the xunit projects. Prints one summary line.
#   ./test.sh            Release build, all tests
#   FX_CUDA=ON ./test.sh  fail the build if the CUDA backend cannot be compiled (CI sets this)
#   FX_SKIP_PACKAGE_TEST=1 ./test.sh  without the NuGet package test (tools/package/test-package.sh)
#   FX_REQUIRE_POSTGRES=1 ./test.sh    fail when the PostgreSQL tests cannot run (CI sets this)
# The server's PostgreSQL tests run on a throwaway cluster that this script starts on loopback when PostgreSQL's
# server binaries are installed (tools/postgres/test-cluster.sh; FLUX_TEST_POSTGRES set beforehand names another
# server instead). Without them those tests are skipped, each saying why, and counted as skipped.
set -uo pipefail
cd "$(dirname "$0")"
config=${CONFIGURATION:-Release}
log_dir=build/test-logs
mkdir -p "$log_dir"

# A fresh machine needs only the .NET SDK: the Debian packages come in here (as root; one dpkg query
# when they are all there), or the message names them and the command that installs them.
if ! command -v dotnet > /dev/null; then
  echo "test.sh: the .NET 10 SDK is needed and dotnet is not on PATH (https://learn.microsoft.com/dotnet/core/install/linux-debian)" >&2
  exit 1
fi
bash .ci/install-deps --needed || exit 1

cmake_args="-DFX_CUDA=${FX_CUDA:-AUTO}"
echo "== build (dotnet build -c $config; native: cmake $cmake_args)"
dotnet build FluxNative.sln -c "$config" -nologo -v:minimal "-p:FluxNativeCMakeArgs=$cmake_args" || exit 1

echo "== native tests (ctest)"
ctest --test-dir build/native --output-on-failure -j "$(nproc)" 2>&1 | tee "$log_dir/ctest.log"
native_rc=${PIPESTATUS[0]}

postgres_dir=""
if [ -z "${FLUX_TEST_POSTGRES:-}" ]; then
  postgres_dir=$(mktemp -d /tmp/fluxnative-test-postgres-XXXXXX)
  if cluster=$(tools/postgres/test-cluster.sh start "$postgres_dir"); then
    export FLUX_TEST_POSTGRES FLUX_TEST_POSTGRES_CTL
    FLUX_TEST_POSTGRES=$(sed -n 1p <<< "$cluster")
    FLUX_TEST_POSTGRES_CTL=$(sed -n 2p <<< "$cluster")
    trap 'tools/postgres/test-cluster.sh stop "$postgres_dir"' EXIT
    echo "== PostgreSQL for the server's tests: a throwaway cluster at $FLUX_TEST_POSTGRES"
  else
    rm -rf "$postgres_dir"
    if [ "${FX_REQUIRE_POSTGRES:-0}" = 1 ]; then
      echo "test.sh: FX_REQUIRE_POSTGRES=1 but no PostgreSQL cluster could be started (above)" >&2
      exit 1
    fi
    echo "== no PostgreSQL for the server's tests: they are skipped (install Debian's postgresql package to run them)"
  fi
fi

echo "== managed tests (dotnet test)"
dotnet test FluxNative.sln -c "$config" --no-build -nologo 2>&1 | tee "$log_dir/dotnet-test.log"
managed_rc=${PIPESTATUS[0]}

# The NuGet packages as a stranger uses them: packed from this build, added to a fresh project outside the
# repository, a demo generation checked (~30 s). FX_SKIP_PACKAGE_TEST=1 leaves it out.
package_rc=0
if [ "${FX_SKIP_PACKAGE_TEST:-0}" != 1 ]; then
  echo "== package test (tools/package/test-package.sh)"
  CONFIGURATION=$config tools/package/test-package.sh --no-build 2>&1 | tee "$log_dir/package-test.log"
  package_rc=${PIPESTATUS[0]}
fi

# One summary over both runners: ctest's "N tests failed out of M" and each xunit assembly's
# "Failed: F, Passed: P, Skipped: S".
read -r n_total n_failed < <(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\2 \1/p' "$log_dir/ctest.log" | tail -1)
n_total=${n_total:-0}; n_failed=${n_failed:-0}
n_skipped=$(grep -c 'Skipped\]\|\*\*\*Skipped' "$log_dir/ctest.log" || true)
m_passed=0; m_failed=0; m_skipped=0
while read -r f p s; do
  m_failed=$((m_failed + f)); m_passed=$((m_passed + p)); m_skipped=$((m_skipped + s))
done < <(sed -n 's/.*Failed: *\([0-9]*\), Passed: *\([0-9]*\), Skipped: *\([0-9]*\).*/\1 \2 \3/p' "$log_dir/dotnet-test.log")
p_passed=0; p_failed=0
if [ "${FX_SKIP_PACKAGE_TEST:-0}" != 1 ]; then
  if [ "$package_rc" -eq 0 ]; then p_passed=1; else p_failed=1; fi
fi
passed=$((n_total - n_failed - n_skipped + m_passed + p_passed))
failed=$((n_failed + m_failed + p_failed))
skipped=$((n_skipped + m_skipped))
# Which CPU paths the native run covered: the machine's own level (every test) and each isa_* rerun.
machine_isa=$(build/native/native/fluxnative_tests --machine-isa 2>/dev/null)
isa_runs=$(sed -n 's/.*Test *#[0-9]*: isa_\([a-z0-9]*\) [. ]*\(\**[A-Za-z]*\).*/\1 \2/p' "$log_dir/ctest.log" | tr -d '*' | paste -sd, - | sed 's/,/, /g')
echo "CPU paths: every native test at this machine's level (${machine_isa:-unknown}); capped reruns: ${isa_runs:-none}"
echo "native: $((n_total - n_failed - n_skipped)) passed, $n_failed failed, $n_skipped skipped; managed: $m_passed passed, $m_failed failed, $m_skipped skipped; package: $p_passed passed, $p_failed failed"
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [ "$native_rc" -ne 0 ] || [ "$managed_rc" -ne 0 ] || [ "$package_rc" -ne 0 ] || [ "$failed" -ne 0 ]; then exit 1; fi
if [ "$passed" -eq 0 ]; then echo "no test ran"; exit 1; fi
