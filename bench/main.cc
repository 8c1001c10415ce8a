// attnsearch-bench: recall, throughput and latency benchmarks, one tool in
// the manner of RocksDB's db_bench:
//
//   attnsearch-bench --benchmarks=ann,rerank,ingest,e2e [flags]
//
//   ann     FAISS candidate index (AnnIndex): build time, memory, recall@k vs
//           QPS over an efSearch / nprobe sweep            (bench_ann.cc)
//   rerank  the oneDNN attention reranker alone vs a bare oneDNN matmul of
//           the same shape vs PyTorch eager                 (bench_rerank.cc)
//   ingest  bulk load through the engine in-process: docs/s, MB/s,
//           BuildIndex time, bytes per document             (bench_ingest.cc)
//   e2e     Search through gRPC against a running server: closed loop per
//           concurrency, open loop at a rate; p50/p95/p99   (bench_e2e.cc)
//   quality a BEIR folder with qrels, text in: nDCG@10, Recall@100, MRR@10
//           of two-stage, ANN-only and exhaustive search, next to Xapian's
//           BM25 in the same run                            (bench_quality.cc)
//   overwrite  replacing documents in-process: documents/s and Upsert
//           latency, and Search latency alone and while documents are
//           replaced                                        (bench_overwrite.cc)
//   scale   a large set loaded offline by attnsearch-index, served by
//           attnsearch-server: load time, disk, RSS, e2e latency (bench_scale.cc)
//
// Each run prints a table and one JSON record (parameters, machine, git
// commit, timestamp, figures). With --out_dir DIR it appends the record to
// DIR/<benchmark>.jsonl (or to --json) and writes an SVG plot into DIR; without
// either it writes no file. The project's figures: --out_dir bench/results.
#include <cstdio>
#include <optional>

#include "CLI/CLI.hpp"
#include "benchmarks.h"
#include "cli/parse_flags.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

// The data every benchmark uses.
void AddDataFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--dataset", f.dataset, "synthetic | uniform | siftsmall")->capture_default_str();
  app.add_option("--siftsmall_dir", f.siftsmall_dir,
                 "folder of base/query.fvecs, groundtruth.ivecs; required for "
                 "--dataset=siftsmall (e.g. ../shared/data/siftsmall)");
  app.add_option("--seed", f.seed, "seed of the synthetic data")->capture_default_str();
  app.add_option("--dim", f.dim, "vector dimension (synthetic)")->capture_default_str();
  app.add_option("--clusters", f.clusters, "clusters (synthetic)")->capture_default_str();
  app.add_option("--spread", f.spread, "document spread around its cluster centre")
      ->capture_default_str();
  app.add_option("--token_spread", f.token_spread, "token spread around its document")
      ->capture_default_str();
  app.add_option("--num_docs", f.num_docs, "documents (ann, ingest; synthetic)")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  app.add_option("--num_queries", f.num_queries, "queries (ann; synthetic)")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
}

// ann.
void AddAnnFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--ann_spec", f.ann_spec, "FAISS factory string")->capture_default_str();
  app.add_option("--ef_construction", f.ef_construction, "HNSW efConstruction")
      ->capture_default_str();
  app.add_option("--ef_search", f.ef_search, "HNSW efSearch sweep")->delimiter(',');
  app.add_option("--nprobe", f.nprobe, "IVF nprobe sweep")->delimiter(',');
  app.add_option("--k", f.k, "recall@k")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--dump_dir", f.dump_dir,
                 "ann: also write the unit base/query vectors to DIR/{base,query}.fvecs");
  app.add_option("--ann_peers", f.ann_peers, "ann peers: hnswlib,faiss (none: -)")->delimiter(',');
  app.add_flag("--ann_multivector", f.ann_multivector,
               "ann: the first stages (pooled, fde, centroids) inside collections of clustered "
               "multi-vector documents (--num_docs, --num_queries, --dim, --clusters topics, "
               "--query_tokens, --code_bits), instead of single vectors");
  app.add_option("--ann_multivector_sources", f.ann_multivector_sources,
                 "ann --ann_multivector: the generators measured")
      ->delimiter(',');
  app.add_option("--ann_multivector_candidates", f.ann_multivector_candidates,
                 "ann --ann_multivector: candidate counts")
      ->delimiter(',');
  app.add_option("--ann_multivector_knobs", f.ann_multivector_knobs,
                 "ann --ann_multivector: several ann_params measured on each collection, "
                 "separated by ';' (e.g. \"probe=16;probe=2,refine=1000\"; default: "
                 "--ann_params)")
      ->delimiter(';');
  app.add_option("--ann_build_threads", f.ann_build_threads, "threads building each graph")
      ->capture_default_str();
  app.add_option("--build_rounds", f.build_rounds,
                 "ann: builds of ours and hnswlib, alternating (the fastest of each counts)")
      ->capture_default_str();
  app.add_option("--filter_fractions", f.filter_fractions,
                 "ann: filters admitting these fractions of documents (0: none)")
      ->delimiter(',');
  app.add_option("--delete_fraction", f.delete_fraction,
                 "ann: fraction deleted before the rebuild (0: skip)")
      ->capture_default_str();
  app.add_option("--target_recall", f.target_recall, "ann: auto-tuning target (0: skip)")
      ->capture_default_str();
  app.add_option("--tune_sample", f.tune_sample, "ann: held-out vectors used to tune")
      ->capture_default_str();
}

// rerank.
void AddRerankFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--candidates", f.candidates, "candidates per query (rerank)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--doc_tokens_min", f.doc_tokens_min, "fewest tokens per document")
      ->check(CLI::Range(1, 16384))
      ->capture_default_str();
  app.add_option("--doc_tokens_max", f.doc_tokens_max, "most tokens per document")
      ->check(CLI::Range(1, 16384))
      ->capture_default_str();
  app.add_option("--query_tokens", f.query_tokens, "query tokens m")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--dtype", f.dtype, "token dtype: bf16 | f32 | int8")
      ->check(CLI::IsMember({"bf16", "f32", "int8"}))
      ->capture_default_str();
  app.add_option("--threads", f.threads, "OpenMP / oneDNN / torch threads (rerank)")
      ->capture_default_str();
  app.add_option("--temperature", f.temperature, "attention temperature tau")
      ->capture_default_str();
  app.add_option("--code_bits", f.code_bits,
                 "rerank: also score the documents as residual codes of 1, 2 or 4 bits per "
                 "dimension (0: off)")
      ->check(CLI::IsMember({0, 1, 2, 4}))
      ->capture_default_str();
  app.add_option("--max_rows_per_gemm", f.max_rows_per_gemm,
                 "rerank: token rows per matmul call (0: the reranker's default)");
  app.add_option("--min_seconds", f.min_seconds, "time each rerank variant at least this long")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  app.add_option("--python", f.python, "python with torch (rerank)")->capture_default_str();
  app.add_option("--torch_script", f.torch_script, "path of torch_rerank.py");
}

// ingest and overwrite.
void AddIngestFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--tokens", f.tokens, "tokens per document (ingest, e2e load, overwrite)")
      ->capture_default_str();
  app.add_option("--overwrite_batch", f.overwrite_batch, "documents per Upsert (overwrite)")
      ->capture_default_str();
  app.add_option("--sync", f.sync, "sync the WAL on every write (overwrite)")
      ->capture_default_str();
  app.add_option("--batch", f.batch, "documents per Upsert (ingest)")->capture_default_str();
  app.add_option("--work_dir", f.work_dir,
                 "ingest: its data directory (default: a temp dir); scale: where its input is "
                 "written and kept for the next run with the same set, and its data directory "
                 "(default: $TMPDIR/attnsearch-scale)");
  app.add_option("--ingest_input", f.ingest_input,
                 "ingest: also write the set as these inputs (jsonl: gzipped JSON lines; npy: a "
                 "folder of .npy files; token counts uniform in [tokens/2, 3 tokens/2]) and load "
                 "each with attnsearch-index")
      ->delimiter(',')
      ->check(CLI::IsMember({"jsonl", "npy"}));
  app.add_option("--ingest_modes", f.ingest_modes,
                 "ingest input: offline (--data_dir) and/or online (--server, through an "
                 "attnsearch-server child on a loopback port)")
      ->delimiter(',')
      ->check(CLI::IsMember({"offline", "online"}))
      ->capture_default_str();
  app.add_option("--server_binary", f.server_binary,
                 "ingest input, online: the attnsearch-server binary (default: beside this one)");
  app.add_option("--ingest_threads", f.ingest_threads, "ingest input: attnsearch-index --threads")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--ingest_repeats", f.ingest_repeats,
                 "ingest input: timed runs of each mode and thread count (the table shows the "
                 "median and each run)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--indexer", f.indexer,
                 "ingest input: the attnsearch-index binary (default: beside this one)");
}

// e2e and its soak.
void AddE2eFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--server", f.server, "HOST:PORT of attnsearch-server (e2e)");
  app.add_option("--collection", f.collection, "collection (e2e)")->capture_default_str();
  app.add_option("--load", f.load, "first load N synthetic documents (e2e)")->capture_default_str();
  app.add_option("--load_batch", f.load_batch, "documents per UpsertStream message")
      ->capture_default_str();
  app.add_option("--concurrency", f.concurrency, "closed-loop client counts")->delimiter(',');
  app.add_option("--duration", f.duration, "seconds per closed/open loop run")
      ->capture_default_str();
  app.add_option("--rate", f.rate, "open-loop requests/s (0: skip)")->capture_default_str();
  app.add_option("--arrival", f.arrival, "open-loop arrivals: poisson | fixed")
      ->capture_default_str();
  app.add_option("--soak_seconds", f.soak_seconds,
                 "e2e: open loop at --soak_fraction of the best closed-loop QPS (0: skip)")
      ->capture_default_str();
  app.add_option("--soak_fraction", f.soak_fraction, "e2e soak: share of the measured max QPS")
      ->capture_default_str();
  app.add_option("--soak_window", f.soak_window, "e2e soak: seconds per reported window")
      ->capture_default_str();
  app.add_option("--server_pid", f.server_pid, "e2e soak: server pid, for its resident memory")
      ->capture_default_str();
  app.add_option(
      "--soak_samples", f.soak_samples,
      "e2e soak: write every request (start, latency, queue and stage times) to this CSV, "
      "and the speed probe's samples to FILE.probe.csv");
  app.add_option("--top_k", f.top_k, "top_k per search (e2e)")->capture_default_str();
  app.add_option("--e2e_candidates", f.e2e_candidates, "candidates per search (e2e)")
      ->capture_default_str();
  app.add_option("--e2e_text_queries", f.e2e_text_queries,
                 "e2e: search the texts of this BEIR queries.jsonl (a text collection) instead "
                 "of synthetic vectors; --e2e_candidates 0 leaves candidates to the server");
  app.add_option("--e2e_query_tokens", f.e2e_query_tokens, "query tokens per search (e2e)")
      ->capture_default_str();
  app.add_option("--ann_params", f.ann_params,
                 "ann_params per search (e2e, ann --ann_multivector), e.g. efSearch=64");
}

// quality.
void AddQualityFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--beir", f.beir, "BEIR folder with corpus.jsonl, queries.jsonl, qrels.tsv");
  app.add_option("--quality_candidates", f.quality_candidates, "ANN candidates reranked (quality)")
      ->capture_default_str();
  app.add_option("--quality_candidates_from", f.quality_candidates_from,
                 "quality: the collection's first stage (centroids: with a 2-bit residual codec "
                 "on the encoder's vocabulary, trained after the load; fde: the ANN index over "
                 "fixed dimensional encodings)")
      ->check(CLI::IsMember({"pooled", "centroids", "fde"}))
      ->capture_default_str();
  app.add_option("--quality_temperature", f.quality_temperature,
                 "attention temperature of text queries (0: the encoder's default)")
      ->capture_default_str();
  app.add_option("--quality_exhaustive", f.quality_exhaustive,
                 "quality: also rerank every document per query (agreement)")
      ->capture_default_str();
  app.add_option("--quality_hybrid", f.quality_hybrid,
                 "quality: also BM25 from the product's lexical index and its fusions with the "
                 "attention score (lexical, semantic, union + attention / RRF / linear), at 100 "
                 "and 1,000 candidates")
      ->capture_default_str();
  app.add_option("--quality_code_bits", f.quality_code_bits,
                 "quality: also rerank every document from residual codes of these bits per "
                 "dimension (1, 2, 4), next to the stored rows")
      ->delimiter(',')
      ->check(CLI::IsMember({1, 2, 4}));
  app.add_option("--code_centroids", f.code_centroids,
                 "rerank, quality: centroids of the residual codes (0: the codec's default, a "
                 "power of two near 4 sqrt(tokens))");
  app.add_option("--e2e_token_codec", f.e2e_token_codec,
                 "e2e --load: the collection's token codec, rows or residual (trained after "
                 "the load with --code_bits and --code_centroids)")
      ->check(CLI::IsMember({"rows", "residual"}))
      ->capture_default_str();
  app.add_option("--e2e_candidates_from", f.e2e_candidates_from,
                 "e2e --load: where the collection takes candidates, pooled or centroids "
                 "(with --e2e_token_codec residual)")
      ->check(CLI::IsMember({"pooled", "centroids"}))
      ->capture_default_str();
  app.add_option("--scale_token_codec", f.scale_token_codec,
                 "scale: the collection's token codec, rows or residual (--code_bits)")
      ->check(CLI::IsMember({"rows", "residual"}))
      ->capture_default_str();
  app.add_option("--exact_tier", f.exact_tier,
                 "e2e --load and scale, with a residual codec: keep the full-precision rows "
                 "and re-score the best candidates from them (keep_full_precision; false: "
                 "only codes are kept)")
      ->capture_default_str();
  app.add_option("--quality_dim", f.quality_dim, "collection dimension (quality)")
      ->capture_default_str();
  app.add_option("--semantic_share", f.semantic_share, "encoder: semantic share of a word vector")
      ->capture_default_str();
  app.add_option("--expansion_weight", f.expansion_weight,
                 "encoder: query expansion weight (0: off; < 0: the encoder's default)")
      ->capture_default_str();
  app.add_option("--wordnet_weight", f.wordnet_weight,
                 "encoder: WordNet retrofitting weight (0: off; < 0: the encoder's default)")
      ->capture_default_str();
  app.add_option("--stem_language", f.stem_language, "encoder: Snowball stemmer or none")
      ->capture_default_str();
}

// Where the records and plots go.
void AddOutputFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--json", f.json,
                 "append the record to this JSON lines file (default: <out_dir>/<benchmark>.jsonl "
                 "with --out_dir, else none)");
  app.add_option("--out_dir", f.out_dir,
                 "folder for the records and SVG plots (default: none, nothing is written; the "
                 "project's results: bench/results)");
  app.add_option("--tag", f.tag, "label stored with the record");
}

// --benchmarks as a list of names.
std::vector<std::string> SplitBenchmarks(const std::string& benchmarks) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : benchmarks + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

using BenchFn = absl::StatusOr<BenchOutput> (*)(const BenchFlags&);

// The benchmark called `name`, or null.
BenchFn FindBenchmark(const std::string& name) {
  if (name == "ann") return RunAnn;
  if (name == "rerank") return RunRerank;
  if (name == "ingest") return RunIngest;
  if (name == "e2e") return RunE2e;
  if (name == "quality") return RunQuality;
  if (name == "overwrite") return RunOverwrite;
  if (name == "scale") return RunScale;
  return nullptr;
}

// The run's record: the benchmark's output with its context.
nlohmann::json MakeRecord(const std::string& name, const std::string& started,
                          const nlohmann::json& machine, const std::string& command,
                          const BenchFlags& f, const BenchOutput& out) {
  nlohmann::json record;
  record["benchmark"] = name;
  record["timestamp"] = started;
  record["finished"] = TimestampUtc();
  record["git_commit"] = GitCommit();
  record["machine"] = machine;
  record["machine_load_after"] = MachineInfo().value("loadavg_1_5_15", nlohmann::json());
  record["command"] = command;
  if (!f.tag.empty()) record["tag"] = f.tag;
  record["params"] = out.params;
  record["results"] = out.results;
  return record;
}

// Prints the record or appends it to --json (or <out_dir>/<name>.jsonl);
// false when it cannot be written.
bool SaveRecord(const std::string& name, const BenchFlags& f, const nlohmann::json& record) {
  const std::string path = !f.json.empty()     ? f.json
                           : f.out_dir.empty() ? ""
                                               : f.out_dir + "/" + name + ".jsonl";
  if (path.empty()) {
    std::printf("record (not saved; --out_dir or --json saves it):\n%s\n\n", record.dump().c_str());
  } else if (!AppendJsonLine(path, record)) {
    std::fprintf(stderr, "attnsearch-bench: cannot write %s\n", path.c_str());
    return false;
  } else {
    std::printf("record appended to %s\n\n", path.c_str());
  }
  return true;
}

}  // namespace
}  // namespace attnsearch::bench

using namespace attnsearch::bench;

int main(int argc, char** argv) {
  BenchFlags f;
  std::string benchmarks = "ann";
  CLI::App app{
      "attnsearch-bench: attnsearch benchmarks (ann, rerank, ingest, e2e, quality, overwrite, "
      "scale)"};
  app.add_option("--benchmarks", benchmarks,
                 "comma-separated: ann,rerank,ingest,e2e,quality,overwrite,scale")
      ->capture_default_str();
  AddDataFlags(app, f);
  AddAnnFlags(app, f);
  AddRerankFlags(app, f);
  AddIngestFlags(app, f);
  AddE2eFlags(app, f);
  AddQualityFlags(app, f);
  AddOutputFlags(app, f);
  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) return *done;
  f.benchmarks = SplitBenchmarks(benchmarks);
  if (f.benchmarks.empty()) {
    std::fprintf(stderr, "attnsearch-bench: --benchmarks names none\n");
    return 2;
  }
  for (const std::string& name : f.benchmarks) {
    if (FindBenchmark(name) == nullptr) {
      std::fprintf(stderr,
                   "attnsearch-bench: unknown benchmark '%s' in --benchmarks (ann, rerank, "
                   "ingest, e2e, quality, overwrite, scale)\n",
                   name.c_str());
      return 2;
    }
  }
  if (f.doc_tokens_min > f.doc_tokens_max) {
    std::fprintf(stderr, "attnsearch-bench: --doc_tokens_min %d is above --doc_tokens_max %d\n",
                 f.doc_tokens_min, f.doc_tokens_max);
    return 2;
  }
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);

  int failures = 0;
  for (const std::string& name : f.benchmarks) {
    const nlohmann::json machine = MachineInfo();
    const std::string started = TimestampUtc();
    std::printf("== %s  (%s, load %s)\n", name.c_str(), started.c_str(),
                machine.value("loadavg_1_5_15", nlohmann::json::array()).dump().c_str());
    std::fflush(stdout);
    const BenchFn run = FindBenchmark(name);
    if (run == nullptr) {
      std::fprintf(stderr, "attnsearch-bench: unknown benchmark '%s'\n", name.c_str());
      ++failures;
      continue;
    }
    absl::StatusOr<BenchOutput> out = run(f);
    if (!out.ok()) {
      std::fprintf(stderr, "attnsearch-bench: %s failed: %s\n", name.c_str(),
                   std::string(out.status().ToString()).c_str());
      ++failures;
      continue;
    }
    if (!SaveRecord(name, f, MakeRecord(name, started, machine, command, f, *out))) ++failures;
  }
  return failures == 0 ? 0 : 1;
}
