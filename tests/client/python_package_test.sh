#!/usr/bin/env bash
# The Python client package (clients/python), as a user installs it: built
# and installed by Debian's pip from the source tree (its stubs generated
# from the proto by setup.py), then its unittest suite run with Debian's
# python3 against a real attnsearch-server on an ephemeral loopback port
# that requires API keys, and one that serves TLS.
#
#   python_package_test.sh REPO_ROOT SERVER_BINARY
set -euo pipefail
repo=$1
server=$2
python=/usr/bin/python3  # Debian's, with python3-grpcio, -protobuf, -numpy, -pip

work=$(mktemp -d)
source "$repo/tests/client/servers.sh"

# pip builds in a copy of the package's folder: give it the repository's
# layout (the proto two levels up), as a checkout has.
mkdir -p "$work/src/clients"
cp -r "$repo/clients/python" "$work/src/clients/python"
# Leftovers of a build in the source tree would be installed in place of it.
rm -rf "$work/src/clients/python/build" "$work/src/clients/python/"*.egg-info
ln -s "$repo/proto" "$work/src/proto"
PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --no-deps --no-build-isolation --no-cache-dir \
  --target "$work/site" "$work/src/clients/python"
[[ -f "$work/site/attnsearch/v1/search_pb2_grpc.py" ]] || {
  echo "the installed package has no generated stubs" >&2; exit 1; }

write_key=python-client-write-key
read_key=python-client-read-key
printf '%s write\n%s read\n' "$write_key" "$read_key" > "$work/keys"
start_server data --api_keys "$work/keys"
# A second server serving TLS with the suite's self-signed certificate.
testdata="$repo/tests/server/testdata"
start_server tls_data --tls_cert "$testdata/server.crt" --tls_key "$testdata/server.key"

# Run from an empty folder so that only the installed package is imported.
mkdir "$work/run"
(cd "$work/run" && PYTHONPATH="$work/site" ATTNSEARCH="127.0.0.1:$(port_of data)" \
   ATTNSEARCH_WRITE_KEY="$write_key" ATTNSEARCH_READ_KEY="$read_key" \
   ATTNSEARCH_TLS="localhost:$(port_of tls_data)" ATTNSEARCH_TLS_CA="$testdata/server.crt" \
   "$python" "$repo/clients/python/tests/test_client.py" -v 2>&1) || {
  echo "--- server log" >&2; tail -20 "$work/data.log" >&2; exit 1; }

stop_server data
stop_server tls_data
echo "python package: OK"
