#include "engine/snippet.h"

#include <algorithm>

namespace attnsearch {
namespace {

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// How far a window's edge moves to leave a word whole.
constexpr uint32_t kWordSlack = 24;

}  // namespace

std::string MakeSnippet(std::string_view text, std::vector<MatchedSpan> spans,
                        const SnippetOptions& options) {
  const uint32_t size = uint32_t(text.size());
  spans.erase(
      std::remove_if(spans.begin(), spans.end(),
                     [&](const MatchedSpan& s) { return s.begin >= s.end || s.end > size; }),
      spans.end());
  if (spans.empty()) return "";
  // Spans that carry little of the score (a stop word's best match) are not marked.
  float top = 0.f;
  for (const MatchedSpan& s : spans) top = std::max(top, s.weight);
  if (top > 0.f && options.min_share > 0.f) {
    spans.erase(
        std::remove_if(spans.begin(), spans.end(),
                       [&](const MatchedSpan& s) { return s.weight < options.min_share * top; }),
        spans.end());
  }
  std::sort(spans.begin(), spans.end(),
            [](const MatchedSpan& a, const MatchedSpan& b) { return a.begin < b.begin; });
  std::vector<MatchedSpan> merged = {spans[0]};
  for (size_t i = 1; i < spans.size(); ++i) {
    MatchedSpan& last = merged.back();
    if (spans[i].begin <= last.end) {  // overlapping or touching
      last.end = std::max(last.end, spans[i].end);
      last.weight += spans[i].weight;
    } else {
      merged.push_back(spans[i]);
    }
  }
  const MatchedSpan& best = *std::max_element(
      merged.begin(), merged.end(),
      [](const MatchedSpan& a, const MatchedSpan& b) { return a.weight < b.weight; });
  uint32_t from = best.begin > options.before ? best.begin - options.before : 0;
  uint32_t to = std::min(size, best.end + options.after);
  while (from > 0 && IsContinuation(text[from])) --from;
  while (to < size && IsContinuation(text[to])) ++to;
  // An edge inside a word moves to the word's end (the start) or its start
  // (the end), when a space is near enough, so no word is cut; then the
  // spaces at the edges go.
  if (from > 0 && !IsSpace(text[from - 1]) && !IsSpace(text[from])) {
    const uint32_t limit = std::min(best.begin, from + kWordSlack);
    uint32_t i = from;
    while (i < limit && !IsSpace(text[i])) ++i;
    if (i < limit) from = i;
  }
  while (from < best.begin && IsSpace(text[from])) ++from;
  if (to < size && !IsSpace(text[to]) && !IsSpace(text[to - 1])) {
    const uint32_t limit = std::max(best.end, to > kWordSlack ? to - kWordSlack : 0);
    uint32_t i = to;
    while (i > limit && !IsSpace(text[i - 1])) --i;
    if (i > limit) to = i;
  }
  while (to > best.end && IsSpace(text[to - 1])) --to;
  // Never cut a marked span at the window's edges.
  for (const MatchedSpan& s : merged) {
    if (s.begin < from && s.end > from) from = s.begin;
    if (s.begin < to && s.end > to) to = s.end;
  }
  std::string out;
  if (from > 0) out += options.ellipsis;
  uint32_t at = from;
  for (const MatchedSpan& s : merged) {
    if (s.end <= from || s.begin >= to) continue;
    out.append(text.substr(at, s.begin - at));
    out += options.pre;
    out.append(text.substr(s.begin, s.end - s.begin));
    out += options.post;
    at = s.end;
  }
  out.append(text.substr(at, to - at));
  if (to < size) out += options.ellipsis;
  return out;
}

}  // namespace attnsearch
