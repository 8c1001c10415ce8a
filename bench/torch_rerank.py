#!/usr/bin/python3
"""PyTorch (eager) reference for attnsearch-bench's rerank benchmark.

Usage: torch_rerank.py INPUT_FILE   (written by attnsearch-bench; run it with
Debian's /usr/bin/python3, which has python3-torch)

Reads the exact inputs the C++ side used and times the attention score
computation, one query per call, with the given number of threads:

    S = Q @ D_cat.T                          (m x N; bf16 inputs when dtype is bf16)
    A = softmax over each document's columns of S / tau
    score_c = sum_i w_i * sum_j A_ij S_ij    (j over document c's columns)

Variants: "padded" gathers S into (m, C, max_n) with a mask and does one
softmax (vectorised eager), "loop" goes document by document; for bf16
inputs, "padded_f32" repeats "padded" in f32. Prints one JSON object on the
last line: times (us per query), the padded variant's scores, versions.
Input layout (little endian): int32 m, d, C, dtype (0 f32, 1 bf16), threads,
reserved; float32 tau, min_seconds; int32 rows[C]; float32 Q[m*d], w[m],
D[N*d].
"""
import json
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as e:  # reported by the C++ side as a note
    print(json.dumps({"error": "PyTorch/numpy not importable by %s: %s" % (sys.executable, e)}))
    sys.exit(0)


def main():
    raw = open(sys.argv[1], "rb").read()
    m, d, c, dtype, threads, _ = np.frombuffer(raw, dtype="<i4", count=6)
    tau, min_seconds = np.frombuffer(raw, dtype="<f4", count=2, offset=24)
    off = 32
    rows = np.frombuffer(raw, dtype="<i4", count=c, offset=off).astype(np.int64)
    off += 4 * c
    q = np.frombuffer(raw, dtype="<f4", count=m * d, offset=off).reshape(m, d)
    off += 4 * m * d
    w = np.frombuffer(raw, dtype="<f4", count=m, offset=off)
    off += 4 * m
    n = int(rows.sum())
    docs = np.frombuffer(raw, dtype="<f4", count=n * d, offset=off).reshape(n, d)

    torch.set_num_threads(int(threads))
    Q = torch.from_numpy(q.copy())
    W = torch.from_numpy(w.copy())
    D = torch.from_numpy(docs.copy())
    R = torch.from_numpy(rows)
    offsets = torch.cumsum(R, 0) - R
    max_n = int(R.max())
    ar = torch.arange(max_n)
    idx = (offsets[:, None] + ar[None, :]).clamp(max=n - 1)  # (C, max_n)
    mask = ar[None, :] < R[:, None]                           # (C, max_n)
    idx_flat = idx.reshape(-1)
    inv_tau = 1.0 / float(tau)

    def padded(Qx, Dx):
        s = (Qx @ Dx.T).float()                   # m x N
        sp = s.index_select(1, idx_flat).view(-1, c, max_n).masked_fill(~mask, 0.0)  # m x C x max_n
        logits = (sp * inv_tau).masked_fill(~mask, float("-inf"))
        a = torch.softmax(logits, dim=-1)
        return W @ (a * sp).sum(-1)               # C

    bounds = [(int(o), int(r)) for o, r in zip(offsets, R)]

    def loop(Qx, Dx):
        s = (Qx @ Dx.T).float()
        out = torch.empty(len(bounds))
        for k, (o, r) in enumerate(bounds):
            sk = s[:, o:o + r]
            out[k] = W @ (torch.softmax(sk * inv_tau, dim=1) * sk).sum(1)
        return out

    def timeit(fn, *args):
        for _ in range(5):
            fn(*args)
        times = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            fn(*args)
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1e6)
            if len(times) >= 20 and t1 - start >= float(min_seconds):
                break
        times.sort()
        return {"mean": sum(times) / len(times), "p50": times[(len(times) + 1) // 2 - 1],
                "iters": len(times)}

    result = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
              "dtype": "bf16" if dtype == 1 else "f32", "us_per_query": {}}
    with torch.inference_mode():
        if dtype == 1:
            Qb, Db = Q.bfloat16(), D.bfloat16()
            result["us_per_query"]["padded"] = timeit(padded, Qb, Db)
            result["us_per_query"]["loop"] = timeit(loop, Qb, Db)
            result["us_per_query"]["padded_f32"] = timeit(padded, Q, D)
            scores = padded(Qb, Db)
        else:
            result["us_per_query"]["padded"] = timeit(padded, Q, D)
            result["us_per_query"]["loop"] = timeit(loop, Q, D)
            scores = padded(Q, D)
    result["scores"] = [float(x) for x in scores]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
