#include "report.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_set>

namespace attnsearch::bench {

double PercentileSorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  p = std::clamp(p, 0.0, 100.0);
  const double rank = std::ceil(p / 100.0 * double(sorted.size()));
  const size_t index = rank < 1.0 ? 0 : size_t(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return PercentileSorted(values, p);
}

Summary Summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = values.size();
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / double(values.size());
  s.p50 = PercentileSorted(values, 50);
  s.p95 = PercentileSorted(values, 95);
  s.p99 = PercentileSorted(values, 99);
  s.max = values.back();
  return s;
}

nlohmann::json ToJson(const Summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p95", s.p95},     {"p99", s.p99},   {"max", s.max}};
}

double RecallAtK(const std::vector<int64_t>& approx, const std::vector<int64_t>& exact, size_t k) {
  if (k == 0) return 0.0;
  std::unordered_set<int64_t> truth;
  for (size_t i = 0; i < std::min(k, exact.size()); ++i) {
    if (exact[i] >= 0) truth.insert(exact[i]);
  }
  size_t hits = 0;
  std::unordered_set<int64_t> seen;
  for (size_t i = 0; i < std::min(k, approx.size()); ++i) {
    if (approx[i] >= 0 && truth.count(approx[i]) && seen.insert(approx[i]).second) ++hits;
  }
  return double(hits) / double(k);
}

namespace {

float Dot8(const float* a, const float* b, uint32_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float s = 0;
  for (; j < n; ++j) s += a[j] * b[j];
  for (float v : acc) s += v;
  return s;
}

}  // namespace

void ExactTopK(const float* base, size_t n, const float* queries, size_t nq, uint32_t dim, size_t k,
               std::vector<std::vector<int64_t>>* out) {
  out->assign(nq, {});
  k = std::min(k, n);
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t q = 0; q < nq; ++q) {
    std::vector<std::pair<float, int64_t>> scored(n);
    const float* qv = queries + q * dim;
    for (size_t i = 0; i < n; ++i) scored[i] = {Dot8(qv, base + i * dim, dim), int64_t(i)};
    std::partial_sort(scored.begin(), scored.begin() + k, scored.end(),
                      [](const auto& a, const auto& b) {
                        return a.first > b.first || (a.first == b.first && a.second < b.second);
                      });
    auto& row = (*out)[q];
    row.resize(k);
    for (size_t i = 0; i < k; ++i) row[i] = scored[i].second;
  }
}

nlohmann::json MachineInfo() {
  nlohmann::json m;
  m["nproc"] = std::thread::hardware_concurrency();
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      m["cpu_model"] = pos == std::string::npos ? line : line.substr(pos + 2);
      break;
    }
  }
  std::ifstream mem("/proc/meminfo");
  while (std::getline(mem, line)) {
    if (line.rfind("MemTotal:", 0) == 0) {
      long kb = 0;
      std::sscanf(line.c_str(), "MemTotal: %ld", &kb);
      m["mem_total_gib"] = double(kb) / (1024.0 * 1024.0);
      break;
    }
  }
  std::ifstream load("/proc/loadavg");
  double l1 = 0, l5 = 0, l15 = 0;
  if (load >> l1 >> l5 >> l15) m["loadavg_1_5_15"] = {l1, l5, l15};
  return m;
}

std::string GitCommit() {
  FILE* p = popen("git rev-parse HEAD 2>/dev/null", "r");
  if (p == nullptr) return "";
  char buf[128] = {0};
  std::string out;
  if (std::fgets(buf, sizeof buf, p) != nullptr) out = buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.empty()) return out;
  // Mark a work tree with uncommitted changes.
  p = popen("git status --porcelain --untracked-files=no 2>/dev/null | head -1", "r");
  if (p != nullptr) {
    if (std::fgets(buf, sizeof buf, p) != nullptr) out += "-dirty";
    pclose(p);
  }
  return out;
}

std::string TimestampUtc() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

long RssKb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      long kb = -1;
      std::sscanf(line.c_str(), "VmRSS: %ld", &kb);
      return kb;
    }
  }
  return -1;
}

namespace {
void MakeParent(const std::string& path) {
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
}
}  // namespace

bool AppendJsonLine(const std::string& path, const nlohmann::json& record) {
  MakeParent(path);
  std::ofstream f(path, std::ios::app);
  if (!f) return false;
  f << record.dump() << "\n";
  return bool(f);
}

bool WriteFile(const std::string& path, const std::string& text) {
  MakeParent(path);
  std::ofstream f(path, std::ios::trunc | std::ios::binary);
  if (!f) return false;
  f << text;
  return bool(f);
}

void SavePlot(const std::string& out_dir, const std::string& name, const std::string& svg,
              nlohmann::json* results) {
  if (out_dir.empty()) return;
  const std::string path = out_dir + "/" + name;
  if (!WriteFile(path, svg)) {
    std::fprintf(stderr, "attnsearch-bench: cannot write %s\n", path.c_str());
    return;
  }
  std::printf("plot: %s\n", path.c_str());
  (*results)["svg"] = path;
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], r[c].size());
    }
  }
  std::ostringstream out;
  auto emit = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < r.size() ? r[c] : "";
      const std::string pad(width[c] - cell.size(), ' ');
      if (c > 0) out << "  ";
      out << (c == 0 ? cell + pad : pad + cell);
    }
    out << "\n";
  };
  emit(header);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  out << std::string(total > 2 ? total - 2 : 0, '-') << "\n";
  for (const auto& r : rows) emit(r);
  return out.str();
}

std::string Fmt(const char* format, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  return buf;
}

ScratchDir::ScratchDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

}  // namespace attnsearch::bench
