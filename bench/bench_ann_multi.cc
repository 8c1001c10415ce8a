// ann --ann_multivector: the first stages (candidates_from pooled, fde and
// centroids) on clustered multi-vector documents, each inside a real
// collection in a scratch directory.
//
// Data (seeded): `clusters` topics of 6 token clusters each (random unit
// centres in `dim`); a document mixes 3 topics, 20-80 token rows, each a
// cluster centre plus Gaussian noise (0.8 in norm), normalised. A query is
// `query_tokens` rows drawn the same way from the topics of one document,
// so its best documents share its topics without being that document.
//
// Per generator: the load (Upsert in batches of 500; the centroid
// collection's residual codec, --code_bits and --code_centroids, trained
// after it) and, with --target_recall > 0, TuneIndex for that recall on
// 200 held-out documents; then per query, with each of
// --ann_multivector_knobs (default: --ann_params; empty: the tuned knobs)
//   - the exhaustive top k: the collection's own rerank of every document;
//   - per candidate count C: the first stage's C candidates (a search with
//     top_k = C and no rerank), their recall of that top k, and the first
//     stage's time;
//   - per C: a whole search (top_k = k, C candidates reranked), its time.
// Memory per document: the ANN snapshot (≈ the index in memory) for pooled
// and fde, the centroid first stage's own structures for centroids (whose
// collection also keeps a pooled index, for the time before its codec).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "benchmarks.h"
#include "core/status.h"
#include "engine/collection.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

constexpr uint32_t kClustersPerTopic = 6, kTopicsPerDoc = 3, kMinTokens = 20, kMaxTokens = 80;
constexpr float kNoise = 0.8f;
// Held-out documents TuneIndex measures on.
constexpr uint32_t kTuneSample = 200;

class MultiVectorData {
 public:
  MultiVectorData(const BenchFlags& f) : dim_(f.dim), rng_(f.seed) {
    std::normal_distribution<float> g(0.f, 1.f);
    centres_.resize(size_t(f.clusters) * kClustersPerTopic * dim_);
    for (float& x : centres_) x = g(rng_);
    for (size_t i = 0; i < centres_.size(); i += dim_) Normalize(centres_.data() + i);
    topics_ = f.clusters;
  }

  Document Doc(size_t i) {
    Document d;
    d.id = absl::StrCat("d", i);
    std::vector<uint32_t> topics;
    for (uint32_t t = 0; t < kTopicsPerDoc; ++t) topics.push_back(uint32_t(rng_() % topics_));
    doc_topics_.push_back(topics);
    d.num_tokens = kMinTokens + uint32_t(rng_() % (kMaxTokens - kMinTokens + 1));
    d.tokens = Rows(topics, d.num_tokens);
    return d;
  }

  // Rows drawn from the topics of a document already made.
  std::vector<float> QueryRows(size_t like, uint32_t n) { return Rows(doc_topics_.at(like), n); }

 private:
  void Normalize(float* x) const {
    float norm = 0;
    for (uint32_t k = 0; k < dim_; ++k) norm += x[k] * x[k];
    norm = std::sqrt(norm);
    for (uint32_t k = 0; k < dim_; ++k) x[k] /= norm;
  }
  std::vector<float> Rows(const std::vector<uint32_t>& topics, uint32_t n) {
    std::normal_distribution<float> noise(0.f, kNoise / std::sqrt(float(dim_)));
    std::vector<float> out(size_t(n) * dim_);
    for (uint32_t r = 0; r < n; ++r) {
      const uint32_t t = topics[r % topics.size()];
      const float* c =
          centres_.data() + (size_t(t) * kClustersPerTopic + rng_() % kClustersPerTopic) * dim_;
      float* row = out.data() + size_t(r) * dim_;
      for (uint32_t k = 0; k < dim_; ++k) row[k] = c[k] + noise(rng_);
      Normalize(row);
    }
    return out;
  }

  const uint32_t dim_;
  std::mt19937_64 rng_;
  uint32_t topics_ = 0;
  std::vector<float> centres_;
  std::vector<std::vector<uint32_t>> doc_topics_;
};

double Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

// The figures of one setting of the knobs, per candidate count.
struct KnobRun {
  std::string ann_params;              // as sent (empty: tuned or defaults)
  std::vector<double> recall;          // per candidate count
  std::vector<double> first_stage_us;  // mean, per candidate count
  std::vector<double> search_us;       // mean whole search at top_k, per candidate count
};

struct GeneratorRun {
  std::string source;
  double load_s = 0, train_s = 0, tune_s = 0;
  std::string tuned;  // TuneIndex's ann_params (empty: not tuned)
  double bytes_per_doc = 0;
  std::vector<KnobRun> knobs;
};

absl::StatusOr<GeneratorRun> RunGenerator(const BenchFlags& f, CandidateSource source,
                                          const std::string& dir) {
  GeneratorRun run;
  run.source = std::string(CandidateSourceName(source));
  CollectionConfig config;
  config.dim = f.dim;
  config.ann_spec = f.ann_spec;
  config.candidates_from = source;
  if (source == CandidateSource::kCentroids) {
    config.token_codec.kind = TokenCodecKind::kResidual;
    config.token_codec.bits = uint32_t(f.code_bits);
    config.token_codec.centroids = uint32_t(f.code_centroids);
    config.token_codec.train_after = 0;  // trained below, after the load
  }
  CollectionOptions options;
  options.limits.max_candidates = uint32_t(f.num_docs);
  options.limits.max_top_k = 1000;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Collection> c, Collection::Create(dir, config, options));
  MultiVectorData data(f);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Document> batch;
  for (size_t i = 0; i < f.num_docs; ++i) {
    batch.push_back(data.Doc(i));
    if (batch.size() == 500 || i + 1 == f.num_docs) {
      ATTN_RETURN_IF_ERROR(c->Upsert(batch).status());
      batch.clear();
    }
  }
  ATTN_RETURN_IF_ERROR(c->BuildIndex().status());
  run.load_s = Micros(std::chrono::steady_clock::now() - t0) / 1e6;
  if (source == CandidateSource::kCentroids) {
    t0 = std::chrono::steady_clock::now();
    ATTN_RETURN_IF_ERROR(c->TrainCodec().status());
    run.train_s = Micros(std::chrono::steady_clock::now() - t0) / 1e6;
  }
  if (f.target_recall > 0) {
    // As an operator would: the knobs tuned for the target on held-out
    // documents (efSearch; with centroids, also the probe).
    t0 = std::chrono::steady_clock::now();
    ATTN_ASSIGN_OR_RETURN(const IndexTuningResult tuned,
                          c->TuneIndex(f.target_recall, uint32_t(f.k), kTuneSample));
    run.tune_s = Micros(std::chrono::steady_clock::now() - t0) / 1e6;
    run.tuned = tuned.ann_params;
  }
  const CollectionStats stats = c->Stats();
  run.bytes_per_doc = double(source == CandidateSource::kCentroids ? stats.first_stage_bytes
                                                                   : stats.disk_ann_bytes) /
                      double(std::max<uint64_t>(1, stats.num_documents));

  const std::vector<int>& counts = f.ann_multivector_candidates;
  // Each setting of the knobs, on the same collection and queries.
  std::vector<std::string> knob_sets = f.ann_multivector_knobs;
  if (knob_sets.empty()) knob_sets.push_back(f.ann_params);  // empty: tuned, else defaults
  for (const std::string& given : knob_sets) {
    // The centroid first stage's knobs mean nothing to the others (and a
    // search refuses them there): each collection gets the knobs it reads.
    std::string knobs;
    for (absl::string_view item : absl::StrSplit(given, ',', absl::SkipWhitespace())) {
      const bool centroid_knob =
          absl::StartsWith(item, "probe") || absl::StartsWith(item, "refine");
      if (centroid_knob && source != CandidateSource::kCentroids) continue;
      absl::StrAppend(&knobs, knobs.empty() ? "" : ",", item);
    }
    run.knobs.push_back({knobs, std::vector<double>(counts.size(), 0),
                         std::vector<double>(counts.size(), 0),
                         std::vector<double>(counts.size(), 0)});
  }
  std::mt19937_64 pick(f.seed + 1);
  for (size_t qi = 0; qi < f.num_queries; ++qi) {
    SearchQuery q;
    q.num_tokens = uint32_t(f.query_tokens);
    q.tokens = data.QueryRows(pick() % f.num_docs, q.num_tokens);
    q.top_k = uint32_t(f.k);
    q.candidates = uint32_t(f.num_docs);
    ATTN_ASSIGN_OR_RETURN(const SearchResult exhaustive, c->Search(q));
    std::set<std::string> truth;
    for (const SearchHit& h : exhaustive.hits) truth.insert(h.id);
    for (KnobRun& k : run.knobs) {
      q.ann_params = k.ann_params;
      for (size_t j = 0; j < counts.size(); ++j) {
        SearchQuery first = q;
        first.candidates = uint32_t(counts[j]);
        first.top_k = std::min<uint32_t>(first.candidates, options.limits.max_top_k);
        first.mode = RerankMode::kNone;
        ATTN_ASSIGN_OR_RETURN(const SearchResult got, c->Search(first));
        if (got.sources.first_stage != source) {
          return absl::InternalError(
              absl::StrCat("the ", run.source, " collection's candidates came from ",
                           std::string(CandidateSourceName(got.sources.first_stage))));
        }
        size_t hit = 0;
        for (const SearchHit& h : got.hits) hit += truth.contains(h.id);
        k.recall[j] += double(hit) / double(std::max<size_t>(1, truth.size()));
        k.first_stage_us[j] += double(got.timing.ann_us);
        SearchQuery whole = q;
        whole.candidates = uint32_t(counts[j]);
        ATTN_ASSIGN_OR_RETURN(const SearchResult reranked, c->Search(whole));
        k.search_us[j] += double(reranked.timing.total_us);
      }
    }
  }
  for (KnobRun& k : run.knobs) {
    for (size_t j = 0; j < counts.size(); ++j) {
      k.recall[j] /= double(f.num_queries);
      k.first_stage_us[j] /= double(f.num_queries);
      k.search_us[j] /= double(f.num_queries);
    }
  }
  return run;
}

}  // namespace

absl::StatusOr<BenchOutput> RunAnnMultiVector(const BenchFlags& f) {
  BenchOutput out;
  out.params = {{"num_docs", f.num_docs},
                {"num_queries", f.num_queries},
                {"dim", f.dim},
                {"topics", f.clusters},
                {"query_tokens", f.query_tokens},
                {"k", f.k},
                {"ann_spec", f.ann_spec},
                {"code_bits", f.code_bits},
                {"seed", f.seed},
                {"candidates", f.ann_multivector_candidates}};
  ScratchDir scratch("attn_ann_multi_");
  if (scratch.path().empty()) return absl::InternalError("could not create a scratch directory");
  std::vector<std::vector<std::string>> rows;
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& name : f.ann_multivector_sources) {
    ATTN_ASSIGN_OR_RETURN(const CandidateSource source,
                          ParseCandidateSource(name, "--ann_multivector_sources"));
    std::printf("%s: loading %zu documents ...\n", name.c_str(), f.num_docs);
    std::fflush(stdout);
    ATTN_ASSIGN_OR_RETURN(const GeneratorRun run,
                          RunGenerator(f, source, absl::StrCat(scratch.path(), "/", name)));
    for (const KnobRun& k : run.knobs) {
      for (size_t j = 0; j < f.ann_multivector_candidates.size(); ++j) {
        rows.push_back(
            {run.source, k.ann_params.empty() ? "-" : k.ann_params,
             Fmt("%d", f.ann_multivector_candidates[j]), Fmt("%.3f", k.recall[j]),
             Fmt("%.0f", k.first_stage_us[j]), Fmt("%.0f", k.search_us[j]),
             Fmt("%.0f", run.bytes_per_doc), Fmt("%.1f", run.load_s), Fmt("%.1f", run.train_s),
             run.tuned.empty() ? "-" : Fmt("%s (%.0f s)", run.tuned.c_str(), run.tune_s)});
        results.push_back({{"source", run.source},
                           {"ann_params", k.ann_params},
                           {"candidates", f.ann_multivector_candidates[j]},
                           {"recall", k.recall[j]},
                           {"first_stage_us", k.first_stage_us[j]},
                           {"search_us", k.search_us[j]},
                           {"bytes_per_doc", run.bytes_per_doc},
                           {"load_s", run.load_s},
                           {"train_s", run.train_s},
                           {"tuned_ann_params", run.tuned},
                           {"tune_s", run.tune_s}});
      }
    }
  }
  std::printf(
      "\nfirst stages on clustered multi-vector documents (%zu documents, %zu queries of %d "
      "tokens, d = %u): recall of the exhaustive rerank's top %d among the candidates\n%s",
      f.num_docs, f.num_queries, f.query_tokens, f.dim, f.k,
      FormatTable({"source", "ann_params", "candidates", "recall", "first stage us",
                   "search us (top_k)", "bytes/doc", "load s", "codec s", "tuned"},
                  rows)
          .c_str());
  out.results = {{"first_stages", results}};
  return out;
}

}  // namespace attnsearch::bench
