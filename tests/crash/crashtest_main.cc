// attnsearch-crashtest: kills attnsearch-server with SIGKILL at random
// moments while it takes writes and searches, restarts it on the same data
// directory and checks that nothing acknowledged was lost (see README.md).
//
//   attnsearch-crashtest [--cycles=5] [--seed=1] [--data_dir=DIR] [--keep] ...
//
// One writer thread applies seeded random upserts of new ids, overwrites of
// live ids (same id, new content), re-creations of deleted ids and deletes,
// single or in batches, through gRPC; one reader thread searches meanwhile.
// The expected state (id -> the version of its content, or deleted) changes
// only when the server answered OK. A request in flight at the kill is
// uncertain: after the restart each of its ids must be in its old or its new
// state, and all of them in the same one (a batch is atomic).
//
// Exit status: 0 when every check held, 1 on a violation, 2 on a usage or
// setup error.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "attnsearch/v1/search.grpc.pb.h"
#include "crash/server_child.h"
#include "grpcpp/grpcpp.h"

#ifndef ATTN_SERVER_BINARY
#error "ATTN_SERVER_BINARY must name the attnsearch-server binary"
#endif

namespace attnsearch::crash {
namespace {

namespace v1 = ::attnsearch::v1;
using Clock = std::chrono::steady_clock;

constexpr char kCollection[] = "crash";

struct Options {
  int cycles = 5;
  uint64_t seed = 1;
  std::string data_dir;    // empty: a fresh temporary directory
  std::string state_file;  // empty: beside the data directory
  std::string server = ATTN_SERVER_BINARY;
  uint32_t dim = 16;
  int min_run_ms = 200;  // writes between a restart and the next kill
  int max_run_ms = 1500;
  double early_kill = 0.15;          // share of cycles killed within 0..100 ms
  size_t target_live = 600;          // above it, new ids give way to overwrites and deletes
  int snapshot_every = 250;          // passed to the server: snapshots happen between kills
  int rebuild_min_tombstones = 100;  // ... and so do background index rebuilds
  int ef_search = 512;
  bool keep = false;
  // Self-check of the checker: after the first restart, change the
  // collection behind the expected state's back (delete a live document,
  // overwrite another with content never acknowledged, add an id never
  // issued); the run must then fail.
  bool inject_faults = false;
  // The collection's token codec: rows or residual.
  std::string token_codec = "rows";
  // residual: keep only the codes (keep_full_precision off), so tokens
  // come back decoded from them.
  bool codes_only = false;
};

// --- Document contents -----------------------------------------------------

// Each write of a document carries a fresh version; the content (text,
// metadata, pooled vector, token rows) is a function of (seed, id, version),
// so the checker regenerates what any acknowledged write stored.
uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

uint64_t HashString(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = Mix(h, c);
  return Mix(h, s.size());
}

void RandomUnit(std::mt19937_64& rng, uint32_t dim, float* out) {
  std::normal_distribution<float> normal(0.f, 1.f);
  double ss = 0;
  do {
    ss = 0;
    for (uint32_t k = 0; k < dim; ++k) {
      out[k] = normal(rng);
      ss += double(out[k]) * out[k];
    }
  } while (!(ss > 1e-6));
  const float inv = float(1.0 / std::sqrt(ss));
  for (uint32_t k = 0; k < dim; ++k) out[k] *= inv;
}

v1::Document MakeDocument(uint64_t seed, const std::string& id, uint64_t version, uint32_t dim) {
  std::mt19937_64 rng(Mix(HashString(seed, id), version));
  v1::Document d;
  d.set_id(id);
  d.set_text(id + " version " + std::to_string(version));
  (*d.mutable_metadata())["v"] = std::to_string(version);
  d.mutable_pooled()->Resize(int(dim), 0.f);
  RandomUnit(rng, dim, d.mutable_pooled()->mutable_data());
  const uint32_t rows = 1 + uint32_t(rng() % 4);
  d.mutable_tokens()->set_rows(rows);
  d.mutable_tokens()->set_cols(dim);
  d.mutable_tokens()->mutable_values()->Resize(int(rows * dim), 0.f);
  for (uint32_t r = 0; r < rows; ++r) {
    RandomUnit(rng, dim, d.mutable_tokens()->mutable_values()->mutable_data() + r * dim);
  }
  return d;
}

// FNV-style hash of a document's content as sent, for the state file.
uint64_t ContentHash(const v1::Document& d) {
  uint64_t h = HashString(0xcbf29ce484222325ull, d.text());
  for (const auto& [k, v] :
       std::map<std::string, std::string>(d.metadata().begin(), d.metadata().end())) {
    h = HashString(HashString(h, k), v);
  }
  for (float f : d.pooled()) h = Mix(h, uint64_t(std::bit_cast<uint32_t>(f)));
  for (float f : d.tokens().values()) h = Mix(h, uint64_t(std::bit_cast<uint32_t>(f)));
  return h;
}

// Largest absolute difference between a stored document's vectors and the
// content of `want`; infinity when shapes differ. The server normalises
// vectors on write, so unit vectors come back within float rounding.
// Decoded from 2-bit codes (a codec trained on a few hundred random rows
// at dim 16), a document's token matrix keeps at least this cosine with the
// matrix written: most rows keep 0.9 or more, a rare one whose coordinate
// lies beyond the codec's buckets about 0.7; another version's random rows
// have about 0. The pooled vector, stored exactly, tells the versions apart.
constexpr double kMinCodedCosine = 0.5;

// The cosine of two documents' token matrices (of the same shape), taken
// as vectors.
double MatrixCosine(const v1::Document& got, const v1::Document& want) {
  double dot = 0, gg = 0, ww = 0;
  for (int i = 0; i < got.tokens().values_size(); ++i) {
    const double g = got.tokens().values(i), w = want.tokens().values(i);
    dot += g * w;
    gg += g * g;
    ww += w * w;
  }
  return dot / std::sqrt(gg * ww);
}

// The largest difference of the stored vectors from the written ones; with
// `coded` tokens (decoded from codes) the pooled vector's, and INFINITY
// when the token matrix lost its direction (cosine below kMinCodedCosine).
double VectorDeviation(const v1::Document& got, const v1::Document& want, bool coded) {
  if (got.pooled_size() != want.pooled_size() || got.tokens().rows() != want.tokens().rows() ||
      got.tokens().values_size() != want.tokens().values_size()) {
    return INFINITY;
  }
  double dev = 0;
  for (int i = 0; i < got.pooled_size(); ++i) {
    dev = std::max(dev, std::fabs(double(got.pooled(i)) - want.pooled(i)));
  }
  if (coded) return MatrixCosine(got, want) < kMinCodedCosine ? INFINITY : dev;
  for (int i = 0; i < got.tokens().values_size(); ++i) {
    dev = std::max(dev, std::fabs(double(got.tokens().values(i)) - want.tokens().values(i)));
  }
  return dev;
}
constexpr double kMaxDeviation = 1e-5;

// --- Expected state ----------------------------------------------------------

// An id's state: live with the content of `version`, or not live (deleted,
// or never stored) with `version` the content it last had (0: none).
struct State {
  bool live = false;
  uint64_t version = 0;
  bool operator==(const State& o) const {
    return live == o.live && (!live || version == o.version);
  }
};

std::string Describe(const State& s) {
  if (s.live) return "v" + std::to_string(s.version);
  return s.version == 0 ? "absent" : "deleted";
}

// One write: an Upsert (documents with new versions) or a Delete.
struct Op {
  enum Kind { kUpsert, kDelete } kind = kUpsert;
  struct Item {
    std::string id;
    State before, after;
  };
  std::vector<Item> items;
  int cycle = 0;
};

struct Figures {
  uint64_t acked_ops = 0, acked_upsert_docs = 0, acked_new = 0, acked_overwrites = 0,
           acked_recreates = 0, acked_deletes = 0, batches = 0;
  uint64_t uncertain_ops = 0, uncertain_ids = 0, uncertain_applied = 0, uncertain_not_applied = 0;
  uint64_t searches = 0;
  // Violations.
  uint64_t lost = 0, resurrected = 0, extra = 0, corrupt = 0, torn = 0, count_mismatch = 0,
           index_misses = 0, dead_in_index = 0, unexpected_errors = 0, bad_hits = 0,
           start_failures = 0;
  double max_deviation = 0;
  uint64_t Violations() const {
    return lost + resurrected + extra + corrupt + torn + count_mismatch + index_misses +
           dead_in_index + unexpected_errors + bad_hits + start_failures;
  }
};

class Expected {
 public:
  // Registers a new id ("d000123") and returns it.
  std::string NewId() {
    std::lock_guard<std::mutex> l(mu_);
    std::string id = "d" +
                     std::string(6 - std::min<size_t>(6, std::to_string(ids_.size()).size()), '0') +
                     std::to_string(ids_.size());
    ids_.push_back(id);
    states_[id] = State{};
    issued_.store(ids_.size());
    return id;
  }
  uint64_t NextVersion() { return ++version_; }

  State Get(const std::string& id) const {
    std::lock_guard<std::mutex> l(mu_);
    return states_.at(id);
  }
  void Set(const std::string& id, State s) {
    std::lock_guard<std::mutex> l(mu_);
    const bool was = states_[id].live;
    states_[id] = s;
    live_ += int64_t(s.live) - int64_t(was);
  }
  // A random issued id whose liveness is `live`, or "" after a few misses.
  std::string Pick(std::mt19937_64& rng, bool live, const std::vector<std::string>& avoid) const {
    std::lock_guard<std::mutex> l(mu_);
    if (ids_.empty()) return "";
    for (int attempt = 0; attempt < 32; ++attempt) {
      const std::string& id = ids_[rng() % ids_.size()];
      if (states_.at(id).live != live) continue;
      if (!live && states_.at(id).version == 0) continue;  // never stored: not a re-creation
      if (std::find(avoid.begin(), avoid.end(), id) != avoid.end()) continue;
      return id;
    }
    return "";
  }
  size_t live() const {
    std::lock_guard<std::mutex> l(mu_);
    return size_t(live_);
  }
  std::vector<std::string> ids() const {
    std::lock_guard<std::mutex> l(mu_);
    return ids_;
  }
  // Whether `id` was ever issued (hits of searches must be).
  bool Issued(const std::string& id) const {
    if (id.size() != 7 || id[0] != 'd') return false;
    const uint64_t n = std::strtoull(id.c_str() + 1, nullptr, 10);
    return n < issued_.load();
  }

  // Writes "id TAB state TAB version" lines plus the uncertain op, to
  // `path` (through a temporary file and a rename).
  void Dump(const std::string& path, const std::optional<Op>& uncertain) const {
    std::lock_guard<std::mutex> l(mu_);
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp);
      out << "# id\tstate\tversion (live: its content; deleted: its last content)\n";
      for (const auto& id : ids_) {
        const State& s = states_.at(id);
        out << id << '\t'
            << (s.live      ? "live"
                : s.version ? "deleted"
                            : "absent")
            << '\t' << s.version << '\n';
      }
      if (uncertain) {
        for (const auto& it : uncertain->items) {
          out << "uncertain\t" << it.id << '\t' << Describe(it.before) << '\t' << Describe(it.after)
              << '\n';
        }
      }
    }
    std::rename(tmp.c_str(), path.c_str());
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> ids_;
  std::map<std::string, State> states_;
  int64_t live_ = 0;
  std::atomic<uint64_t> version_{0};
  std::atomic<uint64_t> issued_{0};
};

// --- gRPC --------------------------------------------------------------------

std::unique_ptr<v1::SearchService::Stub> NewStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a fresh connection per server
  return v1::SearchService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

void SetDeadline(grpc::ClientContext* ctx, int seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

std::string StatusText(const grpc::Status& s) {
  return std::to_string(int(s.error_code())) + " " + s.error_message();
}

// --- The run -------------------------------------------------------------------

class CrashTest {
 public:
  explicit CrashTest(Options o) : o_(std::move(o)) {}

  int Run();

 private:
  bool StartServer(int cycle);
  void Writer(int cycle, std::mt19937_64 rng);
  void Reader(std::mt19937_64 rng);
  bool MakeOp(std::mt19937_64& rng, Op* op);
  bool Apply(const Op& op, grpc::Status* status);
  void Ack(const Op& op);
  void Verify(int cycle);
  void InjectFaults();
  void Violation(uint64_t* counter, const std::string& what);

  const Options o_;
  std::string data_dir_, state_file_, journal_file_, log_file_, port_file_;
  ServerChild server_;
  std::string address_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
  Expected expected_;
  Figures f_;
  // The token codec version last reported (it never goes back).
  uint64_t codec_version_ = 0;
  std::mutex figures_mu_;  // f_ while the writer and reader run
  std::FILE* journal_ = nullptr;

  std::atomic<bool> killing_{false};
  std::mutex inflight_mu_;
  std::optional<Op> inflight_;      // the writer's request awaiting its answer
  std::optional<Op> uncertain_;     // the request in flight at the last kill
  std::vector<double> restart_ms_;  // restarts after a kill
  double last_start_ms_ = 0;
  int violation_lines_ = 0;
};

void CrashTest::Violation(uint64_t* counter, const std::string& what) {
  std::lock_guard<std::mutex> l(figures_mu_);
  ++*counter;
  if (++violation_lines_ <= 200) std::printf("  VIOLATION: %s\n", what.c_str());
  std::fflush(stdout);
}

bool CrashTest::StartServer(int cycle) {
  std::vector<std::string> extra = {"--snapshot_every",
                                    std::to_string(o_.snapshot_every),
                                    "--rebuild_min_tombstones",
                                    std::to_string(o_.rebuild_min_tombstones),
                                    "--workers",
                                    "2"};
  std::string error;
  const auto t0 = Clock::now();
  address_ = server_.Start(o_.server, data_dir_, port_file_, log_file_, extra,
                           std::chrono::seconds(120), &error);
  if (address_.empty()) {
    Violation(&f_.start_failures,
              "cycle " + std::to_string(cycle) + ": the server did not restart: " + error);
    return false;
  }
  stub_ = NewStub(address_);
  // Serving: the server may listen before its collections are open (calls
  // answer UNAVAILABLE meanwhile), so recovery ends when the collection
  // answers.
  const auto give_up = Clock::now() + std::chrono::seconds(120);
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    ctx.set_wait_for_ready(true);
    grpc::Status s;
    if (cycle == 0) {
      v1::ListCollectionsResponse resp;
      s = stub_->ListCollections(&ctx, v1::ListCollectionsRequest(), &resp);
    } else {
      v1::GetCollectionRequest req;
      req.set_name(kCollection);
      v1::GetCollectionResponse resp;
      s = stub_->GetCollection(&ctx, req, &resp);
    }
    if (s.ok()) break;
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    Violation(&f_.start_failures,
              "cycle " + std::to_string(cycle) +
                  ": the collection does not answer after the restart: " + StatusText(s));
    return false;
  }
  last_start_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (cycle > 0) restart_ms_.push_back(last_start_ms_);
  return true;
}

bool CrashTest::MakeOp(std::mt19937_64& rng, Op* op) {
  op->items.clear();
  std::uniform_real_distribution<double> u(0, 1);
  const double r = u(rng);
  const bool crowded = expected_.live() >= o_.target_live;
  // Batch size: one document half the time, else 2..8.
  const size_t n = u(rng) < 0.5 ? 1 : 2 + rng() % 7;
  std::vector<std::string> ids;
  if (r < 0.2 || (r < 0.3 && expected_.live() > 20)) {
    op->kind = Op::kDelete;
    for (size_t i = 0; i < std::min<size_t>(n, 4); ++i) {
      const std::string id = expected_.Pick(rng, true, ids);
      if (!id.empty()) ids.push_back(id);
    }
  } else {
    op->kind = Op::kUpsert;
    for (size_t i = 0; i < n; ++i) {
      const double kind = u(rng);
      std::string id;
      if (kind < 0.45 && !crowded) {
        id = expected_.NewId();
      } else if (kind < 0.85) {
        id = expected_.Pick(rng, true, ids);  // overwrite
      } else {
        id = expected_.Pick(rng, false, ids);  // re-create a deleted id
      }
      if (id.empty() && !crowded) id = expected_.NewId();
      if (!id.empty()) ids.push_back(id);
    }
  }
  for (const auto& id : ids) {
    Op::Item it;
    it.id = id;
    it.before = expected_.Get(id);
    if (op->kind == Op::kDelete) {
      it.after = State{false, it.before.version};
    } else {
      it.after = State{true, expected_.NextVersion()};
    }
    op->items.push_back(std::move(it));
  }
  return !op->items.empty();
}

bool CrashTest::Apply(const Op& op, grpc::Status* status) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 30);
  if (op.kind == Op::kUpsert) {
    v1::UpsertRequest req;
    req.set_collection(kCollection);
    for (const auto& it : op.items) {
      *req.add_documents() = MakeDocument(o_.seed, it.id, it.after.version, o_.dim);
    }
    v1::UpsertResponse resp;
    *status = stub_->Upsert(&ctx, req, &resp);
    if (status->ok() && resp.upserted() != op.items.size()) {
      Violation(&f_.unexpected_errors,
                "Upsert of " + std::to_string(op.items.size()) +
                    " documents answered upserted=" + std::to_string(resp.upserted()));
    }
  } else {
    v1::DeleteRequest req;
    req.set_collection(kCollection);
    for (const auto& it : op.items) req.add_ids(it.id);
    v1::DeleteResponse resp;
    *status = stub_->Delete(&ctx, req, &resp);
    if (status->ok()) {
      for (const auto& id : resp.not_found_ids()) {
        Violation(&f_.lost, "Delete of live id " + id + " answered not found");
      }
    }
  }
  return status->ok();
}

void CrashTest::Ack(const Op& op) {
  for (const auto& it : op.items) {
    expected_.Set(it.id, it.after);
    std::fprintf(journal_, "%d\t%s\t%s\t%s\t%llu\t%016llx\n", op.cycle,
                 op.kind == Op::kUpsert ? "upsert" : "delete", it.id.c_str(),
                 Describe(it.after).c_str(), (unsigned long long)it.after.version,
                 op.kind == Op::kUpsert ? (unsigned long long)ContentHash(MakeDocument(
                                              o_.seed, it.id, it.after.version, o_.dim))
                                        : 0ull);
  }
  std::lock_guard<std::mutex> l(figures_mu_);
  ++f_.acked_ops;
  if (op.items.size() > 1) ++f_.batches;
  for (const auto& it : op.items) {
    if (op.kind == Op::kDelete) {
      ++f_.acked_deletes;
    } else {
      ++f_.acked_upsert_docs;
      if (it.before.live) {
        ++f_.acked_overwrites;
      } else if (it.before.version != 0) {
        ++f_.acked_recreates;
      } else {
        ++f_.acked_new;
      }
    }
  }
}

void CrashTest::Writer(int cycle, std::mt19937_64 rng) {
  while (!killing_.load()) {
    Op op;
    op.cycle = cycle;
    if (!MakeOp(rng, &op)) continue;
    {
      std::lock_guard<std::mutex> l(inflight_mu_);
      if (killing_.load()) return;
      inflight_ = op;
    }
    grpc::Status status;
    const bool ok = Apply(op, &status);
    std::lock_guard<std::mutex> l(inflight_mu_);
    if (ok) {
      Ack(op);
      inflight_.reset();
      continue;
    }
    // Failed: unknown whether it was applied. Expected when the kill caused
    // it; a violation otherwise. Either way it stays in flight (uncertain).
    if (!killing_.load()) {
      Violation(&f_.unexpected_errors,
                "cycle " + std::to_string(cycle) + ": write failed: " + StatusText(status));
    }
    return;
  }
}

void CrashTest::Reader(std::mt19937_64 rng) {
  std::vector<float> q(o_.dim);
  while (!killing_.load()) {
    v1::SearchRequest req;
    req.set_collection(kCollection);
    RandomUnit(rng, o_.dim, q.data());
    for (float v : q) req.mutable_vectors()->add_pooled(v);
    req.set_top_k(10);
    req.set_rerank(rng() % 2 ? v1::RERANK_MODE_ATTENTION : v1::RERANK_MODE_NONE);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::SearchResponse resp;
    const grpc::Status s = stub_->Search(&ctx, req, &resp);
    if (!s.ok()) {
      if (!killing_.load()) {
        Violation(&f_.unexpected_errors, "search failed: " + StatusText(s));
      }
      return;
    }
    for (const auto& h : resp.hits()) {
      if (!expected_.Issued(h.id())) Violation(&f_.bad_hits, "search hit of unknown id " + h.id());
    }
    std::lock_guard<std::mutex> l(figures_mu_);
    ++f_.searches;
  }
}

void CrashTest::Verify(int cycle) {
  const std::string where = "cycle " + std::to_string(cycle) + ": ";
  // What each uncertain id may be.
  std::map<std::string, const Op::Item*> uncertain;
  if (uncertain_) {
    for (const auto& it : uncertain_->items) uncertain[it.id] = &it;
  }
  std::map<std::string, State> observed;
  std::map<std::string, std::vector<float>> pooled;  // of live documents, as stored
  uint64_t token_rows = 0;                           // theirs, all together
  const std::vector<std::string> ids = expected_.ids();
  for (size_t begin = 0; begin < ids.size(); begin += 256) {
    v1::GetRequest req;
    req.set_collection(kCollection);
    req.set_include_vectors(true);
    for (size_t i = begin; i < std::min(ids.size(), begin + 256); ++i) req.add_ids(ids[i]);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 60);
    v1::GetResponse resp;
    const grpc::Status s = stub_->Get(&ctx, req, &resp);
    if (!s.ok()) {
      Violation(&f_.unexpected_errors, where + "Get failed: " + StatusText(s));
      return;
    }
    for (const auto& d : resp.documents()) {
      State st{true, 0};
      const auto v = d.metadata().find("v");
      if (v != d.metadata().end()) st.version = std::strtoull(v->second.c_str(), nullptr, 10);
      const v1::Document want = MakeDocument(o_.seed, d.id(), st.version, o_.dim);
      const double dev = st.version == 0 ? INFINITY : VectorDeviation(d, want, o_.codes_only);
      if (d.text() != want.text() || d.metadata_size() != want.metadata_size() ||
          !(dev <= kMaxDeviation)) {
        std::string detail = "vector deviation " + std::to_string(dev);
        if (o_.codes_only && st.version != 0 &&
            d.tokens().values_size() == want.tokens().values_size()) {
          detail += ", decoded tokens' cosine " + std::to_string(MatrixCosine(d, want));
        }
        Violation(&f_.corrupt, where + d.id() + ": stored content matches no version written (" +
                                   "text '" + d.text() + "', " + detail + ")");
      }
      if (dev < INFINITY) f_.max_deviation = std::max(f_.max_deviation, dev);
      observed[d.id()] = st;
      token_rows += d.tokens().rows();
      pooled[d.id()].assign(d.pooled().begin(), d.pooled().end());
    }
  }

  // Each id against its expected state (or the uncertain op's two).
  uint64_t live = 0;
  int applied = 0, not_applied = 0;
  for (const auto& id : ids) {
    State got;  // not live
    if (auto o = observed.find(id); o != observed.end()) got = o->second;
    const State want = expected_.Get(id);
    if (auto u = uncertain.find(id); u != uncertain.end()) {
      const Op::Item& it = *u->second;
      const bool as_new = got == it.after, as_old = got == it.before;
      if (!as_new && !as_old) {
        Violation(&f_.lost, where + id + " (uncertain: " + Describe(it.before) + " or " +
                                Describe(it.after) + ") is " + Describe(got));
        expected_.Set(id, got.live ? got : State{false, it.before.version});  // report once
      } else if (!(it.before == it.after)) {
        (as_new ? applied : not_applied)++;
      }
      if (as_new || as_old) expected_.Set(id, got.live ? got : State{false, want.version});
      if (as_new && !got.live) expected_.Set(id, it.after);
    } else if (want.live && !(got == want)) {
      Violation(&f_.lost,
                where + "acknowledged " + id + " " + Describe(want) + " is " + Describe(got));
      expected_.Set(id, got.live ? got : State{false, want.version});  // report each loss once
    } else if (!want.live && got.live) {
      if (want.version != 0) {
        Violation(&f_.resurrected, where + "deleted " + id + " is back as " + Describe(got));
      } else {
        Violation(&f_.extra, where + id + " was never acknowledged but is " + Describe(got));
      }
      expected_.Set(id, got);
    }
    if (got.live) ++live;
  }
  if (uncertain_) {
    ++f_.uncertain_ops;
    f_.uncertain_ids += uncertain_->items.size();
    if (applied > 0 && not_applied > 0) {
      Violation(&f_.torn,
                where + "the batch in flight at the kill is torn: " + std::to_string(applied) +
                    " of its ids applied, " + std::to_string(not_applied) + " not");
    }
    if (applied > 0) ++f_.uncertain_applied;
    if (not_applied > 0 || applied == 0) ++f_.uncertain_not_applied;
    uncertain_.reset();
  }

  // The collection's count.
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::GetCollectionRequest req;
    req.set_name(kCollection);
    v1::GetCollectionResponse resp;
    const grpc::Status s = stub_->GetCollection(&ctx, req, &resp);
    if (!s.ok()) {
      Violation(&f_.unexpected_errors, where + "GetCollection failed: " + StatusText(s));
    } else if (resp.collection().num_documents() != live) {
      Violation(&f_.count_mismatch, where + "num_documents " +
                                        std::to_string(resp.collection().num_documents()) +
                                        ", live documents " + std::to_string(live));
    } else if (resp.collection().memory().arena_tokens() != token_rows) {
      // The token arena, rebuilt from the store at the restart, holds the
      // live documents' tokens: no more, no fewer.
      Violation(&f_.count_mismatch, where + "the token arena holds " +
                                        std::to_string(resp.collection().memory().arena_tokens()) +
                                        " token rows, the live documents have " +
                                        std::to_string(token_rows));
    } else if (resp.collection().codec_version() < codec_version_) {
      Violation(&f_.lost, where + "token codec version " +
                              std::to_string(resp.collection().codec_version()) +
                              " after version " + std::to_string(codec_version_) + " was reported");
    } else {
      codec_version_ = resp.collection().codec_version();
    }
  }

  // The ANN index against the store: each live document is its own nearest
  // neighbour; a deleted document's last vector does not find it.
  // `only_version` > 0: filtered to the document carrying that version (its
  // metadata "v"), which the index answers by scoring exactly the labels it
  // holds that pass the filter: found means the vector is in the index.
  auto nearest = [&](const std::vector<float>& v, std::string* hit, int ef,
                     uint64_t only_version = 0) -> bool {
    v1::SearchRequest req;
    req.set_collection(kCollection);
    if (only_version > 0) {
      auto* must = req.mutable_filter()->add_must();
      must->set_key("v");
      must->add_values(std::to_string(only_version));
    }
    for (float x : v) req.mutable_vectors()->add_pooled(x);
    req.set_top_k(1);
    req.set_candidates(1);
    req.set_rerank(v1::RERANK_MODE_NONE);
    req.set_ann_params("efSearch=" + std::to_string(ef));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::SearchResponse resp;
    const grpc::Status s = stub_->Search(&ctx, req, &resp);
    if (!s.ok()) {
      Violation(&f_.unexpected_errors, where + "index check search failed: " + StatusText(s));
      return false;
    }
    *hit = resp.hits_size() > 0 ? resp.hits(0).id() : "";
    return true;
  };
  // The index's side of the story, for reports of misses.
  auto index_state = [&](bool* rebuilding) -> std::string {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::GetCollectionRequest req;
    req.set_name(kCollection);
    v1::GetCollectionResponse resp;
    if (!stub_->GetCollection(&ctx, req, &resp).ok()) return "GetCollection failed";
    const auto& c = resp.collection();
    if (rebuilding) *rebuilding = c.rebuild_in_progress();
    return "rebuild_in_progress " + std::to_string(c.rebuild_in_progress()) + ", rebuilds " +
           std::to_string(c.rebuilds()) + ", num_tombstones " + std::to_string(c.num_tombstones());
  };
  std::vector<std::string> missed;
  for (const auto& [id, v] : pooled) {
    std::string hit;
    if (!nearest(v, &hit, o_.ef_search)) return;
    if (hit != id) {
      // Unreachable at this beam width, or not in the index at all?
      std::string wide_hit, filtered_hit;
      if (!nearest(v, &wide_hit, 100000)) return;
      if (!nearest(v, &filtered_hit, o_.ef_search, expected_.Get(id).version)) return;
      Violation(&f_.index_misses,
                where + "live " + id + " (" + Describe(expected_.Get(id)) +
                    ") not found by its own vector (top hit '" + hit + "'); with efSearch=100000 " +
                    (wide_hit == id ? "it is found" : "the top hit is '" + wide_hit + "'") +
                    "; an exact search of the index filtered to it " +
                    (filtered_hit == id ? "finds it (in the index, unreachable by the graph)"
                                        : "does not find it (not in the index)") +
                    "; index: " + index_state(nullptr));
      missed.push_back(id);
    }
  }
  if (!missed.empty()) {
    // Still missing once no background rebuild runs?
    bool rebuilding = true;
    for (int i = 0; i < 300 && rebuilding; ++i) {
      index_state(&rebuilding);
      if (rebuilding) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    int still = 0;
    for (const auto& id : missed) {
      std::string hit;
      if (nearest(pooled[id], &hit, 100000) && hit != id) ++still;
    }
    std::printf("  index check: %zu live documents missed; %d still missed after %s (%s)\n",
                missed.size(), still, rebuilding ? "30 s" : "no rebuild runs",
                index_state(nullptr).c_str());
  }
  for (const auto& id : ids) {
    const State s = expected_.Get(id);
    if (s.live || s.version == 0) continue;
    const v1::Document last = MakeDocument(o_.seed, id, s.version, o_.dim);
    std::string hit;
    if (!nearest(std::vector<float>(last.pooled().begin(), last.pooled().end()), &hit,
                 o_.ef_search)) {
      return;
    }
    if (hit == id) Violation(&f_.dead_in_index, where + "deleted " + id + " found by a search");
  }
}

void CrashTest::InjectFaults() {
  std::mt19937_64 rng(o_.seed ^ 0xfau);
  const std::string a = expected_.Pick(rng, true, {});
  const std::string b = expected_.Pick(rng, true, {a});
  std::printf("  injecting faults: deleting %s, overwriting %s, adding 'injected'\n", a.c_str(),
              b.c_str());
  grpc::ClientContext c1, c2;
  v1::DeleteRequest del;
  del.set_collection(kCollection);
  if (!a.empty()) del.add_ids(a);
  v1::DeleteResponse del_resp;
  (void)stub_->Delete(&c1, del, &del_resp);
  v1::UpsertRequest up;
  up.set_collection(kCollection);
  if (!b.empty()) *up.add_documents() = MakeDocument(o_.seed, b, 1u << 30, o_.dim);
  *up.add_documents() = MakeDocument(o_.seed, "injected", 1, o_.dim);
  v1::UpsertResponse up_resp;
  (void)stub_->Upsert(&c2, up, &up_resp);
}

int CrashTest::Run() {
  // Directories and files.
  std::string root;
  if (o_.data_dir.empty()) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "attnsearch_crash_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 2;
    }
    root = tmpl;
    data_dir_ = root + "/data";
  } else {
    data_dir_ = o_.data_dir;
    std::error_code ec;
    if (std::filesystem::exists(data_dir_, ec) && !std::filesystem::is_empty(data_dir_, ec)) {
      std::fprintf(stderr, "attnsearch-crashtest: --data_dir %s is not empty\n", data_dir_.c_str());
      return 2;
    }
  }
  std::filesystem::create_directories(data_dir_);
  const std::string base = root.empty() ? data_dir_ : root + "/run";
  state_file_ = o_.state_file.empty() ? base + ".expected.tsv" : o_.state_file;
  journal_file_ = base + ".acks.tsv";
  log_file_ = base + ".server.log";
  port_file_ = base + ".port";
  journal_ = std::fopen(journal_file_.c_str(), "w");
  if (journal_ == nullptr) {
    std::perror(journal_file_.c_str());
    return 2;
  }
  std::fprintf(journal_, "# cycle\top\tid\tstate\tversion\tcontent hash\n");
  std::printf("attnsearch-crashtest: %d cycles, seed %llu, data %s\n", o_.cycles,
              (unsigned long long)o_.seed, data_dir_.c_str());
  std::printf("  expected state %s, acknowledged writes %s, server log %s\n", state_file_.c_str(),
              journal_file_.c_str(), log_file_.c_str());
  std::fflush(stdout);

  std::mt19937_64 rng(o_.seed);
  std::uniform_real_distribution<double> u(0, 1);
  const auto t_start = Clock::now();
  bool ok = StartServer(0);
  if (ok) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 30);
    v1::CreateCollectionRequest req;
    req.set_name(kCollection);
    req.mutable_config()->set_dim(o_.dim);
    req.mutable_config()->set_token_dtype(v1::TOKEN_DTYPE_F32);
    req.mutable_config()->set_ann_spec("HNSW32,Flat");
    if (o_.token_codec == "residual") {
      // Trains itself during the run, so kills land in its training and
      // its re-encoding too.
      v1::TokenCodec* tc = req.mutable_config()->mutable_token_codec();
      tc->set_name("residual");
      tc->set_bits(2);
      tc->set_train_after_documents(150);
      if (o_.codes_only) tc->set_keep_full_precision(false);
    }
    v1::CreateCollectionResponse resp;
    const grpc::Status s = stub_->CreateCollection(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "attnsearch-crashtest: CreateCollection: %s\n", StatusText(s).c_str());
      return 2;
    }
  }
  for (int cycle = 1; ok && cycle <= o_.cycles; ++cycle) {
    // Writes and searches until the kill.
    const int run_ms =
        u(rng) < o_.early_kill
            ? int(rng() % 100)
            : o_.min_run_ms + int(rng() % uint64_t(o_.max_run_ms - o_.min_run_ms + 1));
    const Figures before = f_;
    killing_ = false;
    std::thread writer(&CrashTest::Writer, this, cycle, std::mt19937_64(rng()));
    std::thread reader(&CrashTest::Reader, this, std::mt19937_64(rng()));
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    {
      std::lock_guard<std::mutex> l(inflight_mu_);
      killing_ = true;
      server_.Signal(SIGKILL);
    }
    const int status = server_.Wait();
    writer.join();
    reader.join();
    uncertain_ = inflight_;
    inflight_.reset();
    std::fflush(journal_);
    expected_.Dump(state_file_, uncertain_);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      Violation(&f_.unexpected_errors, "cycle " + std::to_string(cycle) + ": the server " +
                                           DescribeWaitStatus(status) + " before the kill");
    }
    const size_t in_flight = uncertain_ ? uncertain_->items.size() : 0;

    // Restart on the same data directory and check everything.
    if (!StartServer(cycle)) break;
    if (cycle == 1 && o_.inject_faults) InjectFaults();
    const auto t_verify = Clock::now();
    Verify(cycle);
    const double verify_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - t_verify).count();
    expected_.Dump(state_file_, std::nullopt);
    std::printf(
        "cycle %d/%d: killed after %d ms: %llu writes acknowledged (%llu docs upserted, "
        "%llu deleted), %llu searches, %zu ids in flight; restart %.0f ms; check %.0f ms; "
        "live %zu; violations %llu\n",
        cycle, o_.cycles, run_ms, (unsigned long long)(f_.acked_ops - before.acked_ops),
        (unsigned long long)(f_.acked_upsert_docs - before.acked_upsert_docs),
        (unsigned long long)(f_.acked_deletes - before.acked_deletes),
        (unsigned long long)(f_.searches - before.searches), in_flight, last_start_ms_, verify_ms,
        expected_.live(), (unsigned long long)f_.Violations());
    std::fflush(stdout);
  }
  // A clean stop at the end: SIGTERM, then one more restart and check.
  if (server_.running()) {
    stub_.reset();  // no connection of ours keeps the shutdown waiting
    const auto t_stop = Clock::now();
    server_.Signal(SIGTERM);
    const int status = server_.Wait();
    std::printf("stopped with SIGTERM in %.0f ms; restarting for a last check\n",
                std::chrono::duration<double, std::milli>(Clock::now() - t_stop).count());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      Violation(&f_.unexpected_errors, "SIGTERM: the server " + DescribeWaitStatus(status));
    }
    if (StartServer(o_.cycles + 1)) {
      Verify(o_.cycles + 1);
      stub_.reset();
      server_.Signal(SIGTERM);
      server_.Wait();
    }
  }
  std::fclose(journal_);
  const double seconds = std::chrono::duration<double>(Clock::now() - t_start).count();

  std::vector<double> r = restart_ms_;
  std::sort(r.begin(), r.end());
  auto pct = [&](double p) { return r.empty() ? 0.0 : r[size_t(p * double(r.size() - 1))]; };
  const Figures& f = f_;
  std::printf("\nattnsearch-crashtest summary (seed %llu, %.1f s)\n", (unsigned long long)o_.seed,
              seconds);
  std::printf("  cycles (SIGKILL + restart)      %d\n", o_.cycles);
  std::printf("  acknowledged writes             %llu (%llu batches of 2+)\n",
              (unsigned long long)f.acked_ops, (unsigned long long)f.batches);
  std::printf(
      "    documents upserted            %llu (new %llu, overwrites %llu, re-created %llu)\n",
      (unsigned long long)f.acked_upsert_docs, (unsigned long long)f.acked_new,
      (unsigned long long)f.acked_overwrites, (unsigned long long)f.acked_recreates);
  std::printf("    documents deleted             %llu\n", (unsigned long long)f.acked_deletes);
  std::printf("  uncertain (in flight at a kill) %llu requests, %llu ids; applied %llu, not %llu\n",
              (unsigned long long)f.uncertain_ops, (unsigned long long)f.uncertain_ids,
              (unsigned long long)f.uncertain_applied, (unsigned long long)f.uncertain_not_applied);
  std::printf("  searches during writes          %llu\n", (unsigned long long)f.searches);
  std::printf("  live documents at the end       %zu of %zu ids\n", expected_.live(),
              expected_.ids().size());
  std::printf("  restart until serving, ms       min %.0f  median %.0f  max %.0f\n", pct(0),
              pct(0.5), pct(1));
  std::printf("  largest vector deviation        %.2g\n", f.max_deviation);
  std::printf("  lost acknowledged writes        %llu\n", (unsigned long long)f.lost);
  std::printf("  resurrected deletes             %llu\n", (unsigned long long)f.resurrected);
  std::printf("  ids never acknowledged present  %llu\n", (unsigned long long)f.extra);
  std::printf("  corrupt contents                %llu\n", (unsigned long long)f.corrupt);
  std::printf("  torn batches                    %llu\n", (unsigned long long)f.torn);
  std::printf("  num_documents or arena mismatches %llu\n", (unsigned long long)f.count_mismatch);
  if (o_.token_codec == "residual") {
    std::printf("  token codec version at the end  %llu\n", (unsigned long long)codec_version_);
  }
  std::printf("  index/store disagreements       %llu (live not found %llu, deleted found %llu)\n",
              (unsigned long long)(f.index_misses + f.dead_in_index),
              (unsigned long long)f.index_misses, (unsigned long long)f.dead_in_index);
  std::printf("  unexpected errors               %llu (+ %llu failed restarts, %llu bad hits)\n",
              (unsigned long long)f.unexpected_errors, (unsigned long long)f.start_failures,
              (unsigned long long)f.bad_hits);
  const bool pass = f.Violations() == 0;
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  if (!root.empty()) {
    if (pass && !o_.keep) {
      std::error_code ec;
      std::filesystem::remove_all(root, ec);
    } else {
      std::printf("files kept in %s\n", root.c_str());
    }
  }
  return pass ? 0 : 1;
}

}  // namespace
}  // namespace attnsearch::crash

int main(int argc, char** argv) {
  attnsearch::crash::Options o;
  CLI::App app{"attnsearch-crashtest: SIGKILL attnsearch-server under writes, restart, check"};
  app.add_option("--cycles", o.cycles, "kill/restart cycles")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of every random choice")->capture_default_str();
  app.add_option("--data_dir", o.data_dir,
                 "the server's data directory (absent or empty; default: a temporary one, "
                 "removed after a passing run)");
  app.add_option("--state_file", o.state_file,
                 "expected-state file (default: DATA_DIR.expected.tsv)");
  app.add_option("--server", o.server, "attnsearch-server binary")->capture_default_str();
  app.add_option("--dim", o.dim, "vector dimension")->capture_default_str();
  app.add_option("--min_run_ms", o.min_run_ms, "shortest run before a kill")->capture_default_str();
  app.add_option("--max_run_ms", o.max_run_ms, "longest run before a kill")->capture_default_str();
  app.add_option("--early_kill", o.early_kill, "share of kills within 100 ms of a restart")
      ->capture_default_str();
  app.add_option("--target_live", o.target_live,
                 "live documents above which no new ids are written")
      ->capture_default_str();
  app.add_option("--snapshot_every", o.snapshot_every, "the server's --snapshot_every")
      ->capture_default_str();
  app.add_option("--rebuild_min_tombstones", o.rebuild_min_tombstones,
                 "the server's --rebuild_min_tombstones")
      ->capture_default_str();
  app.add_option("--ef_search", o.ef_search, "efSearch of the index check")->capture_default_str();
  app.add_flag("--keep", o.keep, "keep the temporary directory after a passing run");
  app.add_option("--token_codec", o.token_codec,
                 "the collection's token codec: rows, or residual (trains itself after 150 "
                 "documents, between kills)")
      ->check(CLI::IsMember({"rows", "residual"}))
      ->capture_default_str();
  app.add_flag("--codes_only", o.codes_only,
               "residual: keep only the token codes (keep_full_precision off); Get's tokens "
               "are then checked by direction");
  app.add_flag("--inject_faults", o.inject_faults,
               "self-check: tamper with the collection after the first restart (must FAIL)");
  CLI11_PARSE(app, argc, argv);
  if (o.cycles < 1 || o.dim < 1 || o.min_run_ms < 0 || o.max_run_ms < o.min_run_ms) {
    std::fprintf(stderr, "attnsearch-crashtest: bad arguments\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  return attnsearch::crash::CrashTest(o).Run();
}
