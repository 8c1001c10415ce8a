// Benchmarks that run the product's own binaries as child processes
// (attnsearch-index, attnsearch-server) on files they write first.
#ifndef ATTNSEARCH_BENCH_CHILDREN_H_
#define ATTNSEARCH_BENCH_CHILDREN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "benchmarks.h"

namespace attnsearch::bench {

// Writes the synthetic set (IngestSynthetic(f)) as a folder of .npy files
// attnsearch-index reads: tokens.npy (float32, or bfloat16 as '<V2'),
// offsets.npy, ids.npy, pooled.npy and docs.jsonl. Returns the bytes written.
absl::StatusOr<uint64_t> WriteNpyFolder(const BenchFlags& f, const std::string& dir,
                                        bool bf16_tokens);

// user + system CPU seconds of this process's waited-for children, and of
// a running process (from /proc).
double ChildCpuSeconds();
double ProcessCpuSeconds(int pid);

// Reads `path` (a file, or every file of a folder) once, so that every
// timed run finds the input in the page cache.
void WarmPageCache(const std::string& path);

// `name` in the folder of this benchmark binary.
std::string BesideThisBinary(const std::string& name);

// An attnsearch-server child on a loopback port (`binary --data_dir DIR
// --listen 127.0.0.1:0 args...`, its log in DIR.log), stopped with SIGTERM
// when destroyed. Start returns once the server printed its address.
class ServerChild {
 public:
  static absl::StatusOr<std::unique_ptr<ServerChild>> Start(
      const std::string& binary, const std::string& data_dir,
      const std::vector<std::string>& args = {});
  ~ServerChild();
  int pid() const { return pid_; }
  const std::string& address() const { return address_; }

 private:
  explicit ServerChild(int pid) : pid_(pid) {}
  int pid_;
  std::string address_;
};

struct IndexerRun {
  int threads = 0;
  int exit_code = -1;
  double load_docs_per_s = 0;  // the indexer's own figure
  double wall_s = 0, cpu_s = 0, server_cpu_s = 0;
  std::string summary;  // its "done: ..." line
  std::string log;      // everything it printed
};

// One attnsearch-index run of `input`: `target` is "--data_dir DIR ..." or
// "--server ADDR ..."; `server` the server child online (null offline);
// its output goes to `log`.
absl::StatusOr<IndexerRun> RunIndexer(const std::string& indexer, const std::string& input,
                                      const std::string& target, const std::string& log,
                                      int threads, const ServerChild* server);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_CHILDREN_H_
