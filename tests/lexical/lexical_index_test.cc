// LexicalIndex (lexical/lexical_index.h) against a BM25 computed here from
// its formula on the index's own words, and its life as derived state:
// replaces and removals show at once, commits survive a reopen with the
// sequence they recorded, a damaged folder is DATA_LOSS, a held one is
// refused, bad input changes nothing.
#include "lexical/lexical_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

namespace attnsearch {
namespace {

std::unique_ptr<LexicalIndex> OpenOrDie(const std::string& dir, const LexicalOptions& o = {}) {
  absl::StatusOr<std::unique_ptr<LexicalIndex>> index = LexicalIndex::Open(dir, o);
  EXPECT_TRUE(index.ok()) << index.status();
  return index.ok() ? *std::move(index) : nullptr;
}

// BM25 as the header gives it, over documents given as their words.
std::map<Label, double> Bm25(const std::map<Label, std::vector<std::string>>& docs,
                             const std::vector<std::string>& query, double k1, double b) {
  const double n_docs = double(docs.size());
  double total_length = 0;
  std::map<std::string, double> df;
  for (const auto& [label, words] : docs) {
    total_length += double(words.size());
    for (const std::string& w : std::set<std::string>(words.begin(), words.end())) ++df[w];
  }
  const double mean_length = total_length / n_docs;
  std::map<std::string, double> qf;
  for (const std::string& w : query) ++qf[w];
  std::map<Label, double> scores;
  for (const auto& [label, words] : docs) {
    std::map<std::string, double> tf;
    for (const std::string& w : words) ++tf[w];
    const double norm = std::max(double(words.size()) / mean_length, 0.5);
    double score = 0;
    bool matched = false;
    for (const auto& [w, q] : qf) {
      if (!tf.count(w)) continue;
      matched = true;
      double r = (n_docs - df[w] + 0.5) / (df[w] + 0.5);
      if (r < 2) r = r * 0.5 + 1;
      score +=
          std::log(r) * (k1 + 1) * (2 * q / (1 + q)) * tf[w] / (k1 * ((1 - b) + b * norm) + tf[w]);
    }
    if (matched) scores[label] = score;
  }
  return scores;
}

TEST(LexicalIndexTest, ScoresAreBm25OfTheIndexedWords) {
  testing::TempDir dir;
  for (const auto& [k1, b] : std::vector<std::pair<double, double>>{{0.9, 0.4}, {1.2, 0.75}}) {
    SCOPED_TRACE(::testing::Message() << "k1 " << k1 << " b " << b);
    LexicalOptions options;
    options.k1 = k1;
    options.b = b;
    auto index = OpenOrDie(dir.Sub("k1_" + std::to_string(k1)), options);
    ASSERT_NE(index, nullptr);
    // Words of skewed frequencies, documents of 3 to 40 words.
    const std::vector<std::string> vocabulary = {
        "wind",  "turbines", "grid",  "power",   "ovens",  "bread", "flour", "harbor",
        "ships", "anchor",   "solar", "battery", "cables", "sugar", "crew",  "voyage"};
    std::mt19937 rng(7);
    std::geometric_distribution<size_t> pick(0.2);
    std::map<Label, std::vector<std::string>> words;
    for (Label label = 100; label < 400; label += 3) {
      std::string text;
      const size_t n = 3 + rng() % 38;
      for (size_t i = 0; i < n; ++i) text += vocabulary[pick(rng) % vocabulary.size()] + " ";
      ASSERT_TRUE(index->Put(label, text).ok());
      auto terms = index->Terms(text);
      ASSERT_TRUE(terms.ok());
      words[label] = *terms;
    }
    for (const std::string& query :
         {"wind turbine", "voyage voyage crew", "flour", "grid power cable battery solar"}) {
      SCOPED_TRACE(query);
      auto terms = index->Terms(query);
      ASSERT_TRUE(terms.ok());
      const std::map<Label, double> want = Bm25(words, *terms, k1, b);
      auto hits = index->Search(query, 1000);
      ASSERT_TRUE(hits.ok()) << hits.status();
      ASSERT_EQ(hits->size(), want.size());
      for (size_t i = 0; i < hits->size(); ++i) {
        const LexicalHit& h = (*hits)[i];
        ASSERT_TRUE(want.count(h.label)) << h.label;
        EXPECT_NEAR(h.score, want.at(h.label), 1e-9 * std::max(1.0, want.at(h.label)));
        if (i > 0) EXPECT_GE((*hits)[i - 1].score, h.score);
      }
      // The top 5 are the 5 best.
      auto top = index->Search(query, 5);
      ASSERT_TRUE(top.ok());
      ASSERT_EQ(top->size(), std::min<size_t>(5, want.size()));
      for (size_t i = 0; i < top->size(); ++i) EXPECT_EQ((*top)[i].score, (*hits)[i].score);
    }
  }
}

TEST(LexicalIndexTest, ChangesShowAtOnceAndCommitsSurviveAReopen) {
  testing::TempDir dir;
  {
    auto index = OpenOrDie(dir.Sub("lex"));
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->applied(), 0u);
    ASSERT_TRUE(index->Put(1, "The old wind Turbine on the ridge.").ok());
    ASSERT_TRUE(index->Put(2, "A recipe for bread with flour.").ok());
    ASSERT_TRUE(index->Put(3, "Ships in the harbor.").ok());
    // Stemmed both ways: "turbines" finds "Turbine".
    auto hits = index->Search("turbines", 10);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 1u);
    EXPECT_EQ((*hits)[0].label, 1u);
    // A replace and a removal, before any commit.
    ASSERT_TRUE(index->Put(1, "Nothing about energy any more.").ok());
    ASSERT_TRUE(index->Remove(3).ok());
    ASSERT_TRUE(index->Remove(42).ok());  // not indexed: nothing to do
    EXPECT_TRUE(index->Search("turbine", 10)->empty());
    EXPECT_TRUE(index->Search("harbor", 10)->empty());
    EXPECT_EQ(index->documents(), 2u);
    // Only the labels the filter takes.
    ASSERT_TRUE(index->Put(4, "More bread, less flour.").ok());
    const std::function<bool(Label)> even = [](Label l) { return l % 2 == 0; };
    auto filtered = index->Search("bread flour", 10, &even);
    ASSERT_TRUE(filtered.ok());
    ASSERT_EQ(filtered->size(), 2u);
    for (const LexicalHit& h : *filtered) EXPECT_EQ(h.label % 2, 0u);
    // Bad input changes nothing; text without words leaves the label out.
    EXPECT_EQ(index->Put(2, std::string("bad \xff utf-8")).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(index->Search("bread", 10)->size(), 2u);
    EXPECT_EQ(index->Search(std::string("\xc3"), 10).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(index->Search("... !!", 10)->empty());
    ASSERT_TRUE(index->Put(4, "!!!").ok());
    EXPECT_EQ(index->documents(), 2u);
    // Moves: the same text changes only its label; a new text is indexed.
    ASSERT_TRUE(index->Move(2, 12, "A recipe for bread with flour.").ok());
    auto moved = index->Search("recipe", 10);
    ASSERT_TRUE(moved.ok());
    ASSERT_EQ(moved->size(), 1u);
    EXPECT_EQ((*moved)[0].label, 12u);
    ASSERT_TRUE(index->Move(12, 2, "A recipe for bread with flour.").ok());
    ASSERT_TRUE(index->Move(1, 21, "Energy and engines.").ok());
    EXPECT_EQ(index->Search("engine", 10)->at(0).label, 21u);
    EXPECT_TRUE(index->Search("nothing", 10)->empty());  // the old text is gone
    ASSERT_TRUE(index->Move(21, 1, "Nothing about energy any more.").ok());
    ASSERT_TRUE(index->Move(99, 98, "").ok());  // neither there nor with words
    ASSERT_TRUE(index->Commit(7).ok());
    EXPECT_EQ(index->applied(), 7u);
    // Held by this index, the folder cannot be opened again.
    auto second = LexicalIndex::Open(dir.Sub("lex"), {});
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  }
  auto index = OpenOrDie(dir.Sub("lex"));
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->applied(), 7u);
  EXPECT_EQ(index->documents(), 2u);
  auto hits = index->Search("bread", 10);
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ(hits->size(), 1u);
  EXPECT_EQ((*hits)[0].label, 2u);
  EXPECT_EQ(index->Search("energy", 10)->size(), 1u);
}

TEST(LexicalIndexTest, ADamagedFolderIsDataLossAndBadOptionsAreNamed) {
  testing::TempDir dir;
  {
    auto index = OpenOrDie(dir.Sub("lex"));
    ASSERT_NE(index, nullptr);
    ASSERT_TRUE(index->Put(1, "wind").ok());
    ASSERT_TRUE(index->Commit(1).ok());
  }
  // Every file of the index overwritten with garbage.
  for (const auto& entry : std::filesystem::directory_iterator(dir.Sub("lex"))) {
    if (entry.path().filename() == "flintlock") continue;
    std::ofstream(entry.path(), std::ios::binary | std::ios::trunc) << "not an index at all";
  }
  auto damaged = LexicalIndex::Open(dir.Sub("lex"), {});
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss) << damaged.status();

  LexicalOptions bad;
  bad.k1 = -1;
  EXPECT_NE(LexicalIndex::Open(dir.Sub("other"), bad).status().message().find("k1"),
            std::string::npos);
  bad = {};
  bad.b = 1.5;
  EXPECT_NE(LexicalIndex::Open(dir.Sub("other"), bad).status().message().find("b:"),
            std::string::npos);
  bad = {};
  bad.stem_language = "klingon";
  EXPECT_EQ(LexicalIndex::Open(dir.Sub("other"), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(LexicalIndex::Open(dir.Sub("other"), bad).status().message().find("stem_language"),
            std::string::npos);
}

}  // namespace
}  // namespace attnsearch
