// Token codes: a collection's trained token codec (residual, see
// ann/residual_codec.h) and the records it makes.
//
// A codes record, as the store's `codes` column family and the token arena
// hold it: u32 codec version, u32 rows, then rows x code_bytes() codes.
// The arena tags each record with its format (kRowsRecord: the store's
// token matrix; kCodesRecord: codes).
#ifndef ATTNSEARCH_ENGINE_TOKEN_CODES_H_
#define ATTNSEARCH_ENGINE_TOKEN_CODES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ann/centroid_candidates.h"
#include "ann/residual_codec.h"
#include "core/types.h"
#include "rerank/code_scorer.h"
#include "rerank/nearest_rows.h"

namespace attnsearch {
namespace text {
class Encoder;
}  // namespace text

inline constexpr uint32_t kRowsRecord = 0;
inline constexpr uint32_t kCodesRecord = 1;

// A trained codec, its version (1, 2, ... as it is retrained) and the
// scorer of its codes.
struct TokenCodecState {
  uint64_t version = 0;
  // The encoder version whose vocabulary the centroids are (0: k-means
  // centroids); a newer encoder makes the codec stale.
  uint64_t encoder_version = 0;
  std::unique_ptr<ResidualCodec> codec;
  std::unique_ptr<CodeScorer> scorer;
  // The centroids searched for each token's nearest one (bf16 matmuls).
  std::unique_ptr<NearestRows> nearest;
  // With first_stage: the centroid first stage over the documents holding
  // this codec's codes (HoldCodes and Forget keep it; internally locked).
  std::shared_ptr<CentroidCandidates> first_stage;

  // The state of a codec (its scorer made with `options`), with an empty
  // centroid first stage when `first_stage` (probing 4 centroids a query
  // token when the centroids are an encoder's vocabulary, else 16).
  static absl::StatusOr<std::shared_ptr<const TokenCodecState>> Make(
      std::unique_ptr<ResidualCodec> codec, uint64_t version, const RerankerOptions& options,
      uint64_t encoder_version = 0, bool first_stage = false);
  // Holds `label` in the first stage from its codes record; a record of
  // another version, a malformed one or no first stage: nothing.
  void HoldCodes(Label label, std::string_view record) const;
  // Takes `labels` out of the first stage, if any.
  void Forget(const std::vector<Label>& labels) const;
  // The codes record of `rows` token rows (rows x dim f32 values).
  std::string Encode(const float* tokens, uint32_t rows) const;
  // Codes of n token rows (codes: n x code_bytes), the centroids found by
  // `nearest`.
  void EncodeRows(const float* tokens, size_t n, uint8_t* codes) const;
  // The codes records of several matrices (tokens, rows), encoded in one
  // pass (one search of the centroids for all their rows).
  std::vector<std::string> EncodeMany(
      const std::vector<std::pair<const float*, uint32_t>>& matrices) const;
  // The token rows a codes record of this codec decodes to, as the
  // document's tokens (a collection that keeps only codes); DATA_LOSS for
  // a malformed record, FAILED_PRECONDITION for another codec version's.
  absl::Status DecodeRecord(std::string_view record, Document* doc) const;
};

// The options of a codec's centroid first stage: its gain; with
// `vocabulary` (the centroids are a text encoder's words), probe 4 and
// each query row's own word found by the codec's sign hash; else, with
// `nearest` (over the same centroids), every query token's similarities
// by one of its matmuls. `codec` and `nearest` must outlive the first
// stage.
CentroidCandidatesOptions FirstStageOptions(const ResidualCodec& codec, bool vocabulary,
                                            const NearestRows* nearest = nullptr);

// How a collection's codec is trained on a sample of its token rows.
struct TokenCodecTraining {
  uint32_t bits = 2;
  // k-means centroids; 0: the encoder's vocabulary when there is one, else
  // chosen from the collection's token count (ChooseCentroids).
  uint32_t centroids = 0;
  // Token rows in the whole collection (the sample's population).
  uint64_t collection_tokens = 0;
  // A text collection's encoder (null for client vectors): with centroids
  // 0, its vocabulary of key vectors becomes the centroids, so that with
  // the gain byte (every codec has one) a row's code names its own word
  // and BM25 weight (ann/residual_codec.h).
  const text::Encoder* encoder = nullptr;
};
// Whether TrainTokenCodec takes the encoder's vocabulary as the centroids.
bool UsesVocabulary(const TokenCodecTraining& how, uint32_t dim);
// The codec of `sample` (n rows of dim values), with a gain byte: k-means
// centroids (the assignments on bf16 matmuls), or the encoder's vocabulary.
absl::StatusOr<std::unique_ptr<ResidualCodec>> TrainTokenCodec(const float* sample, size_t n,
                                                               uint32_t dim,
                                                               const TokenCodecTraining& how);
// The centroids k-means gets for a collection of `tokens` rows sampled
// down to `sample`: a power of two near 4·sqrt(tokens), at least 8
// sampled rows each, at most 8,192.
uint32_t ChooseCentroids(uint64_t tokens, size_t sample);

// A codes record, parsed.
struct CodesView {
  uint64_t version = 0;
  uint32_t rows = 0;
  const uint8_t* codes = nullptr;
};
// DATA_LOSS when `record` is not a codes record of code_bytes per row.
absl::StatusOr<CodesView> ParseCodes(std::string_view record, size_t code_bytes);
// The version of a codes record (0 when it is too short to hold one).
uint64_t CodesVersion(std::string_view record);

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_TOKEN_CODES_H_
