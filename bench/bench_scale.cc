// scale: a large collection loaded offline by attnsearch-index, then served
// by attnsearch-server and searched through gRPC, as an operator would.
//
//   attnsearch-bench --benchmarks=scale --num_docs=1000000 --tokens=64 --dim=128
//       [--work_dir=DIR] [--scale_token_codec=residual --code_bits=2 --exact_tier=false]
//       [--concurrency=1,4 --duration=10 --e2e_candidates=100 --e2e_query_tokens=32]
//
// 1. The synthetic set (token counts uniform in [tokens/2, 3 tokens/2],
//    clustered) is written as a folder of .npy files with bfloat16 tokens,
//    DIR/scale_input_N_T_D; a folder already there from an earlier run of
//    the same N, T, D is reused (the write is not timed).
// 2. attnsearch-index loads it offline into DIR/scale_data (collection c,
//    --dtype, --ann_spec, --scale_token_codec, --code_bits, --exact_tier):
//    the wall time covers the load, the ANN build and, for a residual
//    codec, its training and the encoding of every document.
// 3. The data directory's size, then an attnsearch-server on it: the time
//    until it listens (every collection opened, its token arena built), its
//    resident memory then, and after the searches.
// 4. e2e's closed loops (bench_e2e.cc) against it, --concurrency and
//    --duration as there; the queries come from the set's clusters.
// DIR/scale_data is removed at the end; the input stays for the next run.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "benchmarks.h"
#include "children.h"
#include "core/status.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

using Clock = std::chrono::steady_clock;

// A "Name:  N kB" line of /proc/PID/status, in bytes (0 when unknown).
uint64_t StatusBytes(int pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) == 0) return std::stoull(line.substr(name.size())) * 1024;
  }
  return 0;
}

// The first line of `path` ("" when it cannot be read).
std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) bytes += e.file_size();
  }
  return bytes;
}

// The lines of `log` that match `pattern`, joined.
std::string Lines(const std::string& log, const std::regex& pattern) {
  std::string out;
  for (std::sregex_iterator it(log.begin(), log.end(), pattern), end; it != end; ++it) {
    if (!out.empty()) out += '\n';
    out += it->str();
  }
  return out;
}

}  // namespace

absl::StatusOr<BenchOutput> RunScale(const BenchFlags& flags) {
  BenchFlags f = flags;
  f.ingest_input = {"npy"};  // IngestSynthetic: token counts uniform in [T/2, 3T/2]
  std::string dir = f.work_dir;
  if (dir.empty()) dir = (std::filesystem::temp_directory_path() / "attnsearch-scale").string();
  std::filesystem::create_directories(dir);
  const std::string input = dir + "/scale_input_" + std::to_string(f.num_docs) + "_" +
                            std::to_string(f.tokens) + "_" + std::to_string(f.dim);
  const std::string data = dir + "/scale_data";
  BenchOutput out;
  out.params = {{"num_docs", f.num_docs},
                {"tokens", f.tokens},
                {"dim", f.dim},
                {"dtype", f.dtype},
                {"ann_spec", f.ann_spec},
                {"token_codec", f.scale_token_codec},
                {"code_bits", f.code_bits},
                {"exact_tier", f.exact_tier},
                {"candidates", f.e2e_candidates},
                {"query_tokens", f.e2e_query_tokens},
                {"top_k", f.top_k},
                {"duration_s", f.duration}};

  // 1. The input, written once and kept for the next run with the same
  // synthetic set: `complete` records what generated it, so that a run with
  // another seed or distribution writes it again instead of reusing it.
  std::ostringstream made_by;
  made_by << "dataset=" << f.dataset << " seed=" << f.seed << " clusters=" << f.clusters
          << " spread=" << f.spread << " token_spread=" << f.token_spread
          << " num_docs=" << f.num_docs << " tokens=" << f.tokens << " dim=" << f.dim;
  if (ReadFirstLine(input + "/complete") != made_by.str()) {
    std::printf("scale: writing %zu documents (bf16 .npy) to %s ...\n", f.num_docs, input.c_str());
    std::fflush(stdout);
    std::filesystem::remove_all(input);
    const auto t0 = Clock::now();
    ATTN_ASSIGN_OR_RETURN(const uint64_t bytes, WriteNpyFolder(f, input, /*bf16_tokens=*/true));
    std::ofstream(input + "/complete") << made_by.str() << "\n" << bytes << "\n";
    std::printf("scale: %.2f GB written in %.0f s\n", bytes / 1e9,
                std::chrono::duration<double>(Clock::now() - t0).count());
  }
  ::sync();
  WarmPageCache(input);
  const uint64_t input_bytes = DirectoryBytes(input);

  // 2. The offline load.
  std::filesystem::remove_all(data);
  const std::string indexer = !f.indexer.empty() ? f.indexer : BesideThisBinary("attnsearch-index");
  const std::string target = "--data_dir '" + data + "' --collection c --dtype " + f.dtype +
                             " --ann_spec '" + f.ann_spec + "' --token_codec " +
                             f.scale_token_codec + " --code_bits " + std::to_string(f.code_bits) +
                             " --exact_tier " + (f.exact_tier ? "true" : "false") +
                             " --progress plain --progress_seconds 30";
  std::printf("scale: attnsearch-index %s ...\n", target.c_str());
  std::fflush(stdout);
  ATTN_ASSIGN_OR_RETURN(IndexerRun load,
                        RunIndexer(indexer, input, target, dir + "/scale_index.log", 0, nullptr));
  const std::string indexer_lines = Lines(load.log, std::regex("[^\n]*(done|codec|ANN)[^\n]*"));
  std::printf("%s\n", indexer_lines.c_str());
  ::sync();
  const uint64_t disk_bytes = DirectoryBytes(data);

  // 3. The server.
  const std::string server_binary =
      !f.server_binary.empty() ? f.server_binary : BesideThisBinary("attnsearch-server");
  const auto t1 = Clock::now();
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<ServerChild> server,
                        ServerChild::Start(server_binary, data));
  const double open_s = std::chrono::duration<double>(Clock::now() - t1).count();
  const uint64_t rss_open = StatusBytes(server->pid(), "VmRSS:");

  // 4. Searches through gRPC.
  BenchFlags e = f;
  e.server = server->address();
  e.collection = "c";
  e.load = 0;
  e.server_pid = server->pid();
  ATTN_ASSIGN_OR_RETURN(BenchOutput searched, RunE2e(e));
  const uint64_t rss_after = StatusBytes(server->pid(), "VmRSS:");
  const uint64_t rss_peak = StatusBytes(server->pid(), "VmHWM:");
  server.reset();
  std::filesystem::remove_all(data);

  const double tokens = double(f.num_docs) * f.tokens;
  std::printf(
      "\nscale: %zu documents x ~%d tokens x %u (%s, %s codec)\n"
      "  input             %.2f GB of .npy (bf16 tokens)\n"
      "  offline load      %.1f s wall (load, ANN build, codec), %.0f docs/s load rate, "
      "%.2f cores busy\n"
      "  on disk           %.2f GB (%.0f B/document)\n"
      "  server open       %.1f s until listening\n"
      "  server RSS        %.2f GB open, %.2f GB after the searches, %.2f GB peak\n",
      f.num_docs, f.tokens, f.dim, f.dtype.c_str(), f.scale_token_codec.c_str(), input_bytes / 1e9,
      load.wall_s, load.load_docs_per_s, load.cpu_s / load.wall_s, disk_bytes / 1e9,
      double(disk_bytes) / double(f.num_docs), open_s, rss_open / 1e9, rss_after / 1e9,
      rss_peak / 1e9);
  std::printf("  the input stays in %s for the next run with the same set (--work_dir)\n",
              input.c_str());
  out.results = {{"input_bytes", input_bytes},
                 {"load_wall_seconds", load.wall_s},
                 {"load_docs_per_s", load.load_docs_per_s},
                 {"load_cpu_seconds", load.cpu_s},
                 {"indexer_summary", indexer_lines},
                 {"disk_bytes", disk_bytes},
                 {"disk_bytes_per_token", double(disk_bytes) / tokens},
                 {"server_open_seconds", open_s},
                 {"server_rss_bytes_open", rss_open},
                 {"server_rss_bytes_after", rss_after},
                 {"server_rss_bytes_peak", rss_peak},
                 {"e2e", searched.results}};
  return out;
}

}  // namespace attnsearch::bench
