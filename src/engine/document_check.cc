#include "engine/document_check.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/status.h"
#include "core/utf8.h"
#include "engine/checks.h"
#include "text/tokenizer.h"

namespace attnsearch {
namespace {

// "WHERE.FIELD: REASON", or "WHERE: REASON" without a field; either part
// may be empty.
absl::Status Bad(absl::string_view where, absl::string_view field, absl::string_view reason) {
  std::string name(where);
  if (!field.empty()) absl::StrAppend(&name, name.empty() ? "" : ".", field);
  return absl::InvalidArgumentError(name.empty() ? std::string(reason)
                                                 : absl::StrCat(name, ": ", reason));
}

// A numeric field's value as the proto words it ("12", "-3.5", "1e6"):
// decimal (not hex "0x10", which SimpleAtod takes) and finite; spaces
// around it are ignored.
bool IsPlainNumber(absl::string_view v) {
  const absl::string_view digits =
      absl::StripPrefix(absl::StripPrefix(absl::StripAsciiWhitespace(v), "-"), "+");
  if (absl::StartsWithIgnoreCase(digits, "0x")) return false;
  double x;
  return absl::SimpleAtod(v, &x) && std::isfinite(x);
}

absl::Status CheckIdAndMetadata(const Document& doc, const DocumentRules& rules,
                                absl::string_view where) {
  if (doc.id.empty()) return Bad(where, "id", "must not be empty");
  if (doc.id.size() > kMaxIdBytes) {
    return Bad(where, "id", absl::StrCat("longer than ", kMaxIdBytes, " bytes"));
  }
  if (doc.metadata.count("") > 0) {
    return Bad(where, "metadata", "a key must not be empty (a filter could never name it)");
  }
  for (const std::string& f : rules.numeric_fields) {
    auto it = doc.metadata.find(f);
    if (it == doc.metadata.end()) continue;
    if (!IsPlainNumber(it->second)) {
      const std::string& v = it->second;
      return Bad(where, absl::StrCat("metadata[\"", f, "\"]"),
                 absl::StrCat("\"", v.size() > 64 ? v.substr(0, 64) + "..." : v,
                              "\" is not a number (numeric field)"));
    }
  }
  if (const size_t bad = FindInvalidUtf8(doc.text); bad != absl::string_view::npos) {
    return Bad(where, "text", absl::StrCat("invalid UTF-8 at byte ", bad));
  }
  return absl::OkStatus();
}

absl::Status CheckTextOnly(const Document& doc, absl::string_view where) {
  if (doc.text.empty()) return Bad(where, "", kNoContentReason);
  if (!doc.token_texts.empty() || !doc.token_spans.empty()) {
    return Bad(where, "token_texts", "given without a token matrix (the encoder makes its own)");
  }
  // The encoder refuses text without words; the first word is enough.
  const text::Tokenizer first_word(text::TokenizerOptions{.max_tokens = 1});
  absl::StatusOr<std::vector<text::Token>> words = first_word.Tokenize(doc.text);
  if (!words.ok()) return Bad(where, "text", words.status().message());
  if (words->empty()) {
    return Bad(where, "text",
               "contains no words (a document without vectors is encoded from its words)");
  }
  return absl::OkStatus();
}

absl::Status CheckTokenTextsAndSpans(const Document& doc, absl::string_view where) {
  if (!doc.token_texts.empty() && doc.token_texts.size() != doc.num_tokens) {
    return Bad(where, "token_texts",
               absl::StrCat("expected ", doc.num_tokens, " entries, got ", doc.token_texts.size()));
  }
  if (doc.token_spans.empty()) return absl::OkStatus();
  if (doc.token_spans.size() != doc.num_tokens) {
    return Bad(where, "token_spans",
               absl::StrCat("expected ", doc.num_tokens, " entries, got ", doc.token_spans.size()));
  }
  for (size_t j = 0; j < doc.token_spans.size(); ++j) {
    const auto [b, e] = doc.token_spans[j];
    if (b > e || e > doc.text.size()) {
      return Bad(where, absl::StrCat("token_spans[", j, "]"),
                 absl::StrCat("[", b, ", ", e, ") is not a span of the text (", doc.text.size(),
                              " bytes)"));
    }
    // A span's ends fall between UTF-8 characters: a snippet cut there
    // would not be UTF-8, which a string field of a response must be.
    const auto continuation = [&](uint32_t at) {
      return at < doc.text.size() && (uint8_t(doc.text[at]) & 0xC0) == 0x80;
    };
    if (continuation(b) || continuation(e)) {
      return Bad(where, absl::StrCat("token_spans[", j, "]"),
                 absl::StrCat("[", b, ", ", e,
                              ") does not begin and end on UTF-8 character "
                              "boundaries of the text"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckDocument(Document* doc, const DocumentRules& rules, absl::string_view where) {
  ATTN_RETURN_IF_ERROR(CheckIdAndMetadata(*doc, rules, where));
  if (IsTextOnly(*doc)) return CheckTextOnly(*doc, where);
  const uint32_t dim = rules.dim;
  const std::string field = where.empty() ? "" : absl::StrCat(where, ".");
  if (!doc->pooled.empty()) {
    if (doc->pooled.size() != dim) {
      return Bad(where, "pooled",
                 absl::StrCat("expected ", dim, " values, got ", doc->pooled.size()));
    }
    ATTN_RETURN_IF_ERROR(NormalizeRows(doc->pooled.data(), 1, dim, field + "pooled"));
  }
  if (doc->num_tokens > 0 || !doc->tokens.empty()) {
    if (doc->num_tokens > rules.max_tokens) {
      return Bad(where, "tokens",
                 absl::StrCat(doc->num_tokens, " rows exceed the limit of ", rules.max_tokens));
    }
    if (doc->tokens.size() != size_t(doc->num_tokens) * dim) {
      return Bad(where, "tokens",
                 absl::StrCat("expected ", doc->num_tokens, " x ", dim, " values, got ",
                              doc->tokens.size()));
    }
    ATTN_RETURN_IF_ERROR(NormalizeRows(doc->tokens.data(), doc->num_tokens, dim, field + "tokens"));
  }
  ATTN_RETURN_IF_ERROR(CheckTokenTextsAndSpans(*doc, where));
  if (doc->pooled.empty() &&
      !PoolTokens(doc->tokens, doc->num_tokens, dim, nullptr, &doc->pooled)) {
    return Bad(where, "tokens",
               "the token vectors cancel out (their mean, normalised per row, is zero or nearly "
               "so); give pooled");
  }
  if (doc->num_tokens == 0) {
    doc->tokens = doc->pooled;
    doc->num_tokens = 1;
  }
  return absl::OkStatus();
}

}  // namespace attnsearch
