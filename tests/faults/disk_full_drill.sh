#!/usr/bin/env bash
# Disk-full drill: a real full disk under a running attnsearch-server.
#
#   sudo tests/faults/disk_full_drill.sh     # env: BUILD (build), SIFT (../shared/data/siftsmall)
#
# Needs root (it mounts a 256 MiB tmpfs for the server's data directory).
# Loading siftsmall's 10,000 vectors with attnsearch-index:
#   1. the disk filled to 24 MiB free, the server keeping a 16 MiB reserve
#      (--min_free_disk_mb 16): the load stops with RESOURCE_EXHAUSTED "disk
#      nearly full" before RocksDB ever sees ENOSPC;
#   2. the server restarted without a reserve (--min_free_disk_mb 0) and the
#      disk filled to 512 KiB free: the resumed load stops, either with
#      RESOURCE_EXHAUSTED "No space left on device" from RocksDB's write-ahead
#      log, or because the server aborted: Debian's RocksDB 7.8 is built with
#      assertions, and one of them fires on some ENOSPC paths (which is why
#      the reserve exists). Either way, after a restart with space back,
#      every document the indexer saw acknowledged is there;
#   3. the filler removed: the same command resumes from its checkpoint and
#      finishes; the collection holds exactly 10,000 documents, before and
#      after a restart.
# Between the phases the acknowledged count never drops. Exits non-zero on
# any deviation.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD:-$root/build}"
sift="${SIFT:-$root/../shared/data/siftsmall}"
[[ -f "$sift/siftsmall_base.fvecs" ]] && base="$sift/siftsmall_base.fvecs" || base="$sift/base.fvecs"
work="$(mktemp -d)"
mnt="$work/disk"
mkdir -p "$mnt"
mount -t tmpfs -o size=256m tmpfs "$mnt"
pid=""
cleanup() {
  [[ -n "$pid" ]] && { kill -TERM "$pid" 2> /dev/null || true; wait "$pid" 2> /dev/null || true; }
  umount "$mnt" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
[[ -n "${KEEP_LOG:-}" ]] && trap 'cp "$work/server.log" "$KEEP_LOG"; cleanup' EXIT
fail() { echo "DRILL FAILED: $*"; exit 1; }
aborted=""

start_server() {  # RESERVE_MB
  rm -f "$work/port"
  "$build/attnsearch-server" --data_dir "$mnt/data" --listen 127.0.0.1:0 \
    --port_file "$work/port" --min_free_disk_mb "$1" 2>> "$work/server.log" &
  pid=$!
  for _ in $(seq 1 300); do
    [[ -s "$work/port" ]] && break
    kill -0 "$pid" 2> /dev/null || { cat "$work/server.log"; fail "the server did not start"; }
    sleep 0.1
  done
  addr="127.0.0.1:$(cat "$work/port")"
}
count() { "$build/attnsearch-admin" collections --server "$addr" | sed -n 's/^sift documents=\([0-9]*\).*/\1/p'; }
index() {
  "$build/attnsearch-index" "$base" --server "$addr" --collection sift --ann_spec "HNSW32,SQfp16" \
    --batch 250 --checkpoint "$work/checkpoint" --progress off --retries 0
}

fill_to() {  # leave MB free
  local free_mb
  free_mb=$(df --output=avail -BM "$mnt" | tail -1 | tr -dc 0-9)
  if ((free_mb > $1)); then
    dd if=/dev/zero of="$mnt/filler.$1" bs=1M count=$((free_mb - $1)) status=none || true
  fi
  echo "disk: $(df -h --output=size,used,avail "$mnt" | tail -1)"
}
stop_server() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }
expect_failed_load() {  # LOG PATTERN
  set +e
  index > "$1" 2>&1
  local rc=$?
  set -e
  tail -1 "$1" | cut -c1-400
  ((rc != 0)) || fail "the load succeeded on a full disk"
  grep -q "$2" "$1" || fail "no '$2' error was reported"
}

echo "== 1. a 16 MiB reserve, 24 MiB free"
start_server 16
fill_to 24
expect_failed_load "$work/index1.log" "disk nearly full"
n1=$(count)
echo "acknowledged: $n1 documents; the server answers"

echo "== 2. no reserve, 512 KiB free"
stop_server
start_server 0
[[ "$(count)" == "$n1" ]] || fail "the restart changed the count"
fill_to 1
free_kb=$(df --output=avail -BK "$mnt" | tail -1 | tr -dc 0-9)
((free_kb > 512)) && dd if=/dev/zero of="$mnt/filler.kb" bs=1K count=$((free_kb - 512)) status=none
expect_failed_load "$work/index2.log" "No space left on device\|failed to connect\|Socket closed\|UNAVAILABLE"
acked=$(sed -n 's/.*(\([0-9]*\) documents from earlier messages are stored).*/\1/p' "$work/index2.log" | tail -1)
acked=$((n1 + ${acked:-0}))
if kill -0 "$pid" 2> /dev/null; then
  n2=$(count)
  echo "the server answers: $n2 documents"
  stop_server
else
  wait "$pid" || true
  pid=""
  echo "the server aborted: $(grep -o 'Assertion.*' "$work/server.log" | tail -1)"
  aborted=1
fi
rm -f "$mnt"/filler.*
start_server 16
n2=$(count)
((n2 >= acked)) || fail "acknowledged documents were lost: $n2 < $acked"
echo "after a restart with space back: $n2 documents (at least the $acked acknowledged)"

echo "== 3. the same command resumes and finishes"
index > "$work/index3.log" 2>&1 || { cat "$work/index3.log"; fail "the resumed load failed"; }
tail -1 "$work/index3.log"
after=$(count)
[[ "$after" == 10000 ]] || fail "expected 10000 documents, found $after"
stop_server
start_server 16
restarted=$(count)
[[ "$restarted" == 10000 ]] || fail "expected 10000 documents after the restart, found $restarted"
echo "store reopens after write errors: $(grep -c "reopened after a write error" "$work/server.log" || true)"
echo "DRILL PASSED: $n1 documents acknowledged at the reserve; $n2 after ENOSPC without a reserve${aborted:+ (the server aborted in RocksDB)}; 10000 after resuming and after a restart"
