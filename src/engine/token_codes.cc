#include "engine/token_codes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/vector_math.h"
#include "text/encoder.h"

namespace attnsearch {

uint32_t ChooseCentroids(uint64_t tokens, size_t sample) {
  // Encoding costs time in proportion to the centroids (a 64M-token
  // collection would ask for 32,768, four times 8,192's two minutes);
  // config.token_codec.centroids asks for more, up to 65,536.
  uint32_t k = 64;
  const double want = 4.0 * std::sqrt(double(tokens));
  while (k < 8192 && double(k) * 1.5 < want) k *= 2;
  while (k > 16 && size_t(k) * 8 > sample) k /= 2;
  return k;
}

bool UsesVocabulary(const TokenCodecTraining& how, uint32_t dim) {
  return how.centroids == 0 && how.encoder != nullptr && how.encoder->dim() == dim &&
         how.encoder->vocabulary_size() > 0;
}

absl::StatusOr<std::unique_ptr<ResidualCodec>> TrainTokenCodec(const float* sample, size_t n,
                                                               uint32_t dim,
                                                               const TokenCodecTraining& how) {
  ResidualCodecOptions o;
  o.bits = how.bits;
  // A gain byte: one more byte a token (35 at d = 128 with 2 bits) for the
  // tokens' spread along their centroid, which k-means codes of clustered
  // vectors also miss (top-10 overlap with exact f32, 2 bits: 0.968 ->
  // 0.974); for text it carries the BM25 weight.
  o.gain = true;
  // Nearest centroids on bf16 matmuls (exactly, by a plain loop, if oneDNN
  // cannot make the primitive).
  o.nearest = [dim](const float* table, size_t k, const float* rows, size_t n, uint32_t* out) {
    auto finder = NearestRows::Create(table, k, dim);
    if (finder.ok() && (*finder)->Find(rows, n, out).ok()) return;
    for (size_t i = 0; i < n; ++i) {
      float best = -std::numeric_limits<float>::infinity();
      for (size_t j = 0; j < k; ++j) {
        float dot = 0;
        for (uint32_t t = 0; t < dim; ++t) dot += rows[i * dim + t] * table[j * dim + t];
        if (dot > best) {
          best = dot;
          out[i] = uint32_t(j);
        }
      }
    }
  };
  if (UsesVocabulary(how, dim)) {
    return ResidualCodec::TrainWithCentroids(sample, n, dim, how.encoder->KeyTable(), o);
  }
  o.centroids = how.centroids != 0 ? how.centroids : ChooseCentroids(how.collection_tokens, n);
  return ResidualCodec::Train(sample, n, dim, o);
}

CentroidCandidatesOptions FirstStageOptions(const ResidualCodec& codec, bool vocabulary,
                                            const NearestRows* nearest) {
  CentroidCandidatesOptions fo;
  fo.gain_max = codec.gain_max();
  // A word's own centroid and its nearest few carry a text query
  // (bench/RESULTS.md, "first stage"); k-means splits a cluster of tokens
  // among more centroids.
  if (!vocabulary) {
    // One matmul of the query tokens with the centroids (AMX where
    // present) instead of a graph search per token.
    if (nearest != nullptr) {
      fo.similarities = [nearest](const float* query, uint32_t m, float* out) {
        return nearest->Similarities(query, m, out);
      };
      // The lists' 2,000 best by their gathering, scored again over all
      // their centroids: on clustered vectors (100k documents) 100
      // candidates then hold 0.992 of the exhaustive top 10 at probe 16
      // (0.977 with 1,000), against 0.942 by the walk's order, in half the
      // walk's time (bench/RESULTS.md, "first stage").
      fo.refine = 2000;
    }
    return fo;
  }
  fo.probe = 4;
  // A text query row is its word's vector (times a weight) plus what no
  // word has: its word, found by the codec's sign hash, and the word's
  // nearest words are its probes.
  const ResidualCodec* table = &codec;
  fo.own_centroid = [table](const float* token, uint32_t* id, float* scale) {
    if (!table->FindBySigns(token, 1, id).empty()) return false;
    const uint32_t d = table->dim();
    const float* c = table->centroids().data() + size_t(*id) * d;
    const float cc = Dot(c, c, d), tc = Dot(token, c, d);
    if (!(cc > 0.f) || !(tc > 0.f)) return false;
    *scale = tc / cc;
    return true;
  };
  return fo;
}

absl::StatusOr<std::shared_ptr<const TokenCodecState>> TokenCodecState::Make(
    std::unique_ptr<ResidualCodec> codec, uint64_t version, const RerankerOptions& options,
    uint64_t encoder_version, bool first_stage) {
  ATTN_ASSIGN_OR_RETURN(
      Int8CodeBook book,
      Int8CodeBook::Make(codec->dim(), codec->bits(), codec->id_bytes(), codec->centroids(),
                         codec->bucket_values(), codec->gain_max()));
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<CodeScorer> scorer,
                        CodeScorer::Create(std::move(book), options));
  ATTN_ASSIGN_OR_RETURN(
      std::unique_ptr<NearestRows> nearest,
      NearestRows::Create(codec->centroids().data(), codec->num_centroids(), codec->dim()));
  auto state = std::make_shared<TokenCodecState>();
  if (first_stage) {
    const CentroidCandidatesOptions fo =
        FirstStageOptions(*codec, encoder_version > 0, nearest.get());
    ATTN_ASSIGN_OR_RETURN(state->first_stage,
                          CentroidCandidates::Create(codec->centroids().data(),
                                                     codec->num_centroids(), codec->dim(), fo));
  }
  state->nearest = std::move(nearest);
  state->version = version;
  state->encoder_version = encoder_version;
  state->codec = std::move(codec);
  state->scorer = std::move(scorer);
  return std::shared_ptr<const TokenCodecState>(std::move(state));
}

void TokenCodecState::HoldCodes(Label label, std::string_view record) const {
  if (first_stage == nullptr || CodesVersion(record) != version) return;
  const absl::StatusOr<CodesView> v = ParseCodes(record, codec->code_bytes());
  if (!v.ok()) return;
  const size_t stride = codec->code_bytes();
  std::vector<uint32_t> ids(v->rows);
  std::vector<uint8_t> gains(v->rows, 255);
  for (uint32_t j = 0; j < v->rows; ++j) {
    const uint8_t* code = v->codes + size_t(j) * stride;
    ids[j] = codec->CentroidOf(code);
    if (codec->gain_bytes() > 0) gains[j] = code[codec->id_bytes()];
  }
  // Ids come from this codec: in range by construction.
  (void)first_stage->Add(label, ids.data(), gains.data(), v->rows);
}

void TokenCodecState::Forget(const std::vector<Label>& labels) const {
  if (first_stage == nullptr) return;
  for (Label l : labels) first_stage->Remove(l);
}

std::string TokenCodecState::Encode(const float* tokens, uint32_t rows) const {
  std::string out(8 + size_t(rows) * codec->code_bytes(), '\0');
  const uint32_t v = uint32_t(version);
  std::memcpy(out.data(), &v, 4);
  std::memcpy(out.data() + 4, &rows, 4);
  EncodeRows(tokens, rows, reinterpret_cast<uint8_t*>(out.data() + 8));
  return out;
}

void TokenCodecState::EncodeRows(const float* tokens, size_t n, uint8_t* codes) const {
  std::vector<uint32_t> ids(n, 0);
  // Rows that repeat a word's signs (a vocabulary codec) need no search;
  // the rest search the centroids on bf16 matmuls.
  bool searched = true;
  codec->FindCentroids(tokens, n, ids.data(),
                       [&](const float*, size_t, const float* rows, size_t m, uint32_t* out) {
                         searched = nearest->Find(rows, m, out).ok();
                       });
  if (!searched) {
    codec->Encode(tokens, n, codes);  // the exact search of the centroids
    return;
  }
  codec->EncodeWithCentroids(tokens, n, ids.data(), codes);
}

std::vector<std::string> TokenCodecState::EncodeMany(
    const std::vector<std::pair<const float*, uint32_t>>& matrices) const {
  const uint32_t dim = codec->dim();
  const size_t code_bytes = codec->code_bytes();
  size_t total = 0;
  for (const auto& m : matrices) total += m.second;
  std::vector<float> rows(total * dim);
  size_t at = 0;
  for (const auto& [tokens, n] : matrices) {
    std::copy_n(tokens, size_t(n) * dim, rows.data() + at * dim);
    at += n;
  }
  std::vector<uint8_t> codes(total * code_bytes);
  EncodeRows(rows.data(), total, codes.data());
  std::vector<std::string> out;
  out.reserve(matrices.size());
  const uint32_t v = uint32_t(version);
  at = 0;
  for (const auto& m : matrices) {
    const uint32_t n = m.second;
    std::string r(8 + size_t(n) * code_bytes, '\0');
    std::memcpy(r.data(), &v, 4);
    std::memcpy(r.data() + 4, &n, 4);
    std::memcpy(r.data() + 8, codes.data() + at * code_bytes, size_t(n) * code_bytes);
    out.push_back(std::move(r));
    at += n;
  }
  return out;
}

absl::Status TokenCodecState::DecodeRecord(std::string_view record, Document* doc) const {
  ATTN_ASSIGN_OR_RETURN(const CodesView v, ParseCodes(record, codec->code_bytes()));
  if (v.version != version) {
    return absl::FailedPreconditionError(absl::StrCat("token codes of codec version ", v.version,
                                                      "; the collection's is ", version));
  }
  doc->num_tokens = v.rows;
  doc->tokens.resize(size_t(v.rows) * codec->dim());
  codec->Decode(v.codes, v.rows, doc->tokens.data());
  return absl::OkStatus();
}

absl::StatusOr<CodesView> ParseCodes(std::string_view record, size_t code_bytes) {
  CodesView v;
  uint32_t version = 0;
  if (record.size() >= 8) {
    std::memcpy(&version, record.data(), 4);
    std::memcpy(&v.rows, record.data() + 4, 4);
  }
  if (record.size() < 8 || record.size() != 8 + size_t(v.rows) * code_bytes) {
    return absl::DataLossError(
        absl::StrCat("token codes: a record of ", record.size(), " bytes is malformed"));
  }
  v.version = version;
  v.codes = reinterpret_cast<const uint8_t*>(record.data() + 8);
  return v;
}

uint64_t CodesVersion(std::string_view record) {
  uint32_t version = 0;
  if (record.size() >= 4) std::memcpy(&version, record.data(), 4);
  return version;
}

}  // namespace attnsearch
