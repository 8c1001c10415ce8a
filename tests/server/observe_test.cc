// Observability of the real attnsearch-server over loopback: the Prometheus
// endpoint (--metrics_listen) scraped with a plain HTTP/1.1 request, the
// JSON call log (--log_calls all) with request ids, and the health service
// reporting NOT_SERVING while the collections are opened at startup.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "http/http_exchange.h"
#include "nlohmann/json.hpp"
#include "server/grpc_status_matchers.h"
#include "server/server_process.h"
#include "test_util.h"

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
using grpc::StatusCode;

constexpr uint32_t kDim = 16;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Scrape(int port) {
  return HttpExchange(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

// The value of the sample `series` (exact name and labels), or -1.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& request_id = "") {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!request_id.empty()) ctx->AddMetadata("x-request-id", request_id);
  return ctx;
}

v1::UpsertRequest Docs(const std::string& collection, int first, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  v1::UpsertRequest req;
  req.set_collection(collection);
  for (int i = first; i < first + n; ++i) {
    v1::Document* d = req.add_documents();
    d->set_id("d" + std::to_string(i));
    for (uint32_t k = 0; k < kDim; ++k) d->add_pooled(g(rng));
  }
  return req;
}

v1::SearchRequest Query(const std::string& collection) {
  v1::SearchRequest r;
  r.set_collection(collection);
  for (uint32_t k = 0; k < kDim; ++k) r.mutable_vectors()->add_pooled(k == 0 ? 1.f : 0.1f);
  r.set_top_k(5);
  return r;
}

TEST(ObserveTest, MetricsEndpointAndJsonCallLog) {
  TempDir dir;
  ServerProcess server;
  const std::string log_file = dir.Sub("server.stderr");
  const std::string port_file = dir.Sub("metrics.port");
  std::string address;
  WithStderrTo(log_file, [&] {
    address =
        server.Start(dir.Sub("data"), {"--metrics_listen", "127.0.0.1:0", "--metrics_port_file",
                                       port_file, "--log_calls", "all", "--no_sync"});
  });
  ASSERT_FALSE(address.empty());
  const int port = std::atoi(ReadFile(port_file).c_str());
  ASSERT_GT(port, 0);
  auto stub = NewSearchStub(address);

  v1::CreateCollectionRequest create;
  create.set_name("m");
  create.mutable_config()->set_dim(kDim);
  v1::CreateCollectionResponse cresp;
  ASSERT_OK(stub->CreateCollection(Ctx().get(), create, &cresp));
  v1::UpsertResponse uresp;
  ASSERT_OK(stub->Upsert(Ctx().get(), Docs("m", 0, 300, 1), &uresp));
  v1::DeleteRequest del;
  del.set_collection("m");
  del.add_ids("d0");
  del.add_ids("d1");
  v1::DeleteResponse dresp;
  ASSERT_OK(stub->Delete(Ctx().get(), del, &dresp));
  v1::SearchResponse sresp;
  {
    auto ctx = Ctx("req-abc-123");
    ASSERT_OK(stub->Search(ctx.get(), Query("m"), &sresp));
    // The request id comes back as initial metadata.
    auto it = ctx->GetServerInitialMetadata().find("x-request-id");
    ASSERT_NE(it, ctx->GetServerInitialMetadata().end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), "req-abc-123");
  }
  for (int i = 0; i < 2; ++i) ASSERT_OK(stub->Search(Ctx().get(), Query("m"), &sresp));
  v1::SearchRequest bad = Query("m");
  bad.set_top_k(0);
  EXPECT_EQ(stub->Search(Ctx("req-bad-1").get(), bad, &sresp).error_code(),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stub->Search(Ctx().get(), Query("nope"), &sresp).error_code(), StatusCode::NOT_FOUND);

  const std::string response = Scrape(port);
  ASSERT_EQ(response.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << response;
  EXPECT_NE(response.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  const std::string text = response.substr(response.find("\r\n\r\n") + 4);
  EXPECT_EQ(Sample(text, "attnsearch_requests_total{rpc=\"Search\",code=\"OK\"}"), 3);
  EXPECT_EQ(Sample(text, "attnsearch_requests_total{rpc=\"Search\",code=\"INVALID_ARGUMENT\"}"), 1);
  EXPECT_EQ(Sample(text, "attnsearch_errors_total{rpc=\"Search\",code=\"NOT_FOUND\"}"), 1);
  EXPECT_EQ(Sample(text, "attnsearch_errors_total{rpc=\"Search\",code=\"OK\"}"), -1);
  EXPECT_EQ(Sample(text, "attnsearch_requests_total{rpc=\"Upsert\",code=\"OK\"}"), 1);
  EXPECT_EQ(Sample(text, "attnsearch_rpc_duration_seconds_count{rpc=\"Search\"}"), 5);
  EXPECT_EQ(Sample(text, "attnsearch_rpc_duration_seconds_bucket{rpc=\"Search\",le=\"+Inf\"}"), 5);
  EXPECT_GT(Sample(text, "attnsearch_rpc_duration_seconds_sum{rpc=\"Upsert\"}"), 0);
  for (const char* stage : {"encode", "ann", "fetch", "rerank", "total", "queue"}) {
    SCOPED_TRACE(stage);
    EXPECT_EQ(Sample(text, std::string("attnsearch_search_stage_duration_seconds_count{stage=\"") +
                               stage + "\"}"),
              3);
  }
  EXPECT_EQ(Sample(text, "attnsearch_collection_documents{collection=\"m\"}"), 298);
  EXPECT_EQ(Sample(text, "attnsearch_collection_tombstones{collection=\"m\"}"), 2);
  EXPECT_EQ(Sample(text, "attnsearch_collection_ann_vectors{collection=\"m\"}"), 300);
  EXPECT_GT(Sample(text,
                   "attnsearch_collection_rocksdb_memory_bytes{collection=\"m\",kind="
                   "\"memtables\"}"),
            0);
  EXPECT_GE(Sample(text,
                   "attnsearch_collection_rocksdb_memory_bytes{collection=\"m\",kind="
                   "\"block_cache\"}"),
            0);
  // Every sample line is "name{labels} number" or "name number".
  std::istringstream lines(text);
  const std::regex sample_re(R"(^[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$)");
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample_re)) << line;
  }
  // A stream the client cancels after its first message was stored is
  // CANCELLED in the metrics (it was counted OK).
  {
    grpc::ClientContext ctx;
    v1::UpsertResponse stream_resp;
    auto writer = stub->UpsertStream(&ctx, &stream_resp);
    ASSERT_TRUE(writer->Write(Docs("m", 0, 1, 1)));  // d0 again
    v1::GetRequest get;
    get.set_collection("m");
    get.add_ids("d0");
    v1::GetResponse got;
    for (int i = 0; i < 500 && got.documents_size() == 0; ++i) {
      ASSERT_OK(stub->Get(Ctx().get(), get, &got));
      if (got.documents_size() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(got.documents_size(), 1);
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), StatusCode::CANCELLED);
  }
  double cancelled = -1;
  for (int i = 0; i < 500 && cancelled != 1; ++i) {
    const std::string again = Scrape(port);
    cancelled = Sample(again.substr(again.find("\r\n\r\n") + 4),
                       "attnsearch_requests_total{rpc=\"UpsertStream\",code=\"CANCELLED\"}");
    if (cancelled != 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(HttpExchange(port, "GET /other HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(HttpExchange(port, "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405", 0), 0u);
  EXPECT_EQ(HttpExchange(port, "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);

  server.Kill(SIGTERM);
  EXPECT_EQ(server.Wait(), 0);
  // The log: one JSON object per line.
  std::istringstream log(ReadFile(log_file));
  int calls = 0;
  bool saw_named = false, saw_bad = false, saw_stopped = false;
  for (std::string line; std::getline(log, line);) {
    if (line.empty() || line[0] != '{') continue;  // e.g. gRPC's own messages
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    ASSERT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
    if (j["msg"] == "stopped") saw_stopped = true;
    if (j["msg"] != "call") continue;
    ++calls;
    EXPECT_FALSE(j["request_id"].get<std::string>().empty()) << line;
    EXPECT_TRUE(j["latency_ms"].is_number()) << line;
    if (j["request_id"] == "req-abc-123") {
      saw_named = true;
      EXPECT_EQ(j["rpc"], "Search");
      EXPECT_EQ(j["collection"], "m");
      EXPECT_EQ(j["code"], "OK");
      EXPECT_EQ(j["level"], "info");
    }
    if (j["request_id"] == "req-bad-1") {
      saw_bad = true;
      EXPECT_EQ(j["code"], "INVALID_ARGUMENT");
      EXPECT_EQ(j["level"], "warn");
      EXPECT_NE(j["error"].get<std::string>().find("top_k"), std::string::npos);
    }
  }
  // create, upsert, delete, 3 searches, 2 failed searches, then the
  // cancelled stream and the Gets before it
  EXPECT_GE(calls, 10);
  EXPECT_TRUE(saw_named);
  EXPECT_TRUE(saw_bad);
  EXPECT_TRUE(saw_stopped);
}

// A free loopback port (bound and released; the server binds it next).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

constexpr char kServiceName[] = "attnsearch.v1.SearchService";
const std::string kServing("\x08\x01", 2), kNotServing("\x08\x02", 2);

TEST(ObserveTest, HealthIsNotServingWhileCollectionsOpen) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  {
    // A collection whose ANN index must be rebuilt from the store on the
    // next start (SIGKILL: no snapshot is written).
    ServerProcess first;
    const std::string address = first.Start(data, {"--no_sync"});
    ASSERT_FALSE(address.empty());
    auto stub = NewSearchStub(address);
    v1::CreateCollectionRequest create;
    create.set_name("slow");
    create.mutable_config()->set_dim(kDim);
    create.mutable_config()->set_ann_spec("HNSW32,Flat");
    v1::CreateCollectionResponse cresp;
    ASSERT_OK(stub->CreateCollection(Ctx().get(), create, &cresp));
    for (int b = 0; b < 8; ++b) {
      v1::UpsertResponse uresp;
      ASSERT_OK(stub->Upsert(Ctx().get(), Docs("slow", b * 5000, 5000, uint32_t(b)), &uresp));
    }
    first.Kill(SIGKILL);
    first.Wait();
  }
  const int port = FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ServerProcess server;
  std::atomic<bool> started{false};
  // The child dies with the thread that forked it (PR_SET_PDEATHSIG), so
  // the starting thread lives until the end of the test.
  std::promise<void> finished;
  std::thread starter([&] {
    server.Start(data, {"--listen", address});
    started = true;
    finished.get_future().wait();
  });
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 50);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  grpc::GenericStub generic(channel);
  auto stub = NewSearchStub(channel);
  bool saw_not_serving = false, saw_unavailable_call = false, saw_name_not_serving = false;
  std::string health;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < give_up) {
    const grpc::Status s = HealthCheck(&generic, &health);
    if (s.ok() && health == kServing) break;
    if (s.ok() && health == kNotServing && !saw_unavailable_call) {
      saw_not_serving = true;
      std::string by_name;
      if (HealthCheck(&generic, &by_name, kServiceName).ok() && by_name == kNotServing) {
        saw_name_not_serving = true;
      }
      v1::ListCollectionsResponse list;
      const grpc::Status call = stub->ListCollections(Ctx().get(), {}, &list);
      if (call.error_code() == StatusCode::UNAVAILABLE &&
          call.error_message().find("opening") != std::string::npos) {
        saw_unavailable_call = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_FALSE(server.address().empty());
  EXPECT_EQ(health, std::string("\x08\x01", 2));
  EXPECT_TRUE(saw_not_serving) << "the collections opened before the first health check";
  EXPECT_TRUE(saw_name_not_serving) << kServiceName << " was not NOT_SERVING meanwhile";
  EXPECT_TRUE(saw_unavailable_call);
  std::string by_name;
  ASSERT_OK(HealthCheck(&generic, &by_name, kServiceName));
  EXPECT_EQ(by_name, kServing);
  v1::GetCollectionRequest get;
  get.set_name("slow");
  v1::GetCollectionResponse info;
  EXPECT_OK(stub->GetCollection(Ctx().get(), get, &info));
  EXPECT_EQ(info.collection().num_documents(), 40000u);
  finished.set_value();
  starter.join();
}

// A stop signal turns the health service NOT_SERVING, for the server and
// for the service by name, while calls are still served for --drain_s; then
// the server stops cleanly.
TEST(ObserveTest, HealthIsNotServingWhileDraining) {
  TempDir dir;
  ServerProcess server;
  const std::string address = server.Start(dir.Sub("data"), {"--no_sync", "--drain_s", "3"});
  ASSERT_FALSE(address.empty());
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  auto stub = NewSearchStub(channel);
  std::string health;
  ASSERT_OK(HealthCheck(&generic, &health, kServiceName));
  EXPECT_EQ(health, kServing);
  ASSERT_OK(HealthCheck(&generic, &health, ""));
  EXPECT_EQ(health, kServing);
  EXPECT_EQ(HealthCheck(&generic, &health, "no.such.Service").error_code(), StatusCode::NOT_FOUND);

  ASSERT_TRUE(server.Kill(SIGTERM));
  bool drained = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < give_up) {
    std::string whole, by_name;
    if (HealthCheck(&generic, &whole, "").ok() && whole == kNotServing &&
        HealthCheck(&generic, &by_name, kServiceName).ok() && by_name == kNotServing) {
      drained = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(drained) << "the health service did not turn NOT_SERVING after SIGTERM";
  v1::ListCollectionsResponse list;
  EXPECT_OK(stub->ListCollections(Ctx().get(), {}, &list));  // still served while draining
  const int status = server.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The threads of a running process, by id, the main thread first.
std::vector<pid_t> ThreadsOf(pid_t pid) {
  std::vector<pid_t> tids;
  for (const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    tids.push_back(static_cast<pid_t>(std::stol(e.path().filename().string())));
  }
  std::sort(tids.begin(), tids.end());
  return tids;
}

// A stop signal stops the server cleanly whichever thread the kernel
// delivers it to: here it is sent to one thread at a time, the oldest
// after the main thread (one a library starts before main runs) and the
// newest.
TEST(ObserveTest, StopSignalToAnyThreadStopsCleanly) {
  for (const bool oldest : {true, false}) {
    TempDir dir;
    const std::string log_file = dir.Sub("server.stderr");
    ServerProcess server;
    std::string address;
    WithStderrTo(log_file, [&] { address = server.Start(dir.Sub("data"), {"--no_sync"}); });
    ASSERT_FALSE(address.empty());
    const std::vector<pid_t> tids = ThreadsOf(server.pid());
    ASSERT_GT(tids.size(), 1u);
    const pid_t target = oldest ? tids[1] : tids.back();
    ASSERT_EQ(::syscall(SYS_tgkill, server.pid(), target, SIGTERM), 0) << std::strerror(errno);
    const int status = server.WaitFor(std::chrono::seconds(30));
    ASSERT_NE(status, -1) << "the server did not stop within 30 s of SIGTERM to thread " << target;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "thread " << target << ": " << DescribeWaitStatus(status);
    const std::string log = ReadFile(log_file);
    EXPECT_NE(log.find("\"shutting down\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"stopped\""), std::string::npos) << log;
  }
}

// Every line the server writes on stderr is one JSON object, warnings of
// the engine included: here a background rebuild of the ANN index (after
// deletes) and, on the next start, a corrupt snapshot rebuilt from the
// store.
TEST(ObserveTest, EveryStderrLineIsJson) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string log_file = dir.Sub("server.stderr");
  const std::vector<std::string> flags = {"--no_sync", "--log_calls", "all",
                                          "--rebuild_min_tombstones", "50"};
  {
    ServerProcess server;
    std::string address;
    WithStderrTo(log_file, [&] { address = server.Start(data, flags); });
    ASSERT_FALSE(address.empty());
    auto stub = NewSearchStub(address);
    v1::CreateCollectionRequest create;
    create.set_name("j");
    create.mutable_config()->set_dim(kDim);
    v1::CreateCollectionResponse cresp;
    ASSERT_OK(stub->CreateCollection(Ctx().get(), create, &cresp));
    v1::UpsertResponse uresp;
    ASSERT_OK(stub->Upsert(Ctx().get(), Docs("j", 0, 300, 2), &uresp));
    v1::DeleteRequest del;
    del.set_collection("j");
    for (int i = 0; i < 100; ++i) del.add_ids("d" + std::to_string(i));
    v1::DeleteResponse dresp;
    ASSERT_OK(stub->Delete(Ctx().get(), del, &dresp));
    // The rebuild runs in the background: wait for it.
    v1::GetCollectionRequest get;
    get.set_name("j");
    v1::GetCollectionResponse info;
    for (int i = 0; i < 200; ++i) {
      ASSERT_OK(stub->GetCollection(Ctx().get(), get, &info));
      if (info.collection().rebuilds() > 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GT(info.collection().rebuilds(), 0u);
    // A request protobuf cannot parse (a string field not UTF-8): protobuf
    // says so through the logger too.
    get.set_name("bad\xff\xfe");
    EXPECT_FALSE(stub->GetCollection(Ctx().get(), get, &info).ok());
    ASSERT_TRUE(server.Kill(SIGTERM));
    const int status = server.Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  }
  {
    // A corrupt snapshot: the collection's index is rebuilt at start.
    std::fstream f(data + "/collections/j/ann.snapshot",
                   std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekp(40);
    f.put('\x5a');
  }
  {
    ServerProcess server;
    std::string address;
    WithStderrTo(dir.Sub("server2.stderr"), [&] { address = server.Start(data, flags); });
    ASSERT_FALSE(address.empty());
    ASSERT_TRUE(server.Kill(SIGTERM));
    const int status = server.Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  }
  std::set<std::string> messages;
  for (const std::string& file : {log_file, dir.Sub("server2.stderr")}) {
    std::istringstream in(ReadFile(file));
    std::string line;
    int lines = 0;
    while (std::getline(in, line)) {
      ++lines;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << file << ": not a JSON object: " << line;
      ASSERT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
      messages.insert(j["msg"].get<std::string>());
    }
    EXPECT_GT(lines, 3) << file << ":\n" << ReadFile(file);
  }
  EXPECT_TRUE(messages.count("ANN index rebuilt")) << "no rebuild logged";
  bool protobuf_said = false;
  for (const std::string& m : messages)
    protobuf_said |= m.find("invalid UTF-8") != std::string::npos;
  EXPECT_TRUE(protobuf_said) << "protobuf's complaint about the bad request is not logged";
  EXPECT_TRUE(messages.count("rebuilding the ANN index from the store"))
      << "the corrupt snapshot was not reported";
}

}  // namespace
}  // namespace attnsearch::testing
