// The JSON API (server/json_gateway.h) on a real in-process server with API
// keys: every call is answered through the gRPC service, so it gives what a
// gRPC client gets (the ranking of the README's example, attention maps),
// maps status codes to HTTP statuses, refuses bad bodies naming them,
// checks the same keys, and serves HTTPS with the server's certificate. The
// same listener serves the web console's files (server/console.h).
#include "server/json_gateway.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "../http/http_exchange.h"
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
};

// POST /v1/<rpc> with `body` (and the key, if any).
Answer Call(int port, const std::string& rpc, const std::string& body, const std::string& key) {
  std::string request =
      "POST /v1/" + rpc + " HTTP/1.1\r\nHost: localhost\r\n" +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (!key.empty()) request += "Authorization: Bearer " + key + "\r\n";
  request += "Connection: close\r\n\r\n" + body;
  const std::string raw = testing::HttpExchange(port, request);
  Answer a;
  if (raw.size() < 12) return a;
  a.status = std::stoi(raw.substr(9, 3));
  const size_t start = raw.find("\r\n\r\n");
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
  expect_error(Call(port, "Delete", R"({"collection":"fruit","ids":["kiwi"]})", kReadKey), 403,
               "PERMISSION_DENIED", "");
  // GET of an RPC's path is not allowed; an unknown RPC is not found.
  const std::string get = testing::HttpExchange(
      port, "GET /v1/Search HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(get.substr(9, 3), "405") << get;
  EXPECT_EQ(Call(port, "Nope", "{}", kWriteKey).status, 404);
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
