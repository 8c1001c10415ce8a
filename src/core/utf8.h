// UTF-8 validation, one rule for every module: a valid sequence is a
// well-formed, shortest-form encoding of a Unicode scalar value (no
// surrogates, nothing above U+10FFFF), as RFC 3629 defines.
#ifndef ATTNSEARCH_CORE_UTF8_H_
#define ATTNSEARCH_CORE_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace attnsearch {

// The offset of the first byte of `s` that does not begin a valid sequence
// (an invalid or truncated sequence, an overlong form, a surrogate, a code
// point above U+10FFFF), or std::string_view::npos when all of `s` is valid.
size_t FindInvalidUtf8(std::string_view s);

// `s` itself when it holds at most `max_bytes` bytes; else its first
// max_bytes or fewer (cut at a UTF-8 character boundary) followed by
// "… (N bytes, cut)", so a message quoting its input stays bounded.
std::string CutText(std::string_view s, size_t max_bytes);

// Appends the UTF-8 encoding of `code_point`, a Unicode scalar value (the
// caller checks: not a surrogate, at most U+10FFFF).
void AppendUtf8(uint32_t code_point, std::string* out);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_UTF8_H_
