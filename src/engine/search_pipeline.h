// SearchPipeline: one collection's search, as stages that each hand the
// next a plain struct:
//
//   Prepare      the query checked and normalised (text: encoded by the
//                collection's encoder), its ANN knobs chosen
//   Candidates   the ANN stage under the index's lock (filter and
//                tombstones inside), and the store view taken with it
//   Fetch        the candidates' token matrices: found in the token arena
//                (the reranker copies their rows piece by piece), or
//                without one (and for a candidate the arena no longer
//                holds) one MultiGet through the view; bounded by the
//                request memory limit
//   Score        the reranker's scores; the top_k kept, best first (a NaN
//                or infinite score, which only vectors stored unvalidated
//                by an older version give, is left out with a warning)
//   Hits         the hits' documents through the view (diversified when
//                asked: a candidate left out makes room for the next), with
//                the evidence and snippets when asked
//
// The deadline is checked before each stage.
//
// Thread safety: const and stateless between calls; Run may be called
// concurrently (the parts it reads are thread-safe).
#ifndef ATTNSEARCH_ENGINE_SEARCH_PIPELINE_H_
#define ATTNSEARCH_ENGINE_SEARCH_PIPELINE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ann/ann_index.h"
#include "engine/filter_index.h"
#include "engine/live_index.h"
#include "engine/search_types.h"
#include "engine/token_arena.h"
#include "engine/token_codes.h"
#include "lexical/lexical_index.h"
#include "rerank/reranker.h"
#include "storage/doc_store.h"
#include "text/encoder.h"

namespace attnsearch {

// What a pipeline reads; every pointer must outlive it.
struct SearchParts {
  const DocStore* store = nullptr;
  const Reranker* reranker = nullptr;
  const LiveIndex* index = nullptr;
  const FilterIndex* filter = nullptr;
  // The candidates' token matrices in memory; null: read from the store.
  const TokenArena* arena = nullptr;
  // The collection's trained token codec now (null: none), and whether
  // its best candidates are scored again from their rows (the exact tier).
  std::function<std::shared_ptr<const TokenCodecState>()> codec;
  // While a retrained codec re-encodes the collection: the codec before it,
  // whose codes the documents not yet re-encoded still hold (null: none).
  std::function<std::shared_ptr<const TokenCodecState>()> previous_codec;
  // Whether the codec's centroids are an older encoder's vocabulary while
  // the rows are kept (it retrains): its codes would score the new
  // encoder's rows by the old one's meanings, so the candidates' rows are
  // read from the store instead until it is done. Null: never.
  std::function<bool()> codec_stale;
  bool exact_tier = true;
  // Whether the codec's centroid first stage (TokenCodecState::first_stage)
  // serves now; null: never (the pooled ANN index).
  std::function<bool()> first_stage_ready;
  RequestLimits limits;
  // The reranker's largest matmul, for the memory a search takes.
  size_t max_rows_per_gemm = 0;
  // The collection's encoder now (null until trained).
  std::function<std::shared_ptr<const text::Encoder>()> encoder;
  // The ANN knobs of a search that gives none (the tuned ones).
  std::function<AnnSearchParams()> default_params;
  // BM25 over the texts: the best k labels `accept` takes, best first
  // (LexicalIndex::Search); null: the collection has no lexical index.
  std::function<absl::StatusOr<std::vector<LexicalHit>>(std::string_view text, size_t k,
                                                        const std::function<bool(Label)>& accept)>
      lexical;
  // Names the collection in logs.
  std::string name;
};

class SearchPipeline {
 public:
  explicit SearchPipeline(SearchParts parts) : parts_(std::move(parts)) {}
  const SearchParts& parts() const { return parts_; }

  // Runs every stage. DEADLINE_EXCEEDED (and no further work) once
  // `deadline` has passed.
  absl::StatusOr<SearchResult> Run(SearchQuery query, absl::Time deadline) const;

  // The stages' results.
  struct Candidates {
    std::vector<AnnNeighbor> neighbors;
    // The store as the ANN stage saw it; every later read goes through it.
    std::optional<DocStore::ReadView> view;
    // With the arena: taken with the view, so that what it holds stays.
    std::optional<TokenArena::Pin> pin;
    // Where they came from.
    CandidateSource first_stage = CandidateSource::kPooled;
    // The BM25 scores of those the lexical generator found, and how many
    // only it found.
    absl::flat_hash_map<Label, float> lexical;
    uint32_t lexical_only = 0;
    // Every live document is a candidate (the ANN stage skipped): scored
    // exactly, from rows, where the collection keeps them.
    bool exhaustive = false;
  };
  struct Fetched {
    // One entry per candidate, in the candidates' order; without the arena
    // it also holds their rows.
    TokenBlock block;
    // With the arena: the rows of candidates it lacked (deleted or replaced
    // since the ANN stage), read through the view; where each candidate's
    // rows are; and the reranker's access to them.
    TokenBlock misses;
    std::vector<const char*> src;
    std::function<void(size_t first, size_t n, void* out)> rows_from;
    CandidateTokens tokens() const;
    // Candidates held as codes (their rows in `block` are 0), per codec:
    // which, where each one's codes are (in the pinned arena, or in
    // `stored_codes`; read in place, not copied) and their rows; the codec
    // that made them.
    struct CodeSet {
      std::shared_ptr<const TokenCodecState> codec;
      std::vector<size_t> coded;
      std::vector<uint32_t> code_rows;
      std::vector<size_t> code_offsets;
      std::vector<const uint8_t*> src;
      size_t total = 0;
      void Add(size_t candidate, const CodesView& v);
    };
    // [0]: the current codec's; [1]: the previous codec's, during a
    // re-encoding (scored with that codec's scorer).
    std::vector<CodeSet> code_sets;
    // The codes records read from the store (candidates the arena lacked),
    // a batch per read; kept so `src` may point into them.
    std::vector<std::vector<std::optional<std::string>>> stored_codes;
    bool any_coded() const;
    // Candidates whose tokens were read from the store.
    size_t store_reads = 0;
  };
  struct ScoredCandidate {
    float score = 0;
    float ann_score = 0;
    Label label = 0;
    size_t candidate = 0;  // its place among the candidates
    bool from_codes = false;
  };
  struct Scored {
    // The top_k and a few more (stand-ins for hits deleted meanwhile), best
    // first.
    std::vector<ScoredCandidate> best;
    // With explain: the similarities Score computed, for the evidence
    // (when every candidate was scored from rows).
    ScoredSimilarities similarities;
    // The exact tier's rows of candidates scored from codes first
    // (exact_rows.found[k] for exact_of[k]).
    TokenBlock exact_rows;
    std::vector<size_t> exact_of;
  };

 private:
  absl::Status Prepare(SearchQuery* q, AnnSearchParams* params) const;
  // LEXICAL and HYBRID: adds BM25's best q.candidates to c (filter and
  // tombstones applied), after the first stage's, and records their scores.
  absl::Status AddLexical(const SearchQuery& q, Candidates* c) const;
  absl::Status CheckQuery(SearchQuery* q) const;
  absl::StatusOr<Candidates> FindCandidates(const SearchQuery& q, AnnSearchParams params) const;
  absl::StatusOr<Fetched> Fetch(const SearchQuery& q, const Candidates& c) const;
  absl::StatusOr<Scored> Score(const SearchQuery& q, const Candidates& c,
                               const Fetched* fetched) const;
  absl::StatusOr<std::vector<SearchHit>> Hits(const SearchQuery& q, const Candidates& c,
                                              const Fetched* fetched, const Scored& scored,
                                              int64_t* explain_us, uint32_t* diversified) const;
  // Whether a score may be returned (see Score).
  bool Usable(float score, Label label) const;
  // The rows of candidate i (rows_out of them) in the reranker's dtype, from
  // wherever the search has them: the arena, the store's misses or the
  // exact tier. REQUIRES: it was not scored from codes.
  void CandidateRows(const Fetched& f, const Scored& s, size_t i, TokenBlock* out) const;
  // The evidence (with `evidence`) and the maps (with `maps`) of the hits
  // `best` when some candidates were scored from codes: a hit scored from
  // codes is explained by its codec's scorer, from the similarities its
  // score came from (so its contributions add up to its score); the others
  // from their rows by the reranker, with one matmul.
  absl::Status ExplainWithCodes(const SearchQuery& q, const Fetched& f, const Scored& s,
                                const std::vector<const ScoredCandidate*>& best,
                                std::vector<std::vector<TokenEvidence>>* evidence,
                                std::vector<std::vector<float>>* maps) const;
  // Per hit, its attention map (Reranker::AttentionMaps) and, with
  // `evidence`, its evidence from the same pass; INVALID_ARGUMENT past
  // limits.max_attention_cells.
  absl::StatusOr<std::vector<std::vector<float>>> AttentionMaps(
      const SearchQuery& q, const Fetched& f, const Scored& s,
      const std::vector<const ScoredCandidate*>& best,
      std::vector<std::vector<TokenEvidence>>* evidence) const;
  // The exact tier: the best 2 x top_k candidates scored from codes are
  // scored again from their rows, read through the view; the other coded
  // candidates drop out. Updates scores and from_codes.
  absl::Status ExactTier(const SearchQuery& q, const Candidates& c, const Fetched& f,
                         std::vector<float>* scores, std::vector<bool>* from_codes,
                         std::vector<bool>* dropped, Scored* s) const;

  const SearchParts parts_;
  mutable std::atomic<bool> warned_nonfinite_{false};
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_SEARCH_PIPELINE_H_
