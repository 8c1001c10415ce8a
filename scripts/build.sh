#!/usr/bin/env bash
# Configures and builds into build/ (Release). Extra arguments go to cmake,
# e.g. scripts/build.sh -DATTN_SANITIZE=ON. BUILD_DIR overrides the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "$@"
cmake --build "$build_dir" -j "$(nproc)"
