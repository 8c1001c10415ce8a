#include "ann/simd_storage.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/DistanceComputer.h>

#include <vector>

#include "ann/simd_distance.h"

namespace attnsearch {
namespace {

using faiss_idx_t = faiss::Index::idx_t;

// f32 codes: the query against a row, and two rows against each other.
class F32Computer final : public faiss::FlatCodesDistanceComputer {
 public:
  F32Computer(const faiss::IndexFlatCodes& index)
      : FlatCodesDistanceComputer(index.codes.data(), index.code_size),
        d_(size_t(index.d)),
        ip_(index.metric_type == faiss::METRIC_INNER_PRODUCT),
        k_(simd::Active()) {}
  void set_query(const float* x) override { q_ = x; }
  float distance_to_code(const uint8_t* code) override { return Score(q_, Row(code)); }
  float symmetric_dis(faiss_idx_t i, faiss_idx_t j) override {
    return Score(Row(codes + size_t(i) * code_size), Row(codes + size_t(j) * code_size));
  }

 private:
  static const float* Row(const uint8_t* code) { return reinterpret_cast<const float*>(code); }
  float Score(const float* a, const float* b) const {
    return ip_ ? k_.dot_f32(a, b, d_) : k_.l2_f32(a, b, d_);
  }
  const size_t d_;
  const bool ip_;
  const simd::Kernels& k_;
  const float* q_ = nullptr;
};

// Half-precision codes.
class F16Computer final : public faiss::FlatCodesDistanceComputer {
 public:
  F16Computer(const faiss::IndexFlatCodes& index)
      : FlatCodesDistanceComputer(index.codes.data(), index.code_size),
        d_(size_t(index.d)),
        ip_(index.metric_type == faiss::METRIC_INNER_PRODUCT),
        k_(simd::Active()),
        row_(d_) {}
  void set_query(const float* x) override { q_ = x; }
  float distance_to_code(const uint8_t* code) override { return Score(q_, Halves(code)); }
  float symmetric_dis(faiss_idx_t i, faiss_idx_t j) override {
    k_.decode_f16(Halves(codes + size_t(i) * code_size), row_.data(), d_);
    return Score(row_.data(), Halves(codes + size_t(j) * code_size));
  }

 private:
  static const uint16_t* Halves(const uint8_t* code) {
    return reinterpret_cast<const uint16_t*>(code);
  }
  float Score(const float* q, const uint16_t* h) const {
    return ip_ ? k_.dot_f16(q, h, d_) : k_.l2_f16(q, h, d_);
  }
  const size_t d_;
  const bool ip_;
  const simd::Kernels& k_;
  const float* q_ = nullptr;
  std::vector<float> row_;
};

// 8-bit codes with per-component ranges (FAISS QT_8bit: trained holds vmin
// then vdiff).
class Sq8Computer final : public faiss::FlatCodesDistanceComputer {
 public:
  Sq8Computer(const faiss::IndexScalarQuantizer& index)
      : FlatCodesDistanceComputer(index.codes.data(), index.code_size),
        d_(size_t(index.d)),
        ip_(index.metric_type == faiss::METRIC_INNER_PRODUCT),
        k_(simd::Active()),
        vmin_(index.sq.trained.data()),
        vdiff_(index.sq.trained.data() + d_),
        a_(d_),
        b_(d_) {}
  void set_query(const float* x) override { query_.Prepare(x, vmin_, vdiff_, d_); }
  float distance_to_code(const uint8_t* code) override {
    return ip_ ? query_.constant + k_.dot_u8(query_.scale.data(), code, d_)
               : k_.l2_u8(query_.shifted.data(), query_.step.data(), code, d_);
  }
  float symmetric_dis(faiss_idx_t i, faiss_idx_t j) override {
    Decode(codes + size_t(i) * code_size, a_.data());
    Decode(codes + size_t(j) * code_size, b_.data());
    return ip_ ? k_.dot_f32(a_.data(), b_.data(), d_) : k_.l2_f32(a_.data(), b_.data(), d_);
  }

 private:
  void Decode(const uint8_t* code, float* out) const {
    for (size_t t = 0; t < d_; ++t) {
      out[t] = vmin_[t] + (float(code[t]) + 0.5f) / 255.f * vdiff_[t];
    }
  }
  const size_t d_;
  const bool ip_;
  const simd::Kernels& k_;
  const float* vmin_;
  const float* vdiff_;
  simd::Sq8Query query_;
  std::vector<float> a_, b_;
};

class SimdFlat final : public faiss::IndexFlat {
 public:
  explicit SimdFlat(faiss::IndexFlat&& base) : faiss::IndexFlat(base.d, base.metric_type) {
    codes = std::move(base.codes);
    ntotal = base.ntotal;
    is_trained = base.is_trained;
    metric_arg = base.metric_arg;
    verbose = base.verbose;
  }
  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer() const override {
    return new F32Computer(*this);
  }
};

bool SimdSupports(const faiss::IndexScalarQuantizer& sq) {
  return sq.sq.qtype == faiss::ScalarQuantizer::QT_8bit ||
         sq.sq.qtype == faiss::ScalarQuantizer::QT_fp16;
}

class SimdSQ final : public faiss::IndexScalarQuantizer {
 public:
  explicit SimdSQ(faiss::IndexScalarQuantizer&& base)
      : faiss::IndexScalarQuantizer(int(base.d), base.sq.qtype, base.metric_type) {
    sq = base.sq;
    codes = std::move(base.codes);
    ntotal = base.ntotal;
    is_trained = base.is_trained;
    metric_arg = base.metric_arg;
    verbose = base.verbose;
  }
  faiss::FlatCodesDistanceComputer* get_FlatCodesDistanceComputer() const override {
    // Untrained 8-bit ranges are empty; FAISS's own computer reports that.
    if (!is_trained) return faiss::IndexScalarQuantizer::get_FlatCodesDistanceComputer();
    if (sq.qtype == faiss::ScalarQuantizer::QT_fp16) return new F16Computer(*this);
    return new Sq8Computer(*this);
  }
};

// The SIMD twin of a flat storage index, or null when there is none.
std::unique_ptr<faiss::Index> Twin(faiss::Index* index) {
  if (typeid(*index) == typeid(faiss::IndexFlat) || typeid(*index) == typeid(faiss::IndexFlatIP) ||
      typeid(*index) == typeid(faiss::IndexFlatL2)) {
    return std::make_unique<SimdFlat>(std::move(*static_cast<faiss::IndexFlat*>(index)));
  }
  if (typeid(*index) == typeid(faiss::IndexScalarQuantizer)) {
    auto* sq = static_cast<faiss::IndexScalarQuantizer*>(index);
    if (SimdSupports(*sq)) return std::make_unique<SimdSQ>(std::move(*sq));
  }
  return nullptr;
}

}  // namespace

std::unique_ptr<faiss::Index> UseSimdDistances(std::unique_ptr<faiss::Index> index) {
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get())) {
    if (hnsw->storage != nullptr) {
      if (std::unique_ptr<faiss::Index> twin = Twin(hnsw->storage)) {
        if (hnsw->own_fields) delete hnsw->storage;
        hnsw->storage = twin.release();
        hnsw->own_fields = true;
      }
    }
    return index;
  }
  if (std::unique_ptr<faiss::Index> twin = Twin(index.get())) return twin;
  return index;
}

bool CodeScorer::Bind(const faiss::Index& storage, const float* query) {
  if (storage.metric_type != faiss::METRIC_INNER_PRODUCT || !storage.is_trained) return false;
  const auto* codes = dynamic_cast<const faiss::IndexFlatCodes*>(&storage);
  if (dynamic_cast<const SimdFlat*>(&storage) != nullptr) {
    kind_ = Kind::kF32;
  } else if (const auto* sq = dynamic_cast<const SimdSQ*>(&storage)) {
    if (sq->sq.qtype == faiss::ScalarQuantizer::QT_fp16) {
      kind_ = Kind::kF16;
    } else {
      kind_ = Kind::kSq8;
      vmin_ = sq->sq.trained.data();
      vdiff_ = vmin_ + sq->d;
      sq8_.Prepare(query, vmin_, vdiff_, size_t(sq->d));
    }
  } else {
    return false;
  }
  codes_ = codes->codes.data();
  code_size_ = codes->code_size;
  d_ = size_t(storage.d);
  kernels_ = &simd::Active();
  query_ = query;
  return true;
}

void CodeScorer::BindRow(size_t i, std::vector<float>* buffer) {
  const uint8_t* c = row(i);
  switch (kind_) {
    case Kind::kF32:
      query_ = reinterpret_cast<const float*>(c);
      return;
    case Kind::kF16:
      buffer->resize(d_);
      kernels_->decode_f16(reinterpret_cast<const uint16_t*>(c), buffer->data(), d_);
      query_ = buffer->data();
      return;
    case Kind::kSq8:
      break;
  }
  buffer->resize(d_);
  for (size_t t = 0; t < d_; ++t)
    (*buffer)[t] = vmin_[t] + (float(c[t]) + 0.5f) / 255.f * vdiff_[t];
  query_ = buffer->data();
  sq8_.Prepare(query_, vmin_, vdiff_, d_);
}

std::string DistanceImplementation(const faiss::Index& index) {
  const faiss::Index* storage = &index;
  if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(&index)) storage = hnsw->storage;
  std::string level(simd::LevelName(simd::ActiveLevel()));
  if (dynamic_cast<const SimdFlat*>(storage) != nullptr) return "simd-" + level + " f32";
  if (const auto* sq = dynamic_cast<const SimdSQ*>(storage)) {
    return "simd-" + level + (sq->sq.qtype == faiss::ScalarQuantizer::QT_fp16 ? " fp16" : " sq8");
  }
  return "faiss";
}

}  // namespace attnsearch
