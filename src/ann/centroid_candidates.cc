#include "ann/centroid_candidates.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/simd_clones.h"
#include "core/status.h"

namespace attnsearch {
namespace {

constexpr uint32_t kMaxSlots = uint32_t{1} << 24;  // a list entry is slot << 8 | gain

// A searching thread's per-slot tables, kept between searches. A slot's
// entries count only while their mark equals the current stamp, so nothing
// is cleared between tokens or queries.
struct Scratch {
  std::vector<float> best, acc;
  std::vector<uint32_t> token_mark, query_mark;
  uint32_t token_stamp = 0, query_stamp = 0;
  std::vector<uint32_t> touched, token_touched;
  std::vector<AnnNeighbor> probed;
  std::vector<float> sims, chunk_max;  // the similarities hook's output; TopOf's
  std::vector<std::pair<float, uint32_t>> above;
  std::vector<std::pair<float, uint32_t>> ranked;  // touched documents by score
  std::vector<float> sims_t, weights, best_of;     // the refining's (see Refine)

  void Fit(size_t slots) {
    if (best.size() >= slots) return;
    best.resize(slots);
    acc.resize(slots);
    token_mark.resize(slots, 0);
    query_mark.resize(slots, 0);
  }
  static uint32_t Next(uint32_t* stamp, std::vector<uint32_t>* marks) {
    if (++*stamp == 0) {  // wrapped: old marks could match again
      std::fill(marks->begin(), marks->end(), 0);
      *stamp = 1;
    }
    return *stamp;
  }
};

// The p largest of v[0, n) into *out, best first (ties: the lower index).
// The p-th largest maximum of 16-value chunks, t, is at most the p-th
// largest value (p chunks hold a value >= t), so only values >= t compete.
void TopOf(const float* v, size_t n, uint32_t p, Scratch* s, std::vector<AnnNeighbor>* out) {
  out->clear();
  if (n == 0 || p == 0) return;
  const size_t chunks = (n + 15) / 16;
  s->chunk_max.resize(chunks);
  for (size_t c = 0; c < chunks; ++c) {
    const size_t end = std::min(n, c * 16 + 16);
    float m = v[c * 16];
    for (size_t i = c * 16 + 1; i < end; ++i) m = std::max(m, v[i]);
    s->chunk_max[c] = m;
  }
  float t = -std::numeric_limits<float>::infinity();
  if (p < chunks) {
    std::nth_element(s->chunk_max.begin(), s->chunk_max.begin() + (p - 1), s->chunk_max.end(),
                     std::greater<float>());
    t = s->chunk_max[p - 1];
  }
  s->above.clear();
  for (size_t i = 0; i < n; ++i) {
    if (v[i] >= t) s->above.push_back({v[i], uint32_t(i)});
  }
  const size_t top = std::min<size_t>(p, s->above.size());
  std::partial_sort(s->above.begin(), s->above.begin() + long(top), s->above.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && a.second < b.second);
                    });
  for (size_t r = 0; r < top; ++r) out->push_back({s->above[r].second, s->above[r].first});
}

// st (num x mp): s (m x num) transposed, each row zero-padded to mp, so
// that a centroid's similarities with every query token lie together.
ATTN_SIMD_CLONES void Transpose(const float* s, uint32_t m, uint32_t num, uint32_t mp, float* st) {
  constexpr uint32_t kBlock = 32;  // centroids a pass: m rows of them stay in L1
  for (uint32_t c0 = 0; c0 < num; c0 += kBlock) {
    const uint32_t c1 = std::min(num, c0 + kBlock);
    for (uint32_t i = 0; i < m; ++i) {
      const float* row = s + size_t(i) * num;
      for (uint32_t c = c0; c < c1; ++c) st[size_t(c) * mp + i] = row[c];
    }
    for (uint32_t c = c0; c < c1; ++c) {
      for (uint32_t i = m; i < mp; ++i) st[size_t(c) * mp + i] = 0.f;
    }
  }
}

// Σ_i w[i] · max { gain_of[e & 255] · st[(e >> 8) · mp + i] : e in held }
// over i < mp (w zero past the query's tokens); best: mp floats of scratch.
ATTN_SIMD_CLONES float Refined(const uint32_t* held, size_t n, const float* gain_of,
                               const float* st, uint32_t mp, const float* w, float* best) {
  if (n == 0) return 0.f;
  for (uint32_t i = 0; i < mp; ++i) best[i] = -std::numeric_limits<float>::max();
  for (size_t t = 0; t < n; ++t) {
    const float g = gain_of[held[t] & 255];
    const float* col = st + size_t(held[t] >> 8) * mp;
    for (uint32_t i = 0; i < mp; ++i) best[i] = std::max(best[i], g * col[i]);
  }
  float sum = 0.f;
  for (uint32_t i = 0; i < mp; ++i) sum += w[i] * best[i];
  return sum;
}

}  // namespace

CentroidCandidates::CentroidCandidates(uint32_t num, uint32_t dim,
                                       const CentroidCandidatesOptions& options)
    : num_(num), dim_(dim), options_(options) {
  for (int j = 0; j < 256; ++j) {
    gain_of_[j] = options.gain_max > 0.f ? options.gain_max * float(j) / 256.f : 1.f;
  }
}

CentroidCandidates::~CentroidCandidates() {
  if (neighbours_ == nullptr) return;
  for (uint32_t c = 0; c < num_; ++c) delete neighbours_[c].load();
}

const std::vector<AnnNeighbor>* CentroidCandidates::NeighboursOf(uint32_t c, const float* token,
                                                                 float scale) const {
  std::atomic<const std::vector<AnnNeighbor>*>& slot = neighbours_[c];
  if (const std::vector<AnnNeighbor>* known = slot.load(std::memory_order_acquire)) return known;
  AnnSearchParams params;
  params.ef_search = int(std::max<uint32_t>(options_.ef_search, 64));
  auto found = std::make_unique<std::vector<AnnNeighbor>>();
  if (!centroids_->Search(token, kCachedNeighbours, params, {}, found.get()).ok()) return nullptr;
  for (AnnNeighbor& n : *found) n.score /= scale;  // similarities with c itself
  const std::vector<AnnNeighbor>* expected = nullptr;
  if (slot.compare_exchange_strong(expected, found.get(), std::memory_order_acq_rel)) {
    return found.release();
  }
  return expected;  // another search set it first
}

absl::StatusOr<std::unique_ptr<CentroidCandidates>> CentroidCandidates::Create(
    const float* centroids, uint32_t num, uint32_t dim, const CentroidCandidatesOptions& options) {
  if (centroids == nullptr || num == 0 || dim == 0) {
    return absl::InvalidArgumentError("centroid candidates: no centroids");
  }
  if (options.probe == 0) {
    return absl::InvalidArgumentError("centroid candidates: probe must be at least 1");
  }
  if (options.ef_search == 0) {
    return absl::InvalidArgumentError("centroid candidates: ef_search must be at least 1");
  }
  if (!(options.gain_max >= 0.f) || !std::isfinite(options.gain_max)) {
    return absl::InvalidArgumentError("centroid candidates: gain_max must be finite and >= 0");
  }
  for (size_t i = 0; i < size_t(num) * dim; ++i) {
    if (!std::isfinite(centroids[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("centroid candidates: centroid ", i / dim, " is not finite"));
    }
  }
  std::unique_ptr<CentroidCandidates> c(new CentroidCandidates(num, dim, options));
  AnnOptions ann;
  ann.ef_search = int(options.ef_search);
  ATTN_ASSIGN_OR_RETURN(
      c->centroids_,
      AnnIndex::Create(num > options.exact_below ? options.graph_spec : "Flat", dim, ann));
  std::vector<Label> ids(num);
  for (uint32_t k = 0; k < num; ++k) ids[k] = k;
  ATTN_RETURN_IF_ERROR(c->centroids_->Add(ids.data(), centroids, num));
  if (options.own_centroid) {
    c->neighbours_ = std::make_unique<std::atomic<const std::vector<AnnNeighbor>*>[]>(num);
    for (uint32_t k = 0; k < num; ++k) c->neighbours_[k].store(nullptr);
  }
  absl::MutexLock lock(&c->mu_);
  c->lists_.resize(num);
  return c;
}

absl::Status CentroidCandidates::Add(Label label, const uint32_t* ids, const uint8_t* gains,
                                     size_t n) {
  // The document's centroids, each with its largest gain byte.
  std::vector<std::pair<uint32_t, uint8_t>> held(n);
  for (size_t t = 0; t < n; ++t) {
    if (ids[t] >= num_) {
      return absl::InvalidArgumentError(
          absl::StrCat("centroid candidates: token ", t, " names centroid ", ids[t], " of ", num_));
    }
    held[t] = {ids[t], gains != nullptr ? gains[t] : uint8_t(255)};
  }
  std::sort(held.begin(), held.end());
  size_t u = 0;
  for (size_t t = 0; t < held.size(); ++t) {
    if (u > 0 && held[u - 1].first == held[t].first) {
      held[u - 1].second = std::max(held[u - 1].second, held[t].second);
    } else {
      held[u++] = held[t];
    }
  }
  held.resize(u);

  absl::MutexLock lock(&mu_);
  if (auto it = slot_of_.find(label); it != slot_of_.end()) Kill(it->second);
  if (free_.empty() && label_of_.size() >= kMaxSlots && dead_ > 0) Sweep();
  uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    if (label_of_.size() >= kMaxSlots) {
      return absl::ResourceExhaustedError(
          absl::StrCat("centroid candidates: more than ", kMaxSlots, " documents"));
    }
    slot = uint32_t(label_of_.size());
    label_of_.push_back(0);
    alive_.push_back(0);
    slot_entries_.push_back(0);
    slot_gain_.push_back(0.f);
    slot_held_.push_back(0);
  }
  label_of_[slot] = label;
  alive_[slot] = 1;
  slot_of_[label] = slot;
  float gain_sum = 0.f;
  slot_held_[slot] = held_.size();
  for (const auto& [c, g] : held) {
    lists_[c].push_back(slot << 8 | g);
    held_.push_back(c << 8 | g);
    gain_sum += gain_of_[g];
  }
  slot_entries_[slot] = uint32_t(held.size());
  slot_gain_[slot] = gain_sum;
  entries_ += held.size();
  live_entries_ += held.size();
  gain_sum_ += gain_sum;
  if (dead_ > 1024 && dead_ * 4 > slot_of_.size()) Sweep();
  return absl::OkStatus();
}

void CentroidCandidates::Remove(Label label) {
  absl::MutexLock lock(&mu_);
  if (auto it = slot_of_.find(label); it != slot_of_.end()) Kill(it->second);
  if (dead_ > 1024 && dead_ * 4 > slot_of_.size()) Sweep();
}

void CentroidCandidates::Kill(uint32_t slot) {
  alive_[slot] = 0;
  ++dead_;
  slot_of_.erase(label_of_[slot]);
  live_entries_ -= slot_entries_[slot];
  gain_sum_ -= slot_gain_[slot];
}

void CentroidCandidates::Sweep() {
  entries_ = 0;
  const uint8_t* const alive = alive_.data();  // mu_ is held; the lambda cannot say so
  for (std::vector<uint32_t>& list : lists_) {
    list.erase(
        std::remove_if(list.begin(), list.end(), [&](uint32_t e) { return alive[e >> 8] == 0; }),
        list.end());
    entries_ += list.size();
  }
  size_t kept = 0;  // held_ compacted in place, live slots in order of their start
  std::vector<uint32_t> order;
  for (uint32_t slot = 0; slot < label_of_.size(); ++slot) {
    if (alive_[slot] != 0) order.push_back(slot);
  }
  std::sort(order.begin(), order.end(),
            [this](uint32_t a, uint32_t b)
                ABSL_NO_THREAD_SAFETY_ANALYSIS { return slot_held_[a] < slot_held_[b]; });
  for (const uint32_t slot : order) {
    const size_t from = slot_held_[slot], n = slot_entries_[slot];
    if (from != kept) {
      std::copy(held_.begin() + long(from), held_.begin() + long(from + n),
                held_.begin() + long(kept));
    }
    slot_held_[slot] = kept;
    kept += n;
  }
  held_.resize(kept);
  for (uint32_t slot = 0; slot < label_of_.size(); ++slot) {
    if (alive_[slot] == 0 && slot_entries_[slot] != UINT32_MAX) {
      slot_entries_[slot] = UINT32_MAX;  // freed: not pushed twice
      slot_gain_[slot] = 0.f;
      free_.push_back(slot);
    }
  }
  dead_ = 0;
}

absl::Status CentroidCandidates::Search(const float* query, const float* weights, uint32_t m,
                                        size_t k, const CentroidSearchParams& knobs,
                                        const LabelFilter& admit, std::vector<AnnNeighbor>* out,
                                        const std::function<absl::Status()>& while_locked) const {
  out->clear();
  if (m == 0) return absl::InvalidArgumentError("centroid candidates: a query has no tokens");
  for (size_t i = 0; i < size_t(m) * dim_; ++i) {
    if (!std::isfinite(query[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("centroid candidates: query token ", i / dim_, " is not finite"));
    }
  }
  const uint32_t probe = std::min(knobs.probe > 0 ? knobs.probe : options_.probe, num_);
  if (k == 0) return while_locked ? while_locked() : absl::OkStatus();

  thread_local Scratch s;
  AnnSearchParams params;
  params.ef_search = int(knobs.ef_search);  // 0: the options'
  // Every token's similarities at once, when a hook computes them (and
  // they take at most 64 MiB).
  const bool batched = options_.similarities && size_t(m) * num_ <= (size_t{1} << 24);
  if (batched) {
    s.sims.resize(size_t(m) * num_);
    ATTN_RETURN_IF_ERROR(options_.similarities(query, m, s.sims.data()));
  }
  absl::ReaderMutexLock lock(&mu_);
  s.Fit(label_of_.size());
  const uint32_t query_stamp = Scratch::Next(&s.query_stamp, &s.query_mark);
  s.touched.clear();
  const float mean_gain = live_entries_ > 0 ? float(gain_sum_ / double(live_entries_)) : 1.f;
  float base = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    // Token i's nearest centroids, best first: its own centroid's kept
    // neighbours, scaled, or searched.
    const float* token = query + size_t(i) * dim_;
    uint32_t own = 0;
    float scale = 0.f;
    const std::vector<AnnNeighbor>* kept = nullptr;
    if (neighbours_ != nullptr && probe <= kCachedNeighbours &&
        options_.own_centroid(token, &own, &scale) && own < num_ && scale > 0.f) {
      kept = NeighboursOf(own, token, scale);
    }
    if (kept != nullptr) {
      s.probed.clear();
      for (size_t r = 0; r < std::min<size_t>(probe, kept->size()); ++r) {
        s.probed.push_back({(*kept)[r].label, scale * (*kept)[r].score});
      }
    } else if (batched) {
      TopOf(s.sims.data() + size_t(i) * num_, num_, probe, &s, &s.probed);
    } else {
      ATTN_RETURN_IF_ERROR(centroids_->Search(token, probe, params, {}, &s.probed));
    }
    const uint32_t found = uint32_t(s.probed.size());
    if (found == 0) continue;
    const float w = weights != nullptr ? weights[i] : 1.f;
    const float floor = mean_gain * s.probed[found - 1].score;
    base += w * floor;
    const uint32_t token_stamp = Scratch::Next(&s.token_stamp, &s.token_mark);
    s.token_touched.clear();
    for (const AnnNeighbor& probed : s.probed) {
      const float sim = probed.score;
      for (const uint32_t e : lists_[size_t(probed.label)]) {
        const uint32_t slot = e >> 8;
        if (alive_[slot] == 0) continue;
        const float v = gain_of_[e & 255] * sim;
        if (s.token_mark[slot] != token_stamp) {
          s.token_mark[slot] = token_stamp;
          s.best[slot] = v;
          s.token_touched.push_back(slot);
        } else if (v > s.best[slot]) {
          s.best[slot] = v;
        }
      }
    }
    for (const uint32_t slot : s.token_touched) {
      if (s.query_mark[slot] != query_stamp) {
        s.query_mark[slot] = query_stamp;
        s.acc[slot] = 0.f;
        s.touched.push_back(slot);
      }
      s.acc[slot] += w * std::max(0.f, s.best[slot] - floor);
    }
  }
  // The touched documents best first (sorted a share at a time: most
  // searches admit the first k), then untouched ones at the floor.
  std::vector<std::pair<float, uint32_t>>& ranked = s.ranked;
  ranked.clear();
  for (const uint32_t slot : s.touched) ranked.push_back({base + s.acc[slot], slot});
  const auto better = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  // The walk's best `refined` by their refined scores first; the others'
  // scores are kept at most the last refined one, so the order holds.
  const size_t refine = knobs.refine >= 0 ? size_t(knobs.refine) : options_.refine;
  size_t refined = 0;
  float ceiling = std::numeric_limits<float>::infinity();
  if (batched && refine > 0 && !ranked.empty()) {
    refined = std::min(ranked.size(), std::max(refine, k));
    if (refined < ranked.size()) {
      std::nth_element(ranked.begin(), ranked.begin() + long(refined), ranked.end(), better);
    }
    const uint32_t mp = (m + 15) / 16 * 16;
    s.sims_t.resize(size_t(num_) * mp);
    Transpose(s.sims.data(), m, num_, mp, s.sims_t.data());
    s.weights.assign(mp, 0.f);
    for (uint32_t i = 0; i < m; ++i) s.weights[i] = weights != nullptr ? weights[i] : 1.f;
    s.best_of.resize(mp);
    for (size_t j = 0; j < refined; ++j) {
      const uint32_t slot = ranked[j].second;
      ranked[j].first = Refined(held_.data() + slot_held_[slot], slot_entries_[slot], gain_of_,
                                s.sims_t.data(), mp, s.weights.data(), s.best_of.data());
    }
    std::sort(ranked.begin(), ranked.begin() + long(refined), better);
    ceiling = ranked[refined - 1].first;
  }
  size_t sorted = refined;
  for (size_t i = 0; i < ranked.size() && out->size() < k; ++i) {
    if (i == sorted) {
      // The next share selected in linear time, then sorted.
      sorted = std::min(ranked.size(), std::max(2 * sorted, 2 * k));
      if (sorted < ranked.size()) {
        std::nth_element(ranked.begin() + long(i), ranked.begin() + long(sorted), ranked.end(),
                         better);
      }
      std::sort(ranked.begin() + long(i), ranked.begin() + long(sorted), better);
    }
    const Label label = label_of_[ranked[i].second];
    if (!admit || admit(label)) {
      out->push_back({label, i < refined ? ranked[i].first : std::min(ranked[i].first, ceiling)});
    }
  }
  for (uint32_t slot = 0; out->size() < k && slot < label_of_.size(); ++slot) {
    if (alive_[slot] == 0 || s.query_mark[slot] == query_stamp) continue;
    if (!admit || admit(label_of_[slot]))
      out->push_back({label_of_[slot], std::min(base, ceiling)});
  }
  if (while_locked) return while_locked();
  return absl::OkStatus();
}

size_t CentroidCandidates::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return slot_of_.size();
}

size_t CentroidCandidates::memory_bytes() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t bytes = size_t(num_) * dim_ * sizeof(float) + lists_.capacity() * sizeof(lists_[0]);
  for (const auto& list : lists_) bytes += list.capacity() * sizeof(uint32_t);
  bytes += label_of_.capacity() * sizeof(Label) + alive_.capacity() +
           slot_entries_.capacity() * sizeof(uint32_t) + slot_gain_.capacity() * sizeof(float) +
           slot_held_.capacity() * sizeof(size_t) + held_.capacity() * sizeof(uint32_t) +
           free_.capacity() * sizeof(uint32_t) +
           slot_of_.capacity() * (sizeof(Label) + sizeof(uint32_t) + 1);
  return bytes;
}

}  // namespace attnsearch
