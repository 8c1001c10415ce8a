#include "server/observe.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/log.h"

namespace attnsearch {
namespace {

constexpr const char* kStageNames[] = {"encode", "ann", "fetch", "rerank", "total", "queue"};

// "INVALID_ARGUMENT" and so on (gRPC's codes are absl's numbers).
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(absl::StatusCode(int(code)));
}

}  // namespace

void Histogram::Observe(double seconds) {
  size_t b = 0;
  while (b < kBounds.size() && seconds > kBounds[b]) ++b;
  buckets_[b].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(uint64_t(seconds * 1e9), std::memory_order_relaxed);
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t b = 0; b < kBounds.size(); ++b) {
    cumulative += buckets_[b].load(std::memory_order_relaxed);
    absl::StrAppendFormat(out, "%s_bucket{%s%sle=\"%g\"} %d\n", name, labels, sep, kBounds[b],
                          cumulative);
  }
  cumulative += buckets_[kBounds.size()].load(std::memory_order_relaxed);
  absl::StrAppendFormat(out, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, cumulative);
  absl::StrAppendFormat(out, "%s_sum{%s} %.9f\n", name, labels,
                        double(sum_ns_.load(std::memory_order_relaxed)) / 1e9);
  absl::StrAppendFormat(out, "%s_count{%s} %d\n", name, labels, cumulative);
}

Histogram* ServerMetrics::RpcHistogram(const char* rpc) {
  auto& h = rpc_latency_[rpc];
  if (!h) h = std::make_unique<Histogram>();
  return h.get();
}

void ServerMetrics::CallDone(const CallRecord& call, const grpc::Status& status) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call.start).count();
  {
    absl::MutexLock lock(&mu_);
    RpcHistogram(call.rpc)->Observe(seconds);
    ++calls_[{call.rpc, int(status.error_code())}];
  }
  if (logging_ == CallLogging::kNone || (logging_ == CallLogging::kErrors && status.ok())) {
    return;
  }
  std::vector<LogField> fields = {{"request_id", call.request_id},
                                  {"rpc", call.rpc},
                                  {"collection", call.collection},
                                  {"code", CodeName(status.error_code())},
                                  {"latency_ms", std::round(seconds * 1e6) / 1e3}};
  if (!status.ok()) fields.emplace_back("error", status.error_message().substr(0, 512));
  Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarn, "call", fields);
}

void ServerMetrics::SearchDone(const CallRecord& call, const SearchTiming& t) {
  const int64_t us[] = {t.encode_us, t.ann_us, t.fetch_us, t.rerank_us, t.total_us, t.queue_us};
  for (size_t i = 0; i < stages_.size(); ++i) stages_[i].Observe(double(us[i]) / 1e6);
}

std::string ServerMetrics::Render() const {
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    out +=
        "# HELP attnsearch_rpc_duration_seconds Time from a call's arrival to its status.\n"
        "# TYPE attnsearch_rpc_duration_seconds histogram\n";
    for (const auto& [rpc, h] : rpc_latency_) {
      h->Render("attnsearch_rpc_duration_seconds", absl::StrCat("rpc=\"", rpc, "\""), &out);
    }
    out +=
        "# HELP attnsearch_requests_total Calls finished, by rpc and status code.\n"
        "# TYPE attnsearch_requests_total counter\n";
    for (const auto& [key, n] : calls_) {
      absl::StrAppendFormat(&out, "attnsearch_requests_total{rpc=\"%s\",code=\"%s\"} %d\n",
                            key.first, CodeName(grpc::StatusCode(key.second)), n);
    }
    out +=
        "# HELP attnsearch_errors_total Calls finished with an error, by rpc and code.\n"
        "# TYPE attnsearch_errors_total counter\n";
    for (const auto& [key, n] : calls_) {
      if (key.second == 0) continue;
      absl::StrAppendFormat(&out, "attnsearch_errors_total{rpc=\"%s\",code=\"%s\"} %d\n", key.first,
                            CodeName(grpc::StatusCode(key.second)), n);
    }
  }
  out +=
      "# HELP attnsearch_search_stage_duration_seconds Time of each stage of successful "
      "searches.\n# TYPE attnsearch_search_stage_duration_seconds histogram\n";
  for (size_t i = 0; i < stages_.size(); ++i) {
    stages_[i].Render("attnsearch_search_stage_duration_seconds",
                      absl::StrCat("stage=\"", kStageNames[i], "\""), &out);
  }
  if (!collections_) return out;
  const std::vector<CollectionGauges> gauges = collections_();
  struct Gauge {
    const char* name;
    const char* help;
    uint64_t (*get)(const CollectionStats&);
  };
  const Gauge kGauges[] = {
      {"attnsearch_collection_documents", "Live documents.",
       [](const CollectionStats& s) { return s.num_documents; }},
      {"attnsearch_collection_tombstones",
       "Deleted or superseded vectors the ANN index still holds.",
       [](const CollectionStats& s) { return s.num_tombstones; }},
      {"attnsearch_collection_ann_vectors", "Vectors in the ANN index.",
       [](const CollectionStats& s) { return s.ann_vectors; }},
      {"attnsearch_collection_ann_pending",
       "Vectors written but not yet linked into the ANN graph (searched exactly meanwhile).",
       [](const CollectionStats& s) { return s.ann_pending; }},
      {"attnsearch_collection_disk_bytes",
       "Every file of the collection: table files, write-ahead log, ANN snapshot, the rest.",
       [](const CollectionStats& s) { return s.disk_bytes; }},
      {"attnsearch_collection_arena_bytes",
       "Memory the token arena has allocated (every searchable document's token matrix).",
       [](const CollectionStats& s) { return s.arena_bytes; }},
      {"attnsearch_collection_arena_tokens", "Token rows the token arena holds.",
       [](const CollectionStats& s) { return s.arena_tokens; }},
      {"attnsearch_collection_writes_stopped",
       "1 while the store refuses writes after an I/O error (until a write recovers it).",
       [](const CollectionStats& s) { return uint64_t(s.writes_stopped); }},
  };
  for (const Gauge& g : kGauges) {
    absl::StrAppendFormat(&out, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name);
    for (const auto& c : gauges) {
      absl::StrAppendFormat(&out, "%s{collection=\"%s\"} %d\n", g.name, c.name, g.get(c.stats));
    }
  }
  out +=
      "# HELP attnsearch_collection_rocksdb_memory_bytes RocksDB memory by kind.\n"
      "# TYPE attnsearch_collection_rocksdb_memory_bytes gauge\n";
  for (const auto& c : gauges) {
    const std::pair<const char*, uint64_t> kinds[] = {
        {"block_cache", c.stats.block_cache_bytes},
        {"memtables", c.stats.memtable_bytes},
        {"table_readers", c.stats.table_reader_bytes}};
    for (const auto& [kind, v] : kinds) {
      absl::StrAppendFormat(
          &out, "attnsearch_collection_rocksdb_memory_bytes{collection=\"%s\",kind=\"%s\"} %d\n",
          c.name, kind, v);
    }
  }
  return out;
}

}  // namespace attnsearch
