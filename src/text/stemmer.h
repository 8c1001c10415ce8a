// Stemmer: reduces a normalised word to its stem with a Snowball algorithm
// ("english" -> "connect" for "connected", "connection", "connecting").
//
// The encoder stems every token so that inflections of a word share its
// lexical identity and its statistics. Words with no letters of the
// algorithm's alphabet (numbers, CJK) come back unchanged.
//
// Thread safety: Stem may be called concurrently on one Stemmer (each thread
// keeps its own Snowball state).
#ifndef ATTNSEARCH_TEXT_STEMMER_H_
#define ATTNSEARCH_TEXT_STEMMER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch::text {

class Stemmer {
 public:
  // `language` is a Snowball algorithm name ("english", "german", "porter",
  // ...) or "none" (Stem returns its input). INVALID_ARGUMENT naming the
  // language and listing the known ones otherwise.
  static absl::StatusOr<Stemmer> Create(const std::string& language);

  // The stem of `word` (UTF-8, already case folded).
  std::string Stem(std::string_view word) const;

  const std::string& language() const { return language_; }

  // The Snowball algorithms available.
  static std::vector<std::string> Languages();

 private:
  explicit Stemmer(std::string language) : language_(std::move(language)) {}
  std::string language_;
};

}  // namespace attnsearch::text

#endif  // ATTNSEARCH_TEXT_STEMMER_H_
