#include "engine/search_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "engine/checks.h"
#include "engine/snippet.h"
#include "storage/codec.h"

namespace attnsearch {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MicrosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

absl::Status CheckDeadline(absl::Time deadline, absl::string_view stage) {
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat("deadline passed before ", stage));
  }
  return absl::OkStatus();
}

RerankQuery RerankQueryOf(const SearchQuery& q) {
  return RerankQuery{q.tokens.data(), q.num_tokens, q.token_weights.data(), q.mode, q.temperature};
}

// The reranker's view of a block of token rows.
CandidateTokens TokensOf(const TokenBlock& b) {
  return CandidateTokens{b.data(),      b.total_rows,
                         b.rows.data(), b.offsets.data(),
                         b.rows.size(), b.scales.empty() ? nullptr : b.scales.data()};
}

// The evidence of one hit as TokenMatches, and its snippet.
void AddEvidence(const SearchQuery& q, const Document& d,
                 const std::vector<TokenEvidence>& evidence, SearchHit* hit) {
  std::vector<MatchedSpan> spans;
  for (const auto& e : evidence) {
    TokenMatch m;
    m.query_token = e.query_token;
    m.document_token = e.doc_token;
    m.weight = e.weight;
    m.contribution = e.contribution;
    if (e.doc_token < d.token_texts.size()) m.document_token_text = d.token_texts[e.doc_token];
    if (e.doc_token < d.token_spans.size()) {
      m.has_span = true;
      std::tie(m.span_begin, m.span_end) = d.token_spans[e.doc_token];
      spans.push_back({m.span_begin, m.span_end, e.contribution});
    }
    hit->matches.push_back(std::move(m));
  }
  if (!spans.empty() && !d.text.empty()) {
    SnippetOptions so;
    so.pre = q.highlight_pre;
    so.post = q.highlight_post;
    hit->snippet = MakeSnippet(d.text, std::move(spans), so);
  }
}

}  // namespace

namespace {

// This thread's token block from its last search, kept for its capacity: a
// fresh megabyte-sized buffer per search costs page faults on every call.
TokenBlock& SpareBlock() {
  thread_local TokenBlock spare;
  return spare;
}

// Candidates Score ranks beyond top_k, to stand in for hits deleted after
// the ANN stage.
constexpr size_t kSpareHits = 16;
// Diversifying, hits are read at least this many at a time (some are left
// out).
constexpr size_t kDiversifyBatch = 32;
// The longest diversify.collapse_field.
constexpr size_t kMaxCollapseFieldBytes = 1024;

// Blocks up to this size are kept for the thread's next search.
constexpr size_t kSpareBlockBytes = size_t{32} << 20;

// Rows [first, first + count) of candidates whose rows start at src[i]
// (rows[i] of them, the first being row offsets[i] of all), into `out`.
void CopyRows(const char* const* src, const size_t* offsets, const uint32_t* rows, size_t n,
              size_t row_bytes, size_t first, size_t count, char* out) {
  size_t d = size_t(std::upper_bound(offsets, offsets + n, first) - offsets) - 1;
  while (count > 0) {
    const size_t in_doc = first - offsets[d];
    const size_t take = std::min<size_t>(rows[d] - in_doc, count);
    if (take > 0) {
      std::memcpy(out, src[d] + in_doc * row_bytes, take * row_bytes);
      out += take * row_bytes;
      first += take;
      count -= take;
    }
    ++d;
  }
}

}  // namespace

void SearchPipeline::Fetched::CodeSet::Add(size_t candidate, const CodesView& v) {
  coded.push_back(candidate);
  code_rows.push_back(v.rows);
  code_offsets.push_back(total);
  src.push_back(v.codes);
  total += v.rows;
}

bool SearchPipeline::Fetched::any_coded() const {
  for (const CodeSet& set : code_sets) {
    if (!set.coded.empty()) return true;
  }
  return false;
}

CandidateTokens SearchPipeline::Fetched::tokens() const {
  CandidateTokens t = TokensOf(block);
  if (rows_from) {
    t.rows_from = &rows_from;
    t.sources = src.data();
  }
  return t;
}

absl::Status SearchPipeline::ExplainWithCodes(const SearchQuery& q, const Fetched& f,
                                              const Scored& s,
                                              const std::vector<const ScoredCandidate*>& best,
                                              std::vector<std::vector<TokenEvidence>>* evidence,
                                              std::vector<std::vector<float>>* maps) const {
  const size_t n = best.size();
  if (evidence != nullptr) evidence->assign(n, {});
  if (maps != nullptr) maps->assign(n, {});
  const RerankQuery rq = RerankQueryOf(q);
  // Puts part[k] (the explanation of hit at[k]) in place.
  const auto place = [&](const std::vector<size_t>& at,
                         std::vector<std::vector<TokenEvidence>>* part_evidence,
                         std::vector<std::vector<float>>* part_maps) {
    for (size_t k = 0; k < at.size(); ++k) {
      if (evidence != nullptr) (*evidence)[at[k]] = std::move((*part_evidence)[k]);
      if (maps != nullptr) (*maps)[at[k]] = std::move((*part_maps)[k]);
    }
  };
  std::vector<std::vector<TokenEvidence>> part_evidence;
  std::vector<std::vector<float>> part_maps;
  // The hits scored from rows: their rows gathered, one matmul.
  TokenBlock rows;
  std::vector<size_t> at;
  for (size_t k = 0; k < n; ++k) {
    if (best[k]->from_codes) continue;
    at.push_back(k);
    rows.offsets.push_back(rows.total_rows);
    CandidateRows(f, s, best[k]->candidate, &rows);
    rows.rows.push_back(uint32_t(rows.total_rows - rows.offsets.back()));
    rows.found.push_back(true);
  }
  if (!at.empty()) {
    if (maps != nullptr) {
      ATTN_RETURN_IF_ERROR(parts_.reranker->AttentionMaps(
          rq, TokensOf(rows), &part_maps, evidence != nullptr ? &part_evidence : nullptr));
    } else {
      ATTN_RETURN_IF_ERROR(parts_.reranker->Explain(rq, TokensOf(rows), &part_evidence));
    }
    place(at, &part_evidence, &part_maps);
  }
  // The hits scored from codes, a codec at a time, by its scorer.
  for (const Fetched::CodeSet& set : f.code_sets) {
    at.clear();
    std::vector<uint32_t> code_rows;
    std::vector<size_t> offsets;
    std::vector<const uint8_t*> src;
    size_t total = 0;
    for (size_t k = 0; k < n; ++k) {
      if (!best[k]->from_codes) continue;
      const auto it = std::find(set.coded.begin(), set.coded.end(), best[k]->candidate);
      if (it == set.coded.end()) continue;
      const size_t j = size_t(it - set.coded.begin());
      at.push_back(k);
      code_rows.push_back(set.code_rows[j]);
      offsets.push_back(total);
      src.push_back(set.src[j]);
      total += set.code_rows[j];
    }
    if (at.empty()) continue;
    const CandidateCodes cc{nullptr,        total,     code_rows.data(),
                            offsets.data(), at.size(), src.data()};
    if (maps != nullptr) {
      ATTN_RETURN_IF_ERROR(set.codec->scorer->AttentionMaps(
          rq, cc, &part_maps, evidence != nullptr ? &part_evidence : nullptr));
    } else {
      ATTN_RETURN_IF_ERROR(set.codec->scorer->Explain(rq, cc, &part_evidence));
    }
    place(at, &part_evidence, &part_maps);
  }
  return absl::OkStatus();
}

absl::StatusOr<SearchResult> SearchPipeline::Run(SearchQuery q, absl::Time deadline) const {
  const auto t_start = Clock::now();
  SearchResult result;
  AnnSearchParams params;
  ATTN_RETURN_IF_ERROR(Prepare(&q, &params));
  result.timing.encode_us = MicrosSince(t_start);
  if (q.explain || q.attention_map) result.query_token_texts = q.token_texts;

  ATTN_RETURN_IF_ERROR(CheckDeadline(deadline, "the ANN search"));
  auto t = Clock::now();
  ATTN_ASSIGN_OR_RETURN(const Candidates candidates, FindCandidates(q, params));
  result.timing.ann_us = MicrosSince(t);
  result.sources.first_stage = candidates.first_stage;
  result.sources.retrieval = q.retrieval;
  result.sources.lexical = candidates.lexical_only;

  std::optional<Fetched> fetched;
  if (q.mode != RerankMode::kNone && !candidates.neighbors.empty()) {
    ATTN_RETURN_IF_ERROR(CheckDeadline(deadline, "fetching token matrices"));
    t = Clock::now();
    ATTN_ASSIGN_OR_RETURN(fetched, Fetch(q, candidates));
    result.timing.fetch_us = MicrosSince(t);
    result.sources.store = uint32_t(fetched->store_reads);
    result.sources.codes = uint32_t(fetched->code_sets[0].coded.size());
    result.sources.previous_codes = uint32_t(fetched->code_sets[1].coded.size());
    ATTN_RETURN_IF_ERROR(CheckDeadline(deadline, "reranking"));
  }
  t = Clock::now();
  ATTN_ASSIGN_OR_RETURN(const Scored scored, Score(q, candidates, fetched ? &*fetched : nullptr));
  if (fetched) result.timing.rerank_us = MicrosSince(t);

  ATTN_RETURN_IF_ERROR(CheckDeadline(deadline, "reading the hits"));
  t = Clock::now();
  int64_t explain_us = 0;  // counted as reranking
  ATTN_ASSIGN_OR_RETURN(result.hits, Hits(q, candidates, fetched ? &*fetched : nullptr, scored,
                                          &explain_us, &result.sources.diversified));
  result.timing.rerank_us += explain_us;
  result.timing.fetch_us += MicrosSince(t) - explain_us;
  result.timing.total_us = MicrosSince(t_start);
  if (fetched && fetched->block.storage.capacity() * sizeof(float) <= kSpareBlockBytes) {
    SpareBlock() = std::move(fetched->block);
  }
  return result;
}

absl::Status SearchPipeline::Prepare(SearchQuery* q, AnnSearchParams* params) const {
  if (!q->text.empty()) {
    if (!q->pooled.empty() || !q->tokens.empty() || q->num_tokens > 0) {
      return absl::InvalidArgumentError("query: give text or vectors, not both");
    }
    const std::shared_ptr<const text::Encoder> enc = parts_.encoder();
    if (enc == nullptr) {
      return absl::FailedPreconditionError(
          "text: the collection has no trained encoder; load text documents and run "
          "TrainEncoder (attnsearch-index does after a load), or query with vectors");
    }
    ATTN_ASSIGN_OR_RETURN(text::Encoding e,
                          enc->EncodeQuery(q->text, "text", parts_.limits.max_query_tokens));
    q->num_tokens = e.num_tokens;
    q->tokens = std::move(e.tokens);
    q->token_weights = std::move(e.weights);
    q->pooled = std::move(e.pooled);
    q->token_texts = std::move(e.token_texts);
    if (q->temperature == 0.f) q->temperature = enc->options().temperature;
    if (q->retrieval == Retrieval::kDefault) {
      q->retrieval = parts_.lexical ? Retrieval::kHybrid : Retrieval::kSemantic;
    }
    // The pooled first stage of text is a bag of words and meanings: it
    // needs more candidates than vectors from a trained model do; the
    // centroid first stage ranks by the words themselves.
    if (q->candidates == 0) {
      const bool centroids = parts_.first_stage_ready && parts_.first_stage_ready();
      const uint32_t per_generator = q->retrieval != Retrieval::kSemantic
                                         ? kDefaultHybridTextCandidates
                                     : centroids ? kDefaultCentroidTextCandidates
                                                 : kDefaultTextCandidates;
      q->candidates = std::min(std::max(per_generator, q->top_k), parts_.limits.max_candidates);
    }
  } else if (q->retrieval == Retrieval::kLexical || q->retrieval == Retrieval::kHybrid) {
    return absl::InvalidArgumentError(
        "retrieval: LEXICAL and HYBRID need a text query (vectors search SEMANTIC)");
  }
  if (q->retrieval == Retrieval::kDefault) q->retrieval = Retrieval::kSemantic;
  if (!(q->fusion_weight >= 0.f && q->fusion_weight <= 1.f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fusion_weight: must be in [0, 1], got ", q->fusion_weight));
  }
  if (q->retrieval == Retrieval::kSemantic && q->fusion_weight < 1.f) {
    return absl::InvalidArgumentError(
        "fusion_weight: fuses with BM25, so it needs retrieval LEXICAL or HYBRID (a SEMANTIC "
        "search has no BM25 score)");
  }
  if (q->retrieval != Retrieval::kSemantic && !parts_.lexical) {
    return absl::FailedPreconditionError(
        "retrieval: the collection has no lexical index (it is rebuilt at its next open)");
  }
  ATTN_RETURN_IF_ERROR(CheckQuery(q));
  // The request's own knobs replace the collection's tuned ones.
  *params = parts_.default_params();
  if (!q->ann_params.empty()) {
    ATTN_ASSIGN_OR_RETURN(*params, AnnSearchParams::Parse(q->ann_params));
    const CollectionConfig& config = parts_.store->config();
    ATTN_RETURN_IF_ERROR(params->CheckApplies(
        config.ann_spec, config.candidates_from == CandidateSource::kCentroids));
  }
  return absl::OkStatus();
}

absl::Status SearchPipeline::CheckQuery(SearchQuery* q) const {
  const CollectionConfig& config = parts_.store->config();
  const uint32_t dim = config.dim;
  const RequestLimits& lim = parts_.limits;
  if (q->top_k == 0) return absl::InvalidArgumentError("top_k: must be at least 1");
  if (q->top_k > lim.max_top_k) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k: ", q->top_k, " exceeds the limit of ", lim.max_top_k));
  }
  if (q->candidates == 0) {
    q->candidates = std::min(std::max<uint32_t>(100, q->top_k), lim.max_candidates);
  } else if (q->candidates < q->top_k) {
    return absl::InvalidArgumentError(
        absl::StrCat("candidates: ", q->candidates, " is less than top_k (", q->top_k, ")"));
  } else if (q->candidates > lim.max_candidates) {
    return absl::InvalidArgumentError(
        absl::StrCat("candidates: ", q->candidates, " exceeds the limit of ", lim.max_candidates));
  }
  if (q->attention_map && q->mode == RerankMode::kNone) {
    return absl::InvalidArgumentError(
        "attention_map: needs a rerank mode that attends (ATTENTION or MAXSIM), not NONE");
  }
  if (!(q->diversify.max_similarity >= 0.f && q->diversify.max_similarity <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diversify.max_similarity: must be in [0, 1], got ", q->diversify.max_similarity));
  }
  if (q->diversify.collapse_field.size() > kMaxCollapseFieldBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("diversify.collapse_field: longer than ", kMaxCollapseFieldBytes, " bytes"));
  }
  if (q->diversify.max_per_value == 0) q->diversify.max_per_value = 1;
  if (!(q->temperature >= 0.f) || !std::isfinite(q->temperature)) {
    return absl::InvalidArgumentError("temperature: must be a positive number");
  }
  if (q->temperature != 0.f && q->temperature < kMinTemperature) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: ", q->temperature, " is below the smallest allowed, ",
                     kMinTemperature, " (rerank MAXSIM is the limit of a vanishing temperature)"));
  }
  if (q->temperature == 0.f) q->temperature = kDefaultTemperature;
  ATTN_RETURN_IF_ERROR(FilterIndex::Check(q->filter, q->ranges, config));
  if (q->pooled.empty() && q->num_tokens == 0 && q->tokens.empty()) {
    return absl::InvalidArgumentError("query: empty; give pooled and/or tokens");
  }
  if (!q->pooled.empty()) {
    if (q->pooled.size() != dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("query.pooled: expected ", dim, " values, got ", q->pooled.size()));
    }
    ATTN_RETURN_IF_ERROR(NormalizeRows(q->pooled.data(), 1, dim, "query.pooled"));
  }
  if (q->num_tokens > 0 || !q->tokens.empty()) {
    if (q->num_tokens > lim.max_query_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query.tokens: ", q->num_tokens, " rows exceed the limit of ", lim.max_query_tokens));
    }
    if (q->tokens.size() != size_t(q->num_tokens) * dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "query.tokens: expected ", q->num_tokens, " x ", dim, " values, got ", q->tokens.size()));
    }
    ATTN_RETURN_IF_ERROR(NormalizeRows(q->tokens.data(), q->num_tokens, dim, "query.tokens"));
  }
  if (!q->token_weights.empty()) {
    // A pooled-only query is one token.
    const uint32_t rows = q->num_tokens > 0 ? q->num_tokens : 1;
    if (q->token_weights.size() != rows) {
      return absl::InvalidArgumentError(absl::StrCat("query.token_weights: expected ", rows,
                                                     " values, got ", q->token_weights.size()));
    }
    double sum = 0;
    for (size_t i = 0; i < q->token_weights.size(); ++i) {
      if (!(q->token_weights[i] >= 0.f) || !std::isfinite(q->token_weights[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("query.token_weights[", i, "]: must be a finite, non-negative number"));
      }
      sum += q->token_weights[i];
    }
    // A score is at most the weights' sum in magnitude: bounded, it stays
    // finite in float.
    // (float rounding: a weight written 1e30 is 1.0000000150e30 in float)
    if (sum > kMaxTokenWeightSum * (1 + 1e-6)) {
      return absl::InvalidArgumentError(absl::StrCat("query.token_weights: they sum to ", sum,
                                                     ", above the limit of ", kMaxTokenWeightSum));
    }
  }
  if (q->pooled.empty()) {
    const float* w = q->token_weights.empty() ? nullptr : q->token_weights.data();
    // (tokens were given: token_weights, if any, has one per row)
    if (!PoolTokens(q->tokens, q->num_tokens, dim, w, &q->pooled)) {
      return absl::InvalidArgumentError(
          "query.tokens: the token vectors cancel out (their weighted mean is zero or nearly "
          "so, or every weight is zero); give pooled");
    }
  }
  if (q->num_tokens == 0) {
    q->tokens = q->pooled;
    q->num_tokens = 1;
    if (q->token_weights.empty()) q->token_weights = {1.f};
  } else if (q->token_weights.empty()) {
    q->token_weights.assign(q->num_tokens, 1.f / float(q->num_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<SearchPipeline::Candidates> SearchPipeline::FindCandidates(
    const SearchQuery& q, AnnSearchParams params) const {
  Candidates c;
  // The filter as one set of labels, evaluated with the index's state: the
  // index scans them exactly when they are few, else searches its graph
  // admitting only them.
  std::function<LabelBitmap()> matches;
  if (!q.filter.empty() || !q.ranges.empty()) {
    matches = [&] { return parts_.filter->Match(q.filter, q.ranges); };
  }
  params.exhaustive = q.candidates >= parts_.store->live_count();
  c.exhaustive = params.exhaustive;
  if (q.retrieval == Retrieval::kLexical) {
    ATTN_ASSIGN_OR_RETURN(c.view, parts_.store->NewReadView());
    if (parts_.arena != nullptr) c.pin = parts_.arena->PinNow();
    ATTN_RETURN_IF_ERROR(AddLexical(q, &c));
    return c;
  }
  // The view is taken with the index as it is: a label the index gives was
  // readable then (an overwrite purges the old label only after the index
  // dropped it), so every read below finds what the ANN stage found.
  const auto take_view = [&]() -> absl::Status {
    ATTN_ASSIGN_OR_RETURN(c.view, parts_.store->NewReadView());
    if (parts_.arena != nullptr) c.pin = parts_.arena->PinNow();
    return absl::OkStatus();
  };
  // The centroid first stage, once it holds every live document (an
  // exhaustive search scores them all anyway). Its documents leave it
  // before the store purges them, and the view is taken under its lock.
  if (parts_.first_stage_ready && !params.exhaustive && q.num_tokens > 0 &&
      parts_.first_stage_ready()) {
    const std::shared_ptr<const TokenCodecState> state = parts_.codec();
    if (state != nullptr && state->first_stage != nullptr) {
      std::optional<LabelBitmap> admitted;
      if (matches) admitted = matches();
      const LabelFilter admit = [&](Label l) {
        return (!admitted || admitted->Test(l)) && !parts_.index->IsTombstoned(l);
      };
      const CentroidSearchParams knobs{.probe = uint32_t(params.probe),
                                       .ef_search = uint32_t(params.probe_ef),
                                       .refine = params.refine};
      ATTN_RETURN_IF_ERROR(state->first_stage->Search(
          q.tokens.data(), q.token_weights.empty() ? nullptr : q.token_weights.data(), q.num_tokens,
          q.candidates, knobs, admit, &c.neighbors, take_view));
      c.first_stage = CandidateSource::kCentroids;
      if (q.retrieval == Retrieval::kHybrid) ATTN_RETURN_IF_ERROR(AddLexical(q, &c));
      return c;
    }
  }
  // The index's own encoding of the query: its pooled vector, or the FDE
  // of its tokens.
  const IndexVectors& vectors = parts_.index->vectors();
  const float* query = q.pooled.data();
  std::vector<float> encoded;
  if (vectors.fde() != nullptr) {
    encoded.resize(vectors.dim());
    vectors.OfQuery(q.tokens.data(), q.token_weights.empty() ? nullptr : q.token_weights.data(),
                    q.num_tokens, q.pooled.data(), encoded.data());
    query = encoded.data();
    c.first_stage = CandidateSource::kFde;
  }
  ATTN_RETURN_IF_ERROR(
      parts_.index->Search(query, q.candidates, params, matches, take_view, &c.neighbors));
  if (q.retrieval == Retrieval::kHybrid) ATTN_RETURN_IF_ERROR(AddLexical(q, &c));
  return c;
}

absl::Status SearchPipeline::AddLexical(const SearchQuery& q, Candidates* c) const {
  std::optional<LabelBitmap> admitted;
  if (!q.filter.empty() || !q.ranges.empty()) admitted = parts_.filter->Match(q.filter, q.ranges);
  const std::function<bool(Label)> accept = [&](Label l) {
    return (!admitted || admitted->Test(l)) && !parts_.index->IsTombstoned(l);
  };
  // Labels written after the view was taken are not readable through it:
  // Fetch finds no tokens for them and they drop out, as a document deleted
  // meanwhile does.
  absl::StatusOr<std::vector<LexicalHit>> found = parts_.lexical(q.text, q.candidates, accept);
  // A lexical index stopped by an error (rebuilt at the next open): a
  // hybrid search goes on with the first stage's candidates alone.
  if (absl::IsUnavailable(found.status()) && q.retrieval == Retrieval::kHybrid) {
    return absl::OkStatus();
  }
  ATTN_RETURN_IF_ERROR(found.status());
  const std::vector<LexicalHit>& hits = *found;
  absl::flat_hash_map<Label, size_t> seen;
  for (size_t i = 0; i < c->neighbors.size(); ++i) seen[c->neighbors[i].label] = i;
  for (const LexicalHit& h : hits) {
    c->lexical[h.label] = float(h.score);
    if (seen.contains(h.label)) continue;
    // Its first-stage score: BM25's when the lexical generator is the only
    // one, else none (0).
    c->neighbors.push_back({h.label, q.retrieval == Retrieval::kLexical ? float(h.score) : 0.f});
    ++c->lexical_only;
  }
  return absl::OkStatus();
}

absl::StatusOr<SearchPipeline::Fetched> SearchPipeline::Fetch(const SearchQuery& q,
                                                              const Candidates& c) const {
  std::vector<Label> labels;
  labels.reserve(c.neighbors.size());
  for (const auto& n : c.neighbors) labels.push_back(n.label);
  // The memory this search holds, now that the stored token counts are
  // known: the fetched matrices and the similarities (m x rows floats per
  // matmul chunk).
  const size_t row_bytes = StoredRowBytes(parts_.store->config());
  const auto admit = [&](size_t rows) {
    const size_t bytes = rows * row_bytes +
                         size_t(q.num_tokens) * std::min(rows, parts_.max_rows_per_gemm) * 4 +
                         labels.size() * 64;
    return CheckRequestBytes(bytes, parts_.limits.max_request_bytes,
                             absl::StrCat("candidates: the token matrices of ", labels.size(),
                                          " candidates (", rows, " rows) and their similarities"));
  };
  Fetched f;
  f.block = std::move(SpareBlock());
  f.code_sets.resize(2);
  Fetched::CodeSet& current = f.code_sets[0];
  Fetched::CodeSet& previous = f.code_sets[1];
  current.codec = parts_.codec ? parts_.codec() : nullptr;
  // Every candidate's rows from the store: while the codec is stale (see
  // SearchParts), and for an exhaustive search where the rows are kept
  // (exact, as a collection without codes gives it, within the same
  // request memory limit).
  if (current.codec != nullptr &&
      ((parts_.codec_stale && parts_.codec_stale()) || (c.exhaustive && parts_.exact_tier))) {
    current.codec.reset();
  }
  previous.codec = current.codec && parts_.previous_codec ? parts_.previous_codec() : nullptr;
  if (previous.codec && previous.codec->version == current.codec->version) previous.codec.reset();
  // Nor codes on an older encoder's vocabulary than the current codec's.
  if (previous.codec && previous.codec->encoder_version != 0 &&
      previous.codec->encoder_version != current.codec->encoder_version) {
    previous.codec.reset();
  }
  // The set of a codes record's version (null: no codec of that version).
  auto set_of = [&](std::string_view record) -> Fetched::CodeSet* {
    const uint64_t version = CodesVersion(record);
    for (Fetched::CodeSet& set : f.code_sets) {
      if (set.codec != nullptr && set.codec->version == version) return &set;
    }
    return nullptr;
  };
  // Candidates with neither rows in memory nor stored rows are kept as
  // codes only (keep_full_precision off): their codes, read through the
  // view, when they are the current codec's.
  auto add_stored_codes = [&](const std::vector<size_t>& which) -> absl::Status {
    if (current.codec == nullptr || which.empty()) return absl::OkStatus();
    std::vector<Label> wanted;
    for (size_t i : which) wanted.push_back(labels[i]);
    ATTN_ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> batch,
                          parts_.store->GetCodes(wanted, &*c.view));
    // Moved in whole: the strings' bytes stay where `src` will point.
    const std::vector<std::optional<std::string>>& stored_codes =
        f.stored_codes.emplace_back(std::move(batch));
    for (size_t k = 0; k < which.size(); ++k) {
      if (!stored_codes[k]) continue;
      Fetched::CodeSet* set = set_of(*stored_codes[k]);
      if (set == nullptr) continue;
      ATTN_ASSIGN_OR_RETURN(const CodesView cv,
                            ParseCodes(*stored_codes[k], set->codec->codec->code_bytes()));
      f.block.found[which[k]] = true;
      set->Add(which[k], cv);
    }
    return absl::OkStatus();
  };
  auto coded_rows = [&]() { return current.total + previous.total; };
  if (parts_.arena == nullptr) {
    f.store_reads = labels.size();
    ATTN_RETURN_IF_ERROR(parts_.store->GetTokens(labels, &f.block, admit, &*c.view));
    std::vector<size_t> missing;
    for (size_t i = 0; i < labels.size(); ++i) {
      if (!f.block.found[i]) missing.push_back(i);
    }
    ATTN_RETURN_IF_ERROR(add_stored_codes(missing));
    if (coded_rows() > 0) ATTN_RETURN_IF_ERROR(admit(f.block.total_rows + coded_rows()));
    return f;
  }
  const CollectionConfig& config = parts_.store->config();
  const TokenDtype dtype = config.token_dtype;
  const size_t elem_bytes = size_t(config.dim) * TokenDtypeSize(dtype);  // a row's elements
  const size_t n = labels.size();
  TokenBlock& b = f.block;
  b.rows.assign(n, 0);
  b.offsets.assign(n, 0);
  b.found.assign(n, false);
  f.src.assign(n, nullptr);
  // Where each candidate's int8 scales are.
  std::vector<const float*> scale_src(dtype == TokenDtype::kInt8 ? n : 0, nullptr);
  std::vector<size_t> missing;
  parts_.arena->Prefetch(labels.data(), n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t tag = kRowsRecord;
    const std::string_view r = parts_.arena->Find(labels[i], &tag);
    if (tag == kCodesRecord && !r.empty()) {
      // Codes of the current codec, or of the one before it while the
      // collection is re-encoded; codes of any other are read as rows from
      // the store.
      Fetched::CodeSet* set = set_of(r);
      if (set == nullptr) {
        missing.push_back(i);
        continue;
      }
      ATTN_ASSIGN_OR_RETURN(const CodesView cv, ParseCodes(r, set->codec->codec->code_bytes()));
      b.found[i] = true;
      set->Add(i, cv);
      continue;
    }
    if (r.empty()) {
      missing.push_back(i);
      continue;
    }
    uint32_t rows;
    std::memcpy(&rows, r.data(), 4);
    b.rows[i] = rows;
    b.found[i] = true;
    f.src[i] = codec::TokenData(r, dtype, rows);
    if (!scale_src.empty()) {
      scale_src[i] = reinterpret_cast<const float*>(codec::TokenScales(r));
    }
  }
  f.store_reads = missing.size();
  if (!missing.empty()) {
    std::vector<Label> missed;
    for (size_t i : missing) missed.push_back(labels[i]);
    ATTN_RETURN_IF_ERROR(parts_.store->GetTokens(missed, &f.misses, nullptr, &*c.view));
    const char* base = static_cast<const char*>(f.misses.data());
    std::vector<size_t> without_rows;
    for (size_t k = 0; k < missing.size(); ++k) {
      const size_t i = missing[k];
      if (!f.misses.found[k]) {
        without_rows.push_back(i);
        continue;
      }
      b.rows[i] = f.misses.rows[k];
      b.found[i] = true;
      f.src[i] = base + f.misses.offsets[k] * elem_bytes;
      if (!scale_src.empty()) scale_src[i] = f.misses.scales.data() + f.misses.offsets[k];
    }
    ATTN_RETURN_IF_ERROR(add_stored_codes(without_rows));
  }
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    b.offsets[i] = total;
    total += b.rows[i];
  }
  b.total_rows = total;
  ATTN_RETURN_IF_ERROR(admit(total + coded_rows()));
  b.scales.resize(scale_src.empty() ? 0 : total);
  for (size_t i = 0; i < scale_src.size(); ++i) {
    if (b.rows[i] > 0) std::memcpy(&b.scales[b.offsets[i]], scale_src[i], b.rows[i] * 4);
  }
  f.rows_from = [src = f.src.data(), offsets = b.offsets.data(), rows = b.rows.data(), n,
                 elem_bytes](size_t first, size_t count, void* out) {
    CopyRows(src, offsets, rows, n, elem_bytes, first, count, static_cast<char*>(out));
  };
  return f;
}

namespace {

// Diversify's rules, applied to hits best first.
class Diversifier {
 public:
  explicit Diversifier(const Diversify& d) : d_(d) {}

  // Whether `doc` may join the hits admitted so far (and then it has).
  bool Admit(const Document& doc) {
    const std::string* value = nullptr;
    if (!d_.collapse_field.empty()) {
      auto it = doc.metadata.find(d_.collapse_field);
      if (it != doc.metadata.end()) value = &it->second;
      if (value != nullptr && per_value_[*value] >= d_.max_per_value) return LeaveOut();
    }
    std::vector<float> unit;
    if (d_.max_similarity > 0.f && !doc.pooled.empty()) {
      unit = doc.pooled;
      double norm = 0;
      for (float x : unit) norm += double(x) * x;
      if (norm > 0) {
        const float inv = float(1.0 / std::sqrt(norm));
        for (float& x : unit) x *= inv;
      }
      for (const std::vector<float>& k : kept_) {
        if (k.size() != unit.size()) continue;
        double dot = 0;
        for (size_t j = 0; j < k.size(); ++j) dot += double(k[j]) * unit[j];
        if (dot >= d_.max_similarity) return LeaveOut();
      }
    }
    if (value != nullptr) ++per_value_[*value];
    if (!unit.empty()) kept_.push_back(std::move(unit));
    return true;
  }
  uint32_t left_out() const { return left_out_; }

 private:
  bool LeaveOut() {
    ++left_out_;
    return false;
  }
  const Diversify& d_;
  absl::flat_hash_map<std::string, uint32_t> per_value_;
  std::vector<std::vector<float>> kept_;  // admitted hits' unit pooled vectors
  uint32_t left_out_ = 0;
};

// fusion_weight × the score + (1 − fusion_weight) × BM25's, each min-max
// normalised over the candidates (BM25 0 where it did not find one; all
// equal normalise to 1).
void Fuse(const SearchQuery& q, const SearchPipeline::Candidates& c,
          std::vector<SearchPipeline::ScoredCandidate>* best) {
  if (best->empty()) return;
  auto bm25 = [&](Label l) {
    const auto it = c.lexical.find(l);
    return it == c.lexical.end() ? 0.f : it->second;
  };
  float lo = best->front().score, hi = lo, blo = bm25(best->front().label), bhi = blo;
  for (const auto& b : *best) {
    lo = std::min(lo, b.score);
    hi = std::max(hi, b.score);
    blo = std::min(blo, bm25(b.label));
    bhi = std::max(bhi, bm25(b.label));
  }
  const float a = q.fusion_weight;
  for (auto& b : *best) {
    const float s = hi > lo ? (b.score - lo) / (hi - lo) : 1.f;
    const float l = bhi > blo ? (bm25(b.label) - blo) / (bhi - blo) : 1.f;
    b.score = a * s + (1.f - a) * l;
  }
}

}  // namespace

absl::StatusOr<SearchPipeline::Scored> SearchPipeline::Score(const SearchQuery& q,
                                                             const Candidates& c,
                                                             const Fetched* fetched) const {
  Scored s;
  const std::vector<AnnNeighbor>& n = c.neighbors;
  if (fetched == nullptr) {  // rerank NONE, or no candidate
    for (size_t i = 0; i < n.size(); ++i) {
      if (Usable(n[i].score, n[i].label)) s.best.push_back({n[i].score, n[i].score, n[i].label, i});
    }
  } else {
    std::vector<float> scores(n.size());
    const Fetched& f = *fetched;
    const bool coded = f.any_coded();
    if (f.block.total_rows > 0 || !coded) {
      ATTN_RETURN_IF_ERROR(parts_.reranker->Score(RerankQueryOf(q), f.tokens(), scores.data(),
                                                  q.explain && !coded ? &s.similarities : nullptr));
    }
    std::vector<bool> from_codes(n.size(), false), dropped(n.size(), false);
    if (coded) {
      for (const Fetched::CodeSet& set : f.code_sets) {
        if (set.coded.empty()) continue;
        std::vector<float> code_scores(set.coded.size());
        const CandidateCodes cc{
            nullptr,          set.total,     set.code_rows.data(), set.code_offsets.data(),
            set.coded.size(), set.src.data()};
        ATTN_RETURN_IF_ERROR(set.codec->scorer->Score(RerankQueryOf(q), cc, code_scores.data()));
        for (size_t k = 0; k < set.coded.size(); ++k) {
          scores[set.coded[k]] = code_scores[k];
          from_codes[set.coded[k]] = true;
        }
      }
      if (parts_.exact_tier) {
        ATTN_RETURN_IF_ERROR(ExactTier(q, c, f, &scores, &from_codes, &dropped, &s));
      }
    }
    for (size_t i = 0; i < n.size(); ++i) {
      // A candidate deleted between the index's update and the view has no
      // tokens.
      if (f.block.found[i] && !dropped[i] && Usable(scores[i], n[i].label)) {
        s.best.push_back({scores[i], n[i].score, n[i].label, i, from_codes[i]});
      }
    }
  }
  if (q.retrieval != Retrieval::kSemantic && q.fusion_weight < 1.f) Fuse(q, c, &s.best);
  // A few beyond top_k, for the hits whose documents are gone (see Hits);
  // diversifying, every candidate (any may be needed).
  const size_t keep = q.diversify.active()
                          ? s.best.size()
                          : std::min<size_t>(size_t(q.top_k) + kSpareHits, s.best.size());
  std::partial_sort(s.best.begin(), s.best.begin() + long(keep), s.best.end(),
                    [](const ScoredCandidate& a, const ScoredCandidate& b) {
                      if (a.score != b.score) return a.score > b.score;
                      return a.label < b.label;
                    });
  s.best.resize(keep);
  return s;
}

absl::StatusOr<std::vector<SearchHit>> SearchPipeline::Hits(
    const SearchQuery& q, const Candidates& c, const Fetched* fetched, const Scored& scored,
    int64_t* explain_us, uint32_t* diversified) const {
  // The best top_k whose documents the view holds: a candidate deleted
  // after the ANN stage and before the view may still have had its tokens
  // in the arena and a score; the next best take its place.
  // Diversifying, a candidate may be left out too (Diversifier).
  std::vector<const ScoredCandidate*> best;
  std::vector<std::optional<Document>> docs;
  Diversifier diversifier(q.diversify);
  const bool diversify = q.diversify.active();
  for (size_t next = 0; best.size() < q.top_k && next < scored.best.size();) {
    size_t n = std::min(size_t(q.top_k) - best.size(), scored.best.size() - next);
    if (diversify) n = std::min(std::max<size_t>(n, kDiversifyBatch), scored.best.size() - next);
    std::vector<Label> labels;
    for (size_t i = next; i < next + n; ++i) labels.push_back(scored.best[i].label);
    std::vector<std::optional<Document>> got;
    // Near-duplicates need the pooled vectors, and only them.
    ATTN_RETURN_IF_ERROR(parts_.store->GetDocuments(
        labels,
        q.diversify.max_similarity > 0.f ? DocStore::Vectors::kPooled : DocStore::Vectors::kNone,
        &got, &*c.view));
    for (size_t i = 0; i < n && best.size() < q.top_k; ++i) {
      if (!got[i]) continue;  // deleted before the view was taken
      if (diversify && !diversifier.Admit(*got[i])) continue;
      best.push_back(&scored.best[next + i]);
      docs.push_back(std::move(got[i]));
    }
    next += n;
  }
  *diversified = diversifier.left_out();
  // The evidence for the hits, from the similarities Score kept (or, when
  // the candidates took several matmuls, one more over the hits' rows).
  std::vector<std::vector<TokenEvidence>> evidence;
  std::vector<std::vector<float>> maps;
  const auto t_explain = Clock::now();
  if (q.attention_map && fetched != nullptr && !best.empty()) {
    // With explain, the evidence comes from the maps' own pass.
    ATTN_ASSIGN_OR_RETURN(
        maps, AttentionMaps(q, *fetched, scored, best, q.explain ? &evidence : nullptr));
  } else if (q.explain && fetched != nullptr && !best.empty()) {
    if (!fetched->any_coded()) {
      std::vector<size_t> which;
      for (const ScoredCandidate* s : best) which.push_back(s->candidate);
      ATTN_RETURN_IF_ERROR(parts_.reranker->ExplainScored(RerankQueryOf(q), fetched->tokens(),
                                                          scored.similarities, which, &evidence));
    } else {
      ATTN_RETURN_IF_ERROR(ExplainWithCodes(q, *fetched, scored, best, &evidence, nullptr));
    }
  }
  *explain_us = MicrosSince(t_explain);
  std::vector<SearchHit> hits;
  for (size_t i = 0; i < best.size(); ++i) {
    SearchHit hit;
    Document& d = *docs[i];
    hit.id = std::move(d.id);
    hit.score = best[i]->score;
    hit.ann_score = best[i]->ann_score;
    hit.from_codes = best[i]->from_codes;
    if (const auto it = c.lexical.find(best[i]->label); it != c.lexical.end()) {
      hit.lexical_score = it->second;
    }
    if (q.include_text) hit.text = d.text;
    if (q.include_metadata) hit.metadata = std::move(d.metadata);
    if (!evidence.empty()) AddEvidence(q, d, evidence[i], &hit);
    if (!maps.empty()) {
      hit.attention = std::move(maps[i]);
      hit.attention_cols = uint32_t(hit.attention.size() / std::max<uint32_t>(1, q.num_tokens));
      hit.token_texts = std::move(d.token_texts);
      hit.token_spans = std::move(d.token_spans);
    }
    hits.push_back(std::move(hit));
  }
  return hits;
}

absl::StatusOr<std::vector<std::vector<float>>> SearchPipeline::AttentionMaps(
    const SearchQuery& q, const Fetched& fetched, const Scored& scored,
    const std::vector<const ScoredCandidate*>& best,
    std::vector<std::vector<TokenEvidence>>* evidence) const {
  // Every hit scored from its rows: the maps come from the similarities
  // Score kept. Else see ExplainWithCodes.
  const bool kept = !fetched.any_coded();
  // A hit's rows: its codes', the exact tier's, or those fetched.
  const auto hit_rows = [&](size_t i, bool from_codes) -> uint64_t {
    if (from_codes) {
      for (const Fetched::CodeSet& set : fetched.code_sets) {
        const auto it = std::find(set.coded.begin(), set.coded.end(), i);
        if (it != set.coded.end()) return set.code_rows[size_t(it - set.coded.begin())];
      }
      return 0;
    }
    for (size_t k = 0; k < scored.exact_of.size(); ++k) {
      if (scored.exact_of[k] == i && scored.exact_rows.found[k]) return scored.exact_rows.rows[k];
    }
    return fetched.block.rows[i];
  };
  std::vector<size_t> which;
  uint64_t rows = 0;
  for (const ScoredCandidate* s : best) {
    which.push_back(s->candidate);
    rows += hit_rows(s->candidate, s->from_codes);
  }
  const uint64_t cells = rows * q.num_tokens;
  if (cells > parts_.limits.max_attention_cells) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention_map: the hits' maps hold ", cells, " weights (", q.num_tokens,
        " query tokens x ", rows, " document tokens), above the limit of ",
        parts_.limits.max_attention_cells,
        " (max_attention_cells, the server's flag); ask for fewer hits or query tokens"));
  }
  std::vector<std::vector<float>> maps;
  if (kept) {
    ATTN_RETURN_IF_ERROR(parts_.reranker->AttentionMapsScored(
        RerankQueryOf(q), fetched.tokens(), scored.similarities, which, &maps, evidence));
  } else {
    ATTN_RETURN_IF_ERROR(ExplainWithCodes(q, fetched, scored, best, evidence, &maps));
  }
  return maps;
}

absl::Status SearchPipeline::ExactTier(const SearchQuery& q, const Candidates& c, const Fetched& f,
                                       std::vector<float>* scores, std::vector<bool>* from_codes,
                                       std::vector<bool>* dropped, Scored* s) const {
  // The best candidates overall; of them, those scored from codes.
  const size_t n = scores->size();
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i) {
    if (f.block.found[i]) order.push_back(i);
  }
  const size_t keep = std::min(order.size(), size_t(2) * q.top_k);
  std::partial_sort(order.begin(), order.begin() + long(keep), order.end(),
                    [&](size_t a, size_t b) { return (*scores)[a] > (*scores)[b]; });
  std::vector<bool> best(n, false);
  for (size_t k = 0; k < keep; ++k) best[order[k]] = true;
  std::vector<Label> labels;
  for (const Fetched::CodeSet& set : f.code_sets) {
    for (size_t i : set.coded) {
      if (best[i]) {
        s->exact_of.push_back(i);
        labels.push_back(c.neighbors[i].label);
      } else {
        (*dropped)[i] = true;  // only the exact scores compete
      }
    }
  }
  if (labels.empty()) return absl::OkStatus();
  ATTN_RETURN_IF_ERROR(parts_.store->GetTokens(labels, &s->exact_rows, nullptr, &*c.view));
  const TokenBlock& e = s->exact_rows;
  std::vector<float> exact(labels.size());
  ATTN_RETURN_IF_ERROR(parts_.reranker->Score(RerankQueryOf(q), TokensOf(e), exact.data()));
  for (size_t k = 0; k < labels.size(); ++k) {
    const size_t i = s->exact_of[k];
    if (!e.found[k]) {
      (*dropped)[i] = true;
      continue;
    }
    (*scores)[i] = exact[k];
    (*from_codes)[i] = false;
  }
  return absl::OkStatus();
}

void SearchPipeline::CandidateRows(const Fetched& f, const Scored& s, size_t i,
                                   TokenBlock* out) const {
  const CollectionConfig& config = parts_.store->config();
  const TokenDtype dtype = config.token_dtype;
  const uint32_t dim = config.dim;
  const size_t elem_bytes = size_t(dim) * TokenDtypeSize(dtype);
  auto append = [&](const char* rows, const float* scales, size_t n) {
    const size_t at = out->total_rows;
    out->total_rows += n;
    out->storage.resize((out->total_rows * elem_bytes + 3) / 4);
    std::memcpy(reinterpret_cast<char*>(out->storage.data()) + at * elem_bytes, rows,
                n * elem_bytes);
    if (dtype == TokenDtype::kInt8) out->scales.insert(out->scales.end(), scales, scales + n);
  };
  const float* block_scales =
      f.block.scales.empty() ? nullptr : f.block.scales.data() + f.block.offsets[i];
  if (!f.src.empty() && f.src[i] != nullptr) {
    append(f.src[i], block_scales, f.block.rows[i]);
    return;
  }
  if (f.src.empty() && f.block.found[i] && f.block.rows[i] > 0) {
    // Without the arena the rows are in the block itself.
    append(static_cast<const char*>(f.block.data()) + f.block.offsets[i] * elem_bytes, block_scales,
           f.block.rows[i]);
    return;
  }
  for (size_t k = 0; k < s.exact_of.size(); ++k) {
    if (s.exact_of[k] != i || !s.exact_rows.found[k]) continue;
    const TokenBlock& e = s.exact_rows;
    append(static_cast<const char*>(e.data()) + e.offsets[k] * elem_bytes,
           e.scales.empty() ? nullptr : e.scales.data() + e.offsets[k], e.rows[k]);
    return;
  }
}

bool SearchPipeline::Usable(float score, Label label) const {
  if (std::isfinite(score)) return true;
  // Validated writes and queries cannot produce one; a store written by an
  // older version could (vectors of subnormals normalised to infinity).
  if (!warned_nonfinite_.exchange(true)) {
    LogWarn(
        "a document scores NaN or infinity (its stored vectors are not finite): it is left "
        "out of results until upserted again",
        {{"collection", parts_.name}, {"label", label}, {"score", double(score)}});
  }
  return false;
}

}  // namespace attnsearch
