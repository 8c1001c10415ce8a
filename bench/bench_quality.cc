// quality: retrieval quality on a BEIR-style folder with relevance judgements
// (corpus.jsonl, queries.jsonl, qrels.tsv), next to a real BM25 engine.
//
//   attnsearch-bench --benchmarks=quality --beir=DIR
//       [--quality_candidates=1000] [--quality_temperature=0 (encoder default)]
//       [--quality_exhaustive=true] [--semantic_share=0.6] [--expansion_weight=-1 (encoder
//       default)] [--wordnet_weight=-1 (encoder default)] [--stem_language=english] [--dtype=bf16]
//       [--python=/usr/bin/python3 (with python3-xapian)] [--quality_code_bits=1,2,4]
//
// The corpus is read as attnsearch-index reads it (title and text joined,
// bad records reported and skipped, their count printed and recorded) and
// loaded text-only into a fresh collection in-process (bulk-load options), the built-in encoder is
// trained on it (Collection::TrainEncoder) and the ANN index built. Then every
// judged query runs as text, three ways:
//   two-stage   the collection's default retrieval for text (hybrid: the ANN
//               stage's and BM25's --quality_candidates each) reranked by
//               attention
//   ann only    the ANN stage's own order (rerank NONE, semantic retrieval)
//   exhaustive  every document reranked (candidates >= documents)
// reporting nDCG@10, Recall@100 and MRR@10 for each, the agreement between
// two-stage and exhaustive top 10 (what the ANN stage loses), the encoder's
// training time and the per-query encode time. bm25_xapian.py (Xapian,
// BM25 k1 = 0.9, b = 0.4, English stemming) runs on the same folder in the
// same run, scored by the same metric code. --quality_code_bits adds the
// quality of residual token codes (bench_quality_codes.cc).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "bench_quality_codes.h"
#include "bench_quality_hybrid.h"
#include "benchmarks.h"
#include "core/status.h"
#include "dataset/input_file.h"
#include "engine/collection.h"
#include "indexer/input_source.h"
#include "indexer/sink.h"
#include "quality_metrics.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

std::string ReadAllFrom(FILE* p) {
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return out;
}

// Loads the folder's corpus as attnsearch-index does (indexer/input_source.h:
// title and text joined, every record validated): a bad record (BEIR
// corpora have empty ones) is reported as FILE:LINE: reason and skipped, as
// is one the engine rejects (its error names documents[i]). *skipped counts
// them.
absl::StatusOr<uint64_t> LoadCorpus(const std::string& beir_dir, Collection* c, uint64_t* skipped,
                                    std::vector<std::string>* ids,
                                    std::vector<std::string>* texts) {
  indexer::ParseOptions po;
  po.dim = c->config().dim;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<indexer::RecordSource> source,
                        indexer::OpenSource(beir_dir, indexer::InputFormat::kBeir, po));
  indexer::Batch batch;
  uint64_t loaded = 0;
  const indexer::RejectFn reject = [&](uint64_t position, const std::string&,
                                       const std::string& reason) {
    std::printf("%s: %s (skipped)\n", source->Location(position).c_str(), reason.c_str());
    ++*skipped;
    return true;
  };
  auto flush = [&]() -> absl::Status {
    while (!batch.docs.empty()) {
      absl::StatusOr<uint64_t> n = c->Upsert(batch.docs);
      std::string reason;
      const std::optional<size_t> i =
          n.ok() ? std::nullopt
                 : indexer::RejectedDocument(std::string(n.status().message()), &reason);
      if (n.ok()) {
        loaded += *n;
        for (const Document& d : batch.docs) {
          ids->push_back(d.id);
          texts->push_back(d.text);
        }
        break;
      }
      if (!absl::IsInvalidArgument(n.status()) || !i || *i >= batch.docs.size()) return n.status();
      indexer::ApplyRejection(&batch, *i, "rejected by the engine: " + reason, reject);
    }
    batch = indexer::Batch();
    return absl::OkStatus();
  };
  indexer::InputRecord rec;
  while (source->Next(&rec)) {
    if (!rec.status.ok()) {
      reject(rec.position, rec.doc.id, std::string(rec.status.message()));
      continue;
    }
    batch.docs.push_back(std::move(rec.doc));
    batch.positions.push_back(rec.position);
    if (batch.docs.size() >= 1000) ATTN_RETURN_IF_ERROR(flush());
  }
  ATTN_RETURN_IF_ERROR(source->status());
  ATTN_RETURN_IF_ERROR(flush());
  return loaded;
}

using Clock = std::chrono::steady_clock;

// The collection searched: the corpus loaded, the encoder trained, the ANN
// index built.
struct QualityCollection {
  std::unique_ptr<Collection> c;
  uint64_t docs = 0, skipped = 0;
  double load_s = 0, index_s = 0;
  text::EncoderOptions eo;
  EncoderTrainingResult trained;
  std::vector<std::string> ids;    // the documents loaded
  std::vector<std::string> texts;  // and their texts
};

absl::StatusOr<QualityCollection> SetupQuality(const BenchFlags& f, const std::string& dir) {
  QualityCollection q;
  CollectionConfig config;
  config.dim = f.quality_dim;
  config.token_dtype = DtypeFromFlags(f);
  config.ann_spec = f.ann_spec;
  ATTN_ASSIGN_OR_RETURN(config.candidates_from, ParseCandidateSource(f.quality_candidates_from,
                                                                     "--quality_candidates_from"));
  const bool centroids = config.candidates_from == CandidateSource::kCentroids;
  if (centroids) {
    config.token_codec.kind = TokenCodecKind::kResidual;
    config.token_codec.train_after = 0;  // trained below
  }
  CollectionOptions options = CollectionOptions::ForBulkLoad();
  options.limits.max_candidates = 1u << 30;
  options.limits.max_top_k = 1u << 30;  // the hybrid study scores every document
  // Searched as the server searches: token matrices from the arena, not
  // read from RocksDB per candidate (the latency column would be the
  // store's).
  options.token_arena = true;
  ATTN_ASSIGN_OR_RETURN(q.c, Collection::Create(dir + "/c", config, options));
  auto t0 = Clock::now();
  ATTN_ASSIGN_OR_RETURN(q.docs, LoadCorpus(f.beir, q.c.get(), &q.skipped, &q.ids, &q.texts));
  q.load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  q.eo.semantic_share = f.semantic_share;
  q.eo.stem_language = f.stem_language;
  if (f.expansion_weight >= 0.f) q.eo.expansion_weight = f.expansion_weight;
  if (f.wordnet_weight >= 0.f) q.eo.wordnet_weight = f.wordnet_weight;
  ATTN_ASSIGN_OR_RETURN(q.trained, q.c->TrainEncoder(q.eo));
  t0 = Clock::now();
  ATTN_RETURN_IF_ERROR(q.c->BuildIndex().status());
  q.index_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (centroids) {
    t0 = Clock::now();
    ATTN_ASSIGN_OR_RETURN(const CodecTrainingResult codec, q.c->TrainCodec());
    std::printf(
        "codec: %u centroids, %zu B/token, trained and %llu documents encoded in %.1f s; "
        "first stage %.1f MB\n",
        codec.centroids, codec.code_bytes, (unsigned long long)codec.encoded,
        std::chrono::duration<double>(Clock::now() - t0).count(),
        double(q.c->Stats().first_stage_bytes) / 1e6);
  }
  std::printf(
      "loaded %llu documents (%llu bad records skipped) in %.1f s; encoder: %u keys, "
      "trained in %.2f s, %llu documents encoded in %.1f s; ANN built in %.1f s\n",
      (unsigned long long)q.docs, (unsigned long long)q.skipped, q.load_s,
      q.trained.training.vocabulary, q.trained.training.seconds,
      (unsigned long long)q.trained.reencoded, q.trained.reencode_seconds, q.index_s);
  std::printf("%s\n", q.trained.training.wordnet.c_str());
  return q;
}

// The three runs over the judged queries and the two-stage run's stage times.
struct QualityRuns {
  Runs two_stage, ann_only, exhaustive;
  std::vector<double> encode_us, total_us, exhaustive_us, ann_us, fetch_us, rerank_us;
  double agreement = 0;  // two-stage vs exhaustive top-10 overlap, mean
  size_t evaluated = 0;
};

// One text query through Collection::Search: its top 100 into *out.
absl::Status SearchText(const BenchFlags& f, const Collection& c, const BeirQuery& q,
                        uint32_t candidates, RerankMode mode, Ranking* out, SearchTiming* timing,
                        Retrieval retrieval = Retrieval::kDefault) {
  SearchQuery sq;
  sq.text = q.text;
  sq.retrieval = retrieval;
  sq.top_k = 100;
  sq.candidates = candidates;
  sq.mode = mode;
  sq.temperature = f.quality_temperature;
  auto r = c.Search(sq);
  if (!r.ok()) return Annotate(r.status(), absl::StrCat("query ", q.id));
  for (const auto& h : r->hits) out->push_back(h.id);
  if (timing) *timing = r->timing;
  return absl::OkStatus();
}

// Every judged query: two-stage, the ANN stage alone, and (with
// --quality_exhaustive) every document reranked.
absl::StatusOr<QualityRuns> RunQualityQueries(const BenchFlags& f, const QualityCollection& qc,
                                              const Qrels& qrels,
                                              const std::vector<BeirQuery>& queries) {
  QualityRuns r;
  for (const BeirQuery& q : queries) {
    if (!qrels.by_query.contains(q.id)) continue;
    SearchTiming t2, te;
    ATTN_RETURN_IF_ERROR(SearchText(f, *qc.c, q, std::max<uint32_t>(100, f.quality_candidates),
                                    RerankMode::kAttention, &r.two_stage[q.id], &t2));
    ATTN_RETURN_IF_ERROR(SearchText(f, *qc.c, q, 100, RerankMode::kNone, &r.ann_only[q.id], nullptr,
                                    Retrieval::kSemantic));
    if (f.quality_exhaustive) {
      ATTN_RETURN_IF_ERROR(SearchText(f, *qc.c, q, static_cast<uint32_t>(qc.docs),
                                      RerankMode::kAttention, &r.exhaustive[q.id], &te,
                                      Retrieval::kSemantic));
      r.exhaustive_us.push_back(te.total_us);
      r.agreement += OverlapAtK(r.two_stage[q.id], r.exhaustive[q.id], 10);
    }
    r.encode_us.push_back(t2.encode_us);
    r.ann_us.push_back(t2.ann_us);
    r.fetch_us.push_back(t2.fetch_us);
    r.rerank_us.push_back(t2.rerank_us);
    r.total_us.push_back(t2.total_us);
    ++r.evaluated;
  }
  if (r.evaluated == 0) return absl::InvalidArgumentError("no query of queries.jsonl is judged");
  r.agreement /= r.evaluated;
  return r;
}

// Query encoding alone: every judged query, 20 times; microseconds each.
absl::StatusOr<std::vector<double>> TimeEncodeQuery(const Collection& c, const Qrels& qrels,
                                                    const std::vector<BeirQuery>& queries) {
  std::vector<double> us;
  const std::shared_ptr<const text::Encoder> enc = c.encoder();
  for (int rep = 0; rep < 20; ++rep) {
    for (const BeirQuery& q : queries) {
      if (!qrels.by_query.contains(q.id)) continue;
      const auto s = Clock::now();
      auto e = enc->EncodeQuery(q.text);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
      if (!e.ok()) return e.status();
    }
  }
  return us;
}

// The BM25 peer's outcome: its output and scores, or why there are none.
struct Bm25Run {
  nlohmann::json output;
  std::string note;
  QualitySummary quality;
};

// BM25 peer: Xapian on the same folder.
absl::StatusOr<Bm25Run> RunBm25(const BenchFlags& f, const std::string& dir, const Qrels& qrels) {
  Bm25Run b;
  const std::string script = std::string(ATTN_BENCH_SOURCE_DIR) + "/bm25_xapian.py";
  const std::string run_path = dir + "/bm25.run.tsv";
  const std::string cmd =
      "'" + f.python + "' '" + script + "' --beir '" + f.beir + "' --out '" + run_path + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  const std::string text = p ? ReadAllFrom(p) : "";
  if (p) pclose(p);
  const auto brace = text.rfind('{');
  try {
    b.output = nlohmann::json::parse(brace == std::string::npos ? text : text.substr(brace));
  } catch (const std::exception&) {
    b.note = "BM25 peer failed: " + text.substr(0, 400);
  }
  if (b.output.contains("error")) {
    b.note = "BM25 peer skipped: " + b.output["error"].get<std::string>();
  } else if (b.note.empty()) {
    ATTN_ASSIGN_OR_RETURN(const Runs runs, ReadRun(run_path));
    b.quality = Evaluate(runs, qrels);
  }
  return b;
}

// The runs' quality and the latency summaries.
struct QualityReport {
  QualitySummary q2, qa, qe;
  Summary enc, tot, exh, ann, fetch, rerank;
};

QualityReport SummarizeQuality(const QualityRuns& r, const Qrels& qrels,
                               const std::vector<double>& encode_only_us) {
  return {Evaluate(r.two_stage, qrels), Evaluate(r.ann_only, qrels), Evaluate(r.exhaustive, qrels),
          Summarize(encode_only_us),    Summarize(r.total_us),       Summarize(r.exhaustive_us),
          Summarize(r.ann_us),          Summarize(r.fetch_us),       Summarize(r.rerank_us)};
}

void PrintQuality(const BenchFlags& f, const QualityRuns& r, const QualityReport& q,
                  const Bm25Run& bm25) {
  auto row = [](const std::string& name, const QualitySummary& s, const std::string& extra) {
    return std::vector<std::string>{name, Fmt("%.4f", s.ndcg10), Fmt("%.4f", s.recall100),
                                    Fmt("%.4f", s.mrr10), extra};
  };
  std::vector<std::vector<std::string>> rows = {
      row("attnsearch two-stage", q.q2, Fmt("p50 %.2f ms", q.tot.p50 / 1000.0)),
      row("attnsearch ANN stage only", q.qa, ""),
  };
  if (f.quality_exhaustive) {
    rows.push_back(
        row("attnsearch exhaustive rerank", q.qe, Fmt("p50 %.2f ms", q.exh.p50 / 1000.0)));
  }
  if (bm25.note.empty()) rows.push_back(row("BM25 (Xapian)", bm25.quality, ""));
  std::printf("%s",
              FormatTable({"system", "nDCG@10", "Recall@100", "MRR@10", "latency"}, rows).c_str());
  std::printf(
      "queries %zu; two-stage vs exhaustive top-10 agreement %.4f; query encode "
      "(EncodeQuery, 20 passes) mean %.1f us p50 %.1f us p99 %.1f us\n",
      r.evaluated, r.agreement, q.enc.mean, q.enc.p50, q.enc.p99);
  std::printf("two-stage stages, p50: ann %.0f us, fetch %.0f us, rerank %.0f us\n", q.ann.p50,
              q.fetch.p50, q.rerank.p50);
  if (!bm25.note.empty()) std::printf("%s\n", bm25.note.c_str());
}

nlohmann::json QualityJson(const QualitySummary& s) {
  return nlohmann::json{
      {"ndcg10", s.ndcg10}, {"recall100", s.recall100}, {"mrr10", s.mrr10}, {"queries", s.queries}};
}

BenchOutput QualityRecord(const BenchFlags& f, const QualityCollection& qc, const QualityRuns& r,
                          const QualityReport& q, const Bm25Run& bm25) {
  BenchOutput out;
  out.params = {{"beir", f.beir},
                {"documents", qc.docs},
                {"skipped_records", qc.skipped},
                {"candidates", std::max<uint32_t>(100, f.quality_candidates)},
                {"candidates_from", f.quality_candidates_from},
                {"temperature", f.quality_temperature},
                {"dim", f.quality_dim},
                {"dtype", f.dtype},
                {"ann_spec", f.ann_spec},
                {"semantic_share", f.semantic_share},
                {"stem_language", f.stem_language},
                {"expansion_weight", qc.eo.expansion_weight},
                {"expansion_min_cosine", qc.eo.expansion_min_cosine},
                {"wordnet_weight", qc.eo.wordnet_weight},
                {"wordnet", qc.trained.training.wordnet}};
  out.results = {{"two_stage", QualityJson(q.q2)},
                 {"ann_only", QualityJson(q.qa)},
                 {"exhaustive", QualityJson(q.qe)},
                 {"agreement_top10", r.agreement},
                 {"encoder",
                  {{"vocabulary", qc.trained.training.vocabulary},
                   {"train_seconds", qc.trained.training.seconds},
                   {"reencode_seconds", qc.trained.reencode_seconds},
                   {"tokens", qc.trained.training.tokens}}},
                 {"load_seconds", qc.load_s},
                 {"index_seconds", qc.index_s},
                 {"query_encode_us", ToJson(q.enc)},
                 {"two_stage_encode_stage_us", ToJson(Summarize(r.encode_us))},
                 {"two_stage_total_us", ToJson(q.tot)},
                 {"two_stage_ann_us", ToJson(q.ann)},
                 {"two_stage_fetch_us", ToJson(q.fetch)},
                 {"two_stage_rerank_us", ToJson(q.rerank)},
                 {"exhaustive_total_us", ToJson(q.exh)}};
  if (bm25.note.empty()) {
    out.results["bm25_xapian"] = QualityJson(bm25.quality);
    out.results["bm25_xapian_run"] = bm25.output;
  } else {
    out.results["bm25_note"] = bm25.note;
  }
  return out;
}

}  // namespace

absl::StatusOr<BenchOutput> RunQuality(const BenchFlags& f) {
  if (f.beir.empty()) return absl::InvalidArgumentError("--beir: a BEIR folder is required");
  ATTN_ASSIGN_OR_RETURN(const Qrels qrels, ReadQrels(f.beir + "/qrels.tsv"));
  ATTN_ASSIGN_OR_RETURN(const std::vector<BeirQuery> queries,
                        ReadQueries(f.beir + "/queries.jsonl"));
  ScratchDir scratch("attn_quality_");
  if (scratch.path().empty()) return absl::InternalError("cannot create a directory in /tmp");
  ATTN_ASSIGN_OR_RETURN(const QualityCollection qc, SetupQuality(f, scratch.path()));
  ATTN_ASSIGN_OR_RETURN(const QualityRuns runs, RunQualityQueries(f, qc, qrels, queries));
  ATTN_ASSIGN_OR_RETURN(const std::vector<double> encode_only_us,
                        TimeEncodeQuery(*qc.c, qrels, queries));
  ATTN_ASSIGN_OR_RETURN(const Bm25Run bm25, RunBm25(f, scratch.path(), qrels));
  const QualityReport report = SummarizeQuality(runs, qrels, encode_only_us);
  PrintQuality(f, runs, report, bm25);
  ATTN_ASSIGN_OR_RETURN(const std::vector<CodeQuality> codes,
                        RunCodeQuality(f, *qc.c, qc.ids, qrels, queries));
  BenchOutput out = QualityRecord(f, qc, runs, report, bm25);
  if (!codes.empty()) out.results["codes"] = CodeQualityJson(codes);
  if (f.quality_hybrid) {
    ATTN_ASSIGN_OR_RETURN(
        const std::vector<HybridRow> hybrid,
        RunHybridStudy(f, *qc.c, qc.ids, qc.texts, qrels, queries, scratch.path()));
    out.results["hybrid"] = HybridJson(hybrid);
  }
  return out;
}

}  // namespace attnsearch::bench
