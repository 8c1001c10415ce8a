// The engine's search API types: the query, its results and the request
// limits (Collection::Search, SearchPipeline).
#ifndef ATTNSEARCH_ENGINE_SEARCH_TYPES_H_
#define ATTNSEARCH_ENGINE_SEARCH_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/types.h"
#include "engine/filter_index.h"
#include "rerank/reranker.h"

namespace attnsearch {

// Limits on requests, each answered with INVALID_ARGUMENT naming it (the
// memory limit with RESOURCE_EXHAUSTED).
struct RequestLimits {
  // Largest top_k. Default: 1000.
  uint32_t max_top_k = 1000;
  // Largest number of candidates reranked per query. Default: 20000.
  uint32_t max_candidates = 20000;
  // Largest number of query token rows. Default: 1024.
  uint32_t max_query_tokens = 1024;
  // Largest number of token rows per document. Default: 16384.
  uint32_t max_document_tokens = 16384;
  // Largest number of documents in one Upsert batch, and of ids in one Get
  // or Delete. Default: 10000.
  size_t max_batch_documents = 10000;
  // Most bytes one request may hold (0: no limit): for a Search, the
  // candidates' token matrices as fetched plus the similarities reranking
  // them takes (checked once the ANN stage has chosen the candidates and
  // their stored token counts are known, before the matrices are copied);
  // for an Upsert, the batch's documents as prepared for the store (vectors
  // in f32, text, metadata, token texts and spans, and the encoded token
  // rows). Over it: RESOURCE_EXHAUSTED naming the field (`candidates`,
  // `documents`) and the limit (max_request_mb, the server's flag), nothing
  // stored. Default: 0.
  size_t max_request_bytes = 0;
  // Most attention weights a Search may return with attention_map (the
  // hits' query tokens x document tokens, summed). Over it:
  // INVALID_ARGUMENT naming the limit (max_attention_cells, the server's
  // flag). Default: 500,000 (2 MB of weights: under gRPC clients' default
  // 4 MB message limit).
  uint64_t max_attention_cells = 500000;
};

// Candidates reranked per text query unless the query says otherwise: from
// the pooled index, and from the centroid first stage (which keeps the
// exhaustive rerank's top 10 with 50 on cranfield and scifact-train,
// bench/RESULTS.md).
inline constexpr uint32_t kDefaultTextCandidates = 1000;
// Candidates from each generator per hybrid text query unless the query
// says otherwise: with BM25's, 100 reranked by attention equal the
// exhaustive rerank on cranfield and scifact-train (bench/RESULTS.md).
inline constexpr uint32_t kDefaultHybridTextCandidates = 100;
inline constexpr uint32_t kDefaultCentroidTextCandidates = 100;

// The smallest attention temperature a query may give: 1/τ must stay finite
// in float (below it, use RerankMode::kMaxSim, the τ → 0 limit).
inline constexpr float kMinTemperature = 1e-30f;
// The largest sum of a query's token weights: a score is bounded by it in
// magnitude, so it stays finite in float.
inline constexpr double kMaxTokenWeightSum = 1e30;

// Result diversification: which hits a page may hold together. Off by
// default; each part applies on its own. A candidate it leaves out makes
// room for the next best.
struct Diversify {
  // At most max_per_value hits share a value of this metadata field (the
  // best ones); hits without the field are never collapsed. Empty: off.
  std::string collapse_field;
  uint32_t max_per_value = 1;  // 0 reads as 1
  // Near-duplicates: a hit whose pooled vector has cosine >= max_similarity
  // with a better hit's is left out. In [0, 1]; 0: off.
  float max_similarity = 0.f;

  bool active() const { return !collapse_field.empty() || max_similarity > 0.f; }
};

struct SearchQuery {
  // Query text, encoded by the collection's built-in encoder; or else:
  std::string text;
  // Query vectors; at least one of pooled and tokens. Normalised here.
  std::vector<float> pooled;  // dim values, or empty
  uint32_t num_tokens = 0;
  std::vector<float> tokens;         // num_tokens x dim, or empty
  std::vector<float> token_weights;  // num_tokens values, or empty (1/m each);
                                     // finite, >= 0, summing to <= kMaxTokenWeightSum

  uint32_t top_k = 0;       // required, 1..max_top_k
  uint32_t candidates = 0;  // 0: max(100, top_k) capped by the limit
                            // (text queries: max(1000, top_k))
  RerankMode mode = RerankMode::kAttention;
  float temperature = 0.f;                // 0: kDefaultTemperature; else >= kMinTemperature
  std::vector<MetadataCondition> filter;  // all must hold ("filter.must")
  std::vector<RangeCondition> ranges;     // all must hold too ("filter.ranges")
  std::string ann_params;                 // "efSearch=128"
  bool include_text = false;
  bool include_metadata = false;
  // Per hit, the evidence for every query token and, when the document
  // stored its text and token spans, a highlighted snippet.
  bool explain = false;
  // Marks around highlighted spans. Defaults: "<em>", "</em>".
  std::string highlight_pre = "<em>";
  std::string highlight_post = "</em>";
  // Per hit, the whole attention map: every query token's weights over the
  // document's tokens, as the reranker computed them (ATTENTION or MAXSIM).
  bool attention_map = false;
  // Where the candidates come from; kDefault: resolved by the search (text:
  // kHybrid when the collection has a lexical index, else kSemantic).
  Retrieval retrieval = Retrieval::kDefault;
  // LEXICAL and HYBRID: the final score is fusion_weight × the rerank score
  // (the first stage's with kNone) + (1 − fusion_weight) × BM25's, each
  // min-max normalised over the candidates. In [0, 1]. Default: 1.
  float fusion_weight = 1.f;
  // Which hits may stand together (off by default).
  Diversify diversify;

  // Set when the text is encoded: each query token row's word (an
  // expansion row's is its vocabulary key).
  std::vector<std::string> token_texts;
};

struct TokenMatch {
  uint32_t query_token = 0;
  uint32_t document_token = 0;
  std::string document_token_text;        // when the document stored token texts
  bool has_span = false;                  // when the document stored token spans
  uint32_t span_begin = 0, span_end = 0;  // byte span in the text
  float weight = 0.f;
  float contribution = 0.f;
};

struct SearchHit {
  std::string id;
  float score = 0.f;
  float ann_score = 0.f;
  std::string text;
  std::map<std::string, std::string> metadata;
  std::vector<TokenMatch> matches;
  std::string snippet;  // with explain, when text and spans are stored
  // The score (and evidence) came from the document's token codes, not
  // from its full-precision rows (a residual codec without the exact tier).
  bool from_codes = false;
  // With attention_map: attention[i * attention_cols + j] is query token i's
  // weight on document token j (each row sums to 1); the document's token
  // texts and spans when it stored them.
  std::vector<float> attention;
  uint32_t attention_cols = 0;
  std::vector<std::string> token_texts;
  std::vector<std::pair<uint32_t, uint32_t>> token_spans;
  // Its BM25 score when the lexical generator found it, else 0.
  float lexical_score = 0.f;
};

// Microseconds spent per stage.
struct SearchTiming {
  int64_t encode_us = 0, ann_us = 0, fetch_us = 0, rerank_us = 0, total_us = 0;
  // Set by the server: how long the request waited for a worker before the
  // engine started (not part of total_us).
  int64_t queue_us = 0;
};

// Where a search's candidates' tokens came from (0 without a rerank).
struct CandidateSources {
  uint32_t store = 0;           // read from the store (not in memory)
  uint32_t codes = 0;           // the token arena's codes of the current codec
  uint32_t previous_codes = 0;  // codes of the codec before it (a re-encoding)
  // The first stage that found the candidates.
  CandidateSource first_stage = CandidateSource::kPooled;
  // The retrieval that ran, and how many candidates only the lexical
  // generator found.
  Retrieval retrieval = Retrieval::kSemantic;
  uint32_t lexical = 0;
  // Candidates diversification left out, each better than the last hit.
  uint32_t diversified = 0;
};

struct SearchResult {
  std::vector<SearchHit> hits;
  // A text query's token rows as words (SearchQuery::token_texts), with
  // explain or attention_map: the rows of matches and attention maps.
  std::vector<std::string> query_token_texts;
  SearchTiming timing;
  CandidateSources sources;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_SEARCH_TYPES_H_
