#include "engine/snippet.h"

#include <algorithm>

namespace attnsearch {
namespace {

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

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
