#!/usr/bin/env bash
# Installs the reference peers the benchmarks run next to attnsearch, all
# from Debian's packages: PyTorch (rerank), FAISS's Python module (ann
# cross-check), numpy. They run under Debian's /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
  python3-numpy python3-torch python3-faiss python3-xapian
