// A table of bad requests sent over gRPC to the server, started with small
// limits. In-process (InProcessServer, with the binary's flags and a real
// loopback port): nothing here needs a process boundary. Each row asserts the exact status code,
// that the message names the field or limit, that the server still serves afterwards and that the
// stored data is unchanged (Get of known documents and the document counts, before and after). The
// table (kind -> code) is printed; src/server/README.md carries it.
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/grpc_status_matchers.h"
#include "server/in_process_server.h"
#include "test_util.h"

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
using grpc::StatusCode;

constexpr uint32_t kDim = 8;       // collection "c"
constexpr uint32_t kBigDim = 512;  // collection "big": bf16, many token rows
constexpr uint32_t kBigRows = 32;
constexpr int kBigDocs = 200;

// The limits the server runs with.
const std::vector<std::string> kLimits = {
    "--max_top_k",           "50", "--max_candidates",   "200",
    "--max_batch_documents", "20", "--max_query_tokens", "16",
    "--max_document_tokens", "32", "--max_request_mb",   "1",
    "--max_message_mb",      "2",  "--no_sync"};

// Deterministic bytes of a message (map entries in key order).
std::string Bytes(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream os(&out);
    google::protobuf::io::CodedOutputStream cos(&os);
    cos.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&cos);
  }
  return out;
}

std::vector<float> Random(std::mt19937& rng, size_t n) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

void SetMatrix(v1::Matrix* m, uint32_t rows, uint32_t cols, const std::vector<float>& values) {
  m->set_rows(rows);
  m->set_cols(cols);
  m->mutable_values()->Assign(values.begin(), values.end());
}

// A valid document of "c": pooled, 2 token rows with texts and spans, text
// and a numeric metadata field.
v1::Document Good(const std::string& id, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  v1::Document d;
  d.set_id(id);
  d.set_text("alpha beta");
  (*d.mutable_metadata())["price"] = "12.5";
  (*d.mutable_metadata())["kind"] = "k" + std::to_string(seed % 3);
  const auto p = Random(rng, kDim);
  d.mutable_pooled()->Assign(p.begin(), p.end());
  SetMatrix(d.mutable_tokens(), 2, kDim, Random(rng, 2 * kDim));
  d.add_token_texts("alpha");
  d.add_token_texts("beta");
  auto* s = d.add_token_spans();
  s->set_begin(0);
  s->set_end(5);
  s = d.add_token_spans();
  s->set_begin(6);
  s->set_end(10);
  return d;
}

v1::Document BigDoc(const std::string& id, uint32_t seed) {
  std::mt19937 rng(seed);
  v1::Document d;
  d.set_id(id);
  SetMatrix(d.mutable_tokens(), kBigRows, kBigDim, Random(rng, size_t(kBigRows) * kBigDim));
  return d;
}

class BadInputTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string address = server_.Start(dir_.path(), kLimits);
    ASSERT_FALSE(address.empty());
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);  // so the server's limit is what is hit
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = v1::SearchService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));

    v1::CreateCollectionRequest create;
    create.set_name("c");
    create.mutable_config()->set_dim(kDim);
    create.mutable_config()->add_numeric_fields("price");
    v1::CreateCollectionResponse cresp;
    ASSERT_OK(stub_->CreateCollection(Ctx().get(), create, &cresp));
    v1::UpsertRequest up;
    up.set_collection("c");
    for (int i = 0; i < 6; ++i) *up.add_documents() = Good("known" + std::to_string(i), i + 1);
    v1::UpsertResponse uresp;
    ASSERT_OK(stub_->Upsert(Ctx().get(), up, &uresp));

    create.set_name("big");
    create.mutable_config()->set_dim(kBigDim);
    create.mutable_config()->clear_numeric_fields();
    create.mutable_config()->set_token_dtype(v1::TOKEN_DTYPE_BF16);
    ASSERT_OK(stub_->CreateCollection(Ctx().get(), create, &cresp));
    for (int b = 0; b < kBigDocs / 10; ++b) {
      v1::UpsertRequest req;
      req.set_collection("big");
      for (int i = 0; i < 10; ++i) {
        *req.add_documents() = BigDoc("b" + std::to_string(b * 10 + i), uint32_t(b * 10 + i));
      }
      ASSERT_OK(stub_->Upsert(Ctx().get(), req, &uresp));
    }
    baseline_ = Snapshot();
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return ctx;
  }

  // Everything observable about the stored state.
  std::string Snapshot() {
    std::string out;
    v1::ListCollectionsResponse list;
    EXPECT_OK(stub_->ListCollections(Ctx().get(), {}, &list));
    // What the files take on disk moves with RocksDB's own flushes, and
    // the vectors pending with the background inserter.
    for (auto& c : *list.mutable_collections()) {
      c.clear_disk();
      c.clear_ann_pending();
    }
    out += Bytes(list);
    v1::GetRequest get;
    get.set_collection("c");
    for (int i = 0; i < 6; ++i) get.add_ids("known" + std::to_string(i));
    get.add_ids("new");
    get.add_ids("x");
    get.set_include_vectors(true);
    v1::GetResponse got;
    EXPECT_OK(stub_->Get(Ctx().get(), get, &got));
    EXPECT_EQ(got.documents_size(), 6);
    out += Bytes(got);
    get.set_collection("big");
    get.clear_ids();
    get.add_ids("b0");
    get.add_ids("b199");
    get.add_ids("x");
    got.Clear();
    EXPECT_OK(stub_->Get(Ctx().get(), get, &got));
    EXPECT_EQ(got.documents_size(), 2);
    out += Bytes(got);
    return out;
  }

  grpc::Status Upsert(const std::string& collection, const std::vector<v1::Document>& docs) {
    v1::UpsertRequest req;
    req.set_collection(collection);
    for (const auto& d : docs) *req.add_documents() = d;
    v1::UpsertResponse resp;
    return stub_->Upsert(Ctx().get(), req, &resp);
  }

  // A batch of "c": a valid replacement of known0, a valid new document,
  // then `bad`; all or nothing.
  grpc::Status UpsertWithBad(const v1::Document& bad) {
    v1::Document replace = Good("known0", 99);
    replace.set_text("replaced text");
    replace.clear_token_spans();
    return Upsert("c", {replace, Good("new", 98), bad});
  }

  static v1::SearchRequest GoodSearch(const std::string& collection = "c", uint32_t dim = kDim) {
    std::mt19937 rng(7);
    v1::SearchRequest r;
    r.set_collection(collection);
    const auto p = Random(rng, dim);
    r.mutable_vectors()->mutable_pooled()->Assign(p.begin(), p.end());
    SetMatrix(r.mutable_vectors()->mutable_tokens(), 2, dim, Random(rng, 2 * dim));
    r.set_top_k(3);
    return r;
  }

  grpc::Status Search(const v1::SearchRequest& r) {
    v1::SearchResponse resp;
    grpc::Status s = stub_->Search(Ctx().get(), r, &resp);
    if (!s.ok()) EXPECT_EQ(resp.hits_size(), 0);
    return s;
  }

  grpc::Status Create(const std::string& name, const v1::CollectionConfig& config) {
    v1::CreateCollectionRequest req;
    req.set_name(name);
    *req.mutable_config() = config;
    v1::CreateCollectionResponse resp;
    return stub_->CreateCollection(Ctx().get(), req, &resp);
  }

  static v1::CollectionConfig Config(uint32_t dim) {
    v1::CollectionConfig c;
    c.set_dim(dim);
    return c;
  }

  TempDir dir_;
  InProcessServer server_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
  std::string baseline_;
};

struct Case {
  std::string kind;
  StatusCode code;
  std::string names;  // the message must contain it
  std::function<grpc::Status()> call;
};

TEST_F(BadInputTableTest, EveryBadRequestGetsItsCodeAndChangesNothing) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  using SC = StatusCode;
  auto doc = [](std::function<void(v1::Document*)> f) {
    v1::Document d = Good("x", 5);
    f(&d);
    return d;
  };
  auto search = [](std::function<void(v1::SearchRequest*)> f) {
    v1::SearchRequest r = GoodSearch();
    f(&r);
    return r;
  };
  std::vector<Case> cases = {
      // --- Upsert: each bad document in a batch with two good ones.
      {"Upsert: pooled of the wrong dimension", SC::INVALID_ARGUMENT, "documents[2].pooled",
       [&] { return UpsertWithBad(doc([](v1::Document* d) { d->add_pooled(1.f); })); }},
      {"Upsert: an empty metadata key", SC::INVALID_ARGUMENT,
       "documents[2].metadata: a key must not be empty",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { (*d->mutable_metadata())[""] = "x"; }));
       }},
      {"Upsert: token matrix cols != dim", SC::INVALID_ARGUMENT, "documents[2].tokens.cols",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           SetMatrix(d->mutable_tokens(), 2, kDim - 1, std::vector<float>(2 * (kDim - 1), .5f));
         }));
       }},
      {"Upsert: rows x cols != values", SC::INVALID_ARGUMENT, "documents[2].tokens",
       [&] {
         return UpsertWithBad(
             doc([](v1::Document* d) { d->mutable_tokens()->mutable_values()->RemoveLast(); }));
       }},
      {"Upsert: values and packed data both", SC::INVALID_ARGUMENT,
       "documents[2].tokens: give values or data, not both",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { d->mutable_tokens()->set_data("ab"); }));
       }},
      {"Upsert: packed data of the wrong size", SC::INVALID_ARGUMENT,
       "documents[2].tokens.data: rows x cols = 2 x 8 = 16 values of 2 bytes, but 31 bytes",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           d->mutable_tokens()->clear_values();
           d->mutable_tokens()->set_encoding(v1::VALUE_ENCODING_BF16);
           d->mutable_tokens()->set_data(std::string(31, '\x3f'));
         }));
       }},
      {"Upsert: unknown packed encoding", SC::INVALID_ARGUMENT,
       "documents[2].tokens.encoding: unknown value 9",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           d->mutable_tokens()->clear_values();
           d->mutable_tokens()->set_encoding(v1::ValueEncoding(9));
           d->mutable_tokens()->set_data(std::string(32, '\x3f'));
         }));
       }},
      {"Upsert: NaN in pooled", SC::INVALID_ARGUMENT, "documents[2].pooled",
       [&] { return UpsertWithBad(doc([&](v1::Document* d) { d->set_pooled(1, nan); })); }},
      {"Upsert: inf in tokens", SC::INVALID_ARGUMENT, "documents[2].tokens",
       [&] {
         return UpsertWithBad(
             doc([&](v1::Document* d) { d->mutable_tokens()->set_values(3, inf); }));
       }},
      {"Upsert: zero pooled vector", SC::INVALID_ARGUMENT, "documents[2].pooled",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           for (int k = 0; k < d->pooled_size(); ++k) d->set_pooled(k, 0.f);
         }));
       }},
      {"Upsert: token row of zeros beside subnormals", SC::INVALID_ARGUMENT,
       "documents[2].tokens: row 1 has zero norm",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           std::vector<float> v(2 * kDim, 0.f);
           v[0] = 1e-45f;
           SetMatrix(d->mutable_tokens(), 2, kDim, v);
         }));
       }},
      {"Upsert: token rows that cancel out, no pooled", SC::INVALID_ARGUMENT,
       "documents[2].tokens: the token vectors cancel out",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           std::vector<float> v(2 * kDim, 0.f);
           v[0] = 1.f;
           v[kDim] = -1.f;
           SetMatrix(d->mutable_tokens(), 2, kDim, v);
           d->clear_pooled();
         }));
       }},
      {"Upsert: empty id", SC::INVALID_ARGUMENT, "documents[2].id",
       [&] { return UpsertWithBad(doc([](v1::Document* d) { d->set_id(""); })); }},
      {"Upsert: id over 512 bytes", SC::INVALID_ARGUMENT, "documents[2].id",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { d->set_id(std::string(513, 'i')); }));
       }},
      {"Upsert: duplicate id in the batch", SC::INVALID_ARGUMENT, "documents[2].id",
       [&] { return UpsertWithBad(doc([](v1::Document* d) { d->set_id("new"); })); }},
      {"Upsert: no text and no vectors", SC::INVALID_ARGUMENT, "documents[2]",
       [&] {
         v1::Document d;
         d.set_id("x");
         return UpsertWithBad(d);
       }},
      {"Upsert: token_texts count != rows", SC::INVALID_ARGUMENT, "documents[2].token_texts",
       [&] { return UpsertWithBad(doc([](v1::Document* d) { d->add_token_texts("extra"); })); }},
      {"Upsert: token_spans count != rows", SC::INVALID_ARGUMENT, "documents[2].token_spans",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { d->mutable_token_spans()->RemoveLast(); }));
       }},
      {"Upsert: token span outside the text", SC::INVALID_ARGUMENT, "documents[2].token_spans[1]",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { d->mutable_token_spans(1)->set_end(99); }));
       }},
      {"Upsert: token span begin > end", SC::INVALID_ARGUMENT, "documents[2].token_spans[0]",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           d->mutable_token_spans(0)->set_begin(4);
           d->mutable_token_spans(0)->set_end(2);
         }));
       }},
      {"Upsert: numeric field not a number", SC::INVALID_ARGUMENT,
       "documents[2].metadata[\"price\"]",
       [&] {
         return UpsertWithBad(
             doc([](v1::Document* d) { (*d->mutable_metadata())["price"] = "cheap"; }));
       }},
      {"Upsert: numeric field NaN", SC::INVALID_ARGUMENT, "documents[2].metadata[\"price\"]",
       [&] {
         return UpsertWithBad(
             doc([](v1::Document* d) { (*d->mutable_metadata())["price"] = "nan"; }));
       }},
      {"Upsert: more token rows than --max_document_tokens", SC::INVALID_ARGUMENT,
       "documents[2].tokens",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) {
           d->clear_token_texts();
           d->clear_token_spans();
           SetMatrix(d->mutable_tokens(), 33, kDim, std::vector<float>(33 * kDim, .5f));
         }));
       }},
      {"Upsert: more documents than --max_batch_documents", SC::INVALID_ARGUMENT, "documents",
       [&] {
         std::vector<v1::Document> docs;
         for (int i = 0; i < 21; ++i) docs.push_back(Good("n" + std::to_string(i), i));
         return Upsert("c", docs);
       }},
      {"Upsert: text without a word (encoder untrained)", SC::INVALID_ARGUMENT, "documents[2].text",
       [&] {
         v1::Document d;
         d.set_id("x");
         d.set_text("  ,;  ");
         return UpsertWithBad(d);
       }},
      // gRPC 1.51's callback server answers a request it cannot parse with
      // UNIMPLEMENTED and an empty message; the engine never sees it.
      {"Upsert: invalid UTF-8 in text (rejected by the protobuf parser)", SC::UNIMPLEMENTED, "",
       [&] {
         return UpsertWithBad(doc([](v1::Document* d) { d->set_text("bad \xff\xfe utf8"); }));
       }},
      {"Upsert: batch over --max_request_mb", SC::RESOURCE_EXHAUSTED, "max_request_mb",
       [&] {
         std::vector<v1::Document> docs;
         for (int i = 0; i < 20; ++i) docs.push_back(BigDoc("new" + std::to_string(i), 1000 + i));
         return Upsert("big", docs);
       }},
      {"Upsert: message over --max_message_mb", SC::RESOURCE_EXHAUSTED, "max",
       [&] {
         v1::Document d = Good("x", 3);
         d.set_text(std::string(3 << 20, 'a'));
         d.clear_token_spans();
         return UpsertWithBad(d);
       }},
      {"Upsert: unknown collection", SC::NOT_FOUND, "nope",
       [&] { return Upsert("nope", {Good("x")}); }},
      {"UpsertStream: a bad message", SC::INVALID_ARGUMENT, "documents[0].pooled",
       [&] {
         auto ctx = Ctx();
         v1::UpsertResponse resp;
         auto w = stub_->UpsertStream(ctx.get(), &resp);
         v1::UpsertRequest m;
         m.set_collection("c");
         v1::Document bad = Good("x");
         bad.add_pooled(1.f);
         *m.add_documents() = bad;
         w->Write(m);
         w->WritesDone();
         return w->Finish();
       }},
      // --- Get and Delete.
      {"Get: more ids than --max_batch_documents", SC::INVALID_ARGUMENT, "ids",
       [&] {
         v1::GetRequest r;
         r.set_collection("c");
         for (int i = 0; i < 21; ++i) r.add_ids("known0");
         v1::GetResponse resp;
         return stub_->Get(Ctx().get(), r, &resp);
       }},
      {"Delete: an empty id", SC::INVALID_ARGUMENT, "ids[1]",
       [&] {
         v1::DeleteRequest r;
         r.set_collection("c");
         r.add_ids("known1");
         r.add_ids("");
         v1::DeleteResponse resp;
         return stub_->Delete(Ctx().get(), r, &resp);
       }},
      {"Delete: unknown collection", SC::NOT_FOUND, "nope",
       [&] {
         v1::DeleteRequest r;
         r.set_collection("nope");
         r.add_ids("known1");
         v1::DeleteResponse resp;
         return stub_->Delete(Ctx().get(), r, &resp);
       }},
      // --- Search.
      {"Search: top_k 0", SC::INVALID_ARGUMENT, "top_k",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_top_k(0); })); }},
      {"Search: top_k over --max_top_k", SC::INVALID_ARGUMENT, "top_k",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_top_k(51); })); }},
      {"Search: candidates over --max_candidates", SC::INVALID_ARGUMENT, "candidates",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_candidates(201); })); }},
      {"Search: candidates < top_k", SC::INVALID_ARGUMENT, "candidates",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           r->set_top_k(10);
           r->set_candidates(5);
         }));
       }},
      {"Search: more query token rows than --max_query_tokens", SC::INVALID_ARGUMENT,
       "query.tokens",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           SetMatrix(r->mutable_vectors()->mutable_tokens(), 17, kDim,
                     std::vector<float>(17 * kDim, .5f));
         }));
       }},
      {"Search: pooled of the wrong dimension", SC::INVALID_ARGUMENT, "query.pooled",
       [&] {
         return Search(search([](v1::SearchRequest* r) { r->mutable_vectors()->add_pooled(1.f); }));
       }},
      {"Search: query tokens cols != dim", SC::INVALID_ARGUMENT, "query.tokens.cols",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           SetMatrix(r->mutable_vectors()->mutable_tokens(), 1, kDim + 1,
                     std::vector<float>(kDim + 1, .5f));
         }));
       }},
      {"Search: NaN in the query", SC::INVALID_ARGUMENT, "query.pooled",
       [&] {
         return Search(
             search([&](v1::SearchRequest* r) { r->mutable_vectors()->set_pooled(0, nan); }));
       }},
      {"Search: inf in query tokens", SC::INVALID_ARGUMENT, "query.tokens",
       [&] {
         return Search(search([&](v1::SearchRequest* r) {
           r->mutable_vectors()->mutable_tokens()->set_values(1, -inf);
         }));
       }},
      {"Search: no query", SC::INVALID_ARGUMENT, "query",
       [&] { return Search(search([](v1::SearchRequest* r) { r->clear_query(); })); }},
      {"Search: negative token weight", SC::INVALID_ARGUMENT, "query.token_weights[1]",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           r->mutable_vectors()->add_token_weights(1.f);
           r->mutable_vectors()->add_token_weights(-1.f);
         }));
       }},
      {"Search: token_weights count != rows", SC::INVALID_ARGUMENT, "query.token_weights",
       [&] {
         return Search(
             search([](v1::SearchRequest* r) { r->mutable_vectors()->add_token_weights(1.f); }));
       }},
      {"Search: two token weights for a pooled-only query (one token)", SC::INVALID_ARGUMENT,
       "query.token_weights: expected 1 values, got 2",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           r->mutable_vectors()->clear_tokens();
           r->mutable_vectors()->add_token_weights(1.f);
           r->mutable_vectors()->add_token_weights(1.f);
         }));
       }},
      {"Search: highlight_pre without highlight_post", SC::INVALID_ARGUMENT,
       "highlight_post: give it with highlight_pre",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_highlight_pre("<b>"); })); }},
      {"Search: fusion_weight with SEMANTIC retrieval", SC::INVALID_ARGUMENT,
       "fusion_weight: fuses with BM25",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_fusion_weight(0.5f); })); }},
      {"Search: negative temperature", SC::INVALID_ARGUMENT, "temperature",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_temperature(-0.5f); })); }},
      {"Search: temperature too small for 1/τ in float", SC::INVALID_ARGUMENT,
       "is below the smallest allowed, 1e-30",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_temperature(1e-40f); })); }},
      {"Search: token weights whose sum overflows a score", SC::INVALID_ARGUMENT,
       "query.token_weights: they sum to",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           r->mutable_vectors()->add_token_weights(3e38f);
           r->mutable_vectors()->add_token_weights(3e38f);
         }));
       }},
      {"Search: NaN temperature", SC::INVALID_ARGUMENT, "temperature",
       [&] { return Search(search([&](v1::SearchRequest* r) { r->set_temperature(nan); })); }},
      {"Search: unknown rerank mode", SC::INVALID_ARGUMENT, "rerank",
       [&] {
         return Search(
             search([](v1::SearchRequest* r) { r->set_rerank(static_cast<v1::RerankMode>(9)); }));
       }},
      {"Search: ann_params not a number", SC::INVALID_ARGUMENT, "ann_params",
       [&] {
         return Search(search([](v1::SearchRequest* r) { r->set_ann_params("efSearch=abc"); }));
       }},
      {"Search: unknown ann_params knob", SC::INVALID_ARGUMENT, "ann_params",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_ann_params("bogus=3"); })); }},
      // A message quoting a 20 KB input is cut, so that it still fits gRPC's
      // metadata (the client got RESOURCE_EXHAUSTED about the metadata).
      {"Search: a 20 KB ann_params", SC::INVALID_ARGUMENT, "bytes, cut)",
       [&] {
         return Search(search(
             [](v1::SearchRequest* r) { r->set_ann_params(std::string(20000, 'x') + "=1"); }));
       }},
      {"Search: a 20 KB collection name", SC::NOT_FOUND, "bytes, cut)",
       [&] {
         return Search(
             search([](v1::SearchRequest* r) { r->set_collection(std::string(20000, 'c')); }));
       }},
      {"Search: filter with an empty key", SC::INVALID_ARGUMENT, "filter.must[0].key",
       [&] {
         return Search(search(
             [](v1::SearchRequest* r) { r->mutable_filter()->add_must()->add_values("v"); }));
       }},
      {"Search: range on a field that is not numeric", SC::INVALID_ARGUMENT, "filter.ranges[0].key",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           auto* rc = r->mutable_filter()->add_ranges();
           rc->set_key("kind");
           rc->set_gte(1);
         }));
       }},
      {"Search: range with no bound", SC::INVALID_ARGUMENT, "filter.ranges[0]",
       [&] {
         return Search(search(
             [](v1::SearchRequest* r) { r->mutable_filter()->add_ranges()->set_key("price"); }));
       }},
      {"Search: range lower bound above the upper", SC::INVALID_ARGUMENT, "filter.ranges[0]",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           auto* rc = r->mutable_filter()->add_ranges();
           rc->set_key("price");
           rc->set_gte(10);
           rc->set_lt(5);
         }));
       }},
      {"Search: range with both gt and gte", SC::INVALID_ARGUMENT, "filter.ranges[0]",
       [&] {
         return Search(search([](v1::SearchRequest* r) {
           auto* rc = r->mutable_filter()->add_ranges();
           rc->set_key("price");
           rc->set_gte(1);
           rc->set_gt(1);
         }));
       }},
      {"Search: range bound NaN", SC::INVALID_ARGUMENT, "filter.ranges[0]",
       [&] {
         return Search(search([&](v1::SearchRequest* r) {
           auto* rc = r->mutable_filter()->add_ranges();
           rc->set_key("price");
           rc->set_lte(std::nan(""));
         }));
       }},
      {"Search: text query before TrainEncoder", SC::FAILED_PRECONDITION, "text",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_text("alpha"); })); }},
      {"Search: candidates' tokens over --max_request_mb", SC::RESOURCE_EXHAUSTED, "max_request_mb",
       [&] {
         v1::SearchRequest r = GoodSearch("big", kBigDim);
         r.set_candidates(200);
         return Search(r);
       }},
      {"Search: unknown collection", SC::NOT_FOUND, "nope",
       [&] { return Search(search([](v1::SearchRequest* r) { r->set_collection("nope"); })); }},
      // --- Collections.
      {"CreateCollection: name with a space", SC::INVALID_ARGUMENT, "name",
       [&] { return Create("bad name", Config(4)); }},
      {"CreateCollection: name '..'", SC::INVALID_ARGUMENT, "name",
       [&] { return Create("..", Config(4)); }},
      {"CreateCollection: name of 65 characters", SC::INVALID_ARGUMENT, "name",
       [&] { return Create(std::string(65, 'n'), Config(4)); }},
      {"CreateCollection: dim 0", SC::INVALID_ARGUMENT, "config.dim",
       [&] { return Create("d", Config(0)); }},
      {"CreateCollection: dim 4097", SC::INVALID_ARGUMENT, "config.dim",
       [&] { return Create("d", Config(4097)); }},
      {"CreateCollection: unknown token dtype", SC::INVALID_ARGUMENT, "config.token_dtype",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.set_token_dtype(static_cast<v1::TokenDtype>(42));
         return Create("d", c);
       }},
      {"CreateCollection: bad ann_spec", SC::INVALID_ARGUMENT, "ann_spec",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.set_ann_spec("NoSuchIndex");
         return Create("d", c);
       }},
      {"CreateCollection: an ann_spec the collection cannot use", SC::INVALID_ARGUMENT,
       "ann_spec: 'IDMap,Flat'",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.set_ann_spec("IDMap,Flat");
         return Create("d", c);
       }},
      {"CreateCollection: a residual codec's field with rows", SC::INVALID_ARGUMENT,
       "config.token_codec.bits: applies to the residual codec only",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.mutable_token_codec()->set_name("rows");
         c.mutable_token_codec()->set_bits(3);
         return Create("d", c);
       }},
      {"CreateCollection: keep_full_precision without a codec", SC::INVALID_ARGUMENT,
       "config.token_codec.keep_full_precision",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.mutable_token_codec()->set_keep_full_precision(false);
         return Create("d", c);
       }},
      {"CreateCollection: bad numeric field name", SC::INVALID_ARGUMENT, "config.numeric_fields[0]",
       [&] {
         v1::CollectionConfig c = Config(4);
         c.add_numeric_fields("has space");
         return Create("d", c);
       }},
      {"CreateCollection: name taken", SC::ALREADY_EXISTS, "c",
       [&] { return Create("c", Config(16)); }},
      {"DropCollection: unknown collection", SC::NOT_FOUND, "nope",
       [&] {
         v1::DropCollectionRequest r;
         r.set_name("nope");
         v1::DropCollectionResponse resp;
         return stub_->DropCollection(Ctx().get(), r, &resp);
       }},
      {"DropCollection: no name", SC::INVALID_ARGUMENT, "name: must name a collection",
       [&] {
         v1::DropCollectionRequest r;
         v1::DropCollectionResponse resp;
         return stub_->DropCollection(Ctx().get(), r, &resp);
       }},
      {"GetCollection: no name", SC::INVALID_ARGUMENT, "name: must name a collection",
       [&] {
         v1::GetCollectionRequest r;
         v1::GetCollectionResponse resp;
         return stub_->GetCollection(Ctx().get(), r, &resp);
       }},
      {"TrainCodec: no collection", SC::INVALID_ARGUMENT, "collection: must name a collection",
       [&] {
         v1::TrainCodecRequest r;
         v1::TrainCodecResponse resp;
         return stub_->TrainCodec(Ctx().get(), r, &resp);
       }},
      // --- Tuning and training.
      {"TuneIndex: target_recall 0", SC::INVALID_ARGUMENT, "target_recall",
       [&] {
         v1::TuneIndexRequest r;
         r.set_collection("c");
         v1::TuneIndexResponse resp;
         return stub_->TuneIndex(Ctx().get(), r, &resp);
       }},
      {"TuneIndex: target_recall 1.5", SC::INVALID_ARGUMENT, "target_recall",
       [&] {
         v1::TuneIndexRequest r;
         r.set_collection("c");
         r.set_target_recall(1.5);
         v1::TuneIndexResponse resp;
         return stub_->TuneIndex(Ctx().get(), r, &resp);
       }},
      {"TuneIndex: k over 1000", SC::INVALID_ARGUMENT, "k",
       [&] {
         v1::TuneIndexRequest r;
         r.set_collection("c");
         r.set_target_recall(0.9);
         r.set_k(1001);
         v1::TuneIndexResponse resp;
         return stub_->TuneIndex(Ctx().get(), r, &resp);
       }},
      {"TrainEncoder: window over 64", SC::INVALID_ARGUMENT, "window",
       [&] {
         v1::TrainEncoderRequest r;
         r.set_collection("big");
         r.mutable_params()->set_window(65);
         v1::TrainEncoderResponse resp;
         return stub_->TrainEncoder(Ctx().get(), r, &resp);
       }},
  };

  std::string table = "| request | code | message |\n|---|---|---|\n";
  for (const Case& c : cases) {
    SCOPED_TRACE(c.kind);
    const grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code)
        << "got " << absl::StatusCodeToString(absl::StatusCode(s.error_code())) << ": "
        << s.error_message();
    EXPECT_NE(s.error_message().find(c.names), std::string::npos)
        << "message '" << s.error_message() << "' does not name '" << c.names << "'";
    std::string message = s.error_message().substr(0, 110);
    for (char& ch : message) {
      if (ch == '|') ch = '/';
    }
    table += "| " + c.kind + " | " + absl::StatusCodeToString(absl::StatusCode(s.error_code())) +
             " | " + message + " |\n";
    // Still serving, nothing changed.
    EXPECT_TRUE(Snapshot() == baseline_) << "the stored state changed";
  }
  std::printf("%zu kinds of bad request:\n%s", cases.size(), table.c_str());
  EXPECT_GE(cases.size(), 30u);

  // Good requests within the limits still work.
  v1::SearchRequest r = GoodSearch("big", kBigDim);
  r.set_candidates(20);  // 20 x 32 rows x 1 KiB: within 1 MiB
  v1::SearchResponse resp;
  EXPECT_OK(stub_->Search(Ctx().get(), r, &resp));
  EXPECT_EQ(resp.hits_size(), 3);
  EXPECT_OK(stub_->Search(Ctx().get(), GoodSearch(), &resp));
}

// Vectors of subnormal values have a direction: they are stored as finite
// unit vectors (normalised in double), and no search scores NaN or
// infinity, whether the documents or the query are subnormal.
TEST_F(BadInputTableTest, SubnormalVectorsAreNormalisedAndScoresStayFinite) {
  ASSERT_OK(Create("tiny", Config(4)));
  const float t = 1e-45f;
  v1::Document tiny, rows, a, b;
  tiny.set_id("tiny");
  const auto assign = [](google::protobuf::RepeatedField<float>* f, std::vector<float> v) {
    f->Assign(v.begin(), v.end());
  };
  assign(tiny.mutable_pooled(), {t, t, t, t});
  rows.set_id("rows");  // subnormal token rows, a normal pooled vector
  assign(rows.mutable_pooled(), {0.f, 0.f, 1.f, 0.f});
  SetMatrix(rows.mutable_tokens(), 2, 4, {t, t, t, t, 3e-39f, 0.f, 0.f, 0.f});
  a.set_id("a");
  assign(a.mutable_pooled(), {1.f, 0.f, 0.f, 0.f});
  b.set_id("b");
  assign(b.mutable_pooled(), {0.f, 1.f, 0.f, 0.f});
  ASSERT_OK(Upsert("tiny", {tiny, rows, a, b}));

  v1::GetRequest get;
  get.set_collection("tiny");
  get.add_ids("tiny");
  get.add_ids("rows");
  get.set_include_vectors(true);
  v1::GetResponse got;
  ASSERT_OK(stub_->Get(Ctx().get(), get, &got));
  ASSERT_EQ(got.documents_size(), 2);
  for (const v1::Document& d : got.documents()) {
    std::vector<float> all(d.pooled().begin(), d.pooled().end());
    all.insert(all.end(), d.tokens().values().begin(), d.tokens().values().end());
    ASSERT_EQ(all.size() % 4, 0u);
    for (size_t r = 0; r < all.size() / 4; ++r) {
      double ss = 0;
      for (size_t k = 0; k < 4; ++k) {
        ASSERT_TRUE(std::isfinite(all[r * 4 + k])) << d.id() << " row " << r;
        ss += double(all[r * 4 + k]) * all[r * 4 + k];
      }
      EXPECT_NEAR(std::sqrt(ss), 1.0, 1e-2) << d.id() << " row " << r;
    }
  }
  EXPECT_NEAR(got.documents(0).pooled(0), 0.5f, 1e-3);

  for (const std::vector<float>& q : {std::vector<float>{0.9f, 0.1f, 0.f, 0.f},
                                      std::vector<float>{1e-40f, 1e-40f, 1e-40f, 1e-40f}}) {
    for (uint32_t candidates : {2u, 4u}) {
      v1::SearchRequest r;
      r.set_collection("tiny");
      r.mutable_vectors()->mutable_pooled()->Assign(q.begin(), q.end());
      r.set_top_k(candidates);
      r.set_candidates(candidates);
      v1::SearchResponse resp;
      ASSERT_OK(stub_->Search(Ctx().get(), r, &resp));
      ASSERT_GE(resp.hits_size(), 2);
      for (int i = 0; i < resp.hits_size(); ++i) {
        EXPECT_TRUE(std::isfinite(resp.hits(i).score())) << resp.hits(i).id();
        if (i > 0) EXPECT_GE(resp.hits(i - 1).score(), resp.hits(i).score()) << i;
      }
      if (q[0] > 0.5f) EXPECT_EQ(resp.hits(0).id(), "a");
      if (q[0] < 1e-30f && candidates == 4) {
        EXPECT_EQ(resp.hits(0).id(), "tiny");  // the same direction, scoring 1
        EXPECT_NEAR(resp.hits(0).score(), 1.0, 1e-2);
      }
    }
  }
}

}  // namespace
}  // namespace attnsearch::testing
