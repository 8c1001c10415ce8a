// Tokenizer: splits UTF-8 text into normalised word tokens with their byte
// spans in the original text.
//
// Words are found by ICU's word break rules for the root locale (UAX #29 with
// ICU's extensions): Chinese and Japanese runs are segmented with ICU's
// dictionary, Thai/Lao/Khmer/Burmese likewise. A segment is kept when ICU
// tags it as a number, a letter word, kana or ideographs; spaces,
// punctuation, symbols and emoji are dropped. ICU's rules decide what a word
// is: "3.14", "foo_bar", "don't" and "foo.bar" stay whole.
//
// Each kept segment is normalised with Unicode NFKC_Casefold (full-width
// forms, ligatures and compatibility characters folded, case folded, so
// "ＡＢＣ" -> "abc" and "Straße" -> "strasse"); a segment that normalises to
// nothing (default-ignorable characters only) is skipped.
//
// ICU is an implementation detail: it never appears in this header.
//
// Thread safety: a Tokenizer is immutable after construction; Tokenize may be
// called concurrently from any number of threads on one Tokenizer. (Each
// thread lazily creates and then reuses its own ICU break iterator.)
#ifndef ATTNSEARCH_TEXT_TOKENIZER_H_
#define ATTNSEARCH_TEXT_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch::text {

// One word of the input.
struct Token {
  // The normalised form (NFKC_Casefold), possibly cut to
  // TokenizerOptions::max_token_bytes. Never empty.
  std::string text;
  // Byte span [begin, end) of the whole word in the ORIGINAL UTF-8 input,
  // on code point boundaries; input.substr(begin, end - begin) is the word as
  // written (also when `text` was cut).
  uint32_t begin = 0;
  uint32_t end = 0;
};

struct TokenizerOptions {
  // Longer normalised tokens are cut to at most this many bytes, at a code
  // point boundary. A token whose first code point alone is longer is
  // dropped. 0 = no limit. Default: 64.
  size_t max_token_bytes = 64;
  // Stop after this many tokens; 0 = no limit. Default: 0.
  size_t max_tokens = 0;
};

class Tokenizer {
 public:
  explicit Tokenizer(TokenizerOptions options = {});

  // Splits `utf8` into word tokens, in text order.
  //
  // The whole input is validated first: malformed UTF-8 (bad or truncated
  // sequences, overlong forms, surrogates, code points above U+10FFFF) gives
  // INVALID_ARGUMENT "invalid UTF-8 at byte N", N being the offset of the
  // first bad sequence, and no tokens. Input of 2^31 bytes or more is
  // INVALID_ARGUMENT too. Empty input, or input without letters or digits,
  // gives an empty vector. INTERNAL (with ICU's error name) if ICU fails,
  // e.g. its data cannot be loaded.
  //
  // Runs in time linear in the input length.
  absl::StatusOr<std::vector<Token>> Tokenize(std::string_view utf8) const;

  const TokenizerOptions& options() const { return options_; }

 private:
  TokenizerOptions options_;
};

}  // namespace attnsearch::text

#endif  // ATTNSEARCH_TEXT_TOKENIZER_H_
