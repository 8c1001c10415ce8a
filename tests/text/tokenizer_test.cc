#include "text/tokenizer.h"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace attnsearch::text {
namespace {

// One expected token: its normalised text, its span, and the span's text in
// the input (the surface form as written).
struct Expected {
  std::string text;
  uint32_t begin;
  uint32_t end;
  std::string surface;
};

// Every token's span must lie inside the input and be non-empty.
void CheckSpans(std::string_view input, const std::vector<Token>& tokens) {
  uint32_t prev_end = 0;
  for (const Token& t : tokens) {
    EXPECT_LT(t.begin, t.end) << t.text;
    EXPECT_LE(t.end, input.size()) << t.text;
    EXPECT_LE(prev_end, t.begin) << "spans out of order or overlapping at " << t.text;
    EXPECT_FALSE(t.text.empty());
    prev_end = t.end;
  }
}

std::vector<Token> MustTokenize(const Tokenizer& tokenizer, std::string_view input) {
  absl::StatusOr<std::vector<Token>> tokens = tokenizer.Tokenize(input);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  if (!tokens.ok()) return {};
  CheckSpans(input, *tokens);
  return *std::move(tokens);
}

void ExpectTokens(std::string_view input, const std::vector<Token>& tokens,
                  const std::vector<Expected>& expected) {
  ASSERT_EQ(tokens.size(), expected.size()) << input;
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "token " << i << " of \"" << input << "\"");
    EXPECT_EQ(tokens[i].text, expected[i].text);
    EXPECT_EQ(tokens[i].begin, expected[i].begin);
    EXPECT_EQ(tokens[i].end, expected[i].end);
    EXPECT_EQ(input.substr(tokens[i].begin, tokens[i].end - tokens[i].begin), expected[i].surface);
  }
}

void ExpectTokens(std::string_view input, const std::vector<Expected>& expected) {
  Tokenizer tokenizer;
  ExpectTokens(input, MustTokenize(tokenizer, input), expected);
}

TEST(TokenizerTest, EnglishSentenceDropsPunctuationAndFoldsCase) {
  ExpectTokens("Hello, World!", {{"hello", 0, 5, "Hello"}, {"world", 7, 12, "World"}});
}

TEST(TokenizerTest, NumbersAndIdentifiers) {
  ExpectTokens("version 3.14 of foo_bar", {{"version", 0, 7, "version"},
                                           {"3.14", 8, 12, "3.14"},
                                           {"of", 13, 15, "of"},
                                           {"foo_bar", 16, 23, "foo_bar"}});
  // What ICU's word rules (ICU 72) keep together: letters joined by '.',
  // apostrophes and '@' stay one word, numbers keep their separators, a
  // hyphen splits, '+' is punctuation.
  ExpectTokens("foo.bar e-mail user@example.com don't 1,000,000 v2.0 C++",
               {{"foo.bar", 0, 7, "foo.bar"},
                {"e", 8, 9, "e"},
                {"mail", 10, 14, "mail"},
                {"user@example.com", 15, 31, "user@example.com"},
                {"don't", 32, 37, "don't"},
                {"1,000,000", 38, 47, "1,000,000"},
                {"v2.0", 48, 52, "v2.0"},
                {"c", 53, 54, "C"}});
}

TEST(TokenizerTest, CaseFoldingAndNfkc) {
  // Full-width letters: 3 bytes each.
  ExpectTokens("ＡＢＣ", {{"abc", 0, 9, "ＡＢＣ"}});
  // ß folds to "ss" (full case folding); the span keeps the 2-byte ß.
  ExpectTokens("Straße", {{"strasse", 0, 7, "Straße"}});
  // The ﬁ ligature (U+FB01) decomposes; Σ folds to σ.
  ExpectTokens("ﬁle ΣΊΣΥΦΟΣ", {{"file", 0, 5, "ﬁle"}, {"σίσυφοσ", 6, 20, "ΣΊΣΥΦΟΣ"}});
}

TEST(TokenizerTest, SpansWithMultibyteText) {
  ExpectTokens("naïve café — résumé",
               {{"naïve", 0, 6, "naïve"}, {"café", 7, 12, "café"}, {"résumé", 17, 25, "résumé"}});
  // Emoji (4 bytes) are dropped but shift the spans after them.
  ExpectTokens("👍 Größe 🎉 ok", {{"grösse", 5, 12, "Größe"}, {"ok", 18, 20, "ok"}});
}

TEST(TokenizerTest, ChineseIsSegmentedByDictionary) {
  const std::string input = "注意力机制";
  Tokenizer tokenizer;
  std::vector<Token> tokens = MustTokenize(tokenizer, input);
  ASSERT_GT(tokens.size(), 1u);
  std::string joined;
  bool has_jizhi = false;
  for (const Token& t : tokens) {
    // Chinese text is unchanged by NFKC_Casefold: text == surface.
    EXPECT_EQ(t.text, input.substr(t.begin, t.end - t.begin));
    EXPECT_EQ(t.begin, joined.size());  // contiguous
    // 1 to 3 characters of 3 bytes each.
    EXPECT_GE(t.text.size(), 3u);
    EXPECT_LE(t.text.size(), 9u);
    EXPECT_EQ(t.text.size() % 3, 0u);
    joined += t.text;
    if (t.text == "机制") has_jizhi = true;
  }
  EXPECT_EQ(joined, input);
  EXPECT_TRUE(has_jizhi);
}

TEST(TokenizerTest, MixedChineseAndEnglish) {
  ExpectTokens("我们用ICU进行分词, and BERT模型。", {{"我们", 0, 6, "我们"},
                                                     {"用", 6, 9, "用"},
                                                     {"icu", 9, 12, "ICU"},
                                                     {"进行", 12, 18, "进行"},
                                                     {"分词", 18, 24, "分词"},
                                                     {"and", 26, 29, "and"},
                                                     {"bert", 30, 34, "BERT"},
                                                     {"模型", 34, 40, "模型"}});
}

TEST(TokenizerTest, JapaneseKanaAndKanji) {
  // ICU's CJ dictionary knows 東京タワー as one word; okurigana and
  // particles come out as separate kana segments.
  ExpectTokens("東京タワーに行きました", {{"東京タワー", 0, 15, "東京タワー"},
                                          {"に", 15, 18, "に"},
                                          {"行き", 18, 24, "行き"},
                                          {"ま", 24, 27, "ま"},
                                          {"した", 27, 33, "した"}});
}

TEST(TokenizerTest, EmptyText) { ExpectTokens("", {}); }

TEST(TokenizerTest, NoLettersOrDigits) {
  ExpectTokens("!!! ... ---", {});
  ExpectTokens(" \t\n\r ", {});
  ExpectTokens("👍 🎉 ❤️ — «»", {});
}

TEST(TokenizerTest, EmbeddedNulIsASeparator) {
  ExpectTokens(std::string_view("ab\0cd", 5), {{"ab", 0, 2, "ab"}, {"cd", 3, 5, "cd"}});
}

void ExpectInvalidUtf8(std::string_view input, int64_t offset) {
  Tokenizer tokenizer;
  absl::StatusOr<std::vector<Token>> tokens = tokenizer.Tokenize(input);
  ASSERT_FALSE(tokens.ok());
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tokens.status().message(), "invalid UTF-8 at byte " + std::to_string(offset));
}

TEST(TokenizerTest, InvalidUtf8) {
  ExpectInvalidUtf8("abc\xff", 3);
  ExpectInvalidUtf8("ab\xe6\xb3", 2);        // truncated 3-byte sequence at the end
  ExpectInvalidUtf8("ab\xe6\xb3 cd", 2);     // truncated in the middle
  ExpectInvalidUtf8("\xc0\xaf", 0);          // overlong '/'
  ExpectInvalidUtf8("ok \xe0\x80\xaf", 3);   // overlong 3-byte '/'
  ExpectInvalidUtf8("x\xed\xa0\x80", 1);     // UTF-16 surrogate D800
  ExpectInvalidUtf8("\xf4\x90\x80\x80", 0);  // above U+10FFFF
  ExpectInvalidUtf8("hello \x80 world", 6);  // stray continuation byte
  ExpectInvalidUtf8("注意\xe5\x8a", 6);      // valid prefix, cut last character
}

TEST(TokenizerTest, MaxTokens) {
  TokenizerOptions options;
  options.max_tokens = 2;
  Tokenizer tokenizer(options);
  const std::string input = "One, two; three four";
  ExpectTokens(input, MustTokenize(tokenizer, input), {{"one", 0, 3, "One"}, {"two", 5, 8, "two"}});
  // Fewer words than the limit: all of them.
  ExpectTokens("solo", MustTokenize(tokenizer, "solo"), {{"solo", 0, 4, "solo"}});
  // The limit does not stop validation of the rest of the input.
  EXPECT_EQ(tokenizer.Tokenize("a b c \xff").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, MaxTokenBytes) {
  TokenizerOptions options;
  options.max_token_bytes = 4;
  Tokenizer tokenizer(options);
  // The text is cut; the span still covers the whole word.
  std::string input = "Abcdefgh ij";
  ExpectTokens(input, MustTokenize(tokenizer, input),
               {{"abcd", 0, 8, "Abcdefgh"}, {"ij", 9, 11, "ij"}});
  // Cut at a code point boundary: "机制" is 6 bytes, 4 would split 制.
  input = "注意力机制";
  std::vector<Token> tokens = MustTokenize(tokenizer, input);
  ASSERT_GT(tokens.size(), 1u);
  for (const Token& t : tokens) {
    EXPECT_EQ(t.text, input.substr(t.begin, 3)) << "cut to the first character";
  }
  // The limit applies to the normalised text: "Straße" -> "strasse" -> "stra".
  ExpectTokens("Straße", MustTokenize(tokenizer, "Straße"), {{"stra", 0, 7, "Straße"}});
  // ß is cut between its two folded s's (each one byte).
  options.max_token_bytes = 5;
  ExpectTokens("Straße", MustTokenize(Tokenizer(options), "Straße"), {{"stras", 0, 7, "Straße"}});
  // A first character longer than the limit drops the token.
  options.max_token_bytes = 2;
  ExpectTokens("机制 ab", MustTokenize(Tokenizer(options), "机制 ab"), {{"ab", 7, 9, "ab"}});
  // The default keeps 64 bytes; 0 means no limit.
  const std::string word(100, 'x');
  std::vector<Token> cut = MustTokenize(Tokenizer(), word);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].text, std::string(64, 'x'));
  EXPECT_EQ(cut[0].end, 100u);
  options.max_token_bytes = 0;
  std::vector<Token> whole = MustTokenize(Tokenizer(options), word);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].text, word);
}

// A seeded text of `words` words drawn from a small vocabulary (ASCII and
// multibyte), separated by spaces and punctuation. Appends each word's
// expected token (normalised text, surface form) to `expected`.
std::string GenerateText(size_t words, uint32_t seed,
                         std::vector<std::pair<std::string, std::string>>* expected) {
  static const std::vector<std::pair<std::string, std::string>> kVocab = {
      {"attention", "attention"}, {"Search", "search"}, {"vector", "vector"}, {"ENGINE", "engine"},
      {"café", "café"},           {"Größe", "grösse"},  {"2024", "2024"},     {"x86_64", "x86_64"},
      {"naïve", "naïve"},         {"ΣΟΦΙΑ", "σοφια"},   {"token", "token"},   {"ＡＢＣ", "abc"}};
  static const std::vector<std::string> kSeparators = {" ", " ", " ", ", ", ". ", "\n", " — "};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick_word(0, kVocab.size() - 1);
  std::uniform_int_distribution<size_t> pick_sep(0, kSeparators.size() - 1);
  std::string text;
  for (size_t i = 0; i < words; ++i) {
    const auto& [surface, normalised] = kVocab[pick_word(rng)];
    text += surface;
    text += kSeparators[pick_sep(rng)];
    expected->emplace_back(normalised, surface);
  }
  return text;
}

TEST(TokenizerTest, FiveMegabyteDocument) {
  std::vector<std::pair<std::string, std::string>> expected;
  std::string text;
  size_t words = 0;
  while (text.size() < (size_t{5} << 20)) {
    text += GenerateText(10000, uint32_t(words), &expected);
    words += 10000;
  }
  Tokenizer tokenizer;
  std::vector<Token> tokens = MustTokenize(tokenizer, text);
  ASSERT_EQ(tokens.size(), words);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Token& t = tokens[i];
    ASSERT_EQ(t.text, expected[i].first) << "token " << i;
    ASSERT_EQ(text.substr(t.begin, t.end - t.begin), expected[i].second) << "token " << i;
  }
  EXPECT_EQ(tokens.front().begin, 0u);
  EXPECT_LE(text.size() - tokens.back().end, 5u);  // only the last separator follows
}

TEST(TokenizerTest, ConcurrentCallsMatchSingleThreaded) {
  std::vector<std::string> texts;
  std::vector<std::pair<std::string, std::string>> unused;
  for (uint32_t seed = 0; seed < 8; ++seed) texts.push_back(GenerateText(300, seed, &unused));
  texts.push_back("我们用ICU进行分词, and BERT模型。注意力机制");
  texts.push_back("東京タワーに行きました");
  texts.push_back("");

  const Tokenizer tokenizer;
  std::vector<std::vector<Token>> want;
  for (const std::string& t : texts) want.push_back(MustTokenize(tokenizer, t));

  constexpr int kThreads = 4;
  constexpr int kRounds = 50;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          // Each thread walks the texts in a different order.
          const size_t k = (i + size_t(th) * 3) % texts.size();
          absl::StatusOr<std::vector<Token>> got = tokenizer.Tokenize(texts[k]);
          bool same = got.ok() && got->size() == want[k].size();
          for (size_t j = 0; same && j < got->size(); ++j) {
            const Token& a = (*got)[j];
            const Token& b = want[k][j];
            same = a.text == b.text && a.begin == b.begin && a.end == b.end;
          }
          if (!same) ++mismatches[th];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int th = 0; th < kThreads; ++th) EXPECT_EQ(mismatches[th], 0) << "thread " << th;
}

}  // namespace
}  // namespace attnsearch::text
