// Retrieval quality for the `quality` benchmark: readers for BEIR's qrels and
// queries files and for run files, and the ranking metrics (nDCG@k,
// Recall@k, MRR@k, overlap of two rankings). The metrics follow
// pytrec_eval / BEIR (trec_eval's ndcg_cut, recall and recip_rank measures,
// linear gains) so that figures are comparable with published BEIR tables.
//
// Conventions shared by every metric below:
//  - A Ranking lists doc ids, best first; its "rank" is the 1-based position.
//  - "The top k" of a ranking is its first k entries (all of them when it is
//    shorter). A doc id that occurs more than once counts only at its first
//    position; later occurrences still take up their slot but are worth
//    nothing (a run cannot earn a doc's gain twice).
//  - A doc is relevant when its judgement is > 0. Unjudged docs and docs
//    judged <= 0 are non-relevant and have gain 0.
//  - k <= 0 means an empty top k.
#ifndef ATTNSEARCH_BENCH_QUALITY_METRICS_H_
#define ATTNSEARCH_BENCH_QUALITY_METRICS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnsearch::bench {

// Graded relevance judgements of one query: doc id -> grade (> 0 relevant).
using Judgements = absl::flat_hash_map<std::string, int>;

// Judgements of every query: query id -> its judgements.
struct Qrels {
  absl::flat_hash_map<std::string, Judgements> by_query;
};

// Reads BEIR qrels (plain or gzip): a header line (any text; skipped) and
// then one judgement per line, `query_id<TAB>doc_id<TAB>grade`, with an
// integer grade. Rows with grade 0 are kept (judged non-relevant). Empty lines
// are skipped; when a (query, doc) pair repeats, the last row wins (as in
// BEIR's loader).
// Errors: NOT_FOUND when the file cannot be opened; INVALID_ARGUMENT
// "path:line: ..." for a line without exactly 3 tab-separated columns, an
// empty id or a grade that is not an integer.
absl::StatusOr<Qrels> ReadQrels(const std::string& path);

struct BeirQuery {
  std::string id;
  std::string text;
};

// Reads BEIR queries.jsonl (plain or gzip), in file order: one JSON object
// per line with the id in "_id" (or "id" when "_id" is absent; a JSON string
// or an integer, which is written in decimal) and the text in "text" (a JSON
// string). Other members are ignored; empty lines are skipped.
// Errors: NOT_FOUND when the file cannot be opened; INVALID_ARGUMENT
// "path:line: ..." for invalid JSON, a line that is not an object, a missing
// or mistyped id or text, or an id seen on an earlier line.
absl::StatusOr<std::vector<BeirQuery>> ReadQueries(const std::string& path);

// Doc ids, best first.
using Ranking = std::vector<std::string>;
// Query id -> its ranking.
using Runs = absl::flat_hash_map<std::string, Ranking>;

// Reads a run file (plain or gzip): lines `query_id<TAB>doc_id<TAB>rank<TAB>score`
// with an integer rank >= 1 and a numeric score, no header; empty lines are
// skipped. Each query's ranking is ordered by rank (lines with equal ranks
// keep their file order); the score is checked but not kept.
// Errors: NOT_FOUND when the file cannot be opened; INVALID_ARGUMENT
// "path:line: ..." for a line without exactly 4 tab-separated columns, an
// empty id, a bad rank or a bad score.
absl::StatusOr<Runs> ReadRun(const std::string& path);

// Writes `runs` in ReadRun's format, queries in ascending id order, ranks
// from 1. The score of the entry at rank r of query q is scores[q][r - 1]
// when `scores` has that query with a score for every entry, otherwise -r
// (any decreasing score keeps trec_eval, which orders by score, in agreement
// with the ranks). Ids must not contain tabs or newlines.
// Errors: INVALID_ARGUMENT for an id with a tab or newline; INTERNAL when the
// file cannot be written.
absl::Status WriteRun(const std::string& path, const Runs& runs,
                      const absl::flat_hash_map<std::string, std::vector<double>>& scores = {});

// Normalised discounted cumulative gain at k, with linear gains:
//   DCG@k  = sum over ranks i = 1..k of g(d_i) / log2(i + 1)
//   IDCG@k = sum over j = 1..min(k, R) of g*_j / log2(j + 1)
//   nDCG@k = DCG@k / IDCG@k
// where g(d) is d's grade when > 0 and 0 otherwise (also 0 for a repeated
// id), and g*_1 >= g*_2 >= ... >= g*_R are the R grades > 0 in `judged`.
// 0 when R = 0.
double NdcgAtK(const Ranking& ranking, const Judgements& judged, int k);

// |relevant ∩ top k| / |relevant|, relevant = ids judged > 0; 0 when there
// are none.
double RecallAtK(const Ranking& ranking, const Judgements& judged, int k);

// Reciprocal rank: 1 / i for the smallest rank i <= k holding a relevant doc,
// 0 when the top k holds none.
double MrrAtK(const Ranking& ranking, const Judgements& judged, int k);

// Agreement of two rankings of the same query:
//   |A ∩ B| / max(|A|, |B|)
// where A and B are the sets of distinct ids in the top k of a and b; 1 when
// both are empty. Without repeated ids this is
// |top-k(a) ∩ top-k(b)| / min(k, max(|a|, |b|)).
double OverlapAtK(const Ranking& a, const Ranking& b, int k);

// Means over the evaluated queries.
struct QualitySummary {
  double ndcg10 = 0;     // mean NdcgAtK(., ., 10)
  double recall100 = 0;  // mean RecallAtK(., ., 100)
  double mrr10 = 0;      // mean MrrAtK(., ., 10)
  size_t queries = 0;    // number of evaluated queries
};

// Evaluates `runs` against `qrels`. The evaluated queries are those of qrels
// with at least one judgement > 0; a query missing from `runs` counts as an
// empty ranking, and rankings of queries not evaluated are ignored. All
// figures are 0 when no query is evaluated.
QualitySummary Evaluate(const Runs& runs, const Qrels& qrels);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_QUALITY_METRICS_H_
