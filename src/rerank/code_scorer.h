// CodeScorer: the reranker's ATTENTION and MAXSIM scores for documents held
// as residual codes (a centroid id and b bits per dimension, see
// ann/residual_codec.h), without rebuilding float token matrices.
//
// Every value a code can decode to, centroid c_k[t] plus bucket value
// v_t[b], is kept in int8 steps of a per-dimension size σ_t:
//   c8[k][t] = round(c_k[t] / σ_t),  l8[b][t] = round(v_t[b] / σ_t),
// with σ_t = (max_k |c_k[t]| + max_b |v_t[b]|) / 127, raised to
// √(σ_t · σ_max) (σ_max the widest centroid step) so that the query, scaled
// by the steps before its own s8 quantization, keeps its precision in the
// narrow dimensions; a token decodes to
// s8 values x8[t] = c8[k][t] + l8[b_t][t] (a saturating byte add; 64
// dimensions per AVX-512 instruction, the bucket chosen by masks taken
// from the packed bits) and x[t] ≈ σ_t · x8[t]. The query carries the
// scales: q'_i[t] = q_i[t] · σ_t, so q_i · x = q'_i · x8, and the int8
// reranker (s8 x s8 matmul on AMX or VNNI, then the softmax) scores the
// decoded bytes. With a gain byte j (ann/residual_codec.h), the table holds
// the centroids at their largest gain, c8 = round(gain_max · c / σ_t), and
// a token decodes to ((c8 · j + 128) >> 8) + l8. The bytes are decoded in
// cache right before the reranker multiplies them (a candidate at a time on
// AMX or AVX-512 VNNI, else a matmul piece at a time) into a per-thread
// buffer, never stored.
// Without AVX-512 BW the same decoding runs 32 dimensions an AVX2
// instruction (byte blends, pext for the bits).
//
// Thread safety: immutable after Create; Score may run from any number of
// threads at once.
#ifndef ATTNSEARCH_RERANK_CODE_SCORER_H_
#define ATTNSEARCH_RERANK_CODE_SCORER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "rerank/reranker.h"

namespace attnsearch {

// The int8 decoding tables of a residual codec.
struct Int8CodeBook {
  uint32_t dim = 0;
  uint32_t bits = 0;  // 1, 2 or 4
  uint32_t num_centroids = 0;
  size_t id_bytes = 2;            // 2 or 4, little endian, before the residual bits
  float gain_max = 0.f;           // > 0: a gain byte follows the id
  std::vector<float> dim_scale;   // dim: σ_t
  std::vector<int8_t> centroids;  // num_centroids x dim: c8
  std::vector<int8_t> levels;     // 2^bits x dim: l8, level after level

  // The tables of a codec with these centroids (num_centroids x dim) and
  // bucket values (dim x 2^bits, dimension after dimension), with a gain
  // byte when gain_max > 0. INVALID_ARGUMENT when the sizes, the bit width
  // or the gain do not fit.
  static absl::StatusOr<Int8CodeBook> Make(uint32_t dim, uint32_t bits, size_t id_bytes,
                                           const std::vector<float>& centroids,
                                           const std::vector<float>& bucket_values,
                                           float gain_max = 0.f);

  size_t gain_bytes() const { return gain_max > 0.f ? 1 : 0; }
  size_t code_bytes() const { return id_bytes + gain_bytes() + (size_t(dim) * bits + 7) / 8; }
  // out (n x dim): the s8 values of n codes (back to back, code_bytes()
  // each). A centroid id beyond num_centroids decodes as centroid 0.
  void Decode(const uint8_t* codes, size_t n, int8_t* out) const;
  // The portable version of Decode, always available (for tests).
  void DecodePortable(const uint8_t* codes, size_t n, int8_t* out) const;
  // Decode without AVX-512 BITALG (the code bits gathered by pext), as on
  // CPUs before Ice Lake; the portable version where AVX-512 BW is missing
  // (for tests).
  void DecodeWithoutBitalg(const uint8_t* codes, size_t n, int8_t* out) const;
  // Decode on AVX2 and BMI2, as where AVX-512 BW is missing (e.g. AMD Zen
  // 3), for dim a multiple of 32; else the portable version (for tests).
  void DecodeAvx2Version(const uint8_t* codes, size_t n, int8_t* out) const;

 private:
  template <bool kBitalg>
  void DecodeVector(const uint8_t* codes, size_t n, int8_t* out) const;
};

// Candidates' codes: candidate c has rows[c] codes starting at code
// offsets[c] of `codes` (back to back; offsets as in CandidateTokens), or,
// when `sources` is set, at sources[c] wherever each candidate's codes lie
// (e.g. in a token arena; `codes` may then be null).
struct CandidateCodes {
  const uint8_t* codes = nullptr;
  size_t total_rows = 0;
  const uint32_t* rows = nullptr;
  const size_t* offsets = nullptr;
  size_t count = 0;
  const uint8_t* const* sources = nullptr;
};

class CodeScorer {
 public:
  static absl::StatusOr<std::unique_ptr<CodeScorer>> Create(Int8CodeBook book,
                                                            const RerankerOptions& options);

  // scores[c] for every candidate, as Reranker::Score over the decoded
  // tokens (σ_t · x8[t]) with the query quantized by the int8 reranker.
  absl::Status Score(const RerankQuery& query, const CandidateCodes& candidates,
                     float* scores) const;
  // The evidence for each candidate, as Reranker::Explain gives it, from the
  // same decoded bytes, query and similarities as Score: the contributions
  // add up to Score's result within float rounding.
  absl::Status Explain(const RerankQuery& query, const CandidateCodes& candidates,
                       std::vector<std::vector<TokenEvidence>>* out) const;
  // The attention maps (and with `evidence` the evidence) of each
  // candidate, as Reranker::AttentionMaps gives them, from the same
  // similarities as Score.
  absl::Status AttentionMaps(const RerankQuery& query, const CandidateCodes& candidates,
                             std::vector<std::vector<float>>* out,
                             std::vector<std::vector<TokenEvidence>>* evidence = nullptr) const;

  const Int8CodeBook& book() const { return book_; }

 private:
  // Calls fn(the query in the codes' steps, the candidates as rows decoded
  // on demand) and returns what it returns.
  absl::Status WithDecoded(
      const RerankQuery& query, const CandidateCodes& candidates,
      const std::function<absl::Status(const RerankQuery&, const CandidateTokens&)>& fn) const;

  CodeScorer(Int8CodeBook book, std::unique_ptr<Reranker> reranker)
      : book_(std::move(book)), reranker_(std::move(reranker)) {}

  const Int8CodeBook book_;
  const std::unique_ptr<Reranker> reranker_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_CODE_SCORER_H_
