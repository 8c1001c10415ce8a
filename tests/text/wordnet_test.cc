// WordNet's reader against Princeton WordNet 3.0 as Debian's wordnet-base
// installs it (scripts/test.sh installs the package): relations the
// database states, weights by relation and sense rank, and errors for a
// missing or damaged database.
#include "text/wordnet.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include "test_util.h"

namespace attnsearch::text {
namespace {

using testing::TempDir;

class WordNetTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = WordNet::Load();
    ASSERT_TRUE(loaded.ok()) << loaded.status() << " (scripts/test.sh installs wordnet-base)";
    pairs_ = new std::map<std::pair<std::string, std::string>, float>();
    for (const WordRelation& r : loaded->relations()) (*pairs_)[{r.a, r.b}] = r.weight;
    relations_ = loaded->relations().size();
    lemmas_ = loaded->lemmas();
  }
  static void TearDownTestSuite() { delete pairs_; }
  void SetUp() override { ASSERT_NE(pairs_, nullptr); }

  // The pair's weight, 0 when unrelated.
  static float Weight(const std::string& x, const std::string& y) {
    auto it = pairs_->find(std::minmax(x, y));
    return it == pairs_->end() ? 0.f : it->second;
  }

  static std::map<std::pair<std::string, std::string>, float>* pairs_;
  static size_t relations_;
  static uint64_t lemmas_;
};

std::map<std::pair<std::string, std::string>, float>* WordNetTest::pairs_ = nullptr;
size_t WordNetTest::relations_ = 0;
uint64_t WordNetTest::lemmas_ = 0;

TEST_F(WordNetTest, EveryPairOnceInOrderWithoutMultiWordLemmas) {
  EXPECT_EQ(pairs_->size(), relations_) << "a pair listed twice";
  EXPECT_GT(relations_, 100000u);
  EXPECT_GT(lemmas_, 60000u);
  for (const auto& [pair, weight] : *pairs_) {
    ASSERT_LT(pair.first, pair.second);
    ASSERT_EQ(pair.first.find('_'), std::string::npos) << pair.first;
    ASSERT_EQ(pair.second.find('_'), std::string::npos) << pair.second;
    ASSERT_GT(weight, 0.f);
    ASSERT_LE(weight, 1.f);
  }
}

// Weights: relation weight (synonym 1, the others 0.5) x 1/rank of the
// sense for each lemma (index.noun lists senses most frequent first).
TEST_F(WordNetTest, RelationsAndTheirWeights) {
  // {car, auto, automobile, machine, motorcar}: the first sense of both.
  EXPECT_FLOAT_EQ(Weight("car", "automobile"), 1.f);
  // {illness, unwellness, malady, sickness}: sense 1 of both.
  EXPECT_FLOAT_EQ(Weight("illness", "sickness"), 1.f);
  // {present} (sense 2 of "present") is a kind of {gift} (sense 1 of
  // "gift"): hypernym 0.5 x 1 x 1/2.
  EXPECT_FLOAT_EQ(Weight("gift", "present"), 0.25f);
  // computer -> machine: hypernym ("@"), first senses.
  EXPECT_FLOAT_EQ(Weight("computer", "machine"), 0.5f);
  // securely -> secure: pertainym ("\"), a lexical pointer.
  EXPECT_GT(Weight("securely", "secure"), 0.f);
  // encrypt -> encryption: derivationally related ("+").
  EXPECT_GT(Weight("encrypt", "encryption"), 0.f);
  // Unrelated words.
  EXPECT_EQ(Weight("car", "tulip"), 0.f);
}

// {elevator, lift}: "lift" has many more frequent senses, so the pair is
// left out at the default max_sense_rank (4) and kept at 10.
TEST_F(WordNetTest, RareSensesAreLeftOut) {
  EXPECT_EQ(Weight("elevator", "lift"), 0.f);
  WordNetOptions wide;
  wide.max_sense_rank = 20;
  auto loaded = WordNet::Load(wide);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  bool found = false;
  for (const WordRelation& r : loaded->relations()) {
    if (r.a == "elevator" && r.b == "lift") found = r.weight > 0.f;
  }
  EXPECT_TRUE(found);
}

TEST(WordNetErrorsTest, MissingDatabaseIsNotFound) {
  TempDir dir;
  WordNetOptions o;
  o.dir = dir.Sub("nowhere");
  auto loaded = WordNet::Load(o);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound) << loaded.status();
  EXPECT_NE(loaded.status().message().find("data.noun"), std::string::npos) << loaded.status();
}

// A damaged line names its file and line number.
TEST(WordNetErrorsTest, MalformedLineIsDataLossNamingFileAndLine) {
  TempDir dir;
  const std::filesystem::path source = WordNetOptions().dir;
  for (const char* part : {"noun", "verb", "adj", "adv"}) {
    for (const char* kind : {"data.", "index."}) {
      std::filesystem::copy_file(source / (std::string(kind) + part),
                                 std::filesystem::path(dir.path()) / (std::string(kind) + part));
    }
  }
  // Append a synset whose word count is larger than its words.
  {
    std::ofstream out(dir.Sub("data.verb"), std::ios::app);
    out << "99999999 29 v 05 walk 0 001 @ 01835496 v 0000 | broken\n";
  }
  size_t lines = 0;
  {
    std::ifstream in(dir.Sub("data.verb"));
    std::string line;
    while (std::getline(in, line)) ++lines;
  }
  WordNetOptions o;
  o.dir = dir.path();
  auto loaded = WordNet::Load(o);
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  const std::string message(loaded.status().message());
  EXPECT_NE(message.find("data.verb line " + std::to_string(lines)), std::string::npos) << message;
}

}  // namespace
}  // namespace attnsearch::text
