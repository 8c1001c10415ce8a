// e2e: Search through gRPC against a running attnsearch-server.
//
//   attnsearch-bench --benchmarks=e2e --server=HOST:PORT [--collection=bench]
//       [--load=N --tokens=64 --dim=128 --load_batch=250]
//       [--concurrency=1,4,16] [--duration=10] [--rate=R --arrival=poisson|fixed]
//       [--top_k=10 --e2e_candidates=100 --e2e_query_tokens=32 --ann_params=...]
//
// With --load N the collection is first dropped, recreated (dim, bf16,
// --ann_spec) and N synthetic clustered documents (--tokens rows each, plus
// the pooled vector) are streamed in with UpsertStream, --load_batch per
// message; the load rate is reported. Without it the collection must exist
// and its dim is used.
//
// Queries: a pool of 256 synthetic queries (pooled vector + m token rows,
// from the same clusters as the documents), ATTENTION rerank, top_k and
// candidates as given, a 10 s deadline each.
//   closed loop  for each --concurrency c: c threads, each with its own
//                channel and stub, issue synchronous Search calls back to
//                back for --duration seconds.
//   open loop    (--rate > 0) requests start at fixed or Poisson (exponential
//                inter-arrival) times for --duration seconds, issued with the
//                async callback API; latency is measured from the scheduled
//                start, so it includes any queueing (no coordinated omission).
//   soak         (--soak_seconds > 0) an open loop at --soak_fraction of the
//                best closed-loop QPS for --soak_seconds, reported per
//                --soak_window: requests, errors, p50/p99 and the server's
//                resident memory (VmRSS of --server_pid) at the window's end.
//                Judged: no errors; memory grows <= 5% after the first
//                window; every window's p99 <= 2x the first window's.
// Reported per run: QPS (OK responses / elapsed), p50/p95/p99/max latency of
// OK calls (ms), errors by gRPC code, and the mean per-stage timings the
// server returned (encode/ann/fetch/rerank/total µs).
// Output: table, JSON record, e2e_latency_cdf.svg (latency CDF per run).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "benchmarks.h"
#include "core/status.h"
#include "grpcpp/grpcpp.h"
#include "report.h"
#include "svg.h"

namespace attnsearch::bench {
namespace {

namespace v1 = ::attnsearch::v1;
using Clock = std::chrono::steady_clock;

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  args.SetInt("attnsearch.bench.channel_id", id);  // distinct channel per client
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

struct Sample {
  double start_s = 0;  // scheduled start, seconds since the run began (open loop)
  double latency_us = 0;
  double send_lag_us = 0;  // how late the load generator sent it (open loop)
  int code = 0;
  int64_t t[5] = {0, 0, 0, 0, 0};  // encode, ann, fetch, rerank, total
  int64_t queue_us = 0;            // the wait for a server worker
};

void Record(const grpc::Status& s, const v1::SearchResponse& resp, double us, Sample* out) {
  out->latency_us = us;
  out->code = int(s.error_code());
  if (s.ok()) {
    const auto& tm = resp.timing();
    out->t[0] = int64_t(tm.encode_us());
    out->t[1] = int64_t(tm.ann_us());
    out->t[2] = int64_t(tm.fetch_us());
    out->t[3] = int64_t(tm.rerank_us());
    out->t[4] = int64_t(tm.total_us());
    out->queue_us = int64_t(tm.queue_us());
  }
}

struct RunResult {
  std::string name;
  double elapsed_s = 0;
  std::vector<Sample> samples;
};

nlohmann::json Analyse(const RunResult& r, std::vector<std::string>* row,
                       std::vector<double>* sorted_ms) {
  std::vector<double> ms;
  std::map<std::string, int64_t> errors;
  double stage[5] = {0, 0, 0, 0, 0};
  for (const Sample& s : r.samples) {
    if (s.code == 0) {
      ms.push_back(s.latency_us / 1000.0);
      for (int k = 0; k < 5; ++k) stage[k] += double(s.t[k]);
    } else {
      errors[absl::StatusCodeToString(absl::StatusCode(s.code))]++;
    }
  }
  const Summary lat = Summarize(ms);
  const double n_ok = double(ms.size());
  for (double& v : stage) v = n_ok > 0 ? v / n_ok : 0;
  const double qps = n_ok / r.elapsed_s;
  std::string err_text;
  for (const auto& [k, v] : errors)
    err_text += (err_text.empty() ? "" : " ") + k + ":" + std::to_string(v);
  *row = {r.name,
          Fmt("%.0f", qps),
          Fmt("%.2f", lat.p50),
          Fmt("%.2f", lat.p95),
          Fmt("%.2f", lat.p99),
          Fmt("%.2f", lat.max),
          err_text.empty() ? "0" : err_text,
          Fmt("%.0f/%.0f/%.0f/%.0f/%.0f", stage[0], stage[1], stage[2], stage[3], stage[4])};
  std::sort(ms.begin(), ms.end());
  *sorted_ms = ms;
  return {{"run", r.name},
          {"elapsed_seconds", r.elapsed_s},
          {"requests", r.samples.size()},
          {"ok", ms.size()},
          {"qps", qps},
          {"latency_ms", ToJson(lat)},
          {"errors", errors},
          {"mean_stage_us",
           {{"encode", stage[0]},
            {"ann", stage[1]},
            {"fetch", stage[2]},
            {"rerank", stage[3]},
            {"total", stage[4]}}}};
}

// Requests start at fixed or Poisson times at `rate`/s for `seconds` via the
// async API; latency counts from the scheduled start. `tick` (if given) is
// called from this thread about every second with the seconds elapsed.
RunResult OpenLoop(v1::SearchService::Stub* stub, const std::vector<v1::SearchRequest>& pool,
                   double rate, double seconds, const std::string& arrival, uint64_t seed,
                   const std::string& name, const std::function<void(double)>& tick = nullptr) {
  RunResult run;
  run.name = name;
  struct Call {
    grpc::ClientContext ctx;
    v1::SearchResponse resp;
    Clock::time_point intended;
    double lag_us = 0;
  };
  std::mutex mu;
  std::condition_variable cv;
  int64_t outstanding = 0;
  std::vector<Sample> samples;
  Rng rng(seed ^ 0x0badc0ffee);
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto next = start;
  auto next_tick = start + std::chrono::seconds(1);
  size_t j = 0;
  while (next < end) {
    std::this_thread::sleep_until(next);
    if (tick && Clock::now() >= next_tick) {
      tick(std::chrono::duration<double>(Clock::now() - start).count());
      next_tick += std::chrono::seconds(1);
    }
    auto* call = new Call;
    call->intended = next;
    call->lag_us = std::chrono::duration<double, std::micro>(Clock::now() - next).count();
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    {
      std::lock_guard<std::mutex> l(mu);
      ++outstanding;
    }
    stub->async()->Search(
        &call->ctx, &pool[j++ % pool.size()], &call->resp, [&, call](grpc::Status s) {
          Sample smp;
          Record(s, call->resp,
                 std::chrono::duration<double, std::micro>(Clock::now() - call->intended).count(),
                 &smp);
          smp.start_s = std::chrono::duration<double>(call->intended - start).count();
          smp.send_lag_us = call->lag_us;
          delete call;
          std::lock_guard<std::mutex> l(mu);
          samples.push_back(smp);
          if (--outstanding == 0) cv.notify_all();
        });
    const double gap = arrival == "fixed" ? 1.0 / rate : -std::log(1.0 - rng.Uniform()) / rate;
    next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap));
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return outstanding == 0; });
  }
  run.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  run.samples = std::move(samples);
  std::printf("  %s: %zu requests\n", run.name.c_str(), run.samples.size());
  std::fflush(stdout);
  return run;
}

// VmRSS of `pid` in bytes (0 when unknown).
uint64_t ResidentBytes(int pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// CPU time counters: the machine's (busy and stolen jiffies, all CPUs, from
// /proc/stat) and the server's (utime + stime of `pid`).
struct CpuSample {
  uint64_t total = 0, idle = 0, steal = 0, server = 0, self = 0;
  uint64_t server_disk_read = 0;  // bytes the server read from storage (/proc/PID/io)
};
// utime + stime of /proc/<which>/stat, in clock ticks (0 when unreadable).
uint64_t ProcessTicks(const std::string& which) {
  std::ifstream ps("/proc/" + which + "/stat");
  std::string line;
  if (!std::getline(ps, line) || line.rfind(')') == std::string::npos) return 0;
  // Fields after the command's closing parenthesis: state is field 3,
  // utime 14, stime 15.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  uint64_t ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stoull(field);
  }
  return ticks;
}

CpuSample SampleCpu(int pid) {
  CpuSample c;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // user nice system idle iowait irq softirq steal
  stat >> cpu;
  for (uint64_t& x : v) stat >> x;
  for (uint64_t x : v) c.total += x;
  c.idle = v[3] + v[4];
  c.steal = v[7];
  c.self = ProcessTicks("self");  // the load generator
  if (pid > 0) {
    c.server = ProcessTicks(std::to_string(pid));
    std::string line;
    std::ifstream io("/proc/" + std::to_string(pid) + "/io");
    while (std::getline(io, line)) {
      if (line.rfind("read_bytes:", 0) == 0) c.server_disk_read = std::stoull(line.substr(11));
    }
  }
  return c;
}

// The machine's memory speed while the soak runs: every 100 ms a thread of
// the load generator times a fixed piece of work — 4,096 dependent loads
// along a random cycle through 64 MiB, beyond the last-level cache — in its
// own CPU time, so being descheduled does not count. When other tenants
// contend for the shared cache and memory (the engine's ANN and fetch stages
// are bound by memory latency), the same work takes more CPU time, which
// per-process CPU counters and hypervisor steal do not show.
class SpeedProbe {
 public:
  SpeedProbe() : thread_([this] { Run(); }) {}
  ~SpeedProbe() { Stop(); }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  struct Sample {
    double t_s;     // seconds since the probe started
    double cpu_us;  // CPU time of one piece of work
  };
  // REQUIRES: Stop() called.
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  static double ThreadCpuUs() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) / 1e3;
  }
  void Run() {
    // One random cycle through all the slots (Sattolo's shuffle), one slot
    // per 64-byte line.
    constexpr size_t kSlots = (size_t{64} << 20) / 64;
    std::vector<uint64_t> next(kSlots * 8);
    std::vector<uint32_t> order(kSlots);
    for (size_t i = 0; i < kSlots; ++i) order[i] = uint32_t(i);
    Rng rng(7);
    for (size_t i = kSlots - 1; i > 0; --i) {
      std::swap(order[i], order[size_t(rng.Uniform() * double(i))]);
    }
    for (size_t i = 0; i < kSlots; ++i)
      next[size_t(order[i]) * 8] = uint64_t(order[(i + 1) % kSlots]) * 8;
    volatile uint64_t sink = 0;
    uint64_t at = 0;
    const auto start = Clock::now();
    std::unique_lock<std::mutex> l(mu_);
    while (!cv_.wait_for(l, std::chrono::milliseconds(100), [this] { return stop_; })) {
      const double t0 = ThreadCpuUs();
      for (int hop = 0; hop < 4096; ++hop) at = next[at];
      sink = at;
      samples_.push_back(
          {std::chrono::duration<double>(Clock::now() - start).count(), ThreadCpuUs() - t0});
    }
    (void)sink;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::vector<Sample> samples_;
  std::thread thread_;
};

// A soak run's samples split by window: the whole latency, the engine's
// search time, the wait for a server worker, the rest (gRPC on both sides,
// loopback, the client's callback) and how late the load generator sent;
// and the speed probe's CPU times.
struct SoakWindows {
  explicit SoakWindows(size_t n)
      : ms(n),
        engine_ms(n),
        queue_ms(n),
        outside_ms(n),
        lag_ms(n),
        probe_us(n),
        errors(n, 0),
        requests(n, 0) {}
  std::vector<std::vector<double>> ms, engine_ms, queue_ms, outside_ms, lag_ms, probe_us;
  std::vector<int64_t> errors, requests;
};

SoakWindows SplitSoak(const RunResult& run, const SpeedProbe& probe, size_t windows,
                      double window_s) {
  SoakWindows out(windows);
  for (const SpeedProbe::Sample& s : probe.samples()) {
    out.probe_us[std::min(windows - 1, size_t(s.t_s / window_s))].push_back(s.cpu_us);
  }
  for (const Sample& s : run.samples) {
    const size_t w = std::min(windows - 1, size_t(s.start_s / window_s));
    ++out.requests[w];
    out.lag_ms[w].push_back(s.send_lag_us / 1000.0);
    if (s.code == 0) {
      out.ms[w].push_back(s.latency_us / 1000.0);
      out.engine_ms[w].push_back(double(s.t[4]) / 1000.0);
      out.queue_ms[w].push_back(double(s.queue_us) / 1000.0);
      out.outside_ms[w].push_back((s.latency_us - double(s.t[4] + s.queue_us)) / 1000.0);
    } else {
      ++out.errors[w];
    }
  }
  return out;
}

// --soak_samples: every request to FILE, the probe's samples to FILE.probe.csv.
void WriteSoakSamples(const std::string& path, const RunResult& run, const SpeedProbe& probe) {
  std::ofstream csv(path);
  csv << "start_s,code,latency_us,send_lag_us,queue_us,encode_us,ann_us,fetch_us,rerank_us,"
         "total_us\n";
  for (const Sample& s : run.samples) {
    csv << Fmt("%.6f,%d,%.0f,%.0f,%lld", s.start_s, s.code, s.latency_us, s.send_lag_us,
               (long long)s.queue_us);
    for (int64_t t : s.t) csv << ',' << t;
    csv << '\n';
  }
  std::ofstream probe_csv(path + ".probe.csv");
  probe_csv << "t_s,cpu_us\n";
  for (const SpeedProbe::Sample& s : probe.samples()) {
    probe_csv << Fmt("%.3f,%.1f\n", s.t_s, s.cpu_us);
  }
}

// The CPU use between two samples `seconds` apart.
struct CpuShares {
  double steal = 0;         // share of the machine's CPU time stolen by the hypervisor
  double server_cores = 0;  // the server's CPU use in cores
  double self_cores = 0;    // this load generator's
  double other_cores = 0;   // every other process's (and the kernel's threads)
  double disk_mb = 0;       // what the server read from storage
};

CpuShares CpuBetween(const CpuSample& a, const CpuSample& b, double seconds) {
  CpuShares c;
  const double jiffies = double(b.total - a.total);
  c.steal = jiffies > 0 ? double(b.steal - a.steal) / jiffies : 0;
  const double tick_s = 1.0 / double(sysconf(_SC_CLK_TCK));
  c.server_cores = double(b.server - a.server) * tick_s / seconds;
  // The machine's busy time less the server's and this load generator's.
  const double busy_cores =
      (jiffies - double(b.idle - a.idle) - double(b.steal - a.steal)) * tick_s / seconds;
  c.self_cores = double(b.self - a.self) * tick_s / seconds;
  c.other_cores = std::max(0.0, busy_cores - c.server_cores - c.self_cores);
  c.disk_mb = double(b.server_disk_read - a.server_disk_read) / 1048576.0;
  return c;
}

// The soak's table of windows and its verdict, and its part of the record.
nlohmann::json ReportSoak(const BenchFlags& f, double rate, SoakWindows& sw,
                          const std::vector<uint64_t>& rss, const std::vector<CpuSample>& cpu,
                          uint64_t rss_start) {
  const size_t windows = rss.size();
  std::vector<std::vector<std::string>> table;
  nlohmann::json rows = nlohmann::json::array();
  int64_t total_errors = 0;
  double p99_first = 0, p99_worst = 0, probe_first_median = 0;
  for (size_t w = 0; w < windows; ++w) {
    const Summary lat = Summarize(sw.ms[w]);
    // The probe's work in CPU time, relative to the first window's median:
    // the median and the 99th percentile (a slow spell of a few seconds is
    // 10-50 of a minute's 600 samples).
    std::vector<double>& probe = sw.probe_us[w];
    std::sort(probe.begin(), probe.end());
    auto probe_q = [&](double q) {
      return probe.empty() ? 0.0 : probe[size_t(q * double(probe.size() - 1))];
    };
    if (w == 0) probe_first_median = probe_q(0.5);
    const double slow_median = probe_first_median > 0 ? probe_q(0.5) / probe_first_median : 0;
    const double slow_p99 = probe_first_median > 0 ? probe_q(0.99) / probe_first_median : 0;
    const Summary engine = Summarize(sw.engine_ms[w]), queue = Summarize(sw.queue_ms[w]),
                  outside = Summarize(sw.outside_ms[w]), lag = Summarize(sw.lag_ms[w]);
    if (w == 0) p99_first = lat.p99;
    p99_worst = std::max(p99_worst, lat.p99);
    total_errors += sw.errors[w];
    const CpuShares c = CpuBetween(cpu[w], cpu[w + 1], f.soak_window);
    table.push_back(
        {Fmt("%.0f-%.0f s", w * f.soak_window, std::min(f.soak_seconds, (w + 1) * f.soak_window)),
         Fmt("%lld", (long long)sw.requests[w]), Fmt("%lld", (long long)sw.errors[w]),
         Fmt("%.2f", lat.p50), Fmt("%.2f", lat.p99), Fmt("%.2f", lat.max), Fmt("%.2f", engine.p99),
         Fmt("%.1f", engine.max), Fmt("%.2f", queue.p99), Fmt("%.2f", outside.p99),
         Fmt("%.2f", lag.p99), Fmt("%.1f", rss[w] / 1048576.0), Fmt("%.2f", c.server_cores),
         Fmt("%.2f", c.self_cores), Fmt("%.2f", c.other_cores),
         Fmt("%.2f/%.2f", slow_median, slow_p99), Fmt("%.0f", c.disk_mb),
         Fmt("%.1f%%", 100 * c.steal)});
    rows.push_back({{"window", w},
                    {"requests", sw.requests[w]},
                    {"errors", sw.errors[w]},
                    {"latency_ms", ToJson(lat)},
                    {"engine_ms", ToJson(engine)},
                    {"queue_ms", ToJson(queue)},
                    {"outside_engine_ms", ToJson(outside)},
                    {"send_lag_ms", ToJson(lag)},
                    {"rss_bytes", rss[w]},
                    {"server_cpu_cores", c.server_cores},
                    {"load_generator_cpu_cores", c.self_cores},
                    {"other_cpu_cores", c.other_cores},
                    {"server_disk_read_mb", c.disk_mb},
                    {"probe_cpu_us_median", probe_q(0.5)},
                    {"probe_cpu_us_p99", probe_q(0.99)},
                    {"machine_steal", c.steal}});
  }
  std::printf("soak at %.0f/s (%.0f%% of %.0f QPS), %.0f s, windows of %.0f s:\n%s", rate,
              100 * f.soak_fraction, rate / f.soak_fraction, f.soak_seconds, f.soak_window,
              FormatTable({"window", "requests", "errors", "p50 ms", "p99 ms", "max ms",
                           "engine p99", "engine max", "queue p99", "rest p99", "send lag p99",
                           "server RSS MiB", "server CPU", "generator CPU", "others' CPU",
                           "probe slowdown", "server disk MB", "steal"},
                          table)
                  .c_str());
  return {{"rate", rate},
          {"fraction", f.soak_fraction},
          {"seconds", f.soak_seconds},
          {"window_seconds", f.soak_window},
          {"windows", rows},
          {"errors", total_errors},
          {"rss_start_bytes", rss_start},
          {"p99_first_ms", p99_first},
          {"p99_worst_ms", p99_worst}};
}

// Judges the soak (errors, memory growth, p99 drift), prints the verdict and
// adds it to the record.
void JudgeSoak(const BenchFlags& f, const std::vector<uint64_t>& rss, nlohmann::json* soak) {
  const int64_t total_errors = (*soak)["errors"].get<int64_t>();
  const double p99_first = (*soak)["p99_first_ms"].get<double>();
  const double p99_worst = (*soak)["p99_worst_ms"].get<double>();
  const uint64_t rss_start = (*soak)["rss_start_bytes"].get<uint64_t>();
  const double growth =
      rss[0] > 0 ? double(*std::max_element(rss.begin(), rss.end())) / double(rss[0]) - 1 : 0;
  const bool errors_ok = total_errors == 0;
  const bool memory_ok = f.server_pid <= 0 || growth <= 0.05;
  const bool p99_ok = p99_worst <= 2 * p99_first;
  std::printf(
      "soak: errors %lld (%s); RSS at start %.1f MiB, growth after the first window "
      "%+.2f%% (%s, limit 5%%); p99 first window %.2f ms, worst %.2f ms = %.2fx (%s, "
      "limit 2x)\n",
      (long long)total_errors, errors_ok ? "PASS" : "FAIL", rss_start / 1048576.0, 100 * growth,
      f.server_pid <= 0 ? "not measured"
      : memory_ok       ? "PASS"
                        : "FAIL",
      p99_first, p99_worst, p99_first > 0 ? p99_worst / p99_first : 0, p99_ok ? "PASS" : "FAIL");
  std::fflush(stdout);
  (*soak)["rss_growth_after_first_window"] = growth;
  (*soak)["pass"] = errors_ok && memory_ok && p99_ok;
}

// The soak: an open loop at `rate`, judged per window.
nlohmann::json Soak(v1::SearchService::Stub* stub, const std::vector<v1::SearchRequest>& pool,
                    double rate, const BenchFlags& f, RunResult* run_out) {
  const size_t windows = size_t(std::ceil(f.soak_seconds / f.soak_window));
  std::vector<uint64_t> rss(windows, 0);
  std::vector<CpuSample> cpu(windows + 1);
  const uint64_t rss_start = ResidentBytes(f.server_pid);
  cpu[0] = SampleCpu(f.server_pid);
  auto tick = [&](double t) {
    // The memory at each window's end, sampled at the first tick after it.
    const size_t w = size_t(t / f.soak_window);
    if (w >= 1 && w <= windows && rss[w - 1] == 0) {
      rss[w - 1] = ResidentBytes(f.server_pid);
      cpu[w] = SampleCpu(f.server_pid);
    }
  };
  SpeedProbe probe;
  RunResult run = OpenLoop(stub, pool, rate, f.soak_seconds, f.arrival, f.seed + 1,
                           Fmt("soak %.0f/s", rate), tick);
  probe.Stop();
  if (rss.back() == 0) {
    rss.back() = ResidentBytes(f.server_pid);
    cpu.back() = SampleCpu(f.server_pid);
  }
  SoakWindows sw = SplitSoak(run, probe, windows, f.soak_window);
  if (!f.soak_samples.empty()) WriteSoakSamples(f.soak_samples, run, probe);
  nlohmann::json soak = ReportSoak(f, rate, sw, rss, cpu, rss_start);
  JudgeSoak(f, rss, &soak);
  *run_out = std::move(run);
  return soak;
}

absl::Status ToAbsl(const grpc::Status& s, const char* what) {
  return absl::Status(absl::StatusCode(int(s.error_code())),
                      std::string(what) + ": " + s.error_message());
}

// Drops --collection (if it exists) and creates it afresh.
absl::Status CreateFresh(v1::SearchService::Stub* stub, const BenchFlags& f) {
  {
    grpc::ClientContext ctx;
    v1::DropCollectionRequest req;
    req.set_name(f.collection);
    v1::DropCollectionResponse resp;
    stub->DropCollection(&ctx, req, &resp);  // NOT_FOUND is fine
  }
  grpc::ClientContext ctx;
  v1::CreateCollectionRequest req;
  req.set_name(f.collection);
  req.mutable_config()->set_dim(f.dim);
  const TokenDtype dtype = DtypeFromFlags(f);
  req.mutable_config()->set_token_dtype(dtype == TokenDtype::kF32    ? v1::TOKEN_DTYPE_F32
                                        : dtype == TokenDtype::kInt8 ? v1::TOKEN_DTYPE_INT8
                                                                     : v1::TOKEN_DTYPE_BF16);
  req.mutable_config()->set_ann_spec(f.ann_spec);
  req.mutable_config()->set_candidates_from(f.e2e_candidates_from);
  if (f.e2e_token_codec == "residual") {
    v1::TokenCodec* tc = req.mutable_config()->mutable_token_codec();
    tc->set_name("residual");
    tc->set_bits(uint32_t(f.code_bits == 0 ? 2 : f.code_bits));
    tc->set_centroids(uint32_t(f.code_centroids));
    tc->set_train_after_documents(0);  // trained after the load (TrainCodec)
    tc->set_keep_full_precision(f.exact_tier);
  }
  v1::CreateCollectionResponse resp;
  grpc::Status s = stub->CreateCollection(&ctx, req, &resp);
  if (!s.ok()) return ToAbsl(s, "CreateCollection");
  return absl::OkStatus();
}

// --load: a fresh collection of --load synthetic documents through
// UpsertStream; returns the load's part of the record.
absl::StatusOr<nlohmann::json> LoadCollection(v1::SearchService::Stub* stub, const BenchFlags& f) {
  ATTN_RETURN_IF_ERROR(CreateFresh(stub, f));
  const uint32_t dim = f.dim;
  SyntheticOptions so = SyntheticFromFlags(f);
  so.tokens_min = so.tokens_max = uint32_t(f.tokens);
  SyntheticDataset data(so);
  std::printf("e2e: loading %zu docs (%d tokens x %u, %s) via UpsertStream, %d per message\n",
              f.load, f.tokens, dim, f.dtype.c_str(), f.load_batch);
  std::fflush(stdout);
  const auto t0 = Clock::now();
  grpc::ClientContext ctx;
  v1::UpsertResponse resp;
  auto writer = stub->UpsertStream(&ctx, &resp);
  v1::UpsertRequest batch;
  std::vector<float> tokens(size_t(f.tokens) * dim), pooled(dim);
  size_t next_report = f.load / 5;
  for (size_t i = 0; i < f.load; ++i) {
    v1::Document* d = batch.add_documents();
    d->set_id("doc-" + std::to_string(i));
    data.Pooled(i, pooled.data());
    d->mutable_pooled()->Add(pooled.begin(), pooled.end());
    const uint32_t n = data.Tokens(i, &tokens);
    v1::Matrix* m = d->mutable_tokens();
    m->set_rows(n);
    m->set_cols(dim);
    m->mutable_values()->Add(tokens.begin(), tokens.end());
    (*d->mutable_metadata())["cluster"] = std::to_string(data.Cluster(i));
    if (batch.documents_size() == f.load_batch || i + 1 == f.load) {
      batch.set_collection(f.collection);
      if (!writer->Write(batch)) break;
      batch.Clear();
    }
    if (i + 1 >= next_report && next_report > 0) {
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      std::printf("  %zu sent, %.0f docs/s\n", i + 1, double(i + 1) / s);
      std::fflush(stdout);
      next_report += f.load / 5;
    }
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!s.ok()) return ToAbsl(s, "UpsertStream");
  std::printf("loaded %llu docs in %.1f s: %.0f docs/s\n", (unsigned long long)resp.upserted(),
              secs, double(resp.upserted()) / secs);
  nlohmann::json out{{"docs", resp.upserted()},
                     {"seconds", secs},
                     {"docs_per_s", double(resp.upserted()) / secs},
                     {"tokens", f.tokens},
                     {"load_batch", f.load_batch},
                     {"token_codec", f.e2e_token_codec},
                     {"candidates_from", f.e2e_candidates_from}};
  if (f.e2e_token_codec == "residual") {
    grpc::ClientContext tctx;
    tctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(2));
    v1::TrainCodecRequest treq;
    treq.set_collection(f.collection);
    v1::TrainCodecResponse t;
    grpc::Status ts = stub->TrainCodec(&tctx, treq, &t);
    if (!ts.ok()) return ToAbsl(ts, "TrainCodec");
    std::printf(
        "token codec v%llu: %u centroids, %u bits, %u bytes a token, trained on %llu tokens "
        "in %.1f s (mse %.4f); %llu documents encoded in %.1f s\n",
        (unsigned long long)t.version(), t.centroids(), t.bits(), t.bytes_per_token(),
        (unsigned long long)t.sample_tokens(), t.train_seconds(), t.train_mse(),
        (unsigned long long)t.encoded(), t.encode_seconds());
    out["codec"] = {{"version", t.version()},
                    {"centroids", t.centroids()},
                    {"bits", t.bits()},
                    {"bytes_per_token", t.bytes_per_token()},
                    {"sample_tokens", t.sample_tokens()},
                    {"train_mse", t.train_mse()},
                    {"train_seconds", t.train_seconds()},
                    {"encoded", t.encoded()},
                    {"encode_seconds", t.encode_seconds()},
                    {"exact_tier", f.exact_tier}};
  }
  return out;
}

// What the benchmark searches: the collection's dimension and size, and
// the pool of queries.
struct E2eSetup {
  uint32_t dim = 0;
  uint64_t num_docs = 0;
  std::vector<v1::SearchRequest> pool;
  nlohmann::json collection;  // its codec and token arena, from GetCollection
};

absl::StatusOr<E2eSetup> SetupE2e(v1::SearchService::Stub* stub, const BenchFlags& f) {
  E2eSetup e;
  {
    grpc::ClientContext ctx;
    v1::GetCollectionRequest req;
    req.set_name(f.collection);
    v1::GetCollectionResponse resp;
    grpc::Status s = stub->GetCollection(&ctx, req, &resp);
    if (!s.ok()) return ToAbsl(s, "GetCollection");
    e.dim = resp.collection().config().dim();
    e.num_docs = resp.collection().num_documents();
    const v1::CollectionInfo& ci = resp.collection();
    const std::string codec =
        ci.config().token_codec().name().empty() ? "rows" : ci.config().token_codec().name();
    e.collection = {{"token_codec", codec},
                    {"codec_version", ci.codec_version()},
                    {"codec_pending", ci.codec_pending()},
                    {"arena_bytes", ci.memory().arena_bytes()},
                    {"arena_tokens", ci.memory().arena_tokens()},
                    {"arena_bytes_per_token", ci.memory().arena_bytes_per_token()}};
    std::printf("e2e: token arena %llu bytes, %llu tokens, %.1f bytes a token (codec %s v%llu)\n",
                (unsigned long long)ci.memory().arena_bytes(),
                (unsigned long long)ci.memory().arena_tokens(), ci.memory().arena_bytes_per_token(),
                codec.c_str(), (unsigned long long)ci.codec_version());
  }
  if (!f.e2e_text_queries.empty()) {
    std::ifstream in(f.e2e_text_queries);
    if (!in)
      return absl::NotFoundError(
          absl::StrCat("e2e_text_queries: cannot read ", f.e2e_text_queries));
    std::string line;
    for (size_t n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.e2e_text_queries, ":", n, ": no \"text\" string"));
      }
      v1::SearchRequest r;
      r.set_collection(f.collection);
      r.set_text(j["text"].get<std::string>());
      r.set_top_k(uint32_t(f.top_k));
      if (f.e2e_candidates > 0) r.set_candidates(uint32_t(f.e2e_candidates));
      r.set_rerank(v1::RERANK_MODE_ATTENTION);
      if (!f.ann_params.empty()) r.set_ann_params(f.ann_params);
      e.pool.push_back(std::move(r));
    }
    if (e.pool.empty()) return absl::InvalidArgumentError("e2e_text_queries: no query");
    std::printf(
        "e2e: %s, collection '%s' (%llu docs), %zu text queries, top_k %d, candidates %s, "
        "%.0f s per run\n",
        f.server.c_str(), f.collection.c_str(), (unsigned long long)e.num_docs, e.pool.size(),
        f.top_k, f.e2e_candidates > 0 ? std::to_string(f.e2e_candidates).c_str() : "the server's",
        f.duration);
    std::fflush(stdout);
    return e;
  }
  SyntheticOptions so = SyntheticFromFlags(f);
  so.dim = e.dim;
  SyntheticDataset data(so);
  e.pool.resize(256);
  std::vector<float> qt, qp(e.dim);
  for (size_t j = 0; j < e.pool.size(); ++j) {
    v1::SearchRequest& r = e.pool[j];
    r.set_collection(f.collection);
    data.QueryPooled(j, qp.data());
    r.mutable_vectors()->mutable_pooled()->Add(qp.begin(), qp.end());
    data.QueryTokens(j, uint32_t(f.e2e_query_tokens), &qt);
    v1::Matrix* m = r.mutable_vectors()->mutable_tokens();
    m->set_rows(uint32_t(f.e2e_query_tokens));
    m->set_cols(e.dim);
    m->mutable_values()->Add(qt.begin(), qt.end());
    r.set_top_k(uint32_t(f.top_k));
    r.set_candidates(uint32_t(f.e2e_candidates));
    r.set_rerank(v1::RERANK_MODE_ATTENTION);
    if (!f.ann_params.empty()) r.set_ann_params(f.ann_params);
  }
  std::printf(
      "e2e: %s, collection '%s' (%llu docs, dim %u), top_k %d, candidates %d, "
      "m=%d query tokens, %.0f s per run\n",
      f.server.c_str(), f.collection.c_str(), (unsigned long long)e.num_docs, e.dim, f.top_k,
      f.e2e_candidates, f.e2e_query_tokens, f.duration);
  std::fflush(stdout);
  return e;
}

// Closed loop: `c` threads, each with its own channel and stub, searching
// back to back for --duration seconds.
RunResult ClosedLoop(const BenchFlags& f, const std::vector<v1::SearchRequest>& pool, int c) {
  RunResult run;
  run.name = Fmt("closed c=%d", c);
  std::vector<std::vector<Sample>> per(static_cast<size_t>(c));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(f.duration));
  for (int t = 0; t < c; ++t) {
    threads.emplace_back([&, t] {
      auto ch = MakeChannel(f.server, t);
      auto st = v1::SearchService::NewStub(ch);
      size_t j = size_t(t) * 37;
      while (Clock::now() < end) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::SearchResponse resp;
        const auto q0 = Clock::now();
        grpc::Status s = st->Search(&ctx, pool[j++ % pool.size()], &resp);
        Sample smp;
        Record(s, resp, std::chrono::duration<double, std::micro>(Clock::now() - q0).count(), &smp);
        per[size_t(t)].push_back(smp);
      }
    });
  }
  for (auto& th : threads) th.join();
  run.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& v : per) run.samples.insert(run.samples.end(), v.begin(), v.end());
  std::printf("  %s: %zu requests\n", run.name.c_str(), run.samples.size());
  std::fflush(stdout);
  return run;
}

// The best QPS of the closed loops (OK responses per second).
double BestClosedQps(const std::vector<RunResult>& runs) {
  double best = 0;
  for (const RunResult& r : runs) {
    if (r.name.rfind("closed", 0) != 0) continue;
    size_t ok = 0;
    for (const Sample& smp : r.samples) ok += smp.code == 0;
    best = std::max(best, double(ok) / r.elapsed_s);
  }
  return best;
}

// A run's latency CDF (`ms` sorted), thinned to about 300 points.
Series CdfSeries(const std::string& name, const std::vector<double>& ms) {
  Series s;
  s.name = name;
  s.points = false;
  const size_t step = std::max<size_t>(1, ms.size() / 300);
  for (size_t i = 0; i < ms.size(); i += step) {
    s.x.push_back(ms[i]);
    s.y.push_back(double(i + 1) / double(ms.size()));
  }
  if (!ms.empty()) {
    s.x.push_back(ms.back());
    s.y.push_back(1.0);
  }
  return s;
}

// The table of runs, the record (with the soak's and the load's parts, when
// run) and the latency CDF plot.
BenchOutput ReportE2e(const BenchFlags& f, const E2eSetup& e, const std::vector<RunResult>& runs,
                      const nlohmann::json& soak, const nlohmann::json& load_info) {
  std::vector<std::vector<std::string>> table;
  nlohmann::json results_runs = nlohmann::json::array();
  LinePlot plot;
  plot.title = Fmt("e2e Search latency CDF: %llu docs, m=%d, %d candidates, top %d",
                   (unsigned long long)e.num_docs, f.e2e_query_tokens, f.e2e_candidates, f.top_k);
  plot.x_label = "latency (ms)";
  plot.y_label = "fraction of requests <= latency";
  plot.log_x = true;
  for (const RunResult& r : runs) {
    std::vector<std::string> row;
    std::vector<double> ms;
    results_runs.push_back(Analyse(r, &row, &ms));
    table.push_back(row);
    plot.series.push_back(CdfSeries(r.name, ms));
  }
  std::printf("%s", FormatTable({"run", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors",
                                 "stages us enc/ann/fetch/rerank/total"},
                                table)
                        .c_str());
  BenchOutput out;
  out.params = {{"server", f.server},
                {"collection", f.collection},
                {"num_docs", e.num_docs},
                {"dim", e.dim},
                {"top_k", f.top_k},
                {"candidates", f.e2e_candidates},
                {"query_tokens", f.e2e_query_tokens},
                {"ann_params", f.ann_params},
                {"concurrency", f.concurrency},
                {"duration", f.duration},
                {"rate", f.rate},
                {"arrival", f.arrival},
                {"soak_seconds", f.soak_seconds},
                {"soak_fraction", f.soak_fraction},
                {"rerank", "ATTENTION"},
                {"seed", f.seed}};
  out.results = {{"runs", results_runs}};
  if (!soak.is_null()) out.results["soak"] = soak;
  if (!load_info.is_null()) out.results["load"] = load_info;
  out.results["collection"] = e.collection;
  SavePlot(f.out_dir, "e2e_latency_cdf.svg", RenderSvg(plot), &out.results);
  return out;
}

}  // namespace

absl::StatusOr<double> WaitUntilLinked(const std::string& server, const std::string& collection,
                                       double timeout_s) {
  auto stub = v1::SearchService::NewStub(MakeChannel(server, -2));
  const auto start = Clock::now();
  for (;;) {
    grpc::ClientContext ctx;
    v1::GetCollectionRequest req;
    req.set_name(collection);
    v1::GetCollectionResponse resp;
    grpc::Status s = stub->GetCollection(&ctx, req, &resp);
    if (!s.ok()) return ToAbsl(s, "GetCollection");
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (resp.collection().ann_pending() == 0) return waited;
    if (waited > timeout_s) {
      return absl::DeadlineExceededError(
          absl::StrCat(collection, ": ", resp.collection().ann_pending(),
                       " vectors still not linked into the ANN graph after ", timeout_s, " s"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<BenchOutput> RunE2e(const BenchFlags& f) {
  if (f.server.empty()) return absl::InvalidArgumentError("e2e: --server HOST:PORT is required");
  auto channel = MakeChannel(f.server, -1);
  auto stub = v1::SearchService::NewStub(channel);
  nlohmann::json load_info;
  if (f.load > 0) {
    ATTN_ASSIGN_OR_RETURN(load_info, LoadCollection(stub.get(), f));
    // Searches are measured on the finished graph, not while the server
    // still links the last writes in the background.
    ATTN_ASSIGN_OR_RETURN(const double linked, WaitUntilLinked(f.server, f.collection, 600));
    load_info["graph_linked_after_load_s"] = linked;
  }
  ATTN_ASSIGN_OR_RETURN(const E2eSetup e, SetupE2e(stub.get(), f));
  std::vector<RunResult> runs;
  for (int c : f.concurrency) runs.push_back(ClosedLoop(f, e.pool, c));
  if (f.rate > 0) {
    runs.push_back(OpenLoop(stub.get(), e.pool, f.rate, f.duration, f.arrival, f.seed,
                            Fmt("open %.0f/s %s", f.rate, f.arrival.c_str())));
  }
  // Soak at a share of the best closed-loop QPS.
  nlohmann::json soak;
  if (f.soak_seconds > 0) {
    const double best = BestClosedQps(runs);
    if (best <= 0) return absl::FailedPreconditionError("e2e soak: no closed-loop QPS measured");
    RunResult run;
    soak = Soak(stub.get(), e.pool, f.soak_fraction * best, f, &run);
    runs.push_back(std::move(run));
  }
  return ReportE2e(f, e, runs, soak, load_info);
}

}  // namespace attnsearch::bench
