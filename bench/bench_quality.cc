// quality: retrieval quality on a BEIR-style folder with relevance judgements
// (corpus.jsonl, queries.jsonl, qrels.tsv), next to a real BM25 engine.
//
//   attnsearch-bench --benchmarks=quality --beir=DIR
//       [--quality_candidates=1000] [--quality_temperature=0 (encoder default)]
//       [--quality_exhaustive=true] [--semantic_share=0.3] [--expansion_weight=-1 (encoder
//       default)] [--stem_language=english] [--dtype=bf16]
//       [--python=/usr/bin/python3 (with python3-xapian)]
//
// The corpus is read as attnsearch-index reads it (title and text joined,
// bad records reported and skipped, their count printed and recorded) and
// loaded text-only into a fresh collection in-process (bulk-load options), the built-in encoder is
// trained on it (Collection::TrainEncoder) and the ANN index built. Then every
// judged query runs as text, three ways:
//   two-stage   ANN candidates (--quality_candidates) reranked by attention
//   ann only    the ANN stage's own order (rerank NONE)
//   exhaustive  every document reranked (candidates >= documents)
// reporting nDCG@10, Recall@100 and MRR@10 for each, the agreement between
// two-stage and exhaustive top 10 (what the ANN stage loses), the encoder's
// training time and the per-query encode time. bm25_xapian.py (Xapian,
// BM25 k1 = 0.9, b = 0.4, English stemming) runs on the same folder in the
// same run, scored by the same metric code.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
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
absl::StatusOr<uint64_t> LoadCorpus(const std::string& beir_dir, Collection* c, uint64_t* skipped) {
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

}  // namespace

absl::StatusOr<BenchOutput> RunQuality(const BenchFlags& f) {
  if (f.beir.empty()) return absl::InvalidArgumentError("--beir: a BEIR folder is required");
  const TokenDtype dtype = DtypeFromFlags(f);
  ATTN_ASSIGN_OR_RETURN(Qrels qrels, ReadQrels(f.beir + "/qrels.tsv"));
  ATTN_ASSIGN_OR_RETURN(std::vector<BeirQuery> queries, ReadQueries(f.beir + "/queries.jsonl"));

  ScratchDir scratch("attn_quality_");
  if (scratch.path().empty()) return absl::InternalError("cannot create a directory in /tmp");
  const std::string dir = scratch.path();

  CollectionConfig config;
  config.dim = f.quality_dim;
  config.token_dtype = dtype;
  config.ann_spec = f.ann_spec;
  CollectionOptions options = CollectionOptions::ForBulkLoad();
  options.limits.max_candidates = 1u << 30;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c,
                        Collection::Create(dir + "/c", config, options));
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  uint64_t skipped = 0;
  ATTN_ASSIGN_OR_RETURN(uint64_t docs, LoadCorpus(f.beir, c.get(), &skipped));
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  text::EncoderOptions eo;
  eo.semantic_share = f.semantic_share;
  eo.stem_language = f.stem_language;
  if (f.expansion_weight >= 0.f) eo.expansion_weight = f.expansion_weight;
  ATTN_ASSIGN_OR_RETURN(EncoderTrainingResult trained, c->TrainEncoder(eo));
  t0 = Clock::now();
  ATTN_RETURN_IF_ERROR(c->BuildIndex().status());
  const double index_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "loaded %llu documents (%llu bad records skipped) in %.1f s; encoder: %u keys, "
      "trained in %.2f s, %llu documents encoded in %.1f s; ANN built in %.1f s\n",
      (unsigned long long)docs, (unsigned long long)skipped, load_s, trained.training.vocabulary,
      trained.training.seconds, (unsigned long long)trained.reencoded, trained.reencode_seconds,
      index_s);

  // The three runs.
  Runs two_stage, ann_only, exhaustive;
  std::vector<double> encode_us, total_us, exhaustive_us, ann_us, fetch_us, rerank_us;
  double agreement = 0;
  size_t evaluated = 0;
  for (const BeirQuery& q : queries) {
    auto judged = qrels.by_query.find(q.id);
    if (judged == qrels.by_query.end()) continue;
    auto run = [&](uint32_t candidates, RerankMode mode, Ranking* out,
                   SearchTiming* timing) -> absl::Status {
      SearchQuery sq;
      sq.text = q.text;
      sq.top_k = 100;
      sq.candidates = candidates;
      sq.mode = mode;
      sq.temperature = f.quality_temperature;
      auto r = c->Search(sq);
      if (!r.ok()) return Annotate(r.status(), absl::StrCat("query ", q.id));
      for (const auto& h : r->hits) out->push_back(h.id);
      if (timing) *timing = r->timing;
      return absl::OkStatus();
    };
    SearchTiming t2, te;
    ATTN_RETURN_IF_ERROR(run(std::max<uint32_t>(100, f.quality_candidates), RerankMode::kAttention,
                             &two_stage[q.id], &t2));
    ATTN_RETURN_IF_ERROR(run(100, RerankMode::kNone, &ann_only[q.id], nullptr));
    if (f.quality_exhaustive) {
      ATTN_RETURN_IF_ERROR(
          run(static_cast<uint32_t>(docs), RerankMode::kAttention, &exhaustive[q.id], &te));
      exhaustive_us.push_back(te.total_us);
      agreement += OverlapAtK(two_stage[q.id], exhaustive[q.id], 10);
    }
    encode_us.push_back(t2.encode_us);
    ann_us.push_back(t2.ann_us);
    fetch_us.push_back(t2.fetch_us);
    rerank_us.push_back(t2.rerank_us);
    total_us.push_back(t2.total_us);
    ++evaluated;
  }
  if (evaluated == 0) return absl::InvalidArgumentError("no query of queries.jsonl is judged");
  agreement /= evaluated;

  // Query encoding alone: every judged query, 20 times.
  std::vector<double> encode_only_us;
  {
    const std::shared_ptr<const text::Encoder> enc = c->encoder();
    for (int rep = 0; rep < 20; ++rep) {
      for (const BeirQuery& q : queries) {
        if (!qrels.by_query.contains(q.id)) continue;
        const auto s = Clock::now();
        auto e = enc->EncodeQuery(q.text);
        encode_only_us.push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - s).count());
        if (!e.ok()) return e.status();
      }
    }
  }

  // BM25 peer: Xapian on the same folder.
  nlohmann::json bm25;
  std::string bm25_note;
  QualitySummary bm25_q;
  {
    const std::string script = std::string(ATTN_BENCH_SOURCE_DIR) + "/bm25_xapian.py";
    const std::string run_path = dir + "/bm25.run.tsv";
    const std::string cmd =
        "'" + f.python + "' '" + script + "' --beir '" + f.beir + "' --out '" + run_path + "' 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    const std::string text = p ? ReadAllFrom(p) : "";
    if (p) pclose(p);
    const auto brace = text.rfind('{');
    try {
      bm25 = nlohmann::json::parse(brace == std::string::npos ? text : text.substr(brace));
    } catch (const std::exception&) {
      bm25_note = "BM25 peer failed: " + text.substr(0, 400);
    }
    if (bm25.contains("error")) {
      bm25_note = "BM25 peer skipped: " + bm25["error"].get<std::string>();
    } else if (bm25_note.empty()) {
      auto runs = ReadRun(run_path);
      if (!runs.ok()) return runs.status();
      bm25_q = Evaluate(*runs, qrels);
    }
  }

  const QualitySummary q2 = Evaluate(two_stage, qrels);
  const QualitySummary qa = Evaluate(ann_only, qrels);
  const QualitySummary qe = Evaluate(exhaustive, qrels);
  const Summary enc = Summarize(encode_only_us), tot = Summarize(total_us),
                exh = Summarize(exhaustive_us);
  auto row = [](const std::string& name, const QualitySummary& s, const std::string& extra) {
    return std::vector<std::string>{name, Fmt("%.4f", s.ndcg10), Fmt("%.4f", s.recall100),
                                    Fmt("%.4f", s.mrr10), extra};
  };
  std::vector<std::vector<std::string>> rows = {
      row("attnsearch two-stage", q2, Fmt("p50 %.2f ms", tot.p50 / 1000.0)),
      row("attnsearch ANN stage only", qa, ""),
  };
  if (f.quality_exhaustive) {
    rows.push_back(row("attnsearch exhaustive rerank", qe, Fmt("p50 %.2f ms", exh.p50 / 1000.0)));
  }
  if (bm25_note.empty()) rows.push_back(row("BM25 (Xapian)", bm25_q, ""));
  std::printf("%s",
              FormatTable({"system", "nDCG@10", "Recall@100", "MRR@10", "latency"}, rows).c_str());
  std::printf(
      "queries %zu; two-stage vs exhaustive top-10 agreement %.4f; query encode "
      "(EncodeQuery, 20 passes) mean %.1f us p50 %.1f us p99 %.1f us\n",
      evaluated, agreement, enc.mean, enc.p50, enc.p99);
  const Summary ann = Summarize(ann_us), fetch = Summarize(fetch_us), rerank = Summarize(rerank_us);
  std::printf("two-stage stages, p50: ann %.0f us, fetch %.0f us, rerank %.0f us\n", ann.p50,
              fetch.p50, rerank.p50);
  if (!bm25_note.empty()) std::printf("%s\n", bm25_note.c_str());

  auto js = [](const QualitySummary& s) {
    return nlohmann::json{{"ndcg10", s.ndcg10},
                          {"recall100", s.recall100},
                          {"mrr10", s.mrr10},
                          {"queries", s.queries}};
  };
  BenchOutput out;
  out.params = {{"beir", f.beir},
                {"documents", docs},
                {"skipped_records", skipped},
                {"candidates", std::max<uint32_t>(100, f.quality_candidates)},
                {"temperature", f.quality_temperature},
                {"dim", f.quality_dim},
                {"dtype", f.dtype},
                {"ann_spec", f.ann_spec},
                {"semantic_share", f.semantic_share},
                {"stem_language", f.stem_language},
                {"expansion_weight", eo.expansion_weight},
                {"expansion_min_cosine", eo.expansion_min_cosine}};
  out.results = {{"two_stage", js(q2)},
                 {"ann_only", js(qa)},
                 {"exhaustive", js(qe)},
                 {"agreement_top10", agreement},
                 {"encoder",
                  {{"vocabulary", trained.training.vocabulary},
                   {"train_seconds", trained.training.seconds},
                   {"reencode_seconds", trained.reencode_seconds},
                   {"tokens", trained.training.tokens}}},
                 {"load_seconds", load_s},
                 {"index_seconds", index_s},
                 {"query_encode_us", ToJson(enc)},
                 {"two_stage_encode_stage_us", ToJson(Summarize(encode_us))},
                 {"two_stage_total_us", ToJson(tot)},
                 {"two_stage_ann_us", ToJson(ann)},
                 {"two_stage_fetch_us", ToJson(fetch)},
                 {"two_stage_rerank_us", ToJson(rerank)},
                 {"exhaustive_total_us", ToJson(exh)}};
  if (bm25_note.empty()) {
    out.results["bm25_xapian"] = js(bm25_q);
    out.results["bm25_xapian_run"] = bm25;
  } else {
    out.results["bm25_note"] = bm25_note;
  }
  return out;
}

}  // namespace attnsearch::bench
