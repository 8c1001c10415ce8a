// The JSON API (server/json_gateway.h) on a real in-process server with API
// keys: every call is answered through the gRPC service, so it gives what a
// gRPC client gets (the ranking of the README's example, attention maps),
// maps status codes to HTTP statuses, refuses bad bodies naming them,
// checks the same keys, gives what gRPC gives for every RPC, and serves
// HTTPS with the server's certificate. The same listener serves the web
// console's files (server/console.h).
#include "server/json_gateway.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "../http/http_exchange.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "in_process_server.h"
#include "nlohmann/json.hpp"
#include "server/console.h"
#include "test_util.h"

namespace attnsearch {
namespace {

constexpr char kWriteKey[] = "json-gateway-write-key";
constexpr char kReadKey[] = "json-gateway-read-key";

struct Answer {
  int status = 0;
  nlohmann::json body;
  std::string head;  // the status line and headers
};

// POST /v1/<rpc> with `body` (and the key and the request id, if any).
Answer Call(int port, const std::string& rpc, const std::string& body, const std::string& key,
            const std::string& request_id = "") {
  std::string request =
      "POST /v1/" + rpc + " HTTP/1.1\r\nHost: localhost\r\n" +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (!key.empty()) request += "Authorization: Bearer " + key + "\r\n";
  if (!request_id.empty()) request += "X-Request-Id: " + request_id + "\r\n";
  request += "Connection: close\r\n\r\n" + body;
  const std::string raw = testing::HttpExchange(port, request);
  Answer a;
  if (raw.size() < 12) return a;
  a.status = std::stoi(raw.substr(9, 3));
  const size_t start = raw.find("\r\n\r\n");
  a.head = raw.substr(0, start + 2);  // each header line with its CRLF
  a.body = nlohmann::json::parse(raw.substr(start + 4), nullptr, /*allow_exceptions=*/false);
  return a;
}

TEST(JsonGatewayTest, EveryCallGoesThroughTheService) {
  testing::TempDir dir;
  const std::string keys = dir.Sub("keys");
  std::ofstream(keys) << kWriteKey << " write\n" << kReadKey << " read\n";
  testing::InProcessServer server;
  ASSERT_FALSE(
      server.Start(dir.Sub("data"), {"--http_listen", "127.0.0.1:0", "--api_keys", keys}).empty());
  const int port = server.server()->http_port();
  ASSERT_GT(port, 0);

  Answer a = Call(port, "CreateCollection", R"({"name":"fruit","config":{"dim":4}})", kWriteKey);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.body["collection"]["name"], "fruit");
  a = Call(port, "Upsert",
           R"({"collection":"fruit","documents":[
                {"id":"apple","text":"a red apple","pooled":[1,0.2,0,0]},
                {"id":"lime","text":"a green lime","pooled":[0,1,0.3,0]}]})",
           kWriteKey);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.body["upserted"], "2");  // uint64 is a string in protobuf's JSON mapping
  a = Call(port, "UpsertStream",
           R"([{"collection":"fruit","documents":[{"id":"kiwi","pooled":[0,0,1,0]}]},
               {"collection":"fruit","documents":[{"id":"plum","pooled":[0,0,0,1]}]}])",
           kWriteKey);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.body["upserted"], "2");

  // The README's query: apple (its direction) first; a read key may search.
  a = Call(port, "Search",
           R"({"collection":"fruit","vectors":{"tokens":{"rows":2,"cols":4,
               "values":[1,0,0,0,0.8,0.3,0,0]}},"top_k":2,"include_text":true,
               "attention_map":true})",
           kReadKey);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(a.body["hits"].size(), 2u);
  EXPECT_EQ(a.body["hits"][0]["id"], "apple");
  EXPECT_EQ(a.body["hits"][1]["id"], "lime");
  EXPECT_EQ(a.body["hits"][0]["text"], "a red apple");
  EXPECT_NEAR(a.body["hits"][0]["score"].get<double>(), 0.984, 1e-3);
  EXPECT_EQ(a.body["hits"][0]["attention"]["query_tokens"], 2);
  EXPECT_EQ(a.body["hits"][0]["attention"]["weights"], nlohmann::json::array({1.0, 1.0}));
  a = Call(port, "Get", R"({"collection":"fruit","ids":["kiwi","nope"]})", kReadKey);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.body["documents"][0]["id"], "kiwi");
  EXPECT_EQ(a.body["not_found_ids"][0], "nope");
  a = Call(port, "ListCollections", "", kReadKey);  // an empty body is the empty request
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.body["collections"][0]["num_documents"], "4");

  // Status codes and messages.
  const auto expect_error = [&](const Answer& got, int status, const std::string& name,
                                const std::string& says) {
    EXPECT_EQ(got.status, status) << got.body;
    EXPECT_EQ(got.body["error"]["code"], status);
    EXPECT_EQ(got.body["error"]["status"], name);
    EXPECT_NE(got.body["error"]["message"].get<std::string>().find(says), std::string::npos)
        << got.body;
  };
  expect_error(Call(port, "GetCollection", R"({"name":"nope"})", kReadKey), 404, "NOT_FOUND",
               "nope");
  expect_error(Call(port, "CreateCollection", R"({"name":"fruit","config":{"dim":4}})", kWriteKey),
               409, "ALREADY_EXISTS", "fruit");
  expect_error(Call(port, "Search",
                    R"({"collection":"fruit","top_k":0,"vectors":{"pooled":[1,0,0,0]}})", kReadKey),
               400, "INVALID_ARGUMENT", "top_k");
  expect_error(Call(port, "Search", R"({"collection":"fruit","top_k":3,"text":"x"})", kReadKey),
               400, "FAILED_PRECONDITION", "encoder");
  expect_error(Call(port, "Search", R"({"collection":"fruit","bogus":1})", kReadKey), 400,
               "INVALID_ARGUMENT", "bogus");
  expect_error(Call(port, "Search", "{not json", kReadKey), 400, "INVALID_ARGUMENT", "body");
  expect_error(Call(port, "UpsertStream", R"({"collection":"fruit"})", kWriteKey), 400,
               "INVALID_ARGUMENT", "JSON array");
  expect_error(Call(port, "ListCollections", "{}", ""), 401, "UNAUTHENTICATED", "API key");
  // Without a valid key, a body is not read: the caller learns nothing of
  // what the API expects.
  expect_error(Call(port, "Search", "{not json", ""), 401, "UNAUTHENTICATED", "API key");
  expect_error(Call(port, "Search", R"({"bogus":1})", "not-a-key-of-this-server"), 401,
               "UNAUTHENTICATED", "not valid");
  expect_error(Call(port, "UpsertStream", "{not json", ""), 401, "UNAUTHENTICATED", "API key");
  expect_error(Call(port, "Delete", R"({"collection":"fruit","ids":["kiwi"]})", kReadKey), 403,
               "PERMISSION_DENIED", "");
  // The request id goes through and comes back; one the service would not
  // take (a space) is replaced by one it makes, as over gRPC.
  Answer named = Call(port, "ListCollections", "{}", kReadKey, "json-req-42");
  EXPECT_EQ(named.status, 200);
  EXPECT_NE(named.head.find("X-Request-Id: json-req-42\r\n"), std::string::npos) << named.head;
  Answer spaced = Call(port, "ListCollections", "{}", kReadKey, "two words");
  EXPECT_EQ(spaced.status, 200);
  EXPECT_NE(spaced.head.find("X-Request-Id: "), std::string::npos) << spaced.head;
  EXPECT_EQ(spaced.head.find("two words"), std::string::npos) << spaced.head;
  // GET of an RPC's path is not allowed; an unknown RPC is not found.
  const std::string get = testing::HttpExchange(
      port, "GET /v1/Search HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(get.substr(9, 3), "405") << get;
  // The HTTP server's own errors under /v1/ come in the same shape.
  const auto raw_error = [&](const std::string& request, int status, const std::string& name,
                             const std::string& says) {
    const std::string raw = testing::HttpExchange(port, request);
    ASSERT_GE(raw.size(), 12u) << raw;
    Answer got;
    got.status = std::stoi(raw.substr(9, 3));
    got.body = nlohmann::json::parse(raw.substr(raw.find("\r\n\r\n") + 4), nullptr, false);
    expect_error(got, status, name, says);
  };
  raw_error("GET /v1/Search HTTP/1.1\r\nHost: localhost\r\n\r\n", 405, "UNIMPLEMENTED",
            "GET is not allowed here; POST is");
  raw_error("POST /v1/ListCollections HTTP/1.1\r\nHost: localhost\r\n\r\n", 411, "INVALID_ARGUMENT",
            "Content-Length");
  const std::string huge(size_t(70) << 20, ' ');  // over --max_message_mb's 64 MiB
  raw_error("POST /v1/ListCollections HTTP/1.1\r\nContent-Length: " + std::to_string(huge.size()) +
                "\r\n\r\n" + huge,
            413, "RESOURCE_EXHAUSTED", "exceeds");
  // curl -d's form type, past cpp-httplib's 8 KiB for forms: read as JSON.
  const std::string padded = R"({"collection":"fruit","ids":["kiwi"]})" + std::string(20000, ' ');
  const std::string form = testing::HttpExchange(
      port,
      "POST /v1/Get HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
      "Authorization: Bearer " +
          std::string(kReadKey) + "\r\nContent-Length: " + std::to_string(padded.size()) +
          "\r\n\r\n" + padded);
  EXPECT_EQ(form.substr(9, 3), "200") << form.substr(0, 300);
  EXPECT_NE(form.find("\"kiwi\""), std::string::npos) << form.substr(0, 300);
  // Bytes that are not UTF-8 are a 400 in the same shape, not a 500.
  expect_error(Call(port, "Search", "{\"collection\":\"s\",\"text\":\"\xff\xfe\"}", kReadKey), 400,
               "INVALID_ARGUMENT", "body");
  expect_error(Call(port, "Search", "\xff\xfe{}", kReadKey), 400, "INVALID_ARGUMENT", "body");
  // UpsertStream names the bad element and says why.
  expect_error(Call(port, "UpsertStream",
                    R"([{"collection":"fruit"},{"collection":"fruit","x":1}])", kWriteKey),
               400, "INVALID_ARGUMENT", "body[1]: not a JSON UpsertRequest: ");
  expect_error(Call(port, "Nope", "{}", kWriteKey), 404, "NOT_FOUND", "no RPC at /v1/Nope");
  // Fields at their zero value are printed: a score of 0, an empty text.
  a = Call(port, "Search",
           R"({"collection":"fruit","vectors":{"pooled":[0,0,0,1]},"top_k":4,
               "rerank":"RERANK_MODE_NONE","include_text":true})",
           kReadKey);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(a.body["hits"].size(), 4u) << a.body;
  for (const auto& hit : a.body["hits"]) {
    EXPECT_TRUE(hit.contains("score")) << hit;
    EXPECT_TRUE(hit.contains("text")) << hit;
  }
  EXPECT_EQ(a.body["hits"][3]["score"].get<double>(), 0.0) << a.body;  // apple: orthogonal
}

namespace v1 = attnsearch::v1;
using Stub = v1::SearchService::Stub;

// Two servers given the same seeded calls, one over gRPC and one as JSON:
// Same() sends `req` both ways and expects the same answer (the same message,
// or the same error code and message), once `scrub` has cleared what varies
// from run to run (durations, disk and memory figures), and returns gRPC's.
class Twins {
 public:
  explicit Twins(testing::TempDir* dir) {
    address_ = grpc_server_.Start(dir->Sub("via_grpc"), {});
    json_server_.Start(dir->Sub("via_json"), {"--http_listen", "127.0.0.1:0"});
    stub_ = v1::SearchService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  int json_port() { return json_server_.server()->http_port(); }
  Stub* stub() { return stub_.get(); }

  template <class Req, class Resp>
  Resp Same(const std::string& rpc,
            grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req,
            const std::function<void(Resp*)>& scrub = nullptr) {
    SCOPED_TRACE(rpc);
    Resp via_grpc;
    grpc::ClientContext ctx;
    const grpc::Status status = (stub_.get()->*method)(&ctx, req, &via_grpc);
    std::string body;
    google::protobuf::util::JsonPrintOptions print;
    print.preserve_proto_field_names = true;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(req, &body, print).ok());
    Compare(status, &via_grpc, Call(json_port(), rpc, body, ""), scrub);
    return via_grpc;
  }

  template <class Resp>
  void Compare(const grpc::Status& status, Resp* via_grpc, const Answer& a,
               const std::function<void(Resp*)>& scrub) {
    if (!status.ok()) {
      EXPECT_EQ(a.status, HttpStatusOf(status.error_code())) << a.body;
      EXPECT_EQ(a.body["error"]["message"], status.error_message());
      return;
    }
    ASSERT_EQ(a.status, 200) << a.body;
    Resp via_json;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(a.body.dump(), &via_json).ok());
    if (scrub) {
      scrub(via_grpc);
      scrub(&via_json);
    }
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*via_grpc, via_json))
        << "gRPC:\n"
        << via_grpc->DebugString() << "JSON:\n"
        << via_json.DebugString();
  }

 private:
  testing::InProcessServer grpc_server_, json_server_;
  std::string address_;
  std::unique_ptr<Stub> stub_;
};

void ScrubInfo(v1::CollectionInfo* c) {
  c->clear_disk();
  c->clear_memory();
}

// Every RPC, on seeded text and vector collections: JSON over HTTP gives
// what gRPC gives.
TEST(JsonGatewayTest, JsonAndGrpcGiveTheSameAnswersForEveryRpc) {
  testing::TempDir dir;
  Twins twins(&dir);
  // A text collection and a vector collection with a residual codec, both
  // with exact (Flat) indexes so that the two servers' searches agree.
  v1::CreateCollectionRequest text;
  text.set_name("docs");
  text.mutable_config()->set_dim(256);
  text.mutable_config()->set_ann_spec("Flat");
  twins.Same<v1::CreateCollectionRequest, v1::CreateCollectionResponse>(
      "CreateCollection", &Stub::CreateCollection, text,
      [](v1::CreateCollectionResponse* r) { ScrubInfo(r->mutable_collection()); });
  constexpr uint32_t kDim = 8;
  v1::CreateCollectionRequest vecs;
  vecs.set_name("vecs");
  vecs.mutable_config()->set_dim(kDim);
  vecs.mutable_config()->set_ann_spec("Flat");
  vecs.mutable_config()->mutable_token_codec()->set_name("residual");
  vecs.mutable_config()->mutable_token_codec()->set_train_after_documents(0);
  twins.Same<v1::CreateCollectionRequest, v1::CreateCollectionResponse>(
      "CreateCollection", &Stub::CreateCollection, vecs,
      [](v1::CreateCollectionResponse* r) { ScrubInfo(r->mutable_collection()); });

  std::mt19937 rng(2026);
  const std::vector<std::string> words = {"wind", "turbine", "grid",   "oven", "bread", "flour",
                                          "ship", "anchor",  "harbor", "the",  "a",     "of"};
  v1::UpsertRequest texts;
  texts.set_collection("docs");
  for (int i = 0; i < 60; ++i) {
    std::string t;
    for (int w = 0; w < 10; ++w) t += (w ? " " : "") + words[(i % 3) * 3 + rng() % 3];
    v1::Document* d = texts.add_documents();
    d->set_id("t" + std::to_string(i));
    d->set_text(t + " " + words[9 + i % 3] + ".");
  }
  twins.Same<v1::UpsertRequest, v1::UpsertResponse>("Upsert", &Stub::Upsert, texts);
  std::normal_distribution<float> normal;
  auto vector_batch = [&](int first, int count) {
    v1::UpsertRequest r;
    r.set_collection("vecs");
    for (int i = first; i < first + count; ++i) {
      v1::Document* d = r.add_documents();
      d->set_id("v" + std::to_string(i));
      const uint32_t rows = 2 + uint32_t(i % 4);
      d->mutable_tokens()->set_rows(rows);
      d->mutable_tokens()->set_cols(kDim);
      for (uint32_t k = 0; k < rows * kDim; ++k) d->mutable_tokens()->add_values(normal(rng));
    }
    return r;
  };
  twins.Same<v1::UpsertRequest, v1::UpsertResponse>("Upsert", &Stub::Upsert, vector_batch(0, 150));

  // UpsertStream: a stream of batches, or their JSON array.
  const std::vector<v1::UpsertRequest> stream = {vector_batch(150, 30), vector_batch(180, 30)};
  {
    v1::UpsertResponse via_grpc;
    grpc::ClientContext ctx;
    auto writer = twins.stub()->UpsertStream(&ctx, &via_grpc);
    for (const auto& r : stream) ASSERT_TRUE(writer->Write(r));
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    std::string array = "[";
    for (const auto& r : stream) {
      std::string one;
      ASSERT_TRUE(google::protobuf::util::MessageToJsonString(r, &one).ok());
      array += (array.size() > 1 ? "," : "") + one;
    }
    twins.Compare<v1::UpsertResponse>(
        status, &via_grpc, Call(twins.json_port(), "UpsertStream", array + "]", ""), nullptr);
  }

  v1::TrainEncoderRequest train;
  train.set_collection("docs");
  twins.Same<v1::TrainEncoderRequest, v1::TrainEncoderResponse>(
      "TrainEncoder", &Stub::TrainEncoder, train, [](v1::TrainEncoderResponse* r) {
        r->clear_train_seconds();
        r->clear_reencode_seconds();
      });
  v1::TrainCodecRequest codec;
  codec.set_collection("vecs");
  twins.Same<v1::TrainCodecRequest, v1::TrainCodecResponse>("TrainCodec", &Stub::TrainCodec, codec,
                                                            [](v1::TrainCodecResponse* r) {
                                                              r->clear_train_seconds();
                                                              r->clear_encode_seconds();
                                                            });
  v1::TuneIndexRequest tune;
  tune.set_collection("docs");
  tune.set_target_recall(0.9);
  twins.Same<v1::TuneIndexRequest, v1::TuneIndexResponse>(
      "TuneIndex", &Stub::TuneIndex, tune, [](v1::TuneIndexResponse* r) { r->clear_seconds(); });

  const auto scrub_timing = [](v1::SearchResponse* r) { r->clear_timing(); };
  v1::SearchRequest by_text;
  by_text.set_collection("docs");
  by_text.set_text("wind turbine grid");
  by_text.set_top_k(5);
  by_text.set_explain(true);
  by_text.set_attention_map(true);
  by_text.set_include_text(true);
  const v1::SearchResponse found = twins.Same<v1::SearchRequest, v1::SearchResponse>(
      "Search", &Stub::Search, by_text, scrub_timing);
  ASSERT_EQ(found.hits_size(), 5);
  EXPECT_EQ(found.query_token_texts_size(), 3);
  EXPECT_GT(found.hits(0).attention().weights_size(), 0);
  v1::SearchRequest by_vectors;
  by_vectors.set_collection("vecs");
  by_vectors.set_top_k(5);
  by_vectors.set_rerank(v1::RERANK_MODE_MAXSIM);
  by_vectors.set_attention_map(true);
  by_vectors.mutable_vectors()->mutable_tokens()->set_rows(2);
  by_vectors.mutable_vectors()->mutable_tokens()->set_cols(kDim);
  for (uint32_t k = 0; k < 2 * kDim; ++k) {
    by_vectors.mutable_vectors()->mutable_tokens()->add_values(normal(rng));
  }
  twins.Same<v1::SearchRequest, v1::SearchResponse>("Search", &Stub::Search, by_vectors,
                                                    scrub_timing);
  v1::SearchRequest missing = by_text;
  missing.set_collection("nope");
  twins.Same<v1::SearchRequest, v1::SearchResponse>("Search", &Stub::Search, missing);

  v1::GetRequest get;
  get.set_collection("vecs");
  get.add_ids("v3");
  get.add_ids("ghost");
  get.set_include_vectors(true);
  twins.Same<v1::GetRequest, v1::GetResponse>("Get", &Stub::Get, get);
  v1::DeleteRequest del;
  del.set_collection("vecs");
  del.add_ids("v3");
  del.add_ids("ghost");
  twins.Same<v1::DeleteRequest, v1::DeleteResponse>("Delete", &Stub::Delete, del);
  v1::GetCollectionRequest info;
  info.set_name("vecs");
  twins.Same<v1::GetCollectionRequest, v1::GetCollectionResponse>(
      "GetCollection", &Stub::GetCollection, info,
      [](v1::GetCollectionResponse* r) { ScrubInfo(r->mutable_collection()); });
  twins.Same<v1::ListCollectionsRequest, v1::ListCollectionsResponse>(
      "ListCollections", &Stub::ListCollections, v1::ListCollectionsRequest(),
      [](v1::ListCollectionsResponse* r) {
        for (auto& c : *r->mutable_collections()) ScrubInfo(&c);
      });

  // Backup: each server to its own folder; the same collections and counts.
  {
    v1::BackupRequest backup;
    backup.set_destination(dir.Sub("backup_grpc"));
    v1::BackupResponse via_grpc;
    grpc::ClientContext ctx;
    const grpc::Status status = twins.stub()->Backup(&ctx, backup, &via_grpc);
    const std::string body = R"({"destination":")" + dir.Sub("backup_json") + R"("})";
    twins.Compare<v1::BackupResponse>(
        status, &via_grpc, Call(twins.json_port(), "Backup", body, ""), [](v1::BackupResponse* r) {
          r->clear_bytes();
          r->clear_elapsed_ms();
          r->clear_destination();
        });
  }
  v1::DropCollectionRequest drop;
  drop.set_name("docs");
  twins.Same<v1::DropCollectionRequest, v1::DropCollectionResponse>("DropCollection",
                                                                    &Stub::DropCollection, drop);
  twins.Same<v1::DropCollectionRequest, v1::DropCollectionResponse>("DropCollection",
                                                                    &Stub::DropCollection, drop);
}

// With the server's certificate the JSON API answers HTTPS only, and a
// client that trusts that certificate gets the same answers.
TEST(JsonGatewayTest, ServesHttpsWithTheServersCertificate) {
  testing::TempDir dir;
  const std::string cert = std::string(ATTN_TESTDATA_DIR) + "/server.crt";
  testing::InProcessServer server;
  ASSERT_FALSE(
      server
          .Start(dir.Sub("data"), {"--http_listen", "127.0.0.1:0", "--tls_cert", cert, "--tls_key",
                                   std::string(ATTN_TESTDATA_DIR) + "/server.key"})
          .empty());
  const int port = server.server()->http_port();
  httplib::SSLClient client("localhost", port);
  client.set_ca_cert_path(cert.c_str());
  client.enable_server_certificate_verification(true);
  auto created = client.Post("/v1/CreateCollection", R"({"name":"tls","config":{"dim":4}})",
                             "application/json");
  ASSERT_TRUE(created) << httplib::to_string(created.error());
  EXPECT_EQ(created->status, 200) << created->body;
  auto listed = client.Post("/v1/ListCollections", "{}", "application/json");
  ASSERT_TRUE(listed);
  EXPECT_EQ(nlohmann::json::parse(listed->body)["collections"][0]["name"], "tls");
  // Plain HTTP gets no answer from it.
  const Answer plain = Call(port, "ListCollections", "{}", "");
  EXPECT_EQ(plain.status, 0);
}

// The console's files, byte for byte as in the source tree, with no key even
// when the API needs one (the page asks for it), and a policy that keeps the
// page to its own origin.
TEST(JsonGatewayTest, ServesTheConsole) {
  testing::TempDir dir;
  const std::string keys = dir.Sub("keys");
  std::ofstream(keys) << kReadKey << " read\n";
  testing::InProcessServer server;
  ASSERT_FALSE(
      server.Start(dir.Sub("data"), {"--http_listen", "127.0.0.1:0", "--api_keys", keys}).empty());
  httplib::Client client("127.0.0.1", server.server()->http_port());
  ASSERT_GE(ConsoleFiles().size(), 3u);
  for (const EmbeddedFile& file : ConsoleFiles()) {
    const std::string name(file.name);
    std::ifstream source(std::string(ATTN_CONSOLE_DIR) + "/" + name, std::ios::binary);
    const std::string expected((std::istreambuf_iterator<char>(source)),
                               std::istreambuf_iterator<char>());
    ASSERT_FALSE(expected.empty()) << name;
    for (const std::string path : {"/" + name, name == "index.html" ? "/" : "/" + name}) {
      auto got = client.Get(path);
      ASSERT_TRUE(got) << path;
      EXPECT_EQ(got->status, 200) << path;
      EXPECT_EQ(got->body, expected) << path;
      EXPECT_EQ(got->get_header_value("Content-Type"), ConsoleContentType(name)) << path;
      EXPECT_NE(got->get_header_value("Content-Security-Policy").find("default-src 'none'"),
                std::string::npos)
          << path;
      EXPECT_EQ(got->get_header_value("X-Content-Type-Options"), "nosniff") << path;
    }
  }
  EXPECT_EQ(ConsoleContentType("console.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(client.Get("/nothing.js")->status, 404);
  EXPECT_EQ(client.Post("/", "{}", "application/json")->status, 405);
  // The API itself still wants the key.
  EXPECT_EQ(Call(server.server()->http_port(), "ListCollections", "{}", "").status, 401);
}

// An Authorization header with bytes gRPC does not allow in metadata (the
// console's key prompt takes any text) is a 401, with or without keys
// configured; it used to abort the server inside gRPC.
TEST(JsonGatewayTest, AnAuthorizationHeaderOutsidePrintableAsciiIsRefused) {
  for (const bool with_keys : {false, true}) {
    SCOPED_TRACE(with_keys ? "api keys" : "no api keys");
    testing::TempDir dir;
    const std::string keys = dir.Sub("keys");
    std::ofstream(keys) << kReadKey << " read\n";
    std::vector<std::string> flags = {"--http_listen", "127.0.0.1:0"};
    if (with_keys) flags.insert(flags.end(), {"--api_keys", keys});
    testing::InProcessServer server;
    ASSERT_FALSE(server.Start(dir.Sub("data"), flags).empty());
    const int port = server.server()->http_port();
    for (const std::string key : {std::string("k\xc3\xa9y-with-accent"), std::string("k\x01y"),
                                  std::string("\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87")}) {
      const Answer a = Call(port, "ListCollections", "{}", key);
      EXPECT_EQ(a.status, 401) << a.body;
      EXPECT_NE(a.body["error"]["message"].get<std::string>().find("printable ASCII"),
                std::string::npos)
          << a.body;
      EXPECT_EQ(Call(port, "UpsertStream", "[]", key).status, 401);
    }
    // Still serving.
    EXPECT_EQ(Call(port, "ListCollections", "{}", with_keys ? kReadKey : "").status, 200);
  }
}

TEST(JsonGatewayTest, StatusTableAndRefusedOptions) {
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::OK), 200);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::FAILED_PRECONDITION), 400);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::RESOURCE_EXHAUSTED), 429);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::UNAVAILABLE), 503);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::DEADLINE_EXCEEDED), 504);
  EXPECT_EQ(HttpStatusOf(grpc::StatusCode::DATA_LOSS), 500);
  ServerOptions o;
  o.data_dir = "/nonexistent";
  o.http_listen = "nowhere";
  absl::Status s = o.Validate();
  EXPECT_NE(s.message().find("http_listen"), std::string::npos) << s;
}

}  // namespace
}  // namespace attnsearch
