// ingest --ingest_input=jsonl: the real batch indexer on a file, next to the
// engine's in-process load of the same documents in the same run.
//
// The synthetic set (token counts uniform in [tokens/2, 3 tokens/2], --dim,
// clustered; bench_ingest.cc) is written to DIR/input.jsonl.gz in
// attnsearch-index's documented format ({"id", "text", "pooled", "tokens":
// [[...], ...]}, numbers with 4 significant digits, gzip level 1);
// writing is not timed. Then, for each --ingest_threads value T,
// `attnsearch-index DIR/input.jsonl.gz --data_dir DIR/indexer_T
// --collection c --threads T --dtype D --ann_spec S` runs as a child
// process. Reported per run: the indexer's own load rate (documents
// written / seconds of its load, from its summary line, before the ANN
// build), the wall time of the whole run including the ANN build, and the
// CPU it used (user + system of the child / wall: cores busy).
#include <sys/resource.h>
#include <sys/wait.h>
#include <zlib.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "benchmarks.h"
#include "core/status.h"
#include "dataset.h"
#include "report.h"

namespace attnsearch::bench {
namespace {

// Appends the n values as JSON numbers with 4 significant digits, as
// embeddings are commonly exported to JSON (the size of such a file, not
// the precision, is what the benchmark is about).
void AppendNumbers(const float* v, size_t n, std::string* out) {
  char buf[32];
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    const auto r = std::to_chars(buf, buf + sizeof buf, v[i], std::chars_format::general, 4);
    out->append(buf, r.ptr);
  }
}

// Writes the set as gzipped JSON lines; returns the uncompressed bytes.
absl::StatusOr<uint64_t> WriteJsonLines(const BenchFlags& f, const std::string& path) {
  gzFile gz = gzopen(path.c_str(), "wb1");
  if (gz == nullptr) return absl::InternalError("cannot write " + path);
  SyntheticDataset data(IngestSynthetic(f));
  std::vector<float> pooled(f.dim), tokens;
  std::string line;
  uint64_t bytes = 0;
  for (size_t i = 0; i < f.num_docs; ++i) {
    data.Pooled(i, pooled.data());
    const uint32_t rows = data.Tokens(i, &tokens);
    line = "{\"id\":\"doc-" + std::to_string(i) + "\",\"text\":\"synthetic document " +
           std::to_string(i) + "\",\"pooled\":[";
    AppendNumbers(pooled.data(), f.dim, &line);
    line += "],\"tokens\":[";
    for (uint32_t r = 0; r < rows; ++r) {
      line += r == 0 ? "[" : ",[";
      AppendNumbers(tokens.data() + size_t(r) * f.dim, f.dim, &line);
      line += "]";
    }
    line += "]}\n";
    bytes += line.size();
    if (gzwrite(gz, line.data(), unsigned(line.size())) != int(line.size())) {
      gzclose(gz);
      return absl::InternalError("cannot write " + path);
    }
  }
  if (gzclose(gz) != Z_OK) return absl::InternalError("cannot write " + path);
  return bytes;
}

double ChildCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_CHILDREN, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct IndexerRun {
  int threads = 0;
  int exit_code = -1;
  double load_docs_per_s = 0;  // the indexer's own figure
  double wall_s = 0, cpu_s = 0;
  std::string summary;  // its "done: ..." line
};

absl::StatusOr<IndexerRun> RunIndexer(const BenchFlags& f, const std::string& indexer,
                                      const std::string& input, const std::string& dir,
                                      int threads) {
  IndexerRun run;
  run.threads = threads;
  const std::string data = dir + "/indexer_" + std::to_string(threads);
  const std::string log = data + ".log";
  std::filesystem::remove_all(data);
  const std::string cmd = "'" + indexer + "' '" + input + "' --data_dir '" + data +
                          "' --collection c --threads " + std::to_string(threads) + " --dtype " +
                          f.dtype + " --ann_spec '" + f.ann_spec + "' > '" + log + "' 2>&1";
  const double cpu0 = ChildCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.cpu_s = ChildCpuSeconds() - cpu0;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::smatch m;
  const std::string all = text.str();
  static const std::regex done(R"(done: [^\n]*, ([0-9.]+) docs/s[^\n]*)");
  if (std::regex_search(all, m, done)) {
    run.summary = m[0];
    run.load_docs_per_s = std::stod(m[1]);
  }
  if (run.exit_code != 0 || run.summary.empty()) {
    return absl::InternalError("attnsearch-index failed (exit " + std::to_string(run.exit_code) +
                               "): " + all.substr(0, 2000));
  }
  std::filesystem::remove_all(data);
  return run;
}

}  // namespace

absl::StatusOr<nlohmann::json> RunIndexerOnInput(const BenchFlags& f, const std::string& dir,
                                                 double engine_docs_per_s) {
  const std::string indexer =
      !f.indexer.empty()
          ? f.indexer
          : (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "attnsearch-index")
                .string();
  const std::string input = dir + "/input.jsonl.gz";
  std::printf("writing %zu documents to %s ...\n", f.num_docs, input.c_str());
  std::fflush(stdout);
  ATTN_ASSIGN_OR_RETURN(const uint64_t json_bytes, WriteJsonLines(f, input));
  const uint64_t gz_bytes = std::filesystem::file_size(input);
  std::printf("input: %.1f MB of JSON, %.1f MB gzipped\n", json_bytes / 1e6, gz_bytes / 1e6);
  std::vector<std::vector<std::string>> table = {
      {"engine in-process (Upsert calls)", "-", Fmt("%.0f", engine_docs_per_s), "-", "-"}};
  nlohmann::json runs = nlohmann::json::array();
  for (int threads : f.ingest_threads) {
    ATTN_ASSIGN_OR_RETURN(IndexerRun r, RunIndexer(f, indexer, input, dir, threads));
    table.push_back({"attnsearch-index offline, jsonl.gz", std::to_string(threads),
                     Fmt("%.0f", r.load_docs_per_s), Fmt("%.1f", r.wall_s),
                     Fmt("%.2f", r.cpu_s / r.wall_s)});
    runs.push_back({{"threads", threads},
                    {"load_docs_per_s", r.load_docs_per_s},
                    {"wall_seconds_incl_ann_build", r.wall_s},
                    {"cpu_seconds", r.cpu_s},
                    {"cores_busy", r.cpu_s / r.wall_s},
                    {"summary", r.summary}});
  }
  std::printf("%s", FormatTable({"path", "--threads", "docs/s (load)", "wall s (incl. ANN build)",
                                 "cores busy"},
                                table)
                        .c_str());
  return nlohmann::json{{"input", "jsonl.gz"},
                        {"input_json_bytes", json_bytes},
                        {"input_gzip_bytes", gz_bytes},
                        {"engine_docs_per_s", engine_docs_per_s},
                        {"runs", runs}};
}

}  // namespace attnsearch::bench
