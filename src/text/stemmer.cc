#include "text/stemmer.h"

#include <libstemmer.h>

#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnsearch::text {
namespace {

struct StemmerDeleter {
  void operator()(sb_stemmer* s) const { sb_stemmer_delete(s); }
};
using SnowballPtr = std::unique_ptr<sb_stemmer, StemmerDeleter>;

// This thread's Snowball state for `language` (created on first use).
sb_stemmer* ThreadStemmer(const std::string& language) {
  thread_local std::map<std::string, SnowballPtr> stemmers;
  auto it = stemmers.find(language);
  if (it == stemmers.end()) {
    it = stemmers.emplace(language, SnowballPtr(sb_stemmer_new(language.c_str(), "UTF_8"))).first;
  }
  return it->second.get();
}

}  // namespace

absl::StatusOr<Stemmer> Stemmer::Create(const std::string& language) {
  if (language == "none") return Stemmer(language);
  SnowballPtr probe(sb_stemmer_new(language.c_str(), "UTF_8"));
  if (probe == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("stem_language: unknown language \"", language,
                                                   "\"; known: none, ",
                                                   absl::StrJoin(Languages(), ", ")));
  }
  return Stemmer(language);
}

std::string Stemmer::Stem(std::string_view word) const {
  if (language_ == "none" || word.empty()) return std::string(word);
  sb_stemmer* s = ThreadStemmer(language_);
  const sb_symbol* out = sb_stemmer_stem(s, reinterpret_cast<const sb_symbol*>(word.data()),
                                         static_cast<int>(word.size()));
  if (out == nullptr) return std::string(word);  // out of memory in Snowball
  return std::string(reinterpret_cast<const char*>(out), sb_stemmer_length(s));
}

std::vector<std::string> Stemmer::Languages() {
  std::vector<std::string> names;
  for (const char** p = sb_stemmer_list(); *p != nullptr; ++p) names.emplace_back(*p);
  return names;
}

}  // namespace attnsearch::text
