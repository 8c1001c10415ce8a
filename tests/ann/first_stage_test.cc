// The first stages against oracles. Centroids: scores and order against
// the formula computed by brute force over every document (with gains,
// deletes, replacements, filters and sweeps). Fixed dimensional encodings:
// the same encodings from the same seed, pooling as their one-partition
// case. Both: their candidates against the reference reranker's exhaustive
// top 10 on clustered multi-vector documents (the centroid stage seeing
// only a trained residual codec's codes), next to pooled vectors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "ann/centroid_candidates.h"
#include "ann/fde.h"
#include "ann/residual_codec.h"
#include "core/vector_math.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

std::vector<float> UnitRows(size_t n, uint32_t dim, std::mt19937* rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> x(n * dim);
  for (float& v : x) v = g(*rng);
  for (size_t i = 0; i < n; ++i) NormalizeInPlace(x.data() + i * dim, dim);
  return x;
}

// A document as the first stage holds it: its tokens' centroids and gains.
struct Held {
  std::vector<uint32_t> ids;
  std::vector<uint8_t> gains;
};

// A document's distinct centroids, each with its largest gain byte.
std::map<uint32_t, uint8_t> HeldSet(const Held& h) {
  std::map<uint32_t, uint8_t> set;
  for (size_t t = 0; t < h.ids.size(); ++t) {
    auto [it, fresh] = set.emplace(h.ids[t], h.gains[t]);
    if (!fresh) it->second = std::max(it->second, h.gains[t]);
  }
  return set;
}

// Query token i's similarities with every centroid, best first.
std::vector<std::pair<float, uint32_t>> SortedSims(const float* token, const float* centroids,
                                                   uint32_t num, uint32_t dim) {
  std::vector<std::pair<float, uint32_t>> sims(num);
  for (uint32_t c = 0; c < num; ++c) {
    float s = 0;
    for (uint32_t t = 0; t < dim; ++t) s += token[t] * centroids[size_t(c) * dim + t];
    sims[c] = {s, c};
  }
  std::sort(sims.begin(), sims.end(), [](auto a, auto b) { return a.first > b.first; });
  return sims;
}

// The score of the header's formula for every held document, by brute
// force: every query token's similarity with every centroid, its probe
// best, and each document's best held one among them.
std::map<Label, double> OracleScores(const std::map<Label, Held>& docs, const float* centroids,
                                     uint32_t num, uint32_t dim, const float* q, const float* w,
                                     uint32_t m, uint32_t probe, float gain_max) {
  auto gain = [&](uint8_t j) { return gain_max > 0.f ? double(gain_max) * j / 256.0 : 1.0; };
  // ḡ over each document's distinct centroids (their largest gain).
  double gain_sum = 0;
  size_t entries = 0;
  std::map<Label, std::map<uint32_t, uint8_t>> sets;
  for (const auto& [label, h] : docs) {
    const auto& set = sets[label] = HeldSet(h);
    for (const auto& [c, j] : set) gain_sum += gain(j);
    entries += set.size();
  }
  const double mean_gain = entries > 0 ? gain_sum / double(entries) : 1.0;
  std::map<Label, double> score;
  for (const auto& [label, set] : sets) score[label] = 0;
  for (uint32_t i = 0; i < m; ++i) {
    const auto sims = SortedSims(q + size_t(i) * dim, centroids, num, dim);
    const double floor = mean_gain * sims[probe - 1].first;
    for (const auto& [label, set] : sets) {
      double best = floor;
      for (uint32_t r = 0; r < probe; ++r) {
        auto it = set.find(sims[r].second);
        if (it != set.end()) best = std::max(best, gain(it->second) * sims[r].first);
      }
      score[label] += w[i] * best;
    }
  }
  return score;
}

// `n` random documents of 1-12 tokens on `num` centroids added to *cc,
// then enough removals to pass the sweep threshold (every other one), slots
// reused (n / 4 more, taking freed slots from the top half down, so that
// lists gain entries in their middle) and replacements; returns what *cc holds (gains 255
// without a gain byte).
std::map<Label, Held> HoldWithChurn(CentroidCandidates* cc, uint32_t num, float gain_max,
                                    std::mt19937* rng, Label n = 3000) {
  std::uniform_int_distribution<uint32_t> id(0, num - 1), len(1, 12), gain(0, 255);
  std::map<Label, Held> docs;
  auto put = [&](Label label) {
    Held h;
    const uint32_t n = len(*rng);
    for (uint32_t t = 0; t < n; ++t) {
      h.ids.push_back(id(*rng));
      h.gains.push_back(uint8_t(gain(*rng)));
    }
    EXPECT_TRUE(cc->Add(label, h.ids.data(), gain_max > 0.f ? h.gains.data() : nullptr, n).ok());
    if (gain_max == 0.f) std::fill(h.gains.begin(), h.gains.end(), 255);
    docs[label] = h;
  };
  for (Label l = 1; l <= n; ++l) put(l);
  for (Label l = 1; l <= n; l += 2) {
    cc->Remove(l);
    docs.erase(l);
  }
  for (Label l = n + 1000; l < n + 1000 + n / 4; ++l) put(l);
  for (Label l = 2; l <= 200; l += 2) put(l);  // replaced
  return docs;
}

// A similarities hook by plain dot products with the centroids (rows of
// dim values), centroid by centroid.
std::function<absl::Status(const float*, uint32_t, float*)> DotHook(
    const std::vector<float>& centroids, uint32_t dim) {
  return [&centroids, dim](const float* q, uint32_t m, float* out) {
    const size_t num = centroids.size() / dim;
    for (uint32_t i = 0; i < m; ++i) {
      for (size_t c = 0; c < num; ++c) {
        out[c * m + i] = Dot(q + size_t(i) * dim, centroids.data() + c * dim, dim);
      }
    }
    return absl::OkStatus();
  };
}

class CentroidOracleTest : public ::testing::TestWithParam<float> {};

TEST_P(CentroidOracleTest, ScoresAndOrderMatchBruteForce) {
  const float gain_max = GetParam();
  constexpr uint32_t kDim = 32, kNum = 40, kProbe = 5, kM = 6;
  std::mt19937 rng(7);
  const std::vector<float> centroids = UnitRows(kNum, kDim, &rng);
  auto made = CentroidCandidates::Create(centroids.data(), kNum, kDim,
                                         {.probe = kProbe, .gain_max = gain_max});
  ASSERT_TRUE(made.ok()) << made.status();
  CentroidCandidates& cc = **made;
  // Enough documents for the walk's blocks of slots to be several.
  const std::map<Label, Held> docs = HoldWithChurn(&cc, kNum, gain_max, &rng, 20000);
  ASSERT_EQ(cc.size(), docs.size());

  for (int round = 0; round < 5; ++round) {
    const std::vector<float> q = UnitRows(kM, kDim, &rng);
    std::vector<float> w(kM);
    for (float& x : w) x = std::uniform_real_distribution<float>(0.1f, 1.f)(rng);
    const std::map<Label, double> oracle =
        OracleScores(docs, centroids.data(), kNum, kDim, q.data(), w.data(), kM, kProbe, gain_max);
    // Every document asked for: each one's score, and the order.
    std::vector<AnnNeighbor> all;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), kM, docs.size() + 10, {}, {}, &all).ok());
    ASSERT_EQ(all.size(), docs.size());
    std::set<Label> seen;
    for (size_t r = 0; r < all.size(); ++r) {
      ASSERT_TRUE(oracle.contains(all[r].label)) << all[r].label;
      EXPECT_TRUE(seen.insert(all[r].label).second);
      EXPECT_NEAR(all[r].score, oracle.at(all[r].label), 1e-4) << all[r].label;
      if (r > 0) EXPECT_GE(all[r - 1].score, all[r].score - 1e-5f);
    }
    // A filter admits only the labels divisible by 3, and k cuts.
    std::vector<AnnNeighbor> some;
    const LabelFilter third = [](Label l) { return l % 3 == 0; };
    ASSERT_TRUE(cc.Search(q.data(), w.data(), kM, 25, {.probe = kProbe}, third, &some).ok());
    ASSERT_EQ(some.size(), 25u);
    std::vector<double> admitted;
    for (const auto& [label, s] : oracle) {
      if (label % 3 == 0) admitted.push_back(s);
    }
    std::sort(admitted.rbegin(), admitted.rend());
    for (size_t r = 0; r < some.size(); ++r) {
      EXPECT_EQ(some[r].label % 3, 0u);
      EXPECT_NEAR(some[r].score, admitted[r], 1e-4);
    }
  }
}

// The walk goes a block of slots at a time, each list from where it
// stopped, so a list must stay sorted by slot when a freed slot is reused:
// the documents in the first 16,384 slots hold centroid 1 and all hold
// centroid 0, so list 1 ends two blocks before list 0, and reused slots
// join both.
TEST(CentroidCandidatesTest, ReusedSlotsKeepTheListsInOrder) {
  constexpr uint32_t kDim = 8, kNum = 4, kM = 3;
  std::mt19937 rng(9);
  const std::vector<float> centroids = UnitRows(kNum, kDim, &rng);
  auto made = CentroidCandidates::Create(centroids.data(), kNum, kDim, {.probe = kNum});
  ASSERT_TRUE(made.ok()) << made.status();
  CentroidCandidates& cc = **made;
  std::map<Label, Held> docs;
  auto put = [&](Label label, std::vector<uint32_t> ids) {
    ASSERT_TRUE(cc.Add(label, ids.data(), nullptr, ids.size()).ok());
    docs[label] = {ids, std::vector<uint8_t>(ids.size(), 255)};
  };
  for (Label l = 0; l < 20000; ++l) {
    put(l, l < 16384 ? std::vector<uint32_t>{0, 1} : std::vector<uint32_t>{0, 2 + uint32_t(l % 2)});
  }
  // Freed by sweeps, reused from the highest down: below 16,384, so that
  // list 1 (ending at 16,383) and list 0 (at 19,999) gain the same slots.
  for (Label l = 0; l < 16384; l += 2) {
    cc.Remove(l);
    docs.erase(l);
  }
  for (Label l = 30000; l < 36000; ++l) put(l, {0, 1});
  ASSERT_EQ(cc.size(), docs.size());
  for (int round = 0; round < 3; ++round) {
    const std::vector<float> q = UnitRows(kM, kDim, &rng);
    const std::vector<float> w(kM, 1.f);
    const std::map<Label, double> oracle =
        OracleScores(docs, centroids.data(), kNum, kDim, q.data(), w.data(), kM, kNum, 0.f);
    std::vector<AnnNeighbor> all;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), kM, docs.size(), {}, {}, &all).ok());
    ASSERT_EQ(all.size(), docs.size());
    int wrong = 0;
    for (const AnnNeighbor& n : all) wrong += std::abs(n.score - oracle.at(n.label)) > 1e-4;
    EXPECT_EQ(wrong, 0);
  }
}

// The refined score of every held document, by brute force: Σ_i w_i ·
// max over the document's centroids c of g(c) · s_ic, g(c) the largest
// gain among its tokens on c.
std::map<Label, double> RefinedOracle(const std::map<Label, Held>& docs, const float* centroids,
                                      uint32_t dim, const float* q, const float* w, uint32_t m,
                                      float gain_max) {
  auto gain = [&](uint8_t j) { return gain_max > 0.f ? double(gain_max) * j / 256.0 : 1.0; };
  std::map<Label, double> score;
  for (const auto& [label, h] : docs) {
    const std::map<uint32_t, uint8_t> set = HeldSet(h);
    double total = 0;
    for (uint32_t i = 0; i < m; ++i) {
      double best = -1e30;
      for (const auto& [c, j] : set) {
        double s = 0;
        for (uint32_t x = 0; x < dim; ++x) {
          s += double(q[size_t(i) * dim + x]) * centroids[size_t(c) * dim + x];
        }
        best = std::max(best, gain(j) * s);
      }
      total += w[i] * best;
    }
    score[label] = total;
  }
  return score;
}

// The gathering's score of every held document, by brute force: Σ over the
// document's probed centroids c of g(c) · u_c, u_c = Σ w_i · s_ic over the
// tokens i whose `probe` nearest include c, only where u_c > 0.
std::map<Label, double> GatherOracle(const std::map<Label, Held>& docs, const float* centroids,
                                     uint32_t num, uint32_t dim, const float* q, const float* w,
                                     uint32_t m, uint32_t probe, float gain_max) {
  auto gain = [&](uint8_t j) { return gain_max > 0.f ? double(gain_max) * j / 256.0 : 1.0; };
  std::vector<double> u(num, 0.0);
  for (uint32_t i = 0; i < m; ++i) {
    const auto sims = SortedSims(q + size_t(i) * dim, centroids, num, dim);
    for (uint32_t r = 0; r < probe; ++r) u[sims[r].second] += w[i] * sims[r].first;
  }
  std::map<Label, double> score;
  for (const auto& [label, h] : docs) {
    const std::map<uint32_t, uint8_t> set = HeldSet(h);
    double total = 0;
    for (const auto& [c, j] : set) {
      if (u[c] > 0) total += gain(j) * u[c];
    }
    score[label] = total;
  }
  return score;
}

// With refine, the gathering's best max(refine, k) documents come first,
// by their score over every centroid they hold; the rest follow in the
// gathering's order. Through deletes, replacements and sweeps (which
// compact the per-document tables the refining reads). refine=0: the
// walk's order and scores.
TEST_P(CentroidOracleTest, RefinedScoresMatchBruteForce) {
  const float gain_max = GetParam();
  constexpr uint32_t kDim = 32, kNum = 40, kProbe = 5, kRefine = 30;
  std::mt19937 rng(8);
  const std::vector<float> centroids = UnitRows(kNum, kDim, &rng);
  CentroidCandidatesOptions o{.probe = kProbe, .gain_max = gain_max, .refine = kRefine};
  o.similarities = DotHook(centroids, kDim);
  auto made = CentroidCandidates::Create(centroids.data(), kNum, kDim, o);
  ASSERT_TRUE(made.ok()) << made.status();
  CentroidCandidates& cc = **made;
  const std::map<Label, Held> docs = HoldWithChurn(&cc, kNum, gain_max, &rng);
  ASSERT_EQ(cc.size(), docs.size());

  // Documents holding the same centroids tie; the checks compare scores,
  // and skip a query whose gathering ties across a refining cut. Refined
  // scores come from similarities held as halves: within Σ w_i · g_max ·
  // 2^-11 of the exact ones (unit vectors).
  const double per_token = std::max(1.0, double(gain_max)) * std::ldexp(1.0, -11);
  int checked = 0;
  for (int round = 0; round < 12; ++round) {
    // 6 tokens (one block of 16 with 10 padded), or 21 (a second block).
    const uint32_t m = round % 2 == 0 ? 6 : 21;
    const double tol = m * per_token;
    const std::vector<float> q = UnitRows(m, kDim, &rng);
    std::vector<float> w(m);
    for (float& x : w) x = std::uniform_real_distribution<float>(0.1f, 1.f)(rng);
    const std::map<Label, double> walk =
        OracleScores(docs, centroids.data(), kNum, kDim, q.data(), w.data(), m, kProbe, gain_max);
    const std::map<Label, double> refined =
        RefinedOracle(docs, centroids.data(), kDim, q.data(), w.data(), m, gain_max);
    const std::map<Label, double> gathered =
        GatherOracle(docs, centroids.data(), kNum, kDim, q.data(), w.data(), m, kProbe, gain_max);
    std::vector<std::pair<double, Label>> by_walk, by_gather;
    for (const auto& [label, s] : walk) by_walk.push_back({s, label});
    for (const auto& [label, s] : gathered) by_gather.push_back({s, label});
    std::sort(by_walk.rbegin(), by_walk.rend());
    std::sort(by_gather.rbegin(), by_gather.rend());
    const auto tied_at = [&](size_t n) {
      return by_gather[n - 1].first - by_gather[n].first < 1e-5 || by_gather[n].first <= 0;
    };
    if (tied_at(kRefine) || tied_at(kRefine + 20)) continue;
    ++checked;
    // The gathering's best n, by their refined scores.
    const auto refined_best = [&](size_t n) {
      std::vector<double> r;
      for (size_t i = 0; i < n; ++i) r.push_back(refined.at(by_gather[i].second));
      std::sort(r.rbegin(), r.rend());
      return r;
    };
    // k = 10 below refine: the gathering's best kRefine are refined.
    const std::vector<double> want = refined_best(kRefine);
    std::vector<AnnNeighbor> got;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), m, 10, {}, {}, &got).ok());
    ASSERT_EQ(got.size(), 10u);
    for (size_t r = 0; r < got.size(); ++r) {
      EXPECT_NEAR(got[r].score, want[r], tol) << "rank " << r;
      EXPECT_NEAR(got[r].score, refined.at(got[r].label), tol) << "rank " << r;
      EXPECT_GE(gathered.at(got[r].label), by_gather[kRefine - 1].first - 1e-5) << "rank " << r;
    }
    // k above refine: the gathering's best k are refined.
    const std::vector<double> want_more = refined_best(kRefine + 20);
    std::vector<AnnNeighbor> more;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), m, kRefine + 20, {}, {}, &more).ok());
    ASSERT_EQ(more.size(), size_t(kRefine + 20));
    for (size_t r = 0; r < more.size(); ++r) {
      EXPECT_NEAR(more[r].score, want_more[r], tol) << "rank " << r;
      EXPECT_NEAR(more[r].score, refined.at(more[r].label), tol) << "rank " << r;
    }
    // A pool of 12 (its threshold then comes from the pool's second-level
    // maxima, of which there are more than 12).
    if (!tied_at(12)) {
      const std::vector<double> want_few = refined_best(12);
      std::vector<AnnNeighbor> few;
      ASSERT_TRUE(cc.Search(q.data(), w.data(), m, 10, {.refine = 12}, {}, &few).ok());
      ASSERT_EQ(few.size(), 10u);
      for (size_t r = 0; r < few.size(); ++r) {
        EXPECT_NEAR(few[r].score, want_few[r], tol) << "rank " << r;
        EXPECT_GE(gathered.at(few[r].label), by_gather[11].first - 1e-5) << "rank " << r;
      }
    }
    // A filter that admits only 5 of the refined documents: the rest follow
    // in the gathering's order, scored at most the last refined score.
    std::set<Label> first_five;
    for (size_t r = 0; r < 5; ++r) first_five.insert(by_gather[r].second);
    const double cut = by_gather[kRefine - 1].first;
    const LabelFilter late = [&](Label l) {
      return gathered.at(l) < cut - 1e-5 || first_five.contains(l);
    };
    std::vector<AnnNeighbor> filtered;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), m, 10, {}, late, &filtered).ok());
    ASSERT_EQ(filtered.size(), 10u);
    for (size_t r = 0; r < 5; ++r) EXPECT_TRUE(first_five.contains(filtered[r].label));
    for (size_t r = 5; r < filtered.size(); ++r) {
      EXPECT_NEAR(gathered.at(filtered[r].label), by_gather[kRefine + r - 5].first, 1e-4)
          << "rank " << r;
      EXPECT_LE(filtered[r].score, filtered[4].score);
    }
    // refine=0 in the knobs: the walk's order and scores alone.
    std::vector<AnnNeighbor> plain;
    ASSERT_TRUE(cc.Search(q.data(), w.data(), m, 10, {.refine = 0}, {}, &plain).ok());
    for (size_t r = 0; r < plain.size(); ++r) {
      EXPECT_NEAR(plain[r].score, by_walk[r].first, 1e-4) << "rank " << r;
      EXPECT_NEAR(walk.at(plain[r].label), by_walk[r].first, 1e-4) << "rank " << r;
    }
  }
  EXPECT_GE(checked, 4);
}

INSTANTIATE_TEST_SUITE_P(Gains, CentroidOracleTest, ::testing::Values(0.f, 1.5f));

// The similarities hook (every token's products at once, then each
// token's best selected) gives what the exact centroid search gives. 3,000
// centroids with probe 9 take the selection's second level of maxima (188
// first maxima, 24 second ones); probe 30 and 300 centroids the first; 100
// centroids (7 groups) with probe 9 no threshold.
TEST(CentroidCandidatesTest, SimilaritiesHookMatchesTheSearch) {
  constexpr uint32_t kDim = 16, kM = 7;
  for (const auto& [num, probe] : {std::pair{300u, 9u}, {3000u, 9u}, {3000u, 30u}, {100u, 9u}}) {
    SCOPED_TRACE(::testing::Message() << num << " centroids, probe " << probe);
    std::mt19937 rng(11);
    const std::vector<float> centroids = UnitRows(num, kDim, &rng);
    CentroidCandidatesOptions searched{.probe = probe, .exact_below = 100000};
    CentroidCandidatesOptions hooked = searched;
    hooked.similarities = DotHook(centroids, kDim);
    auto a = CentroidCandidates::Create(centroids.data(), num, kDim, searched);
    auto b = CentroidCandidates::Create(centroids.data(), num, kDim, hooked);
    ASSERT_TRUE(a.ok() && b.ok());
    std::uniform_int_distribution<uint32_t> id(0, num - 1);
    for (Label l = 0; l < 500; ++l) {
      std::vector<uint32_t> ids(1 + l % 9);
      for (uint32_t& x : ids) x = id(rng);
      ASSERT_TRUE((*a)->Add(l, ids.data(), nullptr, ids.size()).ok());
      ASSERT_TRUE((*b)->Add(l, ids.data(), nullptr, ids.size()).ok());
    }
    for (int round = 0; round < 5; ++round) {
      const std::vector<float> q = UnitRows(kM, kDim, &rng);
      std::vector<AnnNeighbor> x, y;
      ASSERT_TRUE((*a)->Search(q.data(), nullptr, kM, 60, {}, {}, &x).ok());
      ASSERT_TRUE((*b)->Search(q.data(), nullptr, kM, 60, {}, {}, &y).ok());
      ASSERT_EQ(x.size(), y.size());
      for (size_t r = 0; r < x.size(); ++r) {
        EXPECT_NEAR(x[r].score, y[r].score, 1e-4) << r;
      }
    }
  }
}

// The refining takes only documents the gathering reached, even when
// `refine` allows more: a one-token query that is centroid 3 probes it and
// its nearest other centroid, whose similarity s2 is the floor. The 8
// documents holding either come first with their refined scores (1 or s2);
// the other 56 follow at the floor, not at their own (lower) similarities.
TEST(CentroidCandidatesTest, RefinesOnlyTheGatheredDocuments) {
  constexpr uint32_t kDim = 16, kNum = 16;
  std::mt19937 rng(12);
  const std::vector<float> centroids = UnitRows(kNum, kDim, &rng);
  CentroidCandidatesOptions o{.probe = 2, .refine = 50};
  o.similarities = DotHook(centroids, kDim);
  auto made = CentroidCandidates::Create(centroids.data(), kNum, kDim, o);
  ASSERT_TRUE(made.ok()) << made.status();
  for (Label l = 0; l < 64; ++l) {
    const uint32_t id = uint32_t(l % kNum);
    ASSERT_TRUE((*made)->Add(l, &id, nullptr, 1).ok());
  }
  const float* q = centroids.data() + 3 * kDim;
  const auto sims = SortedSims(q, centroids.data(), kNum, kDim);
  ASSERT_EQ(sims[0].second, 3u);
  const uint32_t second = sims[1].second;
  const double s2 = sims[1].first;
  ASSERT_GT(s2, 0.0);
  ASSERT_GT(s2 - sims[2].first, 0.01);  // the others lie clearly below the floor
  std::vector<AnnNeighbor> got;
  ASSERT_TRUE((*made)->Search(q, nullptr, 1, 64, {}, {}, &got).ok());
  ASSERT_EQ(got.size(), 64u);
  const double tol = std::ldexp(1.0, -10);
  for (size_t r = 0; r < got.size(); ++r) {
    const uint32_t c = uint32_t(got[r].label % kNum);
    if (r < 8) {
      EXPECT_TRUE(c == 3 || c == second) << "rank " << r;
      EXPECT_NEAR(got[r].score, c == 3 ? 1.0 : s2, tol) << "rank " << r;
    } else {
      EXPECT_TRUE(c != 3 && c != second) << "rank " << r;
      EXPECT_NEAR(got[r].score, s2, tol) << "rank " << r;
    }
  }
}

TEST(CentroidCandidatesTest, RefusesBadInput) {
  std::mt19937 rng(1);
  const std::vector<float> centroids = UnitRows(8, 16, &rng);
  EXPECT_EQ(CentroidCandidates::Create(centroids.data(), 8, 16, {.probe = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CentroidCandidates::Create(centroids.data(), 0, 16, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto cc = CentroidCandidates::Create(centroids.data(), 8, 16, {});
  ASSERT_TRUE(cc.ok());
  const uint32_t ids[] = {1, 9};
  const absl::Status s = (*cc)->Add(5, ids, nullptr, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token 1"), std::string::npos) << s;
  EXPECT_EQ((*cc)->size(), 0u);  // nothing held
  std::vector<float> q(16, 0.f);
  q[3] = NAN;
  std::vector<AnnNeighbor> out;
  EXPECT_EQ((*cc)->Search(q.data(), nullptr, 1, 10, {}, {}, &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*cc)->Search(q.data(), nullptr, 0, 10, {}, {}, &out).code(),
            absl::StatusCode::kInvalidArgument);
}

// Clustered multi-vector documents: each document mixes a few topics, each
// topic a handful of token clusters; a query is a noisy sample of one
// document's tokens. The exhaustive top 10 is the reference reranker's
// (ATTENTION, τ = 0.1, over the stored f32 tokens); the first stage sees
// only the 2-bit codes' centroids and gains.
TEST(FdeTest, SameSeedSameEncodings) {
  std::mt19937 rng(3);
  const std::vector<float> x = UnitRows(37, 48, &rng);
  std::vector<float> w(37, 0.5f);
  auto a = FdeEncoder::Create(48, {.final_dim = 256, .seed = 9});
  auto b = FdeEncoder::Create(48, {.final_dim = 256, .seed = 9});
  auto c = FdeEncoder::Create(48, {.final_dim = 256, .seed = 10});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  std::vector<float> da(256), db(256), dc(256), qa(256), qb(256);
  (*a)->EncodeDocument(x.data(), 37, da.data());
  (*b)->EncodeDocument(x.data(), 37, db.data());
  (*c)->EncodeDocument(x.data(), 37, dc.data());
  (*a)->EncodeQuery(x.data(), w.data(), 37, qa.data());
  (*b)->EncodeQuery(x.data(), w.data(), 37, qb.data());
  EXPECT_EQ(da, db);
  EXPECT_EQ(qa, qb);
  EXPECT_NE(da, dc);
}

// With one partition, no projection and no sketch, an encoding is the
// weighted sum (query) or the mean (document) of the tokens, repeated.
TEST(FdeTest, OnePartitionIsPooling) {
  constexpr uint32_t kDim = 24;
  std::mt19937 rng(5);
  const std::vector<float> q = UnitRows(5, kDim, &rng), d = UnitRows(9, kDim, &rng);
  const std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  auto e = FdeEncoder::Create(
      kDim, {.repetitions = 3, .simhash_bits = 0, .projection_dim = 0, .final_dim = 0});
  ASSERT_TRUE(e.ok());
  ASSERT_EQ((*e)->output_dim(), 3 * kDim);
  std::vector<float> qe(3 * kDim), de(3 * kDim);
  (*e)->EncodeQuery(q.data(), w.data(), 5, qe.data());
  (*e)->EncodeDocument(d.data(), 9, de.data());
  for (uint32_t r = 0; r < 3; ++r) {
    for (uint32_t t = 0; t < kDim; ++t) {
      float sum = 0.f, mean = 0.f;
      for (int i = 0; i < 5; ++i) sum += w[i] * q[i * kDim + t];
      for (int j = 0; j < 9; ++j) mean += d[j * kDim + t] / 9.f;
      EXPECT_NEAR(qe[r * kDim + t], sum, 1e-5f);
      EXPECT_NEAR(de[r * kDim + t], mean, 1e-5f);
    }
  }
}

TEST(FdeTest, RefusesBadOptions) {
  EXPECT_EQ(FdeEncoder::Create(0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad = FdeEncoder::Create(16, {.repetitions = 0});
  EXPECT_NE(bad.status().message().find("repetitions"), std::string::npos) << bad.status();
  bad = FdeEncoder::Create(16, {.simhash_bits = 9});
  EXPECT_NE(bad.status().message().find("simhash_bits"), std::string::npos) << bad.status();
  bad = FdeEncoder::Create(16, {.projection_dim = 17});
  EXPECT_NE(bad.status().message().find("projection_dim"), std::string::npos) << bad.status();
}

TEST(CentroidCandidatesTest, RecallsTheExhaustiveTopTen) {
  constexpr uint32_t kDim = 64, kDocs = 3000, kQueries = 30, kM = 16, kTopics = 20;
  constexpr uint32_t kClustersPerTopic = 6;
  std::mt19937 rng(42);
  const std::vector<float> centres = UnitRows(kTopics * kClustersPerTopic, kDim, &rng);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_int_distribution<uint32_t> topic(0, kTopics - 1), cluster(0, kClustersPerTopic - 1),
      len(20, 80);
  auto token_near = [&](uint32_t t, float* x, float spread) {
    const float* c = centres.data() + size_t(t * kClustersPerTopic + cluster(rng)) * kDim;
    for (uint32_t d = 0; d < kDim; ++d) x[d] = c[d] + spread * g(rng) / std::sqrt(float(kDim));
    NormalizeInPlace(x, kDim);
  };
  std::vector<float> tokens;
  std::vector<uint32_t> rows, offsets;
  std::vector<std::vector<uint32_t>> doc_topics(kDocs);
  for (uint32_t d = 0; d < kDocs; ++d) {
    for (int t = 0; t < 3; ++t) doc_topics[d].push_back(topic(rng));
    const uint32_t n = len(rng);
    offsets.push_back(uint32_t(tokens.size() / kDim));
    rows.push_back(n);
    tokens.resize(tokens.size() + size_t(n) * kDim);
    for (uint32_t j = 0; j < n; ++j) {
      token_near(doc_topics[d][j % 3], tokens.data() + tokens.size() - size_t(n - j) * kDim, 0.8f);
    }
  }
  const size_t total = tokens.size() / kDim;
  ResidualCodecOptions co;
  co.bits = 2;
  co.gain = true;
  auto codec = ResidualCodec::Train(tokens.data(), total, kDim, co);
  ASSERT_TRUE(codec.ok()) << codec.status();
  std::vector<uint8_t> codes(total * (*codec)->code_bytes());
  (*codec)->Encode(tokens.data(), total, codes.data());
  auto made = CentroidCandidates::Create((*codec)->centroids().data(), (*codec)->num_centroids(),
                                         kDim, {.gain_max = (*codec)->gain_max()});
  ASSERT_TRUE(made.ok()) << made.status();
  for (uint32_t d = 0; d < kDocs; ++d) {
    std::vector<uint32_t> ids(rows[d]);
    std::vector<uint8_t> gains(rows[d]);
    for (uint32_t j = 0; j < rows[d]; ++j) {
      const uint8_t* code = codes.data() + (size_t(offsets[d]) + j) * (*codec)->code_bytes();
      ids[j] = (*codec)->CentroidOf(code);
      gains[j] = code[(*codec)->id_bytes()];
    }
    ASSERT_TRUE((*made)->Add(d, ids.data(), gains.data(), rows[d]).ok());
  }
  // The pooled baseline: each document's mean token, normalised.
  auto pool = [&](const float* x, uint32_t n) {
    std::vector<float> p(kDim, 0.f);
    for (uint32_t j = 0; j < n; ++j) {
      for (uint32_t d = 0; d < kDim; ++d) p[d] += x[size_t(j) * kDim + d];
    }
    NormalizeInPlace(p.data(), kDim);
    return p;
  };
  std::vector<std::vector<float>> pooled(kDocs);
  for (uint32_t d = 0; d < kDocs; ++d)
    pooled[d] = pool(tokens.data() + size_t(offsets[d]) * kDim, rows[d]);
  auto fde = FdeEncoder::Create(kDim, {});
  ASSERT_TRUE(fde.ok()) << fde.status();
  const uint32_t fd = (*fde)->output_dim();
  std::vector<float> doc_fde(size_t(kDocs) * fd);
  for (uint32_t d = 0; d < kDocs; ++d) {
    (*fde)->EncodeDocument(tokens.data() + size_t(offsets[d]) * kDim, rows[d],
                           doc_fde.data() + size_t(d) * fd);
  }
  std::uniform_int_distribution<uint32_t> pick(0, kDocs - 1);
  const std::vector<float> w(kM, 1.f / kM);
  double recall = 0, pooled_recall = 0, fde_recall = 0;
  for (uint32_t qi = 0; qi < kQueries; ++qi) {
    const uint32_t source = pick(rng);
    std::vector<float> q(size_t(kM) * kDim);
    for (uint32_t i = 0; i < kM; ++i)
      token_near(doc_topics[source][i % 3], q.data() + i * kDim, 0.8f);
    std::vector<std::pair<double, uint32_t>> exact(kDocs);
    for (uint32_t d = 0; d < kDocs; ++d) {
      exact[d] = {ReferenceScore(q.data(), kM, w.data(), tokens.data() + size_t(offsets[d]) * kDim,
                                 rows[d], kDim, RerankMode::kAttention, 0.1f),
                  d};
    }
    std::partial_sort(exact.begin(), exact.begin() + 10, exact.end(),
                      [](auto a, auto b) { return a.first > b.first; });
    std::vector<AnnNeighbor> cand;
    ASSERT_TRUE((*made)->Search(q.data(), w.data(), kM, 100, {}, {}, &cand).ok());
    std::set<Label> got;
    for (const AnnNeighbor& n : cand) got.insert(n.label);
    for (int r = 0; r < 10; ++r) recall += got.contains(exact[r].second) ? 0.1 : 0.0;
    // The exact top 100 by pooled vectors.
    const std::vector<float> qp = pool(q.data(), kM);
    std::vector<std::pair<float, uint32_t>> by_pool(kDocs);
    for (uint32_t d = 0; d < kDocs; ++d) {
      by_pool[d] = {Dot(qp.data(), pooled[d].data(), kDim), d};
    }
    std::partial_sort(by_pool.begin(), by_pool.begin() + 100, by_pool.end(),
                      [](auto a, auto b) { return a.first > b.first; });
    std::set<Label> pooled_got;
    for (int r = 0; r < 100; ++r) pooled_got.insert(by_pool[r].second);
    for (int r = 0; r < 10; ++r) pooled_recall += pooled_got.contains(exact[r].second) ? 0.1 : 0.0;
    // The exact top 100 by encodings.
    std::vector<float> q_fde(fd);
    (*fde)->EncodeQuery(q.data(), w.data(), kM, q_fde.data());
    std::vector<std::pair<float, uint32_t>> by_fde(kDocs);
    for (uint32_t d = 0; d < kDocs; ++d) {
      by_fde[d] = {Dot(q_fde.data(), doc_fde.data() + size_t(d) * fd, fd), d};
    }
    std::partial_sort(by_fde.begin(), by_fde.begin() + 100, by_fde.end(),
                      [](auto a, auto b) { return a.first > b.first; });
    std::set<Label> fde_got;
    for (int r = 0; r < 100; ++r) fde_got.insert(by_fde[r].second);
    for (int r = 0; r < 10; ++r) fde_recall += fde_got.contains(exact[r].second) ? 0.1 : 0.0;
  }
  recall /= kQueries;
  pooled_recall /= kQueries;
  fde_recall /= kQueries;
  std::printf(
      "recall of the exhaustive top 10 in 100 candidates of %u: centroids %.3f, fde "
      "(exact, %u values) %.3f, pooled (exact) %.3f\n",
      kDocs, recall, fd, fde_recall, pooled_recall);
  EXPECT_GE(recall, 0.98);
  EXPECT_GE(recall, pooled_recall);
  EXPECT_GE(fde_recall, 0.8);
  EXPECT_GE(fde_recall, pooled_recall);
}

}  // namespace
}  // namespace attnsearch
