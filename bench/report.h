// The benchmarks' non-timing logic: statistics (percentiles, recall), the
// brute-force oracle, the run record (machine, git commit, timestamp) and its
// output as a table and as JSON lines.
#ifndef ATTNSEARCH_BENCH_REPORT_H_
#define ATTNSEARCH_BENCH_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace attnsearch::bench {

// The p-th percentile (0 <= p <= 100) by the nearest-rank method: the
// smallest value such that at least p% of the values are <= it (p = 0 gives
// the minimum). `values` need not be sorted. 0 when empty.
double Percentile(std::vector<double> values, double p);
// The same over values already sorted ascending.
double PercentileSorted(const std::vector<double>& sorted, double p);

struct Summary {
  size_t count = 0;
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};
Summary Summarize(std::vector<double> values);
nlohmann::json ToJson(const Summary& s);

// |first k of approx ∩ first k of exact| / k. Ids < 0 (FAISS's "no result")
// never match. Shorter lists count as missing results.
double RecallAtK(const std::vector<int64_t>& approx, const std::vector<int64_t>& exact, size_t k);

// Exact top-k by inner product: for each of nq queries, the k base rows with
// the largest dot product, best first (ties by lower id). out has nq rows.
void ExactTopK(const float* base, size_t n, const float* queries, size_t nq, uint32_t dim, size_t k,
               std::vector<std::vector<int64_t>>* out);

// The machine: nproc, CPU model, memory, load average now.
nlohmann::json MachineInfo();
// `git rev-parse HEAD` in the current directory, or "" when unavailable.
std::string GitCommit();
// UTC, ISO 8601 ("2024-05-01T12:00:00Z").
std::string TimestampUtc();
// Resident set size of this process (VmRSS), in KiB; -1 if unknown.
long RssKb();
// Appends one JSON line to `path`, creating its parent directories. False on
// an I/O error.
bool AppendJsonLine(const std::string& path, const nlohmann::json& record);
// Writes `text` to `path`, creating parent directories. False on error.
bool WriteFile(const std::string& path, const std::string& text);
// Writes a plot as `out_dir`/`name` and records its path in results["svg"];
// nothing when out_dir is empty (the default: a run writes files only when
// asked).
void SavePlot(const std::string& out_dir, const std::string& name, const std::string& svg,
              nlohmann::json* results);

// A fixed-width text table: a header row, a rule and the rows, columns
// right-aligned except the first.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);
// printf-style formatting into a std::string.
std::string Fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));

// A fresh directory /tmp/<prefix>XXXXXX, removed with everything in it when
// the object goes. path() is empty when it could not be created.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_REPORT_H_
