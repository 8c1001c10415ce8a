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
#include "ann/simd_distance.h"
#include "core/simd_clones.h"
#include "core/status.h"
#include "core/vector_math.h"

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
  std::vector<float> group_max, super_max, threshold, column;  // TopPerToken's
  std::vector<uint32_t> reaching;
  std::vector<std::vector<std::pair<float, uint32_t>>> token_above;
  std::vector<AnnNeighbor> token_top;  // token i's best: [i * probe, + token_count[i])
  std::vector<uint32_t> token_count;
  std::vector<std::pair<float, uint32_t>> above;
  std::vector<std::pair<float, uint32_t>> ranked;  // touched documents by score
  std::vector<uint16_t> sims_h;                    // the refining's (see RefinedHalf)
  std::vector<float> weights, best_of;
  std::vector<float> impact, acc;  // Gather's
  std::vector<uint32_t> distinct;
  std::vector<uint8_t> listed;

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

// Scored entries best first: the higher score, then the lower index.
bool Better(const std::pair<float, uint32_t>& a, const std::pair<float, uint32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// The p largest positive values of v[0, n) into *out (all of them when
// fewer), in no order (ties: the lower index). The values fall in 16 rows
// of g = ceil(n / 16); the column maxima fall again in 8 rows, whose column
// maxima are each the largest of up to 128 values. A threshold t at most
// the p-th largest value: the p-th largest of those second maxima when
// there are more than p of them (p of them are >= t, each the maximum of
// other values), else the p-th largest of the first, and above 0. Only
// values >= t compete, and they lie in the columns whose maximum is >= t:
// only those columns are read again.
void TopOf(const float* v, size_t n, uint32_t p, Scratch* s, std::vector<AnnNeighbor>* out) {
  out->clear();
  if (n == 0 || p == 0) return;
  const size_t chunks = ColumnMaxima(v, n, 16, &s->chunk_max);
  const float* const cm = s->chunk_max.data();
  const size_t groups = ColumnMaxima(cm, chunks, 8, &s->chunk_order);
  // The p-th largest second maximum, else the p-th largest first one
  // (nth_element reorders: the first maxima are copied for it). When at
  // most p columns hold a positive value (a sparse gathering), that is at
  // most 0: not selected.
  float t = -std::numeric_limits<float>::infinity();
  size_t positive = 0;
  for (size_t c = 0; c < chunks; ++c) positive += cm[c] > 0.f;
  const size_t among = p < groups ? groups : chunks;
  if (p < among && positive > p) {
    if (among == chunks) s->chunk_order.assign(cm, cm + chunks);
    std::nth_element(s->chunk_order.begin(), s->chunk_order.begin() + (p - 1),
                     s->chunk_order.begin() + long(among), std::greater<float>());
    t = s->chunk_order[p - 1];
  }
  t = std::max(t, std::numeric_limits<float>::denorm_min());
  s->above.clear();
  size_t reaching = 0;  // columns whose maximum reaches t
  for (size_t c = 0; c < chunks; ++c) reaching += cm[c] >= t;
  if (reaching * 4 > chunks) {
    // Most lines hold such a column: one pass in order reads fewer.
    for (size_t i = 0; i < n; ++i) {
      if (v[i] >= t) s->above.push_back({v[i], uint32_t(i)});
    }
  } else {
    for (size_t c = 0; c < chunks; ++c) {
      if (cm[c] < t) continue;
      for (size_t i = c; i < n; i += chunks) {
        if (v[i] >= t) s->above.push_back({v[i], uint32_t(i)});
      }
    }
  }
  const size_t top = std::min<size_t>(p, s->above.size());
  if (top < s->above.size()) {
    std::nth_element(s->above.begin(), s->above.begin() + long(top), s->above.end(), Better);
  }
  for (size_t r = 0; r < top; ++r) out->push_back({s->above[r].second, s->above[r].first});
}

// Every token's p largest similarities in s (num x m, centroid by
// centroid), best first (ties: the lower centroid), into
// s->token_top[i * p, + s->token_count[i]). As TopOf, down the columns: the
// maxima of each group of 16 centroids and of each 8 groups (vertical
// maxima over rows, which vectorise), a threshold per token at most its
// p-th largest value, then only the groups whose maximum reaches some
// token's threshold are read again, for those tokens.
void TopPerToken(const float* v, uint32_t num, uint32_t m, uint32_t p, Scratch* s) {
  constexpr uint32_t kGroup = 16, kSuper = 8;
  const uint32_t groups = (num + kGroup - 1) / kGroup, supers = (groups + kSuper - 1) / kSuper;
  const auto maxima = [m](const float* rows, size_t count, float* into) {
    std::copy_n(rows, m, into);
    for (size_t r = 1; r < count; ++r) {
      const float* row = rows + r * m;
      for (uint32_t i = 0; i < m; ++i) into[i] = std::max(into[i], row[i]);
    }
  };
  s->group_max.resize(size_t(groups) * m);
  s->super_max.resize(size_t(supers) * m);
  for (uint32_t g = 0; g < groups; ++g) {
    const uint32_t c0 = g * kGroup;
    maxima(v + size_t(c0) * m, std::min(kGroup, num - c0), s->group_max.data() + size_t(g) * m);
  }
  for (uint32_t u = 0; u < supers; ++u) {
    const uint32_t g0 = u * kSuper;
    maxima(s->group_max.data() + size_t(g0) * m, std::min(kSuper, groups - g0),
           s->super_max.data() + size_t(u) * m);
  }
  // Token i's threshold: the p-th largest of its super maxima when there
  // are more than p of them (p of them reach it, each a value of its own),
  // else of its group maxima, else none.
  s->threshold.assign(m, -std::numeric_limits<float>::infinity());
  for (uint32_t i = 0; i < m; ++i) {
    const bool super = p < supers;
    if (!super && p >= groups) break;
    const std::vector<float>& among = super ? s->super_max : s->group_max;
    const size_t count = super ? supers : groups;
    s->column.resize(count);
    for (size_t r = 0; r < count; ++r) s->column[r] = among[r * m + i];
    std::nth_element(s->column.begin(), s->column.begin() + (p - 1), s->column.end(),
                     std::greater<float>());
    s->threshold[i] = s->column[p - 1];
  }
  if (s->token_above.size() < m) s->token_above.resize(m);
  for (uint32_t i = 0; i < m; ++i) s->token_above[i].clear();
  const float* const t = s->threshold.data();
  for (uint32_t g = 0; g < groups; ++g) {
    const float* gm = s->group_max.data() + size_t(g) * m;
    s->reaching.clear();
    for (uint32_t i = 0; i < m; ++i) {
      if (gm[i] >= t[i]) s->reaching.push_back(i);
    }
    if (s->reaching.empty()) continue;
    const uint32_t c1 = std::min(num, (g + 1) * kGroup);
    for (uint32_t c = g * kGroup; c < c1; ++c) {
      const float* row = v + size_t(c) * m;
      for (const uint32_t i : s->reaching) {
        if (row[i] >= t[i]) s->token_above[i].push_back({row[i], c});
      }
    }
  }
  s->token_top.resize(size_t(m) * p);
  s->token_count.assign(m, 0);
  for (uint32_t i = 0; i < m; ++i) {
    auto& above = s->token_above[i];
    const size_t top = std::min<size_t>(p, above.size());
    std::partial_sort(above.begin(), above.begin() + long(top), above.end(), Better);
    for (size_t r = 0; r < top; ++r) {
      s->token_top[size_t(i) * p + r] = {above[r].second, above[r].first};
    }
    s->token_count[i] = uint32_t(top);
  }
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

// The walk over every token's probed lists (s->probes, token i's from
// s->token_probes[i]), a block of slots at a time (the lists are sorted by
// slot) so that the block's states stay in cache: per block, each token's
// probed lists in token order, then the block's touched slots' last terms.
// Leaves each touched slot's sum above the floors in s->slots[slot].acc;
// returns the touched slots.
absl::Span<const uint32_t> Walk(const std::vector<std::vector<uint32_t>>& lists, uint32_t m,
                                uint32_t base, const float* gain_of, size_t slots, Scratch* s) {
  s->cursors.resize(s->probes.size());
  for (size_t p = 0; p < s->probes.size(); ++p) {
    const std::vector<uint32_t>& list = lists[size_t(s->probes[p].label)];
    s->cursors[p] = {list.data(), list.data() + list.size()};
    __builtin_prefetch(list.data());
    __builtin_prefetch(list.data() + 16);
  }
  // Each slot at most once, and one more: the walk writes one past the end.
  if (s->touched.size() <= slots) s->touched.resize(slots + 1);
  uint32_t* touched = s->touched.data();
  SlotState* const state = s->slots.data();
  const float* const tw = s->token_w.data();
  const float* const tf = s->token_floor.data();
  for (size_t b0 = 0; b0 < slots; b0 += kBlockSlots) {
    const uint32_t limit = uint32_t(std::min(b0 + kBlockSlots, slots)) << 8;
    uint32_t* const block_touched = touched;
    for (uint32_t i = 0; i < m; ++i) {
      const uint32_t token_stamp = base + 1 + i;
      for (uint32_t p = s->token_probes[i]; p < s->token_probes[i + 1]; ++p) {
        touched = WalkList(&s->cursors[p], limit, s->probes[p].score, gain_of, state, base,
                           token_stamp, m, tw, tf, touched);
      }
    }
    for (const uint32_t* t = block_touched; t < touched; ++t) {
      SlotState& st = state[*t];
      const uint32_t j = st.stamp - base - 1;
      st.acc += tw[j] * std::max(0.f, st.best - tf[j]);
    }
  }
  return {s->touched.data(), size_t(touched - s->touched.data())};
}

// The gathering that chooses the documents to refine: each probed centroid
// c's impact u_c = Σ w_i · s_ic over the tokens i that probe it, then
// each document on c's list credited g_D(c) · u_c, each list read once.
// Into s->acc (slots floats): a document's Σ over its probed centroids,
// 0 where it holds none (or only centroids of impact <= 0).
void Gather(const std::vector<std::vector<uint32_t>>& lists, const std::vector<AnnNeighbor>& probes,
            const uint32_t* token_probes, const float* token_w, uint32_t m, const float* gain_of,
            Scratch* s, size_t slots) {
  s->impact.resize(lists.size(), 0.f);  // both zero outside this call
  s->listed.resize(lists.size(), 0);
  s->distinct.clear();
  float* const impact = s->impact.data();
  for (uint32_t i = 0; i < m; ++i) {
    for (uint32_t p = token_probes[i]; p < token_probes[i + 1]; ++p) {
      const uint32_t c = uint32_t(probes[p].label);
      if (s->listed[c] == 0) s->distinct.push_back(c);
      s->listed[c] = 1;
      impact[c] += token_w[i] * probes[p].score;
    }
  }
  s->acc.assign(slots, 0.f);
  float* const acc = s->acc.data();
  for (const uint32_t c : s->distinct) {
    const float u = impact[c];
    impact[c] = 0.f;
    s->listed[c] = 0;
    if (!(u > 0.f)) continue;
    for (const uint32_t e : lists[c]) acc[e >> 8] += gain_of[e & 255] * u;
  }
}

// The refining's similarities as IEEE halves: a centroid's row of 32
// tokens is one cache line, and 8,192 centroids' rows (512 KiB) stay in
// L2. Values are stored divided by `scale` (a power of 2 that keeps them
// in the halves' range); a refined score is within m · 2^-11 · max |s_ic|
// of the f32 one (Σ w_i <= m at unit weights).
//
// HalfRows: s (num x m floats, centroid by centroid) into st (num x mp
// halves), each row zero-padded to mp (a multiple of 16). RefinedHalf:
// Refined over them.
void HalfRowsPortable(const float* s, uint32_t m, uint32_t num, uint32_t mp, float inv,
                      uint16_t* st) {
  for (size_t c = 0; c < num; ++c) {
    for (uint32_t i = 0; i < mp; ++i) {
      st[c * mp + i] = i < m ? simd::FloatToHalf(s[c * m + i] * inv) : 0;
    }
  }
}

float RefinedHalfPortable(const uint32_t* held, size_t n, const float* gain_of, const uint16_t* st,
                          uint32_t mp, const float* w, float* best) {
  for (uint32_t i = 0; i < mp; ++i) best[i] = -std::numeric_limits<float>::max();
  for (size_t t = 0; t < n; ++t) {
    const float g = gain_of[held[t] & 255];
    const uint16_t* row = st + size_t(held[t] >> 8) * mp;
    for (uint32_t i = 0; i < mp; ++i) best[i] = std::max(best[i], g * simd::HalfToFloat(row[i]));
  }
  float sum = 0.f;
  for (uint32_t i = 0; i < mp; ++i) sum += w[i] * best[i];
  return sum;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_HALF_AVX2 __attribute__((target("avx2,fma,f16c")))
#define ATTN_HALF_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

// Both convert a row 8 (16) tokens at a time, the tokens past m zero.
ATTN_HALF_AVX2 void HalfRowsAvx2(const float* s, uint32_t m, uint32_t num, uint32_t mp, float inv,
                                 uint16_t* st) {
  const __m256 scale = _mm256_set1_ps(inv);
  alignas(32) int32_t lanes[16];
  for (int j = 0; j < 16; ++j) lanes[j] = j < 8 ? -1 : 0;
  for (size_t c = 0; c < num; ++c) {
    const float* row = s + c * m;
    for (uint32_t i = 0; i < mp; i += 8) {
      // Lanes [0, m - i) of 8 are loaded.
      const uint32_t live = i >= m ? 0 : std::min<uint32_t>(8, m - i);
      const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes + 8 - live));
      const __m256 v = _mm256_maskload_ps(row + std::min(i, m), mask);
      const __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(v, scale), _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(st + c * mp + i), h);
    }
  }
}

template <uint32_t kBlocks>  // mp = 8 · kBlocks
ATTN_HALF_AVX2 float RefinedHalfAvx2(const uint32_t* held, size_t n, const float* gain_of,
                                     const uint16_t* st, const float* w) {
  constexpr uint32_t kMp = 8 * kBlocks;
  __m256 best[kBlocks];
  for (uint32_t b = 0; b < kBlocks; ++b)
    best[b] = _mm256_set1_ps(-std::numeric_limits<float>::max());
  for (size_t t = 0; t < n; ++t) {
    if (t + 4 < n) __builtin_prefetch(st + size_t(held[t + 4] >> 8) * kMp);
    const __m256 g = _mm256_set1_ps(gain_of[held[t] & 255]);
    const uint16_t* row = st + size_t(held[t] >> 8) * kMp;
    for (uint32_t b = 0; b < kBlocks; ++b) {
      const __m256 v =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 8 * b)));
      best[b] = _mm256_max_ps(best[b], _mm256_mul_ps(g, v));
    }
  }
  __m256 sum = _mm256_setzero_ps();
  for (uint32_t b = 0; b < kBlocks; ++b)
    sum = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * b), best[b], sum);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0.f;
  for (float x : lanes) total += x;
  return total;
}

ATTN_HALF_AVX512 void HalfRowsAvx512(const float* s, uint32_t m, uint32_t num, uint32_t mp,
                                     float inv, uint16_t* st) {
  const __m512 scale = _mm512_set1_ps(inv);
  for (size_t c = 0; c < num; ++c) {
    const float* row = s + c * m;
    for (uint32_t i = 0; i < mp; i += 16) {
      const __mmask16 live = i + 16 <= m ? __mmask16(0xFFFF)
                             : i >= m    ? __mmask16(0)
                                         : __mmask16((1u << (m - i)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(live, row + std::min(i, m));
      const __m256i h =
          _mm512_maskz_cvtps_ph(0xFFFF, _mm512_mul_ps(v, scale), _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(st + c * mp + i), h);
    }
  }
}

template <uint32_t kBlocks>  // mp = 16 · kBlocks
ATTN_HALF_AVX512 float RefinedHalfAvx512(const uint32_t* held, size_t n, const float* gain_of,
                                         const uint16_t* st, const float* w) {
  constexpr uint32_t kMp = 16 * kBlocks;
  __m512 best[kBlocks];
  for (uint32_t b = 0; b < kBlocks; ++b)
    best[b] = _mm512_set1_ps(-std::numeric_limits<float>::max());
  for (size_t t = 0; t < n; ++t) {
    if (t + 4 < n) __builtin_prefetch(st + size_t(held[t + 4] >> 8) * kMp);
    const __m512 g = _mm512_set1_ps(gain_of[held[t] & 255]);
    const uint16_t* row = st + size_t(held[t] >> 8) * kMp;
    for (uint32_t b = 0; b < kBlocks; ++b) {
      // The masked forms: GCC 12 warns of the plain ones' undefined operand.
      const __m512 v = _mm512_maskz_cvtph_ps(
          0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * b)));
      best[b] = _mm512_maskz_max_ps(0xFFFF, best[b], _mm512_mul_ps(g, v));
    }
  }
  __m512 sum = _mm512_setzero_ps();
  for (uint32_t b = 0; b < kBlocks; ++b)
    sum = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * b), best[b], sum);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0.f;
  for (float x : lanes) total += x;
  return total;
}
#endif

// The halves and the refining on the best kernels the CPU has
// (simd::ActiveLevel, which ATTN_SIMD caps); refining queries of more than
// 64 tokens goes the portable way.
void HalfRows(const float* s, uint32_t m, uint32_t num, uint32_t mp, float inv, uint16_t* st) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (simd::ActiveLevel()) {
    case simd::Level::kAvx512:
      return HalfRowsAvx512(s, m, num, mp, inv, st);
    case simd::Level::kAvx2:
      return HalfRowsAvx2(s, m, num, mp, inv, st);
    default:
      break;
  }
#endif
  HalfRowsPortable(s, m, num, mp, inv, st);
}

float RefinedHalf(const uint32_t* held, size_t n, const float* gain_of, const uint16_t* st,
                  uint32_t mp, const float* w, float* best) {
  if (n == 0) return 0.f;
#if defined(__x86_64__) && defined(__GNUC__)
  switch (simd::ActiveLevel()) {
    case simd::Level::kAvx512:
      if (mp == 16) return RefinedHalfAvx512<1>(held, n, gain_of, st, w);
      if (mp == 32) return RefinedHalfAvx512<2>(held, n, gain_of, st, w);
      if (mp == 48) return RefinedHalfAvx512<3>(held, n, gain_of, st, w);
      if (mp == 64) return RefinedHalfAvx512<4>(held, n, gain_of, st, w);
      break;
    case simd::Level::kAvx2:
      if (mp == 16) return RefinedHalfAvx2<2>(held, n, gain_of, st, w);
      if (mp == 32) return RefinedHalfAvx2<4>(held, n, gain_of, st, w);
      if (mp == 48) return RefinedHalfAvx2<6>(held, n, gain_of, st, w);
      if (mp == 64) return RefinedHalfAvx2<8>(held, n, gain_of, st, w);
      break;
    default:
      break;
  }
#endif
  return RefinedHalfPortable(held, n, gain_of, st, mp, w, best);
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
  for (uint32_t k = 0; k < num; ++k) {
    const float* row = centroids + size_t(k) * dim;
    c->max_centroid_norm_ = std::max(c->max_centroid_norm_, std::sqrt(Dot(row, row, dim)));
  }
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
    TopPerToken(s.sims.data(), num_, m, probe, &s);
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
      const AnnNeighbor* top = s.token_top.data() + size_t(i) * probe;
      s.probed.assign(top, top + s.token_count[i]);
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
  const size_t refine = knobs.refine >= 0 ? size_t(knobs.refine) : options_.refine;
  // With refining, the lists only gather the documents to refine, each
  // probed list once (see CentroidCandidatesOptions::refine); else the
  // walk scores them, with a state per slot.
  const bool gather = batched && refine > 0;
  uint32_t base = 0;
  if (!gather) {
    s.Fit(label_of_.size());
    base = s.Take(m);
  }
  const float mean_gain = live_entries_ > 0 ? float(gain_sum_ / double(live_entries_)) : 1.f;
  float base_score = 0.f;
  for (uint32_t i = 0; i < m; ++i) {
    s.token_floor[i] *= mean_gain;
    base_score += s.token_w[i] * s.token_floor[i];
  }
  const SlotState* const state = s.slots.data();
  std::vector<std::pair<float, uint32_t>>& ranked = s.ranked;
  ranked.clear();
  if (gather) {
    // The gathering's best max(refine, k) live documents among those it
    // touched (dead ones and, below, the chosen marked -inf), selected
    // without ranking them all. (On the e2e set a query touches ~1,000
    // documents: refining 2,000 took ~1,000 untouched ones, chosen by slot,
    // and selecting them ranked all 100,000.)
    Gather(lists_, s.probes, s.token_probes.data(), s.token_w.data(), m, gain_of_, &s,
           label_of_.size());
    float* const acc = s.acc.data();
    constexpr float kOut = -std::numeric_limits<float>::infinity();
    if (dead_ > 0) {
      for (uint32_t slot = 0; slot < label_of_.size(); ++slot) {
        if (alive_[slot] == 0) acc[slot] = kOut;
      }
    }
    TopOf(acc, label_of_.size(), uint32_t(std::min(label_of_.size(), std::max(refine, k))), &s,
          &s.probed);
    for (const AnnNeighbor& n : s.probed) {
      const uint32_t slot = uint32_t(n.label);
      if (alive_[slot] == 0) continue;
      ranked.push_back({acc[slot], slot});
      acc[slot] = kOut;
    }
  } else {
    // The touched documents best first (sorted a share at a time: most
    // searches admit the first k), then untouched ones at the floor.
    for (const uint32_t slot : Walk(lists_, m, base, gain_of_, label_of_.size(), &s)) {
      if (alive_[slot] != 0) ranked.push_back({base_score + state[slot].acc, slot});
    }
  }
  const auto untouched = [&](uint32_t slot) {
    return gather ? s.acc[slot] == 0.f : state[slot].stamp < base;
  };
  // The best `refined` by their refined scores first; the others' scores
  // are kept at most the last refined one, so the order holds.
  size_t refined = 0;
  float ceiling = std::numeric_limits<float>::infinity();
  if (gather && !ranked.empty()) {
    refined = ranked.size();
    const uint32_t mp = (m + 15) / 16 * 16;
    // |s_ic| <= |q_i| |c|: kept below 2^15 in the halves.
    float qmax = 0.f;
    for (uint32_t i = 0; i < m; ++i) {
      const float* token = query + size_t(i) * dim_;
      qmax = std::max(qmax, std::sqrt(Dot(token, token, dim_)));
    }
    const float bound = qmax * max_centroid_norm_;
    const float scale = bound > 32768.f ? std::exp2(std::ceil(std::log2(bound / 32768.f))) : 1.f;
    s.sims_h.resize(size_t(num_) * mp);
    HalfRows(s.sims.data(), m, num_, mp, 1.f / scale, s.sims_h.data());
    s.weights.assign(mp, 0.f);
    for (uint32_t i = 0; i < m; ++i) s.weights[i] = weights != nullptr ? weights[i] : 1.f;
    s.best_of.resize(mp);
    // A document's ~45 centroids (~3 lines) are asked for this many
    // documents ahead, every line of them, as read once (non-temporal).
    // Zen 5, 2,000 refined of 100k clustered documents, A/B in one
    // process switched per pair of searches: 865 and 1,090 us against
    // 1,184 and 1,553 without; 8-13% less than the first two lines 4
    // ahead; the non-temporal hint no different from kept lines.
    constexpr size_t kAhead = 16;
    for (size_t j = 0; j < refined; ++j) {
      if (j + kAhead < refined) {
        const uint32_t next = ranked[j + kAhead].second;
        const uint32_t* const first = held_.data() + slot_held_[next];
        const uint32_t* const last = first + slot_entries_[next];
        for (const uint32_t* line = first; line < last; line += 16) {
          __builtin_prefetch(line, 0, 0);
        }
        if (last > first) __builtin_prefetch(last - 1, 0, 0);
      }
      const uint32_t slot = ranked[j].second;
      ranked[j].first =
          scale * RefinedHalf(held_.data() + slot_held_[slot], slot_entries_[slot], gain_of_,
                              s.sims_h.data(), mp, s.weights.data(), s.best_of.data());
    }
    // The lowest refined score: the documents after them are kept below.
    for (size_t j = 0; j < refined; ++j) ceiling = std::min(ceiling, ranked[j].first);
  }
  size_t sorted = 0;          // ranked[0, sorted) is in order
  bool all_ranked = !gather;  // the gathering ranks the rest if the refined fall short
  for (size_t i = 0; out->size() < k; ++i) {
    if (i == ranked.size()) {
      if (all_ranked) break;
      all_ranked = true;
      for (uint32_t slot = 0; slot < label_of_.size(); ++slot) {
        if (s.acc[slot] > 0.f) ranked.push_back({s.acc[slot], slot});
      }
      if (i == ranked.size()) break;
    }
    if (i == sorted) {
      // The next share selected in linear time, then sorted.
      sorted = std::min(ranked.size(), std::max(2 * sorted, 2 * k));
      if (sorted < ranked.size()) {
        std::nth_element(ranked.begin() + long(i), ranked.begin() + long(sorted), ranked.end(),
                         Better);
      }
      std::sort(ranked.begin() + long(i), ranked.begin() + long(sorted), Better);
    }
    const Label label = label_of_[ranked[i].second];
    if (!admit || admit(label)) {
      out->push_back({label, i < refined ? ranked[i].first : std::min(ranked[i].first, ceiling)});
    }
  }
  for (uint32_t slot = 0; out->size() < k && slot < label_of_.size(); ++slot) {
    if (alive_[slot] == 0 || !untouched(slot)) continue;
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
