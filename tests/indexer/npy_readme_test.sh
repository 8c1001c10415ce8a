#!/usr/bin/env bash
# Runs indexer/README.md's numpy snippet as a user would (Debian's python3
# with numpy), on seeded documents defined here, then loads the folder it
# wrote with attnsearch-index and checks what was stored.
# Usage: npy_readme_test.sh REPO_ROOT ATTNSEARCH_INDEX
set -euo pipefail
root=$1
index=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# The snippet: the first python block of the README's npy section.
awk '/numpy \(the suite runs this snippet/{found=1} found && /```python/{on=1; next}
     on && /```/{exit} on {sub(/^  /, ""); print}' "$root/indexer/README.md" > snippet.py
test -s snippet.py || { echo "no snippet found in indexer/README.md"; exit 1; }
cat > run.py <<'PY'
import numpy as np
rng = np.random.default_rng(3)
token_matrices = [rng.standard_normal((int(n), 16)) for n in rng.integers(1, 9, size=50)]
ids = [f"doc-{i}" for i in range(50)]
pooled_vectors = [m.mean(axis=0) for m in token_matrices]
texts = [f"text of document {i}" for i in range(50)]
exec(open("snippet.py").read())
PY
/usr/bin/python3 run.py
"$index" corpus --data_dir data --collection c --progress off 2> index.log || {
  cat index.log; exit 1; }
grep -q "done: 50 documents written, 0 bad records" index.log || { cat index.log; exit 1; }
grep -q "(npy) into new collection 'c' (dim 16, the arrays' row length)" index.log ||
  { cat index.log; exit 1; }
echo "npy_readme_test: the README's snippet wrote a folder that loaded 50 documents"
