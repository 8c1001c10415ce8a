#include "ann/ann_index.h"

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexNNDescent.h>
#include <faiss/IndexNSG.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <queue>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ann/graph_util.h"
#include "ann/hnsw_build.h"
#include "ann/simd_distance.h"
#include "ann/simd_storage.h"
#include "core/checksum.h"
#include "core/file_sync.h"
#include "core/status.h"

namespace attnsearch {
namespace {

using faiss_idx_t = faiss::Index::idx_t;

// A FAISS exception's message without the function signature and source
// position FAISS puts in front ("Error in <signature> at <file>:<line>: ").
absl::string_view FaissMessage(absl::string_view what) {
  if (!absl::StartsWith(what, "Error in ")) return what;
  const size_t at = what.find(" at ");
  if (at == absl::string_view::npos) return what;
  for (size_t colon = what.find(':', at); colon != absl::string_view::npos;
       colon = what.find(':', colon + 1)) {
    size_t end = colon + 1;
    while (end < what.size() && absl::ascii_isdigit(what[end])) ++end;
    if (end > colon + 1 && what.substr(end, 2) == ": ") return what.substr(end + 2);
  }
  return what;
}

// The one place FAISS exceptions become statuses.
template <typename F>
absl::Status CatchFaiss(absl::string_view what, F&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat(what, ": ", FaissMessage(e.what())));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Snapshot layout: magic, version, dim, spec, label count, labels, FAISS
// bytes length, FAISS bytes, then Checksum64 (XXH3) of everything before it.
// Version 1 had an ad-hoc checksum: such a snapshot is refused ("unknown
// version") and the index rebuilt from the store once.
constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'A', 'N', 'N', '1'};
constexpr uint32_t kSnapshotVersion = 2;

template <typename T>
void Append(std::vector<uint8_t>* out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

using ann_internal::TopK;
using ann_internal::VisitedMarks;

// Bytes of a row the graph search prefetches ahead of scoring it (beyond
// that the hardware's own prefetching follows), and bytes of a level-0
// neighbour list prefetched for the node expanded next.
constexpr size_t kPrefetchBytes = 256;
constexpr size_t kLinkBytes = 256;
// Rows asked for ahead of the one being scored: with one, each row's
// memory latency showed; 3-6 ahead cut the e2e ANN stage (100k rows of
// 128 fp16, efSearch 100) from 190-194 to 177-184 us.
constexpr size_t kPrefetchAhead = 4;

// Admits FAISS positions whose label the filter admits.
class LabelSelector : public faiss::IDSelector {
 public:
  LabelSelector(const std::vector<Label>& labels, const LabelFilter& filter)
      : labels_(labels), filter_(filter) {}
  bool is_member(faiss_idx_t pos) const override {
    return pos >= 0 && size_t(pos) < labels_.size() && filter_(labels_[pos]);
  }

 private:
  const std::vector<Label>& labels_;
  const LabelFilter& filter_;
};

}  // namespace

absl::StatusOr<AnnSearchParams> AnnSearchParams::Parse(absl::string_view text) {
  AnnSearchParams p;
  if (absl::StripAsciiWhitespace(text).empty()) return p;
  constexpr absl::string_view kKnown = "efSearch, nprobe, probe, probe_ef, refine";
  std::vector<absl::string_view> seen;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("ann_params: an empty knob in '", text,
                                                     "' (knobs are name=value, ",
                                                     "separated by one ',')"));
    }
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("ann_params: '", item, "' is not name=value (known: ", kKnown, ")"));
    }
    // Spaces around the name and the value are allowed, as around the
    // knob; the value is plain decimal digits.
    const absl::string_view name = absl::StripAsciiWhitespace(item.substr(0, eq));
    const absl::string_view digits = absl::StripAsciiWhitespace(item.substr(eq + 1));
    int* field = name == "efSearch"   ? &p.ef_search
                 : name == "nprobe"   ? &p.nprobe
                 : name == "probe"    ? &p.probe
                 : name == "probe_ef" ? &p.probe_ef
                 : name == "refine"   ? &p.refine
                                      : nullptr;
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("ann_params: unknown knob '", name, "' (known: ", kKnown, ")"));
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return absl::InvalidArgumentError(absl::StrCat("ann_params: ", name, " is given twice"));
    }
    seen.push_back(name);
    int value = 0;
    const int least = name == "refine" ? 0 : 1;  // refine=0: none
    const int most = name == "probe" ? 1024 : 100000;
    const bool decimal = !digits.empty() && digits.size() <= 9 &&
                         std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit);
    if (!decimal || !absl::SimpleAtoi(digits, &value) || value < least || value > most) {
      return absl::InvalidArgumentError(
          absl::StrCat("ann_params: '", item, "' needs a value in ", least, "..", most));
    }
    *field = value;
  }
  return p;
}

absl::Status AnnSearchParams::CheckApplies(absl::string_view spec, bool centroids) const {
  auto refuse = [&](absl::string_view knob, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("ann_params: ", knob, " ", why));
  };
  if (ef_search > 0 && !absl::StrContains(spec, "HNSW")) {
    return refuse("efSearch",
                  absl::StrCat("needs an HNSW index; the collection's is '", spec, "'"));
  }
  if (nprobe > 0 && !absl::StrContains(spec, "IVF")) {
    return refuse("nprobe", absl::StrCat("needs an IVF index; the collection's is '", spec, "'"));
  }
  if (!centroids) {
    const char* knob = probe > 0      ? "probe"
                       : probe_ef > 0 ? "probe_ef"
                       : refine >= 0  ? "refine"
                                      : "";
    if (*knob != '\0') return refuse(knob, "needs candidates_from centroids");
  }
  return absl::OkStatus();
}

constexpr int kMaxHnswM = 256;

// Refuses a spec FAISS builds but the collection cannot use: an IDMap (the
// index numbers its vectors by position), an HNSW graph of fewer than 2
// links a node (its searches stop at the entry point) or more than 256,
// NSG and NNDescent
// (built once, from all vectors), and, for an index that needs no
// training, one that cannot take vectors in two batches and find each of
// them again or give a distance computer for exact scoring (e.g. Refine).
// The probe is a separate index of 8 vectors: microseconds.
absl::Status CheckSpecIndexes(const std::string& spec, uint32_t dim, const faiss::Index& index,
                              const faiss::IndexHNSW* hnsw) {
  if (dynamic_cast<const faiss::IndexIDMap*>(&index) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ann_spec: '", spec, "': the collection numbers its vectors itself; drop the IDMap"));
  }
  if (dynamic_cast<const faiss::IndexNSG*>(&index) != nullptr ||
      dynamic_cast<const faiss::IndexNNDescent*>(&index) != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ann_spec: '", spec,
                     "': an NSG or NNDescent graph is built once from all vectors; a collection "
                     "adds them as they come (use HNSW)"));
  }
  // With M < 2 FAISS assigns no level at all (its level multiplier is
  // 1 / log M), so only level 0's 2·M links are read. Above 256 a node's
  // links alone take kilobytes (M = 100000: ~1 MB a vector).
  if (hnsw != nullptr &&
      (hnsw->hnsw.cum_nneighbor_per_level.size() < 2 || hnsw->hnsw.nb_neighbors(0) < 4 ||
       hnsw->hnsw.nb_neighbors(0) > 2 * kMaxHnswM)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ann_spec: '", spec, "': an HNSW graph needs M in 2..", kMaxHnswM, " links a node"));
  }
  // Scores are inner products. FAISS builds some kinds with squared L2
  // whatever it is asked (HNSW over PQ): their nearest would rank last.
  const faiss::Index* storage = hnsw != nullptr ? hnsw->storage : nullptr;
  if (index.metric_type != faiss::METRIC_INNER_PRODUCT ||
      (storage != nullptr && storage->metric_type != faiss::METRIC_INNER_PRODUCT)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ann_spec: '", spec,
        "': FAISS builds this kind with squared L2 distances only, and the collection ranks by "
        "inner product (e.g. use HNSW32,SQ8 or IVF..,PQ.. instead of HNSW over PQ)"));
  }
  // Exact scoring of stored vectors (filters, exhaustive searches) asks the
  // index for a distance computer, which a Refine wrapper, and a transform
  // in front of an IVF or HNSW index, do not give (once trained, every
  // search would fail).
  if (dynamic_cast<const faiss::IndexRefine*>(&index) != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ann_spec: '", spec,
                     "': a Refine stage cannot score stored vectors exactly; drop it (the "
                     "reranker re-scores the candidates)"));
  }
  if (const auto* pre = dynamic_cast<const faiss::IndexPreTransform*>(&index)) {
    if (dynamic_cast<const faiss::IndexIVF*>(pre->index) != nullptr ||
        dynamic_cast<const faiss::IndexHNSW*>(pre->index) != nullptr ||
        dynamic_cast<const faiss::IndexRefine*>(pre->index) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ann_spec: '", spec,
          "': a transform (PCA, OPQ, ...) in front of an IVF or HNSW index cannot score stored "
          "vectors exactly; use the IVF or HNSW index alone"));
    }
  }
  if (!index.is_trained) return absl::OkStatus();
  constexpr size_t kProbe = 8;
  std::vector<float> rows(kProbe * dim);
  std::mt19937 rng(dim);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < kProbe; ++i) {
    float norm = 0.f;
    for (uint32_t t = 0; t < dim; ++t) {
      const float x = rows[i * dim + t] = normal(rng);
      norm += x * x;
    }
    for (uint32_t t = 0; t < dim; ++t) rows[i * dim + t] /= std::sqrt(norm);
  }
  std::vector<float> distances(kProbe);
  std::vector<faiss_idx_t> found(kProbe, -1);
  const absl::Status s = CatchFaiss("probe", [&] {
    std::unique_ptr<faiss::Index> probe(
        faiss::index_factory(int(dim), spec.c_str(), faiss::METRIC_INNER_PRODUCT));
    probe->add(faiss_idx_t(kProbe / 2), rows.data());
    probe->add(faiss_idx_t(kProbe / 2), rows.data() + kProbe / 2 * dim);
    probe->search(faiss_idx_t(kProbe), rows.data(), 1, distances.data(), found.data());
    // Exact scoring of stored vectors (filters, SearchAmong) asks the
    // index, or an HNSW graph's storage, for a distance computer.
    const faiss::Index* scorer = probe.get();
    if (const auto* graph = dynamic_cast<const faiss::IndexHNSW*>(scorer)) scorer = graph->storage;
    if (dynamic_cast<const faiss::IndexIVF*>(scorer) == nullptr) {
      std::unique_ptr<faiss::DistanceComputer> dc(scorer->get_distance_computer());
    }
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ann_spec: '", spec, "' cannot take vectors: ", s.message()));
  }
  // Found again: itself, or one as near (in few dimensions, a tie).
  auto dot = [&](size_t a, size_t b) {
    float sum = 0.f;
    for (uint32_t t = 0; t < dim; ++t) sum += rows[a * dim + t] * rows[b * dim + t];
    return sum;
  };
  for (size_t i = 0; i < kProbe; ++i) {
    if (found[i] < 0 || found[i] >= faiss_idx_t(kProbe) ||
        dot(size_t(found[i]), i) < dot(i, i) - 1e-2f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ann_spec: '", spec, "' does not find a stored vector again (", i, " of ", kProbe, ")"));
    }
  }
  return absl::OkStatus();
}

struct AnnIndex::Rep {
  std::unique_ptr<faiss::Index> index;
  faiss::IndexHNSW* hnsw = nullptr;  // when the index is HNSW; borrowed
  faiss::IndexIVF* ivf = nullptr;    // when the index is IVF; borrowed
  // Index whose distance computer scores stored vectors exactly (the HNSW
  // storage, or the index itself for flat codes); null when none.
  const faiss::Index* scorer = nullptr;

  void Bind() {
    hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get());
    ivf = dynamic_cast<faiss::IndexIVF*>(index.get());
    if (hnsw != nullptr) {
      scorer = hnsw->storage;
    } else if (ivf == nullptr) {
      scorer = index.get();
    }
  }
};

AnnIndex::AnnIndex(std::unique_ptr<Rep> rep, std::string spec, uint32_t dim,
                   const AnnOptions& options)
    : rep_(std::move(rep)), spec_(std::move(spec)), dim_(dim), options_(options) {}

AnnIndex::~AnnIndex() = default;

absl::StatusOr<std::unique_ptr<AnnIndex>> AnnIndex::Create(const std::string& spec, uint32_t dim,
                                                           const AnnOptions& options) {
  // FAISS reads "HNSW32," as "HNSW32,Flat": an empty component is a typo.
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    if (absl::StripAsciiWhitespace(part).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ann_spec: '", spec, "' has an empty component (a stray comma?)"));
    }
  }
  auto rep = std::make_unique<Rep>();
  absl::Status s = CatchFaiss(absl::StrCat("ann_spec: FAISS rejects '", spec, "'"), [&] {
    rep->index = UseSimdDistances(std::unique_ptr<faiss::Index>(
        faiss::index_factory(int(dim), spec.c_str(), faiss::METRIC_INNER_PRODUCT)));
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  rep->Bind();
  ATTN_RETURN_IF_ERROR(CheckSpecIndexes(spec, dim, *rep->index, rep->hnsw));
  if (rep->hnsw != nullptr) rep->hnsw->hnsw.efConstruction = options.ef_construction;
  // A direct map lets SearchAmong score IVF vectors by position.
  if (rep->ivf != nullptr) rep->ivf->set_direct_map_type(faiss::DirectMap::Array);
  // Polysemous training (reordering PQ codes for Hamming filtering, which
  // searches here never use) dominates PQ training time: skip it.
  if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(rep->index.get())) {
    ivfpq->do_polysemous_training = false;
  }
  if (auto* pq = dynamic_cast<faiss::IndexPQ*>(rep->index.get()))
    pq->do_polysemous_training = false;
  return std::unique_ptr<AnnIndex>(new AnnIndex(std::move(rep), spec, dim, options));
}

absl::Status AnnIndex::Add(const Label* labels, const float* vectors, size_t n) {
  if (n == 0) return absl::OkStatus();
  for (size_t i = 0; i < n; ++i) {
    if ((!labels_.empty() || i > 0) && labels[i] <= (i > 0 ? labels[i - 1] : labels_.back())) {
      return absl::InternalError("AnnIndex::Add: labels must increase");
    }
  }
  if (!rep_->index->is_trained) {
    pending_.insert(pending_.end(), vectors, vectors + n * dim_);
    labels_.insert(labels_.end(), labels, labels + n);
    size_t needed = options_.train_min;
    if (rep_->ivf != nullptr) needed = std::max(needed, 39 * rep_->ivf->nlist);
    if (labels_.size() < needed) return absl::OkStatus();
    absl::Status s = TrainAndIndexPending();
    if (!s.ok()) {  // keep the index as it was: untrained, these not added
      labels_.resize(labels_.size() - n);
      pending_.resize(labels_.size() * dim_);
    }
    return s;
  }
  ATTN_RETURN_IF_ERROR(CatchFaiss("adding to the ANN index", [&] { AddToFaiss(n, vectors); }));
  labels_.insert(labels_.end(), labels, labels + n);
  return absl::OkStatus();
}

absl::Status AnnIndex::TrainAndIndexPending() {
  const size_t n = labels_.size();
  std::vector<float> sample;
  const float* train = pending_.data();
  size_t ntrain = n;
  if (n > options_.train_sample_max) {
    // A seeded random sample without replacement (partial Fisher-Yates).
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::mt19937_64 rng(n);
    ntrain = options_.train_sample_max;
    sample.resize(ntrain * dim_);
    for (size_t i = 0; i < ntrain; ++i) {
      std::swap(order[i], order[i + rng() % (n - i)]);
      std::copy_n(pending_.data() + order[i] * dim_, dim_, sample.data() + i * dim_);
    }
    train = sample.data();
  }
  ATTN_RETURN_IF_ERROR(CatchFaiss("training the ANN index", [&] {
    rep_->index->train(faiss_idx_t(ntrain), train);
    AddToFaiss(n, pending_.data());
  }));
  pending_.clear();
  pending_.shrink_to_fit();
  return absl::OkStatus();
}

void AnnIndex::AddToFaiss(size_t n, const float* vectors) {
  if (rep_->hnsw != nullptr && CanBuildWithSimd(*rep_->hnsw)) {
    AddToHnsw(*rep_->hnsw, n, vectors);
  } else {
    rep_->index->add(faiss_idx_t(n), vectors);
  }
}

bool AnnIndex::trained() const { return rep_->index->is_trained; }

std::string AnnIndex::distance_implementation() const {
  return DistanceImplementation(*rep_->index);
}

absl::Status AnnIndex::ScanExact(const float* query, size_t k, const std::vector<size_t>* positions,
                                 const std::function<bool(size_t)>& admit,
                                 std::vector<std::pair<float, int64_t>>* best) const {
  return CatchFaiss("searching the ANN index", [&] {
    TopK top(k);
    const size_t n = positions != nullptr ? positions->size() : labels_.size();
    auto position = [&](size_t i) { return positions != nullptr ? (*positions)[i] : i; };
    if (!rep_->index->is_trained) {
      const simd::Kernels& kern = simd::Active();
      for (size_t i = 0; i < n; ++i) {
        const size_t pos = position(i);
        if (admit && !admit(pos)) continue;
        top.Push(kern.dot_f32(query, pending_.data() + pos * dim_, dim_), faiss_idx_t(pos));
      }
    } else if (rep_->scorer != nullptr) {
      std::unique_ptr<faiss::DistanceComputer> dc(rep_->scorer->get_distance_computer());
      dc->set_query(query);
      for (size_t i = 0; i < n; ++i) {
        const size_t pos = position(i);
        if (admit && !admit(pos)) continue;
        top.Push((*dc)(faiss_idx_t(pos)), faiss_idx_t(pos));
      }
    } else {
      // IVF: reconstruct through the direct map.
      const simd::Kernels& kern = simd::Active();
      std::vector<float> v(dim_);
      for (size_t i = 0; i < n; ++i) {
        const size_t pos = position(i);
        if (admit && !admit(pos)) continue;
        rep_->index->reconstruct(faiss_idx_t(pos), v.data());
        top.Push(kern.dot_f32(query, v.data(), dim_), faiss_idx_t(pos));
      }
    }
    *best = top.Take();
  });
}

absl::Status AnnIndex::Search(const float* query, size_t k, const AnnSearchParams& params,
                              const LabelFilter& filter, std::vector<AnnNeighbor>* out) const {
  out->clear();
  const size_t ntotal = labels_.size();
  if (k == 0 || ntotal == 0) return absl::OkStatus();
  std::function<bool(size_t)> admit;
  if (filter) admit = [&](size_t pos) { return filter(labels_[pos]); };
  std::vector<std::pair<float, faiss_idx_t>> best;

  if (!rep_->index->is_trained ||
      (rep_->scorer != nullptr && (params.exhaustive || rep_->hnsw == nullptr))) {
    ATTN_RETURN_IF_ERROR(ScanExact(query, k, nullptr, admit, &best));
  } else if (rep_->hnsw != nullptr) {
    const size_t ef =
        std::max<size_t>(k, size_t(params.ef_search > 0 ? params.ef_search : options_.ef_search));
    ATTN_RETURN_IF_ERROR(
        CatchFaiss("searching the ANN index", [&] { best = WalkGraph(query, k, ef, admit); }));
  } else {
    // Other index types: FAISS's own search with an ID selector.
    ATTN_RETURN_IF_ERROR(CatchFaiss("searching the ANN index", [&] {
      LabelSelector selector(labels_, filter);
      faiss::SearchParametersIVF ivf_params;
      faiss::SearchParameters plain;
      faiss::SearchParameters* sp = &plain;
      if (rep_->ivf != nullptr) {
        ivf_params.nprobe = params.exhaustive
                                ? rep_->ivf->nlist
                                : size_t(params.nprobe > 0 ? params.nprobe : options_.nprobe);
        sp = &ivf_params;
      }
      if (filter) sp->sel = &selector;
      const size_t kk = std::min(k, ntotal);
      std::vector<float> d(kk);
      std::vector<faiss_idx_t> ids(kk);
      rep_->index->search(1, query, faiss_idx_t(kk), d.data(), ids.data(), sp);
      for (size_t i = 0; i < kk; ++i) {
        if (ids[i] >= 0) best.emplace_back(d[i], ids[i]);
      }
    }));
  }
  out->reserve(best.size());
  for (const auto& [score, pos] : best) out->push_back({labels_[pos], score});
  return absl::OkStatus();
}

namespace {

// The HNSW search over FAISS's graph with a scorer score(v) -> inner
// product and prefetch(v) hinting row v's codes; see AnnIndex::WalkGraph.
template <typename Score, typename Prefetch>
std::vector<std::pair<float, int64_t>> WalkHnsw(const faiss::HNSW& g, size_t ntotal, size_t k,
                                                size_t ef, const std::function<bool(size_t)>& admit,
                                                Score&& score, Prefetch&& prefetch) {
  using node_t = faiss::HNSW::storage_idx_t;
  node_t cur = g.entry_point;
  if (cur < 0) return {};
  thread_local VisitedMarks visited;
  visited.Reset(ntotal);
  float cur_score = score(size_t(cur));
  // Greedy descent through the upper levels.
  for (int level = g.max_level; level > 0; --level) {
    for (bool moved = true; moved;) {
      moved = false;
      size_t begin, end;
      g.neighbor_range(cur, level, &begin, &end);
      for (size_t j = begin; j < end; ++j) {
        const node_t v = g.neighbors[j];
        if (v < 0) break;
        const float sv = score(size_t(v));
        if (sv > cur_score) {
          cur_score = sv;
          cur = v;
          moved = true;
        }
      }
    }
  }
  // Level 0: best-first beam of width ef. Both heaps live in per-thread
  // buffers reused across searches: the frontier (best on top) and the
  // beam's results (worst on top, so `bound` is its front once full).
  using Entry = std::pair<float, node_t>;
  thread_local std::vector<Entry> frontier;
  thread_local std::vector<std::pair<float, int64_t>> results;
  frontier.clear();
  results.clear();
  const auto worse_first = std::greater<std::pair<float, int64_t>>();
  float bound = -std::numeric_limits<float>::infinity();  // worst kept, once full
  auto keep = [&](float sv, node_t v) {
    if (results.size() < ef) {
      results.emplace_back(sv, v);
      std::push_heap(results.begin(), results.end(), worse_first);
      if (results.size() == ef) bound = results.front().first;
    } else if (sv > results.front().first) {
      std::pop_heap(results.begin(), results.end(), worse_first);
      results.back() = {sv, v};
      std::push_heap(results.begin(), results.end(), worse_first);
      bound = results.front().first;
    }
  };
  visited.TestAndSet(size_t(cur));
  frontier.emplace_back(cur_score, cur);
  if (!admit || admit(size_t(cur))) keep(cur_score, cur);
  node_t fresh[512];
  while (!frontier.empty()) {
    const auto [s, u] = frontier.front();
    if (s < bound) break;
    std::pop_heap(frontier.begin(), frontier.end());
    frontier.pop_back();
    size_t begin, end;
    g.neighbor_range(u, 0, &begin, &end);
    size_t n = 0;
    for (size_t j = begin; j < end && n < 512; ++j) {
      const node_t v = g.neighbors[j];
      if (v < 0) break;
      if (!visited.TestAndSet(size_t(v))) fresh[n++] = v;
    }
    for (size_t i = 0; i < std::min(n, kPrefetchAhead); ++i) prefetch(size_t(fresh[i]));
    for (size_t i = 0; i < n; ++i) {
      if (i + kPrefetchAhead < n) prefetch(size_t(fresh[i + kPrefetchAhead]));
      const node_t v = fresh[i];
      const float sv = score(size_t(v));
      if (sv > bound) {
        // The best new candidate is expanded next: fetch its links now.
        if (frontier.empty() || sv > frontier.front().first) {
          const char* links = reinterpret_cast<const char*>(g.neighbors.data() + g.offsets[v]);
          for (size_t off = 0; off < kLinkBytes; off += 64) _mm_prefetch(links + off, _MM_HINT_T0);
        }
        frontier.emplace_back(sv, v);
        std::push_heap(frontier.begin(), frontier.end());
        if (!admit || admit(size_t(v))) keep(sv, v);
      }
    }
  }
  std::vector<std::pair<float, int64_t>> best(results.begin(), results.end());
  std::sort(best.begin(), best.end(), std::greater<std::pair<float, int64_t>>());
  if (best.size() > k) best.resize(k);
  return best;
}

}  // namespace

std::vector<std::pair<float, int64_t>> AnnIndex::WalkGraph(
    const float* query, size_t k, size_t ef, const std::function<bool(size_t)>& admit) const {
  // Graph search over FAISS's HNSW structure with our own beam, so the beam
  // width is per request (FAISS 1.7.3 ignores a per-call efSearch) and the
  // filter is applied while the graph is walked. SIMD storage is scored
  // directly; other storage through FAISS's distance computer.
  const faiss::HNSW& g = rep_->hnsw->hnsw;
  CodeScorer scorer;
  if (scorer.Bind(*rep_->scorer, query)) {
    const size_t lines = std::min<size_t>(scorer.code_size(), kPrefetchBytes);
    return WalkHnsw(g, labels_.size(), k, ef, admit, scorer, [&scorer, lines](size_t v) {
      const char* p = reinterpret_cast<const char*>(scorer.row(v));
      for (size_t off = 0; off < lines; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
    });
  }
  std::unique_ptr<faiss::DistanceComputer> dc(rep_->scorer->get_distance_computer());
  dc->set_query(query);
  return WalkHnsw(
      g, labels_.size(), k, ef, admit, [&dc](size_t v) { return (*dc)(faiss_idx_t(v)); },
      [](size_t) {});
}

absl::Status AnnIndex::SearchAmong(const float* query, size_t k, const Label* labels, size_t n,
                                   std::vector<AnnNeighbor>* out) const {
  out->clear();
  if (k == 0 || n == 0 || labels_.empty()) return absl::OkStatus();
  std::vector<size_t> positions;
  positions.reserve(n);
  auto it = labels_.begin();
  for (size_t i = 0; i < n && it != labels_.end(); ++i) {
    it = std::lower_bound(it, labels_.end(), labels[i]);
    if (it != labels_.end() && *it == labels[i]) positions.push_back(size_t(it - labels_.begin()));
  }
  std::vector<std::pair<float, faiss_idx_t>> best;
  ATTN_RETURN_IF_ERROR(ScanExact(query, k, &positions, nullptr, &best));
  out->reserve(best.size());
  for (const auto& [score, pos] : best) out->push_back({labels_[pos], score});
  return absl::OkStatus();
}

absl::Status AnnIndex::SearchFiltered(const float* query, size_t k, const AnnSearchParams& params,
                                      const LabelBitmap& admitted,
                                      std::vector<AnnNeighbor>* out) const {
  out->clear();
  if (admitted.empty() || labels_.empty()) return absl::OkStatus();
  if (admitted.count() <= options_.exact_filter_max || params.exhaustive) {
    const std::vector<Label> among = admitted.ToVector();
    return SearchAmong(query, k, among.data(), among.size(), out);
  }
  AnnSearchParams widened = params;
  const double selectivity = std::min(1.0, double(admitted.count()) / double(labels_.size()));
  const int ef = params.ef_search > 0 ? params.ef_search : options_.ef_search;
  const double wide = std::min<double>(ef / selectivity, options_.max_filtered_ef);
  widened.ef_search = std::max(ef, int(wide));
  return Search(
      query, k, widened, [&admitted](Label l) { return admitted.Test(l); }, out);
}

size_t AnnIndex::size() const { return labels_.size(); }

absl::StatusOr<AnnTuneResult> AnnIndex::Tune(double target_recall, size_t k, size_t sample,
                                             uint64_t seed) const {
  if (!(target_recall > 0 && target_recall <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_recall: ", target_recall, " is not in (0, 1]"));
  }
  if (k == 0 || sample == 0) {
    return absl::InvalidArgumentError("tuning needs k >= 1 and a sample of >= 1 query");
  }
  AnnTuneResult result;
  const bool trained = rep_->index->is_trained;
  const bool hnsw = trained && rep_->hnsw != nullptr;
  const bool ivf = trained && rep_->ivf != nullptr;
  if (!hnsw && !ivf) return result;  // exact: nothing to tune, at any size
  const size_t n = labels_.size();
  if (n < k + 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("tuning needs at least ", k + 2, " indexed vectors; the index holds ", n));
  }

  ATTN_ASSIGN_OR_RETURN(const HeldOut set, HoldOut(k, sample, seed));
  auto recall_at = [&](int value) -> absl::StatusOr<double> {
    AnnSearchParams params;
    (hnsw ? params.ef_search : params.nprobe) = value;
    return MeanRecall(set, k, params);
  };

  // Recall grows with the knob: binary search for the smallest value that
  // reaches the target.
  // (A beam is never narrower than k.)
  int lo = hnsw ? int(k) : 1;
  int hi = hnsw ? int(std::max<size_t>(k, std::min<size_t>(n, 4096))) : int(rep_->ivf->nlist);
  ATTN_ASSIGN_OR_RETURN(double best_recall, recall_at(hi));
  int best = hi;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    ATTN_ASSIGN_OR_RETURN(double r, recall_at(mid));
    if (r >= target_recall) {
      hi = mid;
      best = mid;
      best_recall = r;
    } else {
      lo = mid + 1;
    }
  }
  if (best != hi) {
    ATTN_ASSIGN_OR_RETURN(best_recall, recall_at(hi));
    best = hi;
  }
  result.knob = hnsw ? "efSearch" : "nprobe";
  result.value = best;
  result.ann_params = absl::StrCat(result.knob, "=", best);
  result.sample_recall = best_recall;
  result.sample_queries = set.sample;
  return result;
}

// Held-out queries: a seeded sample of the stored vectors, taken out of a
// copy of the index built from the rest, so that each query meets the graph
// as a new vector would (searching for a vector that is itself a node is
// easier; searching around its removed node is harder).
absl::StatusOr<AnnIndex::HeldOut> AnnIndex::HoldOut(size_t k, size_t sample, uint64_t seed) const {
  const size_t n = labels_.size();
  HeldOut set;
  set.sample = sample = std::min(sample, n - (k + 1));
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < sample; ++i) std::swap(order[i], order[i + rng() % (n - i)]);
  std::vector<bool> held_out(n, false);
  for (size_t i = 0; i < sample; ++i) held_out[order[i]] = true;
  std::vector<float> all(n * dim_);
  const faiss::Index* source = rep_->hnsw != nullptr ? rep_->hnsw->storage : rep_->index.get();
  ATTN_RETURN_IF_ERROR(CatchFaiss("reading vectors for tuning",
                                  [&] { source->reconstruct_n(0, faiss_idx_t(n), all.data()); }));
  set.queries.resize(sample * dim_);
  std::vector<float> rest;
  std::vector<Label> rest_labels;
  rest.reserve((n - sample) * dim_);
  for (size_t pos = 0, q = 0; pos < n; ++pos) {
    if (held_out[pos]) {
      std::copy_n(all.data() + pos * dim_, dim_, set.queries.data() + q++ * dim_);
    } else {
      rest.insert(rest.end(), all.data() + pos * dim_, all.data() + (pos + 1) * dim_);
      rest_labels.push_back(Label(pos));
    }
  }
  all = std::vector<float>();
  ATTN_ASSIGN_OR_RETURN(set.copy, Create(spec_, dim_, options_));
  ATTN_RETURN_IF_ERROR(set.copy->Add(rest_labels.data(), rest.data(), rest_labels.size()));
  rest = std::vector<float>();

  // Exact top k of each among the rest.
  set.truth.resize(sample);
  std::vector<absl::Status> errors(sample);
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < sample; ++i) {
    std::vector<std::pair<float, faiss_idx_t>> best;
    errors[i] = set.copy->ScanExact(set.queries.data() + i * dim_, k, nullptr, nullptr, &best);
    for (const auto& b : best) set.truth[i].push_back(set.copy->labels_[size_t(b.second)]);
  }
  for (const absl::Status& e : errors) ATTN_RETURN_IF_ERROR(e);
  return set;
}

absl::StatusOr<double> AnnIndex::MeanRecall(const HeldOut& set, size_t k,
                                            const AnnSearchParams& params) {
  const uint32_t dim = set.copy->dim_;
  std::vector<double> recall(set.sample, 0.0);
  std::vector<absl::Status> errors(set.sample);
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < set.sample; ++i) {
    std::vector<AnnNeighbor> found;
    errors[i] = set.copy->Search(set.queries.data() + i * dim, k, params, nullptr, &found);
    size_t hits = 0;
    for (const AnnNeighbor& f : found) {
      hits += std::find(set.truth[i].begin(), set.truth[i].end(), f.label) != set.truth[i].end();
    }
    recall[i] = set.truth[i].empty() ? 1.0 : double(hits) / double(set.truth[i].size());
  }
  for (const absl::Status& e : errors) ATTN_RETURN_IF_ERROR(e);
  double sum = 0;
  for (double r : recall) sum += r;
  return sum / double(set.sample);
}

absl::Status AnnIndex::Save(const std::string& path) const {
  faiss::VectorIOWriter writer;
  ATTN_RETURN_IF_ERROR(CatchFaiss("serialising the ANN index",
                                  [&] { faiss::write_index(rep_->index.get(), &writer); }));
  std::vector<uint8_t> buf;
  buf.reserve(writer.data.size() + labels_.size() * 8 + 64 + spec_.size());
  buf.insert(buf.end(), kMagic, kMagic + 8);
  Append(&buf, kSnapshotVersion);
  Append(&buf, dim_);
  Append(&buf, uint32_t(spec_.size()));
  buf.insert(buf.end(), spec_.begin(), spec_.end());
  // An untrained index holds its vectors outside FAISS; its snapshot is
  // empty and the caller adds them again from the store.
  const size_t saved = rep_->index->is_trained ? labels_.size() : 0;
  Append(&buf, uint64_t(saved));
  const auto* lp = reinterpret_cast<const uint8_t*>(labels_.data());
  buf.insert(buf.end(), lp, lp + saved * sizeof(Label));
  Append(&buf, uint64_t(writer.data.size()));
  buf.insert(buf.end(), writer.data.begin(), writer.data.end());
  Append(&buf, Checksum64(buf.data(), buf.size()));
  return WriteFileAtomically(
      path, std::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()));
}

absl::StatusOr<std::unique_ptr<AnnIndex>> AnnIndex::Load(const std::string& path,
                                                         const std::string& spec, uint32_t dim,
                                                         const AnnOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no ANN snapshot at ", path));
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("ANN snapshot ", path, ": ", why));
  };
  if (buf.size() < 8 + 4 + 4 + 4 + 8 + 8 + 8) return corrupt("truncated");
  uint64_t stored_sum;
  std::memcpy(&stored_sum, buf.data() + buf.size() - 8, 8);
  if (Checksum64(buf.data(), buf.size() - 8) != stored_sum) return corrupt("bad checksum");
  size_t pos = 0;
  const size_t limit = buf.size() - 8;
  auto read = [&](void* dst, size_t n) {
    if (limit - pos < n) return false;
    if (n == 0) return true;  // dst may be null (an empty vector's data)
    std::memcpy(dst, buf.data() + pos, n);
    pos += n;
    return true;
  };
  char magic[8];
  uint32_t version, stored_dim, spec_len;
  if (!read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) return corrupt("bad magic");
  if (!read(&version, 4) || version != kSnapshotVersion) return corrupt("unknown version");
  if (!read(&stored_dim, 4) || !read(&spec_len, 4) || spec_len > limit - pos) {
    return corrupt("truncated");
  }
  std::string stored_spec(reinterpret_cast<const char*>(buf.data() + pos), spec_len);
  pos += spec_len;
  if (stored_dim != dim || stored_spec != spec) {
    return absl::FailedPreconditionError(
        absl::StrCat("ANN snapshot ", path, " is for '", stored_spec, "' dim ", stored_dim));
  }
  uint64_t nlabels, nbytes;
  if (!read(&nlabels, 8) || nlabels > (limit - pos) / 8) return corrupt("truncated");
  std::vector<Label> labels(nlabels);
  read(labels.data(), nlabels * 8);
  if (!read(&nbytes, 8) || nbytes != limit - pos) return corrupt("truncated");
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i] <= labels[i - 1]) return corrupt("labels out of order");
  }
  auto rep = std::make_unique<Rep>();
  faiss::VectorIOReader reader;
  reader.data.assign(buf.begin() + long(pos), buf.begin() + long(limit));
  absl::Status s = CatchFaiss("reading the ANN snapshot", [&] {
    rep->index = UseSimdDistances(std::unique_ptr<faiss::Index>(faiss::read_index(&reader)));
  });
  if (!s.ok()) return corrupt(s.message());
  if (rep->index->d != int(dim) || size_t(rep->index->ntotal) != labels.size()) {
    return corrupt("index does not match its label map");
  }
  rep->Bind();
  if (rep->hnsw != nullptr) rep->hnsw->hnsw.efConstruction = options.ef_construction;
  std::unique_ptr<AnnIndex> index(new AnnIndex(std::move(rep), spec, dim, options));
  index->labels_ = std::move(labels);
  return index;
}

}  // namespace attnsearch
