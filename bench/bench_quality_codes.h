// The quality of residual token codes (attnsearch-bench --benchmarks=quality
// --quality_code_bits=1,2,4): see bench_quality_codes.cc.
#ifndef ATTNSEARCH_BENCH_BENCH_QUALITY_CODES_H_
#define ATTNSEARCH_BENCH_BENCH_QUALITY_CODES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "benchmarks.h"
#include "engine/collection.h"
#include "nlohmann/json.hpp"
#include "quality_metrics.h"

namespace attnsearch::bench {

// One bit width's figures, next to the stored rows' on the same queries.
struct CodeQuality {
  int bits = 0;
  size_t code_bytes = 0;
  uint32_t centroids = 0;
  double train_s = 0;
  double encode_s = 0;
  QualitySummary stored, codes;
  QualitySummary decoded;  // the codes decoded to floats, scored by the bf16 reranker
  double overlap10 = 0;    // mean top-10 overlap of codes and stored rows
};

// Every document of `ids` reranked per judged query from its stored rows
// and from codes of each of f.quality_code_bits; prints the table. Empty
// when no bit width is asked for.
absl::StatusOr<std::vector<CodeQuality>> RunCodeQuality(const BenchFlags& f, const Collection& c,
                                                        const std::vector<std::string>& ids,
                                                        const Qrels& qrels,
                                                        const std::vector<BeirQuery>& queries);

nlohmann::json CodeQualityJson(const std::vector<CodeQuality>& all);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_BENCH_QUALITY_CODES_H_
