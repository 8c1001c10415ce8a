// Highlighted snippets: the part of a document's text around its matched
// token spans, with the spans merged and marked.
#ifndef ATTNSEARCH_ENGINE_SNIPPET_H_
#define ATTNSEARCH_ENGINE_SNIPPET_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnsearch {

// A matched byte span of the text and how much it contributed to the score.
struct MatchedSpan {
  uint32_t begin = 0;
  uint32_t end = 0;
  float weight = 0.f;
};

struct SnippetOptions {
  // Marks put around each merged span. Default: "<em>" and "</em>".
  std::string pre = "<em>";
  std::string post = "</em>";
  // Bytes of text around the best span (before it, after it). Defaults: 80, 160.
  uint32_t before = 80;
  uint32_t after = 160;
  // Spans weighing less than this share of the heaviest span are left
  // unmarked. Default: 0.1.
  float min_share = 0.1f;
  // Put before / after a snippet that does not start / end the text.
  std::string ellipsis = "…";
};

// Merges overlapping or touching spans, centres a window on the merged span
// of highest total weight, and marks every merged span inside the window.
// The window's edges never split a UTF-8 sequence, nor a word when a space
// lies within a few bytes of the edge (the edge moves inward to it). Spans
// outside the text are ignored. Empty when there is no span.
std::string MakeSnippet(std::string_view text, std::vector<MatchedSpan> spans,
                        const SnippetOptions& options = {});

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_SNIPPET_H_
