#!/usr/bin/env bash
# Soak: a fresh attnsearch-server on a loopback port, DOCS synthetic documents
# loaded, the best closed-loop QPS measured (concurrency 2, 4, 8; 15 s each),
# then an open loop at 70% of it for SECONDS (default 600) judged per minute:
# no errors, server memory grows <= 5% after the first minute, p99 within 2x
# of the first minute's.
#
#   bench/run_soak.sh [SECONDS]   # env: DOCS (100000), TOKENS (64), WINDOW (60), BUILD (build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$root/build}"
seconds="${1:-600}"
docs="${DOCS:-100000}"
tokens="${TOKENS:-64}"
work="$(mktemp -d)"
"$build/attnsearch-server" --data_dir "$work/data" --listen 127.0.0.1:0 \
  --port_file "$work/port" 2> "$work/server.log" &
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
# The server re-executes itself once (OMP_WAIT_POLICY); the pid stays.
"$build/attnsearch-bench" --benchmarks=e2e --server="127.0.0.1:$(cat "$work/port")" \
  --collection=soak --load="$docs" --tokens="$tokens" --dim=128 \
  --concurrency=2,4,8 --duration=15 \
  --soak_seconds="$seconds" --soak_fraction=0.7 --soak_window="${WINDOW:-60}" --server_pid="$pid" \
  --out_dir="${OUT_DIR:-$root/bench/results}" --json="${JSON:-$root/bench/results/soak.jsonl}"
