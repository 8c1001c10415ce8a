// The collection's lexical index (Collection::LexicalSearch): every write
// shows in it at once (upserts, overwrites, deletes), and it is kept across a
// clean close and rebuilt from the store when it is missing, damaged or was
// left behind by an unclean close. The oracle: a LexicalIndex built afresh
// on the live texts gives the same ids and BM25 scores. And the searches it
// serves (SearchQuery::retrieval): LEXICAL, HYBRID and their fusion, against
// the exhaustive rerank's scores, BM25's and the first stage's own lists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/collection.h"
#include "lexical/lexical_index.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;
using Hits = std::vector<std::pair<std::string, double>>;

const std::vector<std::string> kQueries = {"wind turbines", "bread flour oven", "harbor ship crew",
                                           "solar power grid", "nothing matches this"};

std::unique_ptr<Collection> OpenOrDie(const std::string& path) {
  auto c = Collection::Open(path, CollectionOptions());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

Document TextDoc(const std::string& id, const std::string& text) {
  Document d;
  d.id = id;
  d.text = text;
  return d;
}

// What a fresh index over `live` (id -> text) answers.
Hits Oracle(const std::map<std::string, std::string>& live, const std::string& query) {
  TempDir dir;
  auto index = LexicalIndex::Open(dir.Sub("oracle"), {});
  EXPECT_TRUE(index.ok()) << index.status();
  std::vector<std::string> ids;
  for (const auto& [id, text] : live) {
    EXPECT_TRUE((*index)->Put(ids.size(), text).ok());
    ids.push_back(id);
  }
  auto hits = (*index)->Search(query, 100);
  EXPECT_TRUE(hits.ok()) << hits.status();
  Hits out;
  for (const LexicalHit& h : *hits) out.emplace_back(ids[h.label], h.score);
  return out;
}

void ExpectLikeOracle(const Collection& c, const std::map<std::string, std::string>& live) {
  for (const std::string& q : kQueries) {
    SCOPED_TRACE(q);
    auto got = c.LexicalSearch(q, 100);
    ASSERT_TRUE(got.ok()) << got.status();
    const Hits want = Oracle(live, q);
    ASSERT_EQ(got->size(), want.size());
    // Equal scores may come in either order: compare as maps.
    std::map<std::string, double> g(got->begin(), got->end()), w(want.begin(), want.end());
    for (const auto& [id, score] : w) {
      ASSERT_TRUE(g.count(id)) << id;
      EXPECT_NEAR(g[id], score, 1e-9) << id;
    }
  }
}

// A seeded corpus on three topics.
std::map<std::string, std::string> Corpus(size_t n) {
  const std::vector<std::vector<std::string>> topics = {
      {"wind", "turbine", "solar", "power", "grid", "battery"},
      {"bread", "flour", "oven", "butter", "sugar", "dough"},
      {"harbor", "ship", "crew", "anchor", "sailor", "deck"}};
  const std::vector<std::string> common = {"the", "a", "of", "and", "with", "near"};
  std::mt19937 rng(5);
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < n; ++i) {
    std::string text;
    for (int w = 0; w < 8 + int(rng() % 10); ++w) {
      const auto& pool = rng() % 2 ? topics[i % 3] : common;
      text += pool[rng() % pool.size()] + " ";
    }
    out["d" + std::to_string(i)] = text;
  }
  return out;
}

TEST(LexicalCollectionTest, EveryWriteShowsAtOnce) {
  TempDir dir;
  CollectionConfig config;
  config.dim = 256;
  auto created = Collection::Create(dir.Sub("c"), config, CollectionOptions());
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  std::map<std::string, std::string> live = Corpus(60);
  std::vector<Document> docs;
  for (const auto& [id, text] : live) docs.push_back(TextDoc(id, text));
  ASSERT_TRUE(c.Upsert(docs).ok());
  ExpectLikeOracle(c, live);
  // An overwrite: the old words are gone, the new ones found.
  live["d3"] = "Ships and sailors in a windy harbor.";
  ASSERT_TRUE(c.Upsert({TextDoc("d3", live["d3"])}).ok());
  ExpectLikeOracle(c, live);
  // A delete.
  for (const std::string id : {"d4", "d5", "d6"}) live.erase(id);
  auto deleted = c.Delete({"d4", "d5", "d6", "ghost"});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->deleted, 3u);
  ExpectLikeOracle(c, live);
  // A document without text is not in it; one with vectors and text is.
  Document vectors_only;
  vectors_only.id = "v";
  vectors_only.pooled.assign(256, 0.f);
  vectors_only.pooled[0] = 1.f;
  ASSERT_TRUE(c.Upsert({vectors_only}).ok());
  ExpectLikeOracle(c, live);
  // Bad input is refused before anything is stored.
  EXPECT_EQ(c.LexicalSearch(std::string("\xff"), 5).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LexicalCollectionTest, KeptAcrossACloseAndRebuiltWhenMissingDamagedOrBehind) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  std::map<std::string, std::string> live = Corpus(80);
  {
    CollectionConfig config;
    config.dim = 256;
    auto c = Collection::Create(path, config, CollectionOptions());
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<Document> docs;
    for (const auto& [id, text] : live) docs.push_back(TextDoc(id, text));
    ASSERT_TRUE((*c)->Upsert(docs).ok());
    ASSERT_TRUE((*c)->Delete({"d1"}).ok());
    live.erase("d1");
  }
  {
    SCOPED_TRACE("after a clean close");
    auto c = OpenOrDie(path);
    ASSERT_NE(c, nullptr);
    ExpectLikeOracle(*c, live);
  }
  {
    SCOPED_TRACE("its folder deleted");
    std::filesystem::remove_all(path + "/lexical");
    auto c = OpenOrDie(path);
    ASSERT_NE(c, nullptr);
    ExpectLikeOracle(*c, live);
  }
  {
    SCOPED_TRACE("its files damaged");
    for (const auto& entry : std::filesystem::directory_iterator(path + "/lexical")) {
      if (entry.path().filename() == "flintlock") continue;
      std::ofstream(entry.path(), std::ios::binary | std::ios::trunc) << "garbage";
    }
    auto c = OpenOrDie(path);
    ASSERT_NE(c, nullptr);
    ExpectLikeOracle(*c, live);
    // Writes after which the collection is closed without its final steps
    // (as a crash leaves it): the lexical index is behind the store.
    live["d2"] = "A brand new text about a lighthouse keeper.";
    ASSERT_TRUE(c->Upsert({TextDoc("d2", live["d2"])}).ok());
    ASSERT_TRUE(c->Delete({"d9"}).ok());
    live.erase("d9");
    c->DiscardOnClose();
  }
  {
    SCOPED_TRACE("after an unclean close");
    auto c = OpenOrDie(path);
    ASSERT_NE(c, nullptr);
    ExpectLikeOracle(*c, live);
    auto lighthouse = c->LexicalSearch("lighthouse", 5);
    ASSERT_TRUE(lighthouse.ok());
    ASSERT_EQ(lighthouse->size(), 1u);
    EXPECT_EQ((*lighthouse)[0].first, "d2");
  }
}

// Every document's attention score for `text` (the exhaustive rerank).
std::map<std::string, float> Exhaustive(const Collection& c, const std::string& text) {
  SearchQuery q;
  q.text = text;
  q.retrieval = Retrieval::kSemantic;
  q.top_k = 1000;
  q.candidates = 100000;
  auto r = c.Search(q);
  EXPECT_TRUE(r.ok()) << r.status();
  std::map<std::string, float> out;
  for (const SearchHit& h : r->hits) out[h.id] = h.score;
  return out;
}

TEST(LexicalCollectionTest, LexicalAndHybridRetrieval) {
  TempDir dir;
  CollectionConfig config;
  config.dim = 256;
  CollectionOptions options;
  options.limits.max_top_k = 100000;
  options.limits.max_candidates = 100000;
  auto created = Collection::Create(dir.Sub("c"), config, options);
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  const std::map<std::string, std::string> live = Corpus(150);
  std::vector<Document> docs;
  int n = 0;
  for (const auto& [id, text] : live) {
    docs.push_back(TextDoc(id, text));
    docs.back().metadata["topic"] = std::to_string(n++ % 3);
  }
  ASSERT_TRUE(c.Upsert(docs).ok());
  ASSERT_TRUE(c.TrainEncoder({}).ok());
  const std::string text = "wind turbine power";
  const std::map<std::string, float> attention = Exhaustive(c, text);
  auto bm25_list = c.LexicalSearch(text, 20);
  ASSERT_TRUE(bm25_list.ok());
  ASSERT_GE(bm25_list->size(), 10u);
  std::map<std::string, double> bm25(bm25_list->begin(), bm25_list->end());

  const auto run = [&](Retrieval r, RerankMode mode, float weight, uint32_t candidates) {
    SearchQuery q;
    q.text = text;
    q.retrieval = r;
    q.mode = mode;
    q.fusion_weight = weight;
    q.top_k = 10;
    q.candidates = candidates;
    auto got = c.Search(q);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *std::move(got) : SearchResult();
  };
  {
    SCOPED_TRACE("lexical, first stage order");
    const SearchResult r = run(Retrieval::kLexical, RerankMode::kNone, 1.f, 20);
    ASSERT_EQ(r.hits.size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(r.hits[i].id, (*bm25_list)[i].first);
      EXPECT_FLOAT_EQ(r.hits[i].score, float((*bm25_list)[i].second));
      EXPECT_FLOAT_EQ(r.hits[i].lexical_score, float((*bm25_list)[i].second));
    }
    EXPECT_EQ(r.sources.retrieval, Retrieval::kLexical);
    EXPECT_EQ(r.sources.lexical, 20u);
  }
  // The first stage's own 20, in its order.
  SearchQuery first;
  first.text = text;
  first.retrieval = Retrieval::kSemantic;
  first.mode = RerankMode::kNone;
  first.top_k = 20;
  first.candidates = 20;
  auto ann = c.Search(first);
  ASSERT_TRUE(ann.ok());
  std::set<std::string> ann_ids;
  for (const SearchHit& h : ann->hits) ann_ids.insert(h.id);
  // The expected top 10 of `pool` by `score`.
  const auto top10 = [](const std::set<std::string>& pool,
                        const std::function<double(const std::string&)>& score) {
    std::vector<std::pair<double, std::string>> v;
    for (const std::string& id : pool) v.emplace_back(score(id), id);
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    v.resize(std::min<size_t>(10, v.size()));
    return v;
  };
  const auto expect = [](const SearchResult& r,
                         const std::vector<std::pair<double, std::string>>& want) {
    ASSERT_EQ(r.hits.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(r.hits[i].score, want[i].first, 1e-4) << i;
      // Equal scores may swap places.
      if (i + 1 < want.size() && std::fabs(want[i].first - want[i + 1].first) > 1e-4 &&
          (i == 0 || std::fabs(want[i].first - want[i - 1].first) > 1e-4)) {
        EXPECT_EQ(r.hits[i].id, want[i].second) << i;
      }
    }
  };
  std::set<std::string> lex_ids;
  for (const auto& [id, score] : *bm25_list) lex_ids.insert(id);
  {
    SCOPED_TRACE("lexical, reranked by attention");
    expect(run(Retrieval::kLexical, RerankMode::kAttention, 1.f, 20),
           top10(lex_ids, [&](const std::string& id) { return attention.at(id); }));
  }
  std::set<std::string> both = ann_ids;
  both.insert(lex_ids.begin(), lex_ids.end());
  {
    SCOPED_TRACE("hybrid, reranked by attention");
    const SearchResult r = run(Retrieval::kHybrid, RerankMode::kAttention, 1.f, 20);
    expect(r, top10(both, [&](const std::string& id) { return attention.at(id); }));
    EXPECT_EQ(r.sources.retrieval, Retrieval::kHybrid);
    size_t only_lexical = 0;
    for (const std::string& id : lex_ids) only_lexical += !ann_ids.count(id);
    EXPECT_EQ(r.sources.lexical, only_lexical);
    EXPECT_GT(only_lexical, 0u);  // the two generators differ here
  }
  {
    SCOPED_TRACE("hybrid, fused half and half");
    double lo = 1e30, hi = -1e30, blo = 1e30, bhi = -1e30;
    for (const std::string& id : both) {
      lo = std::min<double>(lo, attention.at(id));
      hi = std::max<double>(hi, attention.at(id));
      const double b = bm25.count(id) ? bm25.at(id) : 0.0;
      blo = std::min(blo, b);
      bhi = std::max(bhi, b);
    }
    expect(run(Retrieval::kHybrid, RerankMode::kAttention, 0.5f, 20),
           top10(both, [&](const std::string& id) {
             const double b = bm25.count(id) ? bm25.at(id) : 0.0;
             return 0.5 * (attention.at(id) - lo) / (hi - lo) + 0.5 * (b - blo) / (bhi - blo);
           }));
  }
  {
    SCOPED_TRACE("a text query's default: hybrid, 100 from each");
    SearchQuery q;
    q.text = text;
    q.top_k = 5;
    auto r = c.Search(q);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->sources.retrieval, Retrieval::kHybrid);
  }
  {
    SCOPED_TRACE("filters and deletes");
    SearchQuery q;
    q.text = text;
    q.retrieval = Retrieval::kLexical;
    q.top_k = 10;
    q.filter = {{"topic", {"0"}}};
    q.include_metadata = true;
    auto r = c.Search(q);
    ASSERT_TRUE(r.ok());
    ASSERT_FALSE(r->hits.empty());
    for (const SearchHit& h : r->hits) EXPECT_EQ(h.metadata.at("topic"), "0") << h.id;
    const std::string gone = (*bm25_list)[0].first;
    ASSERT_TRUE(c.Delete({gone}).ok());
    q.filter.clear();
    r = c.Search(q);
    ASSERT_TRUE(r.ok());
    for (const SearchHit& h : r->hits) EXPECT_NE(h.id, gone);
  }
  {
    SCOPED_TRACE("bad parameters");
    SearchQuery q;
    q.text = text;
    q.top_k = 5;
    for (const float w : {-0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
      q.fusion_weight = w;
      auto r = c.Search(q);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(r.status().message().find("fusion_weight"), std::string::npos) << r.status();
    }
    SearchQuery v;
    v.pooled.assign(256, 0.f);
    v.pooled[3] = 1.f;
    v.top_k = 5;
    v.retrieval = Retrieval::kLexical;
    auto r = c.Search(v);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("retrieval"), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace attnsearch
