// The collection's lexical index (Collection::LexicalSearch): every write
// shows in it at once (upserts, overwrites, deletes), and it is kept across a
// clean close and rebuilt from the store when it is missing, damaged or was
// left behind by an unclean close. The oracle: a LexicalIndex built afresh
// on the live texts gives the same ids and BM25 scores.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
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

}  // namespace
}  // namespace attnsearch
