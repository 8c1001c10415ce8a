#include "text/stemmer.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace attnsearch::text {
namespace {

Stemmer MustCreate(const std::string& language) {
  absl::StatusOr<Stemmer> stemmer = Stemmer::Create(language);
  EXPECT_TRUE(stemmer.ok()) << stemmer.status();
  if (!stemmer.ok()) std::abort();
  return *std::move(stemmer);
}

TEST(StemmerTest, EnglishInflectionsShareAStem) {
  const Stemmer stemmer = MustCreate("english");
  EXPECT_EQ(stemmer.language(), "english");
  for (const char* word : {"connect", "connected", "connection", "connecting", "connects"}) {
    EXPECT_EQ(stemmer.Stem(word), "connect") << word;
  }
  EXPECT_EQ(stemmer.Stem("running"), "run");
  EXPECT_EQ(stemmer.Stem("runs"), "run");
  EXPECT_EQ(stemmer.Stem("boats"), "boat");
  EXPECT_EQ(stemmer.Stem("boat"), "boat");
  EXPECT_EQ(stemmer.Stem("harbors"), "harbor");
  // A stem is a fixed point for these words.
  EXPECT_EQ(stemmer.Stem(stemmer.Stem("connections")), "connect");
}

TEST(StemmerTest, GermanIsAvailable) {
  const Stemmer stemmer = MustCreate("german");
  // Snowball german: "häuser" and "hauses" -> "haus".
  EXPECT_EQ(stemmer.Stem("häuser"), "haus");
  EXPECT_EQ(stemmer.Stem("hauses"), "haus");
}

TEST(StemmerTest, NoneReturnsItsInput) {
  const Stemmer stemmer = MustCreate("none");
  EXPECT_EQ(stemmer.language(), "none");
  for (const char* word : {"connected", "running", "boats", "注意力", "3.14", "x"}) {
    EXPECT_EQ(stemmer.Stem(word), word);
  }
  EXPECT_EQ(stemmer.Stem(""), "");
}

TEST(StemmerTest, EmptyWordIsEmpty) { EXPECT_EQ(MustCreate("english").Stem(""), ""); }

TEST(StemmerTest, UnknownLanguageIsInvalidArgumentNamingIt) {
  absl::StatusOr<Stemmer> stemmer = Stemmer::Create("klingon");
  ASSERT_FALSE(stemmer.ok());
  EXPECT_EQ(stemmer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(stemmer.status().message().find("klingon"), std::string::npos) << stemmer.status();
  // It lists the known ones.
  EXPECT_NE(stemmer.status().message().find("english"), std::string::npos) << stemmer.status();
  EXPECT_FALSE(Stemmer::Create("").ok());
}

TEST(StemmerTest, LanguagesListsTheSnowballAlgorithms) {
  const std::vector<std::string> languages = Stemmer::Languages();
  EXPECT_NE(std::find(languages.begin(), languages.end(), "english"), languages.end());
  EXPECT_NE(std::find(languages.begin(), languages.end(), "german"), languages.end());
  for (const std::string& language : languages) {
    EXPECT_TRUE(Stemmer::Create(language).ok()) << language;
  }
}

TEST(StemmerTest, CjkAndNumbersAreUnchanged) {
  const Stemmer stemmer = MustCreate("english");
  for (const char* word :
       {"注意力", "机制", "神经网络", "天气", "東京タワー", "2024", "3.14", "1,000,000", "1990"}) {
    EXPECT_EQ(stemmer.Stem(word), word);
  }
}

TEST(StemmerTest, ConcurrentCallsMatchSingleThreaded) {
  const Stemmer english = MustCreate("english");
  const Stemmer german = MustCreate("german");
  const std::vector<std::string> words = {
      "connected",  "connection", "connecting", "running",  "boats",  "harbors", "vessels",
      "sailing",    "loans",      "interest",   "credits",  "häuser", "注意力",  "2024",
      "generously", "happiness",  "relational", "caresses", "ponies", "ties",    ""};
  std::vector<std::string> want_en, want_de;
  for (const std::string& w : words) {
    want_en.push_back(english.Stem(w));
    want_de.push_back(german.Stem(w));
  }
  constexpr int kThreads = 4;
  constexpr int kRounds = 500;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < words.size(); ++i) {
          const size_t k = (i + size_t(th) * 5) % words.size();
          if (english.Stem(words[k]) != want_en[k]) ++mismatches[th];
          // Interleave a second language on the same thread.
          if (german.Stem(words[k]) != want_de[k]) ++mismatches[th];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int th = 0; th < kThreads; ++th) EXPECT_EQ(mismatches[th], 0) << "thread " << th;
}

}  // namespace
}  // namespace attnsearch::text
