#include "text/tokenizer.h"

#include <unicode/brkiter.h>
#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/ubrk.h>
#include <unicode/utext.h>

#include <limits>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/utf8.h"

namespace attnsearch::text {
namespace {

// The calling thread's word break iterator, created on the thread's first
// call. RuleBasedBreakIterator is not thread-safe; one per thread also keeps
// its caches allocated between calls. (The process's first creation loads
// ICU's rules and dictionaries, ~150 us; later ones take ~2 us.) Between calls
// it still points at the previous caller's text, which it never reads again:
// every call starts with setText.
absl::StatusOr<icu::BreakIterator*> ThreadWordIterator() {
  thread_local std::unique_ptr<icu::BreakIterator> iter;
  if (iter == nullptr) {
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::BreakIterator> created(
        icu::BreakIterator::createWordInstance(icu::Locale::getRoot(), status));
    if (U_FAILURE(status) || created == nullptr) {
      return absl::InternalError(absl::StrCat("ICU word break iterator: ", u_errorName(status)));
    }
    iter = std::move(created);
  }
  return iter.get();
}

// Cuts `s` to at most `max_bytes` bytes without splitting a code point.
void CutAtCodePoint(std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return;
  size_t cut = max_bytes;
  while (cut > 0 && U8_IS_TRAIL(static_cast<uint8_t>(s[cut]))) --cut;
  s.resize(cut);
}

}  // namespace

Tokenizer::Tokenizer(TokenizerOptions options) : options_(options) {}

absl::StatusOr<std::vector<Token>> Tokenizer::Tokenize(std::string_view utf8) const {
  // BreakIterator positions are int32_t.
  if (utf8.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("text of ", utf8.size(), " bytes is too long to tokenize"));
  }
  if (const size_t bad = FindInvalidUtf8(utf8); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", bad));
  }
  std::vector<Token> tokens;
  if (utf8.empty()) return tokens;

  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc_cf = icu::Normalizer2::getNFKCCasefoldInstance(status);
  if (U_FAILURE(status)) {
    return absl::InternalError(absl::StrCat("ICU NFKC_Casefold: ", u_errorName(status)));
  }
  absl::StatusOr<icu::BreakIterator*> iter_or = ThreadWordIterator();
  if (!iter_or.ok()) return iter_or.status();
  icu::BreakIterator* iter = *iter_or;

  // A UTF-8 UText makes the iterator's positions ("native indexes") byte
  // offsets into `utf8` itself, so no UTF-16 copy or offset map is needed.
  // setText keeps a shallow clone of `text`: `utf8` must outlive the loop.
  UText text = UTEXT_INITIALIZER;
  utext_openUTF8(&text, utf8.data(), static_cast<int64_t>(utf8.size()), &status);
  iter->setText(&text, status);
  if (U_FAILURE(status)) {
    utext_close(&text);
    return absl::InternalError(absl::StrCat("ICU setText: ", u_errorName(status)));
  }

  int32_t begin = iter->first();
  for (int32_t end = iter->next(); end != icu::BreakIterator::DONE;
       begin = end, end = iter->next()) {
    const int32_t rule = iter->getRuleStatus();
    if (rule < UBRK_WORD_NUMBER || rule >= UBRK_WORD_IDEO_LIMIT) continue;
    Token token;
    icu::StringByteSink<std::string> sink(&token.text);
    nfkc_cf->normalizeUTF8(0, icu::StringPiece(utf8.data() + begin, end - begin), sink,
                           /*edits=*/nullptr, status);
    if (U_FAILURE(status)) break;
    if (options_.max_token_bytes > 0) CutAtCodePoint(token.text, options_.max_token_bytes);
    if (token.text.empty()) continue;
    token.begin = static_cast<uint32_t>(begin);
    token.end = static_cast<uint32_t>(end);
    tokens.push_back(std::move(token));
    if (options_.max_tokens > 0 && tokens.size() >= options_.max_tokens) break;
  }
  utext_close(&text);
  if (U_FAILURE(status)) {
    return absl::InternalError(absl::StrCat("ICU NFKC_Casefold: ", u_errorName(status)));
  }
  return tokens;
}

}  // namespace attnsearch::text
