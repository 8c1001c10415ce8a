#include "storage/codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/vector_math.h"

namespace attnsearch::codec {
namespace {

void PutU32(std::string* s, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);  // the project targets little-endian x86-64
  s->append(b, 4);
}

void PutU64(std::string* s, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  s->append(b, 8);
}

void PutF64(std::string* s, double v) {
  char b[8];
  std::memcpy(b, &v, 8);
  s->append(b, 8);
}

void PutString(std::string* s, std::string_view v) {
  PutU32(s, uint32_t(v.size()));
  s->append(v.data(), v.size());
}

// Sequential reader over a value; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U32(uint32_t* v) {
    if (in_.size() < 4) return false;
    std::memcpy(v, in_.data(), 4);
    in_.remove_prefix(4);
    return true;
  }
  bool String(std::string* v) {
    uint32_t n;
    if (!U32(&n) || in_.size() < n) return false;
    v->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool U64(uint64_t* v) {
    if (in_.size() < 8) return false;
    std::memcpy(v, in_.data(), 8);
    in_.remove_prefix(8);
    return true;
  }
  bool F64(double* v) {
    if (in_.size() < 8) return false;
    std::memcpy(v, in_.data(), 8);
    in_.remove_prefix(8);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt ", what, " record"));
}

// Version 2 added token spans; version 1 records still decode.
constexpr uint32_t kDocRecordVersion = 3;
// Config version 2 added numeric_fields; version 1 configs still decode.
constexpr uint32_t kConfigVersion = 4;
constexpr uint32_t kAnnTuningVersion = 1;

}  // namespace

std::string LabelKey(Label label) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i) {
    k[i] = char(label & 0xff);
    label >>= 8;
  }
  return k;
}

absl::StatusOr<Label> DecodeLabelKey(std::string_view key) {
  if (key.size() != 8) return Corrupt("label key");
  Label v = 0;
  for (unsigned char c : key) v = (v << 8) | c;
  return v;
}

std::string EncodeDocRecord(const Document& doc) {
  std::string s;
  PutU32(&s, kDocRecordVersion);
  PutString(&s, doc.id);
  PutString(&s, doc.text);
  PutU32(&s, uint32_t(doc.metadata.size()));
  for (const auto& [k, v] : doc.metadata) {
    PutString(&s, k);
    PutString(&s, v);
  }
  PutU32(&s, uint32_t(doc.token_texts.size()));
  for (const auto& t : doc.token_texts) PutString(&s, t);
  PutU32(&s, uint32_t(doc.token_spans.size()));
  for (const auto& [b, e] : doc.token_spans) {
    PutU32(&s, b);
    PutU32(&s, e);
  }
  PutU32(&s, doc.encoded_by);
  return s;
}

absl::Status DecodeDocRecord(std::string_view value, Document* doc) {
  Reader r(value);
  uint32_t version, n;
  if (!r.U32(&version) || version < 1 || version > kDocRecordVersion) {
    return Corrupt("document");
  }
  if (!r.String(&doc->id) || !r.String(&doc->text) || !r.U32(&n)) {
    return Corrupt("document");
  }
  doc->metadata.clear();
  for (uint32_t i = 0; i < n; ++i) {
    std::string k, v;
    if (!r.String(&k) || !r.String(&v)) return Corrupt("document");
    doc->metadata.emplace(std::move(k), std::move(v));
  }
  if (!r.U32(&n)) return Corrupt("document");
  doc->token_texts.clear();
  for (uint32_t i = 0; i < n; ++i) {
    std::string t;
    if (!r.String(&t)) return Corrupt("document");
    doc->token_texts.push_back(std::move(t));
  }
  doc->token_spans.clear();
  if (version >= 2) {
    if (!r.U32(&n)) return Corrupt("document");
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t b, e;
      if (!r.U32(&b) || !r.U32(&e)) return Corrupt("document");
      doc->token_spans.emplace_back(b, e);
    }
  }
  doc->encoded_by = kClientVectors;
  if (version >= 3 && !r.U32(&doc->encoded_by)) return Corrupt("document");
  if (!r.done()) return Corrupt("document");
  return absl::OkStatus();
}

std::string EncodeTokens(const float* tokens, uint32_t rows, uint32_t dim, TokenDtype dtype) {
  std::string s;
  const size_t n = size_t(rows) * dim;
  s.reserve(4 + size_t(rows) * TokenRowBytes(dtype, dim));
  PutU32(&s, rows);
  switch (dtype) {
    case TokenDtype::kF32:
      s.append(reinterpret_cast<const char*>(tokens), n * 4);
      break;
    case TokenDtype::kBF16:
      s.resize(4 + n * 2);
      FloatToBf16(tokens, reinterpret_cast<uint16_t*>(s.data() + 4), n);
      break;
    case TokenDtype::kInt8: {
      s.resize(4 + size_t(rows) * 4 + n);
      char* scales = s.data() + 4;
      int8_t* data = reinterpret_cast<int8_t*>(s.data() + 4 + size_t(rows) * 4);
      for (uint32_t r = 0; r < rows; ++r) {
        const float scale = QuantizeInt8(tokens + size_t(r) * dim, data + size_t(r) * dim, dim);
        std::memcpy(scales + size_t(r) * 4, &scale, 4);
      }
      break;
    }
  }
  return s;
}

absl::StatusOr<uint32_t> TokenRows(std::string_view value, uint32_t dim, TokenDtype dtype) {
  uint32_t rows;
  if (value.size() < 4) return Corrupt("token matrix");
  std::memcpy(&rows, value.data(), 4);
  if (value.size() != 4 + size_t(rows) * TokenRowBytes(dtype, dim)) {
    return Corrupt("token matrix");
  }
  return rows;
}

absl::Status DecodeTokens(std::string_view value, uint32_t dim, TokenDtype dtype,
                          std::vector<float>* out, uint32_t* rows) {
  auto r = TokenRows(value, dim, dtype);
  if (!r.ok()) return r.status();
  *rows = *r;
  const size_t n = size_t(*r) * dim;
  out->resize(n);
  if (n == 0) return absl::OkStatus();  // memcpy from/to an empty vector's null data is UB
  const char* data = TokenData(value, dtype, *r);
  switch (dtype) {
    case TokenDtype::kF32:
      std::memcpy(out->data(), data, n * 4);
      break;
    case TokenDtype::kBF16: {
      // The value's bytes may be unaligned for uint16_t; copy first.
      std::vector<uint16_t> tmp(n);
      std::memcpy(tmp.data(), data, n * 2);
      Bf16ToFloat(tmp.data(), out->data(), n);
      break;
    }
    case TokenDtype::kInt8:
      for (uint32_t row = 0; row < *r; ++row) {
        float scale;
        std::memcpy(&scale, TokenScales(value) + size_t(row) * 4, 4);
        DequantizeInt8(reinterpret_cast<const int8_t*>(data) + size_t(row) * dim, scale,
                       out->data() + size_t(row) * dim, dim);
      }
      break;
  }
  return absl::OkStatus();
}

std::string EncodePooled(const float* pooled, uint32_t dim) {
  return std::string(reinterpret_cast<const char*>(pooled), size_t(dim) * 4);
}

absl::Status DecodePooled(std::string_view value, uint32_t dim, std::vector<float>* out) {
  if (value.size() != size_t(dim) * 4) return Corrupt("pooled vector");
  out->resize(dim);
  std::memcpy(out->data(), value.data(), value.size());
  return absl::OkStatus();
}

std::string EncodeConfig(const CollectionConfig& config) {
  std::string s;
  PutU32(&s, kConfigVersion);
  PutU32(&s, config.dim);
  PutU32(&s, uint32_t(config.token_dtype));
  PutString(&s, config.ann_spec);
  PutU32(&s, uint32_t(config.numeric_fields.size()));
  for (const auto& f : config.numeric_fields) PutString(&s, f);
  const TokenCodecConfig& tc = config.token_codec;
  PutU32(&s, uint32_t(tc.kind));
  PutU32(&s, tc.bits);
  PutU32(&s, tc.centroids);
  PutU64(&s, tc.train_after);
  PutU32(&s, tc.keep_full_precision ? 1 : 0);
  PutU32(&s, uint32_t(config.candidates_from));
  return s;
}

absl::StatusOr<CollectionConfig> DecodeConfig(std::string_view value) {
  Reader r(value);
  uint32_t version, dim, dtype;
  CollectionConfig c;
  if (!r.U32(&version) || version < 1 || version > kConfigVersion || !r.U32(&dim) ||
      !r.U32(&dtype) || !r.String(&c.ann_spec)) {
    return Corrupt("collection config");
  }
  if (version >= 2) {
    uint32_t n;
    if (!r.U32(&n) || n > kMaxNumericFields) return Corrupt("collection config");
    c.numeric_fields.resize(n);
    for (auto& f : c.numeric_fields) {
      if (!r.String(&f)) return Corrupt("collection config");
    }
  }
  if (version >= 3) {
    uint32_t kind, keep;
    TokenCodecConfig& tc = c.token_codec;
    if (!r.U32(&kind) || !r.U32(&tc.bits) || !r.U32(&tc.centroids) || !r.U64(&tc.train_after) ||
        !r.U32(&keep) || keep > 1) {
      return Corrupt("collection config");
    }
    tc.kind = TokenCodecKind(kind);
    tc.keep_full_precision = keep == 1;
  }
  if (version >= 4) {
    uint32_t source;
    if (!r.U32(&source)) return Corrupt("collection config");
    c.candidates_from = CandidateSource(source);
  }
  if (!r.done()) return Corrupt("collection config");
  if (dtype != uint32_t(TokenDtype::kF32) && dtype != uint32_t(TokenDtype::kBF16) &&
      dtype != uint32_t(TokenDtype::kInt8)) {
    return Corrupt("collection config");
  }
  c.dim = dim;
  c.token_dtype = TokenDtype(dtype);
  if (!c.Validate().ok()) return Corrupt("collection config");
  return c;
}

std::string EncodeAnnTuning(const AnnTuning& tuning) {
  std::string s;
  PutU32(&s, kAnnTuningVersion);
  PutString(&s, tuning.ann_params);
  PutF64(&s, tuning.target_recall);
  PutU32(&s, tuning.k);
  PutF64(&s, tuning.sample_recall);
  PutU64(&s, tuning.sample_queries);
  return s;
}

absl::StatusOr<AnnTuning> DecodeAnnTuning(std::string_view value) {
  Reader r(value);
  uint32_t version;
  AnnTuning t;
  if (!r.U32(&version) || version != kAnnTuningVersion || !r.String(&t.ann_params) ||
      !r.F64(&t.target_recall) || !r.U32(&t.k) || !r.F64(&t.sample_recall) ||
      !r.U64(&t.sample_queries) || !r.done() || t.ann_params.empty()) {
    return Corrupt("ANN tuning");
  }
  return t;
}

std::string EncodeU64(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

absl::StatusOr<uint64_t> DecodeU64(std::string_view value) {
  if (value.size() != 8) return Corrupt("counter");
  uint64_t v;
  std::memcpy(&v, value.data(), 8);
  return v;
}

}  // namespace attnsearch::codec
