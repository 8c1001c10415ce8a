#include "quality_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "dataset/input_file.h"
#include "nlohmann/json.hpp"

namespace attnsearch::bench {
namespace {

absl::Status LineError(const InputFile& in, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(in.path(), ":", in.line_number(), ": ", reason));
}

// Calls fn(line) for every non-empty line of `path` after the first `skip`
// lines, stopping at the first error.
absl::Status ForEachLine(
    const std::string& path, int skip,
    const std::function<absl::Status(const InputFile&, const std::string&)>& fn) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> in, InputFile::Open(path));
  std::string line;
  while (in->ReadLine(&line)) {
    if (skip > 0) {
      --skip;
      continue;
    }
    if (line.empty()) continue;
    ATTN_RETURN_IF_ERROR(fn(*in, line));
  }
  return in->status();
}

// The distinct ids among the first k entries, each with its 1-based rank of
// first occurrence, in rank order.
std::vector<std::pair<const std::string*, int>> DistinctTopK(const Ranking& ranking, int k) {
  std::vector<std::pair<const std::string*, int>> out;
  const size_t n = k <= 0 ? 0 : std::min(ranking.size(), size_t(k));
  absl::flat_hash_set<absl::string_view> seen;
  for (size_t i = 0; i < n; ++i) {
    if (seen.insert(ranking[i]).second) out.emplace_back(&ranking[i], int(i) + 1);
  }
  return out;
}

int Grade(const Judgements& judged, const std::string& id) {
  const auto it = judged.find(id);
  return it == judged.end() ? 0 : it->second;
}

size_t CountRelevant(const Judgements& judged) {
  size_t n = 0;
  for (const auto& [id, grade] : judged) n += grade > 0;
  return n;
}

}  // namespace

absl::StatusOr<Qrels> ReadQrels(const std::string& path) {
  Qrels qrels;
  ATTN_RETURN_IF_ERROR(ForEachLine(
      path, /*skip=*/1, [&](const InputFile& in, const std::string& line) -> absl::Status {
        const std::vector<absl::string_view> cols = absl::StrSplit(line, '\t');
        if (cols.size() != 3) {
          return LineError(in, absl::StrCat("expected 3 tab-separated columns ",
                                            "(query_id, doc_id, grade), got ", cols.size()));
        }
        if (cols[0].empty() || cols[1].empty()) return LineError(in, "empty query or doc id");
        int grade = 0;
        if (!absl::SimpleAtoi(cols[2], &grade)) {
          return LineError(in, absl::StrCat("grade \"", cols[2], "\" is not an integer"));
        }
        qrels.by_query[cols[0]][cols[1]] = grade;
        return absl::OkStatus();
      }));
  return qrels;
}

absl::StatusOr<std::vector<BeirQuery>> ReadQueries(const std::string& path) {
  std::vector<BeirQuery> queries;
  absl::flat_hash_set<std::string> ids;
  ATTN_RETURN_IF_ERROR(ForEachLine(
      path, /*skip=*/0, [&](const InputFile& in, const std::string& line) -> absl::Status {
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          return LineError(in, absl::StrCat("invalid JSON: ", e.what()));
        }
        if (!j.is_object()) return LineError(in, "expected a JSON object");
        const char* id_key = j.contains("_id") ? "_id" : "id";
        if (!j.contains(id_key)) return LineError(in, "missing \"_id\" (or \"id\")");
        const nlohmann::json& id = j[id_key];
        BeirQuery q;
        if (id.is_string()) {
          q.id = id.get<std::string>();
        } else if (id.is_number_integer()) {
          q.id = id.dump();
        } else {
          return LineError(in, absl::StrCat("\"", id_key, "\" must be a string or an integer"));
        }
        if (q.id.empty()) return LineError(in, "empty query id");
        if (!j.contains("text")) return LineError(in, "missing \"text\"");
        if (!j["text"].is_string()) return LineError(in, "\"text\" must be a string");
        q.text = j["text"].get<std::string>();
        if (!ids.insert(q.id).second) {
          return LineError(in, absl::StrCat("duplicate query id \"", q.id, "\""));
        }
        queries.push_back(std::move(q));
        return absl::OkStatus();
      }));
  return queries;
}

absl::StatusOr<Runs> ReadRun(const std::string& path) {
  absl::flat_hash_map<std::string, std::vector<std::pair<long, std::string>>> ranked;
  ATTN_RETURN_IF_ERROR(ForEachLine(
      path, /*skip=*/0, [&](const InputFile& in, const std::string& line) -> absl::Status {
        const std::vector<absl::string_view> cols = absl::StrSplit(line, '\t');
        if (cols.size() != 4) {
          return LineError(in, absl::StrCat("expected 4 tab-separated columns ",
                                            "(query_id, doc_id, rank, score), got ", cols.size()));
        }
        if (cols[0].empty() || cols[1].empty()) return LineError(in, "empty query or doc id");
        long rank = 0;
        if (!absl::SimpleAtoi(cols[2], &rank) || rank < 1) {
          return LineError(in, absl::StrCat("rank \"", cols[2], "\" is not an integer >= 1"));
        }
        double score = 0;
        if (!absl::SimpleAtod(cols[3], &score)) {
          return LineError(in, absl::StrCat("score \"", cols[3], "\" is not a number"));
        }
        ranked[cols[0]].emplace_back(rank, std::string(cols[1]));
        return absl::OkStatus();
      }));
  Runs runs;
  runs.reserve(ranked.size());
  for (auto& [query, entries] : ranked) {
    std::stable_sort(entries.begin(), entries.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    Ranking& r = runs[query];
    r.reserve(entries.size());
    for (auto& e : entries) r.push_back(std::move(e.second));
  }
  return runs;
}

absl::Status WriteRun(const std::string& path, const Runs& runs,
                      const absl::flat_hash_map<std::string, std::vector<double>>& scores) {
  const auto bad = [](const std::string& id) {
    return id.find_first_of("\t\r\n") != std::string::npos;
  };
  std::vector<const std::string*> queries;
  queries.reserve(runs.size());
  for (const auto& [query, ranking] : runs) {
    if (bad(query)) {
      return absl::InvalidArgumentError(
          absl::StrCat("query id \"", query, "\" has a tab or newline"));
    }
    for (const std::string& doc : ranking) {
      if (bad(doc)) {
        return absl::InvalidArgumentError(
            absl::StrCat("doc id \"", doc, "\" has a tab or newline"));
      }
    }
    queries.push_back(&query);
  }
  std::sort(queries.begin(), queries.end(),
            [](const std::string* x, const std::string* y) { return *x < *y; });

  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat(path, ": cannot open for writing"));
  bool ok = true;
  for (const std::string* query : queries) {
    const Ranking& ranking = runs.at(*query);
    const auto s = scores.find(*query);
    const bool has_scores = s != scores.end() && s->second.size() >= ranking.size();
    for (size_t i = 0; i < ranking.size(); ++i) {
      const double score = has_scores ? s->second[i] : -double(i + 1);
      ok &= absl::FPrintF(f, "%s\t%s\t%d\t%.9g\n", *query, ranking[i], i + 1, score) > 0;
    }
  }
  ok &= std::fclose(f) == 0;
  if (!ok) return absl::InternalError(absl::StrCat(path, ": write error"));
  return absl::OkStatus();
}

double NdcgAtK(const Ranking& ranking, const Judgements& judged, int k) {
  std::vector<int> ideal;
  for (const auto& [id, grade] : judged) {
    if (grade > 0) ideal.push_back(grade);
  }
  if (ideal.empty() || k <= 0) return 0.0;
  std::sort(ideal.begin(), ideal.end(), std::greater<int>());
  double idcg = 0.0;
  for (size_t j = 0; j < ideal.size() && j < size_t(k); ++j) {
    idcg += ideal[j] / std::log2(double(j) + 2.0);
  }
  double dcg = 0.0;
  for (const auto& [id, rank] : DistinctTopK(ranking, k)) {
    const int grade = Grade(judged, *id);
    if (grade > 0) dcg += grade / std::log2(double(rank) + 1.0);
  }
  return dcg / idcg;
}

double RecallAtK(const Ranking& ranking, const Judgements& judged, int k) {
  const size_t relevant = CountRelevant(judged);
  if (relevant == 0) return 0.0;
  size_t found = 0;
  for (const auto& [id, rank] : DistinctTopK(ranking, k)) found += Grade(judged, *id) > 0;
  return double(found) / double(relevant);
}

double MrrAtK(const Ranking& ranking, const Judgements& judged, int k) {
  const size_t n = k <= 0 ? 0 : std::min(ranking.size(), size_t(k));
  for (size_t i = 0; i < n; ++i) {
    if (Grade(judged, ranking[i]) > 0) return 1.0 / double(i + 1);
  }
  return 0.0;
}

double OverlapAtK(const Ranking& a, const Ranking& b, int k) {
  const auto top_a = DistinctTopK(a, k);
  const auto top_b = DistinctTopK(b, k);
  if (top_a.empty() && top_b.empty()) return 1.0;
  absl::flat_hash_set<absl::string_view> in_a;
  for (const auto& [id, rank] : top_a) in_a.insert(*id);
  size_t common = 0;
  for (const auto& [id, rank] : top_b) common += in_a.contains(*id);
  return double(common) / double(std::max(top_a.size(), top_b.size()));
}

QualitySummary Evaluate(const Runs& runs, const Qrels& qrels) {
  // Sum in query id order so that the rounding does not depend on hashing.
  std::vector<const std::string*> queries;
  for (const auto& [query, judged] : qrels.by_query) {
    if (CountRelevant(judged) > 0) queries.push_back(&query);
  }
  std::sort(queries.begin(), queries.end(),
            [](const std::string* x, const std::string* y) { return *x < *y; });
  QualitySummary s;
  const Ranking empty;
  for (const std::string* query : queries) {
    const Judgements& judged = qrels.by_query.at(*query);
    const auto it = runs.find(*query);
    const Ranking& ranking = it == runs.end() ? empty : it->second;
    s.ndcg10 += NdcgAtK(ranking, judged, 10);
    s.recall100 += RecallAtK(ranking, judged, 100);
    s.mrr10 += MrrAtK(ranking, judged, 10);
    ++s.queries;
  }
  if (s.queries > 0) {
    s.ndcg10 /= double(s.queries);
    s.recall100 /= double(s.queries);
    s.mrr10 /= double(s.queries);
  }
  return s;
}

}  // namespace attnsearch::bench
