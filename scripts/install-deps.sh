#!/usr/bin/env bash
# Installs the build and test dependencies from Debian 12's packages, and
# any further packages named as arguments (test.sh --sanitize adds clang).
set -euo pipefail
packages=(
  cmake g++ make pkg-config
  libfaiss-dev libopenblas-dev     # FAISS (CPU) and the BLAS it links
  libdnnl-dev ocl-icd-opencl-dev   # oneDNN (its CMake config requires OpenCL)
  librocksdb-dev                   # RocksDB
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev                      # abseil: Status, StrCat, time
  libcli11-dev                     # command-line flags
  nlohmann-json3-dev zlib1g-dev    # JSON lines, gzip input
  libsimdjson-dev                  # the indexer's fast JSON lines parser
  libisal-dev                      # ISA-L: fast gzip inflation of input files
  libxxhash-dev libutfcpp-dev      # the one checksum (XXH3) and UTF-8 validation
  libeigen3-dev                    # the encoder's truncated SVD (QR, eigensolver)
  libcpp-httplib-dev               # the metrics endpoint's HTTP server
  libgtest-dev                     # GoogleTest
  libicu-dev                       # tokenizer: normalisation, word breaks
  libstemmer-dev                   # Snowball stemmers for the built-in encoder
  wordnet-base                     # WordNet 3.0: word relations beyond the corpus (encoder)
  libxapian-dev                    # Xapian: the lexical (BM25) index
  libhnswlib-dev                   # hnswlib, the ann benchmark's peer (header-only)
  python3-xapian                   # Xapian BM25, the quality benchmark's peer
  python3-grpcio python3-protobuf  # the Python clients (README's, clients/python), run by the tests
  python3-pip python3-setuptools   # installing clients/python, by the tests
  python3-numpy                    # the README's numpy snippet for .npy input, run by the tests
)
packages+=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all packages present"
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
