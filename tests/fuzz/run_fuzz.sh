#!/usr/bin/env bash
# Long fuzz runs: builds the libFuzzer targets in build-fuzz (clang, ATTN_FUZZ=ON)
# and runs each target in turn for SECONDS (default 600), one process at a time.
#
#   tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]     # targets: codec tokenizer jsonl fvecs request
#
# New inputs accumulate in build-fuzz/fuzz-corpus/<target> (the committed seeds
# in tests/fuzz/corpus/<target> are read too); a crash is written to
# build-fuzz/fuzz-artifacts/<target>-crash-<sha1> and the script exits non-zero.
# Replay one: build-fuzz/fuzz-<target> FILE. Every crash becomes a file in
# tests/fuzz/regressions/<target>/ (replayed by fuzz_replay_test in every build).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-600}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(codec tokenizer jsonl fvecs request); fi
build="${ATTN_FUZZ_BUILD:-$root/build-fuzz}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DATTN_FUZZ=ON -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" -j"${JOBS:-1}" --target "${targets[@]/#/fuzz-}"
mkdir -p "$build/fuzz-artifacts"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz-corpus/$t"
  echo "== fuzz-$t for ${seconds} s"
  if ! ASAN_OPTIONS=detect_leaks=1 "$build/fuzz-$t" -max_total_time="$seconds" \
      -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$t-" \
      "$build/fuzz-corpus/$t" "$root/tests/fuzz/corpus/$t" 2> "$build/fuzz-$t.log"; then
    status=1
    echo "fuzz-$t FAILED; see $build/fuzz-$t.log and $build/fuzz-artifacts/"
  fi
  grep -E "^#[0-9]+ +DONE|^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$build/fuzz-$t.log" || true
done
exit "$status"
