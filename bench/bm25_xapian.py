#!/usr/bin/python3
"""Xapian BM25: the lexical reference peer for attnsearch-bench's quality
benchmark.

Usage: bm25_xapian.py --beir DIR --out RUN.tsv [--k 100] [--k1 0.9] [--b 0.4]
(run it with Debian's /usr/bin/python3, which has python3-xapian)

DIR is a BEIR dataset folder with corpus.jsonl and queries.jsonl (ids in
"_id", or "id" when "_id" is absent; strings or integers). Each document is
indexed as title + " " + text with xapian.TermGenerator and the English
Snowball stemmer, in a Xapian database in a temporary directory. Each query
is parsed with xapian.QueryParser (English stemmer, STEM_SOME, default
operator OR, FLAG_DEFAULT) and ranked with BM25Weight(k1, k2=0, k3=1, b,
min_normlen=0.5); the defaults k1 = 0.9, b = 0.4 are Anserini's (and
Pyserini's BEIR baselines'); the BEIR paper's own BM25 was Elasticsearch's,
k1 = 1.2, b = 0.75.

Writes the top k of every query to RUN.tsv as `query_id<TAB>doc_id<TAB>rank
<TAB>score` (rank from 1; the format attnsearch-bench's ReadRun reads) and
prints one JSON object on the last line of stdout: index_seconds (indexing
and commit), search_seconds (parsing and ranking every query, one at a
time), queries, docs, xapian_version, and the parameters. Queries Xapian's
parser rejects (e.g. a stray upper-case boolean operator) are re-parsed
with no flags and counted in "parse_fallbacks".
"""
import argparse
import json
import sys
import tempfile
import time

try:
    import xapian
except ImportError as e:  # reported by the C++ side as a note
    print(json.dumps({"error": "xapian not importable by %s: %s" % (sys.executable, e)}))
    sys.exit(0)


def read_jsonl(path):
    """Yields (line number, object) for every non-empty line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, json.loads(line)


def beir_id(obj, path, number):
    value = obj.get("_id", obj.get("id"))
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise SystemExit("%s:%d: missing or invalid \"_id\"/\"id\"" % (path, number))
    return str(value)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beir", required=True, help="BEIR dataset folder")
    ap.add_argument("--out", required=True, help="run file to write")
    ap.add_argument("--k", type=int, default=100, help="results per query")
    ap.add_argument("--k1", type=float, default=0.9)
    ap.add_argument("--b", type=float, default=0.4)
    args = ap.parse_args()

    stem = xapian.Stem("english")
    with tempfile.TemporaryDirectory(prefix="bm25_xapian_") as tmp:
        t0 = time.perf_counter()
        db = xapian.WritableDatabase(tmp, xapian.DB_CREATE_OR_OVERWRITE)
        tg = xapian.TermGenerator()
        tg.set_stemmer(stem)
        corpus = args.beir + "/corpus.jsonl"
        docs = 0
        for number, obj in read_jsonl(corpus):
            doc = xapian.Document()
            doc.set_data(beir_id(obj, corpus, number))
            tg.set_document(doc)
            tg.index_text((obj.get("title") or "") + " " + (obj.get("text") or ""))
            db.add_document(doc)
            docs += 1
        db.commit()
        index_seconds = time.perf_counter() - t0

        path = args.beir + "/queries.jsonl"
        queries = [(beir_id(obj, path, n), obj.get("text") or "") for n, obj in read_jsonl(path)]

        qp = xapian.QueryParser()
        qp.set_stemmer(stem)
        qp.set_stemming_strategy(xapian.QueryParser.STEM_SOME)
        qp.set_default_op(xapian.Query.OP_OR)
        qp.set_database(db)
        enquire = xapian.Enquire(db)
        enquire.set_weighting_scheme(xapian.BM25Weight(args.k1, 0, 1, args.b, 0.5))
        fallbacks = 0
        lines = []
        t0 = time.perf_counter()
        for qid, text in queries:
            try:
                query = qp.parse_query(text, xapian.QueryParser.FLAG_DEFAULT)
            except xapian.QueryParserError:
                query = qp.parse_query(text, 0)
                fallbacks += 1
            enquire.set_query(query)
            for m in enquire.get_mset(0, args.k):
                lines.append("%s\t%s\t%d\t%r\n" %
                             (qid, m.document.get_data().decode("utf-8"), m.rank + 1, m.weight))
        search_seconds = time.perf_counter() - t0
        db.close()

    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(lines)
    print(json.dumps({
        "index_seconds": index_seconds, "search_seconds": search_seconds,
        "queries": len(queries), "docs": docs, "xapian_version": xapian.version_string(),
        "k": args.k, "k1": args.k1, "b": args.b, "parse_fallbacks": fallbacks}))


if __name__ == "__main__":
    main()
