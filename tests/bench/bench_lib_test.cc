// attn_bench_lib: percentiles, recall, the exact top-k oracle, the synthetic
// generator and the SVG writer. Nothing here is timed.
#include <cmath>
#include <string>
#include <vector>

#include "dataset.h"
#include "gtest/gtest.h"
#include "report.h"
#include "svg.h"

namespace attnsearch::bench {
namespace {

TEST(PercentileTest, NearestRankOnHandComputedValues) {
  // Sorted: 1 2 3 4 5 6 7 8 9 10.
  const std::vector<double> v = {7, 1, 10, 3, 5, 2, 9, 4, 8, 6};
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile(v, 10), 1);   // ceil(1.0) = rank 1
  EXPECT_EQ(Percentile(v, 11), 2);   // ceil(1.1) = rank 2
  EXPECT_EQ(Percentile(v, 50), 5);   // rank 5
  EXPECT_EQ(Percentile(v, 95), 10);  // ceil(9.5) = rank 10
  EXPECT_EQ(Percentile(v, 90), 9);
  EXPECT_EQ(Percentile(v, 100), 10);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({42}, 99), 42);
}

TEST(PercentileTest, SummaryOfHundredValues) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  const Summary s = Summarize(v);
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_EQ(s.p50, 50);
  EXPECT_EQ(s.p95, 95);
  EXPECT_EQ(s.p99, 99);
  EXPECT_EQ(s.max, 100);
}

TEST(RecallTest, HandComputed) {
  const std::vector<int64_t> exact = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(RecallAtK({1, 2, 3, 4}, exact, 4), 1.0);
  EXPECT_DOUBLE_EQ(RecallAtK({4, 3, 2, 1}, exact, 4), 1.0);  // order does not matter
  EXPECT_DOUBLE_EQ(RecallAtK({1, 9, 3, 8}, exact, 4), 0.5);
  EXPECT_DOUBLE_EQ(RecallAtK({1, 2}, exact, 4), 0.5);           // short result list
  EXPECT_DOUBLE_EQ(RecallAtK({-1, -1, 1, 1}, exact, 4), 0.25);  // no-result ids, duplicates
  EXPECT_DOUBLE_EQ(RecallAtK({2, 1, 7}, exact, 2), 1.0);        // only the first k count
  EXPECT_DOUBLE_EQ(RecallAtK({3, 1}, exact, 2), 0.5);
}

TEST(ExactTopKTest, MatchesHandComputedInnerProducts) {
  // Base rows (dim 2) and their dot products with q = (1, 0): 0, 1, -1, 0.5.
  const std::vector<float> base = {0, 1, 1, 0, -1, 0, 0.5f, 0.5f};
  const std::vector<float> q = {1, 0, 0, 1};  // second query (0, 1): 1, 0, 0, 0.5
  std::vector<std::vector<int64_t>> out;
  ExactTopK(base.data(), 4, q.data(), 2, 2, 3, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], (std::vector<int64_t>{1, 3, 0}));
  EXPECT_EQ(out[1], (std::vector<int64_t>{0, 3, 1}));  // tie 1/2 at 0 broken by id
}

TEST(SyntheticTest, DeterministicAndUnitNorm) {
  SyntheticOptions o;
  o.dim = 32;
  o.clusters = 5;
  o.tokens_min = 4;
  o.tokens_max = 40;
  SyntheticDataset a(o), b(o);
  std::vector<float> pa(32), pb(32), ta, tb;
  for (uint64_t i : {0ull, 1ull, 12345ull, 999999ull}) {
    a.Pooled(i, pa.data());
    b.Pooled(i, pb.data());
    EXPECT_EQ(pa, pb);
    double ss = 0;
    for (float x : pa) ss += double(x) * x;
    EXPECT_NEAR(ss, 1.0, 1e-5);
    const uint32_t n = a.Tokens(i, &ta);
    EXPECT_EQ(b.Tokens(i, &tb), n);
    EXPECT_EQ(ta, tb);
    EXPECT_GE(n, 4u);
    EXPECT_LE(n, 40u);
    for (uint32_t r = 0; r < n; ++r) {
      double s = 0;
      for (uint32_t j = 0; j < 32; ++j) s += double(ta[r * 32 + j]) * ta[r * 32 + j];
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
  // Streaming in blocks gives the same vectors as one at a time.
  std::vector<float> block(3 * 32);
  a.PooledBlock(10, 3, block.data());
  a.Pooled(11, pa.data());
  EXPECT_EQ(std::vector<float>(block.begin() + 32, block.begin() + 64), pa);
  // Another seed, other data.
  o.seed = 7;
  SyntheticDataset c(o);
  c.Pooled(0, pb.data());
  a.Pooled(0, pa.data());
  EXPECT_NE(pa, pb);
}

TEST(SyntheticTest, ClusteredDocumentsAreCloserToTheirOwnCluster) {
  SyntheticOptions o;
  o.dim = 64;
  o.clusters = 4;
  SyntheticDataset d(o);
  std::vector<float> x(64), y(64);
  double same = 0, other = 0;
  int ns = 0, no = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    for (uint64_t j = i + 1; j < 40; ++j) {
      d.Pooled(i, x.data());
      d.Pooled(j, y.data());
      double dot = 0;
      for (int k = 0; k < 64; ++k) dot += double(x[k]) * y[k];
      if (d.Cluster(i) == d.Cluster(j)) {
        same += dot;
        ++ns;
      } else {
        other += dot;
        ++no;
      }
    }
  }
  ASSERT_GT(ns, 0);
  ASSERT_GT(no, 0);
  EXPECT_GT(same / ns, other / no + 0.3);
}

TEST(SyntheticTest, TokenCountsSpanTheRange) {
  SyntheticOptions o;
  o.dim = 8;
  o.tokens_min = 32;
  o.tokens_max = 180;
  SyntheticDataset d(o);
  uint32_t lo = 1000, hi = 0;
  double log_sum = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    const uint32_t n = d.NumTokens(i);
    lo = std::min(lo, n);
    hi = std::max(hi, n);
    log_sum += std::log(double(n));
  }
  EXPECT_GE(lo, 32u);
  EXPECT_LE(hi, 180u);
  EXPECT_LT(lo, 45u);  // both tails reached
  EXPECT_GT(hi, 150u);
  EXPECT_NEAR(std::exp(log_sum / 2000), std::sqrt(32.0 * 180.0), 6.0);  // median ~ 76
}

// A minimal XML well-formedness check: one root, balanced tags, quoted
// attributes, no stray '<' or '&'.
bool WellFormed(const std::string& s, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0, roots = 0;
  while (i < s.size()) {
    if (s[i] == '<') {
      const size_t close = s.find('>', i);
      if (close == std::string::npos) return *why = "unclosed tag", false;
      std::string tag = s.substr(i + 1, close - i - 1);
      i = close + 1;
      if (tag.empty()) return *why = "empty tag", false;
      if (tag[0] == '?' || tag[0] == '!') continue;
      if (tag[0] == '/') {
        if (stack.empty() || stack.back() != tag.substr(1)) return *why = "mismatch " + tag, false;
        stack.pop_back();
        continue;
      }
      const bool self = tag.back() == '/';
      if (self) tag.pop_back();
      const std::string name = tag.substr(0, tag.find_first_of(" \n\t"));
      size_t quotes = 0;
      for (char c : tag) quotes += c == '"';
      if (quotes % 2) return *why = "odd quotes in " + name, false;
      if (tag.find('<') != std::string::npos) return *why = "'<' in tag", false;
      if (stack.empty()) ++roots;
      if (!self) stack.push_back(name);
    } else {
      if (s[i] == '&') {
        const size_t semi = s.find(';', i);
        if (semi == std::string::npos || semi - i > 6) return *why = "bare &", false;
      }
      ++i;
    }
  }
  if (!stack.empty()) return *why = "unclosed " + stack.back(), false;
  if (roots != 1) return *why = "roots: " + std::to_string(roots), false;
  return true;
}

TEST(SvgTest, LinePlotIsWellFormed) {
  LinePlot p;
  p.title = "recall <vs> QPS & \"more\"";
  p.x_label = "recall@10";
  p.y_label = "QPS";
  p.series.push_back({"HNSW32,Flat", {0.9, 0.95, 0.99}, {9000, 7000, 3000}, true});
  p.series.push_back({"with NaN", {0.5, std::nan(""), 0.7}, {1, 2, 3}, true});
  const std::string svg = RenderSvg(p);
  std::string why;
  EXPECT_TRUE(WellFormed(svg, &why)) << why;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("&lt;vs&gt; QPS &amp; &quot;more&quot;"), std::string::npos);
  EXPECT_NE(svg.find("HNSW32,Flat"), std::string::npos);
  EXPECT_EQ(svg.rfind("</svg>"), svg.size() - 7);
  p.log_x = true;
  EXPECT_TRUE(WellFormed(RenderSvg(p), &why)) << why;
  EXPECT_TRUE(WellFormed(RenderSvg(LinePlot{}), &why)) << why;  // no data at all
}

TEST(SvgTest, BarChartIsWellFormed) {
  BarChart c;
  c.title = "us/query";
  c.labels = {"ours", "matmul", "PyTorch"};
  c.values = {400, 260, 6500};
  const std::string svg = RenderSvg(c);
  std::string why;
  EXPECT_TRUE(WellFormed(svg, &why)) << why;
  size_t rects = 0;
  for (size_t p = svg.find("<rect"); p != std::string::npos; p = svg.find("<rect", p + 1)) ++rects;
  EXPECT_EQ(rects, 4u);  // background + 3 bars
}

TEST(SvgTest, NiceTicks) {
  EXPECT_EQ(NiceTicks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const std::vector<double> t = NiceTicks(0.91, 1.0, 4);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_NEAR(t[0], 0.95, 1e-12);
  EXPECT_NEAR(t[1], 1.0, 1e-12);
  EXPECT_EQ(NiceTicks(3, 3).size(), 1u);
}

}  // namespace
}  // namespace attnsearch::bench
