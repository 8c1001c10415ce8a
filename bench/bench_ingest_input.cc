// ingest --ingest_input=jsonl,npy: the real batch indexer on files, next
// to the engine's in-process load of the same documents in the same run.
//
// The synthetic set (token counts uniform in [tokens/2, 3 tokens/2], --dim,
// clustered; bench_ingest.cc) is written (not timed) as
//   jsonl  DIR/input.jsonl.gz in attnsearch-index's documented format
//          ({"id", "text", "pooled", "tokens": [[...], ...]}, numbers with 4
//          significant digits, gzip level 1);
//   npy    the folder DIR/input_npy: tokens.npy (float32), offsets.npy
//          (int64), ids.npy ('<U'), pooled.npy and docs.jsonl (the text).
// Then, for each input, each --ingest_modes mode and each --ingest_threads
// value T, attnsearch-index runs as a child process:
//   offline  INPUT --data_dir DIR/indexer_T --collection c --threads T
//            --dtype D --ann_spec S
//   online   INPUT --server ADDR --collection c --threads T --dtype D
//            --ann_spec S against a fresh attnsearch-server (--server_binary,
//            default beside this binary) started for the run on a loopback
//            port and stopped after it.
// Each input is synced and read once more before every run, so that every
// run finds it in the page cache. Reported per run: the indexer's own load rate (documents written
// / seconds of its load, from its summary line: offline before the ANN build, online until the
// server acknowledged everything), the wall time of the whole run (offline including the ANN build)
// and the CPU used (user + system of the indexer, and of the server online; cores busy = CPU /
// wall). Online, the server links the last acknowledged vectors into its ANN graph in the
// background: the run also reports when the graph held them all (polled with GetCollection until
// ann_pending is 0) and the rate up to it.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "benchmarks.h"
#include "children.h"
#include "core/status.h"
#include "core/vector_math.h"
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

// The .npy header for `descr` and `shape` ("(12, 128)"), padded so the data
// starts at a multiple of 64 bytes, as numpy writes it.
std::string NpyHeader(const std::string& descr, const std::string& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string header("\x93NUMPY\x01\x00", 8);
  header.push_back(char(dict.size() & 0xff));
  header.push_back(char(dict.size() >> 8));
  return header + dict;
}

absl::Status WriteBytes(std::ofstream& out, const void* data, size_t n, const std::string& path) {
  out.write(static_cast<const char*>(data), std::streamsize(n));
  return out ? absl::OkStatus() : absl::InternalError("cannot write " + path);
}

}  // namespace

absl::StatusOr<uint64_t> WriteNpyFolder(const BenchFlags& f, const std::string& dir,
                                        bool bf16_tokens) {
  std::filesystem::create_directories(dir);
  SyntheticDataset data(IngestSynthetic(f));
  std::vector<int64_t> offsets = {0};
  for (size_t i = 0; i < f.num_docs; ++i) offsets.push_back(offsets.back() + data.NumTokens(i));
  const std::string d = std::to_string(f.dim);
  std::ofstream tokens(dir + "/tokens.npy", std::ios::binary),
      pooled(dir + "/pooled.npy", std::ios::binary);
  std::ofstream docs(dir + "/docs.jsonl");
  tokens << NpyHeader(bf16_tokens ? "<V2" : "<f4",
                      "(" + std::to_string(offsets.back()) + ", " + d + ")");
  pooled << NpyHeader("<f4", "(" + std::to_string(f.num_docs) + ", " + d + ")");
  std::vector<float> v(f.dim), rows;
  std::vector<uint16_t> halves;
  for (size_t i = 0; i < f.num_docs; ++i) {
    const uint32_t n = data.Tokens(i, &rows);
    if (bf16_tokens) {
      halves.resize(size_t(n) * f.dim);
      FloatToBf16(rows.data(), halves.data(), halves.size());
      ATTN_RETURN_IF_ERROR(WriteBytes(tokens, halves.data(), halves.size() * 2, "tokens.npy"));
    } else {
      ATTN_RETURN_IF_ERROR(WriteBytes(tokens, rows.data(), size_t(n) * f.dim * 4, "tokens.npy"));
    }
    data.Pooled(i, v.data());
    ATTN_RETURN_IF_ERROR(WriteBytes(pooled, v.data(), v.size() * 4, "pooled.npy"));
    docs << "{\"id\":\"doc-" << i << "\",\"text\":\"synthetic document " << i << "\"}\n";
  }
  const size_t id_chars = 4 + std::to_string(f.num_docs).size();
  std::ofstream ids(dir + "/ids.npy", std::ios::binary),
      offs(dir + "/offsets.npy", std::ios::binary);
  ids << NpyHeader("<U" + std::to_string(id_chars), "(" + std::to_string(f.num_docs) + ",)");
  std::vector<uint32_t> chars(id_chars);
  for (size_t i = 0; i < f.num_docs; ++i) {
    const std::string id = "doc-" + std::to_string(i);
    std::fill(chars.begin(), chars.end(), 0u);
    std::copy(id.begin(), id.end(), chars.begin());
    ATTN_RETURN_IF_ERROR(WriteBytes(ids, chars.data(), chars.size() * 4, "ids.npy"));
  }
  offs << NpyHeader("<i8", "(" + std::to_string(offsets.size()) + ",)");
  ATTN_RETURN_IF_ERROR(WriteBytes(offs, offsets.data(), offsets.size() * 8, "offsets.npy"));
  for (std::ofstream* o : {&tokens, &pooled, &docs, &ids, &offs}) {
    o->close();
    if (!*o) return absl::InternalError("cannot write " + dir);
  }
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) bytes += e.file_size();
  return bytes;
}

double ChildCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_CHILDREN, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);  // utime, stime
  }
  return ticks / double(sysconf(_SC_CLK_TCK));
}

absl::StatusOr<std::unique_ptr<ServerChild>> ServerChild::Start(
    const std::string& binary, const std::string& data_dir, const std::vector<std::string>& args) {
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  std::vector<std::string> argv = {binary, "--data_dir", data_dir, "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  const int pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    const std::string log = data_dir + ".log";
    freopen(log.c_str(), "w", stderr);
    std::vector<char*> c_argv;
    for (std::string& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    execv(binary.c_str(), c_argv.data());
    _exit(127);
  }
  close(out[1]);
  auto child = std::unique_ptr<ServerChild>(new ServerChild(pid));
  FILE* in = fdopen(out[0], "r");
  char line[256] = {};
  const std::string prefix = "attnsearch-server listening on ";
  if (fgets(line, sizeof line, in) == nullptr || std::string(line).rfind(prefix, 0) != 0) {
    fclose(in);
    return absl::InternalError(binary + " did not start (see " + data_dir + ".log)");
  }
  fclose(in);
  child->address_ = std::string(line + prefix.size());
  while (!child->address_.empty() && child->address_.back() == '\n') child->address_.pop_back();
  return child;
}

ServerChild::~ServerChild() {
  kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
}

absl::StatusOr<IndexerRun> RunIndexer(const std::string& indexer, const std::string& input,
                                      const std::string& target, const std::string& log,
                                      int threads, const ServerChild* server) {
  IndexerRun run;
  run.threads = threads;
  const std::string cmd = "'" + indexer + "' '" + input + "' " + target + " --threads " +
                          std::to_string(threads) + " > '" + log + "' 2>&1";
  const double cpu0 = ChildCpuSeconds();
  const double server0 = server != nullptr ? ProcessCpuSeconds(server->pid()) : 0;
  const auto t0 = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.cpu_s = ChildCpuSeconds() - cpu0;
  if (server != nullptr) run.server_cpu_s = ProcessCpuSeconds(server->pid()) - server0;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  std::smatch m;
  const std::string all = text.str();
  static const std::regex done(R"(done: [^\n]*, ([0-9.]+) docs/s[^\n]*)");
  run.log = all;
  if (std::regex_search(all, m, done)) {
    run.summary = m[0];
    run.load_docs_per_s = std::stod(m[1]);
  }
  if (run.exit_code != 0 || run.summary.empty()) {
    return absl::InternalError("attnsearch-index failed (exit " + std::to_string(run.exit_code) +
                               "): " + all.substr(0, 2000));
  }
  return run;
}

void WarmPageCache(const std::string& path) {
  std::vector<std::string> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& e : std::filesystem::directory_iterator(path)) files.push_back(e.path());
  } else {
    files.push_back(path);
  }
  std::vector<char> buf(size_t(1) << 20);
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
    }
  }
}

std::string BesideThisBinary(const std::string& name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

namespace {

// Writes the set as `input` ("jsonl" or "npy") into dir; returns the path
// to load and its size (with the uncompressed size for jsonl).
absl::StatusOr<std::pair<std::string, nlohmann::json>> WriteInput(const BenchFlags& f,
                                                                  const std::string& dir,
                                                                  const std::string& input) {
  std::printf("writing %zu documents as %s ...\n", f.num_docs, input.c_str());
  std::fflush(stdout);
  if (input == "npy") {
    const std::string path = dir + "/input_npy";
    ATTN_ASSIGN_OR_RETURN(const uint64_t bytes, WriteNpyFolder(f, path, /*bf16_tokens=*/false));
    ::sync();  // the first run must not share the disk with the write-back
    WarmPageCache(path);
    std::printf("input: %.1f MB of .npy files\n", bytes / 1e6);
    return std::make_pair(path, nlohmann::json{{"input", "npy (float32)"}, {"input_bytes", bytes}});
  }
  const std::string path = dir + "/input.jsonl.gz";
  ATTN_ASSIGN_OR_RETURN(const uint64_t json_bytes, WriteJsonLines(f, path));
  ::sync();
  WarmPageCache(path);
  const uint64_t gz_bytes = std::filesystem::file_size(path);
  std::printf("input: %.1f MB of JSON, %.1f MB gzipped\n", json_bytes / 1e6, gz_bytes / 1e6);
  return std::make_pair(path, nlohmann::json{{"input", "jsonl.gz"},
                                             {"input_json_bytes", json_bytes},
                                             {"input_bytes", gz_bytes}});
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One timed attnsearch-index run of `input` in `mode` into `data` (offline:
// a data directory; online: a fresh server's), removed afterwards.
absl::StatusOr<nlohmann::json> RunOnce(const BenchFlags& f, const std::string& indexer,
                                       const std::string& server_binary, const std::string& input,
                                       const std::string& data, const std::string& mode,
                                       int threads) {
  std::filesystem::remove_all(data);
  std::filesystem::remove(data + ".progress");  // an online run's checkpoint
  // Every run starts alike: no write-back of an earlier run pending, and the
  // input read once more (this kind of machine may drop its page cache
  // between runs, and a run would then read from disk).
  ::sync();
  WarmPageCache(input);
  // Online: a fresh server per run, so no run pays for another's compactions.
  std::unique_ptr<ServerChild> server;
  if (mode == "online") {
    std::filesystem::remove_all(data + "_server");
    ATTN_ASSIGN_OR_RETURN(server, ServerChild::Start(server_binary, data + "_server"));
  }
  const std::string target =
      mode == "online" ? "--server " + server->address() + " --collection c --dtype " + f.dtype +
                             " --ann_spec '" + f.ann_spec + "' --checkpoint '" + data + ".progress'"
                       : "--data_dir '" + data + "' --collection c --dtype " + f.dtype +
                             " --ann_spec '" + f.ann_spec + "'";
  ATTN_ASSIGN_OR_RETURN(IndexerRun r,
                        RunIndexer(indexer, input, target, data + ".log", threads, server.get()));
  // Online, the server links the last vectors into its graph after it
  // acknowledged them: the time until it has.
  double linked_s = 0, server_cpu_linked_s = 0;
  if (server != nullptr) {
    ATTN_ASSIGN_OR_RETURN(const double waited, WaitUntilLinked(server->address(), "c", 600));
    linked_s = r.wall_s + waited;
    server_cpu_linked_s = ProcessCpuSeconds(server->pid());  // since its start
  }
  server.reset();
  std::filesystem::remove_all(data + "_server");
  std::filesystem::remove_all(data);
  nlohmann::json run = {
      {"mode", mode},
      {"threads", threads},
      {"load_docs_per_s", r.load_docs_per_s},
      {mode == "online" ? "wall_seconds" : "wall_seconds_incl_ann_build", r.wall_s},
      {"indexer_cpu_seconds", r.cpu_s},
      {"server_cpu_seconds", r.server_cpu_s},
      {"cores_busy", (r.cpu_s + r.server_cpu_s) / r.wall_s},
      {"summary", r.summary}};
  if (linked_s > 0) {
    run["graph_linked_seconds"] = linked_s;
    run["graph_linked_docs_per_s"] = double(f.num_docs) / linked_s;
    run["server_cpu_seconds_until_linked"] = server_cpu_linked_s;
  }
  return run;
}

}  // namespace

absl::StatusOr<nlohmann::json> RunIndexerOnInput(const BenchFlags& f, const std::string& dir,
                                                 double engine_docs_per_s) {
  const std::string indexer = !f.indexer.empty() ? f.indexer : BesideThisBinary("attnsearch-index");
  const std::string server_binary =
      !f.server_binary.empty() ? f.server_binary : BesideThisBinary("attnsearch-server");
  std::vector<std::vector<std::string>> table = {{"engine in-process (Upsert calls)", "-",
                                                  Fmt("%.0f", engine_docs_per_s), "-", "-", "-",
                                                  "-"}};
  nlohmann::json inputs = nlohmann::json::array();
  for (const std::string& input : f.ingest_input) {
    ATTN_ASSIGN_OR_RETURN(auto written, WriteInput(f, dir, input));
    nlohmann::json runs = nlohmann::json::array();
    for (const std::string& mode : f.ingest_modes) {
      for (int threads : f.ingest_threads) {
        const std::string name = input + "_" + mode + "_" + std::to_string(threads);
        std::vector<double> load, linked;
        for (int rep = 0; rep < std::max(f.ingest_repeats, 1); ++rep) {
          ATTN_ASSIGN_OR_RETURN(nlohmann::json run,
                                RunOnce(f, indexer, server_binary, written.first,
                                        dir + "/indexer_" + name, mode, threads));
          run["repeat"] = rep;
          load.push_back(run["load_docs_per_s"]);
          if (run.contains("graph_linked_docs_per_s"))
            linked.push_back(run["graph_linked_docs_per_s"]);
          const double cores = run["cores_busy"];
          const double wall =
              run[mode == "online" ? "wall_seconds" : "wall_seconds_incl_ann_build"];
          if (rep == 0) {
            table.push_back(
                {"attnsearch-index " + mode + ", " + std::string(written.second["input"]),
                 std::to_string(threads), "", Fmt("%.1f", wall), Fmt("%.2f", cores), "", ""});
          }
          runs.push_back(std::move(run));
        }
        // The median of the repeats, and every one in run order.
        std::vector<std::string>& row = table.back();
        row[2] = Fmt("%.0f", Median(load));
        std::string all;
        for (double v : load) all += (all.empty() ? "" : " / ") + Fmt("%.0f", v);
        row[6] = all;
        if (!linked.empty()) row[5] = Fmt("%.0f docs/s", Median(linked));
      }
    }
    written.second["runs"] = runs;
    inputs.push_back(written.second);
  }
  std::printf("%s", FormatTable({"path", "--threads", "docs/s (load, median)",
                                 "wall s (first; offline: incl. ANN build)", "cores busy (first)",
                                 "online: until all in the graph (median)", "docs/s of each run"},
                                table)
                        .c_str());
  return nlohmann::json{{"engine_docs_per_s", engine_docs_per_s}, {"inputs", inputs}};
}

}  // namespace attnsearch::bench
