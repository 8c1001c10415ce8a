#!/usr/bin/env bash
# The web console in headless Chromium (console_browser_test.py), against a
# real attnsearch-server that requires API keys and serves the JSON API and
# the console on an ephemeral loopback port. Saves the console's
# screenshots into OUT_DIR (console.png, console-attention.png).
#
#   console_browser_test.sh REPO_ROOT SERVER_BINARY OUT_DIR
set -euo pipefail
repo=$1
server=$2
out_dir=$3
python=/usr/bin/python3  # Debian's: the test needs only its standard library

work=$(mktemp -d)
source "$repo/tests/client/servers.sh"

write_key=console-write-key
read_key=console-read-key
printf '%s write\n%s read\n' "$write_key" "$read_key" > "$work/keys"
start_server data --api_keys "$work/keys" --http_listen 127.0.0.1:0 \
  --http_port_file "$work/data.http_port"

ATTNSEARCH_HTTP="127.0.0.1:$(cat "$work/data.http_port")" ATTNSEARCH_WRITE_KEY="$write_key" \
  ATTNSEARCH_READ_KEY="$read_key" "$python" "$repo/tests/client/console_browser_test.py" \
  "$out_dir" || { echo "--- server log" >&2; tail -20 "$work/data.log" >&2; exit 1; }

stop_server data
