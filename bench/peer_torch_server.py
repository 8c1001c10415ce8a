#!/usr/bin/env python3
"""An in-memory Python peer of attnsearch-server, for `attnsearch-bench
--benchmarks=e2e --server=...`: the same gRPC contract (proto/), the same
math, the way a user would write it with Debian's grpcio, FAISS and PyTorch.

- CreateCollection / DropCollection / GetCollection / Upsert / UpsertStream /
  Search (vector queries only); anything else is UNIMPLEMENTED.
- Documents live in memory: the pooled vector in a FAISS HNSW graph
  (IndexHNSWFlat, M = 32, inner product, efSearch = max(64, candidates)),
  each document's token matrix as a bf16 torch tensor (unit rows).
- Search: the pooled query's `candidates` nearest by FAISS, their token
  matrices padded into one batch, S = D·qᵀ (bf16 matmul, f32 result),
  softmax over each document's tokens at τ (pads masked), score =
  Σ_i w_i Σ_j A_ij S_ij (MAXSIM: Σ_i w_i max_j S_ij), top_k; the response's
  timing has the ANN, fetch (gather and pad) and rerank stages.

Run (Debian's /usr/bin/python3, with python3-grpcio, python3-protobuf,
python3-torch, python3-faiss; protoc and grpc_python_plugin generate the
stubs into a temporary folder):

    /usr/bin/python3 bench/peer_torch_server.py [--listen 127.0.0.1:0] [--threads 2]

It prints "peer listening on HOST:PORT" once it serves.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import faiss
import grpc
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_stubs():
    out = tempfile.mkdtemp(prefix="attn_peer_")
    plugin = shutil.which("grpc_python_plugin")
    if plugin is None or shutil.which("protoc") is None:
        sys.exit("peer: needs protoc and grpc_python_plugin (protobuf-compiler, "
                 "protobuf-compiler-grpc)")
    subprocess.check_call([
        "protoc", "-I", os.path.join(REPO, "proto"), "--python_out=" + out,
        "--grpc_python_out=" + out, "--plugin=protoc-gen-grpc_python=" + plugin,
        os.path.join(REPO, "proto", "attnsearch", "v1", "search.proto")])
    sys.path.insert(0, out)
    from attnsearch.v1 import search_pb2, search_pb2_grpc  # noqa: E402
    return search_pb2, search_pb2_grpc


pb, rpc = load_stubs()


def matrix(m, dim):
    """A Matrix message as an (rows, dim) float32 array."""
    if m.rows == 0:
        return None
    if len(m.data) > 0:
        if m.encoding == pb.VALUE_ENCODING_BF16:
            u = np.frombuffer(m.data, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        elif m.encoding == pb.VALUE_ENCODING_F16:
            a = np.frombuffer(m.data, dtype="<f2").astype(np.float32)
        else:
            a = np.frombuffer(m.data, dtype="<f4")
    else:
        a = np.asarray(m.values, dtype=np.float32)
    return a.reshape(m.rows, dim)


def unit_rows(a):
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)


class Collection:
    def __init__(self, name, config):
        self.name, self.config, self.dim = name, config, config.dim
        self.index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
        self.ids, self.tokens = [], []
        self.lock = threading.Lock()

    def add(self, docs):
        pooled = np.zeros((len(docs), self.dim), dtype=np.float32)
        toks = []
        for i, d in enumerate(docs):
            t = matrix(d.tokens, self.dim)
            t = unit_rows(t if t is not None else np.asarray([d.pooled], dtype=np.float32))
            p = np.asarray(d.pooled, dtype=np.float32) if len(d.pooled) else t.mean(axis=0)
            pooled[i] = p / max(np.linalg.norm(p), 1e-30)
            toks.append(torch.from_numpy(t).to(torch.bfloat16))
        with self.lock:
            self.index.add(pooled)
            self.ids.extend(d.id for d in docs)
            self.tokens.extend(toks)
        return len(docs)

    def search(self, req):
        t0 = time.perf_counter()
        q = req.vectors
        qt = matrix(q.tokens, self.dim)
        if qt is None:
            qt = np.asarray([q.pooled], dtype=np.float32)
        qt = unit_rows(qt)
        w = np.asarray(q.token_weights, dtype=np.float32) if len(q.token_weights) else \
            np.full(len(qt), 1.0 / len(qt), dtype=np.float32)
        pooled = np.asarray(q.pooled, dtype=np.float32) if len(q.pooled) else qt.mean(axis=0)
        pooled = (pooled / max(np.linalg.norm(pooled), 1e-30)).reshape(1, -1)
        k = max(req.top_k, req.candidates or max(100, req.top_k))
        self.index.hnsw.efSearch = max(64, k)
        _, labels = self.index.search(pooled, k)
        labels = [int(x) for x in labels[0] if x >= 0]
        t1 = time.perf_counter()
        docs = [self.tokens[x] for x in labels]
        lengths = torch.tensor([d.shape[0] for d in docs])
        batch = torch.nn.utils.rnn.pad_sequence(docs, batch_first=True)  # C x n x d, bf16
        t2 = time.perf_counter()
        qb = torch.from_numpy(qt).to(torch.bfloat16)
        s = torch.matmul(batch, qb.T).float()  # C x n x m
        pad = torch.arange(batch.shape[1])[None, :] >= lengths[:, None]  # C x n
        s = s.masked_fill(pad[:, :, None], float("-inf"))
        wt = torch.from_numpy(w)
        if req.rerank == pb.RERANK_MODE_MAXSIM:
            per_token = s.max(dim=1).values
        else:
            tau = req.temperature if req.temperature > 0 else 0.1
            a = torch.softmax(s / tau, dim=1)
            per_token = (a * s.masked_fill(pad[:, :, None], 0.0)).sum(dim=1)  # C x m
        scores = (per_token * wt[None, :]).sum(dim=1)
        top = torch.topk(scores, min(req.top_k, len(labels)))
        t3 = time.perf_counter()
        resp = pb.SearchResponse()
        for score, i in zip(top.values.tolist(), top.indices.tolist()):
            resp.hits.add(id=self.ids[labels[i]], score=score)
        us = lambda a, b: int((b - a) * 1e6)
        resp.timing.ann_us, resp.timing.fetch_us = us(t0, t1), us(t1, t2)
        resp.timing.rerank_us, resp.timing.total_us = us(t2, t3), us(t0, time.perf_counter())
        return resp


class Service(rpc.SearchServiceServicer):
    def __init__(self):
        self.collections, self.lock = {}, threading.Lock()

    def get(self, name, context):
        c = self.collections.get(name)
        if c is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"collection '{name}' not found")
        return c

    def CreateCollection(self, request, context):
        with self.lock:
            if request.name in self.collections:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, request.name)
            self.collections[request.name] = Collection(request.name, request.config)
        return pb.CreateCollectionResponse()

    def DropCollection(self, request, context):
        with self.lock:
            if self.collections.pop(request.name, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, request.name)
        return pb.DropCollectionResponse()

    def GetCollection(self, request, context):
        c = self.get(request.name, context)
        info = pb.CollectionInfo(name=c.name, config=c.config, num_documents=len(c.ids))
        return pb.GetCollectionResponse(collection=info)

    def Upsert(self, request, context):
        return pb.UpsertResponse(upserted=self.get(request.collection, context).add(request.documents))

    def UpsertStream(self, request_iterator, context):
        n = 0
        for request in request_iterator:
            n += self.get(request.collection, context).add(request.documents)
        return pb.UpsertResponse(upserted=n)

    def Search(self, request, context):
        if not request.HasField("vectors"):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "the peer searches vectors only")
        return self.get(request.collection, context).search(request)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    ap.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 1 << 30)])
    rpc.add_SearchServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port(args.listen)
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"peer listening on {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
