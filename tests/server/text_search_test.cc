// Integration tests of text search through the server, in-process
// (InProcessServer, with the binary's flags, on an ephemeral loopback port;
// the restart is a graceful stop, so no process boundary is needed); text-only documents are
// upserted over gRPC, the encoder is trained with the TrainEncoder RPC, and text queries are
// answered with explanations and snippets, also after a restart.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/grpc_status_matchers.h"
#include "server/in_process_server.h"
#include "test_util.h"

namespace attnsearch::testing {
namespace {

namespace v1 = attnsearch::v1;
using grpc::StatusCode;

constexpr auto kCallTimeout = std::chrono::seconds(60);
constexpr uint32_t kDim = 256;

// A seeded corpus on three topics plus documents with words found nowhere
// else ("turbine", "saffron", "cello").
std::vector<v1::Document> Corpus(size_t n, uint32_t seed = 17) {
  const std::vector<std::vector<std::string>> topics = {
      {"solar", "panel", "grid", "battery", "voltage", "power", "energy", "cable"},
      {"recipe", "oven", "flour", "butter", "sugar", "bake", "dough", "bread"},
      {"ship", "harbor", "sailor", "anchor", "deck", "voyage", "captain", "crew"},
  };
  const std::vector<std::string> common = {"the", "a",  "of",  "and", "with", "in",
                                           "on",  "is", "new", "old", "some", "near"};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<v1::Document> out;
  for (size_t i = 0; i < n; ++i) {
    const auto& topic = topics[i % topics.size()];
    std::string s;
    for (int w = 0; w < 12; ++w) {
      const auto& pool = unit(rng) < 0.5 ? topic : common;
      s += (w ? " " : "") + pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
    }
    v1::Document d;
    d.set_id("t" + std::to_string(i));
    d.set_text(s + ".");
    (*d.mutable_metadata())["topic"] = std::to_string(i % topics.size());
    out.push_back(d);
  }
  for (const auto& [id, text] : std::vector<std::pair<std::string, std::string>>{
           {"turbine", "The old wind Turbine on the northern ridge feeds the grid."},
           {"saffron", "A recipe for risotto with saffron and butter."},
           {"cello", "The cello played a slow melody near the harbor."}}) {
    v1::Document d;
    d.set_id(id);
    d.set_text(text);
    out.push_back(d);
  }
  return out;
}

class TextSearchTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer() {
    const std::string address = server_.Start(dir_.path());
    ASSERT_FALSE(address.empty());
    stub_ = NewSearchStub(address);
  }

  int StopServer(int sig) {
    stub_.reset();
    EXPECT_TRUE(server_.Kill(sig));
    return server_.Wait();
  }

  template <typename Req, typename Resp>
  using Method = grpc::Status (v1::SearchService::Stub::*)(grpc::ClientContext*, const Req&, Resp*);
  template <typename Req, typename Resp>
  grpc::Status Call(Method<Req, Resp> method, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    return (stub_.get()->*method)(&ctx, req, resp);
  }

  grpc::Status Create(const std::string& name) {
    v1::CreateCollectionRequest req;
    req.set_name(name);
    req.mutable_config()->set_dim(kDim);
    v1::CreateCollectionResponse resp;
    return Call(&v1::SearchService::Stub::CreateCollection, req, &resp);
  }

  grpc::Status Upsert(const std::string& collection, const std::vector<v1::Document>& docs,
                      uint64_t* upserted = nullptr) {
    v1::UpsertResponse resp;
    grpc::Status s =
        Call(&v1::SearchService::Stub::Upsert, MakeUpsertRequest(collection, docs), &resp);
    if (upserted) *upserted = resp.upserted();
    return s;
  }

  grpc::Status Train(const std::string& collection, v1::TrainEncoderResponse* resp) {
    v1::TrainEncoderRequest req;
    req.set_collection(collection);
    return Call(&v1::SearchService::Stub::TrainEncoder, req, resp);
  }

  grpc::Status GetCollection(const std::string& name, v1::CollectionInfo* info) {
    v1::GetCollectionRequest req;
    req.set_name(name);
    v1::GetCollectionResponse resp;
    grpc::Status s = Call(&v1::SearchService::Stub::GetCollection, req, &resp);
    *info = resp.collection();
    return s;
  }

  static v1::SearchRequest TextQuery(const std::string& collection, const std::string& text,
                                     uint32_t top_k, bool explain = false) {
    v1::SearchRequest req;
    req.set_collection(collection);
    req.set_text(text);
    req.set_top_k(top_k);
    req.set_explain(explain);
    req.set_include_text(true);
    return req;
  }

  grpc::Status Search(const v1::SearchRequest& req, v1::SearchResponse* resp) {
    return Call(&v1::SearchService::Stub::Search, req, resp);
  }

  // The first hit's id for a text query ("" on error, recorded).
  std::string TopHit(const std::string& collection, const std::string& text) {
    v1::SearchResponse resp;
    const grpc::Status s = Search(TextQuery(collection, text, 10), &resp);
    EXPECT_TRUE(s.ok()) << text << ": " << s.error_message();
    return resp.hits_size() > 0 ? resp.hits(0).id() : "";
  }

  TempDir dir_;
  InProcessServer server_;
  std::unique_ptr<v1::SearchService::Stub> stub_;
};

TEST_F(TextSearchTest, TrainThenSearchByText) {
  ASSERT_OK(Create("docs"));
  const std::vector<v1::Document> docs = Corpus(90);
  uint64_t upserted = 0;
  ASSERT_OK(Upsert("docs", docs, &upserted));
  EXPECT_EQ(upserted, docs.size());

  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.num_documents(), docs.size());
  EXPECT_EQ(info.encoder_version(), 0u);
  EXPECT_EQ(info.encoder_vocabulary(), 0u);

  // Before training: text queries need the encoder.
  v1::SearchResponse resp;
  EXPECT_TRUE(HasError(Search(TextQuery("docs", "turbines", 10), &resp),
                       StatusCode::FAILED_PRECONDITION, "encoder"));

  v1::TrainEncoderResponse trained;
  ASSERT_OK(Train("docs", &trained));
  EXPECT_EQ(trained.version(), 1u);
  EXPECT_EQ(trained.reencoded(), docs.size());
  EXPECT_EQ(trained.documents(), docs.size());
  EXPECT_GT(trained.vocabulary(), 0u);
  EXPECT_GT(trained.tokens(), trained.vocabulary());

  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.encoder_version(), 1u);
  EXPECT_EQ(info.encoder_vocabulary(), trained.vocabulary());
  EXPECT_EQ(info.num_documents(), docs.size());

  // The document with the query's word comes first, explained.
  resp.Clear();
  ASSERT_OK(Search(TextQuery("docs", "turbines", 10, /*explain=*/true), &resp));
  ASSERT_GT(resp.hits_size(), 0);
  const v1::Hit& top = resp.hits(0);
  EXPECT_EQ(top.id(), "turbine");
  const std::string& text = docs[90].text();
  ASSERT_EQ(docs[90].id(), "turbine");
  EXPECT_EQ(top.text(), text);
  ASSERT_GT(top.matches_size(), 0);
  bool matched = false;
  for (const v1::TokenMatch& m : top.matches()) {
    EXPECT_EQ(m.query_token(), 0u);
    ASSERT_TRUE(m.has_span());
    ASSERT_LE(m.span().begin(), m.span().end());
    ASSERT_LE(m.span().end(), text.size());
    const std::string word = text.substr(m.span().begin(), m.span().end() - m.span().begin());
    EXPECT_EQ(m.document_token_text(), word);
    if (word == "Turbine") matched = true;
  }
  EXPECT_TRUE(matched);
  // The query's rows as words: the one word the matches point at.
  ASSERT_EQ(resp.query_token_texts_size(), 1);
  EXPECT_EQ(resp.query_token_texts(0), "turbines");
  EXPECT_NE(top.snippet().find("<em>Turbine</em>"), std::string::npos) << top.snippet();

  // Retrieval over the API: LEXICAL finds the word's one document with its
  // BM25 score; a fusion weight out of range and LEXICAL with vectors are
  // refused naming the field; the default for text is HYBRID.
  v1::SearchRequest lexical = TextQuery("docs", "turbines", 3);
  lexical.set_retrieval(v1::RETRIEVAL_LEXICAL);
  resp.Clear();
  ASSERT_OK(Search(lexical, &resp));
  ASSERT_EQ(resp.hits_size(), 1);
  EXPECT_EQ(resp.hits(0).id(), "turbine");
  EXPECT_GT(resp.hits(0).lexical_score(), 0.f);
  EXPECT_EQ(resp.sources().retrieval(), "lexical");
  resp.Clear();
  ASSERT_OK(Search(TextQuery("docs", "turbines", 3), &resp));
  EXPECT_EQ(resp.sources().retrieval(), "hybrid");
  lexical.set_fusion_weight(2.f);
  EXPECT_TRUE(HasError(Search(lexical, &resp), StatusCode::INVALID_ARGUMENT, "fusion_weight"));
  v1::SearchRequest vectors;
  vectors.set_collection("docs");
  vectors.set_top_k(3);
  vectors.set_retrieval(v1::RETRIEVAL_LEXICAL);
  for (uint32_t i = 0; i < kDim; ++i) vectors.mutable_vectors()->add_pooled(i == 0 ? 1.f : 0.f);
  EXPECT_TRUE(HasError(Search(vectors, &resp), StatusCode::INVALID_ARGUMENT, "retrieval"));

  // Custom highlight marks.
  v1::SearchRequest marked = TextQuery("docs", "saffron", 3, true);
  marked.set_highlight_pre("[");
  marked.set_highlight_post("]");
  resp.Clear();
  ASSERT_OK(Search(marked, &resp));
  ASSERT_GT(resp.hits_size(), 0);
  EXPECT_EQ(resp.hits(0).id(), "saffron");
  EXPECT_NE(resp.hits(0).snippet().find("[saffron]"), std::string::npos) << resp.hits(0).snippet();

  EXPECT_EQ(TopHit("docs", "CELLO melody"), "cello");

  // Text-only documents upserted now are encoded at once.
  v1::Document late;
  late.set_id("late");
  late.set_text("A lighthouse keeper on the cliff.");
  ASSERT_OK(Upsert("docs", {late}));
  EXPECT_EQ(TopHit("docs", "lighthouses"), "late");

  // Empty text is an empty query.
  resp.Clear();
  EXPECT_TRUE(
      HasError(Search(TextQuery("docs", "", 10), &resp), StatusCode::INVALID_ARGUMENT, "text"));

  // After a restart the encoder is back and answers the same.
  const int status = StopServer(SIGTERM);
  EXPECT_EQ(status, 0);
  StartServer();
  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.encoder_version(), 1u);
  EXPECT_EQ(info.encoder_vocabulary(), trained.vocabulary());
  EXPECT_EQ(TopHit("docs", "turbines"), "turbine");
  EXPECT_EQ(TopHit("docs", "lighthouses"), "late");

  // A second training makes version 2 and re-encodes every text-only
  // document.
  ASSERT_OK(Train("docs", &trained));
  EXPECT_EQ(trained.version(), 2u);
  EXPECT_EQ(trained.reencoded(), docs.size() + 1);
  EXPECT_EQ(TopHit("docs", "turbines"), "turbine");
}

TEST_F(TextSearchTest, Errors) {
  v1::TrainEncoderResponse trained;
  EXPECT_TRUE(HasError(Train("nope", &trained), StatusCode::NOT_FOUND, "nope"));

  ASSERT_OK(Create("docs"));
  v1::SearchResponse resp;
  EXPECT_TRUE(HasError(Search(TextQuery("docs", "anything", 5), &resp),
                       StatusCode::FAILED_PRECONDITION, "encoder"));
  // Nothing to train on.
  EXPECT_TRUE(HasError(Train("docs", &trained), StatusCode::FAILED_PRECONDITION,
                       "no stored document has text"));

  // Invalid UTF-8 in a text-only document: a proto3 string cannot carry it,
  // so the request fails to parse (gRPC answers UNIMPLEMENTED, with no
  // message) and nothing is stored.
  std::vector<v1::Document> docs = Corpus(3);
  docs[1].set_text(std::string("bad \xC3\x28 text"));
  EXPECT_FALSE(Upsert("docs", docs).ok());
  v1::CollectionInfo info;
  ASSERT_OK(GetCollection("docs", &info));
  EXPECT_EQ(info.num_documents(), 0u);

  // A collection too small for the encoder.
  v1::CreateCollectionRequest small;
  small.set_name("small");
  small.mutable_config()->set_dim(8);
  v1::CreateCollectionResponse created;
  ASSERT_OK(Call(&v1::SearchService::Stub::CreateCollection, small, &created));
  ASSERT_OK(Upsert("small", Corpus(3)));
  EXPECT_TRUE(HasError(Train("small", &trained), StatusCode::FAILED_PRECONDITION, "dim"));
}

}  // namespace
}  // namespace attnsearch::testing
