// Tests of the Server class (server/server.h) in-process: Start listens on
// a real loopback port and serves there and over its in-process channel
// alike; Stop closes the collections so a second Start finds every write;
// health follows the lifecycle; unusable options are refused by name and
// leave nothing running; a port in use is refused; metrics over HTTP.
#include <cmath>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "http/http_exchange.h"
#include "server/grpc_status_matchers.h"
#include "server/server.h"
#include "server/server_channel.h"
#include "server/server_flags.h"
#include "test_util.h"

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
constexpr uint32_t kDim = 8;

ServerOptions Options(const std::string& data_dir) {
  ServerOptions o;
  o.data_dir = data_dir;
  o.listen = "127.0.0.1:0";
  o.sync_writes = false;
  o.block_cache_mb = 16;
  return o;
}

v1::UpsertRequest Documents(const std::string& collection, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  v1::UpsertRequest req;
  req.set_collection(collection);
  for (int i = 0; i < n; ++i) {
    v1::Document* d = req.add_documents();
    d->set_id("d" + std::to_string(i));
    for (float x : RandomUnitRows(rng, 1, kDim)) d->add_pooled(x);
  }
  return req;
}

grpc::Status CreateAndUpsert(v1::SearchService::Stub* stub, const v1::UpsertRequest& docs) {
  grpc::ClientContext c1, c2;
  v1::CreateCollectionRequest create;
  create.set_name(docs.collection());
  create.mutable_config()->set_dim(kDim);
  create.mutable_config()->set_ann_spec("Flat");
  v1::CreateCollectionResponse created;
  grpc::Status s = stub->CreateCollection(&c1, create, &created);
  if (!s.ok()) return s;
  v1::UpsertResponse upserted;
  return stub->Upsert(&c2, docs, &upserted);
}

// The ids of a search for document `i`'s own pooled vector.
std::vector<std::string> SearchIds(v1::SearchService::Stub* stub, const v1::UpsertRequest& docs,
                                   int i) {
  v1::SearchRequest req;
  req.set_collection(docs.collection());
  *req.mutable_vectors()->mutable_pooled() = docs.documents(i).pooled();
  req.set_top_k(5);
  grpc::ClientContext ctx;
  v1::SearchResponse resp;
  const grpc::Status s = stub->Search(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  std::vector<std::string> ids;
  for (const auto& h : resp.hits()) ids.push_back(h.id());
  return ids;
}

// The health service's answer for `service`: "serving", "not serving" or
// the call's error.
std::string Health(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub generic(channel);
  std::string response;
  const grpc::Status s = HealthCheck(&generic, &response, service);
  if (!s.ok()) return "error " + s.error_message();
  // HealthCheckResponse{status}: field 1, varint; SERVING is 1.
  return response == std::string("\x08\x01", 2) ? "serving" : "not serving";
}

TEST(ServerClassTest, ServesOverTcpAndInProcessAlike) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(Options(dir.path()));
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), "127.0.0.1:" + std::to_string((*server)->port()));

  auto in_process = NewSearchStub((*server)->InProcessChannel());
  const v1::UpsertRequest docs = Documents("c", 40, 7);
  ASSERT_OK(CreateAndUpsert(in_process.get(), docs));
  auto tcp_channel = NewServerChannel((*server)->address());
  auto tcp = NewSearchStub(tcp_channel);
  for (int i : {0, 17, 39}) {
    const std::vector<std::string> ids = SearchIds(tcp.get(), docs, i);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], docs.documents(i).id());  // its own vector is its best match
    EXPECT_EQ(ids, SearchIds(in_process.get(), docs, i));
  }
  EXPECT_EQ((*server)->catalog()->List().size(), 1u);
  EXPECT_EQ(Health(tcp_channel, ""), "serving");
  EXPECT_EQ(Health(tcp_channel, "attnsearch.v1.SearchService"), "serving");

  (*server)->Stop();
  (*server)->Stop();  // idempotent
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ListCollectionsResponse list;
  EXPECT_FALSE(tcp->ListCollections(&ctx, v1::ListCollectionsRequest(), &list).ok());
}

TEST(ServerClassTest, StopClosesTheCollectionsAndAStartFindsEveryWrite) {
  TempDir dir;
  const v1::UpsertRequest docs = Documents("p", 30, 11);
  {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(Options(dir.path()));
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_OK(CreateAndUpsert(NewSearchStub((*server)->InProcessChannel()).get(), docs));
  }  // the destructor stops it
  absl::StatusOr<std::unique_ptr<Server>> again = Server::Start(Options(dir.path()));
  ASSERT_TRUE(again.ok()) << again.status();
  auto stub = NewSearchStub((*again)->InProcessChannel());
  v1::GetRequest get;
  get.set_collection("p");
  for (const auto& d : docs.documents()) get.add_ids(d.id());
  grpc::ClientContext ctx;
  v1::GetResponse got;
  ASSERT_OK(stub->Get(&ctx, get, &got));
  EXPECT_EQ(got.documents_size(), docs.documents_size());
  EXPECT_EQ(got.not_found_ids_size(), 0);
  EXPECT_EQ(SearchIds(stub.get(), docs, 3)[0], "d3");
}

TEST(ServerClassTest, UnusableOptionsAreRefusedByName) {
  TempDir dir;
  const std::string missing = dir.Sub("no_such_file");
  struct Case {
    std::function<void(ServerOptions*)> change;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](ServerOptions* o) { o->data_dir.clear(); }, "data_dir"},
      {[](ServerOptions* o) { o->listen = "nowhere"; }, "listen"},
      {[](ServerOptions* o) { o->metrics_listen = "127.0.0.1:99999"; }, "metrics_listen"},
      {[&](ServerOptions* o) { o->tls_cert = missing; }, "tls_cert, tls_key"},
      {[&](ServerOptions* o) { o->tls_cert = o->tls_key = missing; }, "tls_cert"},
      {[&](ServerOptions* o) { o->api_keys_file = missing; }, "api_keys"},
      {[](ServerOptions* o) { o->max_message_mb = 0; }, "max_message_mb"},
      {[](ServerOptions* o) { o->drain_s = -1; }, "drain_s"},
      {[](ServerOptions* o) { o->workers = 5000; }, "workers"},
      {[](ServerOptions* o) { o->collection.rebuild_tombstone_ratio = NAN; },
       "rebuild_tombstone_ratio"},
      {[](ServerOptions* o) { o->collection.limits.max_top_k = 0; }, "max_top_k"},
      {[](ServerOptions* o) { o->inline_reads = -7; }, "inline_reads"},
  };
  for (const Case& c : cases) {
    ServerOptions o = Options(dir.Sub("data"));
    c.change(&o);
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(o);
    EXPECT_TRUE(absl::IsInvalidArgument(server.status())) << c.field << ": " << server.status();
    EXPECT_EQ(server.status().message().rfind(c.field + ":", 0), 0u) << server.status();
  }
  // A data directory that cannot be one: the catalog's error, and the port
  // it listened on is released.
  const std::string file = dir.Sub("file");
  std::ofstream(file) << "x";
  ServerOptions o = Options(file);
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(o);
  EXPECT_FALSE(server.ok());
}

TEST(ServerClassTest, APortInUseIsRefused) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Server>> first = Server::Start(Options(dir.Sub("a")));
  ASSERT_TRUE(first.ok()) << first.status();
  auto stub = NewSearchStub(NewServerChannel((*first)->address()));
  ASSERT_OK(CreateAndUpsert(stub.get(), Documents("c", 5, 3)));
  ServerOptions o = Options(dir.Sub("b"));
  o.listen = (*first)->address();
  absl::StatusOr<std::unique_ptr<Server>> second = Server::Start(o);
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_NE(second.status().message().find("listen"), std::string::npos) << second.status();
  // Every new connection still reaches the first server.
  for (int i = 0; i < 8; ++i) {
    auto fresh = NewSearchStub(NewServerChannel((*first)->address()));
    grpc::ClientContext ctx;
    v1::ListCollectionsResponse list;
    ASSERT_OK(fresh->ListCollections(&ctx, v1::ListCollectionsRequest(), &list));
    EXPECT_EQ(list.collections_size(), 1);
  }
}

TEST(ServerClassTest, FlagsMapOntoTheOptions) {
  absl::StatusOr<ServerOptions> o =
      ParseServerFlags({"--data_dir", "/d", "--max_request_mb", "3", "--min_free_disk_mb", "5",
                        "--no_sync", "--log_calls", "all", "--max_top_k", "7", "--drain_s", "1.5"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->data_dir, "/d");
  EXPECT_EQ(o->collection.limits.max_request_bytes, size_t(3) << 20);
  EXPECT_EQ(o->collection.storage.min_free_bytes, uint64_t(5) << 20);
  EXPECT_FALSE(o->sync_writes);
  EXPECT_EQ(o->log_calls, CallLogging::kAll);
  EXPECT_EQ(o->collection.limits.max_top_k, 7u);
  EXPECT_EQ(o->drain_s, 1.5);
  // The defaults are ServerOptions' own.
  absl::StatusOr<ServerOptions> d = ParseServerFlags({"--data_dir", "/d"});
  ASSERT_TRUE(d.ok());
  const ServerOptions defaults;
  EXPECT_EQ(d->listen, defaults.listen);
  EXPECT_EQ(d->collection.limits.max_request_bytes, defaults.collection.limits.max_request_bytes);
  EXPECT_EQ(d->collection.limits.max_request_bytes, size_t(1) << 30);
  EXPECT_TRUE(d->sync_writes);
  EXPECT_EQ(d->log_calls, CallLogging::kErrors);
  EXPECT_TRUE(absl::IsInvalidArgument(ParseServerFlags({"--data_dir", "/d", "--nope"}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseServerFlags({"--listen", "x:1"}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(ParseServerFlags({"--data_dir", "/d", "--log_calls", "x"}).status()));
}

TEST(ServerClassTest, ServesMetricsOverHttp) {
  TempDir dir;
  ServerOptions o = Options(dir.path());
  o.metrics_listen = "127.0.0.1:0";
  o.log_calls = CallLogging::kNone;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->metrics_port(), 0);
  ASSERT_OK(
      CreateAndUpsert(NewSearchStub((*server)->InProcessChannel()).get(), Documents("m", 5, 3)));
  const std::string text =
      HttpExchange((*server)->metrics_port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(text.rfind("HTTP/1.1 200", 0), 0u) << text;
  EXPECT_NE(text.find("attnsearch_requests_total{rpc=\"Upsert\",code=\"OK\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("attnsearch_collection_documents{collection=\"m\"} 5"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace attnsearch::testing
