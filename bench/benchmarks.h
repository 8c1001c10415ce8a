// attnsearch-bench: the flags shared by every benchmark and the entry point
// of each. Each benchmark is documented at the top of its source file
// (bench_ann.cc, bench_rerank.cc, bench_ingest.cc, bench_e2e.cc,
// bench_quality.cc).
#ifndef ATTNSEARCH_BENCH_BENCHMARKS_H_
#define ATTNSEARCH_BENCH_BENCHMARKS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/types.h"
#include "dataset.h"
#include "nlohmann/json.hpp"

namespace attnsearch::bench {

struct BenchFlags {
  std::vector<std::string> benchmarks;

  // Data.
  std::string dataset = "synthetic";  // synthetic | uniform | siftsmall
  // Folder of siftsmall's base/query.fvecs and groundtruth.ivecs; required
  // for --dataset=siftsmall (no default: the data lives outside the repository).
  std::string siftsmall_dir;
  uint64_t seed = 42;
  uint32_t dim = 128;
  uint32_t clusters = 100;
  float spread = 0.5f;
  float token_spread = 0.7f;
  size_t num_docs = 100000;
  size_t num_queries = 1000;

  // ann.
  std::string ann_spec = "HNSW32,SQfp16";  // the product default
  int ef_construction = 80;
  std::vector<int> ef_search = {10, 16, 24, 32, 48, 64, 96, 128, 256};
  std::vector<int> nprobe = {1, 4, 16, 64};
  int k = 10;
  std::string dump_dir;  // write the (normalised) base/query vectors as fvecs here
  // Peers built and searched in the same run (HNSW specs): hnswlib, faiss.
  std::vector<std::string> ann_peers = {"hnswlib", "faiss"};
  int ann_build_threads = 2;  // threads building every graph (ours and the peers')
  int build_rounds = 2;       // builds of ours and hnswlib, alternating; fastest kept
  // Filter section: fractions of documents a random filter admits (0: skip).
  std::vector<double> filter_fractions = {0.01, 0.1};
  // Delete section: fraction of documents deleted (0: skip).
  double delete_fraction = 0.2;
  // Tuning section: target recall (0: skip) and the held-out sample size.
  double target_recall = 0.95;
  size_t tune_sample = 1000;
  // Multi-vector first stages instead of single vectors (bench_ann_multi.cc).
  bool ann_multivector = false;
  std::vector<std::string> ann_multivector_sources = {"pooled", "fde", "centroids"};
  std::vector<int> ann_multivector_candidates = {50, 100, 200, 1000};
  std::vector<std::string> ann_multivector_knobs;  // empty: {ann_params}

  // rerank.
  int candidates = 100;
  int doc_tokens_min = 32;
  int doc_tokens_max = 180;
  int query_tokens = 32;
  std::string dtype = "bf16";
  int threads = 2;
  float temperature = 0.1f;
  double min_seconds = 2.0;   // time each variant at least this long
  int max_rows_per_gemm = 0;  // rerank: RerankerOptions::max_rows_per_gemm (0: default)
  int code_bits = 2;          // rerank: also score residual codes of these bits (0: off)
  std::string python = "/usr/bin/python3";
  std::string torch_script;  // default: torch_rerank.py beside this source

  // ingest.
  int tokens = 64;
  // ingest --ingest_input=jsonl,npy: the set written as gzipped JSON lines
  // and/or a folder of .npy files and loaded by attnsearch-index (`indexer`,
  // default: beside this binary) in each of `ingest_modes` (offline, online:
  // through an attnsearch-server child, `server_binary`, default beside this
  // binary) with each of `ingest_threads`.
  std::vector<std::string> ingest_input;
  std::vector<std::string> ingest_modes = {"offline"};
  std::vector<int> ingest_threads = {1, 2};
  // Timed runs per mode and thread count (the table shows their median:
  // on a virtual machine the first run after other work is often slow).
  int ingest_repeats = 3;
  std::string indexer;
  std::string server_binary;
  // overwrite: documents per Upsert, and whether the WAL is synced per write.
  int overwrite_batch = 1;
  bool sync = true;
  int batch = 1000;
  std::string work_dir;  // default: a fresh temporary directory

  // e2e.
  std::string server;
  std::string collection = "bench";
  size_t load = 0;
  int load_batch = 250;
  std::vector<int> concurrency = {1, 4, 16};
  double duration = 10.0;
  double rate = 0.0;                // open loop requests/s; 0: no open loop
  std::string arrival = "poisson";  // poisson | fixed
  // Soak (e2e): after the closed loops, an open loop at soak_fraction of the
  // highest closed-loop QPS for soak_seconds, judged per soak_window.
  double soak_seconds = 0.0;  // 0: no soak
  double soak_fraction = 0.7;
  double soak_window = 60.0;
  int server_pid = 0;        // the server's pid, for its resident memory (0: not measured)
  std::string soak_samples;  // a CSV of every soak request, for offline analysis ("": none)
  int top_k = 10;
  int e2e_candidates = 100;
  int e2e_query_tokens = 32;
  // e2e: search these texts (a BEIR queries.jsonl: "text" per line) instead
  // of synthetic vectors; empty: vectors.
  std::string e2e_text_queries;
  std::string ann_params;

  // quality.
  std::string beir;  // BEIR folder: corpus.jsonl, queries.jsonl, qrels.tsv
  uint32_t quality_candidates = 1000;
  float quality_temperature = 0.f;  // 0: the encoder's default
  uint32_t quality_dim = 256;
  bool quality_exhaustive = true;      // also rerank every document per query
  bool quality_hybrid = false;         // also the hybrid study (bench_quality_hybrid.h)
  std::vector<int> quality_code_bits;  // also rerank every document from codes of these bits
  // quality: the collection's candidates_from; centroids also gives it a
  // 2-bit residual codec on the encoder's vocabulary, trained after the load.
  std::string quality_candidates_from = "pooled";
  int code_centroids = 0;  // rerank, quality: the codes' centroids (0: the codec's default)
  // e2e --load: the collection's token codec ("rows" or "residual", then
  // trained after the load with --code_bits and --code_centroids), and
  // whether it keeps the exact tier.
  std::string e2e_token_codec = "rows";
  std::string e2e_candidates_from = "pooled";  // e2e --load: the collection's first stage
  bool exact_tier = true;
  // scale: the token codec attnsearch-index creates the collection with.
  std::string scale_token_codec = "residual";
  float semantic_share = 0.6f;
  std::string stem_language = "english";
  float expansion_weight = -1.f;  // < 0: the encoder's default
  float wordnet_weight = -1.f;    // < 0: the encoder's default

  // Output.
  // Where the record and plots go. Default: nowhere (the record is printed):
  // a run writes files only when asked; the project's figures are recorded
  // with --out_dir bench/results.
  std::string json;  // default: <out_dir>/<benchmark>.jsonl when out_dir is set
  std::string out_dir;
  std::string tag;  // free-form label stored with the record
};

// A benchmark's outcome: its parameters and figures (stored in the JSON
// record) and the SVG files it wrote.
struct BenchOutput {
  nlohmann::json params;
  nlohmann::json results;
};

absl::StatusOr<BenchOutput> RunAnn(const BenchFlags& flags);
// ann with --ann_multivector (bench_ann_multi.cc).
absl::StatusOr<BenchOutput> RunAnnMultiVector(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunRerank(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunIngest(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunE2e(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunQuality(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunOverwrite(const BenchFlags& flags);
absl::StatusOr<BenchOutput> RunScale(const BenchFlags& flags);

// The synthetic generator options the flags describe.
SyntheticOptions SyntheticFromFlags(const BenchFlags& flags);

// ingest's set (bench_ingest.cc): --tokens rows per document, or with
// --ingest_input uniform in [tokens/2, 3 tokens/2].
SyntheticOptions IngestSynthetic(const BenchFlags& flags);

// ingest --ingest_input (bench_ingest_input.cc): writes the set into `dir`
// as that input, loads it with attnsearch-index offline once per
// --ingest_threads value, prints a table next to `engine_docs_per_s` (the
// in-process load of the same set in the same run) and returns the figures.
absl::StatusOr<nlohmann::json> RunIndexerOnInput(const BenchFlags& flags, const std::string& dir,
                                                 double engine_docs_per_s);

// Polls GetCollection at `server` until `collection` has no vector pending
// (all written vectors linked into the ANN graph); returns the seconds
// waited, DEADLINE_EXCEEDED after `timeout_s`.
absl::StatusOr<double> WaitUntilLinked(const std::string& server, const std::string& collection,
                                       double timeout_s);

// --dtype ("bf16", "f32" or "int8"; main checks it) as a TokenDtype.
inline TokenDtype DtypeFromFlags(const BenchFlags& flags) {
  return flags.dtype == "f32"    ? TokenDtype::kF32
         : flags.dtype == "int8" ? TokenDtype::kInt8
                                 : TokenDtype::kBF16;
}

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_BENCHMARKS_H_
