#!/usr/bin/env bash
# Soak: a fresh attnsearch-server on a loopback port, DOCS synthetic documents
# loaded, RocksDB left to finish the load's flushes and compactions, the best
# closed-loop QPS measured (concurrency 2, 4, 8; 15 s each), then an open loop
# at 70% of it for SECONDS (default 600) judged per minute: no errors, server
# memory grows <= 5% after the first minute, p99 within 2x of the first
# minute's. Each window also reports where the latency went (the engine's
# search, the wait for a server worker, the rest), the CPU of the server, the
# load generator and everything else, the server's disk reads, hypervisor
# steal, and a memory-speed probe (dependent loads through 64 MiB timed in
# thread CPU time, relative to the first window: median/99th percentile) that
# shows when the machine's memory got slower.
#
#   bench/run_soak.sh [SECONDS]   # env: DOCS (100000), TOKENS (64), WINDOW (60), BUILD (build),
#                                 #      SERVER_FLAGS (extra server flags, e.g. "--block_cache_mb 2048"),
#                                 #      FRACTION (0.7: the share of the best QPS),
#                                 #      SAMPLES (a CSV path for every soak request)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$root/build}"
seconds="${1:-600}"
docs="${DOCS:-100000}"
tokens="${TOKENS:-64}"
work="$(mktemp -d)"
# shellcheck disable=SC2086
"$build/attnsearch-server" --data_dir "$work/data" --listen 127.0.0.1:0 \
  --port_file "$work/port" ${SERVER_FLAGS:-} 2> "$work/server.log" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  [[ -s "$work/port" ]] && break
  kill -0 "$pid" 2> /dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
addr="127.0.0.1:$(cat "$work/port")"
log="$work/data/collections/soak/store/LOG"
events() { grep -c "\"event\": \"$1\"" "$log" 2> /dev/null || true; }

# 1. Load, with a token run to create the collection.
"$build/attnsearch-bench" --benchmarks=e2e --server="$addr" --collection=soak --load="$docs" \
  --tokens="$tokens" --dim=128 --concurrency=1 --duration=1 \
  --out_dir="$work" --json="$work/load.jsonl" | grep -E "^loaded|^e2e: loading"

# 2. Settle: until RocksDB has no flush or compaction running for 10 s
#    (its LOG's events), at most 300 s.
quiet=0
for _ in $(seq 1 150); do
  if [[ "$(events flush_started)" == "$(events flush_finished)" &&
        "$(events compaction_started)" == "$(events compaction_finished)" ]]; then
    quiet=$((quiet + 1))
    ((quiet >= 5)) && break
  else
    quiet=0
  fi
  sleep 2
done
before=$(( $(events compaction_started) + $(events flush_started) ))
echo "settled: $(events flush_finished) flushes and $(events compaction_finished) compactions after the load"

# 3. The best closed-loop QPS, then the soak at 70% of it.
"$build/attnsearch-bench" --benchmarks=e2e --server="$addr" --collection=soak \
  --concurrency=2,4,8 --duration=15 \
  --soak_seconds="$seconds" --soak_fraction="${FRACTION:-0.7}" --soak_window="${WINDOW:-60}" --server_pid="$pid" ${SAMPLES:+--soak_samples="$SAMPLES"} \
  --out_dir="${OUT_DIR:-$root/bench/results}" --json="${JSON:-$root/bench/results/soak.jsonl}"
after=$(( $(events compaction_started) + $(events flush_started) ))
echo "RocksDB flushes and compactions started during the measurement: $((after - before))"
