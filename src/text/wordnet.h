// WordNet: word relations read from Princeton WordNet 3.0's database files
// (Debian's wordnet-base installs them in /usr/share/wordnet), for the
// encoder to relate words its training texts never put side by side.
//
// Load reads data.{noun,verb,adj,adv} and index.{noun,verb,adj,adv} and
// turns them into weighted pairs of single-word lemmas (lower case;
// multi-word lemmas such as "file_transfer" are left out):
//   synonyms   two lemmas of one synset;
//   similar    an adjective and its head ("&"), "also see" ("^");
//   derived    derivationally related forms ("+") and pertainyms ("\"),
//              e.g. "securely" -> "secure", "encrypt" -> "encryption";
//   hypernyms  a synset's lemmas and those of its direct hypernyms ("@",
//              "@i") — "computer" and "machine".
// A pair's weight is its relation's (WordNetOptions) times how common the
// sense is for each lemma: 1 / rank of the synset among the lemma's senses
// (index.* lists them most frequent first). A pair related several ways
// keeps its largest weight.
//
// Thread safety: a loaded WordNet is immutable.
#ifndef ATTNSEARCH_TEXT_WORDNET_H_
#define ATTNSEARCH_TEXT_WORDNET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch::text {

struct WordNetOptions {
  // The folder holding data.noun, index.noun, ... Default: Debian's.
  std::string dir = "/usr/share/wordnet";
  // Relation weights; 0 leaves a relation out. Defaults 1, 0.5, 0.5, 0.5.
  float synonym = 1.f;
  float similar = 0.5f;
  float derived = 0.5f;
  float hypernym = 0.5f;
  // Senses of a lemma beyond this rank are left out. Default 4.
  uint32_t max_sense_rank = 4;
};

struct WordRelation {
  std::string a, b;  // a < b
  float weight = 0;
};

class WordNet {
 public:
  // NOT_FOUND when options.dir has no WordNet database; DATA_LOSS naming the
  // file and line for a malformed one.
  static absl::StatusOr<WordNet> Load(const WordNetOptions& options = {});

  // Every related pair once, sorted by (a, b).
  const std::vector<WordRelation>& relations() const { return relations_; }
  // Distinct single-word lemmas.
  uint64_t lemmas() const { return lemmas_; }

 private:
  std::vector<WordRelation> relations_;
  uint64_t lemmas_ = 0;
};

}  // namespace attnsearch::text

#endif  // ATTNSEARCH_TEXT_WORDNET_H_
