#include "engine/snippet.h"

#include <gtest/gtest.h>

namespace attnsearch {
namespace {

TEST(SnippetTest, MergesAndMarksSpans) {
  const std::string text = "secure copy of files to a remote host over ssh";
  // "secure" (0,6), "copy" (7,11), "remote host" twice overlapping, "ssh".
  std::vector<MatchedSpan> spans = {
      {7, 11, 0.2f}, {0, 6, 0.1f}, {26, 32, 0.05f}, {27, 37, 0.05f}, {43, 46, 0.3f}};
  EXPECT_EQ(MakeSnippet(text, spans),
            "<em>secure</em> <em>copy</em> of files to a <em>remote host</em> over <em>ssh</em>");
  SnippetOptions o;
  o.pre = "[";
  o.post = "]";
  EXPECT_EQ(MakeSnippet("ab cd", {{0, 2, 1.f}, {2, 3, 1.f}}, o), "[ab ]cd");
}

TEST(SnippetTest, WindowAroundTheBestSpanWithEllipses) {
  std::string text(500, 'x');
  text.replace(300, 5, "magic");
  SnippetOptions o;
  o.before = 10;
  o.after = 20;
  const std::string s = MakeSnippet(text, {{300, 305, 1.f}, {10, 12, 0.1f}}, o);
  EXPECT_EQ(s, "…" + std::string(10, 'x') + "<em>magic</em>" + std::string(20, 'x') + "…");
}

// The window's edges move inward to a space rather than cut a word; a
// word longer than the slack (no space near) is cut, as before.
TEST(SnippetTest, EdgesDoNotCutWords) {
  const std::string text =
      "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike";
  const size_t golf = text.find("golf");
  SnippetOptions o;
  o.before = 12;  // would land inside "echo" or "foxtrot"
  o.after = 14;   // would land inside "india" or "juliet"
  const std::string s = MakeSnippet(text, {{uint32_t(golf), uint32_t(golf + 4), 1.f}}, o);
  EXPECT_EQ(s, "…foxtrot <em>golf</em> hotel india…") << s;
  std::string words(200, 'y');
  words.replace(100, 5, " key ");
  o.before = 10;  // a space 9 bytes in: the part-word goes
  o.after = 10;
  EXPECT_EQ(MakeSnippet(words, {{101, 104, 1.f}}, o), "…<em>key</em>…");
  o.before = 40;  // none within the slack: cut inside the long word
  o.after = 40;
  EXPECT_EQ(MakeSnippet(words, {{101, 104, 1.f}}, o),
            "…" + std::string(39, 'y') + " <em>key</em> " + std::string(39, 'y') + "…");
}

TEST(SnippetTest, NeverSplitsUtf8AndIgnoresBadSpans) {
  const std::string text = "注意力机制 is attention";  // 3 bytes per CJK character
  SnippetOptions o;
  o.before = 1;  // would land inside a character
  o.after = 100;
  const std::string s = MakeSnippet(text, {{3, 9, 1.f}, {5, 100, 9.f}, {4, 4, 9.f}}, o);
  EXPECT_EQ(s, "注<em>意力</em>机制 is attention");
  EXPECT_EQ(MakeSnippet(text, {}), "");
}

}  // namespace
}  // namespace attnsearch

namespace attnsearch {
namespace {

// A span carrying under min_share of the heaviest span's weight is not marked.
TEST(SnippetTest, LightSpansAreNotMarked) {
  const std::string text = "copy the files to a remote host";
  SnippetOptions o;
  o.pre = "[";
  o.post = "]";
  // "copy" 1.0, "the" 0.05, "files" 0.5.
  const std::vector<MatchedSpan> spans = {{0, 4, 1.0f}, {5, 8, 0.05f}, {9, 14, 0.5f}};
  EXPECT_EQ(MakeSnippet(text, spans, o), "[copy] the [files] to a remote host");
  o.min_share = 0.f;
  EXPECT_EQ(MakeSnippet(text, spans, o), "[copy] [the] [files] to a remote host");
}

}  // namespace
}  // namespace attnsearch
