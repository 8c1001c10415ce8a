// Plain value types shared by every module: labels, dtypes, collection
// configuration and the in-memory form of a document.
#ifndef ATTNSEARCH_CORE_TYPES_H_
#define ATTNSEARCH_CORE_TYPES_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnsearch {

// Internal document label: assigned in increasing order, never reused. A
// document that is overwritten gets a new label; the old one is tombstoned.
using Label = uint64_t;

// Element type of stored token matrices.
enum class TokenDtype : uint8_t {
  kF32 = 1,
  kBF16 = 2,
  kInt8 = 3,  // symmetric int8 with one f32 scale per token row
};

// Name of a dtype ("f32", "bf16"), and back.
std::string_view TokenDtypeName(TokenDtype dtype);
// Bytes per stored element.
size_t TokenDtypeSize(TokenDtype dtype);
// Bytes one stored token row of `dim` values takes (int8 adds its scale).
size_t TokenRowBytes(TokenDtype dtype, uint32_t dim);

// How candidates are scored (see DESIGN.md, "The reranker").
enum class RerankMode : uint8_t {
  kAttention = 1,  // sum_i w_i sum_j softmax_j(S_ij / tau) S_ij
  kMaxSim = 2,     // sum_i w_i max_j S_ij
  kNone = 3,       // the ANN score
};

// Where a search takes its candidates from.
enum class Retrieval : uint8_t {
  kDefault = 0,   // text: kHybrid when the collection has a lexical index; vectors: kSemantic
  kSemantic = 1,  // the collection's first stage
  kLexical = 2,   // BM25 over the texts
  kHybrid = 3,    // the union of both
};

// "semantic", "lexical", "hybrid" ("default" for kDefault).
std::string_view RetrievalName(Retrieval r);

// Largest accepted vector dimension.
inline constexpr uint32_t kMaxDim = 4096;
// Largest accepted external id, in bytes.
inline constexpr size_t kMaxIdBytes = 512;
// Most numeric fields a collection may declare, and their longest name.
inline constexpr size_t kMaxNumericFields = 32;
inline constexpr size_t kMaxFieldNameBytes = 64;

// The candidate index of a new collection unless its config names another.
inline constexpr std::string_view kDefaultAnnSpec = "HNSW32,SQfp16";

// The immutable configuration of a collection, fixed at creation.
// How a collection's token arena holds its token matrices in memory.
enum class TokenCodecKind : uint32_t {
  // The rows as stored, in the collection's token_dtype.
  kRows = 0,
  // Per token a centroid id and `bits` per dimension of residual
  // (ann/residual_codec.h), trained on the collection's own tokens.
  kResidual = 1,
};
// "rows", "residual".
std::string_view TokenCodecName(TokenCodecKind kind);

struct TokenCodecConfig {
  TokenCodecKind kind = TokenCodecKind::kRows;
  // Residual: bits per dimension, 1, 2 or 4. Default: 2.
  uint32_t bits = 2;
  // Residual: centroids, 0 or 16..65536 (k-means). With 0, a collection
  // with the built-in text encoder uses the encoder's vocabulary of word
  // vectors as centroids (with a gain byte per token, so a row's code names
  // its word and its BM25 weight almost exactly); any other picks k-means
  // centroids from the token count when trained. Default: 0.
  uint32_t centroids = 0;
  // Residual: the codec trains itself once this many documents with
  // vectors are stored (0: only when TrainCodec is called). Until it is
  // trained, tokens are held as rows. Default: 10000.
  uint64_t train_after = 10000;
  // Residual: the exact tier. The stored rows stay in RocksDB (they always
  // do), and the best candidates by their codes (2 x top_k) are scored
  // again from them; the evidence comes from them. Default: true.
  bool keep_full_precision = true;

  bool operator==(const TokenCodecConfig&) const = default;
};

// Where a search's candidates come from.
enum class CandidateSource : uint32_t {
  // The ANN index over one pooled vector per document.
  kPooled = 0,
  // Late interaction over the token codes' centroids
  // (ann/centroid_candidates.h); needs the residual token codec, and
  // serves once every live document holds the current codec's codes (the
  // pooled index until then).
  kCentroids = 1,
  // The ANN index over one fixed dimensional encoding (MUVERA, ann/fde.h)
  // of each document's tokens in place of its pooled vector; the query's
  // tokens are encoded the same way. Needs the token rows stored (with the
  // residual codec, keep_full_precision), which the index is rebuilt from.
  kFde = 2,
};
// "pooled", "centroids", "fde".
std::string_view CandidateSourceName(CandidateSource source);
// The source named `name` ("" is pooled); INVALID_ARGUMENT naming `field`
// and the accepted names otherwise.
absl::StatusOr<CandidateSource> ParseCandidateSource(std::string_view name, std::string_view field);

struct CollectionConfig {
  // Dimension of pooled and token vectors. Required: 1..kMaxDim.
  uint32_t dim = 0;
  // Storage type of token matrices. Default: bf16.
  TokenDtype token_dtype = TokenDtype::kBF16;
  // FAISS factory string of the candidate index. Default: "HNSW32,SQfp16"
  // (an HNSW graph over half-precision vectors: half the memory of
  // "HNSW32,Flat" at the same recall; see src/ann/README.md).
  std::string ann_spec = std::string(kDefaultAnnSpec);
  // Metadata keys whose values are numbers: every document's value for
  // them must parse as a finite double, and searches may filter them by
  // range. Names are 1..kMaxFieldNameBytes characters of [A-Za-z0-9_.-], at
  // most kMaxNumericFields, no duplicates. Default: none.
  std::vector<std::string> numeric_fields;
  // How the token arena holds token matrices (see TokenCodecConfig).
  // Default: rows.
  TokenCodecConfig token_codec;
  // Where candidates come from. Default: pooled.
  CandidateSource candidates_from = CandidateSource::kPooled;

  // Whether `key` is one of numeric_fields.
  bool IsNumericField(std::string_view key) const;

  // INVALID_ARGUMENT naming the field if the configuration is unusable.
  absl::Status Validate() const;
};

// The ANN search knobs a collection tuned for a target recall
// (Collection::TuneIndex). Kept in the collection's store and used by every
// search that gives no ann_params of its own.
struct AnnTuning {
  // The chosen knobs as a search's ann_params, e.g. "efSearch=31".
  std::string ann_params;
  // What was asked: mean recall@k over held-out stored vectors.
  double target_recall = 0;
  uint32_t k = 0;
  // What the chosen knobs reached on that sample, and its size.
  double sample_recall = 0;
  uint64_t sample_queries = 0;
};

// A document as the engine sees it. Vectors are f32 here whatever the
// storage type; the engine normalises them to unit length on write.
struct Document {
  std::string id;
  std::string text;
  std::map<std::string, std::string> metadata;
  // Pooled vector, dim values, or empty.
  std::vector<float> pooled;
  // Token matrix, num_tokens x dim row-major, or empty (num_tokens == 0).
  uint32_t num_tokens = 0;
  std::vector<float> tokens;
  // Surface form of each token row, or empty.
  std::vector<std::string> token_texts;
  // Byte span [first, second) of each token row in `text`, or empty.
  std::vector<std::pair<uint32_t, uint32_t>> token_spans;
  // Where the vectors came from: kClientVectors, kAwaitingEncoder (text
  // only, stored before the collection's encoder was trained), or the
  // version (>= 1) of the built-in encoder that computed them. Set by the
  // engine.
  uint32_t encoded_by = 0;
};

inline constexpr uint32_t kClientVectors = 0;
inline constexpr uint32_t kAwaitingEncoder = 0xFFFFFFFFu;

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_TYPES_H_
