// The quality benchmark's hybrid study (--quality_hybrid): BM25 from the
// product's own LexicalIndex over the loaded texts, and what fusing it with
// the attention score would give, before the engine fuses anything: see
// bench_quality_hybrid.cc.
#ifndef ATTNSEARCH_BENCH_BENCH_QUALITY_HYBRID_H_
#define ATTNSEARCH_BENCH_BENCH_QUALITY_HYBRID_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "benchmarks.h"
#include "engine/collection.h"
#include "nlohmann/json.hpp"
#include "quality_metrics.h"

namespace attnsearch::bench {

struct HybridRow {
  std::string method;
  uint32_t candidates = 0;  // per generator
  QualitySummary quality;
};

// Every judged query: the lexical ranking, the semantic (ANN then attention)
// one, and the fusions of candidates from both (see the .cc), at 100 and
// 1,000 candidates; prints the table. `ids` and `texts` are the loaded
// documents; `scratch` a folder for the lexical index.
absl::StatusOr<std::vector<HybridRow>> RunHybridStudy(const BenchFlags& f, const Collection& c,
                                                      const std::vector<std::string>& ids,
                                                      const std::vector<std::string>& texts,
                                                      const Qrels& qrels,
                                                      const std::vector<BeirQuery>& queries,
                                                      const std::string& scratch);

nlohmann::json HybridJson(const std::vector<HybridRow>& rows);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_BENCH_QUALITY_HYBRID_H_
