#!/usr/bin/env bash
# The main job: installs dependencies, builds, starts attnsearch-server on a
# loopback port with a fresh data directory, loads generated documents and
# runs queries with attnsearch-demo, then stops the server cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DATTN_BUILD_TESTS=OFF
build_dir=${BUILD_DIR:-build}

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$build_dir"/attnsearch-server --data_dir "$work/data" --listen 127.0.0.1:0 \
  --port_file "$work/port" &
server_pid=$!
for _ in $(seq 300); do
  [[ -s "$work/port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "demo: the server failed to start" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$work/port" ]] || { echo "demo: the server did not start listening" >&2; exit 1; }

"$build_dir"/attnsearch-demo --server "127.0.0.1:$(cat "$work/port")" "$@"

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
echo "demo: server stopped cleanly"
