#include "text/wordnet.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/status.h"

namespace attnsearch::text {
namespace {

// The four parts of speech, by file; satellite adjectives ("s") live in
// data.adj with the head adjectives.
constexpr const char* kFiles[] = {"noun", "verb", "adj", "adv"};

int PosIndex(absl::string_view pos) {
  if (pos == "n") return 0;
  if (pos == "v") return 1;
  if (pos == "a" || pos == "s") return 2;
  if (pos == "r") return 3;
  return -1;
}

struct Pointer {
  char kind;  // 's' similar, 'd' derived, 'h' hypernym
  int pos;
  uint32_t offset;
  uint32_t source, target;  // 1-based word numbers; 0: the whole synset
};

struct Synset {
  std::vector<uint32_t> words;  // lemma ids
  std::vector<float> sense;     // per word: 1 / its rank, 0 if beyond the limit
  std::vector<Pointer> pointers;
};

// A pointer symbol's relation, or 0 for the ones left out.
char Kind(absl::string_view symbol) {
  if (symbol == "&" || symbol == "^") return 's';
  if (symbol == "+" || symbol == "\\") return 'd';
  if (symbol == "@" || symbol == "@i") return 'h';
  return 0;
}

// "galore(ip)" -> "galore"; lower case. Empty for multi-word lemmas.
std::string Lemma(absl::string_view word) {
  if (size_t p = word.find('('); p != absl::string_view::npos) word = word.substr(0, p);
  if (word.find('_') != absl::string_view::npos) return {};
  return absl::AsciiStrToLower(word);
}

class Loader {
 public:
  explicit Loader(const WordNetOptions& o) : o_(o) {}

  // Calls fn(line, its number, the file's path) for each line of
  // `kind`.<part of speech> but the licence header's (they start with a
  // space); stops at fn's first error.
  template <typename Fn>
  absl::Status ForEachLine(const char* kind, int pos, Fn fn) {
    const std::string path = (std::filesystem::path(o_.dir) / kind).string() + kFiles[pos];
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("WordNet: cannot read ", path));
    std::string line;
    uint64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty() || line[0] == ' ') continue;
      ATTN_RETURN_IF_ERROR(fn(line, number, path));
    }
    return absl::OkStatus();
  }

  absl::Status ReadData(int pos) {
    return ForEachLine(
        "data.", pos,
        [&](const std::string& line, uint64_t number, const std::string& path) -> absl::Status {
          auto bad = [&](absl::string_view what) {
            return absl::DataLossError(
                absl::StrCat("WordNet: ", path, " line ", number, ": ", what));
          };
          const absl::string_view body = absl::string_view(line).substr(0, line.find('|'));
          std::vector<absl::string_view> f = absl::StrSplit(body, ' ', absl::SkipEmpty());
          uint32_t offset = 0, words = 0, pointers = 0;
          if (f.size() < 4 || !absl::SimpleAtoi(f[0], &offset) ||
              !absl::SimpleHexAtoi(f[3], &words)) {
            return bad("bad synset header");
          }
          size_t i = 4;
          Synset s;
          for (uint32_t w = 0; w < words; ++w, i += 2) {
            if (i + 1 >= f.size()) return bad("fewer words than its count");
            s.words.push_back(Id(Lemma(f[i])));
          }
          if (i >= f.size() || !absl::SimpleAtoi(f[i], &pointers)) return bad("bad pointer count");
          ++i;
          for (uint32_t p = 0; p < pointers; ++p, i += 4) {
            if (i + 3 >= f.size()) return bad("fewer pointers than its count");
            Pointer ptr;
            ptr.kind = Kind(f[i]);
            ptr.pos = PosIndex(f[i + 2]);
            uint32_t st = 0;
            if (!absl::SimpleAtoi(f[i + 1], &ptr.offset) || ptr.pos < 0 || f[i + 3].size() != 4 ||
                !absl::SimpleHexAtoi(f[i + 3], &st)) {
              return bad("bad pointer");
            }
            ptr.source = st >> 8;
            ptr.target = st & 0xff;
            if (ptr.kind != 0) s.pointers.push_back(ptr);
          }
          s.sense.assign(s.words.size(), 0.f);
          synsets_[pos].emplace(offset, std::move(s));
          return absl::OkStatus();
        });
  }

  // Sense ranks: index.* lists a lemma's synsets most frequent first.
  absl::Status ReadIndex(int pos) {
    return ForEachLine(
        "index.", pos,
        [&](const std::string& line, uint64_t number, const std::string& path) -> absl::Status {
          std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
          uint32_t synsets = 0, pointers = 0;
          if (f.size() < 4 || !absl::SimpleAtoi(f[2], &synsets) ||
              !absl::SimpleAtoi(f[3], &pointers) || f.size() < 6 + pointers + synsets) {
            return absl::DataLossError(
                absl::StrCat("WordNet: ", path, " line ", number, ": bad index entry"));
          }
          const std::string lemma = Lemma(f[0]);
          if (lemma.empty()) return absl::OkStatus();
          const uint32_t id = Id(lemma);
          const size_t first = 6 + pointers;
          for (uint32_t r = 0; r < synsets && r < o_.max_sense_rank; ++r) {
            uint32_t offset = 0;
            if (!absl::SimpleAtoi(f[first + r], &offset)) continue;
            auto it = synsets_[pos].find(offset);
            if (it == synsets_[pos].end()) continue;
            Synset& s = it->second;
            for (size_t w = 0; w < s.words.size(); ++w) {
              if (s.words[w] == id) s.sense[w] = 1.f / static_cast<float>(r + 1);
            }
          }
          return absl::OkStatus();
        });
  }

  std::vector<WordRelation> Pairs() {
    for (int pos = 0; pos < 4; ++pos) {
      for (const auto& [offset, s] : synsets_[pos]) {
        for (size_t a = 0; a < s.words.size(); ++a) {
          for (size_t b = a + 1; b < s.words.size(); ++b) {
            Add(s.words[a], s.words[b], o_.synonym * s.sense[a] * s.sense[b]);
          }
        }
        for (const Pointer& p : s.pointers) {
          auto it = synsets_[p.pos].find(p.offset);
          if (it == synsets_[p.pos].end()) continue;
          const Synset& t = it->second;
          const float weight = p.kind == 's'   ? o_.similar
                               : p.kind == 'd' ? o_.derived
                                               : o_.hypernym;
          for (size_t a = 0; a < s.words.size(); ++a) {
            if (p.source != 0 && p.source != a + 1) continue;
            for (size_t b = 0; b < t.words.size(); ++b) {
              if (p.target != 0 && p.target != b + 1) continue;
              Add(s.words[a], t.words[b], weight * s.sense[a] * t.sense[b]);
            }
          }
        }
      }
    }
    std::vector<WordRelation> out;
    out.reserve(pairs_.size());
    for (const auto& [key, weight] : pairs_) {
      const std::string& a = lemmas_[key >> 32];
      const std::string& b = lemmas_[key & 0xffffffffu];
      out.push_back(a < b ? WordRelation{a, b, weight} : WordRelation{b, a, weight});
    }
    std::sort(out.begin(), out.end(), [](const WordRelation& x, const WordRelation& y) {
      return std::tie(x.a, x.b) < std::tie(y.a, y.b);
    });
    return out;
  }

  // Distinct single-word lemmas (the empty one stands for multi-word ones).
  uint64_t lemmas() const { return lemmas_.size() - ids_.contains(""); }

 private:
  uint32_t Id(const std::string& lemma) {
    auto [it, fresh] = ids_.try_emplace(lemma, static_cast<uint32_t>(lemmas_.size()));
    if (fresh) lemmas_.push_back(lemma);
    return it->second;
  }

  void Add(uint32_t a, uint32_t b, float weight) {
    if (a == b || weight <= 0.f || lemmas_[a].empty() || lemmas_[b].empty()) return;
    float& w = pairs_[(uint64_t{std::min(a, b)} << 32) | std::max(a, b)];
    w = std::max(w, weight);
  }

  const WordNetOptions& o_;
  absl::flat_hash_map<uint32_t, Synset> synsets_[4];
  absl::flat_hash_map<std::string, uint32_t> ids_;
  std::vector<std::string> lemmas_;
  absl::flat_hash_map<uint64_t, float> pairs_;
};

}  // namespace

absl::StatusOr<WordNet> WordNet::Load(const WordNetOptions& options) {
  Loader loader(options);
  for (int pos = 0; pos < 4; ++pos) ATTN_RETURN_IF_ERROR(loader.ReadData(pos));
  for (int pos = 0; pos < 4; ++pos) ATTN_RETURN_IF_ERROR(loader.ReadIndex(pos));
  WordNet w;
  w.relations_ = loader.Pairs();
  w.lemmas_ = loader.lemmas();
  return w;
}

}  // namespace attnsearch::text
