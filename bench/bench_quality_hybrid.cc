// The hybrid study. Per judged query, three score lists over the corpus:
//   attention  every document's attention score (the exhaustive rerank);
//   ann        the ANN stage's candidates, best first;
//   bm25       LexicalIndex's BM25 (k1 0.9, b 0.4, the encoder's words).
// From them, at N = 100 and 1,000 candidates per generator:
//   lexical            BM25's order;
//   semantic           the ANN stage's top N by attention (the two-stage search);
//   lexical+attention  BM25's top N by attention;
//   union+attention    the union of both top-N lists by attention;
//   union+rrf          the union by reciprocal rank fusion, 1/(60 + rank) of the
//                      attention order plus 1/(60 + rank) of BM25's (nothing
//                      from a list that lacks the document);
//   union+linear a     the union by a · attention + (1 - a) · BM25, each
//                      min-max normalised over the union (a document BM25
//                      did not find has BM25 0), a in 0.3, 0.5, 0.7.
// The fusions are computed here from the three lists; the engine fuses
// nothing yet. This measures which fusion the engine should build.
#include "bench_quality_hybrid.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "lexical/lexical_index.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

using Scores = absl::flat_hash_map<std::string, double>;

// The ids of `scores`' keys restricted to `among`, best first (ties by id).
Ranking RankBy(const std::vector<std::string>& among,
               const std::function<double(const std::string&)>& score) {
  std::vector<std::pair<double, std::string>> order;
  order.reserve(among.size());
  for (const std::string& id : among) order.emplace_back(score(id), id);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  Ranking out;
  for (size_t i = 0; i < order.size() && i < 100; ++i) out.push_back(order[i].second);
  return out;
}

// Min-max normalised over `among` (all equal: 1).
std::function<double(const std::string&)> Normalised(const std::vector<std::string>& among,
                                                     const Scores& s) {
  double lo = 0, hi = 0;
  bool first = true;
  for (const std::string& id : among) {
    const auto it = s.find(id);
    const double v = it == s.end() ? 0 : it->second;
    lo = first ? v : std::min(lo, v);
    hi = first ? v : std::max(hi, v);
    first = false;
  }
  return [&s, lo, hi](const std::string& id) {
    const auto it = s.find(id);
    const double v = it == s.end() ? 0 : it->second;
    return hi > lo ? (v - lo) / (hi - lo) : 1.0;
  };
}

}  // namespace

absl::StatusOr<std::vector<HybridRow>> RunHybridStudy(const BenchFlags& f, const Collection& c,
                                                      const std::vector<std::string>& ids,
                                                      const std::vector<std::string>& texts,
                                                      const Qrels& qrels,
                                                      const std::vector<BeirQuery>& queries,
                                                      const std::string& scratch) {
  LexicalOptions lo;
  lo.stem_language = f.stem_language;
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<LexicalIndex> lexical,
                        LexicalIndex::Open(scratch + "/lexical", lo));
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ids.size(); ++i) ATTN_RETURN_IF_ERROR(lexical->Put(Label(i), texts[i]));
  const auto t1 = std::chrono::steady_clock::now();
  ATTN_RETURN_IF_ERROR(lexical->Commit(ids.size()));
  std::printf("lexical index: %zu documents indexed in %.2f s, committed in %.2f s\n", ids.size(),
              std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
  const std::vector<uint32_t> sizes = {100, 1000};
  const std::vector<double> alphas = {0.3, 0.5, 0.7};
  // Runs by method and candidate count.
  std::map<std::pair<std::string, uint32_t>, Runs> runs;
  for (const BeirQuery& q : queries) {
    if (!qrels.by_query.contains(q.id)) continue;
    // Every document's attention score.
    SearchQuery all;
    all.text = q.text;
    all.top_k = uint32_t(ids.size());
    all.candidates = uint32_t(ids.size());
    all.temperature = f.quality_temperature;
    all.retrieval = Retrieval::kSemantic;
    auto exhaustive = c.Search(all);
    if (!exhaustive.ok()) return Annotate(exhaustive.status(), absl::StrCat("query ", q.id));
    Scores attention;
    for (const SearchHit& h : exhaustive->hits) attention[h.id] = h.score;
    auto att = [&](const std::string& id) {
      const auto it = attention.find(id);
      return it == attention.end() ? -1e30 : it->second;
    };
    for (const uint32_t n : sizes) {
      SearchQuery first;
      first.text = q.text;
      first.top_k = n;
      first.candidates = n;
      first.mode = RerankMode::kNone;
      first.retrieval = Retrieval::kSemantic;
      auto ann = c.Search(first);
      if (!ann.ok()) return Annotate(ann.status(), absl::StrCat("query ", q.id));
      std::vector<std::string> ann_ids;
      for (const SearchHit& h : ann->hits) ann_ids.push_back(h.id);
      ATTN_ASSIGN_OR_RETURN(const std::vector<LexicalHit> bm25_hits, lexical->Search(q.text, n));
      Scores bm25, bm25_rank;
      std::vector<std::string> lex_ids;
      for (size_t r = 0; r < bm25_hits.size(); ++r) {
        const std::string& id = ids[bm25_hits[r].label];
        lex_ids.push_back(id);
        bm25[id] = bm25_hits[r].score;
        bm25_rank[id] = double(r + 1);
      }
      std::vector<std::string> both = ann_ids;
      for (const std::string& id : lex_ids) {
        if (std::find(ann_ids.begin(), ann_ids.end(), id) == ann_ids.end()) both.push_back(id);
      }
      Ranking lex_order(lex_ids.begin(), lex_ids.begin() + std::min<size_t>(100, lex_ids.size()));
      runs[{"lexical (BM25)", n}][q.id] = lex_order;
      runs[{"semantic (ANN + attention)", n}][q.id] = RankBy(ann_ids, att);
      runs[{"lexical + attention", n}][q.id] = RankBy(lex_ids, att);
      runs[{"union + attention", n}][q.id] = RankBy(both, att);
      // RRF over the union: the attention order among the union, BM25's own.
      const Ranking att_order = [&] {
        std::vector<std::pair<double, std::string>> o;
        for (const std::string& id : both) o.emplace_back(att(id), id);
        std::sort(o.begin(), o.end(), [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first > b.first : a.second < b.second;
        });
        Ranking r;
        for (const auto& [s, id] : o) r.push_back(id);
        return r;
      }();
      Scores att_rank;
      for (size_t r = 0; r < att_order.size(); ++r) att_rank[att_order[r]] = double(r + 1);
      runs[{"union + rrf", n}][q.id] = RankBy(both, [&](const std::string& id) {
        const auto b = bm25_rank.find(id);
        return 1.0 / (60.0 + att_rank[id]) +
               (b == bm25_rank.end() ? 0.0 : 1.0 / (60.0 + b->second));
      });
      const auto att_norm = Normalised(both, attention);
      const auto bm25_norm = Normalised(both, bm25);
      for (const double a : alphas) {
        runs[{Fmt("union + linear a=%.1f", a), n}][q.id] = RankBy(both, [&](const std::string& id) {
          return a * att_norm(id) + (1 - a) * bm25_norm(id);
        });
      }
    }
  }
  std::vector<HybridRow> rows;
  std::vector<std::vector<std::string>> table;
  for (const uint32_t n : sizes) {
    for (const auto& [key, r] : runs) {
      if (key.second != n) continue;
      HybridRow row{key.first, n, Evaluate(r, qrels)};
      table.push_back({row.method, Fmt("%u", n), Fmt("%.4f", row.quality.ndcg10),
                       Fmt("%.4f", row.quality.recall100), Fmt("%.4f", row.quality.mrr10)});
      rows.push_back(std::move(row));
    }
  }
  std::printf(
      "hybrid study (fusions computed from the exhaustive attention scores, the ANN "
      "stage's candidates and LexicalIndex's BM25):\n%s",
      FormatTable({"method", "candidates", "nDCG@10", "Recall@100", "MRR@10"}, table).c_str());
  return rows;
}

nlohmann::json HybridJson(const std::vector<HybridRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const HybridRow& r : rows) {
    out.push_back({{"method", r.method},
                   {"candidates", r.candidates},
                   {"ndcg10", r.quality.ndcg10},
                   {"recall100", r.quality.recall100},
                   {"mrr10", r.quality.mrr10}});
  }
  return out;
}

}  // namespace attnsearch::bench
