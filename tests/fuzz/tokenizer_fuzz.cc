// Body of the tokenizer fuzz target (see fuzz_targets.h).
#include <string_view>

#include "core/utf8.h"
#include "fuzz/fuzz_targets.h"
#include "indexer/record_parser.h"
#include "text/tokenizer.h"

namespace attnsearch::fuzz {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

int FuzzTokenizer(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const size_t kMaxTokenBytes[] = {64, 0, 1, 3, 4, 8, 16, 64};
  static const size_t kMaxTokens[] = {0, 0, 1, 5};
  text::TokenizerOptions options;
  options.max_token_bytes = kMaxTokenBytes[data[0] & 7];
  options.max_tokens = kMaxTokens[(data[0] >> 3) & 3];
  // One tokenizer per option set, as the engine keeps one per collection
  // (each thread's ICU break iterator is reused across calls).
  static const text::Tokenizer* tokenizers[32] = {};
  const text::Tokenizer*& tokenizer = tokenizers[data[0] & 31];
  if (tokenizer == nullptr) tokenizer = new text::Tokenizer(options);

  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto tokens = tokenizer->Tokenize(input);
  const bool valid_utf8 = FindInvalidUtf8(input) == std::string_view::npos;
  if (!tokens.ok()) {
    ATTN_FUZZ_CHECK(!valid_utf8);
    return 0;
  }
  ATTN_FUZZ_CHECK(valid_utf8);
  if (options.max_tokens > 0) ATTN_FUZZ_CHECK(tokens->size() <= options.max_tokens);
  uint32_t prev_end = 0;
  for (const text::Token& t : *tokens) {
    ATTN_FUZZ_CHECK(!t.text.empty());
    ATTN_FUZZ_CHECK(FindInvalidUtf8(t.text) == std::string_view::npos);
    if (options.max_token_bytes > 0) ATTN_FUZZ_CHECK(t.text.size() <= options.max_token_bytes);
    ATTN_FUZZ_CHECK(t.begin < t.end && t.end <= input.size());
    ATTN_FUZZ_CHECK(t.begin >= prev_end);
    ATTN_FUZZ_CHECK(!IsContinuation(input[t.begin]));
    ATTN_FUZZ_CHECK(t.end == input.size() || !IsContinuation(input[t.end]));
    prev_end = t.end;
  }
  return 0;
}

}  // namespace attnsearch::fuzz
