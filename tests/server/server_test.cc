// Integration tests of the server: every RPC is exercised over a real gRPC
// channel on an ephemeral loopback port: happy paths, a search oracle, bad
// inputs, stream errors, deadlines, crash durability, graceful shutdown,
// health and reflection. ServerTest runs the server in-process
// (InProcessServer, with the binary's flags; its restarts are graceful
// stops); ProcessServerTest runs the attnsearch-server binary as a child
// (ServerProcess) for what needs a process boundary: SIGKILL durability
// and the binary's own exit on SIGTERM.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "core/vector_math.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "rerank/reference.h"
#include "server/grpc_status_matchers.h"
#include "server/in_process_server.h"
#include "server/server_process.h"
#include "test_util.h"

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
using grpc::StatusCode;

constexpr auto kCallTimeout = std::chrono::seconds(30);
// bf16 keeps 8 significant bits: a unit vector's components come back within
// 2^-9 relative, i.e. < 2e-3 absolute.
constexpr float kBf16Tolerance = 4e-3f;

// ---------------------------------------------------------------------------
// Vectors and documents.

std::vector<float> Normalized(std::vector<float> v) {
  double ss = 0;
  for (float x : v) ss += double(x) * x;
  const double inv = 1.0 / std::sqrt(ss);
  for (float& x : v) x = float(x * inv);
  return v;
}

std::vector<float> Scaled(std::vector<float> v, float s) {
  for (float& x : v) x *= s;
  return v;
}

// Normalised mean of the rows of a row-major matrix.
std::vector<float> PooledOf(const std::vector<float>& rows, uint32_t dim) {
  std::vector<float> mean(dim, 0.f);
  const size_t n = rows.size() / dim;
  for (size_t r = 0; r < n; ++r) {
    for (uint32_t k = 0; k < dim; ++k) mean[k] += rows[r * dim + k];
  }
  return Normalized(mean);
}

// Each row normalised.
std::vector<float> NormalizedRows(const std::vector<float>& rows, uint32_t dim) {
  std::vector<float> out;
  for (size_t r = 0; r * dim < rows.size(); ++r) {
    auto row = Normalized({rows.begin() + long(r * dim), rows.begin() + long((r + 1) * dim)});
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

double Dot(const float* a, const float* b, uint32_t dim) {
  double s = 0;
  for (uint32_t k = 0; k < dim; ++k) s += double(a[k]) * b[k];
  return s;
}

using StringMap = std::map<std::string, std::string>;
StringMap ToMap(const google::protobuf::Map<std::string, std::string>& m) {
  return {m.begin(), m.end()};
}

std::vector<float> Values(const google::protobuf::RepeatedField<float>& f) {
  return {f.begin(), f.end()};
}

void SetMatrix(v1::Matrix* m, uint32_t rows, uint32_t cols, const std::vector<float>& values) {
  m->set_rows(rows);
  m->set_cols(cols);
  m->mutable_values()->Assign(values.begin(), values.end());
}

// A seeded document "id": `tokens` token rows (0: none) with token texts, a
// pooled vector when `with_pooled`, text and metadata. The vectors are
// deliberately not unit length (the server normalises them).
v1::Document MakeDoc(std::mt19937& rng, const std::string& id, uint32_t dim, uint32_t tokens,
                     bool with_pooled, const std::map<std::string, std::string>& metadata = {}) {
  v1::Document d;
  d.set_id(id);
  d.set_text("text of " + id);
  (*d.mutable_metadata())["id"] = id;
  for (const auto& [k, v] : metadata) (*d.mutable_metadata())[k] = v;
  if (with_pooled) {
    auto p = Scaled(RandomUnitRows(rng, 1, dim), 3.f);
    d.mutable_pooled()->Assign(p.begin(), p.end());
  }
  if (tokens > 0) {
    SetMatrix(d.mutable_tokens(), tokens, dim, Scaled(RandomUnitRows(rng, tokens, dim), 0.5f));
    for (uint32_t j = 0; j < tokens; ++j) d.add_token_texts(id + "/t" + std::to_string(j));
  }
  return d;
}

// What the server stores for `sent`: unit pooled vector (derived from the
// tokens when absent) and unit token rows (the pooled vector as one token
// when absent).
struct Expected {
  std::vector<float> pooled;
  uint32_t rows = 0;
  std::vector<float> tokens;
};

Expected ExpectedVectors(const v1::Document& sent, uint32_t dim) {
  Expected e;
  const auto tokens = Values(sent.tokens().values());
  e.pooled = sent.pooled_size() > 0 ? Normalized(Values(sent.pooled())) : PooledOf(tokens, dim);
  if (sent.tokens().rows() > 0) {
    e.rows = sent.tokens().rows();
    e.tokens = NormalizedRows(tokens, dim);
  } else {
    e.rows = 1;
    e.tokens = e.pooled;
  }
  return e;
}

// Checks a document returned by Get against what was sent.
void ExpectStoredDocument(const v1::Document& got, const v1::Document& sent, uint32_t dim,
                          bool include_vectors, float token_tolerance) {
  SCOPED_TRACE("document " + sent.id());
  EXPECT_EQ(got.id(), sent.id());
  EXPECT_EQ(got.text(), sent.text());
  EXPECT_EQ(ToMap(got.metadata()), ToMap(sent.metadata()));
  EXPECT_EQ(std::vector<std::string>(got.token_texts().begin(), got.token_texts().end()),
            std::vector<std::string>(sent.token_texts().begin(), sent.token_texts().end()));
  if (!include_vectors) {
    EXPECT_EQ(got.pooled_size(), 0);
    EXPECT_EQ(got.tokens().values_size(), 0);
    return;
  }
  const Expected e = ExpectedVectors(sent, dim);
  ASSERT_EQ(got.pooled_size(), int(dim));
  for (uint32_t k = 0; k < dim; ++k) EXPECT_NEAR(got.pooled(int(k)), e.pooled[k], 1e-5f) << k;
  EXPECT_NEAR(Dot(got.pooled().data(), got.pooled().data(), dim), 1.0, 1e-5);
  ASSERT_EQ(got.tokens().rows(), e.rows);
  ASSERT_EQ(got.tokens().cols(), dim);
  ASSERT_EQ(got.tokens().values_size(), int(e.rows * dim));
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    EXPECT_NEAR(got.tokens().values(int(i)), e.tokens[i], token_tolerance) << i;
  }
  for (uint32_t r = 0; r < e.rows; ++r) {  // rows are unit length
    const float* row = got.tokens().values().data() + size_t(r) * dim;
    EXPECT_NEAR(Dot(row, row, dim), 1.0, 2 * token_tolerance) << "row " << r;
  }
}

// ---------------------------------------------------------------------------
// The reference scorer (rerank/reference.h) with uniform query weights.

double ReferenceScore(const std::vector<float>& q, uint32_t m, const std::vector<float>& d,
                      uint32_t n, uint32_t dim, v1::RerankMode mode, double tau) {
  const std::vector<float> weights(m, 1.f / float(m));
  return attnsearch::ReferenceScore(
      q.data(), m, weights.data(), d.data(), n, dim,
      mode == v1::RERANK_MODE_MAXSIM ? RerankMode::kMaxSim : RerankMode::kAttention, float(tau));
}

// ---------------------------------------------------------------------------
// Fixture: one server per test on its own data directory, run by `Runner`
// (InProcessServer or ServerProcess).

template <typename Runner>
class ServerTestBase : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  // (Re)starts the server on the fixture's data directory.
  void StartServer(const std::vector<std::string>& extra = {}) {
    const std::string address = server_.Start(dir_.path(), extra);
    ASSERT_FALSE(address.empty());
    channel_ = NewServerChannel(address);
    stub_ = NewSearchStub(channel_);
  }

  // Stops the server with `sig` and returns its wait status.
  int StopServer(int sig) {
    stub_.reset();
    channel_.reset();
    EXPECT_TRUE(server_.Kill(sig));
    return server_.Wait();
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  }

  template <typename Req, typename Resp>
  using Method = grpc::Status (v1::SearchService::Stub::*)(grpc::ClientContext*, const Req&, Resp*);
  template <typename Req, typename Resp>
  grpc::Status Call(Method<Req, Resp> method, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return (stub_.get()->*method)(&ctx, req, resp);
  }

  grpc::Status Create(const std::string& name, uint32_t dim, v1::TokenDtype dtype,
                      const std::string& ann_spec, v1::CreateCollectionResponse* resp = nullptr) {
    v1::CreateCollectionRequest req;
    req.set_name(name);
    req.mutable_config()->set_dim(dim);
    req.mutable_config()->set_token_dtype(dtype);
    req.mutable_config()->set_ann_spec(ann_spec);
    v1::CreateCollectionResponse local;
    return Call(&v1::SearchService::Stub::CreateCollection, req, resp ? resp : &local);
  }

  grpc::Status GetCollection(const std::string& name, v1::CollectionInfo* info = nullptr) {
    v1::GetCollectionRequest req;
    req.set_name(name);
    v1::GetCollectionResponse resp;
    grpc::Status s = Call(&v1::SearchService::Stub::GetCollection, req, &resp);
    if (info) *info = resp.collection();
    return s;
  }

  grpc::Status List(v1::ListCollectionsResponse* resp) {
    return Call(&v1::SearchService::Stub::ListCollections, v1::ListCollectionsRequest(), resp);
  }

  grpc::Status Drop(const std::string& name) {
    v1::DropCollectionRequest req;
    req.set_name(name);
    v1::DropCollectionResponse resp;
    return Call(&v1::SearchService::Stub::DropCollection, req, &resp);
  }

  grpc::Status Upsert(const std::string& collection, const std::vector<v1::Document>& docs,
                      uint64_t* upserted = nullptr) {
    v1::UpsertResponse resp;
    grpc::Status s =
        Call(&v1::SearchService::Stub::Upsert, MakeUpsertRequest(collection, docs), &resp);
    if (upserted) *upserted = resp.upserted();
    return s;
  }

  grpc::Status Get(const std::string& collection, const std::vector<std::string>& ids,
                   bool include_vectors, v1::GetResponse* resp) {
    v1::GetRequest req;
    req.set_collection(collection);
    for (const auto& id : ids) req.add_ids(id);
    req.set_include_vectors(include_vectors);
    return Call(&v1::SearchService::Stub::Get, req, resp);
  }

  grpc::Status Delete(const std::string& collection, const std::vector<std::string>& ids,
                      v1::DeleteResponse* resp) {
    v1::DeleteRequest req;
    req.set_collection(collection);
    for (const auto& id : ids) req.add_ids(id);
    return Call(&v1::SearchService::Stub::Delete, req, resp);
  }

  grpc::Status Search(const v1::SearchRequest& req, v1::SearchResponse* resp) {
    return Call(&v1::SearchService::Stub::Search, req, resp);
  }
  // The ids a search finds (a failed search is recorded and finds none).
  std::set<std::string> SearchIds(const v1::SearchRequest& req) {
    v1::SearchResponse resp;
    const grpc::Status s = Search(req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::set<std::string> ids;
    for (const auto& h : resp.hits()) ids.insert(h.id());
    return ids;
  }

  // Streams `messages` (each one UpsertRequest); writes after the server has
  // ended the call fail and are ignored.
  grpc::Status UpsertStream(const std::vector<v1::UpsertRequest>& messages,
                            v1::UpsertResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto writer = stub_->UpsertStream(&ctx, resp);
    for (const auto& m : messages) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  uint64_t NumDocuments(const std::string& collection) {
    v1::CollectionInfo info;
    const grpc::Status s = GetCollection(collection, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info.num_documents();
  }

  // A search request for `collection` with the given query vectors.
  static v1::SearchRequest SearchRequestFor(const std::string& collection,
                                            const std::vector<float>& pooled, uint32_t m,
                                            const std::vector<float>& tokens, uint32_t dim,
                                            uint32_t top_k) {
    v1::SearchRequest req;
    req.set_collection(collection);
    v1::QueryVectors* v = req.mutable_vectors();
    v->mutable_pooled()->Assign(pooled.begin(), pooled.end());
    if (m > 0) SetMatrix(v->mutable_tokens(), m, dim, tokens);
    req.set_top_k(top_k);
    return req;
  }

  TempDir dir_;
  Runner server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
};

using ServerTest = ServerTestBase<InProcessServer>;
using ProcessServerTest = ServerTestBase<ServerProcess>;

// ---------------------------------------------------------------------------
// 1. Happy paths.

TEST_F(ServerTest, CollectionLifecycle) {
  v1::CreateCollectionResponse created;
  ASSERT_OK(Create("zeta", 16, v1::TOKEN_DTYPE_UNSPECIFIED, "", &created));
  EXPECT_EQ(created.collection().name(), "zeta");
  EXPECT_EQ(created.collection().config().dim(), 16u);
  EXPECT_EQ(created.collection().config().token_dtype(), v1::TOKEN_DTYPE_BF16);
  EXPECT_EQ(created.collection().config().ann_spec(), "HNSW32,SQfp16");  // the default
  EXPECT_EQ(created.collection().num_documents(), 0u);
  EXPECT_EQ(created.collection().num_tombstones(), 0u);

  ASSERT_OK(Create("alpha", 8, v1::TOKEN_DTYPE_F32, "Flat", &created));
  EXPECT_EQ(created.collection().config().token_dtype(), v1::TOKEN_DTYPE_F32);
  EXPECT_EQ(created.collection().config().ann_spec(), "Flat");
  ASSERT_OK(Create("mid-1_x", 4, v1::TOKEN_DTYPE_BF16, "HNSW16,Flat"));

  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("zeta", &info));
  EXPECT_EQ(info.name(), "zeta");
  EXPECT_EQ(info.config().dim(), 16u);
  EXPECT_EQ(info.config().token_dtype(), v1::TOKEN_DTYPE_BF16);
  EXPECT_EQ(info.config().ann_spec(), "HNSW32,SQfp16");
  EXPECT_EQ(info.num_documents(), 0u);

  v1::ListCollectionsResponse list;
  ASSERT_OK(List(&list));
  ASSERT_EQ(list.collections_size(), 3);
  EXPECT_EQ(list.collections(0).name(), "alpha");
  EXPECT_EQ(list.collections(1).name(), "mid-1_x");
  EXPECT_EQ(list.collections(2).name(), "zeta");
  EXPECT_EQ(list.collections(0).config().dim(), 8u);
  EXPECT_EQ(list.collections(0).config().ann_spec(), "Flat");
  EXPECT_EQ(list.collections(1).config().ann_spec(), "HNSW16,Flat");
  EXPECT_EQ(list.collections(2).config().token_dtype(), v1::TOKEN_DTYPE_BF16);

  ASSERT_OK(Drop("mid-1_x"));
  EXPECT_TRUE(HasError(GetCollection("mid-1_x"), StatusCode::NOT_FOUND, "mid-1_x"));
  ASSERT_OK(List(&list));
  ASSERT_EQ(list.collections_size(), 2);
  EXPECT_EQ(list.collections(0).name(), "alpha");
  EXPECT_EQ(list.collections(1).name(), "zeta");
  // The name is free again.
  ASSERT_OK(Create("mid-1_x", 4, v1::TOKEN_DTYPE_BF16, ""));
  EXPECT_EQ(NumDocuments("mid-1_x"), 0u);
}

TEST_F(ServerTest, UpsertGetDelete) {
  constexpr uint32_t kDim = 12;
  ASSERT_OK(Create("docs", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
  std::mt19937 rng(101);
  std::map<std::string, v1::Document> sent;

  // Upsert: tokens + pooled, tokens only, pooled only.
  std::vector<v1::Document> batch = {
      MakeDoc(rng, "a", kDim, 5, true, {{"lang", "en"}}),
      MakeDoc(rng, "b", kDim, 3, false, {{"lang", "de"}}),
      MakeDoc(rng, "c", kDim, 0, true),
  };
  uint64_t upserted = 0;
  ASSERT_OK(Upsert("docs", batch, &upserted));
  EXPECT_EQ(upserted, 3u);
  for (const auto& d : batch) sent[d.id()] = d;
  EXPECT_EQ(NumDocuments("docs"), 3u);

  // UpsertStream: three messages, one of which replaces "a".
  std::vector<v1::UpsertRequest> messages(3);
  int n = 0;
  for (size_t m = 0; m < messages.size(); ++m) {
    messages[m].set_collection("docs");
    for (size_t i = 0; i < m + 2; ++i) {
      const std::string id = "s" + std::to_string(n++);
      *messages[m].add_documents() = MakeDoc(rng, id, kDim, uint32_t(1 + i), i % 2 == 0);
    }
  }
  *messages[1].add_documents() = MakeDoc(rng, "a", kDim, 2, false, {{"lang", "fr"}});
  v1::UpsertResponse stream_resp;
  ASSERT_OK(UpsertStream(messages, &stream_resp));
  EXPECT_EQ(stream_resp.upserted(), 2u + 4u + 4u);
  for (const auto& m : messages) {
    for (const auto& d : m.documents()) sent[d.id()] = d;
  }
  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.num_documents(), sent.size());
  EXPECT_EQ(info.num_tombstones(), 1u);  // the first version of "a"

  // Get without vectors, in request order, with unknown ids reported.
  v1::GetResponse got;
  ASSERT_OK(Get("docs", {"c", "nope", "a", "s3", "missing"}, false, &got));
  ASSERT_EQ(got.documents_size(), 3);
  EXPECT_EQ(got.documents(0).id(), "c");
  EXPECT_EQ(got.documents(1).id(), "a");
  EXPECT_EQ(got.documents(2).id(), "s3");
  for (const auto& d : got.documents()) ExpectStoredDocument(d, sent[d.id()], kDim, false, 0);
  EXPECT_EQ(std::vector<std::string>(got.not_found_ids().begin(), got.not_found_ids().end()),
            (std::vector<std::string>{"nope", "missing"}));
  EXPECT_EQ(got.documents(1).metadata().at("lang"), "fr");  // the replacement

  // Get with vectors: normalised, bf16 token rows.
  std::vector<std::string> all;
  for (const auto& [id, d] : sent) all.push_back(id);
  got.Clear();
  ASSERT_OK(Get("docs", all, true, &got));
  ASSERT_EQ(got.documents_size(), int(all.size()));
  EXPECT_EQ(got.not_found_ids_size(), 0);
  for (const auto& d : got.documents()) {
    ExpectStoredDocument(d, sent[d.id()], kDim, true, kBf16Tolerance);
  }

  // Delete: counts and unknown ids.
  v1::DeleteResponse deleted;
  ASSERT_OK(Delete("docs", {"b", "ghost", "s1"}, &deleted));
  EXPECT_EQ(deleted.deleted(), 2u);
  EXPECT_EQ(
      std::vector<std::string>(deleted.not_found_ids().begin(), deleted.not_found_ids().end()),
      (std::vector<std::string>{"ghost"}));
  got.Clear();
  ASSERT_OK(Get("docs", {"b", "s1", "s2"}, false, &got));
  ASSERT_EQ(got.documents_size(), 1);
  EXPECT_EQ(got.documents(0).id(), "s2");
  EXPECT_EQ(got.not_found_ids_size(), 2);
  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.num_documents(), sent.size() - 2);
  EXPECT_EQ(info.num_tombstones(), 3u);
  // Deleting again finds nothing.
  ASSERT_OK(Delete("docs", {"b"}, &deleted));
  EXPECT_EQ(deleted.deleted(), 0u);
  EXPECT_EQ(deleted.not_found_ids_size(), 1);
}

// Token matrices packed as bytes (f32, bf16, f16) are stored exactly as
// the same values given in `values`: the oracle is a twin document sent the
// old way, with values that bf16 and f16 hold exactly.
TEST_F(ServerTest, PackedMatricesEqualValues) {
  constexpr uint32_t kDim = 8;
  ASSERT_OK(Create("packed", kDim, v1::TOKEN_DTYPE_F32, ""));
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> k(-64, 64);
  std::vector<float> values(3 * kDim);
  for (float& v : values) v = float(k(rng)) / 64.f;
  values[0] = 1.f;  // no row of zeros
  values[kDim] = 1.f;
  values[2 * kDim] = 1.f;
  std::vector<v1::Document> docs;
  v1::Document plain;
  plain.set_id("values");
  plain.mutable_tokens()->set_rows(3);
  plain.mutable_tokens()->set_cols(kDim);
  plain.mutable_tokens()->mutable_values()->Assign(values.begin(), values.end());
  docs.push_back(plain);
  auto packed = [&](const std::string& id, v1::ValueEncoding encoding, const std::string& data) {
    v1::Document d;
    d.set_id(id);
    d.mutable_tokens()->set_rows(3);
    d.mutable_tokens()->set_cols(kDim);
    d.mutable_tokens()->set_encoding(encoding);
    d.mutable_tokens()->set_data(data);
    docs.push_back(d);
  };
  std::string f32(values.size() * 4, '\0'), bf16, f16;
  std::memcpy(f32.data(), values.data(), f32.size());
  for (float v : values) {
    const uint16_t b = FloatToBf16(v);
    bf16.append(reinterpret_cast<const char*>(&b), 2);
    // k / 64 in binary16: the sign, a 5-bit exponent biased by 15 and a
    // 10-bit mantissa.
    uint16_t h = 0;
    if (v != 0.f) {
      int e;
      const float m = std::frexp(std::fabs(v), &e);
      h = uint16_t(((e - 1 + 15) << 10) | uint16_t(std::lround((m * 2 - 1) * 1024)));
      if (v < 0) h |= 0x8000;
    }
    ASSERT_EQ(HalfToFloat(h), v);
    f16.append(reinterpret_cast<const char*>(&h), 2);
  }
  packed("f32", v1::VALUE_ENCODING_F32, f32);
  packed("bf16", v1::VALUE_ENCODING_BF16, bf16);
  packed("f16", v1::VALUE_ENCODING_F16, f16);
  ASSERT_OK(Upsert("packed", docs, nullptr));
  v1::GetResponse got;
  ASSERT_OK(Get("packed", {"values", "f32", "bf16", "f16"}, true, &got));
  ASSERT_EQ(got.documents_size(), 4);
  for (int i = 1; i < 4; ++i) {
    SCOPED_TRACE(got.documents(i).id());
    EXPECT_EQ(got.documents(i).tokens().rows(), 3u);
    EXPECT_TRUE(std::equal(
        got.documents(i).tokens().values().begin(), got.documents(i).tokens().values().end(),
        got.documents(0).tokens().values().begin(), got.documents(0).tokens().values().end()));
    EXPECT_TRUE(std::equal(got.documents(i).pooled().begin(), got.documents(i).pooled().end(),
                           got.documents(0).pooled().begin(), got.documents(0).pooled().end()));
  }
}

TEST_F(ServerTest, SearchHappyPath) {
  constexpr uint32_t kDim = 16;
  constexpr int kDocs = 90;
  ASSERT_OK(Create("s", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));  // HNSW32,SQfp16, bf16
  std::mt19937 rng(202);
  const std::vector<std::string> colors = {"red", "green", "blue"};
  std::map<std::string, v1::Document> sent;
  std::vector<v1::Document> batch;
  for (int i = 0; i < kDocs; ++i) {
    const std::string id = "d" + std::to_string(i);
    batch.push_back(
        MakeDoc(rng, id, kDim, 1 + uint32_t(i % 8), i % 4 == 0,
                {{"color", colors[size_t(i % 3)]}, {"parity", i % 2 == 0 ? "even" : "odd"}}));
    sent[id] = batch.back();
  }
  ASSERT_OK(Upsert("s", batch));

  // A 3-token query near d7's tokens.
  constexpr uint32_t kM = 3;
  std::vector<float> q = RandomUnitRows(rng, kM, kDim);
  const auto& d7 = sent["d7"].tokens().values();
  for (size_t i = 0; i < q.size(); ++i) q[i] = 0.3f * q[i] + 2.f * d7[int(i % size_t(d7.size()))];

  for (v1::RerankMode mode :
       {v1::RERANK_MODE_UNSPECIFIED, v1::RERANK_MODE_ATTENTION, v1::RERANK_MODE_MAXSIM}) {
    SCOPED_TRACE("mode " + std::to_string(int(mode)));
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 10);
    req.set_rerank(mode);
    req.set_explain(true);
    req.set_include_text(true);
    req.set_include_metadata(true);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 10);
    std::set<std::string> ids;
    for (int h = 0; h < resp.hits_size(); ++h) {
      const v1::Hit& hit = resp.hits(h);
      SCOPED_TRACE("hit " + hit.id());
      ASSERT_TRUE(sent.count(hit.id()));
      EXPECT_TRUE(ids.insert(hit.id()).second) << "duplicate hit";
      if (h > 0) EXPECT_GE(resp.hits(h - 1).score(), hit.score());
      EXPECT_EQ(hit.text(), "text of " + hit.id());
      EXPECT_EQ(ToMap(hit.metadata()), ToMap(sent[hit.id()].metadata()));
      // explain: one match per query token; contributions sum to the score.
      ASSERT_EQ(hit.matches_size(), int(kM));
      double sum = 0;
      std::set<uint32_t> query_tokens;
      const uint32_t doc_rows = sent[hit.id()].tokens().rows();
      for (const auto& m : hit.matches()) {
        query_tokens.insert(m.query_token());
        sum += m.contribution();
        EXPECT_LT(m.document_token(), doc_rows);
        EXPECT_EQ(m.document_token_text(), hit.id() + "/t" + std::to_string(m.document_token()));
        EXPECT_GT(m.weight(), 0.f);
        EXPECT_LE(m.weight(), 1.f + 1e-6f);
        if (mode == v1::RERANK_MODE_MAXSIM) EXPECT_FLOAT_EQ(m.weight(), 1.f);
      }
      EXPECT_EQ(query_tokens, (std::set<uint32_t>{0, 1, 2}));
      EXPECT_NEAR(sum, hit.score(), 1e-3);
    }
    EXPECT_EQ(resp.hits(0).id(), "d7");  // the query was built around it
    ASSERT_TRUE(resp.has_timing());
    const v1::Timing& t = resp.timing();
    EXPECT_GT(t.total_us(), 0u);
    EXPECT_GE(t.total_us(), t.encode_us() + t.ann_us() + t.fetch_us() + t.rerank_us());
  }

  // Without include_* and explain: only ids and scores.
  {
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 5);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 5);
    for (const auto& hit : resp.hits()) {
      EXPECT_TRUE(hit.text().empty());
      EXPECT_EQ(hit.metadata_size(), 0);
      EXPECT_EQ(hit.matches_size(), 0);
    }
  }

  // RERANK_NONE: the ANN score is the score.
  {
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 5);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 5);
    for (int h = 0; h < resp.hits_size(); ++h) {
      EXPECT_EQ(resp.hits(h).score(), resp.hits(h).ann_score());
      if (h > 0) EXPECT_GE(resp.hits(h - 1).score(), resp.hits(h).score());
    }
  }

  // Filters: only matching documents, and top_k is filled even with as few
  // candidates as top_k (the filter is applied inside the ANN search).
  {
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 10);
    req.set_candidates(10);
    req.set_include_metadata(true);
    auto* c = req.mutable_filter()->add_must();
    c->set_key("color");
    c->add_values("red");
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 10);
    for (const auto& hit : resp.hits()) {
      EXPECT_EQ(sent[hit.id()].metadata().at("color"), "red") << hit.id();
      EXPECT_EQ(hit.metadata().at("color"), "red") << hit.id();
    }
  }
  {
    // Two conditions: color in {red, blue} AND parity = even (30 documents).
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 12);
    req.set_candidates(12);
    auto* c1 = req.mutable_filter()->add_must();
    c1->set_key("color");
    c1->add_values("red");
    c1->add_values("blue");
    auto* c2 = req.mutable_filter()->add_must();
    c2->set_key("parity");
    c2->add_values("even");
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 12);
    for (const auto& hit : resp.hits()) {
      const auto& md = sent[hit.id()].metadata();
      EXPECT_TRUE(md.at("color") == "red" || md.at("color") == "blue") << hit.id();
      EXPECT_EQ(md.at("parity"), "even") << hit.id();
    }
    // All 30 matching documents when top_k asks for more.
    req.set_top_k(50);
    req.set_candidates(50);
    resp.Clear();
    ASSERT_OK(Search(req, &resp));
    EXPECT_EQ(resp.hits_size(), 30);
  }
  {
    // A value no document has: no hits, not an error.
    v1::SearchRequest req = SearchRequestFor("s", {}, kM, q, kDim, 10);
    auto* c = req.mutable_filter()->add_must();
    c->set_key("color");
    c->add_values("purple");
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    EXPECT_EQ(resp.hits_size(), 0);
  }
  // A pooled-only query (one-token query): explain gives one match.
  {
    const auto pooled = Values(sent["d12"].pooled());
    v1::SearchRequest req = SearchRequestFor("s", pooled, 0, {}, kDim, 3);
    req.set_explain(true);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 3);
    for (const auto& hit : resp.hits()) {
      ASSERT_EQ(hit.matches_size(), 1);
      EXPECT_NEAR(hit.matches(0).contribution(), hit.score(), 1e-3);
    }
  }
}

// ---------------------------------------------------------------------------
// 2. Search against a naive reference (Flat, f32, every document a
// candidate: the ranking is exact).

// A collection with a residual codec and the centroid first stage: before
// training its candidates come from the pooled index and from rows in
// memory, after TrainCodec from the centroids and from codes in memory,
// and the response says so; none is read from disk. An fde collection says
// "fde" from its first write. An unknown first stage is refused naming the
// field.
TEST_F(ServerTest, SearchSaysWhereItsCandidatesCameFrom) {
  constexpr uint32_t kDim = 16;
  v1::CreateCollectionRequest create;
  create.set_name("codes");
  create.mutable_config()->set_dim(kDim);
  create.mutable_config()->mutable_token_codec()->set_name("residual");
  create.mutable_config()->mutable_token_codec()->set_train_after_documents(0);
  v1::CreateCollectionResponse created;
  create.mutable_config()->set_candidates_from("muvera");
  const grpc::Status refused = Call(&v1::SearchService::Stub::CreateCollection, create, &created);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("config.candidates_from"), std::string::npos)
      << refused.error_message();
  create.mutable_config()->set_candidates_from("centroids");
  ASSERT_OK(Call(&v1::SearchService::Stub::CreateCollection, create, &created));
  EXPECT_EQ(created.collection().config().candidates_from(), "centroids");
  std::mt19937 rng(303);
  std::vector<v1::Document> batch;
  for (int i = 0; i < 400; ++i) {
    batch.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 4 + uint32_t(i % 5), false, {}));
  }
  ASSERT_OK(Upsert("codes", batch));
  const std::vector<float> q = RandomUnitRows(rng, 3, kDim);
  v1::SearchRequest req = SearchRequestFor("codes", {}, 3, q, kDim, 10);
  req.set_candidates(50);
  v1::SearchResponse before;
  ASSERT_OK(Search(req, &before));
  EXPECT_EQ(before.sources().codes(), 0u);
  EXPECT_EQ(before.sources().store(), 0u);
  EXPECT_EQ(before.sources().first_stage(), "pooled");
  v1::TrainCodecRequest train;
  train.set_collection("codes");
  v1::TrainCodecResponse trained;
  ASSERT_OK(Call(&v1::SearchService::Stub::TrainCodec, train, &trained));
  v1::SearchResponse after;
  ASSERT_OK(Search(req, &after));
  EXPECT_EQ(after.sources().codes(), 50u);
  EXPECT_EQ(after.sources().previous_codes(), 0u);
  EXPECT_EQ(after.sources().store(), 0u);
  EXPECT_EQ(after.sources().first_stage(), "centroids");
  ASSERT_EQ(after.hits_size(), 10);
  // An fde collection over the same documents: its candidates come from
  // the encodings from the first write on.
  v1::CreateCollectionRequest fde;
  fde.set_name("fde");
  fde.mutable_config()->set_dim(kDim);
  fde.mutable_config()->set_candidates_from("fde");
  ASSERT_OK(Call(&v1::SearchService::Stub::CreateCollection, fde, &created));
  EXPECT_EQ(created.collection().config().candidates_from(), "fde");
  ASSERT_OK(Upsert("fde", batch));
  req.set_collection("fde");
  v1::SearchResponse encoded;
  ASSERT_OK(Search(req, &encoded));
  EXPECT_EQ(encoded.sources().first_stage(), "fde");
  EXPECT_EQ(encoded.hits_size(), 10);
}

TEST_F(ServerTest, SearchMatchesReference) {
  constexpr uint32_t kDim = 32;
  constexpr int kDocs = 300;
  ASSERT_OK(Create("oracle", kDim, v1::TOKEN_DTYPE_F32, "Flat"));
  std::mt19937 rng(303);
  std::uniform_int_distribution<uint32_t> token_count(1, 20);
  struct Ref {
    std::string id;
    uint32_t rows;
    std::vector<float> tokens;  // unit rows
    std::vector<float> pooled;  // unit
  };
  std::vector<Ref> refs;
  std::vector<v1::Document> batch;
  for (int i = 0; i < kDocs; ++i) {
    v1::Document d = MakeDoc(rng, "o" + std::to_string(i), kDim, token_count(rng), i % 2 == 0);
    const Expected e = ExpectedVectors(d, kDim);
    refs.push_back({d.id(), e.rows, e.tokens, e.pooled});
    batch.push_back(std::move(d));
    if (batch.size() == 100) {
      ASSERT_OK(Upsert("oracle", batch));
      batch.clear();
    }
  }
  ASSERT_EQ(NumDocuments("oracle"), uint64_t(kDocs));

  struct Case {
    v1::RerankMode mode;
    float temperature;  // 0: the default 0.1
    uint32_t m;
    uint32_t top_k;
  };
  const std::vector<Case> cases = {
      {v1::RERANK_MODE_ATTENTION, 0.f, 4, 25},   {v1::RERANK_MODE_UNSPECIFIED, 0.f, 1, 25},
      {v1::RERANK_MODE_ATTENTION, 0.05f, 7, 25}, {v1::RERANK_MODE_ATTENTION, 1.f, 3, 300},
      {v1::RERANK_MODE_MAXSIM, 0.f, 5, 25},      {v1::RERANK_MODE_MAXSIM, 0.f, 8, 300},
      {v1::RERANK_MODE_NONE, 0.f, 3, 40},
  };
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    SCOPED_TRACE("case " + std::to_string(ci));
    const std::vector<float> q = Scaled(RandomUnitRows(rng, c.m, kDim), 2.f);
    const std::vector<float> qn = NormalizedRows(q, kDim);
    const std::vector<float> q_pooled = PooledOf(qn, kDim);  // uniform weights

    // Reference scores.
    const double tau = c.temperature == 0.f ? 0.1 : c.temperature;
    std::map<std::string, double> ref_score;
    std::map<std::string, double> ann_score;
    std::vector<std::pair<double, std::string>> ranking;
    for (const Ref& r : refs) {
      const double ann = Dot(r.pooled.data(), q_pooled.data(), kDim);
      const double s = c.mode == v1::RERANK_MODE_NONE
                           ? ann
                           : ReferenceScore(qn, c.m, r.tokens, r.rows, kDim, c.mode, tau);
      ref_score[r.id] = s;
      ann_score[r.id] = ann;
      ranking.push_back({s, r.id});
    }
    std::sort(ranking.begin(), ranking.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });

    v1::SearchRequest req = SearchRequestFor("oracle", {}, c.m, q, kDim, c.top_k);
    req.set_candidates(kDocs);
    req.set_rerank(c.mode);
    req.set_temperature(c.temperature);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), int(c.top_k));
    std::set<std::string> seen;
    for (int h = 0; h < resp.hits_size(); ++h) {
      const v1::Hit& hit = resp.hits(h);
      SCOPED_TRACE("rank " + std::to_string(h) + " " + hit.id());
      ASSERT_TRUE(ref_score.count(hit.id()));
      EXPECT_TRUE(seen.insert(hit.id()).second);
      // The hit's own score is right, and so is the score at this rank
      // (documents whose scores differ by less than the tolerance may
      // legitimately swap places).
      EXPECT_NEAR(hit.score(), ref_score[hit.id()], 1e-4);
      EXPECT_NEAR(hit.score(), ranking[size_t(h)].first, 1e-4)
          << "reference has " << ranking[size_t(h)].second << " here";
      const double here = ranking[size_t(h)].first;
      const bool isolated =
          (h == 0 || ranking[size_t(h) - 1].first - here > 2e-4) &&
          (size_t(h) + 1 == ranking.size() || here - ranking[size_t(h) + 1].first > 2e-4);
      if (isolated) EXPECT_EQ(hit.id(), ranking[size_t(h)].second);
      EXPECT_NEAR(hit.ann_score(), ann_score[hit.id()], 1e-4);
      if (h > 0) EXPECT_GE(resp.hits(h - 1).score(), hit.score());
    }
  }
}

// ---------------------------------------------------------------------------
// 3. Bad input: the right code, a message naming the field, nothing changed.

class BadInputTest : public ServerTest {
 protected:
  static constexpr uint32_t kDim = 8;

  void SetUp() override {
    ServerTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_OK(Create("c", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
    std::mt19937 rng(404);
    ASSERT_OK(Upsert("c", {MakeDoc(rng, "a", kDim, 3, true), MakeDoc(rng, "b", kDim, 2, false),
                           MakeDoc(rng, "e", kDim, 0, true)}));
    baseline_ = Snapshot();
  }

  // Everything observable about the stored state.
  std::string Snapshot() {
    std::string out;
    v1::ListCollectionsResponse list;
    EXPECT_OK(List(&list));
    // What the files take on disk moves with RocksDB's own flushes, and
    // the vectors pending with the background inserter.
    for (auto& c : *list.mutable_collections()) {
      c.clear_disk();
      c.clear_ann_pending();
    }
    out += list.SerializeAsString();
    v1::GetResponse got;
    EXPECT_OK(Get("c", {"a", "b", "e", "new1", "new2", "x", "dup"}, true, &got));
    out += got.SerializeAsString();
    return out;
  }

  void ExpectUnchanged() {
    EXPECT_EQ(NumDocuments("c"), 3u);
    EXPECT_TRUE(Snapshot() == baseline_) << "the stored state changed";
  }

  // A valid document replacing "a" and a valid new one, then `bad`: the
  // whole batch must be rejected.
  void ExpectUpsertRejected(const v1::Document& bad, const std::string& field) {
    std::mt19937 rng(405);
    v1::Document replace_a = MakeDoc(rng, "a", kDim, 2, true);
    replace_a.set_text("replaced");
    const std::vector<v1::Document> batch = {replace_a, MakeDoc(rng, "new1", kDim, 2, true), bad};
    uint64_t upserted = 99;
    EXPECT_TRUE(HasError(Upsert("c", batch, &upserted), StatusCode::INVALID_ARGUMENT, field));
    ExpectUnchanged();
  }

  void ExpectSearchRejected(const v1::SearchRequest& req, StatusCode code,
                            const std::string& field) {
    v1::SearchResponse resp;
    const grpc::Status s = Search(req, &resp);
    EXPECT_TRUE(HasError(s, code, field));
    EXPECT_EQ(resp.hits_size(), 0);
    ExpectUnchanged();
  }

  v1::Document Good(const std::string& id) {
    std::mt19937 rng(406);
    return MakeDoc(rng, id, kDim, 2, true);
  }

  // A valid search request (pooled + 2 tokens, top_k 2).
  v1::SearchRequest GoodSearch() {
    std::mt19937 rng(407);
    return SearchRequestFor("c", RandomUnitRows(rng, 1, kDim), 2, RandomUnitRows(rng, 2, kDim),
                            kDim, 2);
  }

  std::string baseline_;
};

TEST_F(BadInputTest, UpsertRejectsBadDocuments) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  {
    SCOPED_TRACE("pooled dimension mismatch");
    v1::Document d = Good("x");
    d.mutable_pooled()->RemoveLast();
    ExpectUpsertRejected(d, "documents[2].pooled");
  }
  {
    SCOPED_TRACE("token matrix cols != dim");
    v1::Document d = Good("x");
    SetMatrix(d.mutable_tokens(), 2, kDim - 1, std::vector<float>(2 * (kDim - 1), 0.5f));
    d.clear_token_texts();
    ExpectUpsertRejected(d, "documents[2].tokens.cols");
  }
  {
    SCOPED_TRACE("rows x cols != values");
    v1::Document d = Good("x");
    d.mutable_tokens()->mutable_values()->RemoveLast();
    ExpectUpsertRejected(d, "documents[2].tokens");
  }
  for (float bad : {nan, inf, -inf}) {
    SCOPED_TRACE("non-finite value " + std::to_string(bad));
    v1::Document d = Good("x");
    d.set_pooled(3, bad);
    ExpectUpsertRejected(d, "documents[2].pooled");
    d = Good("x");
    d.mutable_tokens()->set_values(int(kDim + 1), bad);
    ExpectUpsertRejected(d, "documents[2].tokens");
  }
  {
    SCOPED_TRACE("empty id");
    ExpectUpsertRejected(Good(""), "documents[2].id");
  }
  {
    SCOPED_TRACE("duplicate id in the batch");
    ExpectUpsertRejected(Good("new1"), "documents[2].id");
  }
  {
    SCOPED_TRACE("no vectors");
    v1::Document d;
    d.set_id("x");
    ExpectUpsertRejected(d, "documents[2]");
  }
  {
    SCOPED_TRACE("token_texts count");
    v1::Document d = Good("x");
    d.add_token_texts("extra");
    ExpectUpsertRejected(d, "documents[2].token_texts");
  }
  {
    SCOPED_TRACE("zero pooled vector");
    v1::Document d = Good("x");
    for (int k = 0; k < d.pooled_size(); ++k) d.set_pooled(k, 0.f);
    ExpectUpsertRejected(d, "documents[2].pooled");
  }
  {
    SCOPED_TRACE("duplicate id in a stream message");
    v1::UpsertRequest m;
    m.set_collection("c");
    *m.add_documents() = Good("new1");
    *m.add_documents() = Good("new1");
    v1::UpsertResponse resp;
    EXPECT_TRUE(
        HasError(UpsertStream({m}, &resp), StatusCode::INVALID_ARGUMENT, "documents[1].id"));
    ExpectUnchanged();
  }
  {
    SCOPED_TRACE("delete with an empty id");
    v1::DeleteResponse resp;
    EXPECT_TRUE(HasError(Delete("c", {"a", ""}, &resp), StatusCode::INVALID_ARGUMENT, "ids[1]"));
    ExpectUnchanged();
  }
}

TEST_F(BadInputTest, SearchRejectsBadQueries) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  {
    v1::SearchResponse resp;
    ASSERT_OK(Search(GoodSearch(), &resp));  // the base request is valid
    EXPECT_EQ(resp.hits_size(), 2);
  }
  {
    SCOPED_TRACE("pooled dimension mismatch");
    v1::SearchRequest r = GoodSearch();
    r.mutable_vectors()->mutable_pooled()->Add(0.5f);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.pooled");
  }
  {
    SCOPED_TRACE("token matrix cols != dim");
    v1::SearchRequest r = GoodSearch();
    SetMatrix(r.mutable_vectors()->mutable_tokens(), 2, kDim + 1,
              std::vector<float>(2 * (kDim + 1), 0.5f));
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.tokens.cols");
  }
  {
    SCOPED_TRACE("rows x cols != values");
    v1::SearchRequest r = GoodSearch();
    r.mutable_vectors()->mutable_tokens()->mutable_values()->Add(0.5f);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.tokens");
  }
  for (float bad : {nan, inf, -inf}) {
    SCOPED_TRACE("non-finite value " + std::to_string(bad));
    v1::SearchRequest r = GoodSearch();
    r.mutable_vectors()->set_pooled(0, bad);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.pooled");
    r = GoodSearch();
    r.mutable_vectors()->mutable_tokens()->set_values(int(kDim) + 2, bad);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.tokens");
  }
  {
    SCOPED_TRACE("no query at all");
    v1::SearchRequest r = GoodSearch();
    r.clear_query();
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query");
  }
  {
    SCOPED_TRACE("empty query vectors");
    v1::SearchRequest r = GoodSearch();
    r.mutable_vectors()->Clear();
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query");
  }
  {
    SCOPED_TRACE("top_k = 0");
    v1::SearchRequest r = GoodSearch();
    r.set_top_k(0);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "top_k");
  }
  {
    SCOPED_TRACE("top_k above the limit");
    v1::SearchRequest r = GoodSearch();
    r.set_top_k(1001);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "top_k");
    r.set_top_k(1000);  // the limit itself is fine
    v1::SearchResponse resp;
    EXPECT_OK(Search(r, &resp));
    EXPECT_EQ(resp.hits_size(), 3);
  }
  {
    SCOPED_TRACE("candidates < top_k");
    v1::SearchRequest r = GoodSearch();
    r.set_top_k(10);
    r.set_candidates(5);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "candidates");
  }
  {
    SCOPED_TRACE("candidates above the limit");
    v1::SearchRequest r = GoodSearch();
    r.set_candidates(20001);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "candidates");
  }
  {
    SCOPED_TRACE("unknown rerank mode");
    v1::SearchRequest r = GoodSearch();
    r.set_rerank(static_cast<v1::RerankMode>(99));
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "rerank");
  }
  for (float t : {-0.5f, nan, inf}) {
    SCOPED_TRACE("temperature " + std::to_string(t));
    v1::SearchRequest r = GoodSearch();
    r.set_temperature(t);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "temperature");
  }
  for (const char* params : {"efSearch=abc", "efSearch=0", "bogus=3"}) {
    SCOPED_TRACE(std::string("ann_params ") + params);
    v1::SearchRequest r = GoodSearch();
    r.set_ann_params(params);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "ann_params");
  }
  {
    SCOPED_TRACE("token_weights count");
    v1::SearchRequest r = GoodSearch();
    r.mutable_vectors()->add_token_weights(1.f);
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "query.token_weights");
  }
  {
    SCOPED_TRACE("empty filter key");
    v1::SearchRequest r = GoodSearch();
    r.mutable_filter()->add_must()->add_values("v");
    ExpectSearchRejected(r, StatusCode::INVALID_ARGUMENT, "filter.must[0].key");
  }
  {
    SCOPED_TRACE("text query, no encoder trained");
    v1::SearchRequest r = GoodSearch();
    r.set_text("hello world");
    ExpectSearchRejected(r, StatusCode::FAILED_PRECONDITION, "text");
  }
}

TEST_F(BadInputTest, CollectionErrors) {
  const std::vector<std::string> bad_names = {"bad name!", "",   std::string(65, 'n'),
                                              "a/b",       "..", "\xc3\xa9"};
  for (const std::string& name : bad_names) {
    SCOPED_TRACE("name '" + name + "'");
    EXPECT_TRUE(HasError(Create(name, 4, v1::TOKEN_DTYPE_UNSPECIFIED, ""),
                         StatusCode::INVALID_ARGUMENT, "name"));
  }
  EXPECT_OK(Create(std::string(64, 'n'), 4, v1::TOKEN_DTYPE_UNSPECIFIED, ""));  // the limit
  ASSERT_OK(Drop(std::string(64, 'n')));
  EXPECT_TRUE(HasError(Create("d0", 0, v1::TOKEN_DTYPE_UNSPECIFIED, ""),
                       StatusCode::INVALID_ARGUMENT, "config.dim"));
  EXPECT_TRUE(HasError(Create("d0", 4097, v1::TOKEN_DTYPE_UNSPECIFIED, ""),
                       StatusCode::INVALID_ARGUMENT, "config.dim"));
  EXPECT_TRUE(HasError(Create("d0", 4, static_cast<v1::TokenDtype>(42), ""),
                       StatusCode::INVALID_ARGUMENT, "config.token_dtype"));
  EXPECT_TRUE(HasError(Create("d0", 4, v1::TOKEN_DTYPE_UNSPECIFIED, "NoSuchIndex"),
                       StatusCode::INVALID_ARGUMENT, "ann_spec"));
  EXPECT_TRUE(HasError(GetCollection("d0"), StatusCode::NOT_FOUND, "d0"));

  // ALREADY_EXISTS, and the existing collection is untouched.
  v1::CreateCollectionResponse resp;
  EXPECT_TRUE(HasError(Create("c", 16, v1::TOKEN_DTYPE_F32, "Flat", &resp),
                       StatusCode::ALREADY_EXISTS, "c"));
  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("c", &info));
  EXPECT_EQ(info.config().dim(), kDim);
  EXPECT_EQ(info.config().ann_spec(), "HNSW32,SQfp16");
  ExpectUnchanged();
}

TEST_F(BadInputTest, UnknownCollectionIsNotFound) {
  const std::string kNope = "no_such_collection";
  {
    v1::SearchRequest r = GoodSearch();
    r.set_collection(kNope);
    v1::SearchResponse resp;
    EXPECT_TRUE(HasError(Search(r, &resp), StatusCode::NOT_FOUND, kNope));
  }
  EXPECT_TRUE(HasError(Upsert(kNope, {Good("x")}), StatusCode::NOT_FOUND, kNope));
  {
    v1::UpsertRequest m;
    m.set_collection(kNope);
    *m.add_documents() = Good("x");
    v1::UpsertResponse resp;
    EXPECT_TRUE(HasError(UpsertStream({m}, &resp), StatusCode::NOT_FOUND, kNope));
  }
  v1::GetResponse got;
  EXPECT_TRUE(HasError(Get(kNope, {"a"}, false, &got), StatusCode::NOT_FOUND, kNope));
  v1::DeleteResponse del;
  EXPECT_TRUE(HasError(Delete(kNope, {"a"}, &del), StatusCode::NOT_FOUND, kNope));
  EXPECT_TRUE(HasError(GetCollection(kNope), StatusCode::NOT_FOUND, kNope));
  EXPECT_TRUE(HasError(Drop(kNope), StatusCode::NOT_FOUND, kNope));
  ExpectUnchanged();
  // Nothing was created by any of them.
  v1::ListCollectionsResponse list;
  ASSERT_OK(List(&list));
  ASSERT_EQ(list.collections_size(), 1);
  EXPECT_EQ(list.collections(0).name(), "c");
}

// ---------------------------------------------------------------------------
// 4. A bad message in the middle of an UpsertStream.

TEST_F(ServerTest, UpsertStreamStopsAtBadMessage) {
  constexpr uint32_t kDim = 8;
  ASSERT_OK(Create("st", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
  std::mt19937 rng(505);
  std::vector<v1::UpsertRequest> messages(4);
  for (size_t m = 0; m < messages.size(); ++m) {
    messages[m].set_collection("st");
    for (int i = 0; i < 3; ++i) {
      *messages[m].add_documents() =
          MakeDoc(rng, "m" + std::to_string(m) + "-" + std::to_string(i), kDim, 2, true);
    }
  }
  // Message 2: its third document has a NaN.
  messages[2].mutable_documents(2)->set_pooled(1, std::numeric_limits<float>::quiet_NaN());
  v1::UpsertResponse resp;
  const grpc::Status s = UpsertStream(messages, &resp);
  EXPECT_TRUE(HasError(s, StatusCode::INVALID_ARGUMENT, "documents[2].pooled"));
  EXPECT_NE(s.error_message().find("message 2"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("6 documents"), std::string::npos) << s.error_message();

  EXPECT_EQ(NumDocuments("st"), 6u);
  v1::GetResponse got;
  ASSERT_OK(Get("st", {"m0-0", "m0-1", "m0-2", "m1-0", "m1-1", "m1-2"}, false, &got));
  EXPECT_EQ(got.documents_size(), 6);
  got.Clear();
  // Neither the bad message's valid documents nor the messages after it.
  ASSERT_OK(Get("st", {"m2-0", "m2-1", "m2-2", "m3-0", "m3-1", "m3-2"}, false, &got));
  EXPECT_EQ(got.documents_size(), 0);
  EXPECT_EQ(got.not_found_ids_size(), 6);
}

// ---------------------------------------------------------------------------
// 5. Deadlines.

TEST_F(ServerTest, ExpiredDeadline) {
  constexpr uint32_t kDim = 8;
  ASSERT_OK(Create("dl", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
  std::mt19937 rng(606);
  std::vector<v1::Document> docs;
  for (int i = 0; i < 20; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 3, true));
  ASSERT_OK(Upsert("dl", docs));
  const v1::SearchRequest req =
      SearchRequestFor("dl", RandomUnitRows(rng, 1, kDim), 0, {}, kDim, 5);
  // (A deadline a microsecond ahead is not tested: gRPC rounds the timeout it
  // sends up, so a fast search may legitimately finish within it.)
  for (auto deadline : {std::chrono::system_clock::now() - std::chrono::seconds(1)}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    v1::SearchResponse resp;
    const grpc::Status s = stub_->Search(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_EQ(resp.hits_size(), 0);
  }
  // The server is fine afterwards.
  v1::SearchResponse resp;
  ASSERT_OK(Search(req, &resp));
  EXPECT_EQ(resp.hits_size(), 5);
}

// ---------------------------------------------------------------------------
// 6. Durability: SIGKILL, restart, every acknowledged write is there.

TEST_F(ProcessServerTest, AcknowledgedWritesSurviveSigkill) {
  constexpr uint32_t kDim = 16;
  // A small snapshot interval: the restart loads a snapshot and replays the
  // writes made after it.
  server_.Kill(SIGKILL);
  server_.Wait();
  ASSERT_NO_FATAL_FAILURE(StartServer({"--snapshot_every", "50"}));
  ASSERT_OK(Create("dur", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
  std::mt19937 rng(707);
  std::map<std::string, v1::Document> live;
  std::map<std::string, v1::Document> overwritten_old;  // id -> first version
  std::set<std::string> deleted;

  int next = 0;
  auto new_batch = [&](int n) {
    std::vector<v1::Document> batch;
    for (int i = 0; i < n; ++i, ++next) {
      batch.push_back(MakeDoc(rng, "doc-" + std::to_string(next), kDim, 1 + uint32_t(next % 6),
                              next % 3 != 0, {{"batch", std::to_string(next / 30)}}));
    }
    return batch;
  };
  for (int b = 0; b < 6; ++b) {
    auto batch = new_batch(30);
    ASSERT_OK(Upsert("dur", batch));
    for (auto& d : batch) live[d.id()] = d;
  }
  // Overwrite 20 documents with new content.
  {
    std::vector<v1::Document> batch;
    for (int i = 0; i < 180; i += 9) {
      const std::string id = "doc-" + std::to_string(i);
      v1::Document d = MakeDoc(rng, id, kDim, 4, i % 2 == 0, {{"version", "2"}});
      d.set_text("second version of " + id);
      overwritten_old[id] = live[id];
      batch.push_back(d);
    }
    ASSERT_OK(Upsert("dur", batch));
    for (auto& d : batch) live[d.id()] = d;
  }
  // Delete 25 (some of them overwritten ones).
  {
    std::vector<std::string> ids;
    for (int i = 1; i < 180; i += 7) ids.push_back("doc-" + std::to_string(i));
    v1::DeleteResponse resp;
    ASSERT_OK(Delete("dur", ids, &resp));
    EXPECT_EQ(resp.deleted(), ids.size());
    for (auto& id : ids) {
      live.erase(id);
      overwritten_old.erase(id);
      deleted.insert(id);
    }
  }
  // More writes after the deletes, through the stream too, and one deleted
  // id brought back.
  {
    auto batch = new_batch(10);
    batch.push_back(MakeDoc(rng, "doc-8", kDim, 2, true, {{"version", "back"}}));
    ASSERT_OK(Upsert("dur", batch));
    for (auto& d : batch) live[d.id()] = d;
    deleted.erase("doc-8");
    std::vector<v1::UpsertRequest> messages(2);
    for (auto& m : messages) {
      m.set_collection("dur");
      for (auto& d : new_batch(7)) {
        live[d.id()] = d;
        *m.add_documents() = d;
      }
    }
    v1::UpsertResponse resp;
    ASSERT_OK(UpsertStream(messages, &resp));
    EXPECT_EQ(resp.upserted(), 14u);
  }
  ASSERT_EQ(NumDocuments("dur"), live.size());

  // Crash.
  const int status = StopServer(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
  ASSERT_NO_FATAL_FAILURE(StartServer());

  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("dur", &info));
  EXPECT_EQ(info.num_documents(), live.size());
  EXPECT_EQ(info.config().dim(), kDim);

  // Every acknowledged document, with its exact (latest) content.
  std::vector<std::string> ids;
  for (const auto& [id, d] : live) ids.push_back(id);
  v1::GetResponse got;
  ASSERT_OK(Get("dur", ids, true, &got));
  ASSERT_EQ(got.documents_size(), int(ids.size()));
  EXPECT_EQ(got.not_found_ids_size(), 0);
  std::map<std::string, std::vector<float>> stored_pooled;
  for (const auto& d : got.documents()) {
    ExpectStoredDocument(d, live[d.id()], kDim, true, kBf16Tolerance);
    stored_pooled[d.id()] = Values(d.pooled());
  }
  // Deleted ones are gone.
  got.Clear();
  ASSERT_OK(Get("dur", {deleted.begin(), deleted.end()}, false, &got));
  EXPECT_EQ(got.documents_size(), 0);
  EXPECT_EQ(got.not_found_ids_size(), int(deleted.size()));

  // Every live document is found by its own pooled vector.
  const uint32_t n = uint32_t(live.size());
  for (const auto& [id, pooled] : stored_pooled) {
    v1::SearchRequest req = SearchRequestFor("dur", pooled, 0, {}, kDim, 1);
    req.set_candidates(n);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    ASSERT_EQ(resp.hits_size(), 1) << id;
    EXPECT_EQ(resp.hits(0).id(), id);
    EXPECT_NEAR(resp.hits(0).score(), 1.0, 1e-4) << id;
    EXPECT_EQ(deleted.count(resp.hits(0).id()), 0u);
  }
  // A full ranking holds every live id once and no deleted one.
  {
    v1::SearchRequest req =
        SearchRequestFor("dur", Normalized(RandomUnitRows(rng, 1, kDim)), 0, {}, kDim, n);
    req.set_candidates(n);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    std::set<std::string> hit_ids;
    for (const auto& h : resp.hits()) {
      EXPECT_TRUE(hit_ids.insert(h.id()).second) << "duplicate hit " << h.id();
      EXPECT_EQ(deleted.count(h.id()), 0u) << "deleted " << h.id() << " was returned";
    }
    EXPECT_EQ(hit_ids, std::set<std::string>(ids.begin(), ids.end()));
  }
  // An overwritten document is scored by its new vector only: searching
  // with its old vector never finds it with the old one's score.
  for (const auto& [id, old] : overwritten_old) {
    const std::vector<float> old_pooled = ExpectedVectors(old, kDim).pooled;
    v1::SearchRequest req = SearchRequestFor("dur", old_pooled, 0, {}, kDim, n);
    req.set_candidates(n);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    int found = 0;
    for (const auto& h : resp.hits()) {
      if (h.id() != id) continue;
      ++found;
      EXPECT_NEAR(h.score(), Dot(old_pooled.data(), stored_pooled[id].data(), kDim), 1e-4) << id;
    }
    EXPECT_EQ(found, 1) << id;
  }
}

// ---------------------------------------------------------------------------
// 7. Graceful shutdown.

// Numeric fields declared at creation, range filters over gRPC (checked
// against the set of matching live documents), their validation, and both
// across a restart.
TEST_F(ServerTest, RangeFilters) {
  constexpr uint32_t kDim = 8;
  constexpr int kDocs = 400;
  {
    v1::CreateCollectionRequest req;
    req.set_name("r");
    req.mutable_config()->set_dim(kDim);
    req.mutable_config()->set_ann_spec("HNSW32,Flat");
    req.mutable_config()->add_numeric_fields("price");
    req.mutable_config()->add_numeric_fields("year");
    v1::CreateCollectionResponse resp;
    ASSERT_OK(Call(&v1::SearchService::Stub::CreateCollection, req, &resp));
    EXPECT_EQ(std::vector<std::string>(resp.collection().config().numeric_fields().begin(),
                                       resp.collection().config().numeric_fields().end()),
              (std::vector<std::string>{"price", "year"}));
    req.set_name("bad");
    req.mutable_config()->add_numeric_fields("price");
    EXPECT_TRUE(HasError(Call(&v1::SearchService::Stub::CreateCollection, req, &resp),
                         StatusCode::INVALID_ARGUMENT, "config.numeric_fields[2]"));
  }
  std::mt19937 rng(909);
  std::map<std::string, v1::Document> live;
  std::vector<v1::Document> batch;
  for (int i = 0; i < kDocs; ++i) {
    const std::string id = "r" + std::to_string(i);
    std::map<std::string, std::string> md = {{"tag", i % 2 ? "odd" : "even"}};
    if (i % 10 != 9) md["price"] = std::to_string(i - 200) + ".5";  // -199.5 .. 199.5
    batch.push_back(MakeDoc(rng, id, kDim, 0, true, md));
    live[id] = batch.back();
  }
  ASSERT_OK(Upsert("r", batch));
  v1::DeleteResponse del;
  ASSERT_OK(Delete("r", {"r200", "r202"}, &del));
  live.erase("r200");
  live.erase("r202");

  // The ids with a price in [lo, hi) and the tag, as the oracle sees them.
  auto oracle = [&](double lo, double hi, const std::string& tag) {
    std::set<std::string> ids;
    for (const auto& [id, d] : live) {
      auto it = d.metadata().find("price");
      if (it == d.metadata().end() || d.metadata().at("tag") != tag) continue;
      const double p = std::stod(it->second);
      if (p >= lo && p < hi) ids.insert(id);
    }
    return ids;
  };
  auto search = [&](double lo, double hi, const std::string& tag, uint32_t candidates) {
    v1::SearchRequest req = SearchRequestFor("r", RandomUnitRows(rng, 1, kDim), 0, {}, kDim, 50);
    req.set_candidates(candidates);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::RangeCondition* range = req.mutable_filter()->add_ranges();
    range->set_key("price");
    range->set_gte(lo);
    range->set_lt(hi);
    v1::MetadataCondition* must = req.mutable_filter()->add_must();
    must->set_key("tag");
    must->add_values(tag);
    return SearchIds(req);
  };
  auto check = [&]() {
    for (uint32_t candidates : {50u, 1000u}) {
      EXPECT_EQ(search(-0.5, 30, "even", candidates), oracle(-0.5, 30, "even"));
      EXPECT_EQ(search(-150, -100, "odd", candidates), oracle(-150, -100, "odd"));
      EXPECT_EQ(search(500, 600, "odd", candidates), std::set<std::string>());
    }
    v1::CollectionInfo info;
    ASSERT_OK(GetCollection("r", &info));
    ASSERT_EQ(info.config().numeric_fields_size(), 2);
    EXPECT_EQ(info.config().numeric_fields(0), "price");
    EXPECT_EQ(info.config().numeric_fields(1), "year");
  };
  check();
  EXPECT_FALSE(oracle(-0.5, 30, "even").empty());

  // Bad ranges and bad numeric values name the field.
  {
    v1::SearchRequest req = SearchRequestFor("r", RandomUnitRows(rng, 1, kDim), 0, {}, kDim, 5);
    v1::RangeCondition* range = req.mutable_filter()->add_ranges();
    range->set_key("tag");
    range->set_gte(1);
    v1::SearchResponse resp;
    EXPECT_TRUE(HasError(Search(req, &resp), StatusCode::INVALID_ARGUMENT,
                         "filter.ranges[0].key: \"tag\" is not a numeric field"));
    range->set_key("price");
    range->set_gt(1);
    EXPECT_TRUE(HasError(Search(req, &resp), StatusCode::INVALID_ARGUMENT,
                         "filter.ranges[0]: gte and gt both given"));
    range->clear_gt();
    range->set_lte(0);
    EXPECT_TRUE(HasError(Search(req, &resp), StatusCode::INVALID_ARGUMENT,
                         "filter.ranges[0]: the lower bound 1 is above the upper bound 0"));
  }
  {
    std::vector<v1::Document> bad = {MakeDoc(rng, "x0", kDim, 0, true, {{"year", "1999"}}),
                                     MakeDoc(rng, "x1", kDim, 0, true, {{"year", "soon"}})};
    EXPECT_TRUE(HasError(Upsert("r", bad), StatusCode::INVALID_ARGUMENT,
                         "documents[1].metadata[\"year\"]: \"soon\" is not a number"));
    EXPECT_EQ(NumDocuments("r"), uint64_t(kDocs - 2));
  }

  // After a restart the fields and the filters are the same.
  const int status = StopServer(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << DescribeWaitStatus(status);
  ASSERT_NO_FATAL_FAILURE(StartServer());
  check();
}

// Deletes past the server's threshold rebuild the ANN index in the
// background; CollectionInfo shows it, and no deleted document comes back.
TEST_F(ServerTest, DeletesTriggerABackgroundRebuild) {
  StopServer(SIGTERM);
  ASSERT_NO_FATAL_FAILURE(StartServer({"--rebuild_min_tombstones", "10"}));
  constexpr uint32_t kDim = 8;
  ASSERT_OK(Create("b", kDim, v1::TOKEN_DTYPE_F32, ""));
  std::mt19937 rng(1001);
  std::vector<v1::Document> batch;
  for (int i = 0; i < 300; ++i)
    batch.push_back(MakeDoc(rng, "b" + std::to_string(i), kDim, 0, true));
  ASSERT_OK(Upsert("b", batch));
  std::vector<std::string> doomed;
  for (int i = 0; i < 300; i += 3) doomed.push_back("b" + std::to_string(i));
  v1::DeleteResponse del;
  ASSERT_OK(Delete("b", doomed, &del));
  EXPECT_EQ(del.deleted(), 100u);
  v1::CollectionInfo info;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  do {
    ASSERT_OK(GetCollection("b", &info));
    if (info.rebuilds() >= 1 && !info.rebuild_in_progress()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(info.rebuilds(), 1u);
  EXPECT_EQ(info.num_tombstones(), 0u);
  EXPECT_EQ(info.num_documents(), 200u);
  const std::set<std::string> gone(doomed.begin(), doomed.end());
  for (int t = 0; t < 20; ++t) {
    v1::SearchRequest req = SearchRequestFor("b", RandomUnitRows(rng, 1, kDim), 0, {}, kDim, 50);
    req.set_rerank(v1::RERANK_MODE_NONE);
    v1::SearchResponse resp;
    ASSERT_OK(Search(req, &resp));
    EXPECT_EQ(resp.hits_size(), 50);
    for (const auto& h : resp.hits()) EXPECT_EQ(gone.count(h.id()), 0u) << h.id();
  }
}

TEST_F(ServerTest, TuneIndexSetsTheDefaultAndPersists) {
  constexpr uint32_t kDim = 16;
  ASSERT_OK(Create("t", kDim, v1::TOKEN_DTYPE_F32, ""));
  ASSERT_OK(Create("flat", kDim, v1::TOKEN_DTYPE_F32, "Flat"));
  std::mt19937 rng(1234);
  for (int b = 0; b < 4; ++b) {
    std::vector<v1::Document> batch;
    for (int i = 0; i < 500; ++i) {
      batch.push_back(MakeDoc(rng, "t" + std::to_string(b * 500 + i), kDim, 0, true));
    }
    ASSERT_OK(Upsert("t", batch));
    if (b == 0) ASSERT_OK(Upsert("flat", batch));
  }
  auto tune = [&](const std::string& collection, double target, uint32_t k, uint32_t sample,
                  v1::TuneIndexResponse* resp) {
    v1::TuneIndexRequest req;
    req.set_collection(collection);
    req.set_target_recall(target);
    req.set_k(k);
    req.set_sample(sample);
    return Call(&v1::SearchService::Stub::TuneIndex, req, resp);
  };

  v1::TuneIndexResponse tuned;
  ASSERT_OK(tune("t", 0.9, 0, 0, &tuned));  // k 10, sample 1000
  EXPECT_EQ(tuned.knob(), "efSearch");
  EXPECT_GE(tuned.value(), 10);
  EXPECT_EQ(tuned.ann_params(), "efSearch=" + std::to_string(tuned.value()));
  EXPECT_GE(tuned.sample_recall(), 0.9);
  EXPECT_EQ(tuned.sample_queries(), 1000u);
  EXPECT_GT(tuned.seconds(), 0.0);
  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("t", &info));
  EXPECT_EQ(info.config().ann_spec(), "HNSW32,SQfp16");
  EXPECT_EQ(info.tuned_ann_params(), tuned.ann_params());
  EXPECT_DOUBLE_EQ(info.tuned_target_recall(), 0.9);

  // A search without ann_params runs as one with the tuned ones.
  std::vector<std::vector<float>> queries;
  for (int i = 0; i < 20; ++i) queries.push_back(RandomUnitRows(rng, 1, kDim));
  auto ids = [&](const std::vector<float>& q, const std::string& ann_params) {
    v1::SearchRequest req = SearchRequestFor("t", q, 0, {}, kDim, 10);
    req.set_candidates(10);
    req.set_rerank(v1::RERANK_MODE_NONE);
    req.set_ann_params(ann_params);
    v1::SearchResponse resp;
    EXPECT_OK(Search(req, &resp));
    std::vector<std::string> out;
    for (const auto& h : resp.hits()) out.push_back(h.id());
    EXPECT_EQ(out.size(), 10u);
    return out;
  };
  std::vector<std::vector<std::string>> by_default;
  for (const auto& q : queries) {
    by_default.push_back(ids(q, ""));
    EXPECT_EQ(by_default.back(), ids(q, tuned.ann_params()));
  }

  // Errors name the field; nothing changes.
  v1::TuneIndexResponse bad;
  EXPECT_TRUE(HasError(tune("nope", 0.9, 0, 0, &bad), StatusCode::NOT_FOUND, "nope"));
  EXPECT_TRUE(HasError(tune("t", 0, 0, 0, &bad), StatusCode::INVALID_ARGUMENT, "target_recall"));
  EXPECT_TRUE(HasError(tune("t", 1.5, 0, 0, &bad), StatusCode::INVALID_ARGUMENT, "target_recall"));
  EXPECT_TRUE(HasError(tune("t", 0.9, 2000, 0, &bad), StatusCode::INVALID_ARGUMENT, "k: "));
  EXPECT_TRUE(HasError(tune("t", 0.9, 0, 200000, &bad), StatusCode::INVALID_ARGUMENT, "sample: "));

  // An exact index: nothing to tune, nothing stored.
  v1::TuneIndexResponse flat;
  ASSERT_OK(tune("flat", 0.9, 0, 0, &flat));
  EXPECT_EQ(flat.ann_params(), "");
  EXPECT_EQ(flat.knob(), "");
  ASSERT_OK(GetCollection("flat", &info));
  EXPECT_EQ(info.tuned_ann_params(), "");

  // Stored: after a restart the default is the same.
  const int status = StopServer(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_OK(GetCollection("t", &info));
  EXPECT_EQ(info.tuned_ann_params(), tuned.ann_params());
  EXPECT_DOUBLE_EQ(info.tuned_target_recall(), 0.9);
  for (size_t i = 0; i < queries.size(); ++i) EXPECT_EQ(ids(queries[i], ""), by_default[i]);
}

// The lexical index after a SIGKILL: the server left it behind the store
// (it commits it only at a clean stop), and the restart rebuilds it from the
// store, so BM25 finds exactly the acknowledged texts: overwrites' new words,
// not their old ones, no deleted document; and again after its folder is
// deleted while the server is down.
TEST_F(ProcessServerTest, LexicalIndexSurvivesSigkillAndADeletedFolder) {
  ASSERT_OK(Create("lex", 256, v1::TOKEN_DTYPE_UNSPECIFIED, ""));
  std::vector<v1::Document> docs;
  for (int i = 0; i < 40; ++i) {
    v1::Document d;
    d.set_id("t" + std::to_string(i));
    d.set_text("note " + std::to_string(i) +
               (i % 2 ? " about a harbor crew" : " about bread dough"));
    docs.push_back(d);
  }
  ASSERT_OK(Upsert("lex", docs));
  v1::TrainEncoderRequest train;
  train.set_collection("lex");
  v1::TrainEncoderResponse trained;
  ASSERT_OK(Call(&v1::SearchService::Stub::TrainEncoder, train, &trained));
  // After training: an overwrite with new words and deletes.
  v1::Document lighthouse;
  lighthouse.set_id("t3");
  lighthouse.set_text("a lighthouse keeper");
  ASSERT_OK(Upsert("lex", {lighthouse}));
  v1::DeleteResponse deleted;
  ASSERT_OK(Delete("lex", {"t5", "t7"}, &deleted));
  // What BM25 finds for `word`, by id.
  const auto lexical = [&](const std::string& word) {
    v1::SearchRequest req;
    req.set_collection("lex");
    req.set_text(word);
    req.set_top_k(100);
    req.set_retrieval(v1::RETRIEVAL_LEXICAL);
    req.set_rerank(v1::RERANK_MODE_NONE);
    return SearchIds(req);
  };
  const auto check = [&] {
    const std::set<std::string> harbor = lexical("harbor");
    EXPECT_EQ(harbor.size(), 20u - 3u);  // odd ids, less t3, t5, t7
    for (const std::string id : {"t3", "t5", "t7"}) EXPECT_FALSE(harbor.count(id)) << id;
    EXPECT_EQ(lexical("lighthouse"), std::set<std::string>{"t3"});
    EXPECT_EQ(lexical("bread").size(), 20u);
  };
  check();
  const int status = StopServer(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
  ASSERT_NO_FATAL_FAILURE(StartServer());
  check();
  ASSERT_EQ(StopServer(SIGTERM), 0);
  std::filesystem::remove_all(dir_.Sub("collections/lex/lexical"));
  ASSERT_NO_FATAL_FAILURE(StartServer());
  check();
}

TEST_F(ProcessServerTest, GracefulShutdownKeepsData) {
  constexpr uint32_t kDim = 8;
  ASSERT_OK(Create("g", kDim, v1::TOKEN_DTYPE_F32, ""));
  ASSERT_OK(Create("h", kDim, v1::TOKEN_DTYPE_UNSPECIFIED, "Flat"));
  std::mt19937 rng(808);
  std::map<std::string, v1::Document> sent;
  for (int b = 0; b < 3; ++b) {
    std::vector<v1::Document> batch;
    for (int i = 0; i < 20; ++i) {
      const std::string id = "g" + std::to_string(b * 20 + i);
      batch.push_back(MakeDoc(rng, id, kDim, 1 + uint32_t(i % 4), i % 2 == 0));
      sent[id] = batch.back();
    }
    ASSERT_OK(Upsert("g", batch));
  }
  v1::DeleteResponse del;
  ASSERT_OK(Delete("g", {"g0", "g1"}, &del));
  sent.erase("g0");
  sent.erase("g1");
  ASSERT_OK(Upsert("h", {MakeDoc(rng, "only", kDim, 2, true)}));

  const int status = StopServer(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << DescribeWaitStatus(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // It wrote its ANN snapshot (catalog layout: collections/<name>/).
  EXPECT_TRUE(std::filesystem::exists(dir_.Sub("collections/g/ann.snapshot")));

  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::ListCollectionsResponse list;
  ASSERT_OK(List(&list));
  ASSERT_EQ(list.collections_size(), 2);
  EXPECT_EQ(list.collections(0).name(), "g");
  EXPECT_EQ(list.collections(0).config().token_dtype(), v1::TOKEN_DTYPE_F32);
  EXPECT_EQ(list.collections(0).num_documents(), sent.size());
  EXPECT_EQ(list.collections(1).name(), "h");
  EXPECT_EQ(list.collections(1).config().ann_spec(), "Flat");
  EXPECT_EQ(list.collections(1).num_documents(), 1u);

  std::vector<std::string> ids;
  for (const auto& [id, d] : sent) ids.push_back(id);
  ids.push_back("g0");
  v1::GetResponse got;
  ASSERT_OK(Get("g", ids, true, &got));
  ASSERT_EQ(got.documents_size(), int(sent.size()));
  for (const auto& d : got.documents()) ExpectStoredDocument(d, sent[d.id()], kDim, true, 1e-5f);
  EXPECT_EQ(std::vector<std::string>(got.not_found_ids().begin(), got.not_found_ids().end()),
            (std::vector<std::string>{"g0"}));

  // Searchable after the restart.
  const auto pooled = Values(got.documents(5).pooled());
  v1::SearchRequest req = SearchRequestFor("g", pooled, 0, {}, kDim, 3);
  req.set_rerank(v1::RERANK_MODE_NONE);
  v1::SearchResponse resp;
  ASSERT_OK(Search(req, &resp));
  ASSERT_EQ(resp.hits_size(), 3);
  EXPECT_EQ(resp.hits(0).id(), got.documents(5).id());

  // And a second graceful stop works too.
  const int again = StopServer(SIGTERM);
  EXPECT_TRUE(WIFEXITED(again) && WEXITSTATUS(again) == 0) << DescribeWaitStatus(again);
}

// ---------------------------------------------------------------------------
// 8. Health and reflection.

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST_F(ServerTest, HealthServing) {
  // grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""
  // = the whole server; an empty message is zero bytes).
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  const grpc::ByteBuffer request = Buffer("");
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status s = done.get_future().get();
  ASSERT_TRUE(s.ok()) << int(s.error_code()) << " " << s.error_message();
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  EXPECT_EQ(Bytes(response), std::string("\x08\x01", 2));
}

// A minimal protobuf wire-format reader: the length-delimited fields with
// number `field` of `message`.
std::vector<std::string> LengthDelimitedFields(const std::string& message, uint32_t field) {
  std::vector<std::string> out;
  size_t pos = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; pos < message.size() && shift < 64; shift += 7) {
      const uint8_t b = uint8_t(message[pos++]);
      *v |= uint64_t(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  };
  while (pos < message.size()) {
    uint64_t tag = 0;
    if (!varint(&tag)) break;
    const uint32_t wire = uint32_t(tag & 7);
    uint64_t v = 0;
    if (wire == 0) {
      if (!varint(&v)) break;
    } else if (wire == 1) {
      pos += 8;
    } else if (wire == 5) {
      pos += 4;
    } else if (wire == 2) {
      if (!varint(&v) || pos + v > message.size()) break;
      if ((tag >> 3) == field) out.push_back(message.substr(pos, size_t(v)));
      pos += size_t(v);
    } else {
      break;
    }
  }
  return out;
}

// One ServerReflectionInfo exchange (bidi stream): send one request,
// half-close, collect every response.
class ReflectionCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectionCall(grpc::GenericStub* stub, const std::string& request) : request_(Buffer(request)) {
    ctx_.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    stub->PrepareBidiStreamingCall(&ctx_,
                                   "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                   grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    responses_.push_back(Bytes(response_));
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& s) override { done_.set_value(s); }

  // Blocks until the call ends.
  grpc::Status Await() { return done_.get_future().get(); }
  const std::vector<std::string>& responses() const { return responses_; }

 private:
  grpc::ClientContext ctx_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::vector<std::string> responses_;
  std::promise<grpc::Status> done_;
};

TEST_F(ServerTest, ReflectionListsServices) {
  // No reflection protos are installed with this gRPC (1.51), so the
  // messages are hand-encoded: ServerReflectionRequest{list_services: ""}
  // is field 7, length 0; the response's list_services_response is field 6,
  // a ListServiceResponse of ServiceResponse (field 1) with name (field 1).
  grpc::GenericStub generic(channel_);
  ReflectionCall call(&generic, std::string("\x3a\x00", 2));
  const grpc::Status s = call.Await();
  ASSERT_TRUE(s.ok()) << int(s.error_code()) << " " << s.error_message();
  ASSERT_EQ(call.responses().size(), 1u);
  std::set<std::string> services;
  for (const auto& list : LengthDelimitedFields(call.responses()[0], 6)) {
    for (const auto& service : LengthDelimitedFields(list, 1)) {
      for (const auto& name : LengthDelimitedFields(service, 1)) services.insert(name);
    }
  }
  EXPECT_TRUE(services.count("attnsearch.v1.SearchService")) << ::testing::PrintToString(services);
  EXPECT_TRUE(services.count("grpc.health.v1.Health")) << ::testing::PrintToString(services);
}

// ---------------------------------------------------------------------------
// The helper itself: a server that dies before listening is reported with
// its exit status.

// Flags it cannot use: exit status 2 (README), the flag named, nothing
// started.
TEST(ServerProcessTest, UnusableFlagsExitWithStatus2) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--listen", "127.0.0.1:0"}, "--data_dir"},
      {{"--data_dir", data, "--nope"}, "--nope"},
      {{"--data_dir", data, "--log_calls", "verbose"}, "--log_calls"},
      {{"--data_dir", data, "--workers", "-1"}, "--workers"},
      {{"--data_dir", data, "--workers", "100000"}, "--workers"},
      {{"--data_dir", data, "--max_top_k", "-1"}, "--max_top_k"},
      {{"--data_dir", data, "--rebuild_tombstone_ratio", "2"}, "--rebuild_tombstone_ratio"},
      {{"--data_dir", data, "--rebuild_tombstone_ratio", "nan"}, "rebuild_tombstone_ratio"},
      {{"--data_dir", data, "--max_top_k", "0"}, "max_top_k"},
      {{"--data_dir", data, "--inline_reads", "-7"}, "inline_reads"},
  };
  for (const auto& [flags, named] : cases) {
    std::vector<std::string> args = {ATTN_SERVER_BINARY};
    args.insert(args.end(), flags.begin(), flags.end());
    const ProcessRun run = RunBinary(dir.Sub("run.out"), args);
    EXPECT_EQ(run.exit_code(), 2) << named << ": " << run.output;
    EXPECT_NE(run.output.find(named), std::string::npos) << run.output;
    EXPECT_EQ(run.output.find("listening"), std::string::npos) << run.output;
  }
  EXPECT_EQ(RunBinary(dir.Sub("run.out"), {ATTN_SERVER_BINARY, "--help"}).exit_code(), 0);
}

TEST(ServerProcessTest, ReportsExitBeforeListening) {
  TempDir dir;
  const std::string not_a_dir = dir.Sub("file");
  std::fclose(std::fopen(not_a_dir.c_str(), "w"));  // data_dir is a regular file
  ServerProcess server;
  std::string address = "unset";
  EXPECT_NONFATAL_FAILURE(address = server.Start(not_a_dir), "exited with status 1");
  EXPECT_EQ(address, "");
  EXPECT_FALSE(server.running());
}

}  // namespace
}  // namespace attnsearch::testing
