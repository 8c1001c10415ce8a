// Observability of attnsearch-server: structured logs and Prometheus
// metrics.
//
// Logs (core/log.h, the process's one logger): one JSON object per line on
// stderr,
//   {"time":"2026-11-25T23:58:13.123456Z","level":"info","msg":"call",
//    "request_id":"...","rpc":"Search","collection":"docs","code":"OK",
//    "latency_ms":0.412}
// (failed calls add "error": the status message). API keys never reach a
// log line: calls are logged by their record (rpc, collection, request id)
// and status, never by their metadata.
//
// Metrics (ServerMetrics::Render, Prometheus text format 0.0.4):
//   attnsearch_rpc_duration_seconds{rpc}                 histogram
//   attnsearch_requests_total{rpc,code}                  counter
//   attnsearch_errors_total{rpc,code}                    counter (code != OK)
//   attnsearch_search_stage_duration_seconds{stage}      histogram
//       (stage: encode, ann, fetch, rerank, total, and queue: the wait for
//       a worker before the search; successful searches)
//   attnsearch_collection_documents{collection}          gauge
//   attnsearch_collection_tombstones{collection}         gauge
//   attnsearch_collection_ann_vectors{collection}        gauge
//   attnsearch_collection_ann_pending{collection}        gauge
//   attnsearch_collection_disk_bytes{collection}         gauge
//   attnsearch_collection_arena_bytes{collection}        gauge
//   attnsearch_collection_arena_tokens{collection}       gauge
//   attnsearch_collection_writes_stopped{collection}     gauge (1 after a storage write error)
//   attnsearch_collection_rocksdb_memory_bytes{collection,kind}  gauge
//       (kind: block_cache, memtables, table_readers; the server's block
//       cache is one for all collections, so each reports its whole usage)
#ifndef ATTNSEARCH_SERVER_OBSERVE_H_
#define ATTNSEARCH_SERVER_OBSERVE_H_

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/collection.h"
#include "server/service.h"

namespace attnsearch {

// Which calls are logged.
enum class CallLogging { kNone, kErrors, kAll };

// A fixed-bucket histogram (seconds). Thread-safe.
class Histogram {
 public:
  static constexpr std::array<double, 16> kBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                     1.0,    2.5,     5.0,    10.0};
  void Observe(double seconds);
  // Appends the _bucket, _sum and _count lines of `name` with `labels`
  // ("rpc=\"Search\"").
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

// Per collection, read when metrics are scraped.
struct CollectionGauges {
  std::string name;
  CollectionStats stats;
};

// Counts and times calls; logs them. Thread-safe.
class ServerMetrics : public CallObserver {
 public:
  // `collections` is called on each Render for the per-collection gauges
  // (may be null).
  ServerMetrics(CallLogging logging, std::function<std::vector<CollectionGauges>()> collections)
      : logging_(logging), collections_(std::move(collections)) {}

  void CallDone(const CallRecord& call, const grpc::Status& status) override;
  void SearchDone(const CallRecord& call, const SearchTiming& timing) override;

  // The Prometheus text exposition.
  std::string Render() const;

 private:
  Histogram* RpcHistogram(const char* rpc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CallLogging logging_;
  const std::function<std::vector<CollectionGauges>()> collections_;
  mutable absl::Mutex mu_;
  // rpc -> latency; (rpc, code) -> calls (the histograms themselves are
  // atomic; only the maps' shape is guarded).
  std::map<std::string, std::unique_ptr<Histogram>> rpc_latency_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, int>, uint64_t> calls_ ABSL_GUARDED_BY(mu_);
  // encode, ann, fetch, rerank, total.
  std::array<Histogram, 6> stages_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_OBSERVE_H_
