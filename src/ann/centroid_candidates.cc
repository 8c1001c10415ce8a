#include "ann/centroid_candidates.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/simd_clones.h"
#include "core/status.h"

namespace attnsearch {
namespace {

constexpr uint32_t kMaxSlots = uint32_t{1} << 24;  // a list entry is slot << 8 | gain

// A searching thread's per-slot state, kept between searches. A query
// takes m + 1 stamps: `base`, then base + 1 + i for its token i. A slot
// whose stamp is at most base was not touched by this query; one stamped
// base + 1 + i was last touched by token i, whose best value for it is
// `best`, not yet added to `acc` (the terms of the tokens before). Nothing
// is cleared between tokens or queries.
struct SlotState {
  uint32_t stamp;
  float best, acc;
};

// Where a walk is in one probed list.
struct ListCursor {
  const uint32_t *at, *end;
};

// Slots a block of the walk covers: their states (12 bytes each) stay in
// L2.
constexpr size_t kBlockSlots = 8192;

struct Scratch {
  std::vector<SlotState> slots;
  uint32_t stamp = 0;                       // the last stamp taken
  std::vector<float> token_w, token_floor;  // per token of the query, and a zero
  std::vector<AnnNeighbor> probes;          // every token's probed centroids
  std::vector<uint32_t> token_probes;       // token i's: [token_probes[i], [i + 1])
  std::vector<ListCursor> cursors;          // per probe
  std::vector<uint32_t> touched;
  std::vector<AnnNeighbor> probed;
  std::vector<float> sims, chunk_max, chunk_order;  // the similarities hook's output; TopOf's
  std::vector<std::pair<float, uint32_t>> above;
  std::vector<std::pair<float, uint32_t>> ranked;  // touched documents by score
  std::vector<float> sims_t, weights, best_of;     // the refining's (see Refine)

  void Fit(size_t n) {
    if (slots.size() < n) slots.resize(n, SlotState{0, 0.f, 0.f});
  }
  // The query's base stamp, with m stamps after it free.
  uint32_t Take(uint32_t m) {
    if (stamp > UINT32_MAX - m - 1) {  // would wrap: old stamps could match again
      for (SlotState& st : slots) st.stamp = 0;
      stamp = 0;
    }
    const uint32_t base = stamp + 1;
    stamp = base + m;
    return base;
  }
};

// The maxima of `rows` rows of g = ceil(n / rows) values of v[0, n) (a
// short last row), column by column, into max[0, g): a vertical max, which
// vectorises. Returns g.
size_t ColumnMaxima(const float* v, size_t n, size_t rows, std::vector<float>* max) {
  const size_t g = (n + rows - 1) / rows;
  max->assign(v, v + g);
  float* const cm = max->data();
  for (size_t r = 1; r < rows; ++r) {
    const float* row = v + r * g;
    const size_t len = r * g >= n ? 0 : std::min(g, n - r * g);
    for (size_t c = 0; c < len; ++c) cm[c] = std::max(cm[c], row[c]);
  }
  return g;
}

// The p largest of v[0, n) into *out, best first (ties: the lower index).
// The values fall in 16 rows of g = ceil(n / 16); the column maxima fall
// again in 8 rows, whose column maxima are each the largest of up to 128
// values. A threshold t at most the p-th largest value: the p-th largest
// of those second maxima when there are more than p of them (p of them are
// >= t, each the maximum of other values), else the p-th largest of the
// first. Only values >= t compete, and they lie in the columns whose
// maximum is >= t: only those columns are read again. (Zen 5, 8,192
// centroids, 32 tokens: the probes took 302 us with t found among the
// first maxima and every value scanned, 114 like this.)
void TopOf(const float* v, size_t n, uint32_t p, Scratch* s, std::vector<AnnNeighbor>* out) {
  out->clear();
  if (n == 0 || p == 0) return;
  const size_t chunks = ColumnMaxima(v, n, 16, &s->chunk_max);
  const float* const cm = s->chunk_max.data();
  const size_t groups = ColumnMaxima(cm, chunks, 8, &s->chunk_order);
  // The p-th largest second maximum, else the p-th largest first one
  // (nth_element reorders: the first maxima are copied for it).
  float t = -std::numeric_limits<float>::infinity();
  if (p >= groups && p < chunks) s->chunk_order.assign(cm, cm + chunks);
  const size_t among = p < groups ? groups : chunks;
  if (p < among) {
    std::nth_element(s->chunk_order.begin(), s->chunk_order.begin() + (p - 1),
                     s->chunk_order.begin() + long(among), std::greater<float>());
    t = s->chunk_order[p - 1];
  }
  s->above.clear();
  for (size_t c = 0; c < chunks; ++c) {
    if (cm[c] < t) continue;
    for (size_t i = c; i < n; i += chunks) {
      if (v[i] >= t) s->above.push_back({v[i], uint32_t(i)});
    }
  }
  const size_t top = std::min<size_t>(p, s->above.size());
  std::partial_sort(s->above.begin(), s->above.begin() + long(top), s->above.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && a.second < b.second);
                    });
  for (size_t r = 0; r < top; ++r) out->push_back({s->above[r].second, s->above[r].first});
}

// A probed list's entries below `limit` (slot << 8), from where the cursor
// is, for token `token_stamp - base - 1`, whose similarity with the list's
// centroid is `sim`: each entry's slot state read once (dead slots
// included: they are dropped when ranked). A slot's term for the token it
// last saw (tw: the tokens' weights, tf: their floors) is added when a
// later token reaches it, or after the block, so that its sum runs in
// token order. Appends the slots first touched by the query at `touched`;
// returns its new end.
uint32_t* WalkList(ListCursor* cursor, uint32_t limit, float sim, const float* gain_of,
                   SlotState* state, uint32_t base, uint32_t token_stamp, uint32_t none,
                   const float* tw, const float* tf, uint32_t* touched) {
  const uint32_t* e = cursor->at;
#if defined(__SSE2__)
  // Without branches on the state: which case an entry is in follows no
  // pattern, and selecting the cases by masks measured faster than
  // branching on them.
  const __m128 zero = _mm_setzero_ps();
  for (; e < cursor->end && *e < limit; ++e) {
    SlotState& st = state[*e >> 8];
    const __m128 v = _mm_set_ss(gain_of[*e & 255] * sim);
    const uint32_t stamp = st.stamp;
    const uint32_t again = stamp == token_stamp;  // this token saw it: keep the larger
    const uint32_t fresh = stamp < base;          // no token of the query saw it
    // The pending term's token (`none`: a zero weight).
    const uint32_t no_term = 0u - (again | fresh);  // all ones: none
    const uint32_t j = ((stamp - base - 1) & ~no_term) | (none & no_term);
    const __m128 best = _mm_load_ss(&st.best);
    const __m128 term =
        _mm_mul_ss(_mm_load_ss(&tw[j]), _mm_max_ss(_mm_sub_ss(best, _mm_load_ss(&tf[j])), zero));
    const __m128 keep_acc = _mm_castsi128_ps(_mm_cvtsi32_si128(int(fresh) - 1));
    const __m128 keep_best = _mm_castsi128_ps(_mm_cvtsi32_si128(-int(again)));
    _mm_store_ss(&st.acc, _mm_and_ps(_mm_add_ss(_mm_load_ss(&st.acc), term), keep_acc));
    const __m128 was = _mm_or_ps(_mm_and_ps(keep_best, best), _mm_andnot_ps(keep_best, v));
    _mm_store_ss(&st.best, _mm_max_ss(was, v));
    st.stamp = token_stamp;
    *touched = *e >> 8;
    touched += fresh;
  }
#else
  for (; e < cursor->end && *e < limit; ++e) {
    SlotState& st = state[*e >> 8];
    const float v = gain_of[*e & 255] * sim;
    if (st.stamp == token_stamp) {
      st.best = std::max(st.best, v);
      continue;
    }
    if (st.stamp < base) {
      st.acc = 0.f;
      *touched++ = *e >> 8;
    } else {
      const uint32_t j = st.stamp - base - 1;
      st.acc += tw[j] * std::max(0.f, st.best - tf[j]);
    }
    st.stamp = token_stamp;
    st.best = v;
  }
#endif
  // The lists are read a block's share at a time, too little for the
  // hardware to prefetch: the next block's share is asked for now.
  __builtin_prefetch(e);
  __builtin_prefetch(e + 16);
  cursor->at = e;
  return touched;
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
// over i < mp (w zero past the query's tokens), the columns prefetched.
// With kMp > 0, mp = kMp is known when compiled and the maxima stay in
// registers; with kMp = 0 they are kept in `scratch` (mp floats).
template <uint32_t kMp>
[[gnu::always_inline]] inline float RefinedBody(const uint32_t* held, size_t n,
                                                const float* gain_of, const float* st,
                                                uint32_t mp_any, const float* w, float* scratch) {
  constexpr size_t kAhead = 4;  // columns prefetched ahead: they are read at random
  const uint32_t mp = kMp > 0 ? kMp : mp_any;
  float local[kMp > 0 ? kMp : 1];
  float* const best = kMp > 0 ? local : scratch;
  for (uint32_t i = 0; i < mp; ++i) best[i] = -std::numeric_limits<float>::max();
  for (size_t t = 0; t < n; ++t) {
    if (t + kAhead < n) __builtin_prefetch(st + size_t(held[t + kAhead] >> 8) * mp);
    const float g = gain_of[held[t] & 255];
    const float* col = st + size_t(held[t] >> 8) * mp;
    for (uint32_t i = 0; i < mp; ++i) best[i] = std::max(best[i], g * col[i]);
  }
  float sum = 0.f;
  for (uint32_t i = 0; i < mp; ++i) sum += w[i] * best[i];
  return sum;
}

// The same for any mp (a multiple of 16; up to 64 in registers); best: mp
// floats of scratch.
ATTN_SIMD_CLONES float Refined(const uint32_t* held, size_t n, const float* gain_of,
                               const float* st, uint32_t mp, const float* w, float* best) {
  if (n == 0) return 0.f;
  switch (mp) {
    case 16:
      return RefinedBody<16>(held, n, gain_of, st, mp, w, best);
    case 32:
      return RefinedBody<32>(held, n, gain_of, st, mp, w, best);
    case 48:
      return RefinedBody<48>(held, n, gain_of, st, mp, w, best);
    case 64:
      return RefinedBody<64>(held, n, gain_of, st, mp, w, best);
    default:
      return RefinedBody<0>(held, n, gain_of, st, mp, w, best);
  }
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
    std::vector<uint32_t>& list = lists_[c];  // kept sorted: the walk goes by slot
    const uint32_t e = slot << 8 | g;
    if (list.empty() || list.back() < e) {
      list.push_back(e);
    } else {
      list.insert(std::upper_bound(list.begin(), list.end(), e), e);
    }
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
  // Each token's nearest centroids, best first (its own centroid's kept
  // neighbours, scaled, or searched), its weight and its floor.
  s.probes.clear();
  s.token_w.assign(m + 1, 0.f);  // [m]: none
  s.token_floor.assign(m + 1, 0.f);
  s.token_probes.assign(m + 1, 0);
  for (uint32_t i = 0; i < m; ++i) {
    s.token_probes[i] = uint32_t(s.probes.size());
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
    if (s.probed.empty()) continue;
    s.token_w[i] = weights != nullptr ? weights[i] : 1.f;
    s.token_floor[i] = s.probed.back().score;  // times the mean gain, below
    s.probes.insert(s.probes.end(), s.probed.begin(), s.probed.end());
  }
  s.token_probes[m] = uint32_t(s.probes.size());

  absl::ReaderMutexLock lock(&mu_);
  s.Fit(label_of_.size());
  const uint32_t base = s.Take(m);
  const float mean_gain = live_entries_ > 0 ? float(gain_sum_ / double(live_entries_)) : 1.f;
  float base_score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    s.token_floor[i] *= mean_gain;
    base_score += s.token_w[i] * s.token_floor[i];
  }
  // The walk, a block of slots at a time (the lists are sorted by slot),
  // so that the block's states stay in cache: per block, each token's
  // probed lists in token order, then the block's touched slots' last
  // terms.
  s.cursors.resize(s.probes.size());
  for (size_t p = 0; p < s.probes.size(); ++p) {
    const std::vector<uint32_t>& list = lists_[size_t(s.probes[p].label)];
    s.cursors[p] = {list.data(), list.data() + list.size()};
    __builtin_prefetch(list.data());
    __builtin_prefetch(list.data() + 16);
  }
  // Each slot at most once, and one more: the walk writes one past the end.
  if (s.touched.size() <= label_of_.size()) s.touched.resize(label_of_.size() + 1);
  uint32_t* touched = s.touched.data();
  SlotState* const state = s.slots.data();
  const float* const tw = s.token_w.data();
  const float* const tf = s.token_floor.data();
  for (size_t b0 = 0; b0 < label_of_.size(); b0 += kBlockSlots) {
    const uint32_t limit = uint32_t(std::min(b0 + kBlockSlots, label_of_.size())) << 8;
    uint32_t* const block_touched = touched;
    for (uint32_t i = 0; i < m; ++i) {
      const uint32_t token_stamp = base + 1 + i;
      for (uint32_t p = s.token_probes[i]; p < s.token_probes[i + 1]; ++p) {
        touched = WalkList(&s.cursors[p], limit, s.probes[p].score, gain_of_, state, base,
                           token_stamp, m, tw, tf, touched);
      }
    }
    for (const uint32_t* t = block_touched; t < touched; ++t) {
      SlotState& st = state[*t];
      const uint32_t j = st.stamp - base - 1;
      st.acc += tw[j] * std::max(0.f, st.best - tf[j]);
    }
  }
  const absl::Span<const uint32_t> touched_slots(s.touched.data(),
                                                 size_t(touched - s.touched.data()));
  // The touched documents best first (sorted a share at a time: most
  // searches admit the first k), then untouched ones at the floor.
  std::vector<std::pair<float, uint32_t>>& ranked = s.ranked;
  ranked.clear();
  for (const uint32_t slot : touched_slots) {
    if (alive_[slot] != 0) ranked.push_back({base_score + state[slot].acc, slot});
  }
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
    if (alive_[slot] == 0 || state[slot].stamp >= base) continue;
    if (!admit || admit(label_of_[slot]))
      out->push_back({label_of_[slot], std::min(base_score, ceiling)});
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
