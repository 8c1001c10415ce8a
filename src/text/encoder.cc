#include "text/encoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/checksum.h"
#include "core/status.h"
#include "text/sparse_svd.h"
#include "text/wordnet.h"

namespace attnsearch::text {
namespace {

constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'E', 'N', 'C', '\0'};
// 5: format 4 plus wordnet_weight after the stem language. 4: checksummed
// with Checksum64 (XXH3). 3: the same layout checksummed with FNV-1a. All
// three are read.
constexpr uint32_t kFormatVersion = 5;
constexpr uint32_t kXxhChecksumVersion = 4;
constexpr uint32_t kFnvChecksumVersion = 3;
// Subword lookup: n-grams shared by more keys than this say little.
constexpr size_t kMaxSubwordPosting = 4096;
constexpr size_t kSubwordNeighbours = 5;
constexpr double kMinNeighbourJaccard = 0.25;
// A spelling this close to a known key also borrows its lexical code.
constexpr double kSpellingJaccard = 0.6;
// Keys in fewer documents take no part in query expansion by meaning
// (WordNet's relatives stand in for theirs).
constexpr uint32_t kMinExpansionDf = 10;
// Retrofitting: a key's corpus vector weighs df / kWordNetCorpusDf against
// its WordNet relatives' (times wordnet_weight), so a key the texts use
// often keeps its own meaning and a rare one takes WordNet's.
constexpr float kWordNetCorpusDf = 3.f;
// A query word the texts barely know asks for its WordNet relatives with
// this share of the relation's weight: a relative's match is worth at most
// half an exact one (cranfield and scifact-train nDCG@10 within ±0.001 of
// no WordNet at 0.5; 1 cost 0.001–0.002).
constexpr float kWordNetRelativeShare = 0.5f;

uint64_t Fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The lexical code of a key: ±1/√n from a stable hash of its bytes.
void LexicalCode(std::string_view key, uint32_t n, float* out) {
  uint64_t state = Fnv1a(key);
  const float v = 1.f / std::sqrt(static_cast<float>(n));
  uint64_t bits = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (i % 64 == 0) bits = SplitMix(&state);
    out[i] = (bits >> (i % 64)) & 1 ? v : -v;
  }
}

// Hashes of the character 3- and 4-grams (by bytes) of "<key>".
std::vector<uint64_t> Subwords(std::string_view key) {
  const std::string padded = "<" + std::string(key) + ">";
  std::vector<uint64_t> grams;
  for (size_t n = 3; n <= 4; ++n) {
    for (size_t i = 0; i + n <= padded.size(); ++i) {
      grams.push_back(Fnv1a(std::string_view(padded).substr(i, n), n));
    }
  }
  std::sort(grams.begin(), grams.end());
  grams.erase(std::unique(grams.begin(), grams.end()), grams.end());
  return grams;
}

// WordNet (default relation weights) is read once per process and folder
// (~1 s) and shared by every training; a failed read is tried again next time.
absl::StatusOr<std::shared_ptr<const WordNet>> SharedWordNet(const std::string& dir) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* cache = new absl::flat_hash_map<std::string, std::shared_ptr<const WordNet>>();
  absl::MutexLock lock(&mu);
  if (auto it = cache->find(dir); it != cache->end()) return it->second;
  WordNetOptions options;
  options.dir = dir;
  ATTN_ASSIGN_OR_RETURN(WordNet loaded, WordNet::Load(options));
  auto shared = std::make_shared<const WordNet>(std::move(loaded));
  cache->emplace(dir, shared);
  return shared;
}

float Idf(uint64_t n, uint64_t df) {
  return static_cast<float>(std::log(1.0 + (n - std::min(df, n) + 0.5) / (df + 0.5)));
}

void Normalize(float* v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(v[i]) * v[i];
  if (s <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(s));
  for (size_t i = 0; i < n; ++i) v[i] *= inv;
}

// Little-endian byte writer / bounds-checked reader for Serialize.
class Writer {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void PutFloats(const std::vector<float>& v) {
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  }
  std::string Finish() {
    Put<uint64_t>(Checksum64(out_.data(), out_.size()));
    return std::move(out_);
  }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool GetString(std::string* s) {
    uint32_t n;
    if (!Get(&n) || in_.size() - pos_ < n) return false;
    s->assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool GetFloats(size_t n, std::vector<float>* v) {
    if ((in_.size() - pos_) / sizeof(float) < n) return false;
    v->resize(n);
    if (n == 0) return true;  // v->data() may be null
    std::memcpy(v->data(), in_.data() + pos_, n * sizeof(float));
    pos_ += n * sizeof(float);
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// --- Training, stage by stage ---

// What one pass over the training texts counts, by key id (ids in order of
// first occurrence).
struct CorpusCounts {
  std::vector<std::string> keys;
  std::vector<uint64_t> count;  // occurrences
  std::vector<uint32_t> df;     // documents containing the key
  // Window co-occurrences of key pairs (a < b, as a << 32 | b), weighted
  // 1/distance.
  absl::flat_hash_map<uint64_t, float> cooc;
  uint64_t documents = 0;  // texts with at least one word
  uint64_t total_tokens = 0;
};

// One pass over the texts. INVALID_ARGUMENT when none has a word, or naming
// the text ("training text N: ...") whose tokenisation fails.
absl::StatusOr<CorpusCounts> CountCorpus(const Encoder::TextSource& source,
                                         const Tokenizer& tokenizer, const Stemmer& stemmer,
                                         uint32_t window) {
  CorpusCounts c;
  absl::flat_hash_map<std::string, uint32_t> ids;
  std::vector<uint32_t> last_doc;
  std::vector<uint32_t> seq;
  uint64_t text_index = 0;
  auto sink = [&](std::string_view text) -> absl::Status {
    ++text_index;
    auto tokens = tokenizer.Tokenize(text);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("training text ", text_index, ": ", tokens.status().message()));
    }
    if (tokens->empty()) return absl::OkStatus();
    ++c.documents;
    seq.clear();
    for (const Token& t : *tokens) {
      std::string key = stemmer.Stem(t.text);
      auto [it, inserted] = ids.try_emplace(key, static_cast<uint32_t>(c.keys.size()));
      if (inserted) {
        c.keys.push_back(std::move(key));
        c.count.push_back(0);
        c.df.push_back(0);
        last_doc.push_back(0);
      }
      const uint32_t id = it->second;
      ++c.count[id];
      if (last_doc[id] != c.documents) {
        last_doc[id] = static_cast<uint32_t>(c.documents);
        ++c.df[id];
      }
      seq.push_back(id);
    }
    c.total_tokens += seq.size();
    for (size_t i = 0; i < seq.size(); ++i) {
      const size_t lo = i >= window ? i - window : 0;
      for (size_t j = lo; j < i; ++j) {
        const uint32_t a = std::min(seq[i], seq[j]), b = std::max(seq[i], seq[j]);
        if (a == b) continue;
        c.cooc[(uint64_t{a} << 32) | b] += 1.f / static_cast<float>(i - j);
      }
    }
    return absl::OkStatus();
  };
  ATTN_RETURN_IF_ERROR(source(sink));
  if (c.documents == 0) {
    return absl::InvalidArgumentError("training texts: none of them contains a word");
  }
  return c;
}

// The vocabulary: the most frequent keys seen at least min_count times, at
// most max_vocabulary, appended to `keys` and `df`. Returns each counted
// key's vocabulary index, or -1.
std::vector<int64_t> ChooseVocabulary(const CorpusCounts& c, const EncoderOptions& options,
                                      std::vector<std::string>* keys, std::vector<uint32_t>* df) {
  std::vector<uint32_t> order(c.keys.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t x, uint32_t y) { return c.count[x] > c.count[y]; });
  std::vector<int64_t> remap(c.keys.size(), -1);
  for (uint32_t id : order) {
    if (c.count[id] < options.min_count || keys->size() >= options.max_vocabulary) break;
    remap[id] = static_cast<int64_t>(keys->size());
    keys->push_back(c.keys[id]);
    df->push_back(c.df[id]);
  }
  return remap;
}

// Positive PMI of the vocabulary's co-occurrences, with context counts
// smoothed by `smoothing`, as a v x v sparse matrix. Consumes `cooc`. Adds
// every pair with positive PMI to `associated` (a < b, as a << 32 | b):
// pairs that co-occur more than chance are related words (collocations,
// topics), not substitutes, and query expansion skips them; synonyms share
// contexts but seldom appear side by side.
CsrMatrix PositivePmi(absl::flat_hash_map<uint64_t, float>* cooc, const std::vector<int64_t>& remap,
                      uint32_t v, double smoothing, absl::flat_hash_set<uint64_t>* associated) {
  std::vector<double> row_sum(v, 0.0);
  std::vector<std::pair<uint64_t, float>> pairs;
  pairs.reserve(cooc->size());
  for (const auto& [k, c] : *cooc) {
    const int64_t a = remap[k >> 32], b = remap[k & 0xffffffffu];
    if (a < 0 || b < 0) continue;
    pairs.emplace_back((uint64_t(a) << 32) | uint64_t(b), c);
  }
  *cooc = {};
  // Hash-map order varies; sorted pairs make training deterministic.
  std::sort(pairs.begin(), pairs.end());
  for (const auto& [k, c] : pairs) {
    row_sum[k >> 32] += c;
    row_sum[k & 0xffffffffu] += c;
  }
  double smoothed_total = 0;
  std::vector<double> smoothed(v);
  for (uint32_t i = 0; i < v; ++i) {
    smoothed[i] = std::pow(row_sum[i], smoothing);
    smoothed_total += smoothed[i];
  }
  auto pmi = [&](uint32_t w, uint32_t c, float n) {
    return std::log(n * smoothed_total / (row_sum[w] * smoothed[c]));
  };
  CsrMatrix m;
  m.rows = m.cols = v;
  m.row_start.assign(size_t{v} + 1, 0);
  for (const auto& [k, c] : pairs) {
    const uint32_t a = k >> 32, b = k & 0xffffffffu;
    if (pmi(a, b, c) > 0) ++m.row_start[a + 1];
    if (pmi(b, a, c) > 0) ++m.row_start[b + 1];
  }
  for (uint32_t i = 0; i < v; ++i) m.row_start[i + 1] += m.row_start[i];
  m.col.resize(m.row_start[v]);
  m.value.resize(m.row_start[v]);
  std::vector<uint64_t> next(m.row_start.begin(), m.row_start.end() - 1);
  for (const auto& [k, c] : pairs) {
    const uint32_t a = k >> 32, b = k & 0xffffffffu;
    if (double p = pmi(a, b, c); p > 0) {
      m.col[next[a]] = b;
      m.value[next[a]++] = static_cast<float>(p);
    }
    if (double p = pmi(b, a, c); p > 0) {
      m.col[next[b]] = a;
      m.value[next[b]++] = static_cast<float>(p);
    }
  }
  associated->reserve(m.col.size());
  for (uint32_t a = 0; a < v; ++a) {
    for (uint64_t p = m.row_start[a]; p < m.row_start[a + 1]; ++p) {
      const uint32_t b = m.col[p];
      associated->insert((uint64_t{std::min(a, b)} << 32) | std::max(a, b));
    }
  }
  return m;
}

// The semantic vectors, by truncated SVD of the PMI matrix: U_k Σ_k^½ with
// unit rows (k = semantic_dims; zeros when there is nothing to factorise).
std::vector<float> SemanticVectors(const CsrMatrix& m, const EncoderOptions& options) {
  const uint32_t v = m.rows, ks = options.semantic_dims;
  std::vector<float> semantic(size_t{v} * ks, 0.f);
  if (v < 2 || m.col.empty()) return semantic;
  SvdOptions svd_options;
  svd_options.rank = ks;
  svd_options.power_iterations = options.power_iterations;
  svd_options.seed = options.seed;
  const TruncatedSvd svd = ComputeTruncatedSvd(m, svd_options);
  for (uint32_t w = 0; w < v; ++w) {
    float* out = semantic.data() + size_t{w} * ks;
    for (uint32_t j = 0; j < svd.rank; ++j) {
      out[j] = svd.left[size_t{w} * svd.rank + j] * std::sqrt(svd.singular_values[j]);
    }
    Normalize(out, ks);
  }
  return semantic;
}

}  // namespace

// One distinct key of a text.
struct Encoder::Grouped {
  std::string key;
  uint32_t count = 0;
  uint32_t begin = 0, end = 0;  // first occurrence
};

EncoderOptions EncoderOverrides::Apply() const {
  EncoderOptions o;
  if (semantic_share != 0.f) o.semantic_share = semantic_share;
  if (!stem_language.empty()) o.stem_language = stem_language;
  if (window != 0) o.window = window;
  if (min_count != 0) o.min_count = min_count;
  if (temperature != 0.f) o.temperature = temperature;
  // NaN is passed on, for Validate to refuse by name.
  if (!(expansion_weight <= 0.f)) o.expansion_weight = expansion_weight;
  if (expansion_weight < 0.f) o.expansion_weight = 0.f;  // off
  if (!(wordnet_weight <= 0.f)) o.wordnet_weight = wordnet_weight;
  if (wordnet_weight < 0.f) o.wordnet_weight = 0.f;  // off
  return o;
}

absl::Status EncoderOptions::Validate() const {
  if (semantic_dims == 0 || semantic_dims > 1024) {
    return absl::InvalidArgumentError("semantic_dims: must be 1..1024");
  }
  if (lexical_dims == 0 || lexical_dims > 4096) {
    return absl::InvalidArgumentError("lexical_dims: must be 1..4096");
  }
  if (!(semantic_share >= 0.f && semantic_share <= 1.f)) {
    return absl::InvalidArgumentError("semantic_share: must be in [0, 1]");
  }
  if (window == 0 || window > 64) return absl::InvalidArgumentError("window: must be 1..64");
  if (!(context_smoothing > 0.f && context_smoothing <= 1.f)) {
    return absl::InvalidArgumentError("context_smoothing: must be in (0, 1]");
  }
  if (!(k1 > 0.f && k1 < 100.f)) return absl::InvalidArgumentError("k1: must be in (0, 100)");
  if (!(b >= 0.f && b <= 1.f)) return absl::InvalidArgumentError("b: must be in [0, 1]");
  // 1e-30: the smallest temperature a search takes (kMinTemperature in
  // engine/search_types.h); text searches use this one by default.
  if (!(temperature >= 1e-30f && temperature <= 100.f)) {
    return absl::InvalidArgumentError("temperature: must be in [1e-30, 100]");
  }
  if (!(expansion_weight >= 0.f && expansion_weight <= 10.f)) {
    return absl::InvalidArgumentError("expansion_weight: must be in [0, 10]");
  }
  if (!(expansion_min_cosine >= -1.f && expansion_min_cosine <= 1.f)) {
    return absl::InvalidArgumentError("expansion_min_cosine: must be in [-1, 1]");
  }
  if (!(wordnet_weight >= 0.f && wordnet_weight <= 10.f)) {
    return absl::InvalidArgumentError("wordnet_weight: must be in [0, 10]");
  }
  if (expansion_neighbours > 64) {
    return absl::InvalidArgumentError("expansion_neighbours: at most 64");
  }
  if (max_vocabulary == 0) return absl::InvalidArgumentError("max_vocabulary: must be > 0");
  if (max_document_tokens == 0) {
    return absl::InvalidArgumentError("max_document_tokens: must be > 0");
  }
  return Stemmer::Create(stem_language).status();
}

Encoder::Encoder(EncoderOptions options, Stemmer stemmer)
    : options_(std::move(options)), stemmer_(std::move(stemmer)) {}

absl::StatusOr<std::unique_ptr<Encoder>> Encoder::Train(const TextSource& source,
                                                        const EncoderOptions& options,
                                                        TrainingStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  ATTN_RETURN_IF_ERROR(options.Validate());
  ATTN_ASSIGN_OR_RETURN(Stemmer stemmer, Stemmer::Create(options.stem_language));
  std::unique_ptr<Encoder> enc(new Encoder(options, stemmer));

  ATTN_ASSIGN_OR_RETURN(CorpusCounts counts,
                        CountCorpus(source, enc->tokenizer_, enc->stemmer_, options.window));
  const std::vector<int64_t> remap =
      ChooseVocabulary(counts, options, &enc->keys_, &enc->document_frequency_);
  const uint32_t v = static_cast<uint32_t>(enc->keys_.size());
  absl::flat_hash_set<uint64_t> associated;
  const CsrMatrix m = PositivePmi(&counts.cooc, remap, v, options.context_smoothing, &associated);
  const uint64_t nonzeros = m.col.size();
  enc->semantic_ = SemanticVectors(m, options);
  enc->num_documents_ = counts.documents;
  enc->average_length_ = static_cast<double>(counts.total_tokens) / counts.documents;
  enc->BuildSubwordIndex();
  TrainingStats local;
  if (stats == nullptr) stats = &local;
  const std::shared_ptr<const WordNet> wordnet = enc->Retrofit(stats);
  enc->BuildNeighbours(associated);
  if (wordnet != nullptr) enc->AddRelatives(*wordnet, stats);
  {
    stats->documents = counts.documents;
    stats->tokens = counts.total_tokens;
    stats->vocabulary = v;
    stats->cooccurrence_pairs = nonzeros;
    stats->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return enc;
}

void Encoder::BuildSubwordIndex() {
  key_index_.clear();
  subwords_.clear();
  subword_count_.assign(keys_.size(), 0);
  for (uint32_t i = 0; i < keys_.size(); ++i) {
    key_index_.emplace(keys_[i], i);
    const std::vector<uint64_t> grams = Subwords(keys_[i]);
    subword_count_[i] = static_cast<uint16_t>(std::min<size_t>(grams.size(), 65535));
    for (uint64_t g : grams) subwords_[g].push_back(i);
  }
}

std::shared_ptr<const WordNet> Encoder::Retrofit(TrainingStats* stats) {
  if (options_.wordnet_weight <= 0.f) {
    stats->wordnet = "WordNet off (wordnet_weight 0): meaning from the collection's texts alone";
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<const WordNet>> wordnet = SharedWordNet(options_.wordnet_dir);
  if (!wordnet.ok()) {
    stats->wordnet = absl::StrCat("no WordNet (", wordnet.status().message(),
                                  "): meaning from the collection's texts alone");
    return nullptr;
  }
  // The relations between vocabulary keys: lemmas are stemmed as tokens are.
  const uint32_t v = static_cast<uint32_t>(keys_.size());
  absl::flat_hash_map<uint64_t, float> edges;
  absl::flat_hash_map<std::string, int64_t> key_of;
  auto key = [&](const std::string& lemma) {
    auto [it, fresh] = key_of.try_emplace(lemma, -1);
    if (fresh) {
      auto k = key_index_.find(stemmer_.Stem(lemma));
      if (k != key_index_.end()) it->second = k->second;
    }
    return it->second;
  };
  for (const WordRelation& r : (*wordnet)->relations()) {
    const int64_t a = key(r.a), b = key(r.b);
    if (a < 0 || b < 0 || a == b) continue;
    float& w = edges[(uint64_t(std::min(a, b)) << 32) | uint64_t(std::max(a, b))];
    w = std::max(w, r.weight);
  }
  // Adjacency lists in key order (deterministic sweeps).
  std::vector<std::vector<std::pair<uint32_t, float>>> adjacent(v);
  for (const auto& [k, w] : edges) {
    adjacent[k >> 32].emplace_back(static_cast<uint32_t>(k & 0xffffffffu), w);
    adjacent[k & 0xffffffffu].emplace_back(static_cast<uint32_t>(k >> 32), w);
  }
  uint32_t related = 0;
  for (auto& list : adjacent) {
    std::sort(list.begin(), list.end());
    related += !list.empty();
  }
  const uint32_t ks = options_.semantic_dims;
  const std::vector<float> original = semantic_;
  const float beta = options_.wordnet_weight;
  std::vector<float> sum(ks);
  for (int sweep = 0; sweep < 10; ++sweep) {
    for (uint32_t i = 0; i < v; ++i) {
      if (adjacent[i].empty()) continue;
      std::fill(sum.begin(), sum.end(), 0.f);
      float total = 0.f;
      for (const auto& [j, w] : adjacent[i]) {
        const float* q = semantic_.data() + size_t{j} * ks;
        for (uint32_t d = 0; d < ks; ++d) sum[d] += w * q[d];
        total += w;
      }
      float* out = semantic_.data() + size_t{i} * ks;
      const float* own = original.data() + size_t{i} * ks;
      const float alpha = static_cast<float>(document_frequency_[i]) / kWordNetCorpusDf;
      for (uint32_t d = 0; d < ks; ++d) {
        out[d] = (alpha * own[d] + beta * sum[d] / total) / (alpha + beta);
      }
    }
  }
  for (uint32_t i = 0; i < v; ++i) {
    if (!adjacent[i].empty()) Normalize(semantic_.data() + size_t{i} * ks, ks);
  }
  stats->wordnet_relations = edges.size();
  stats->wordnet = absl::StrCat("WordNet at ", options_.wordnet_dir, ": ", edges.size(),
                                " relations among ", related, " vocabulary keys");
  return *std::move(wordnet);
}

std::vector<uint32_t> Encoder::ExpansionVocabulary() const {
  const uint32_t n =
      std::min<uint32_t>(options_.expansion_vocabulary, static_cast<uint32_t>(keys_.size()));
  // The n keys of highest document frequency (ties: vocabulary order).
  std::vector<uint32_t> top(keys_.size());
  std::iota(top.begin(), top.end(), 0u);
  std::stable_sort(top.begin(), top.end(), [&](uint32_t a, uint32_t b) {
    return document_frequency_[a] > document_frequency_[b];
  });
  top.resize(n);
  // Rare keys' vectors rest on a few co-occurrences: no expansion to or from them.
  while (!top.empty() && document_frequency_[top.back()] < kMinExpansionDf) top.pop_back();
  return top;
}

void Encoder::AddRelatives(const WordNet& wordnet, TrainingStats* stats) {
  if (options_.expansion_weight <= 0.f || options_.expansion_neighbours == 0) return;
  std::vector<bool> target(keys_.size(), false);
  for (uint32_t k : ExpansionVocabulary()) target[k] = true;
  // Per word the texts barely know (unseen, or in fewer than
  // kMinExpansionDf documents): its relatives among the expansion keys.
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint32_t, float>> found;
  absl::flat_hash_map<std::string, std::string> stems;
  auto stem = [&](const std::string& lemma) -> const std::string& {
    auto [it, fresh] = stems.try_emplace(lemma);
    if (fresh) it->second = stemmer_.Stem(lemma);
    return it->second;
  };
  auto relate = [&](const std::string& from, const std::string& to, float weight) {
    if (from == to) return;
    auto f = key_index_.find(from);
    if (f != key_index_.end() && document_frequency_[f->second] >= kMinExpansionDf) return;
    auto t = key_index_.find(to);
    if (t == key_index_.end() || !target[t->second]) return;
    float& w = found[from][t->second];
    w = std::max(w, weight);
  };
  for (const WordRelation& r : wordnet.relations()) {
    const std::string& a = stem(r.a);
    const std::string& b = stem(r.b);
    relate(a, b, kWordNetRelativeShare * r.weight);
    relate(b, a, kWordNetRelativeShare * r.weight);
  }
  uint64_t words = 0;
  for (auto& [from, list] : found) {
    std::vector<std::pair<uint32_t, float>> best(list.begin(), list.end());
    std::sort(best.begin(), best.end(), [](const auto& x, const auto& y) {
      return x.second != y.second ? x.second > y.second : x.first < y.first;
    });
    if (best.size() > options_.expansion_neighbours) best.resize(options_.expansion_neighbours);
    ++words;
    if (auto k = key_index_.find(from); k != key_index_.end()) {
      neighbours_[k->second] = std::move(best);
    } else {
      relatives_.emplace(from, std::move(best));
    }
  }
  absl::StrAppend(&stats->wordnet, "; ", words,
                  " rare or unseen words expand to their WordNet relatives");
}

void Encoder::BuildNeighbours(const absl::flat_hash_set<uint64_t>& associated) {
  const uint32_t ks = options_.semantic_dims;
  neighbours_.assign(keys_.size(), {});
  if (options_.expansion_weight <= 0.f || options_.expansion_neighbours == 0) return;
  const std::vector<uint32_t> top = ExpansionVocabulary();
  if (top.size() < 2) return;
  const uint32_t n_top = static_cast<uint32_t>(top.size());
  std::vector<float> m(size_t{n_top} * ks);
  for (uint32_t i = 0; i < n_top; ++i) {
    std::memcpy(m.data() + size_t{i} * ks, semantic_.data() + size_t{top[i]} * ks,
                ks * sizeof(float));
  }
  const uint32_t keep = options_.expansion_neighbours;
  const float min_cos = options_.expansion_min_cosine;
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = 0; i < int64_t{n_top}; ++i) {
    const float* a = m.data() + size_t(i) * ks;
    std::vector<std::pair<float, uint32_t>> best;  // (cosine, index in top)
    for (uint32_t j = 0; j < n_top; ++j) {
      if (j == i) continue;
      const float* b = m.data() + size_t{j} * ks;
      float dot = 0.f;
      for (uint32_t k = 0; k < ks; ++k) dot += a[k] * b[k];
      if (dot < min_cos) continue;
      const uint32_t ka = top[i], kb = top[j];
      if (associated.contains((uint64_t{std::min(ka, kb)} << 32) | std::max(ka, kb))) continue;
      if (best.size() < keep) {
        best.emplace_back(dot, j);
        std::push_heap(best.begin(), best.end(), std::greater<>());
      } else if (dot > best.front().first) {
        std::pop_heap(best.begin(), best.end(), std::greater<>());
        best.back() = {dot, j};
        std::push_heap(best.begin(), best.end(), std::greater<>());
      }
    }
    std::sort(best.begin(), best.end(), std::greater<>());
    auto& out = neighbours_[top[i]];
    // Two keys of the same direction can give a product a rounding above
    // 1: cosines are kept within [-1, 1].
    for (const auto& [c, j] : best) out.emplace_back(top[j], std::clamp(c, -1.f, 1.f));
  }
}

void Encoder::KeyVector(const std::string& key, float* out, float* idf) const {
  const uint32_t ks = options_.semantic_dims, kl = options_.lexical_dims;
  float* sem = out;
  float* lex = out + ks;
  LexicalCode(key, kl, lex);
  std::fill(sem, sem + ks, 0.f);
  auto it = key_index_.find(key);
  if (it != key_index_.end()) {
    std::memcpy(sem, semantic_.data() + size_t{it->second} * ks, ks * sizeof(float));
    *idf = Idf(num_documents_, document_frequency_[it->second]);
  } else if (auto rel = relatives_.find(key); rel != relatives_.end()) {
    // Unseen key WordNet relates to known ones: their meaning.
    *idf = Idf(num_documents_, 0);
    for (const auto& [k, weight] : rel->second) {
      const float* s = semantic_.data() + size_t{k} * ks;
      for (uint32_t j = 0; j < ks; ++j) sem[j] += weight * s[j];
    }
    Normalize(sem, ks);
  } else {
    // Unseen key: borrow from the keys sharing most of its character n-grams.
    *idf = Idf(num_documents_, 0);
    const std::vector<uint64_t> grams = Subwords(key);
    absl::flat_hash_map<uint32_t, uint32_t> shared;
    for (uint64_t g : grams) {
      auto p = subwords_.find(g);
      if (p == subwords_.end() || p->second.size() > kMaxSubwordPosting) continue;
      for (uint32_t k : p->second) ++shared[k];
    }
    std::vector<std::pair<double, uint32_t>> best;
    for (const auto& [k, n] : shared) {
      const double jaccard = double(n) / (grams.size() + subword_count_[k] - n);
      if (jaccard >= kMinNeighbourJaccard) best.emplace_back(jaccard, k);
    }
    const size_t top = std::min(best.size(), kSubwordNeighbours);
    std::partial_sort(best.begin(), best.begin() + top, best.end(),
                      [](const auto& x, const auto& y) {
                        return x.first != y.first ? x.first > y.first : x.second < y.second;
                      });
    for (size_t i = 0; i < top; ++i) {
      const float* s = semantic_.data() + size_t{best[i].second} * ks;
      for (uint32_t j = 0; j < ks; ++j) sem[j] += static_cast<float>(best[i].first) * s[j];
    }
    Normalize(sem, ks);
    if (top > 0 && best[0].first >= kSpellingJaccard) {
      std::vector<float> near(kl);
      LexicalCode(keys_[best[0].second], kl, near.data());
      for (uint32_t j = 0; j < kl; ++j) lex[j] += near[j];
      Normalize(lex, kl);
      *idf = Idf(num_documents_, document_frequency_[best[0].second]);
    }
  }
  bool has_semantic = false;
  for (uint32_t j = 0; j < ks && !has_semantic; ++j) has_semantic = sem[j] != 0.f;
  const float a = has_semantic ? std::sqrt(options_.semantic_share) : 0.f;
  const float l = has_semantic ? std::sqrt(1.f - options_.semantic_share) : 1.f;
  for (uint32_t j = 0; j < ks; ++j) sem[j] *= a;
  for (uint32_t j = 0; j < kl; ++j) lex[j] *= l;
}

std::vector<float> Encoder::KeyTable() const {
  const uint32_t d = dim();
  std::vector<float> table(keys_.size() * d, 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < int64_t(keys_.size()); ++k) {
    float idf;
    KeyVector(keys_[size_t(k)], table.data() + size_t(k) * d, &idf);
  }
  return table;
}

std::vector<float> Encoder::WordVector(std::string_view word, float* idf) const {
  std::vector<float> out(options_.semantic_dims + options_.lexical_dims);
  float unused;
  KeyVector(stemmer_.Stem(word), out.data(), idf != nullptr ? idf : &unused);
  return out;
}

absl::StatusOr<std::vector<Encoder::Grouped>> Encoder::Group(std::string_view text,
                                                             std::string_view field,
                                                             uint32_t* length,
                                                             uint32_t* distinct) const {
  auto tokens = tokenizer_.Tokenize(text);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), ": ", tokens.status().message()));
  }
  if (tokens->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": contains no words"));
  }
  std::vector<Grouped> groups;
  absl::flat_hash_map<std::string, uint32_t> index;
  constexpr uint32_t kCut = std::numeric_limits<uint32_t>::max();  // counted, no row
  for (const Token& t : *tokens) {
    std::string key = stemmer_.Stem(t.text);
    auto it = index.find(key);
    if (it == index.end()) {
      if (groups.size() >= options_.max_document_tokens) {
        index.emplace(std::move(key), kCut);
        continue;
      }
      it = index.emplace(key, static_cast<uint32_t>(groups.size())).first;
      groups.push_back({std::move(key), 0, t.begin, t.end});
    }
    if (it->second != kCut) ++groups[it->second].count;
  }
  *length = static_cast<uint32_t>(tokens->size());
  *distinct = static_cast<uint32_t>(index.size());
  return groups;
}

absl::StatusOr<Encoding> Encoder::EncodeDocument(std::string_view text,
                                                 std::string_view field) const {
  uint32_t length = 0, distinct = 0;
  ATTN_ASSIGN_OR_RETURN(std::vector<Grouped> groups, Group(text, field, &length, &distinct));
  const uint32_t d = dim(), kw = d - 1;
  Encoding e;
  e.num_tokens = static_cast<uint32_t>(groups.size());
  e.distinct_keys = distinct;
  e.tokens.assign(size_t{e.num_tokens} * d, 0.f);
  e.pooled.assign(d, 0.f);
  const double norm_length =
      options_.k1 * (1.0 - options_.b + options_.b * length / std::max(average_length_, 1.0));
  for (uint32_t r = 0; r < e.num_tokens; ++r) {
    const Grouped& g = groups[r];
    float* row = e.tokens.data() + size_t{r} * d;
    float idf;
    KeyVector(g.key, row, &idf);
    const float s = static_cast<float>(g.count / (g.count + norm_length));
    for (uint32_t j = 0; j < kw; ++j) {
      e.pooled[j] += idf * s * row[j];
      row[j] *= s;
    }
    row[kw] = std::sqrt(std::max(0.f, 1.f - s * s));
    e.token_texts.emplace_back(text.substr(g.begin, g.end - g.begin));
    e.token_spans.emplace_back(g.begin, g.end);
  }
  Normalize(e.pooled.data(), d);
  return e;
}

absl::StatusOr<Encoding> Encoder::EncodeQuery(std::string_view text, std::string_view field,
                                              uint32_t max_rows) const {
  uint32_t length = 0, distinct = 0;
  ATTN_ASSIGN_OR_RETURN(std::vector<Grouped> groups, Group(text, field, &length, &distinct));
  if (max_rows > 0 && groups.size() > max_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(field.data(), field.size()), ": ", groups.size(),
                     " distinct words, above the limit of ", max_rows,
                     " query rows (the server's --max_query_tokens); ask with fewer words"));
  }
  const uint32_t d = dim();
  Encoding e;
  e.num_tokens = static_cast<uint32_t>(groups.size());
  e.distinct_keys = distinct;
  e.tokens.assign(size_t{e.num_tokens} * d, 0.f);
  e.pooled.assign(d, 0.f);
  for (uint32_t r = 0; r < e.num_tokens; ++r) {
    const Grouped& g = groups[r];
    float* row = e.tokens.data() + size_t{r} * d;
    float idf;
    KeyVector(g.key, row, &idf);
    const float weight = idf * g.count;
    for (uint32_t j = 0; j + 1 < d; ++j) e.pooled[j] += weight * row[j];
    e.weights.push_back(weight);
    e.token_texts.emplace_back(text.substr(g.begin, g.end - g.begin));
    e.token_spans.emplace_back(g.begin, g.end);
  }
  // Expansion rows: the words' nearest keys by meaning, not already asked
  // (with max_rows, those of largest weight that fit, in the same order).
  struct Expansion {
    uint32_t word = 0, key = 0;
    float weight = 0.f;
  };
  std::vector<Expansion> expansions;
  absl::flat_hash_set<std::string> asked;
  for (const Grouped& g : groups) asked.insert(g.key);
  const uint32_t original = e.num_tokens;
  for (uint32_t r = 0; r < original; ++r) {
    const std::vector<std::pair<uint32_t, float>>* list = nullptr;
    if (auto it = key_index_.find(groups[r].key); it != key_index_.end()) {
      list = &neighbours_[it->second];
    } else if (auto rel = relatives_.find(groups[r].key); rel != relatives_.end()) {
      list = &rel->second;
    }
    if (list == nullptr) continue;
    for (const auto& [k, cosine] : *list) {
      if (!asked.insert(keys_[k]).second) continue;
      expansions.push_back({r, k, options_.expansion_weight * cosine * e.weights[r]});
    }
  }
  if (max_rows > 0 && original + expansions.size() > max_rows) {
    std::vector<size_t> order(expansions.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return expansions[a].weight > expansions[b].weight;
    });
    order.resize(max_rows - original);
    std::sort(order.begin(), order.end());
    std::vector<Expansion> kept;
    for (size_t i : order) kept.push_back(expansions[i]);
    expansions = std::move(kept);
  }
  for (const Expansion& x : expansions) {
    e.tokens.resize(e.tokens.size() + d, 0.f);
    float* row = e.tokens.data() + size_t{e.num_tokens} * d;
    float idf;
    KeyVector(keys_[x.key], row, &idf);
    for (uint32_t j = 0; j + 1 < d; ++j) e.pooled[j] += x.weight * row[j];
    e.weights.push_back(x.weight);
    e.token_texts.push_back(keys_[x.key]);
    e.token_spans.emplace_back(groups[x.word].begin, groups[x.word].end);
    ++e.num_tokens;
  }
  Normalize(e.pooled.data(), d);
  return e;
}

std::string Encoder::Serialize() const {
  Writer w;
  for (char c : kMagic) w.Put<char>(c);
  w.Put<uint32_t>(kFormatVersion);
  const EncoderOptions& o = options_;
  for (uint32_t x : {o.semantic_dims, o.lexical_dims, o.window, o.min_count, o.max_vocabulary,
                     o.power_iterations, o.max_document_tokens, o.expansion_neighbours,
                     o.expansion_vocabulary}) {
    w.Put<uint32_t>(x);
  }
  for (float x : {o.semantic_share, o.context_smoothing, o.k1, o.b, o.temperature,
                  o.expansion_weight, o.expansion_min_cosine}) {
    w.Put<float>(x);
  }
  w.Put<uint64_t>(o.seed);
  w.PutString(o.stem_language);
  w.Put<float>(o.wordnet_weight);
  w.Put<uint64_t>(num_documents_);
  w.Put<double>(average_length_);
  w.Put<uint32_t>(static_cast<uint32_t>(keys_.size()));
  for (size_t i = 0; i < keys_.size(); ++i) {
    w.PutString(keys_[i]);
    w.Put<uint32_t>(document_frequency_[i]);
  }
  w.PutFloats(semantic_);
  for (const auto& list : neighbours_) {
    w.Put<uint8_t>(static_cast<uint8_t>(list.size()));
    for (const auto& [key, cosine] : list) {
      w.Put<uint32_t>(key);
      w.Put<float>(cosine);
    }
  }
  // Format 5: unseen words' WordNet relatives, by word.
  std::vector<const std::pair<const std::string, std::vector<std::pair<uint32_t, float>>>*> rel;
  for (const auto& entry : relatives_) rel.push_back(&entry);
  std::sort(rel.begin(), rel.end(),
            [](const auto* x, const auto* y) { return x->first < y->first; });
  w.Put<uint32_t>(static_cast<uint32_t>(rel.size()));
  for (const auto* entry : rel) {
    w.PutString(entry->first);
    w.Put<uint8_t>(static_cast<uint8_t>(entry->second.size()));
    for (const auto& [key, weight] : entry->second) {
      w.Put<uint32_t>(key);
      w.Put<float>(weight);
    }
  }
  return w.Finish();
}

absl::StatusOr<std::unique_ptr<Encoder>> Encoder::Deserialize(std::string_view bytes) {
  auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("encoder: ", what));
  };
  if (bytes.size() < sizeof(kMagic) + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("not an encoder (bad magic)");
  }
  Reader r(bytes.substr(sizeof(kMagic), bytes.size() - sizeof(kMagic) - 8));
  uint32_t version;
  if (!r.Get(&version)) return corrupt("truncated header");
  if (version != kFormatVersion && version != kXxhChecksumVersion &&
      version != kFnvChecksumVersion) {
    return corrupt(absl::StrCat("unknown format version ", version));
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  const std::string_view summed = bytes.substr(0, bytes.size() - 8);
  if ((version == kFnvChecksumVersion ? Fnv1a(summed) : Checksum64(summed.data(), summed.size())) !=
      stored_sum) {
    return corrupt("checksum mismatch");
  }
  EncoderOptions o;
  bool ok = r.Get(&o.semantic_dims) && r.Get(&o.lexical_dims) && r.Get(&o.window) &&
            r.Get(&o.min_count) && r.Get(&o.max_vocabulary) && r.Get(&o.power_iterations) &&
            r.Get(&o.max_document_tokens) && r.Get(&o.expansion_neighbours) &&
            r.Get(&o.expansion_vocabulary) && r.Get(&o.semantic_share) &&
            r.Get(&o.context_smoothing) && r.Get(&o.k1) && r.Get(&o.b) && r.Get(&o.temperature) &&
            r.Get(&o.expansion_weight) && r.Get(&o.expansion_min_cosine) && r.Get(&o.seed) &&
            r.GetString(&o.stem_language);
  // 4096 was the default before it became 65536 (a collection's own limit,
  // 16384 by default, then decides).
  if (o.max_document_tokens == 4096) o.max_document_tokens = EncoderOptions().max_document_tokens;
  o.wordnet_weight = 0.f;  // formats 3 and 4 were trained without
  if (ok && version >= 5) ok = r.Get(&o.wordnet_weight);
  if (!ok) return corrupt("truncated options");
  if (absl::Status s = o.Validate(); !s.ok()) return corrupt(s.message());
  auto stemmer = Stemmer::Create(o.stem_language);
  if (!stemmer.ok()) return corrupt(stemmer.status().message());
  std::unique_ptr<Encoder> enc(new Encoder(o, *stemmer));
  uint32_t v;
  if (!r.Get(&enc->num_documents_) || !r.Get(&enc->average_length_) || !r.Get(&v)) {
    return corrupt("truncated statistics");
  }
  if (v > o.max_vocabulary || v > r.remaining() / 8) return corrupt("bad vocabulary size");
  enc->keys_.resize(v);
  enc->document_frequency_.resize(v);
  for (uint32_t i = 0; i < v; ++i) {
    if (!r.GetString(&enc->keys_[i]) || !r.Get(&enc->document_frequency_[i])) {
      return corrupt(absl::StrCat("truncated vocabulary at key ", i));
    }
  }
  if (!r.GetFloats(size_t{v} * o.semantic_dims, &enc->semantic_)) {
    return corrupt("bad semantic vectors");
  }
  enc->BuildSubwordIndex();
  if (enc->key_index_.size() != v) return corrupt("duplicate keys");
  // Neighbour lists: per key a count, then (key, cosine) pairs.
  enc->neighbours_.assign(v, {});
  for (uint32_t i = 0; i < v; ++i) {
    uint8_t count;
    if (!r.Get(&count) || count > o.expansion_neighbours) return corrupt("bad neighbour list");
    for (uint8_t k = 0; k < count; ++k) {
      uint32_t key;
      float cosine;
      // A cosine a rounding above 1 (written before they were clamped) is
      // taken as 1.
      if (!r.Get(&key) || !r.Get(&cosine) || key >= v || key == i ||
          !(cosine >= -1.001f && cosine <= 1.001f)) {
        return corrupt(absl::StrCat("bad neighbour list of key ", i, " (neighbour ", k, ": key ",
                                    key, ", cosine ", cosine, ")"));
      }
      enc->neighbours_[i].emplace_back(key, std::clamp(cosine, -1.f, 1.f));
    }
  }
  uint32_t unseen = 0;
  if (version >= 5 && !r.Get(&unseen)) return corrupt("truncated WordNet relatives");
  for (uint32_t i = 0; i < unseen; ++i) {
    std::string word;
    uint8_t count;
    if (!r.GetString(&word) || !r.Get(&count) || count > o.expansion_neighbours ||
        enc->key_index_.contains(word)) {
      return corrupt(absl::StrCat("bad WordNet relatives of unseen word ", i));
    }
    auto& list = enc->relatives_[word];
    for (uint8_t k = 0; k < count; ++k) {
      uint32_t key;
      float weight;
      if (!r.Get(&key) || !r.Get(&weight) || key >= v || !(weight > 0.f && weight <= 1.f)) {
        return corrupt(absl::StrCat("bad WordNet relative of '", word, "'"));
      }
      list.emplace_back(key, weight);
    }
  }
  if (r.remaining() != 0) return corrupt("trailing bytes");
  return enc;
}

}  // namespace attnsearch::text
