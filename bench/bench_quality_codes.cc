// quality with --quality_code_bits: what residual token codes cost in
// retrieval quality. Every stored document is reranked (no ANN stage, so
// only the tokens differ) twice per judged query: from the stored rows (the
// bf16 reranker, the collection's own values) and from residual codes of
// each requested bit width (a ResidualCodec trained on all the stored
// tokens as a collection trains it, scored with CodeScorer, no exact
// tier). Reported per bit width: bytes per token, centroids, training and
// encoding seconds, nDCG@10 / Recall@100 / MRR@10 of both, and their
// top-10 overlap.
#include "bench_quality_codes.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "ann/centroid_candidates.h"
#include "ann/fde.h"
#include "ann/residual_codec.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "engine/token_codes.h"
#include "report.h"
#include "rerank/code_scorer.h"
#include "rerank/reranker.h"

namespace attnsearch::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Every document's tokens, back to back.
struct AllTokens {
  std::vector<std::string> ids;
  std::vector<float> pooled;  // ids.size() x dim
  std::vector<float> tokens;
  std::vector<uint32_t> rows;
  std::vector<size_t> offsets;
  size_t total = 0;
};

absl::StatusOr<AllTokens> ReadAllTokens(const Collection& c, const std::vector<std::string>& ids) {
  AllTokens all;
  for (size_t i = 0; i < ids.size(); i += 512) {
    const std::vector<std::string> batch(ids.begin() + long(i),
                                         ids.begin() + long(std::min(ids.size(), i + 512)));
    ATTN_ASSIGN_OR_RETURN(GetResult got, c.Get(batch, /*include_vectors=*/true));
    for (Document& d : got.documents) {
      if (d.num_tokens == 0) continue;
      all.ids.push_back(d.id);
      all.rows.push_back(d.num_tokens);
      all.offsets.push_back(all.total);
      all.total += d.num_tokens;
      all.tokens.insert(all.tokens.end(), d.tokens.begin(), d.tokens.end());
      all.pooled.insert(all.pooled.end(), d.pooled.begin(), d.pooled.end());
    }
  }
  return all;
}

// A judged query as the encoder makes it.
struct EncodedQuery {
  std::string id;
  text::Encoding e;
};

// The top 100 of `scores` as document ids.
Ranking Top100(const std::vector<float>& scores, const std::vector<std::string>& ids) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t k = std::min<size_t>(100, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + long(k), idx.end(),
                    [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  Ranking r;
  for (size_t i = 0; i < k; ++i) r.push_back(ids[idx[i]]);
  return r;
}

// The candidates' order by `scores` (the exhaustive rerank's), top 100.
Ranking Reranked(const std::vector<AnnNeighbor>& candidates, const std::vector<float>& scores,
                 const std::vector<std::string>& ids) {
  std::vector<Label> c;
  for (const AnnNeighbor& n : candidates) c.push_back(n.label);
  const size_t k = std::min<size_t>(100, c.size());
  std::partial_sort(c.begin(), c.begin() + long(k), c.end(),
                    [&](Label a, Label b) { return scores[a] > scores[b]; });
  Ranking r;
  for (size_t i = 0; i < k; ++i) r.push_back(ids[c[i]]);
  return r;
}

// The first stage from the codes' centroids (ann/centroid_candidates.h)
// next to the exact top N by pooled vectors and by fixed dimensional
// encodings (ann/fde.h; what an HNSW over them can at best give): per
// candidate count and knobs, the two-stage nDCG@10 (the candidates
// reranked by the exhaustive scores), the share of the exhaustive top 10
// among the candidates, and the first stage's time (for the encodings,
// encoding the query only).
void FirstStageTable(const AllTokens& all, const std::vector<EncodedQuery>& encoded,
                     const std::vector<std::vector<float>>& exhaustive, const Runs& exhaustive_runs,
                     const Qrels& qrels, const ResidualCodec& codec,
                     const std::vector<uint8_t>& codes, uint32_t dim, bool vocabulary) {
  auto made = CentroidCandidates::Create(codec.centroids().data(), codec.num_centroids(), dim,
                                         FirstStageOptions(codec, vocabulary));
  if (!made.ok()) {
    std::printf("centroid first stage: %s\n", made.status().ToString().c_str());
    return;
  }
  CentroidCandidates& cc = **made;
  const size_t stride = codec.code_bytes();
  for (size_t d = 0; d < all.rows.size(); ++d) {
    std::vector<uint32_t> ids(all.rows[d]);
    std::vector<uint8_t> gains(all.rows[d]);
    for (uint32_t j = 0; j < all.rows[d]; ++j) {
      const uint8_t* code = codes.data() + (all.offsets[d] + j) * stride;
      ids[j] = codec.CentroidOf(code);
      gains[j] = codec.gain_bytes() > 0 ? code[codec.id_bytes()] : 255;
    }
    (void)cc.Add(Label(d), ids.data(), gains.data(), all.rows[d]);
  }
  const size_t docs = all.rows.size();
  // Fixed dimensional encodings (ann/fde.h, default options), searched
  // exactly.
  std::unique_ptr<FdeEncoder> fde = *FdeEncoder::Create(dim, {});
  const uint32_t fd = fde->output_dim();
  std::vector<float> doc_fde(docs * fd), query_fde(encoded.size() * fd);
  for (size_t d = 0; d < docs; ++d) {
    fde->EncodeDocument(all.tokens.data() + all.offsets[d] * dim, all.rows[d],
                        doc_fde.data() + d * fd);
  }
  double fde_query_us = 0;
  for (size_t qi = 0; qi < encoded.size(); ++qi) {
    const text::Encoding& e = encoded[qi].e;
    const auto t0 = Clock::now();
    fde->EncodeQuery(e.tokens.data(), e.weights.data(), e.num_tokens, query_fde.data() + qi * fd);
    fde_query_us += std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  }
  // The exact top n of the documents by `score(query, document)`.
  auto exact_top = [&](size_t n, const std::function<float(size_t, size_t)>& score,
                       std::vector<std::vector<AnnNeighbor>>* out) {
    out->assign(encoded.size(), {});
    for (size_t qi = 0; qi < encoded.size(); ++qi) {
      std::vector<std::pair<float, Label>> by(docs);
      for (size_t d = 0; d < docs; ++d) by[d] = {score(qi, d), Label(d)};
      std::partial_sort(by.begin(), by.begin() + long(n), by.end(),
                        [](auto a, auto b) { return a.first > b.first; });
      for (size_t r = 0; r < n; ++r) (*out)[qi].push_back({by[r].second, by[r].first});
    }
  };
  std::vector<std::vector<std::string>> rows;
  auto add_row = [&](const std::string& what, size_t n, const Runs& runs, double recall10,
                     double us) {
    const QualitySummary q = Evaluate(runs, qrels);
    rows.push_back({what, Fmt("%zu", n), Fmt("%.4f", q.ndcg10), Fmt("%.3f", recall10),
                    us > 0 ? Fmt("%.0f", us) : "-"});
  };
  for (size_t n : {50, 100, 200, 1000}) {
    if (n > docs) continue;
    // Pooled and encodings, exact.
    for (const bool by_fde : {false, true}) {
      std::vector<std::vector<AnnNeighbor>> cands;
      exact_top(
          n,
          [&](size_t qi, size_t d) {
            return by_fde ? Dot(query_fde.data() + qi * fd, doc_fde.data() + d * fd, fd)
                          : Dot(encoded[qi].e.pooled.data(), all.pooled.data() + d * dim, dim);
          },
          &cands);
      Runs runs;
      double recall = 0;
      for (size_t qi = 0; qi < encoded.size(); ++qi) {
        runs[encoded[qi].id] = Reranked(cands[qi], exhaustive[qi], all.ids);
        recall += OverlapAtK(runs[encoded[qi].id], exhaustive_runs.at(encoded[qi].id), 10);
      }
      add_row(by_fde ? Fmt("fde (%u values), exact", fd) : "pooled, exact", n, runs,
              recall / double(encoded.size()), by_fde ? fde_query_us / double(encoded.size()) : 0);
    }
    for (const CentroidSearchParams knobs :
         std::vector<CentroidSearchParams>{{1, 16}, {4, 16}, {4, 32}, {8, 32}, {16, 64}}) {
      Runs runs;
      double recall = 0, us = 0;
      for (size_t qi = 0; qi < encoded.size(); ++qi) {
        const text::Encoding& e = encoded[qi].e;
        std::vector<AnnNeighbor> cand;
        const auto t0 = Clock::now();
        (void)cc.Search(e.tokens.data(), e.weights.data(), e.num_tokens, n, knobs, {}, &cand);
        us += std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        runs[encoded[qi].id] = Reranked(cand, exhaustive[qi], all.ids);
        recall += OverlapAtK(runs[encoded[qi].id], exhaustive_runs.at(encoded[qi].id), 10);
      }
      add_row(Fmt("centroids, probe %u, ef %u", knobs.probe, knobs.ef_search), n, runs,
              recall / double(encoded.size()), us / double(encoded.size()));
    }
  }
  const QualitySummary ex = Evaluate(exhaustive_runs, qrels);
  double query_tokens = 0;
  for (const EncodedQuery& q : encoded) query_tokens += q.e.num_tokens;
  std::printf(
      "first stage (%u centroids, %zu documents, %.1f tokens a query; exhaustive rerank nDCG@10 "
      "%.4f; first-stage memory %.1f MB):\n%s",
      codec.num_centroids(), docs, query_tokens / double(std::max<size_t>(1, encoded.size())),
      ex.ndcg10, double(cc.memory_bytes()) / 1e6,
      FormatTable({"first stage", "candidates", "two-stage nDCG@10", "exhaustive top 10 kept",
                   "first stage us/query"},
                  rows)
          .c_str());
}

}  // namespace

absl::StatusOr<std::vector<CodeQuality>> RunCodeQuality(const BenchFlags& f, const Collection& c,
                                                        const std::vector<std::string>& ids,
                                                        const Qrels& qrels,
                                                        const std::vector<BeirQuery>& queries) {
  std::vector<CodeQuality> out;
  if (f.quality_code_bits.empty()) return out;
  ATTN_ASSIGN_OR_RETURN(const AllTokens all, ReadAllTokens(c, ids));
  const uint32_t dim = c.config().dim;
  const std::shared_ptr<const text::Encoder> enc = c.encoder();
  if (enc == nullptr) return absl::FailedPreconditionError("codes: the encoder is not trained");
  const float tau = f.quality_temperature > 0 ? f.quality_temperature : enc->options().temperature;
  std::vector<EncodedQuery> encoded;
  for (const BeirQuery& q : queries) {
    if (!qrels.by_query.contains(q.id)) continue;
    auto e = enc->EncodeQuery(q.text);
    if (!e.ok() || e->num_tokens == 0) continue;
    encoded.push_back({q.id, *std::move(e)});
  }
  RerankerOptions ro;
  ro.max_threads = f.threads;
  // The stored rows, as the collection keeps them (bf16).
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Reranker> stored,
                        Reranker::Create(dim, TokenDtype::kBF16, ro));
  std::vector<uint16_t> bf16(all.tokens.size());
  FloatToBf16(all.tokens.data(), bf16.data(), bf16.size());
  const CandidateTokens stored_tokens{bf16.data(),        all.total,       all.rows.data(),
                                      all.offsets.data(), all.rows.size(), nullptr};
  Runs stored_runs;
  std::vector<float> scores(all.rows.size());
  std::vector<std::vector<float>> exhaustive;  // per encoded query
  for (const EncodedQuery& q : encoded) {
    const RerankQuery rq{q.e.tokens.data(), q.e.num_tokens, q.e.weights.data(),
                         RerankMode::kAttention, tau};
    ATTN_RETURN_IF_ERROR(stored->Score(rq, stored_tokens, scores.data()));
    stored_runs[q.id] = Top100(scores, all.ids);
    exhaustive.push_back(scores);
  }
  const QualitySummary stored_quality = Evaluate(stored_runs, qrels);
  for (const int& bits : f.quality_code_bits) {
    CodeQuality cq;
    cq.bits = bits;
    cq.stored = stored_quality;
    // The collection's own way of training (engine/token_codes.h): the
    // encoder's vocabulary as centroids, or k-means when --code_centroids
    // asks for a number.
    const TokenCodecTraining how{.bits = uint32_t(bits),
                                 .centroids = uint32_t(f.code_centroids),
                                 .collection_tokens = all.total,
                                 .encoder = f.code_centroids > 0 ? nullptr : enc.get()};
    const auto t0 = Clock::now();
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<ResidualCodec> trained,
                          TrainTokenCodec(all.tokens.data(), all.total, dim, how));
    ATTN_ASSIGN_OR_RETURN(std::shared_ptr<const TokenCodecState> state,
                          TokenCodecState::Make(std::move(trained), 1, ro));
    cq.train_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const ResidualCodec* codec = state->codec.get();
    cq.code_bytes = codec->code_bytes();
    cq.centroids = codec->num_centroids();
    std::vector<uint8_t> codes(all.total * codec->code_bytes());
    const auto t1 = Clock::now();
    state->EncodeRows(all.tokens.data(), all.total, codes.data());
    cq.encode_s = std::chrono::duration<double>(Clock::now() - t1).count();
    const CodeScorer* scorer = state->scorer.get();
    const CandidateCodes cand{codes.data(), all.total, all.rows.data(), all.offsets.data(),
                              all.rows.size()};
    Runs runs;
    double overlap = 0;
    for (const EncodedQuery& q : encoded) {
      const RerankQuery rq{q.e.tokens.data(), q.e.num_tokens, q.e.weights.data(),
                           RerankMode::kAttention, tau};
      ATTN_RETURN_IF_ERROR(scorer->Score(rq, cand, scores.data()));
      runs[q.id] = Top100(scores, all.ids);
      overlap += OverlapAtK(runs[q.id], stored_runs[q.id], 10);
    }
    cq.codes = Evaluate(runs, qrels);
    if (&bits == &f.quality_code_bits.front()) {
      FirstStageTable(all, encoded, exhaustive, stored_runs, qrels, *codec, codes, dim,
                      UsesVocabulary(how, dim));
    }
    // The same codes decoded to floats and scored by the bf16 reranker: what
    // the codec loses, apart from the int8 scoring.
    std::vector<float> decoded(all.tokens.size());
    codec->Decode(codes.data(), all.total, decoded.data());
    std::vector<uint16_t> decoded_bf16(decoded.size());
    FloatToBf16(decoded.data(), decoded_bf16.data(), decoded.size());
    const CandidateTokens decoded_tokens{decoded_bf16.data(), all.total,       all.rows.data(),
                                         all.offsets.data(),  all.rows.size(), nullptr};
    Runs float_runs;
    for (const EncodedQuery& q : encoded) {
      const RerankQuery rq{q.e.tokens.data(), q.e.num_tokens, q.e.weights.data(),
                           RerankMode::kAttention, tau};
      ATTN_RETURN_IF_ERROR(stored->Score(rq, decoded_tokens, scores.data()));
      float_runs[q.id] = Top100(scores, all.ids);
    }
    cq.decoded = Evaluate(float_runs, qrels);
    cq.overlap10 = encoded.empty() ? 0 : overlap / double(encoded.size());
    out.push_back(cq);
  }
  std::vector<std::vector<std::string>> rows;
  for (const CodeQuality& cq : out) {
    rows.push_back({Fmt("%d", cq.bits), Fmt("%zu", cq.code_bytes), Fmt("%u", cq.centroids),
                    Fmt("%.1f", cq.train_s), Fmt("%.1f", cq.encode_s),
                    Fmt("%.4f", cq.stored.ndcg10), Fmt("%.4f", cq.codes.ndcg10),
                    Fmt("%+.4f", cq.codes.ndcg10 - cq.stored.ndcg10),
                    Fmt("%.4f", cq.decoded.ndcg10), Fmt("%.4f", cq.codes.recall100),
                    Fmt("%.4f", cq.overlap10)});
  }
  std::printf("every document reranked from stored bf16 rows (%zu B/token) and from codes:\n%s",
              size_t(dim) * 2,
              FormatTable({"bits", "B/token", "centroids", "train s", "encode s", "nDCG@10 bf16",
                           "nDCG@10 codes", "delta", "nDCG@10 decoded to bf16", "Recall@100 codes",
                           "top-10 overlap"},
                          rows)
                  .c_str());
  return out;
}

nlohmann::json CodeQualityJson(const std::vector<CodeQuality>& all) {
  nlohmann::json out = nlohmann::json::array();
  for (const CodeQuality& cq : all) {
    out.push_back({{"bits", cq.bits},
                   {"bytes_per_token", cq.code_bytes},
                   {"centroids", cq.centroids},
                   {"train_seconds", cq.train_s},
                   {"encode_seconds", cq.encode_s},
                   {"ndcg10_bf16", cq.stored.ndcg10},
                   {"ndcg10_codes", cq.codes.ndcg10},
                   {"ndcg10_decoded_bf16", cq.decoded.ndcg10},
                   {"recall100_bf16", cq.stored.recall100},
                   {"recall100_codes", cq.codes.recall100},
                   {"mrr10_bf16", cq.stored.mrr10},
                   {"mrr10_codes", cq.codes.mrr10},
                   {"top10_overlap", cq.overlap10}});
  }
  return out;
}

}  // namespace attnsearch::bench
