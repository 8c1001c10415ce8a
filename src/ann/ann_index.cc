#include "ann/ann_index.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <queue>

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace attnsearch {
namespace {

using faiss_idx_t = faiss::Index::idx_t;

// The one place FAISS exceptions become statuses.
template <typename F>
absl::Status CatchFaiss(absl::string_view what, F&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Snapshot layout: magic, version, dim, spec, label count, labels, FAISS
// bytes length, FAISS bytes, then a 64-bit checksum of everything before it.
constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'A', 'N', 'N', '1'};
constexpr uint32_t kSnapshotVersion = 1;

uint64_t Checksum(const uint8_t* p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

template <typename T>
void Append(std::vector<uint8_t>* out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

// Visited marks for graph search, reused by a thread across searches.
class VisitedMarks {
 public:
  void Reset(size_t n) {
    if (marks_.size() < n) marks_.resize(n, 0);
    if (++epoch_ == 0) {
      std::fill(marks_.begin(), marks_.end(), 0);
      epoch_ = 1;
    }
  }
  // Marks i; returns whether it was already marked.
  bool TestAndSet(size_t i) {
    if (marks_[i] == epoch_) return true;
    marks_[i] = epoch_;
    return false;
  }

 private:
  std::vector<uint16_t> marks_;
  uint16_t epoch_ = 0;
};

// Keeps the k best (position, score) pairs seen.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) {}
  void Push(float score, faiss_idx_t pos) {
    if (heap_.size() < k_) {
      heap_.emplace(score, pos);
    } else if (score > heap_.top().first) {
      heap_.pop();
      heap_.emplace(score, pos);
    }
  }
  bool full() const { return heap_.size() >= k_; }
  float worst() const { return heap_.top().first; }
  size_t size() const { return heap_.size(); }
  // Best first.
  std::vector<std::pair<float, faiss_idx_t>> Take() {
    std::vector<std::pair<float, faiss_idx_t>> v;
    while (!heap_.empty()) {
      v.push_back(heap_.top());
      heap_.pop();
    }
    std::reverse(v.begin(), v.end());
    return v;
  }

 private:
  using Entry = std::pair<float, faiss_idx_t>;
  size_t k_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
};

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
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    int value = 0;
    if (!absl::SimpleAtoi(kv.second, &value) || value <= 0 || value > 100000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ann_params: '", item, "' needs a value in 1..100000"));
    }
    if (kv.first == "efSearch") {
      p.ef_search = value;
    } else if (kv.first == "nprobe") {
      p.nprobe = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "ann_params: unknown knob '", kv.first, "' (known: efSearch, nprobe)"));
    }
  }
  return p;
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

absl::StatusOr<std::unique_ptr<AnnIndex>> AnnIndex::Create(const std::string& spec,
                                                           uint32_t dim,
                                                           const AnnOptions& options) {
  auto rep = std::make_unique<Rep>();
  absl::Status s = CatchFaiss("ann_spec", [&] {
    rep->index.reset(faiss::index_factory(int(dim), spec.c_str(),
                                          faiss::METRIC_INNER_PRODUCT));
  });
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ann_spec: FAISS rejects '", spec, "': ", s.message()));
  }
  rep->Bind();
  if (rep->hnsw != nullptr) rep->hnsw->hnsw.efConstruction = options.ef_construction;
  return std::unique_ptr<AnnIndex>(new AnnIndex(std::move(rep), spec, dim, options));
}

absl::Status AnnIndex::Add(const Label* labels, const float* vectors, size_t n) {
  if (n == 0) return absl::OkStatus();
  for (size_t i = 0; i < n; ++i) {
    if ((!labels_.empty() || i > 0) &&
        labels[i] <= (i > 0 ? labels[i - 1] : labels_.back())) {
      return absl::InternalError("AnnIndex::Add: labels must increase");
    }
  }
  ATTN_RETURN_IF_ERROR(CatchFaiss("adding to the ANN index", [&] {
    if (!rep_->index->is_trained) rep_->index->train(faiss_idx_t(n), vectors);
    rep_->index->add(faiss_idx_t(n), vectors);
  }));
  labels_.insert(labels_.end(), labels, labels + n);
  return absl::OkStatus();
}

absl::Status AnnIndex::Search(const float* query, size_t k,
                              const AnnSearchParams& params, const LabelFilter& filter,
                              std::vector<AnnNeighbor>* out) const {
  out->clear();
  const size_t ntotal = labels_.size();
  if (k == 0 || ntotal == 0) return absl::OkStatus();
  auto admit = [&](faiss_idx_t pos) { return !filter || filter(labels_[pos]); };
  std::vector<std::pair<float, faiss_idx_t>> best;

  absl::Status s = CatchFaiss("searching the ANN index", [&] {
    const bool brute = rep_->scorer != nullptr &&
                       (params.exhaustive || rep_->hnsw == nullptr);
    if (brute) {
      std::unique_ptr<faiss::DistanceComputer> dc(rep_->scorer->get_distance_computer());
      dc->set_query(query);
      TopK top(k);
      for (size_t pos = 0; pos < ntotal; ++pos) {
        if (admit(faiss_idx_t(pos))) top.Push((*dc)(faiss_idx_t(pos)), faiss_idx_t(pos));
      }
      best = top.Take();
      return;
    }
    if (rep_->hnsw != nullptr) {
      // Graph search over FAISS's HNSW structure with our own beam, so the
      // beam width is per request (FAISS 1.7.3 ignores a per-call efSearch)
      // and the filter is applied while the graph is walked.
      const faiss::HNSW& g = rep_->hnsw->hnsw;
      std::unique_ptr<faiss::DistanceComputer> dc(rep_->scorer->get_distance_computer());
      dc->set_query(query);
      faiss::HNSW::storage_idx_t cur = g.entry_point;
      if (cur < 0) return;
      float cur_score = (*dc)(cur);
      for (int level = g.max_level; level > 0; --level) {
        for (bool moved = true; moved;) {
          moved = false;
          size_t begin, end;
          g.neighbor_range(cur, level, &begin, &end);
          for (size_t j = begin; j < end; ++j) {
            const auto v = g.neighbors[j];
            if (v < 0) break;
            const float sv = (*dc)(v);
            if (sv > cur_score) {
              cur_score = sv;
              cur = v;
              moved = true;
            }
          }
        }
      }
      const size_t ef = std::max<size_t>(
          k, size_t(params.ef_search > 0 ? params.ef_search : options_.ef_search));
      thread_local VisitedMarks visited;
      visited.Reset(ntotal);
      using Entry = std::pair<float, faiss::HNSW::storage_idx_t>;
      std::priority_queue<Entry> frontier;  // best first
      TopK results(ef);
      visited.TestAndSet(size_t(cur));
      frontier.emplace(cur_score, cur);
      if (admit(cur)) results.Push(cur_score, cur);
      while (!frontier.empty()) {
        const auto [score, u] = frontier.top();
        if (results.full() && score < results.worst()) break;
        frontier.pop();
        size_t begin, end;
        g.neighbor_range(u, 0, &begin, &end);
        for (size_t j = begin; j < end; ++j) {
          const auto v = g.neighbors[j];
          if (v < 0) break;
          if (visited.TestAndSet(size_t(v))) continue;
          const float sv = (*dc)(v);
          if (!results.full() || sv > results.worst()) {
            frontier.emplace(sv, v);
            if (admit(v)) results.Push(sv, v);
          }
        }
      }
      best = results.Take();
      if (best.size() > k) best.resize(k);
      return;
    }
    // Other index types: FAISS's own search with an ID selector.
    LabelSelector selector(labels_, filter);
    faiss::SearchParametersIVF ivf_params;
    faiss::SearchParameters plain;
    faiss::SearchParameters* sp = &plain;
    if (rep_->ivf != nullptr) {
      ivf_params.nprobe = params.exhaustive ? rep_->ivf->nlist
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
  });
  ATTN_RETURN_IF_ERROR(s);
  out->reserve(best.size());
  for (const auto& [score, pos] : best) out->push_back({labels_[pos], score});
  return absl::OkStatus();
}

absl::Status AnnIndex::SearchAmong(const float* query, size_t k, const Label* labels,
                                   size_t n, std::vector<AnnNeighbor>* out) const {
  out->clear();
  if (k == 0 || n == 0 || labels_.empty()) return absl::OkStatus();
  std::vector<std::pair<float, faiss_idx_t>> best;
  ATTN_RETURN_IF_ERROR(CatchFaiss("searching the ANN index", [&] {
    std::unique_ptr<faiss::DistanceComputer> dc;
    if (rep_->scorer != nullptr) {
      dc.reset(rep_->scorer->get_distance_computer());
    } else {
      dc.reset(rep_->index->get_distance_computer());
    }
    dc->set_query(query);
    TopK top(k);
    auto it = labels_.begin();
    for (size_t i = 0; i < n && it != labels_.end(); ++i) {
      it = std::lower_bound(it, labels_.end(), labels[i]);
      if (it == labels_.end()) break;
      if (*it != labels[i]) continue;
      const auto pos = faiss_idx_t(it - labels_.begin());
      top.Push((*dc)(pos), pos);
    }
    best = top.Take();
  }));
  out->reserve(best.size());
  for (const auto& [score, pos] : best) out->push_back({labels_[pos], score});
  return absl::OkStatus();
}

absl::Status AnnIndex::SearchFiltered(const float* query, size_t k,
                                      const AnnSearchParams& params,
                                      const LabelBitmap& admitted,
                                      std::vector<AnnNeighbor>* out) const {
  out->clear();
  if (admitted.empty() || labels_.empty()) return absl::OkStatus();
  if (admitted.count() <= options_.exact_filter_max || params.exhaustive) {
    const std::vector<Label> among = admitted.ToVector();
    return SearchAmong(query, k, among.data(), among.size(), out);
  }
  AnnSearchParams widened = params;
  const double selectivity =
      std::min(1.0, double(admitted.count()) / double(labels_.size()));
  const int ef = params.ef_search > 0 ? params.ef_search : options_.ef_search;
  const double wide = std::min<double>(ef / selectivity, options_.max_filtered_ef);
  widened.ef_search = std::max(ef, int(wide));
  return Search(query, k, widened,
                [&admitted](Label l) { return admitted.Test(l); }, out);
}

size_t AnnIndex::size() const { return labels_.size(); }

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
  Append(&buf, uint64_t(labels_.size()));
  const auto* lp = reinterpret_cast<const uint8_t*>(labels_.data());
  buf.insert(buf.end(), lp, lp + labels_.size() * sizeof(Label));
  Append(&buf, uint64_t(writer.data.size()));
  buf.insert(buf.end(), writer.data.begin(), writer.data.end());
  Append(&buf, Checksum(buf.data(), buf.size()));

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("creating ", tmp, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t w = ::write(fd, buf.data() + done, buf.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("writing ", tmp, ": ", std::strerror(err)));
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("syncing ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("renaming ", tmp, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AnnIndex>> AnnIndex::Load(const std::string& path,
                                                         const std::string& spec,
                                                         uint32_t dim,
                                                         const AnnOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no ANN snapshot at ", path));
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)),
                           std::istreambuf_iterator<char>());
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("ANN snapshot ", path, ": ", why));
  };
  if (buf.size() < 8 + 4 + 4 + 4 + 8 + 8 + 8) return corrupt("truncated");
  uint64_t stored_sum;
  std::memcpy(&stored_sum, buf.data() + buf.size() - 8, 8);
  if (Checksum(buf.data(), buf.size() - 8) != stored_sum) return corrupt("bad checksum");
  size_t pos = 0;
  const size_t limit = buf.size() - 8;
  auto read = [&](void* dst, size_t n) {
    if (limit - pos < n) return false;
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
    return absl::FailedPreconditionError(absl::StrCat(
        "ANN snapshot ", path, " is for '", stored_spec, "' dim ", stored_dim));
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
    rep->index.reset(faiss::read_index(&reader));
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
