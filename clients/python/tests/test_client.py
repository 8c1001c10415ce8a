"""The attnsearch client against a real server.

ATTNSEARCH names the server (host:port); ATTNSEARCH_WRITE_KEY and
ATTNSEARCH_READ_KEY its API keys; ATTNSEARCH_TLS and ATTNSEARCH_TLS_CA a
server serving TLS and the CA file to trust
(tests/client/python_package_test.sh starts both). Results are checked against a numpy reference of the reranker's
MAXSIM and ATTENTION scores over the same seeded documents.
"""

import os
import unittest

import numpy as np

import attnsearch
from attnsearch import Client, Document, errors

ADDRESS = os.environ.get("ATTNSEARCH", "127.0.0.1:50051")
WRITE_KEY = os.environ.get("ATTNSEARCH_WRITE_KEY")
READ_KEY = os.environ.get("ATTNSEARCH_READ_KEY")
DIM = 16


def unit_rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def reference_attention(query, tokens, mode, temperature=0.1):
    """The m x n weights: softmax rows (ATTENTION) or one-hot at the best."""
    s = unit_rows(query) @ unit_rows(tokens).T
    if mode == "maxsim":
        out = np.zeros_like(s)
        out[np.arange(len(s)), s.argmax(axis=1)] = 1.0
        return out
    e = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
    return e / e.sum(axis=1, keepdims=True)


def reference_scores(query, docs, mode, temperature=0.1):
    """Score of each document: sum_i w_i * (max_j S_ij | softmax-weighted S_ij),
    w_i = 1/m, rows normalised (the server's math, in float64)."""
    q = unit_rows(query)
    w = np.full(len(q), 1.0 / len(q))
    out = {}
    for d in docs:
        s = q @ unit_rows(d["tokens"]).T
        if mode == "maxsim":
            per = s.max(axis=1)
        else:
            e = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
            per = (e * s).sum(axis=1) / e.sum(axis=1)
        out[d["id"]] = float(w @ per)
    return out


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = Client(ADDRESS, api_key=WRITE_KEY, timeout=30)
        rng = np.random.default_rng(11)
        cls.docs = [{"id": f"d{i}", "text": f"document {i}",
                     "metadata": {"colour": ["red", "green", "blue"][i % 3]},
                     "tokens": rng.standard_normal((1 + i % 7, DIM))} for i in range(200)]
        cls.client.create_collection("pyclient", DIM, token_dtype="f32", ann_spec="Flat")
        counts = []
        cls.upserted = cls.client.upsert("pyclient", cls.docs, batch_size=64,
                                         progress=counts.append)
        cls.progress = counts
        cls.rng = rng
        cls.deleted = cls.client.delete("pyclient", ["d1", "ghost"])

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_upsert_batches_and_reports_progress(self):
        self.assertEqual(self.upserted, 200)
        self.assertEqual(self.progress, [64, 128, 192, 200])
        info = self.client.get_collection("pyclient")
        self.assertIn(info.num_documents, (198, 199))  # test_get may have deleted d2

    def test_search_matches_the_reference_reranker(self):
        query = self.rng.standard_normal((3, DIM))
        for mode in ("maxsim", "attention"):
            with self.subTest(mode=mode):
                result = self.client.search("pyclient", tokens=query, top_k=10, candidates=200,
                                            rerank=mode, filter={"colour": ["red", "green"]},
                                            include_text=True, include_metadata=True)
                # d1 is deleted; d2 (perhaps deleted too) is blue.
                live = [d for d in self.docs
                        if d["metadata"]["colour"] != "blue" and d["id"] != "d1"]
                ref = reference_scores(query, live, mode)
                expected = sorted(ref, key=lambda k: -ref[k])[:10]
                self.assertEqual([h.id for h in result.hits], expected)
                for h in result.hits:
                    self.assertAlmostEqual(h.score, ref[h.id], places=4)
                    self.assertEqual(h.text, f"document {h.id[1:]}")
                    self.assertIn(h.metadata["colour"], ("red", "green"))
                self.assertEqual(result.sources["first_stage"], "pooled")
                self.assertGreater(result.timing["total_us"], 0)

    def test_explain_names_the_best_document_token(self):
        doc = self.docs[10]
        result = self.client.search("pyclient", tokens=doc["tokens"][:2], top_k=1, candidates=200,
                                    rerank="maxsim", explain=True)
        hit = result.hits[0]
        self.assertEqual(hit.id, "d10")
        self.assertEqual([m.query_token for m in hit.matches], [0, 1])
        self.assertEqual([m.document_token for m in hit.matches], [0, 1])
        self.assertIsInstance(hit.matches[0], attnsearch.TokenMatch)

    def test_attention_maps_match_the_reference(self):
        query = self.rng.standard_normal((4, DIM))
        by_id = {d["id"]: d for d in self.docs}
        for mode in ("attention", "maxsim"):
            with self.subTest(mode=mode):
                result = self.client.search("pyclient", tokens=query, top_k=3, candidates=200,
                                            rerank=mode, attention_map=True)
                for hit in result.hits:
                    want = reference_attention(query, by_id[hit.id]["tokens"], mode)
                    self.assertEqual(hit.attention.shape, want.shape)
                    np.testing.assert_allclose(hit.attention, want, atol=1e-4)
        with self.assertRaises(errors.InvalidArgument) as e:
            self.client.search("pyclient", tokens=query, top_k=3, rerank="none",
                               attention_map=True)
        self.assertIn("attention_map", e.exception.message)

    def test_text_search_names_the_query_tokens(self):
        texts = ["The wind turbine feeds the grid.", "Bread rises in a warm oven.",
                 "A sailor drops the anchor in the harbor.", "Solar panels charge a battery."]
        self.client.create_collection("pytext", 256)
        self.client.upsert("pytext", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])
        self.client.train_encoder("pytext")
        result = self.client.search("pytext", text="wind turbine", top_k=1, explain=True,
                                    attention_map=True)
        self.assertEqual(result.query_token_texts, ["wind", "turbine"])
        hit = result.hits[0]
        self.assertEqual(hit.id, "t0")
        self.assertEqual(hit.attention.shape[0], 2)
        self.assertEqual([m.query_token for m in hit.matches], [0, 1])
        self.assertEqual([m.document_token_text for m in hit.matches], ["wind", "turbine"])
        self.assertEqual(result.sources["retrieval"], "hybrid")
        lexical = self.client.search("pytext", text="turbine", top_k=3, retrieval="lexical")
        self.assertEqual([h.id for h in lexical.hits], ["t0"])
        self.assertGreater(lexical.hits[0].lexical_score, 0)
        with self.assertRaises(errors.InvalidArgument) as e:
            self.client.search("pytext", text="turbine", top_k=3, fusion_weight=1.5)
        self.assertIn("fusion_weight", e.exception.message)
        # Diversification: one hit per value of a metadata key.
        self.client.upsert("pytext", [
            {"id": f"w{i}", "text": f"The wind turbine number {i}.", "metadata": {"kind": "wind"}}
            for i in range(3)])
        ranking = [h.id for h in self.client.search("pytext", text="wind turbine", top_k=7).hits]
        expected, left_out = [], 0
        for i in ranking:  # the oracle: the ranking walked best first
            if len(expected) == 3:
                break
            if i.startswith("w") and any(e.startswith("w") for e in expected):
                left_out += 1
                continue
            expected.append(i)
        one = self.client.search("pytext", text="wind turbine", top_k=3,
                                 diversify={"collapse_field": "kind"})
        self.assertEqual([h.id for h in one.hits], expected)
        self.assertEqual(one.sources["diversified"], left_out)
        self.assertIn("t0", expected)
        with self.assertRaises(errors.InvalidArgument) as e:
            self.client.search("pytext", text="wind", top_k=3, diversify={"max_similarity": 2})
        self.assertIn("diversify.max_similarity", e.exception.message)
        # Vector queries have no words.
        vectors = self.client.search("pyclient", tokens=self.rng.standard_normal((2, DIM)),
                                     top_k=1, explain=True)
        self.assertEqual(vectors.query_token_texts, [])

    def test_get_returns_numpy_vectors_and_delete_removes(self):
        found, missing = self.client.get("pyclient", ["d5", "nope"], include_vectors=True)
        self.assertEqual(missing, ["nope"])
        self.assertIsInstance(found[0], Document)
        np.testing.assert_allclose(found[0].tokens, unit_rows(self.docs[5]["tokens"]), atol=1e-6)
        self.assertEqual(found[0].pooled.shape, (DIM,))
        self.assertEqual(self.deleted, (1, ["ghost"]))  # d1, in setUpClass
        self.assertEqual(self.client.delete("pyclient", ["d2"]), (1, []))
        for gone in ("d1", "d2"):
            hits = self.client.search("pyclient", tokens=self.docs[int(gone[1:])]["tokens"],
                                      top_k=5, candidates=200).hits
            self.assertNotIn(gone, [h.id for h in hits])
        self.assertEqual(self.client.get("pyclient", ["d1", "d2"])[1], ["d1", "d2"])

    def test_replies_over_four_mib_arrive(self):
        # gRPC's default receive cap is 4 MiB; the server's --max_message_mb
        # (64) is the bound.
        text = "wing " * 300000  # 1.5 MB a document
        ids = [f"big{i}" for i in range(4)]
        for i in ids:
            self.client.upsert("pyclient", [{"id": i, "text": text, "pooled": np.ones(DIM)}])
        docs, missing = self.client.get("pyclient", ids)
        self.assertEqual(missing, [])
        self.assertEqual([len(d.text) for d in docs], [len(text)] * 4)
        self.assertEqual(self.client.delete("pyclient", ids), (4, []))

    def test_errors_have_a_class_per_status(self):
        with self.assertRaises(errors.InvalidArgument) as e:
            self.client.search("pyclient", tokens=np.ones((2, DIM + 1)), top_k=3)
        self.assertIn("tokens", e.exception.message)
        with self.assertRaises(errors.NotFound):
            self.client.get_collection("no_such_collection")
        with self.assertRaises(errors.AlreadyExists):
            self.client.create_collection("pyclient", DIM)
        with self.assertRaises(ValueError):
            self.client.search("pyclient", tokens=np.ones((2, 2, DIM)))
        with self.assertRaises(ValueError):
            self.client.upsert("pyclient", [{"id": "x", "tokenz": np.ones((1, DIM))}])
        with self.assertRaises(ValueError):  # a 1-D matrix is no matrix
            self.client.search("pyclient", tokens=np.ones(DIM))
        # A single string where a list goes is refused, not split into
        # characters (delete("pyclient", "d1") would delete "d" and "1").
        for call in (lambda: self.client.delete("pyclient", "d1"),
                     lambda: self.client.get("pyclient", "d1"),
                     lambda: self.client.search("pyclient", tokens=np.ones((1, DIM)),
                                                filter={"colour": "red"}),
                     lambda: self.client.create_collection("pystr", DIM, numeric_fields="price")):
            with self.assertRaises(ValueError) as e:
                call()
            self.assertIn("single string", str(e.exception))
        self.assertEqual([c.name for c in self.client.list_collections() if c.name == "pystr"], [])
        with self.assertRaises(errors.FailedPrecondition):
            self.client.search("pyclient", text="no encoder trained", top_k=3)

    @unittest.skipUnless(os.environ.get("ATTNSEARCH_TLS"), "no TLS server named")
    def test_tls(self):
        address, ca = os.environ["ATTNSEARCH_TLS"], os.environ["ATTNSEARCH_TLS_CA"]
        with Client(address, tls_ca=ca, timeout=30) as secure:
            secure.create_collection("tls", DIM)
            self.assertEqual(secure.upsert("tls", self.docs[:5]), 5)
            self.assertEqual(secure.search("tls", tokens=self.docs[4]["tokens"], top_k=1,
                                           candidates=5).hits[0].id, "d4")
        with Client(address, timeout=5) as plain:  # plaintext to a TLS port
            with self.assertRaises(errors.Unavailable):
                plain.list_collections()

    @unittest.skipUnless(WRITE_KEY and READ_KEY, "the server has no API keys")
    def test_api_keys(self):
        with Client(ADDRESS) as anonymous:
            with self.assertRaises(errors.Unauthenticated):
                anonymous.list_collections()
        with Client(ADDRESS, api_key=READ_KEY) as reader:
            self.assertIn("pyclient", [c.name for c in reader.list_collections()])
            with self.assertRaises(errors.PermissionDenied):
                reader.upsert("pyclient", [{"id": "r", "tokens": np.ones((1, DIM))}])


if __name__ == "__main__":
    unittest.main()
