#!/usr/bin/env bash
# The main job: installs dependencies, builds, turns this machine's manual
# pages into a corpus, starts attnsearch-server on a loopback port with a
# fresh data directory, loads the corpus with attnsearch-index (which trains
# the built-in encoder on it), asks questions by meaning with
# attnsearch-demo, then stops the server cleanly. With --serve it keeps the
# server running after the questions, prints the web console's URL and
# stops it on Ctrl-C.
#
#   bash scripts/demo.sh                       # the example questions
#   bash scripts/demo.sh --query "..." ...      # your own (attnsearch-demo flags)
#   bash scripts/demo.sh --serve [...]          # then keep serving the console
#                                              # (port: $ATTN_CONSOLE_PORT, else any free one)
set -euo pipefail
cd "$(dirname "$0")/.."
serve=0
if [[ "${1:-}" == "--serve" ]]; then
  serve=1
  shift
fi
bash scripts/install-deps.sh
# The corpus: the manual pages (sections 1 and 8) of this machine, with the
# packages the example questions are about.
corpus_packages=(manpages openssh-client rsync procps tar gzip grep findutils)
missing=()
for p in "${corpus_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
bash scripts/build.sh -DATTN_BUILD_TESTS=OFF
build_dir=${BUILD_DIR:-build}

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$build_dir"/attnsearch-mancorpus /usr/share/man/man1 /usr/share/man/man8 > "$work/man.jsonl"

"$build_dir"/attnsearch-server --data_dir "$work/data" --listen 127.0.0.1:0 \
  --port_file "$work/port" --http_listen "127.0.0.1:${ATTN_CONSOLE_PORT:-0}" \
  --http_port_file "$work/http_port" &
server_pid=$!
for _ in $(seq 300); do
  [[ -s "$work/port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "demo: the server failed to start" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$work/port" ]] || { echo "demo: the server did not start listening" >&2; exit 1; }
server="127.0.0.1:$(cat "$work/port")"

# Online load through UpsertStream; at the end the server trains the
# collection's encoder on the pages' text and encodes them.
# Exit status 4: done, with bad records reported and skipped.
status=0
"$build_dir"/attnsearch-index "$work/man.jsonl" --server "$server" --collection man \
  --checkpoint "$work/man.progress" --progress plain || status=$?
if ((status != 0 && status != 4)); then
  echo "demo: attnsearch-index failed (exit status $status)" >&2
  exit 1
fi

# Near-duplicate pages (a command's alpha, beta and GA manuals) stand for
# each other: a hit whose pooled vector has cosine >= 0.95 with a better
# hit's is left out.
diversify=(--max_similarity 0.95)
if (($# > 0)); then
  "$build_dir"/attnsearch-demo --server "$server" --collection man "${diversify[@]}" "$@"
else
  # Questions that do not name the command they are after; each expects one
  # of the pages that answer it in the top 5 (gcloud's scp pages copy files
  # to another computer securely too). The last three share no word with
  # their pages' NAME lines.
  "$build_dir"/attnsearch-demo --server "$server" --collection man --top_k 5 "${diversify[@]}" \
    --query "copy files to another computer securely" \
    --expect "scp.1|rsync.1|sftp.1|gcloud_compute_scp.1|gcloud_compute_copy-files.1|gcloud_compute_tpus_tpu-vm_scp.1|gcloud_alpha_compute_tpus_tpu-vm_scp.1" \
    --query "find text matching a pattern in files" \
    --expect "grep.1|egrep.1|fgrep.1|rgrep.1|zgrep.1|zipgrep.1|zstdgrep.1|git-grep.1|ptargrep.1" \
    --query "show which processes use the most memory" \
    --expect "top.1|ps.1|pmap.1|htop.1|smem.1|systemd-cgtop.1" \
    --query "compress a folder into an archive" --expect "tar.1|zip.1|gzip.1|gpgtar.1" \
    --query "connect to a server over an encrypted channel" --expect "ssh.1" \
    --query "log into another machine" --expect "ssh.1|slogin.1" \
    --query "show the kernel version" --expect "uname.1"
fi

if ((serve)); then
  echo "demo: the web console is at http://127.0.0.1:$(cat "$work/http_port")/ (gRPC at $server);" \
    "press Ctrl-C to stop the server"
  trap 'kill -TERM "$server_pid" 2>/dev/null || true' INT TERM
  # A trap ends a wait early: wait again until the server has stopped.
  set +e
  while :; do
    wait "$server_pid"
    status=$?
    kill -0 "$server_pid" 2>/dev/null || break
  done
  set -e
  trap - INT TERM
else
  kill -TERM "$server_pid"
  set +e
  wait "$server_pid"
  status=$?
  set -e
fi
server_pid=""
if ((status != 0)); then
  echo "demo: the server exited with status $status" >&2
  exit 1
fi
echo "demo: server stopped cleanly"
