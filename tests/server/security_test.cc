// Security of attnsearch-server over real loopback connections: API keys
// (none, wrong, read-only on every write RPC, write), key files with bad
// lines, TLS with a self-signed certificate (testdata/server.crt, made with
// openssl; a plaintext client and a client trusting another certificate
// fail), keys never in messages or logs, the health service open to all,
// and the command-line clients (attnsearch-index, attnsearch-demo) with
// --api_key_file / ATTNSEARCH_API_KEY and --tls_ca.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/grpc_status_matchers.h"
#include "server/server_process.h"
#include "test_util.h"

#ifndef ATTN_TESTDATA_DIR
#error "ATTN_TESTDATA_DIR must name tests/server/testdata"
#endif

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
using grpc::StatusCode;

constexpr char kReadKey[] = "read-key-0123456789abcdef";
constexpr char kWriteKey[] = "write-key-fedcba9876543210";
constexpr char kWrongKey[] = "wrong-key-0000000000000000";
constexpr uint32_t kDim = 4;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string TestData(const std::string& name) {
  return std::string(ATTN_TESTDATA_DIR) + "/" + name;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> creds) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, creds, args);
}

std::shared_ptr<grpc::ChannelCredentials> TrustingCert(const std::string& file) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(TestData(file));
  return grpc::SslCredentials(ssl);
}

// A client context with a deadline and, unless empty, `key` as a bearer
// token.
std::unique_ptr<grpc::ClientContext> Context(
    const std::string& key, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!key.empty()) ctx->AddMetadata("authorization", "Bearer " + key);
  return ctx;
}

v1::Document Doc(const std::string& id) {
  v1::Document d;
  d.set_id(id);
  d.set_text("text of " + id);
  std::mt19937 rng(std::hash<std::string>()(id));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (uint32_t k = 0; k < kDim; ++k) d.add_pooled(u(rng));
  return d;
}

// Every RPC once, with `key`; the status of each, by name.
// `backup_dest` is the Backup call's destination (must not exist).
std::vector<std::pair<std::string, grpc::Status>> CallEveryRpc(v1::SearchService::Stub* stub,
                                                               const std::string& key,
                                                               const std::string& collection,
                                                               const std::string& backup_dest) {
  std::vector<std::pair<std::string, grpc::Status>> out;
  {
    v1::CreateCollectionRequest req;
    req.set_name(collection);
    req.mutable_config()->set_dim(kDim);
    req.mutable_config()->set_ann_spec("Flat");
    v1::CreateCollectionResponse resp;
    out.emplace_back("CreateCollection", stub->CreateCollection(Context(key).get(), req, &resp));
  }
  {
    v1::GetCollectionRequest req;
    req.set_name(collection);
    v1::GetCollectionResponse resp;
    out.emplace_back("GetCollection", stub->GetCollection(Context(key).get(), req, &resp));
  }
  {
    v1::ListCollectionsResponse resp;
    out.emplace_back("ListCollections", stub->ListCollections(Context(key).get(), {}, &resp));
  }
  {
    v1::UpsertRequest req;
    req.set_collection(collection);
    *req.add_documents() = Doc("u1");
    v1::UpsertResponse resp;
    out.emplace_back("Upsert", stub->Upsert(Context(key).get(), req, &resp));
  }
  {
    auto ctx = Context(key);
    v1::UpsertResponse resp;
    auto writer = stub->UpsertStream(ctx.get(), &resp);
    v1::UpsertRequest req;
    req.set_collection(collection);
    *req.add_documents() = Doc("s1");
    writer->Write(req);
    writer->WritesDone();
    out.emplace_back("UpsertStream", writer->Finish());
  }
  {
    v1::GetRequest req;
    req.set_collection(collection);
    req.add_ids("u1");
    v1::GetResponse resp;
    out.emplace_back("Get", stub->Get(Context(key).get(), req, &resp));
  }
  {
    v1::SearchRequest req;
    req.set_collection(collection);
    for (uint32_t k = 0; k < kDim; ++k) req.mutable_vectors()->add_pooled(k == 0 ? 1.f : 0.f);
    req.set_top_k(1);
    v1::SearchResponse resp;
    out.emplace_back("Search", stub->Search(Context(key).get(), req, &resp));
  }
  {
    v1::TuneIndexRequest req;
    req.set_collection(collection);
    req.set_target_recall(0.9);
    v1::TuneIndexResponse resp;
    out.emplace_back("TuneIndex", stub->TuneIndex(Context(key).get(), req, &resp));
  }
  {
    v1::TrainEncoderRequest req;
    req.set_collection(collection);
    v1::TrainEncoderResponse resp;
    out.emplace_back("TrainEncoder", stub->TrainEncoder(Context(key).get(), req, &resp));
  }
  {
    v1::TrainCodecRequest req;
    req.set_collection(collection);
    v1::TrainCodecResponse resp;
    out.emplace_back("TrainCodec", stub->TrainCodec(Context(key).get(), req, &resp));
  }
  {
    v1::DeleteRequest req;
    req.set_collection(collection);
    req.add_ids("u1");
    v1::DeleteResponse resp;
    out.emplace_back("Delete", stub->Delete(Context(key).get(), req, &resp));
  }
  {
    v1::BackupRequest req;
    req.set_destination(backup_dest);
    req.set_collection(collection);
    v1::BackupResponse resp;
    out.emplace_back("Backup", stub->Backup(Context(key).get(), req, &resp));
  }
  {
    v1::DropCollectionRequest req;
    req.set_name(collection);
    v1::DropCollectionResponse resp;
    out.emplace_back("DropCollection", stub->DropCollection(Context(key).get(), req, &resp));
  }
  return out;
}

bool IsWriteRpc(const std::string& rpc) {
  return rpc == "CreateCollection" || rpc == "DropCollection" || rpc == "Upsert" ||
         rpc == "UpsertStream" || rpc == "Delete" || rpc == "TrainEncoder" || rpc == "TuneIndex" ||
         rpc == "TrainCodec" || rpc == "Backup";
}

// grpc.health.v1.Health/Check for the whole server, without a key; the
// response's bytes ("\x08\x01": SERVING).
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, std::string* response) {
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty("");
  const grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer reply;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &reply,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status s = done.get_future().get();
  std::vector<grpc::Slice> slices;
  response->clear();
  if (s.ok() && reply.Dump(&slices).ok()) {
    for (const auto& sl : slices)
      response->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  return s;
}

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_file_ = dir_.Sub("keys.txt");
    WriteFile(keys_file_,
              std::string("# test keys\n\n") + kReadKey + " read\n  " + kWriteKey + "\twrite  \n");
    log_file_ = dir_.Sub("server.stderr");
  }

  // Starts the server with `extra` flags, its stderr going to log_file_.
  std::string Start(const std::vector<std::string>& extra) {
    std::string address;
    WithStderrTo(log_file_, [&] { address = server_.Start(dir_.Sub("data"), extra); });
    return address;
  }

  void ExpectNoKeyInLog() {
    server_.Kill(SIGTERM);
    server_.Wait();
    const std::string log = ReadFile(log_file_);
    EXPECT_EQ(log.find("key-"), std::string::npos) << log;
    EXPECT_NE(log.find("\"msg\":\"stopped\""), std::string::npos) << log;
  }

  TempDir dir_;
  std::string keys_file_;
  std::string log_file_;
  ServerProcess server_;
};

TEST_F(SecurityTest, ApiKeysGateEveryRpc) {
  const std::string address = Start({"--api_keys", keys_file_, "--log_calls", "all"});
  ASSERT_FALSE(address.empty());
  auto stub = v1::SearchService::NewStub(Channel(address, grpc::InsecureChannelCredentials()));

  for (const std::string key : {std::string(), std::string(kWrongKey), std::string("short")}) {
    SCOPED_TRACE("key '" + key + "'");
    for (const auto& [rpc, status] :
         CallEveryRpc(stub.get(), key, "c", dir_.Sub("backup-denied"))) {
      EXPECT_EQ(status.error_code(), StatusCode::UNAUTHENTICATED)
          << rpc << ": " << status.error_message();
      EXPECT_EQ(status.error_message().find(kWrongKey), std::string::npos);
    }
  }
  {
    SCOPED_TRACE("not a bearer token");
    auto ctx = Context("");
    ctx->AddMetadata("authorization", kWriteKey);
    v1::ListCollectionsResponse resp;
    EXPECT_EQ(stub->ListCollections(ctx.get(), {}, &resp).error_code(),
              StatusCode::UNAUTHENTICATED);
  }
  // The write key may do everything (the collection exists from now on).
  for (const auto& [rpc, status] :
       CallEveryRpc(stub.get(), kWriteKey, "c", dir_.Sub("backup-write"))) {
    if (rpc == "TrainEncoder" || rpc == "TrainCodec") {
      // Admitted; the engine answers (nothing to train the encoder on; a
      // rows collection has no codec to train). TuneIndex succeeds: an
      // index searched exactly so far has nothing to tune.
      EXPECT_EQ(status.error_code(), StatusCode::FAILED_PRECONDITION)
          << rpc << ": " << status.error_message();
      continue;
    }
    EXPECT_TRUE(status.ok()) << rpc << ": " << int(status.error_code()) << " "
                             << status.error_message();
  }
  // Make a collection with a document for the read key to see.
  {
    v1::UpsertRequest req;
    req.set_collection("kept");
    v1::CreateCollectionRequest create;
    create.set_name("kept");
    create.mutable_config()->set_dim(kDim);
    v1::CreateCollectionResponse cresp;
    ASSERT_OK(stub->CreateCollection(Context(kWriteKey).get(), create, &cresp));
    *req.add_documents() = Doc("u1");
    v1::UpsertResponse resp;
    ASSERT_OK(stub->Upsert(Context(kWriteKey).get(), req, &resp));
  }
  // The read key: reads pass, writes are PERMISSION_DENIED and change nothing.
  for (const auto& [rpc, status] :
       CallEveryRpc(stub.get(), kReadKey, "kept", dir_.Sub("backup-read"))) {
    if (IsWriteRpc(rpc)) {
      EXPECT_EQ(status.error_code(), StatusCode::PERMISSION_DENIED)
          << rpc << ": " << status.error_message();
    } else {
      EXPECT_TRUE(status.ok()) << rpc << ": " << status.error_message();
    }
    EXPECT_EQ(status.error_message().find("key-"), std::string::npos) << status.error_message();
  }
  v1::GetRequest get;
  get.set_collection("kept");
  get.add_ids("u1");
  get.add_ids("s1");
  v1::GetResponse got;
  ASSERT_OK(stub->Get(Context(kReadKey).get(), get, &got));
  ASSERT_EQ(got.documents_size(), 1);  // the read key's Upsert/UpsertStream/Delete did nothing
  EXPECT_EQ(got.documents(0).id(), "u1");

  // The health service needs no key.
  std::string health;
  ASSERT_OK(HealthCheck(Channel(address, grpc::InsecureChannelCredentials()), &health));
  EXPECT_EQ(health, std::string("\x08\x01", 2));  // SERVING
  ExpectNoKeyInLog();
  // ... although every call, refused or not, was logged.
  const std::string log = ReadFile(log_file_);
  EXPECT_NE(log.find("\"code\":\"UNAUTHENTICATED\""), std::string::npos);
  EXPECT_NE(log.find("\"code\":\"PERMISSION_DENIED\""), std::string::npos);
  EXPECT_NE(log.find("\"rpc\":\"UpsertStream\""), std::string::npos);
}

TEST_F(SecurityTest, BadKeyFilesStopTheServerNamingTheLine) {
  struct Case {
    std::string text;
    std::string where;  // expected in the error
  };
  const std::vector<Case> cases = {
      {std::string(kReadKey) + " read\n" + kWriteKey + " admin\n", ":2:"},
      {std::string("# comment\n") + kReadKey + "\n", ":2:"},
      {std::string(kReadKey) + " read extra\n", ":1:"},
      {"tooshort-key read\n", ":1:"},
      {std::string(kReadKey) + " read\n" + kReadKey + " write\n", ":2:"},
      {"# only comments\n\n", "no API key"},
      {std::string(kReadKey) + "\x01xx read\n", ":1:"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const std::string file = dir_.Sub("bad" + std::to_string(i) + ".txt");
    WriteFile(file, cases[i].text);
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"), {ATTN_SERVER_BINARY, "--data_dir", dir_.Sub("data"),
                                        "--listen", "127.0.0.1:0", "--api_keys", file});
    EXPECT_EQ(run.exit_code(), 2) << run.output;
    EXPECT_NE(run.output.find(file), std::string::npos) << run.output;
    EXPECT_NE(run.output.find(cases[i].where), std::string::npos) << run.output;
    EXPECT_EQ(run.output.find("key-"), std::string::npos) << "a key leaked: " << run.output;
    EXPECT_EQ(run.output.find("listening"), std::string::npos) << run.output;
  }
  const ProcessRun missing = RunBinary(
      dir_.Sub("run.out"), {ATTN_SERVER_BINARY, "--data_dir", dir_.Sub("data"), "--listen",
                            "127.0.0.1:0", "--api_keys", dir_.Sub("no_such_file")});
  EXPECT_EQ(missing.exit_code(), 2) << missing.output;
  EXPECT_NE(missing.output.find("no_such_file"), std::string::npos) << missing.output;
  const ProcessRun half_tls = RunBinary(
      dir_.Sub("run.out"), {ATTN_SERVER_BINARY, "--data_dir", dir_.Sub("data"), "--listen",
                            "127.0.0.1:0", "--tls_cert", TestData("server.crt")});
  EXPECT_EQ(half_tls.exit_code(), 2) << half_tls.output;
  // A certificate with another's key, or the two swapped: unusable files
  // (exit 2, both named), not "cannot listen".
  for (const auto& [cert, key] : std::vector<std::pair<std::string, std::string>>{
           {"other.crt", "server.key"}, {"server.key", "server.crt"}}) {
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"),
                  {ATTN_SERVER_BINARY, "--data_dir", dir_.Sub("data"), "--listen", "127.0.0.1:0",
                   "--tls_cert", TestData(cert), "--tls_key", TestData(key)});
    EXPECT_EQ(run.exit_code(), 2) << cert << " " << key << ": " << run.output;
    EXPECT_NE(run.output.find("do not load as a PEM certificate chain and its private key"),
              std::string::npos)
        << run.output;
    EXPECT_NE(run.output.find(TestData(key)), std::string::npos) << run.output;
  }
}

TEST_F(SecurityTest, TlsWithASelfSignedCertificate) {
  const std::string address = Start({"--tls_cert", TestData("server.crt"), "--tls_key",
                                     TestData("server.key"), "--api_keys", keys_file_});
  ASSERT_FALSE(address.empty());
  {
    SCOPED_TRACE("TLS client trusting the certificate, with the write key");
    auto stub = v1::SearchService::NewStub(Channel(address, TrustingCert("server.crt")));
    v1::CreateCollectionRequest req;
    req.set_name("t");
    req.mutable_config()->set_dim(kDim);
    v1::CreateCollectionResponse resp;
    ASSERT_OK(stub->CreateCollection(Context(kWriteKey).get(), req, &resp));
    v1::ListCollectionsResponse list;
    ASSERT_OK(stub->ListCollections(Context(kReadKey).get(), {}, &list));
    EXPECT_EQ(list.collections_size(), 1);
    // ... and without a key: UNAUTHENTICATED over TLS too.
    EXPECT_EQ(stub->ListCollections(Context("").get(), {}, &list).error_code(),
              StatusCode::UNAUTHENTICATED);
  }
  {
    SCOPED_TRACE("plaintext client against the TLS server");
    auto stub = v1::SearchService::NewStub(Channel(address, grpc::InsecureChannelCredentials()));
    v1::ListCollectionsResponse list;
    const grpc::Status s =
        stub->ListCollections(Context(kReadKey, std::chrono::seconds(5)).get(), {}, &list);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(list.collections_size(), 0);
  }
  {
    SCOPED_TRACE("TLS client trusting another certificate");
    auto stub = v1::SearchService::NewStub(Channel(address, TrustingCert("other.crt")));
    v1::ListCollectionsResponse list;
    const grpc::Status s =
        stub->ListCollections(Context(kReadKey, std::chrono::seconds(5)).get(), {}, &list);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(list.collections_size(), 0);
  }
  ExpectNoKeyInLog();
}

TEST_F(SecurityTest, CommandLineClientsUseKeyFileEnvAndCa) {
  const std::string address = Start({"--tls_cert", TestData("server.crt"), "--tls_key",
                                     TestData("server.key"), "--api_keys", keys_file_});
  ASSERT_FALSE(address.empty());
  // A JSON lines corpus with vectors.
  std::string corpus;
  for (int i = 0; i < 40; ++i) {
    corpus += "{\"id\":\"d" + std::to_string(i) + "\",\"pooled\":[";
    for (uint32_t k = 0; k < kDim; ++k) {
      corpus += (k ? "," : "") + std::to_string((i * 7 + k * 3) % 11 - 5 + 0.5);
    }
    corpus += "]}\n";
  }
  const std::string input = dir_.Sub("in.jsonl");
  WriteFile(input, corpus);
  const std::string write_key_file = dir_.Sub("write.key");
  WriteFile(write_key_file, std::string("# the loader's key\n") + kWriteKey + "\n");
  const std::vector<std::string> base = {
      ATTN_INDEXER_BINARY, input,   "--collection", "loaded",
      "--server",          address, "--dim",        std::to_string(kDim),
      "--progress",        "off",   "--checkpoint", dir_.Sub("load.progress")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  {
    SCOPED_TRACE("indexer without a key");
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"), with({"--tls_ca", TestData("server.crt")}));
    EXPECT_NE(run.exit_code(), 0) << run.output;
  }
  {
    SCOPED_TRACE("indexer with the read key from the environment");
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"), with({"--tls_ca", TestData("server.crt")}),
                  {std::string("ATTNSEARCH_API_KEY=") + kReadKey});
    EXPECT_NE(run.exit_code(), 0) << run.output;
    EXPECT_EQ(run.output.find(kReadKey), std::string::npos) << run.output;
  }
  {
    SCOPED_TRACE("indexer with the write key file over TLS");
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"),
                  with({"--tls_ca", TestData("server.crt"), "--api_key_file", write_key_file}));
    EXPECT_EQ(run.exit_code(), 0) << run.output;
    EXPECT_EQ(run.output.find(kWriteKey), std::string::npos) << run.output;
  }
  {
    SCOPED_TRACE("indexer with an unreadable key file");
    const ProcessRun run = RunBinary(
        dir_.Sub("run.out"),
        with({"--tls_ca", TestData("server.crt"), "--api_key_file", dir_.Sub("missing.key")}));
    EXPECT_NE(run.exit_code(), 0) << run.output;
    EXPECT_NE(run.output.find("missing.key"), std::string::npos) << run.output;
  }
  auto stub = v1::SearchService::NewStub(Channel(address, TrustingCert("server.crt")));
  v1::GetCollectionRequest req;
  req.set_name("loaded");
  v1::GetCollectionResponse resp;
  ASSERT_OK(stub->GetCollection(Context(kReadKey).get(), req, &resp));
  EXPECT_EQ(resp.collection().num_documents(), 40u);
  {
    SCOPED_TRACE("demo (vector mode) with the write key from the environment over TLS");
    const ProcessRun run = RunBinary(dir_.Sub("run.out"),
                                     {ATTN_DEMO_BINARY, "--server", address, "--collection", "demo",
                                      "--documents", "300", "--tls_ca", TestData("server.crt")},
                                     {std::string("ATTNSEARCH_API_KEY=") + kWriteKey});
    EXPECT_EQ(run.exit_code(), 0) << run.output;
  }
  {
    SCOPED_TRACE("demo (vector mode) on a collection that exists: left alone");
    const ProcessRun run =
        RunBinary(dir_.Sub("run.out"),
                  {ATTN_DEMO_BINARY, "--server", address, "--collection", "loaded", "--documents",
                   "30", "--tls_ca", TestData("server.crt")},
                  {std::string("ATTNSEARCH_API_KEY=") + kWriteKey});
    EXPECT_EQ(run.exit_code(), 1) << run.output;
    EXPECT_NE(run.output.find("collection 'loaded' exists; nothing was changed"), std::string::npos)
        << run.output;
    v1::GetCollectionResponse again;
    ASSERT_OK(stub->GetCollection(Context(kReadKey).get(), req, &again));
    EXPECT_EQ(again.collection().num_documents(), 40u);
    EXPECT_EQ(again.collection().config().dim(), resp.collection().config().dim());
  }
  {
    SCOPED_TRACE("demo without TLS against the TLS server");
    const ProcessRun run = RunBinary(
        dir_.Sub("run.out"),
        {ATTN_DEMO_BINARY, "--server", address, "--collection", "demo2", "--documents", "10"},
        {std::string("ATTNSEARCH_API_KEY=") + kWriteKey});
    EXPECT_NE(run.exit_code(), 0) << run.output;
  }
  ExpectNoKeyInLog();
}

}  // namespace
}  // namespace attnsearch::testing
