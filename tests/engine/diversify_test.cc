// Result diversification (SearchQuery::diversify): collapsing by a metadata
// field and leaving out near-duplicates, against an oracle that walks the
// undiversified ranking (every candidate) best first and applies the rules.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using testing::MakeDoc;
using testing::TempDir;

constexpr uint32_t kDim = 32;
constexpr size_t kDocs = 400;

struct Fixture {
  TempDir dir;
  std::unique_ptr<Collection> c;
  std::map<std::string, Document> docs;  // as stored, with pooled vectors
};

// 400 documents: "group" is one of 40 values on 90% of them; every fifth
// document is a copy of the one before with a little noise (a near-
// duplicate, in the same group or none).
std::unique_ptr<Fixture> MakeFixture() {
  auto f = std::make_unique<Fixture>();
  CollectionConfig config;
  config.dim = kDim;
  config.ann_spec = "Flat";
  auto c = Collection::Create(f->dir.Sub("c"), config, CollectionOptions());
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return nullptr;
  f->c = std::move(c).value();
  std::mt19937 rng(11);
  std::normal_distribution<float> noise(0.f, 0.01f);
  std::vector<Document> batch;
  for (size_t i = 0; i < kDocs; ++i) {
    Document d = MakeDoc(rng, absl::StrCat("d", i), kDim, 2, 6);
    if (i % 5 == 4) {
      const Document& prev = batch.back();
      d.num_tokens = prev.num_tokens;
      d.tokens = prev.tokens;
      for (float& x : d.tokens) x += noise(rng);
      if (prev.metadata.count("group")) d.metadata["group"] = prev.metadata.at("group");
    } else if (rng() % 10 != 0) {
      d.metadata["group"] = absl::StrCat("g", rng() % 40);
    }
    batch.push_back(d);
  }
  auto n = f->c->Upsert(batch);
  EXPECT_TRUE(n.ok()) << n.status();
  std::vector<std::string> ids;
  for (const Document& d : batch) ids.push_back(d.id);
  auto got = f->c->Get(ids, /*include_vectors=*/true);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok()) return nullptr;
  for (const auto& d : got->documents) {
    EXPECT_EQ(d.pooled.size(), kDim) << d.id;
    f->docs[d.id] = d;
  }
  EXPECT_EQ(f->docs.size(), kDocs);
  return f;
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t j = 0; j < a.size(); ++j) {
    dot += double(a[j]) * b[j];
    na += double(a[j]) * a[j];
    nb += double(b[j]) * b[j];
  }
  return dot / std::sqrt(na * nb);
}

// The oracle: the undiversified ranking of every candidate, walked best
// first; returns the ids kept and counts those left out before the last.
std::vector<std::string> Expected(const Fixture& f, SearchQuery q, const Diversify& d,
                                  uint32_t* left_out) {
  const uint32_t top_k = q.top_k;
  q.top_k = q.candidates;
  const std::vector<std::string> ranking = testing::SearchIds(*f.c, q);
  std::vector<std::string> kept;
  std::map<std::string, uint32_t> per_value;
  *left_out = 0;
  for (const std::string& id : ranking) {
    if (kept.size() == top_k) break;
    const Document& doc = f.docs.at(id);
    auto g = doc.metadata.find(d.collapse_field);
    const bool has = !d.collapse_field.empty() && g != doc.metadata.end();
    bool ok = !has || per_value[g->second] < std::max<uint32_t>(1, d.max_per_value);
    for (const std::string& k : kept) {
      if (ok && d.max_similarity > 0 &&
          Cosine(f.docs.at(k).pooled, doc.pooled) >= d.max_similarity) {
        ok = false;
      }
    }
    if (!ok) {
      ++*left_out;
      continue;
    }
    if (has) ++per_value[g->second];
    kept.push_back(id);
  }
  return kept;
}

class DiversifyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { f_ = MakeFixture().release(); }
  static void TearDownTestSuite() { delete f_; }
  void SetUp() override { ASSERT_NE(f_, nullptr); }

  // A query near document `near` (its tokens with noise).
  static SearchQuery QueryNear(size_t near, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> noise(0.f, 0.3f);
    const Document& d = f_->docs.at(absl::StrCat("d", near));
    SearchQuery q;
    q.num_tokens = d.num_tokens;
    q.tokens = d.tokens;
    for (float& x : q.tokens) x += noise(rng);
    q.top_k = 10;
    q.candidates = 200;
    q.include_metadata = true;
    return q;
  }

  static Fixture* f_;
};

Fixture* DiversifyTest::f_ = nullptr;

TEST_F(DiversifyTest, CollapseAndNearDuplicatesMatchTheOracle) {
  std::vector<Diversify> settings(5);
  settings[0].collapse_field = "group";
  settings[1].collapse_field = "group";
  settings[1].max_per_value = 2;
  settings[2].max_similarity = 0.98f;
  settings[3].collapse_field = "group";
  settings[3].max_similarity = 0.9f;
  settings[4].collapse_field = "no_such_field";  // collapses nothing
  uint32_t total_left_out = 0;
  for (size_t s = 0; s < settings.size(); ++s) {
    for (size_t near : {3u, 4u, 119u, 250u, 398u}) {
      SCOPED_TRACE(absl::StrCat("setting ", s, ", near d", near));
      SearchQuery q = QueryNear(near, uint32_t(near));
      uint32_t left_out = 0;
      const std::vector<std::string> expected = Expected(*f_, q, settings[s], &left_out);
      q.diversify = settings[s];
      auto r = f_->c->Search(q);
      ASSERT_TRUE(r.ok()) << r.status();
      std::vector<std::string> got;
      for (const SearchHit& h : r->hits) got.push_back(h.id);
      EXPECT_EQ(got, expected);
      EXPECT_EQ(r->sources.diversified, left_out);
      total_left_out += left_out;
      if (s == 4) EXPECT_EQ(left_out, 0u);
    }
  }
  EXPECT_GT(total_left_out, 20u) << "the data should give the rules something to do";
}

// Off by default: the same hits as without the field.
TEST_F(DiversifyTest, OffByDefault) {
  SearchQuery q = QueryNear(4, 1);
  auto r = f_->c->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sources.diversified, 0u);
  // d4 is a near-copy of d3: without diversification both are found.
  std::vector<std::string> ids;
  for (const SearchHit& h : r->hits) ids.push_back(h.id);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "d3"), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), "d4"), ids.end());
}

TEST_F(DiversifyTest, BadSettingsAreInvalidArgumentNamingTheField) {
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    SearchQuery q = QueryNear(3, 2);
    q.diversify.max_similarity = bad;
    auto r = f_->c->Search(q);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("diversify.max_similarity"), std::string::npos)
        << r.status();
  }
  SearchQuery q = QueryNear(3, 2);
  q.diversify.collapse_field = std::string(2000, 'x');
  auto r = f_->c->Search(q);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("diversify.collapse_field"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace attnsearch
