#!/usr/bin/python3
"""FAISS's own IndexHNSWFlat on the vectors `attnsearch-bench --benchmarks=ann
--dump_dir=DIR` wrote: the reference for our AnnIndex's per-request graph
search (same M, efConstruction, efSearch sweep, one query per call, 1 thread).

Usage: faiss_hnsw_reference.py DIR [M=32] [efConstruction=80] [k=10]
Needs Debian's python3-faiss (run with /usr/bin/python3).
"""
import sys
import time

import faiss
import numpy as np


def fvecs(path):
    a = np.fromfile(path, dtype="<i4")
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view("<f4").copy()


def main():
    folder = sys.argv[1]
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    efc = int(sys.argv[3]) if len(sys.argv) > 3 else 80
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    xb, xq = fvecs(folder + "/base.fvecs"), fvecs(folder + "/query.fvecs")
    d = xb.shape[1]
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    _, truth = flat.search(xq, k)
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    t0 = time.perf_counter()
    index.add(xb)
    print("faiss %s IndexHNSWFlat M=%d efC=%d: build %.2f s (%d threads), %d x %d" %
          (faiss.__version__, m, efc, time.perf_counter() - t0, faiss.omp_get_max_threads(),
           xb.shape[0], d))
    faiss.omp_set_num_threads(1)
    print("efSearch  recall@%d  QPS (1 thread, one query per call)" % k)
    for ef in (16, 32, 64, 128, 256):
        index.hnsw.efSearch = ef
        for q in xq[:20]:
            index.search(q[None, :], k)
        ids = np.empty((len(xq), k), dtype=np.int64)
        t0 = time.perf_counter()
        for j, q in enumerate(xq):
            ids[j] = index.search(q[None, :], k)[1][0]
        secs = time.perf_counter() - t0
        recall = np.mean([len(set(ids[j]) & set(truth[j])) / k for j in range(len(xq))])
        print("%8d  %9.4f  %8.0f" % (ef, recall, len(xq) / secs))


if __name__ == "__main__":
    main()
