# Sourced by the client tests: real attnsearch-server children on ephemeral
# loopback ports, killed when the test exits. Needs $server (the binary)
# and $work (a scratch folder); installs the EXIT trap, which also removes
# $work.
#
#   start_server NAME [FLAGS...]  # data in $work/NAME; returns once it serves
#   port_of NAME                  # its port
#   stop_server NAME              # SIGTERM, and it must exit with status 0
declare -A server_pids=()

cleanup_servers() {
  local pid
  for pid in "${server_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup_servers EXIT

start_server() {
  local name=$1
  shift
  "$server" --data_dir "$work/$name" --listen 127.0.0.1:0 --port_file "$work/$name.port" \
    --no_sync "$@" 2> "$work/$name.log" &
  server_pids[$name]=$!
  for _ in $(seq 300); do
    [[ -s "$work/$name.port" ]] && return 0
    kill -0 "${server_pids[$name]}" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "the server '$name' did not start" >&2
  exit 1
}

port_of() { cat "$work/$1.port"; }

stop_server() {
  kill -TERM "${server_pids[$1]}"
  wait "${server_pids[$1]}"
  unset "server_pids[$1]"
}
