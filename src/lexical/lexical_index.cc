#include "lexical/lexical_index.h"

#include <xapian.h>

#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/checksum.h"
#include "core/status.h"
#include "text/stemmer.h"
#include "text/tokenizer.h"

namespace attnsearch {
namespace {

// The metadata key holding the sequence the index is current to.
constexpr char kAppliedKey[] = "attnsearch.applied";
// The value slot holding a document's text checksum (Move compares it).
constexpr Xapian::valueno kTextSlot = 0;

std::string TextChecksum(std::string_view text) {
  const uint64_t sum = Checksum64(text.data(), text.size());
  return std::string(reinterpret_cast<const char*>(&sum), sizeof(sum));
}

// The boolean term that names a document: "Q" and its label (the words are
// case folded, so none starts with an upper-case Q).
std::string IdTerm(Label label) { return absl::StrCat("Q", label); }

std::string LabelData(Label label) {
  std::string data(sizeof(label), '\0');
  std::memcpy(data.data(), &label, sizeof(label));
  return data;
}

Label LabelOf(const std::string& data) {
  Label label = 0;
  if (data.size() == sizeof(label)) std::memcpy(&label, data.data(), sizeof(label));
  return label;
}

// A Xapian error as a Status: damaged or unreadable files DATA_LOSS on open,
// a held lock FAILED_PRECONDITION, other database (I/O) errors UNAVAILABLE.
// (Xapian's errors are told apart by their type names.)
absl::Status FromXapian(const Xapian::Error& e, const std::string& what, bool opening) {
  const std::string type = e.get_type();
  const std::string message = absl::StrCat("lexical index: ", what, ": ", type, ": ", e.get_msg());
  if (type == "DatabaseLockError") {
    return absl::FailedPreconditionError(message + " (another process holds it)");
  }
  if (type.rfind("Database", 0) == 0) {
    return opening ? absl::DataLossError(message) : absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

class AcceptLabels : public Xapian::MatchDecider {
 public:
  explicit AcceptLabels(const std::function<bool(Label)>& accept) : accept_(accept) {}
  bool operator()(const Xapian::Document& doc) const override {
    return accept_(LabelOf(doc.get_data()));
  }

 private:
  const std::function<bool(Label)>& accept_;
};

}  // namespace

absl::Status LexicalOptions::Validate() const {
  if (!std::isfinite(k1) || k1 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("k1: must be finite and >= 0, got ", k1));
  }
  if (!(b >= 0 && b <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("b: must be in [0, 1], got ", b));
  }
  absl::StatusOr<text::Stemmer> stemmer = text::Stemmer::Create(stem_language);
  if (!stemmer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("stem_language: ", stemmer.status().message()));
  }
  return absl::OkStatus();
}

struct LexicalIndex::Rep {
  Rep(LexicalOptions o, text::Stemmer s, Xapian::WritableDatabase d)
      : options(std::move(o)), stemmer(std::move(s)), db(std::move(d)) {}
  const LexicalOptions options;
  const text::Tokenizer tokenizer;
  const text::Stemmer stemmer;
  mutable absl::Mutex mu;
  mutable Xapian::WritableDatabase db ABSL_GUARDED_BY(mu);
};

LexicalIndex::LexicalIndex(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
LexicalIndex::~LexicalIndex() = default;

absl::StatusOr<std::unique_ptr<LexicalIndex>> LexicalIndex::Open(const std::string& dir,
                                                                 const LexicalOptions& options) {
  ATTN_RETURN_IF_ERROR(options.Validate());
  ATTN_ASSIGN_OR_RETURN(text::Stemmer stemmer, text::Stemmer::Create(options.stem_language));
  try {
    Xapian::WritableDatabase db(dir, Xapian::DB_CREATE_OR_OPEN);
    return std::unique_ptr<LexicalIndex>(
        new LexicalIndex(std::make_unique<Rep>(options, std::move(stemmer), std::move(db))));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, absl::StrCat("opening ", dir), /*opening=*/true);
  }
}

absl::StatusOr<std::vector<std::string>> LexicalIndex::Terms(std::string_view text) const {
  ATTN_ASSIGN_OR_RETURN(std::vector<text::Token> tokens, rep_->tokenizer.Tokenize(text));
  std::vector<std::string> terms;
  terms.reserve(tokens.size());
  for (const text::Token& t : tokens) {
    std::string stem = rep_->stemmer.Stem(t.text);
    if (!stem.empty()) terms.push_back(std::move(stem));
  }
  return terms;
}

absl::Status LexicalIndex::Put(Label label, std::string_view text) {
  ATTN_ASSIGN_OR_RETURN(const std::vector<std::string> terms, Terms(text));
  if (terms.empty()) return Remove(label);
  Xapian::Document doc;
  doc.set_data(LabelData(label));
  doc.add_value(kTextSlot, TextChecksum(text));
  doc.add_boolean_term(IdTerm(label));
  for (const std::string& term : terms) doc.add_term(term);
  absl::MutexLock lock(&rep_->mu);
  try {
    rep_->db.replace_document(IdTerm(label), doc);
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "indexing a document", false);
  }
  return absl::OkStatus();
}

absl::Status LexicalIndex::Remove(Label label) {
  absl::MutexLock lock(&rep_->mu);
  try {
    rep_->db.delete_document(IdTerm(label));
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "removing a document", false);
  }
  return absl::OkStatus();
}

absl::Status LexicalIndex::Move(Label from, Label to, std::string_view text) {
  {
    absl::MutexLock lock(&rep_->mu);
    try {
      Xapian::WritableDatabase& db = rep_->db;
      const std::string from_term = IdTerm(from);
      Xapian::PostingIterator it = db.postlist_begin(from_term);
      if (it != db.postlist_end(from_term)) {
        Xapian::Document doc = db.get_document(*it);
        if (doc.get_value(kTextSlot) == TextChecksum(text)) {
          // Only the name and the data change: Xapian rewrites just those.
          doc.remove_term(from_term);
          doc.add_boolean_term(IdTerm(to));
          doc.set_data(LabelData(to));
          db.replace_document(*it, doc);
          return absl::OkStatus();
        }
        db.delete_document(*it);
      }
    } catch (const Xapian::Error& e) {
      return FromXapian(e, "moving a document", false);
    }
  }
  return Put(to, text);
}

absl::Status LexicalIndex::Commit(uint64_t applied) {
  absl::MutexLock lock(&rep_->mu);
  try {
    rep_->db.set_metadata(kAppliedKey, std::to_string(applied));
    rep_->db.commit();
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "committing", false);
  }
  return absl::OkStatus();
}

uint64_t LexicalIndex::applied() const {
  absl::MutexLock lock(&rep_->mu);
  try {
    const std::string value = rep_->db.get_metadata(kAppliedKey);
    return value.empty() ? 0 : std::stoull(value);
  } catch (const Xapian::Error&) {
    return 0;
  } catch (const std::exception&) {
    return 0;
  }
}

uint64_t LexicalIndex::documents() const {
  absl::MutexLock lock(&rep_->mu);
  return rep_->db.get_doccount();
}

absl::StatusOr<std::vector<LexicalHit>> LexicalIndex::Search(
    std::string_view query, size_t k, const std::function<bool(Label)>* accept) const {
  ATTN_ASSIGN_OR_RETURN(const std::vector<std::string> words, Terms(query));
  std::vector<LexicalHit> hits;
  if (words.empty() || k == 0) return hits;
  // Each word once, weighted by its count in the query (BM25's qf).
  std::map<std::string, Xapian::termcount> counts;
  for (const std::string& w : words) ++counts[w];
  std::vector<Xapian::Query> parts;
  for (const auto& [word, qf] : counts) parts.emplace_back(word, qf);
  absl::MutexLock lock(&rep_->mu);
  try {
    Xapian::Enquire enquire(rep_->db);
    enquire.set_query(Xapian::Query(Xapian::Query::OP_OR, parts.begin(), parts.end()));
    enquire.set_weighting_scheme(Xapian::BM25Weight(rep_->options.k1, 0, 1, rep_->options.b, 0.5));
    std::unique_ptr<AcceptLabels> decider;
    if (accept != nullptr) decider = std::make_unique<AcceptLabels>(*accept);
    const Xapian::MSet mset = enquire.get_mset(0, Xapian::doccount(k), 0, nullptr, decider.get());
    hits.reserve(mset.size());
    for (Xapian::MSetIterator it = mset.begin(); it != mset.end(); ++it) {
      hits.push_back({LabelOf(it.get_document().get_data()), it.get_weight()});
    }
  } catch (const Xapian::Error& e) {
    return FromXapian(e, "searching", false);
  }
  return hits;
}

}  // namespace attnsearch
