#!/usr/bin/env bash
# Installs dependencies, builds everything (Release) with the test suite and
# runs it with ctest. It also installs Debian's chromium, which only the
# browser test (label browser) needs. With --sanitize, builds into
# build-asan with clang, AddressSanitizer + UndefinedBehaviorSanitizer and clang's lock checking
# (-Wthread-safety over the ABSL_GUARDED_BY annotations: a violation fails
# the build), and runs the suite there.
#
# The tests are always configured in (-DATTN_BUILD_TESTS=ON), whatever an
# earlier configure of the same folder left in CMake's cache (scripts/demo.sh
# builds without them), and a run that finds no test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--sanitize" ]]; then
  bash scripts/install-deps.sh clang chromium
  export BUILD_DIR=build-asan CC=clang CXX=clang++
  # A folder configured with another compiler is configured afresh.
  if [[ -f build-asan/CMakeCache.txt ]] &&
    ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang' build-asan/CMakeCache.txt; then
    rm -rf build-asan/CMakeCache.txt build-asan/CMakeFiles
  fi
  BUILD_TYPE=RelWithDebInfo bash scripts/build.sh -DATTN_BUILD_TESTS=ON -DATTN_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  bash scripts/install-deps.sh chromium
  bash scripts/build.sh -DATTN_BUILD_TESTS=ON
fi
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600 \
  --no-tests=error
