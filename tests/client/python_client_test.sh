#!/usr/bin/env bash
# README's Python client, run as a user would: the stub-generation command
# and the example program are taken from README.md ("## Python client"),
# the stubs generated with protoc and grpc_python_plugin, and the example run
# with Debian's python3 (python3-grpcio) against a real attnsearch-server on
# an ephemeral loopback port. It must print both documents, the nearer first.
#
#   python_client_test.sh REPO_ROOT SERVER_BINARY
set -euo pipefail
repo=$1
server=$2
python=/usr/bin/python3  # Debian's, with python3-grpcio and python3-protobuf

work=$(mktemp -d)
source "$repo/tests/client/servers.sh"

# The section's first ```sh block holds the protoc command, its first
# ```python block the example.
section=$(awk '/^## Python client/{on=1; next} on && /^## /{exit} on' "$repo/README.md")
[[ -n "$section" ]] || { echo "README.md has no '## Python client' section" >&2; exit 1; }
block() {  # the first fenced block of language $1 in the section
  awk -v lang="$1" '$0 == "```" lang {on=1; next} on && /^```/{exit} on' <<<"$section"
}
generate=$(block sh)
example=$(block python)
[[ "$generate" == *protoc* ]] || { echo "no protoc command in the section" >&2; exit 1; }
[[ -n "$example" ]] || { echo "no python example in the section" >&2; exit 1; }
printf '%s\n' "$example" > "$work/search.py"
echo "example: $(wc -l < "$work/search.py") lines"

# The command runs from the repository root: give it one with the proto.
mkdir "$work/root"
ln -s "$repo/proto" "$work/root/proto"
(cd "$work/root" && eval "$generate")
[[ -f "$work/root/gen/attnsearch/v1/search_pb2_grpc.py" ]] || {
  echo "the command did not write gen/attnsearch/v1/search_pb2_grpc.py" >&2; exit 1; }

start_server data

out=$(cd "$work/root" && ATTNSEARCH="127.0.0.1:$(port_of data)" PYTHONPATH=gen \
        "$python" "$work/search.py")
printf '%s\n' "$out"
# Two hits, apple (the query's direction) first, scores decreasing.
mapfile -t lines <<<"$out"
[[ ${#lines[@]} -eq 2 ]] || { echo "expected 2 hits" >&2; exit 1; }
IFS=$'\t' read -r id1 score1 _ <<<"${lines[0]}"
IFS=$'\t' read -r id2 score2 _ <<<"${lines[1]}"
[[ "$id1" == apple && "$id2" == lime ]] || { echo "wrong order: $id1, $id2" >&2; exit 1; }
awk -v a="$score1" -v b="$score2" 'BEGIN { exit !(a > b && a > 0.9) }' ||
  { echo "scores not as expected: $score1, $score2" >&2; exit 1; }

stop_server data
echo "python client example: OK"
