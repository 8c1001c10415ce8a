// Encoder: the built-in, zero-download text encoder, learned from the
// collection it indexes.
//
// Training (Train) reads the collection's texts once:
//   tokens   Tokenizer (ICU word breaks, NFKC case folding), then a Snowball
//            stemmer: a token's key is its stem, so inflections share one
//            lexical identity and one set of statistics.
//   semantic positive PMI over co-occurrences in a window (weighted 1/distance,
//            context counts smoothed by an exponent), factorised by a
//            randomised truncated SVD: key vector = U_k Σ_k^½, unit length.
//   lexical  a fixed pseudo-random ±1 code per key (from a stable hash), so
//            an exact match has cosine 1 and unrelated keys ≈ 0.
//   idf      BM25's idf, log(1 + (N - df + 0.5) / (df + 0.5)).
//   subwords keys never seen in training (or misspelt) borrow the semantic
//            vectors of the training keys sharing most character 3- and
//            4-grams with them (Jaccard-weighted), and a near-identical
//            spelling also borrows that key's lexical code.
//   WordNet  the semantic vectors are retrofitted to WordNet's relations
//            (text/wordnet.h), and words the texts barely know ask for
//            their WordNet relatives (EncoderOptions::wordnet_weight).
//
// A key's vector w = [√α · semantic, √(1-α) · lexical] (unit; α is
// EncoderOptions::semantic_share). Encoding a document gives one token row
// per distinct key, in order of first occurrence:
//   row = [s · w, √(1 - s²)],   s = tf / (tf + k1 (1 - b + b · len / avg_len))
// so a row's similarity to any query token is scaled by BM25's saturated
// term frequency (the last coordinate only completes the unit norm; query
// rows are 0 there). A query gives one row [w, 0] per distinct key with
// weight idf · (occurrences), and both pooled vectors are the idf-weighted
// (documents: idf · s) mean of their keys' w, normalised. With the
// reranker's attention (low temperature) a query token's contribution is
// then ≈ idf · s of its best match: BM25 where words match exactly, and
// graded credit where they match in meaning.
//
// Thread safety: an Encoder is immutable; every method may be called
// concurrently.
#ifndef ATTNSEARCH_TEXT_ENCODER_H_
#define ATTNSEARCH_TEXT_ENCODER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "text/stemmer.h"
#include "text/tokenizer.h"
#include "text/wordnet.h"

namespace attnsearch::text {

struct EncoderOptions {
  // Dimensions of the semantic and lexical parts; vectors have
  // semantic_dims + lexical_dims + 1 values. Defaults: 96 + 159 (+1 = 256).
  uint32_t semantic_dims = 96;
  uint32_t lexical_dims = 159;
  // α: the semantic part's share of a key vector's squared norm. Default 0.6.
  float semantic_share = 0.6f;
  // Co-occurrence window (tokens on each side). Default: 5.
  uint32_t window = 5;
  // Context-count smoothing exponent of PMI. Default: 0.75.
  float context_smoothing = 0.75f;
  // BM25 term-frequency saturation and length normalisation. Defaults 0.9, 0.4.
  float k1 = 0.9f;
  float b = 0.4f;
  // Snowball algorithm ("english", "german", ...) or "none". Default english.
  std::string stem_language = "english";
  // Keys seen fewer times are left out of the vocabulary (and treated as
  // unseen). Default: 1.
  uint32_t min_count = 1;
  // Largest vocabulary (the most frequent keys). Default: 500000.
  uint32_t max_vocabulary = 500000;
  // SVD power iterations. Default: 3.
  uint32_t power_iterations = 3;
  uint64_t seed = 42;
  // The attention temperature of text queries that do not set one. Low
  // values approach MaxSim (each query word takes its best match).
  // Default: 0.06.
  float temperature = 0.06f;
  // Query expansion: each query word also asks for its nearest vocabulary
  // keys by meaning (cosine of the semantic parts >= expansion_min_cosine,
  // at most expansion_neighbours), with weight expansion_weight x cosine x
  // the word's own weight, so a document using a synonym gets credit close
  // to an exact match. Candidates are the expansion_vocabulary keys of
  // highest document frequency found in at least 10 documents, and never a
  // key that co-occurs with the word more than chance (positive PMI):
  // substitutes share contexts but seldom stand side by side, while
  // related words (collocations, a topic's vocabulary) do, and expanding to
  // those costs precision. 0 turns expansion off.
  // Defaults: 0.7, 0.7, 3, 20000.
  float expansion_weight = 0.7f;
  float expansion_min_cosine = 0.7f;
  uint32_t expansion_neighbours = 3;
  uint32_t expansion_vocabulary = 20000;
  // Distinct keys kept per text (the first ones; Encoding::distinct_keys
  // says how many it had). A collection refuses a document with more than
  // it keeps or than its own limit allows. Default: 65536 (4096 before;
  // models saved with that default read as this one).
  uint32_t max_document_tokens = 65536;
  // Meaning beyond the corpus: the semantic vectors are retrofitted to
  // WordNet's relations (text/wordnet.h) among the vocabulary's keys. Each
  // related key's vector moves towards its relatives':
  //   q_i = (q̂_i + wordnet_weight · Σ_j ω_ij q_j / Σ_j ω_ij) / (1 + wordnet_weight)
  // (q̂ the corpus's vector, ω the relation weights; 10 sweeps, then unit
  // rows), so that words WordNet relates become neighbours for query
  // expansion even when the texts never use them alike, and a key the texts
  // give no context gets its relatives' meaning. 0 turns it off; without
  // the database at wordnet_dir training goes on from the texts alone and
  // says so (TrainingStats::wordnet). Defaults: 1.0, /usr/share/wordnet
  // (Debian's wordnet-base). wordnet_dir is not stored with the encoder.
  float wordnet_weight = 1.0f;
  std::string wordnet_dir = "/usr/share/wordnet";

  // INVALID_ARGUMENT naming the field if unusable.
  absl::Status Validate() const;
};

// The settings a user may change when training (the API's EncoderParams,
// attnsearch-index's flags), over EncoderOptions' defaults. A zero or empty
// field keeps the default.
struct EncoderOverrides {
  float semantic_share = 0.f;  // Default (0): EncoderOptions' 0.6.
  std::string stem_language;   // Default (empty): english.
  uint32_t window = 0;         // Default (0): 5.
  uint32_t min_count = 0;      // Default (0): 1.
  float temperature = 0.f;     // Default (0): 0.06.
  // Default (0): 0.7; negative turns expansion off.
  float expansion_weight = 0.f;
  // Default (0): 1.0; negative turns WordNet retrofitting off.
  float wordnet_weight = 0.f;

  // The default EncoderOptions with the set fields replaced. The result may
  // still be invalid (EncoderOptions::Validate says which field).
  EncoderOptions Apply() const;
};

// An encoded text: token rows (unit length) and the pooled vector.
struct Encoding {
  uint32_t num_tokens = 0;
  std::vector<float> tokens;   // num_tokens x dim
  std::vector<float> weights;  // queries: one per row (idf x occurrences)
  std::vector<float> pooled;   // dim values, unit length
  // Per row: the surface form of its key's first occurrence and its span.
  std::vector<std::string> token_texts;
  std::vector<std::pair<uint32_t, uint32_t>> token_spans;
  // The text's distinct keys, with a row or not: more than num_tokens when
  // max_document_tokens cut the rest.
  uint32_t distinct_keys = 0;
};

// What Train reports.
struct TrainingStats {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint32_t vocabulary = 0;
  uint64_t cooccurrence_pairs = 0;
  // WordNet relations between vocabulary keys the vectors were retrofitted
  // to, and a sentence saying what was used or why nothing was ("WordNet
  // at /usr/share/wordnet: 41,237 relations among 9,811 vocabulary keys",
  // "no WordNet at ...: meaning from the collection's texts alone").
  uint64_t wordnet_relations = 0;
  std::string wordnet;
  double seconds = 0;
};

class Encoder {
 public:
  // Calls `sink` once per training text.
  using TextSource =
      std::function<absl::Status(const std::function<absl::Status(std::string_view)>& sink)>;

  // Learns an encoder from every text `source` yields. INVALID_ARGUMENT for
  // bad options or when no text has a word; the texts' own errors (invalid
  // UTF-8) name their position as "training text N: ...".
  static absl::StatusOr<std::unique_ptr<Encoder>> Train(const TextSource& source,
                                                        const EncoderOptions& options,
                                                        TrainingStats* stats = nullptr);

  // Restores an encoder written by Serialize. DATA_LOSS if the bytes are
  // not a well-formed encoder of a known format version.
  static absl::StatusOr<std::unique_ptr<Encoder>> Deserialize(std::string_view bytes);
  std::string Serialize() const;

  // Dimension of every vector it produces.
  uint32_t dim() const { return options_.semantic_dims + options_.lexical_dims + 1; }
  const EncoderOptions& options() const { return options_; }
  uint32_t vocabulary_size() const { return static_cast<uint32_t>(keys_.size()); }
  uint64_t trained_documents() const { return num_documents_; }

  // A document's rows (see the file comment). INVALID_ARGUMENT for invalid
  // UTF-8 or text without words; the message starts with `field`.
  absl::StatusOr<Encoding> EncodeDocument(std::string_view text,
                                          std::string_view field = "text") const;
  // A query's rows and weights: a row per distinct word, then expansion
  // rows. With max_rows > 0, the expansions of largest weight that fit in
  // max_rows rows in all; INVALID_ARGUMENT naming `field` when the words
  // alone are more.
  absl::StatusOr<Encoding> EncodeQuery(std::string_view text, std::string_view field = "text",
                                       uint32_t max_rows = 0) const;

  // The vocabulary's key vectors as rows of dim() values, [w, 0] for key
  // 0, 1, ...: every document row of an in-vocabulary key is s times one
  // of them plus √(1 - s²) in the last coordinate, so they serve as the
  // centroids of a token codec.
  std::vector<float> KeyTable() const;

  // The unit key vector w of a word (normalised, not yet stemmed) and its idf;
  // exposed for tests and tools.
  std::vector<float> WordVector(std::string_view word, float* idf = nullptr) const;

 private:
  struct Grouped;
  Encoder(EncoderOptions options, Stemmer stemmer);
  void BuildSubwordIndex();
  // For the expansion_vocabulary most frequent keys: their nearest keys,
  // except the `associated` pairs (min key << 32 | max key).
  void BuildNeighbours(const absl::flat_hash_set<uint64_t>& associated);
  // Retrofits semantic_ to WordNet (EncoderOptions::wordnet_weight); fills
  // the stats' wordnet fields. The WordNet used, or null.
  std::shared_ptr<const WordNet> Retrofit(TrainingStats* stats);
  // Expansion for words the texts barely know: their WordNet relatives.
  void AddRelatives(const WordNet& wordnet, TrainingStats* stats);
  // The keys query expansion may ask for: the expansion_vocabulary of
  // highest document frequency, in at least kMinExpansionDf documents.
  std::vector<uint32_t> ExpansionVocabulary() const;
  // w for a stemmed key; idf of the key.
  void KeyVector(const std::string& key, float* out, float* idf) const;
  // The text's first max_document_tokens distinct keys; `length` its
  // words, `distinct` its distinct keys.
  absl::StatusOr<std::vector<Grouped>> Group(std::string_view text, std::string_view field,
                                             uint32_t* length, uint32_t* distinct) const;

  EncoderOptions options_;
  Stemmer stemmer_;
  Tokenizer tokenizer_;
  uint64_t num_documents_ = 0;
  double average_length_ = 0;
  std::vector<std::string> keys_;
  std::vector<uint32_t> document_frequency_;
  std::vector<float> semantic_;  // keys x semantic_dims, unit rows
  absl::flat_hash_map<std::string, uint32_t> key_index_;
  // character n-gram hash -> keys containing it (built on load)
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> subwords_;
  std::vector<uint16_t> subword_count_;  // n-grams per key
  // key -> (neighbour key, semantic cosine or WordNet relation weight),
  // best first
  std::vector<std::vector<std::pair<uint32_t, float>>> neighbours_;
  // A word no text uses -> its WordNet relatives among the keys, best first
  absl::flat_hash_map<std::string, std::vector<std::pair<uint32_t, float>>> relatives_;
};

}  // namespace attnsearch::text

#endif  // ATTNSEARCH_TEXT_ENCODER_H_
