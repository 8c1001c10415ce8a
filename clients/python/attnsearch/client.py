"""The attnsearch client: numpy arrays in, typed results out, over gRPC.

    with Client("127.0.0.1:50051") as c:
        c.create_collection("docs", dim=128)
        c.upsert("docs", [{"id": "a", "tokens": np.random.rand(12, 128)}])
        for hit in c.search("docs", tokens=np.random.rand(4, 128), top_k=5).hits:
            print(hit.id, hit.score)

Every method raises an attnsearch.errors.AttnsearchError subclass (one per
gRPC status code) with the server's message when a call fails, and
ValueError when an argument cannot be sent at all (e.g. a token matrix that
is not 2-D).
"""

import dataclasses
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from . import errors
from .v1 import search_pb2 as pb
from .v1 import search_pb2_grpc as rpc

_DTYPES = {"bf16": pb.TOKEN_DTYPE_BF16, "f32": pb.TOKEN_DTYPE_F32, "int8": pb.TOKEN_DTYPE_INT8,
           "": pb.TOKEN_DTYPE_UNSPECIFIED}
_MODES = {"attention": pb.RERANK_MODE_ATTENTION, "maxsim": pb.RERANK_MODE_MAXSIM,
          "none": pb.RERANK_MODE_NONE}
_RETRIEVALS = {"default": pb.RETRIEVAL_UNSPECIFIED, "semantic": pb.RETRIEVAL_SEMANTIC,
               "lexical": pb.RETRIEVAL_LEXICAL, "hybrid": pb.RETRIEVAL_HYBRID}


@dataclasses.dataclass
class TokenMatch:
    """For one query token, the document token it attended to most."""
    query_token: int
    document_token: int
    document_token_text: str
    weight: float        # attention weight of that document token
    contribution: float  # this query token's share of the score


@dataclasses.dataclass
class Hit:
    id: str
    score: float
    ann_score: float
    text: str = ""
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)
    matches: List[TokenMatch] = dataclasses.field(default_factory=list)  # with explain
    snippet: str = ""      # with explain, when text and spans are stored
    from_codes: bool = False
    # With attention_map: (query tokens x document tokens) float32 weights,
    # attention[i, j] query token i's weight on document token j; and the
    # document's token texts and (begin, end) byte spans when it stored them.
    attention: Optional[np.ndarray] = None
    token_texts: List[str] = dataclasses.field(default_factory=list)
    token_spans: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
    # Its BM25 score when the lexical generator found it (lexical, hybrid).
    lexical_score: float = 0.0


@dataclasses.dataclass
class SearchResult:
    hits: List[Hit]
    # Server stage times in microseconds: encode, ann, fetch, rerank, total, queue.
    timing: Dict[str, int]
    # Where the candidates came from: first_stage ("pooled", "centroids",
    # "fde"), how many were scored from the store, codes, previous codes, the
    # retrieval that ran ("semantic", "lexical", "hybrid") and how many only
    # BM25 found (lexical).
    sources: Dict[str, object]
    # A text query's token rows as words, with explain or attention_map:
    # TokenMatch.query_token and the attention maps' rows index it.
    query_token_texts: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Document:
    id: str
    text: str = ""
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)
    pooled: Optional[np.ndarray] = None  # (dim,) float32
    tokens: Optional[np.ndarray] = None  # (rows, dim) float32
    token_texts: List[str] = dataclasses.field(default_factory=list)
    token_spans: List[Tuple[int, int]] = dataclasses.field(default_factory=list)


def _matrix(array, name):
    """A Matrix message of a 2-D array, packed as little-endian float32."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array (rows x dim), got shape "
                         f"{np.shape(array)}")
    return pb.Matrix(rows=a.shape[0], cols=a.shape[1], data=a.astype("<f4").tobytes(),
                     encoding=pb.VALUE_ENCODING_F32)


def _strings(values, name):
    """A list of strings; a single string is refused rather than split into
    its characters (delete("docs", "ab") would delete "a" and "b")."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected a list of strings, got the single string {values!r}")
    return list(values)


def _vector(array, name):
    v = np.asarray(array, dtype=np.float32)
    if v.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {v.shape}")
    return v.tolist()


def _array_of(m):
    """A Matrix message as a float32 array (rows x cols)."""
    if m.rows == 0:
        return None
    if m.data:
        kind = {pb.VALUE_ENCODING_F32: "<f4", pb.VALUE_ENCODING_F16: "<f2"}.get(m.encoding)
        if kind is not None:
            a = np.frombuffer(m.data, dtype=kind).astype(np.float32)
        else:  # bf16: the upper half of binary32
            a = (np.frombuffer(m.data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.asarray(m.values, dtype=np.float32)
    return a.reshape(m.rows, m.cols)


def _attention_of(a):
    """An AttentionMap message as a (query tokens x document tokens) array."""
    if a.query_tokens == 0:
        return None
    return np.asarray(a.weights, dtype=np.float32).reshape(a.query_tokens, a.document_tokens)


def _document_message(doc, index):
    """A Document message from a Document or a dict with the same keys."""
    d = dataclasses.asdict(doc) if isinstance(doc, Document) else dict(doc)
    unknown = set(d) - {f.name for f in dataclasses.fields(Document)}
    if unknown:
        raise ValueError(f"documents[{index}]: unknown keys {sorted(unknown)}")
    if not d.get("id"):
        raise ValueError(f"documents[{index}].id: required")
    m = pb.Document(id=d["id"], text=d.get("text") or "", metadata=d.get("metadata") or {})
    if d.get("pooled") is not None:
        m.pooled.extend(_vector(d["pooled"], f"documents[{index}].pooled"))
    if d.get("tokens") is not None:
        m.tokens.CopyFrom(_matrix(d["tokens"], f"documents[{index}].tokens"))
    m.token_texts.extend(_strings(d.get("token_texts") or [], f"documents[{index}].token_texts"))
    for begin, end in d.get("token_spans") or []:
        m.token_spans.add(begin=begin, end=end)
    return m


class Client:
    """A connection to one attnsearch server.

    address: "host:port". api_key: sent as "authorization: Bearer KEY" when
    the server needs one. tls_ca: a PEM file of the CA that signed the
    server's certificate (TLS); None: plaintext. timeout: seconds per call
    (None: no deadline).
    """

    def __init__(self, address="127.0.0.1:50051", api_key=None, tls_ca=None, timeout=None):
        # No message size cap of the client's own (gRPC's default receive cap
        # is 4 MiB): the server's --max_message_mb bounds what it answers and
        # what it accepts, and says so.
        options = [("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1)]
        if tls_ca is not None:
            with open(tls_ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = rpc.SearchServiceStub(self._channel)
        self._metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _call(self, method, request):
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout,
                                               metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    # Collections.

    def create_collection(self, name, dim, *, token_dtype="", ann_spec="", numeric_fields=(),
                          token_codec=None, candidates_from=""):
        """Creates a collection; returns its CollectionInfo message.

        token_dtype: "bf16" (the server's default), "f32" or "int8".
        token_codec: None (rows), "residual", or a dict of TokenCodec fields
        (name, bits, centroids, train_after_documents, keep_full_precision).
        candidates_from: "" (pooled), "pooled", "centroids" or "fde".
        """
        if token_dtype not in _DTYPES:
            raise ValueError(f"token_dtype: one of {sorted(k for k in _DTYPES if k)}, not "
                             f"{token_dtype!r}")
        config = pb.CollectionConfig(dim=dim, token_dtype=_DTYPES[token_dtype], ann_spec=ann_spec,
                                     numeric_fields=_strings(numeric_fields, "numeric_fields"),
                                     candidates_from=candidates_from)
        if token_codec is not None:
            codec = {"name": token_codec} if isinstance(token_codec, str) else dict(token_codec)
            config.token_codec.CopyFrom(pb.TokenCodec(**codec))
        reply = self._call("CreateCollection", pb.CreateCollectionRequest(name=name, config=config))
        return reply.collection

    def get_collection(self, name):
        return self._call("GetCollection", pb.GetCollectionRequest(name=name)).collection

    def list_collections(self):
        return list(self._call("ListCollections", pb.ListCollectionsRequest()).collections)

    def drop_collection(self, name):
        self._call("DropCollection", pb.DropCollectionRequest(name=name))

    # Documents.

    def upsert(self, collection, documents: Iterable, batch_size=256, progress=False):
        """Writes documents (Document objects or dicts with its keys; tokens
        and pooled as numpy arrays) in batches of batch_size, each batch one
        atomic Upsert. Returns how many were upserted. progress: True prints
        a running count to stderr; a callable is called with the count after
        each batch. A failing batch raises: the batches before it are
        stored."""
        if batch_size < 1:
            raise ValueError("batch_size: must be at least 1")
        total = len(documents) if hasattr(documents, "__len__") else None
        done = 0
        batch = []

        def flush():
            nonlocal done
            reply = self._call("Upsert", pb.UpsertRequest(collection=collection, documents=batch))
            done += reply.upserted
            batch.clear()
            if callable(progress):
                progress(done)
            elif progress:
                bar = ""
                if total:
                    filled = int(30 * done / total)
                    bar = f"[{'#' * filled}{'.' * (30 - filled)}] "
                sys.stderr.write(f"\rupserted {bar}{done}" + (f"/{total}" if total else ""))
                sys.stderr.flush()

        for i, doc in enumerate(documents):
            batch.append(_document_message(doc, i))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        if progress is True:
            sys.stderr.write("\n")
        return done

    def get(self, collection, ids: Sequence[str], include_vectors=False):
        """The documents with these ids, in order, and the ids not found."""
        reply = self._call("Get", pb.GetRequest(collection=collection, ids=_strings(ids, "ids"),
                                                include_vectors=include_vectors))
        docs = [Document(id=d.id, text=d.text, metadata=dict(d.metadata),
                         pooled=np.asarray(d.pooled, dtype=np.float32) if d.pooled else None,
                         tokens=_array_of(d.tokens), token_texts=list(d.token_texts),
                         token_spans=[(s.begin, s.end) for s in d.token_spans])
                for d in reply.documents]
        return docs, list(reply.not_found_ids)

    def delete(self, collection, ids: Sequence[str]):
        """Deletes documents; returns (deleted count, ids not found)."""
        reply = self._call("Delete", pb.DeleteRequest(collection=collection,
                                                      ids=_strings(ids, "ids")))
        return reply.deleted, list(reply.not_found_ids)

    # Search.

    def search(self, collection, text=None, tokens=None, pooled=None, token_weights=None, *,
               top_k=10, candidates=0, rerank="attention", temperature=0.0, filter=None,
               ranges=None, ann_params="", include_text=False, include_metadata=False,
               explain=False, attention_map=False, highlight=("", ""), retrieval="default",
               fusion_weight=None, diversify=None):
        """Searches by text (the collection's built-in encoder) or by vectors
        (tokens: m x dim array; pooled: dim array; token_weights: m values).

        filter: {key: [values]}, every key must match one of its values.
        ranges: {key: {"gte"|"gt"|"lte"|"lt": number}} on numeric fields.
        rerank: "attention", "maxsim" or "none". attention_map: each hit's
        whole attention map as a numpy array (Hit.attention). retrieval:
        "semantic", "lexical", "hybrid" or "default" (hybrid for text,
        semantic for vectors); fusion_weight: the rerank score's share of a
        lexical or hybrid score, against BM25's (default 1). diversify:
        {"collapse_field": key, "max_per_value": n, "max_similarity": cosine}
        (any of them): at most n hits per value of a metadata key, no hit
        whose pooled vector is that similar to a better one's; the number
        left out is sources["diversified"]. Returns a SearchResult.
        """
        if (text is None) == (tokens is None and pooled is None):
            raise ValueError("query: give text, or tokens and/or pooled, not both or neither")
        if rerank not in _MODES:
            raise ValueError(f"rerank: one of {sorted(_MODES)}, not {rerank!r}")
        if retrieval not in _RETRIEVALS:
            raise ValueError(f"retrieval: one of {sorted(_RETRIEVALS)}, not {retrieval!r}")
        request = pb.SearchRequest(collection=collection, top_k=top_k, candidates=candidates,
                                   rerank=_MODES[rerank], temperature=temperature,
                                   ann_params=ann_params, include_text=include_text,
                                   include_metadata=include_metadata, explain=explain,
                                   attention_map=attention_map,
                                   highlight_pre=highlight[0], highlight_post=highlight[1],
                                   retrieval=_RETRIEVALS[retrieval])
        if fusion_weight is not None:
            request.fusion_weight = fusion_weight
        if diversify:
            request.diversify.CopyFrom(pb.Diversify(**diversify))
        if text is not None:
            request.text = text
        else:
            q = request.vectors
            if tokens is not None:
                q.tokens.CopyFrom(_matrix(tokens, "tokens"))
            if pooled is not None:
                q.pooled.extend(_vector(pooled, "pooled"))
            if token_weights is not None:
                q.token_weights.extend(_vector(token_weights, "token_weights"))
            q.SetInParent()
        for key, values in (filter or {}).items():
            request.filter.must.add(key=key, values=_strings(values, f"filter[{key!r}]"))
        for key, bounds in (ranges or {}).items():
            unknown = set(bounds) - {"gte", "gt", "lte", "lt"}
            if unknown:
                raise ValueError(f"ranges[{key!r}]: unknown bounds {sorted(unknown)}")
            request.filter.ranges.add(key=key, **bounds)
        reply = self._call("Search", request)
        hits = [Hit(id=h.id, score=h.score, ann_score=h.ann_score, text=h.text,
                    metadata=dict(h.metadata),
                    matches=[TokenMatch(m.query_token, m.document_token, m.document_token_text,
                                        m.weight, m.contribution) for m in h.matches],
                    snippet=h.snippet, from_codes=h.from_codes,
                    attention=_attention_of(h.attention),
                    token_texts=list(h.attention.document_token_texts),
                    token_spans=[(s.begin, s.end) for s in h.attention.document_token_spans],
                    lexical_score=h.lexical_score)
                for h in reply.hits]
        t = reply.timing
        timing = {"encode_us": t.encode_us, "ann_us": t.ann_us, "fetch_us": t.fetch_us,
                  "rerank_us": t.rerank_us, "total_us": t.total_us, "queue_us": t.queue_us}
        s = reply.sources
        sources = {"first_stage": s.first_stage, "store": s.store, "codes": s.codes,
                   "previous_codes": s.previous_codes, "retrieval": s.retrieval,
                   "lexical": s.lexical, "diversified": s.diversified}
        return SearchResult(hits=hits, timing=timing, sources=sources,
                            query_token_texts=list(reply.query_token_texts))

    # Maintenance.

    def train_encoder(self, collection, **params):
        """Trains the collection's built-in encoder (EncoderParams fields as
        keyword arguments); returns the TrainEncoderResponse."""
        request = pb.TrainEncoderRequest(collection=collection)
        if params:
            request.params.CopyFrom(pb.EncoderParams(**params))
        return self._call("TrainEncoder", request)

    def train_codec(self, collection):
        return self._call("TrainCodec", pb.TrainCodecRequest(collection=collection))

    def tune_index(self, collection, target_recall, k=0, sample=0):
        return self._call("TuneIndex", pb.TuneIndexRequest(collection=collection,
                                                           target_recall=target_recall, k=k,
                                                           sample=sample))
