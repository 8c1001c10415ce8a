// Filters: equality postings and numeric ranges evaluated into one label
// set, checked against a brute-force oracle (exact inner product among the
// live documents that match), with deletes and overwrites mixed in; range
// edge cases; numeric field validation; numeric fields across a reopen.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 16;

CollectionConfig NumericConfig(const std::string& spec = "HNSW32,Flat") {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = spec;
  c.token_dtype = TokenDtype::kF32;
  c.numeric_fields = {"price", "year"};
  return c;
}

std::unique_ptr<Collection> MustCreate(const std::string& path, const CollectionConfig& config,
                                       const CollectionOptions& options = {}) {
  auto c = Collection::Create(path, config, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

// A document with one random unit pooled vector (it is also its one token).
Document PooledDoc(std::mt19937& rng, const std::string& id) {
  Document d;
  d.id = id;
  d.pooled = testing::RandomUnitRows(rng, 1, kDim);
  return d;
}

RangeCondition Range(const std::string& key, std::optional<double> gte, std::optional<double> gt,
                     std::optional<double> lte, std::optional<double> lt) {
  return RangeCondition{key, gte, gt, lte, lt};
}

// The oracle: what a filter admits, evaluated on a document's metadata.
bool Matches(const Document& d, const SearchQuery& q) {
  for (const auto& c : q.filter) {
    auto it = d.metadata.find(c.key);
    if (it == d.metadata.end()) return false;
    if (std::find(c.values.begin(), c.values.end(), it->second) == c.values.end()) return false;
  }
  for (const auto& r : q.ranges) {
    auto it = d.metadata.find(r.key);
    if (it == d.metadata.end()) return false;
    const double x = std::stod(it->second);
    if (r.gte && !(x >= *r.gte)) return false;
    if (r.gt && !(x > *r.gt)) return false;
    if (r.lte && !(x <= *r.lte)) return false;
    if (r.lt && !(x < *r.lt)) return false;
  }
  return true;
}

struct OracleHit {
  double score;
  std::string id;
};

// Exact top_k among the live documents that match, best first.
std::vector<OracleHit> Oracle(const std::map<std::string, Document>& live, const SearchQuery& q,
                              size_t top_k, size_t* matching = nullptr) {
  std::vector<OracleHit> all;
  for (const auto& [id, d] : live) {
    if (!Matches(d, q)) continue;
    double s = 0;
    for (uint32_t k = 0; k < kDim; ++k) s += double(d.pooled[k]) * q.pooled[k];
    all.push_back({s, id});
  }
  if (matching != nullptr) *matching = all.size();
  std::sort(all.begin(), all.end(),
            [](const OracleHit& a, const OracleHit& b) { return a.score > b.score; });
  if (all.size() > top_k) all.resize(top_k);
  return all;
}

// A seeded collection: tags of 10% each, a rare tag (~1%), prices uniform in
// [-1000, 1000) (missing on ~5%), years 1990..2029; then 10% deleted and 5%
// overwritten with new vectors and metadata. `live` is the oracle's copy.
void Populate(Collection* c, std::mt19937& rng, size_t n, std::map<std::string, Document>* live) {
  std::uniform_real_distribution<double> price(-1000, 1000);
  std::uniform_int_distribution<int> year(1990, 2029);
  auto make = [&](const std::string& id) {
    Document d = PooledDoc(rng, id);
    d.metadata["tag"] = absl::StrCat("t", rng() % 10);
    if (rng() % 100 == 0) d.metadata["rare"] = "yes";
    if (rng() % 20 != 0) d.metadata["price"] = absl::StrCat(price(rng));
    d.metadata["year"] = absl::StrCat(year(rng));
    return d;
  };
  std::vector<Document> batch;
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(make(absl::StrCat("d", i)));
    if (batch.size() == 2000 || i + 1 == n) {
      for (const auto& d : batch) (*live)[d.id] = d;
      ASSERT_TRUE(c->Upsert(std::move(batch)).ok());
      batch.clear();
    }
  }
  std::vector<std::string> doomed;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t r = rng() % 100;
    const std::string id = absl::StrCat("d", i);
    if (r < 10) {
      doomed.push_back(id);
      live->erase(id);
    } else if (r < 15) {
      batch.push_back(make(id));
      (*live)[id] = batch.back();
    }
  }
  ASSERT_TRUE(c->Delete(doomed).ok());
  ASSERT_TRUE(c->Upsert(std::move(batch)).ok());
}

std::vector<SearchQuery> FilterMenu() {
  std::vector<SearchQuery> menu;
  auto add = [&](std::vector<MetadataCondition> must, std::vector<RangeCondition> ranges) {
    SearchQuery q;
    q.filter = std::move(must);
    q.ranges = std::move(ranges);
    menu.push_back(std::move(q));
  };
  add({{"tag", {"t3"}}}, {});                                                       // ~10%
  add({{"tag", {"t1", "t2"}}}, {Range("price", {}, {}, {}, 0.0)});                  // ~10%
  add({{"rare", {"yes"}}}, {});                                                     // ~1%
  add({}, {Range("price", 0.0, {}, {}, 20.0)});                                     // ~1%
  add({}, {Range("price", {}, 500.0, 502.0, {})});                                  // ~0.1%
  add({{"tag", {"t5"}}}, {Range("year", 2010.0, {}, {}, 2012.0)});                  // ~0.5%
  add({}, {Range("price", {}, {}, {}, 800.0), Range("year", {}, {}, 2025.0, {})});  // ~80%
  add({}, {Range("price", {}, 2000.0, {}, {})});                                    // none
  add({{"tag", {"none"}}}, {});                                                     // none
  add({{"rare", {"yes"}}, {"tag", {"t0"}}}, {Range("price", 999.0, {}, {}, {})});   // ~none
  return menu;
}

// Checks `c` against the oracle for every filter of the menu: every hit
// matches and is live; with exact filter scans, the ids and scores equal the
// oracle's top_k.
void CheckAgainstOracle(const Collection& c, const std::map<std::string, Document>& live,
                        std::mt19937& rng, bool exact, int queries_per_filter) {
  size_t checked = 0, recalled = 0, wanted = 0;
  for (SearchQuery base : FilterMenu()) {
    for (int t = 0; t < queries_per_filter; ++t) {
      SearchQuery q = base;
      q.pooled = testing::RandomUnitRows(rng, 1, kDim);
      q.top_k = 10;
      q.candidates = 10;
      q.mode = RerankMode::kNone;
      q.include_metadata = true;
      size_t matching = 0;
      const std::vector<OracleHit> want = Oracle(live, q, q.top_k, &matching);
      auto r = c.Search(q);
      ASSERT_TRUE(r.ok()) << r.status();
      SCOPED_TRACE(absl::StrCat("filter ", checked, ", matching ", matching));
      for (const auto& h : r->hits) {
        auto it = live.find(h.id);
        ASSERT_NE(it, live.end()) << h.id << " is deleted";
        EXPECT_TRUE(Matches(it->second, q)) << h.id;
        EXPECT_EQ(h.metadata, it->second.metadata) << h.id << ": an older version";
      }
      if (exact) {
        ASSERT_EQ(r->hits.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_NEAR(r->hits[i].score, want[i].score, 1e-5);
          if (std::abs(r->hits[i].score - want[i].score) > 1e-5) continue;
          if (i + 1 < want.size() && want[i].score - want[i + 1].score < 1e-5) continue;
          EXPECT_EQ(r->hits[i].id, want[i].id) << "rank " << i;
        }
      } else {
        // top_k is filled whenever enough documents match.
        EXPECT_EQ(r->hits.size(), want.size());
        std::set<std::string> got;
        for (const auto& h : r->hits) got.insert(h.id);
        for (const auto& w : want) recalled += got.count(w.id);
        wanted += want.size();
      }
    }
    ++checked;
  }
  if (!exact && wanted > 0) {
    EXPECT_GE(double(recalled) / double(wanted), 0.9) << recalled << " of " << wanted;
  }
}

TEST(FilterTest, ExactFilterScansEqualTheOracle) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), NumericConfig());
  std::mt19937 rng(101);
  std::map<std::string, Document> live;
  Populate(c.get(), rng, 20000, &live);
  // Every filter of the menu admits at most 20000 labels: exact scans.
  CheckAgainstOracle(*c, live, rng, /*exact=*/true, 5);
}

TEST(FilterTest, GraphSearchWithWideFiltersStaysInsideTheFilter) {
  TempDir dir;
  CollectionOptions options;
  options.ann.exact_filter_max = 300;  // wider filters go through the graph
  auto c = MustCreate(dir.Sub("c"), NumericConfig(), options);
  std::mt19937 rng(102);
  std::map<std::string, Document> live;
  Populate(c.get(), rng, 20000, &live);
  CheckAgainstOracle(*c, live, rng, /*exact=*/false, 5);
}

TEST(FilterTest, FilteredRerankedHitsMatch) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), NumericConfig("Flat"));
  std::mt19937 rng(103);
  std::map<std::string, Document> live;
  Populate(c.get(), rng, 3000, &live);
  SearchQuery q;
  q.pooled = testing::RandomUnitRows(rng, 1, kDim);
  q.top_k = 5;
  q.ranges = {Range("price", -100.0, {}, {}, 100.0)};
  q.include_metadata = true;
  auto r = c->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hits.size(), 5u);
  for (const auto& h : r->hits) EXPECT_TRUE(Matches(live.at(h.id), q)) << h.id;
}

// The ids a filter admits, found with an exhaustive search.
std::set<std::string> Admitted(const Collection& c, std::vector<RangeCondition> ranges,
                               std::vector<MetadataCondition> must = {}) {
  SearchQuery q;
  q.pooled = std::vector<float>(kDim, 0.f);
  q.pooled[0] = 1.f;
  q.top_k = 100;
  q.candidates = 100;
  q.mode = RerankMode::kNone;
  q.ranges = std::move(ranges);
  q.filter = std::move(must);
  const std::vector<std::string> ids = testing::SearchIds(c, q);
  return std::set<std::string>(ids.begin(), ids.end());
}

TEST(FilterTest, RangeBoundsAndEdges) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), NumericConfig());
  std::mt19937 rng(104);
  const std::vector<std::pair<std::string, std::string>> prices = {
      {"neg5", "-5"},     {"neghalf", "-0.5"}, {"zero", "0"},  {"negzero", "-0"},
      {"one", "1"},       {"onehalf", "1.5"},  {"two", "2.0"}, {"thousand", "1e3"},
      {"tiny", "1e-300"}, {"plus", "+3"},
  };
  std::vector<Document> docs;
  for (const auto& [id, p] : prices) {
    Document d = PooledDoc(rng, id);
    d.metadata["price"] = p;
    docs.push_back(std::move(d));
  }
  docs.push_back(PooledDoc(rng, "noprice"));  // matches no range
  docs.back().metadata["other"] = "1";
  ASSERT_TRUE(c->Upsert(docs).ok());
  using S = std::set<std::string>;
  const std::optional<double> none;
  EXPECT_EQ(Admitted(*c, {Range("price", 1.0, none, none, none)}),
            (S{"one", "onehalf", "two", "thousand", "plus"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, 1.0, none, none)}),
            (S{"onehalf", "two", "thousand", "plus"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, none, 0.0, none)}),
            (S{"neg5", "neghalf", "zero", "negzero"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, none, none, 0.0)}), (S{"neg5", "neghalf"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, 0.0, none, none)}),
            (S{"tiny", "one", "onehalf", "two", "thousand", "plus"}));
  EXPECT_EQ(Admitted(*c, {Range("price", -5.0, none, none, -0.5)}), (S{"neg5"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, -5.0, -0.5, none)}), (S{"neghalf"}));
  EXPECT_EQ(Admitted(*c, {Range("price", 0.0, none, 0.0, none)}), (S{"zero", "negzero"}));
  EXPECT_EQ(Admitted(*c, {Range("price", 2.0, none, 2.0, none)}), (S{"two"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, 1.0, none, 1.0)}), S{});  // empty, not an error
  EXPECT_EQ(Admitted(*c, {Range("price", 1000.0, none, none, none)}), (S{"thousand"}));
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(Admitted(*c, {Range("price", -inf, none, none, none)}).size(), prices.size());
  EXPECT_EQ(Admitted(*c, {Range("price", none, none, inf, none)}).size(), prices.size());
  EXPECT_EQ(Admitted(*c, {Range("price", inf, none, none, none)}), S{});
  // Two ranges on one field intersect; a range and an equality condition too.
  EXPECT_EQ(
      Admitted(*c, {Range("price", 0.0, none, none, none), Range("price", none, none, 1.5, none)}),
      (S{"zero", "negzero", "tiny", "one", "onehalf"}));
  EXPECT_EQ(Admitted(*c, {Range("price", 0.0, none, none, none)}, {{"price", {"2.0", "1"}}}),
            (S{"one", "two"}));
  // A deleted and an overwritten document leave the range; the new value counts.
  ASSERT_TRUE(c->Delete({"one"}).ok());
  Document moved = PooledDoc(rng, "two");
  moved.metadata["price"] = "-7";
  ASSERT_TRUE(c->Upsert({moved}).ok());
  EXPECT_EQ(Admitted(*c, {Range("price", 1.0, none, none, none)}),
            (S{"onehalf", "thousand", "plus"}));
  EXPECT_EQ(Admitted(*c, {Range("price", none, none, none, -5.0)}), (S{"two"}));
}

TEST(FilterTest, BadNumericValuesAreRejectedAndNothingIsStored) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), NumericConfig());
  std::mt19937 rng(105);
  for (const std::string bad :
       {"abc", "", "nan", "inf", "-inf", "1e999", "12abc", "0x", "0x10", "-0X1p3"}) {
    SCOPED_TRACE(bad);
    std::vector<Document> docs;
    for (int i = 0; i < 5; ++i) {
      Document d = PooledDoc(rng, absl::StrCat("d", i));
      d.metadata["price"] = "12.5";
      d.metadata["year"] = "2001";
      docs.push_back(std::move(d));
    }
    docs[3].metadata["year"] = bad;
    auto r = c->Upsert(docs);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), absl::StrCat("documents[3].metadata[\"year\"]: \"", bad,
                                                 "\" is not a number (numeric field)"));
    EXPECT_EQ(c->Stats().num_documents, 0u);
    auto got = c->Get({"d0", "d3"}, false);
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(got->documents.empty());
  }
  // Text-only documents are checked as well.
  Document text_only;
  text_only.id = "t";
  text_only.text = "some words";
  text_only.metadata["price"] = "cheap";
  auto r = c->Upsert({text_only});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "documents[0].metadata[\"price\"]: \"cheap\" is not a number (numeric field)");
  // Keys that are not numeric fields take any string.
  Document free_form = PooledDoc(rng, "f");
  free_form.metadata["size"] = "large";
  free_form.metadata["price"] = " -12 ";
  EXPECT_TRUE(c->Upsert({free_form}).ok());
}

TEST(FilterTest, BadRangeConditionsNameTheField) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), NumericConfig());
  std::mt19937 rng(106);
  ASSERT_TRUE(c->Upsert({PooledDoc(rng, "a")}).ok());
  const std::optional<double> none;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::pair<RangeCondition, std::string>> cases = {
      {Range("size", 1.0, none, none, none),
       "filter.ranges[1].key: \"size\" is not a numeric field of this collection"},
      {Range("", 1.0, none, none, none), "filter.ranges[1].key: must not be empty"},
      {Range("price", none, none, none, none),
       "filter.ranges[1]: no bound given; give gte, gt, lte and/or lt"},
      {Range("price", 1.0, 1.0, none, none),
       "filter.ranges[1]: gte and gt both given; give one lower bound"},
      {Range("price", none, none, 1.0, 2.0),
       "filter.ranges[1]: lte and lt both given; give one upper bound"},
      {Range("price", nan, none, none, none), "filter.ranges[1].gte: is NaN"},
      {Range("price", none, none, none, nan), "filter.ranges[1].lt: is NaN"},
      {Range("price", 5.0, none, 3.0, none),
       "filter.ranges[1]: the lower bound 5 is above the upper bound 3"},
      {Range("price", none, 2.5, none, -1.0),
       "filter.ranges[1]: the lower bound 2.5 is above the upper bound -1"},
  };
  for (const auto& [bad, message] : cases) {
    SearchQuery q;
    q.pooled = testing::RandomUnitRows(rng, 1, kDim);
    q.top_k = 1;
    q.ranges = {Range("year", 0.0, none, none, none), bad};
    auto r = c->Search(q);
    ASSERT_FALSE(r.ok()) << message;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), message);
  }
}

TEST(FilterTest, CreateValidatesNumericFields) {
  TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"price", ""}, "config.numeric_fields[1]: must be 1..64 characters"},
      {{std::string(65, 'x')}, "config.numeric_fields[0]: must be 1..64 characters"},
      {{"a b"}, "config.numeric_fields[0]: \"a b\" has a character outside [A-Za-z0-9_.-]"},
      {{"p", "q", "p"}, "config.numeric_fields[2]: \"p\" is also config.numeric_fields[0]"},
  };
  int i = 0;
  for (const auto& [fields, message] : cases) {
    CollectionConfig config = NumericConfig();
    config.numeric_fields = fields;
    auto c = Collection::Create(dir.Sub(absl::StrCat("c", i++)), config, {});
    ASSERT_FALSE(c.ok()) << message;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(c.status().message(), message);
  }
  CollectionConfig many = NumericConfig();
  many.numeric_fields.clear();
  for (int f = 0; f < 33; ++f) many.numeric_fields.push_back(absl::StrCat("f", f));
  EXPECT_FALSE(Collection::Create(dir.Sub("many"), many, {}).ok());
  many.numeric_fields.pop_back();  // 32: the most allowed
  many.numeric_fields.back() = "geo.lat-2_x";
  EXPECT_TRUE(Collection::Create(dir.Sub("ok"), many, {}).ok());
}

TEST(FilterTest, NumericFieldsAndFiltersSurviveReopen) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  std::mt19937 rng(107);
  std::map<std::string, Document> live;
  std::vector<std::vector<std::string>> before;
  std::mt19937 query_rng(7);
  auto run_menu = [&](const Collection& c) {
    std::mt19937 qrng(7);
    std::vector<std::vector<std::string>> out;
    for (SearchQuery q : FilterMenu()) {
      q.pooled = testing::RandomUnitRows(qrng, 1, kDim);
      q.top_k = 10;
      q.candidates = 10;
      q.mode = RerankMode::kNone;
      auto r = c.Search(q);
      EXPECT_TRUE(r.ok()) << r.status();
      std::vector<std::string> ids;
      if (r.ok()) {
        for (const auto& h : r->hits) ids.push_back(h.id);
      }
      out.push_back(std::move(ids));
    }
    return out;
  };
  {
    auto c = MustCreate(path, NumericConfig());
    Populate(c.get(), rng, 5000, &live);
    before = run_menu(*c);
  }
  {
    auto c = Collection::Open(path, {});
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->config().numeric_fields, (std::vector<std::string>{"price", "year"}));
    EXPECT_EQ(run_menu(**c), before);
    CheckAgainstOracle(**c, live, query_rng, /*exact=*/true, 3);
  }
  // Without the snapshot the index is rebuilt; the filters are the same.
  std::filesystem::remove(path + "/ann.snapshot");
  auto c = Collection::Open(path, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(run_menu(**c), before);
  // Range validation still knows the fields.
  SearchQuery q;
  q.pooled = testing::RandomUnitRows(rng, 1, kDim);
  q.top_k = 1;
  q.ranges = {Range("tag", 1.0, {}, {}, {})};
  EXPECT_FALSE((*c)->Search(q).ok());
}

}  // namespace
}  // namespace attnsearch
