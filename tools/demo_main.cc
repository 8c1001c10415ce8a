// attnsearch-demo: the main job's client, run against a live
// attnsearch-server.
//
//   attnsearch-demo --server HOST:PORT --collection man --query "..." [--query ...]
//       [--top_k 5] [--expect ID ...] [--max_similarity 0] [--collapse_field F]
//
// Text mode (--query): asks each query of an existing collection whose
// built-in encoder is trained (scripts/demo.sh loads the manual pages) and
// prints the hits with their highlighted snippets and, per query word, the
// document word it attended to most, the attention weight and its share of
// the score. --expect lists, per query, ids of which one must be among its
// hits ("scp.1|rsync.1"; "-": none). --max_similarity and --collapse_field
// diversify the hits (SearchRequest.diversify): near-duplicate pages (the
// same command's alpha, beta and GA manuals) and pages sharing a metadata
// value stand for each other.
//
//   attnsearch-demo --server 127.0.0.1:50051 [--documents 5000] [--dim 64] [--replace]
//
// Vector mode (no --query): creates a collection (one that exists is left
// alone and the demo exits 1, unless --replace drops it first), streams a generated set of
// documents into it (each document is a bag of token vectors drawn around one of several topics,
// with a topic name and its number in its metadata — "number" is a numeric field — and a short
// text), then runs queries (the last one filtered by topic and a range of numbers) and prints the
// ranked hits, their scores, the token evidence of the best hit and the time each stage took. Exits
// non-zero if any call fails, a query does not find documents of its own topic first, or a filtered
// hit is outside the range.
//
// Against a secured server: --api_key_file FILE (or ATTNSEARCH_API_KEY) and
// --tls_ca FILE (see client/client_channel.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "attnsearch/v1/search.grpc.pb.h"
#include "cli/parse_flags.h"
#include "client/client_channel.h"
#include "grpcpp/grpcpp.h"

namespace v1 = attnsearch::v1;

namespace {

constexpr int kTopics = 12;
const char* const kTopicNames[kTopics] = {"astronomy", "botany",   "cooking", "databases",
                                          "economics", "geology",  "music",   "medicine",
                                          "poetry",    "robotics", "sailing", "zoology"};

void Fail(const char* what, const grpc::Status& s) {
  std::fprintf(stderr, "attnsearch-demo: %s failed: %s (code %d)\n", what,
               s.error_message().c_str(), int(s.error_code()));
  std::exit(1);
}

// Generates unit vectors around topic centres.
class Generator {
 public:
  Generator(uint32_t dim, uint64_t seed) : dim_(dim), rng_(seed) {
    for (int t = 0; t < kTopics; ++t) centres_.push_back(Unit(Noise(1.f)));
  }
  std::vector<float> Token(int topic, float spread) {
    std::vector<float> v = Noise(spread);
    for (uint32_t k = 0; k < dim_; ++k) v[k] += centres_[topic][k];
    return Unit(v);
  }
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

 private:
  std::vector<float> Noise(float sd) {
    std::normal_distribution<float> g(0.f, sd / std::sqrt(float(dim_)));
    std::vector<float> v(dim_);
    for (auto& x : v) x = g(rng_);
    return v;
  }
  static std::vector<float> Unit(std::vector<float> v) {
    double s = 0;
    for (float x : v) s += double(x) * x;
    for (auto& x : v) x = float(x / std::sqrt(s));
    return v;
  }
  uint32_t dim_;
  std::mt19937_64 rng_;
  std::vector<std::vector<float>> centres_;
};

// Text mode: each query as text, with evidence. Returns the exit code.
int TextQueries(v1::SearchService::Stub* stub, const std::string& collection,
                const std::vector<std::string>& queries, const std::vector<std::string>& expect,
                int top_k, const v1::Diversify& diversify, float fusion_weight) {
  int missing = 0;
  for (size_t qi = 0; qi < queries.size(); ++qi) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::SearchRequest req;
    req.set_collection(collection);
    req.set_text(queries[qi]);
    req.set_top_k(top_k);  // candidates: the server's default for text
    req.set_include_text(false);
    req.set_include_metadata(true);
    req.set_explain(true);
    req.set_highlight_pre("[");
    req.set_highlight_post("]");
    *req.mutable_diversify() = diversify;
    if (fusion_weight >= 0.f) req.set_fusion_weight(fusion_weight);
    v1::SearchResponse resp;
    grpc::Status s = stub->Search(&ctx, req, &resp);
    if (!s.ok()) Fail("Search", s);
    std::printf("\nquery %zu: \"%s\"\n", qi + 1, queries[qi].c_str());
    bool found = qi >= expect.size() || expect[qi] == "-";
    for (int r = 0; r < resp.hits_size(); ++r) {
      const v1::Hit& h = resp.hits(r);
      if (!found) {
        for (absl::string_view want : absl::StrSplit(expect[qi], '|')) found |= h.id() == want;
      }
      std::string snippet = h.snippet();
      std::replace(snippet.begin(), snippet.end(), '\n', ' ');
      std::printf("  %d. %-16s score %.3f  %s\n", r + 1, h.id().c_str(), h.score(),
                  snippet.c_str());
      // Evidence: the query words that carry this hit, strongest first.
      std::vector<const v1::TokenMatch*> m;
      for (const auto& tm : h.matches()) m.push_back(&tm);
      std::sort(m.begin(), m.end(),
                [](auto* a, auto* b) { return a->contribution() > b->contribution(); });
      std::printf("     evidence:");
      for (size_t k = 0; k < m.size() && k < 4; ++k) {
        std::printf(" q%u->\"%s\" (w %.2f, +%.3f)", m[k]->query_token(),
                    m[k]->document_token_text().c_str(), m[k]->weight(), m[k]->contribution());
      }
      std::printf("\n");
    }
    const v1::Timing& tm = resp.timing();
    std::printf("  timing (us): encode %llu, ann %llu, fetch %llu, rerank %llu, total %llu\n",
                (unsigned long long)tm.encode_us(), (unsigned long long)tm.ann_us(),
                (unsigned long long)tm.fetch_us(), (unsigned long long)tm.rerank_us(),
                (unsigned long long)tm.total_us());
    if (resp.sources().diversified() > 0) {
      std::printf("  %u near-duplicate or collapsed pages left out\n",
                  resp.sources().diversified());
    }
    if (!found) {
      std::fprintf(stderr, "attnsearch-demo: query %zu: expected %s among the hits\n", qi + 1,
                   expect[qi].c_str());
      ++missing;
    }
  }
  return missing == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  std::string collection = "demo";
  int documents = 5000;
  uint32_t dim = 64;
  CLI::App app{"attnsearch-demo: load generated documents and query them"};
  app.add_option("--server", server, "server address")->capture_default_str();
  bool replace = false;
  app.add_option("--collection", collection,
                 "vector mode: collection to create (it must not exist, unless --replace); text "
                 "mode: collection to query")
      ->capture_default_str();
  app.add_flag("--replace", replace,
               "vector mode: drop --collection first if it exists (its documents are lost)");
  app.add_option("--documents", documents, "documents to load")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--dim", dim, "vector dimension")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  std::vector<std::string> queries, expect;
  int top_k = 5;
  app.add_option("--query", queries, "text query (repeatable): text mode");
  app.add_option("--expect", expect, "text mode: per query, an id expected among its hits");
  app.add_option("--top_k", top_k, "text mode: hits per query")->capture_default_str();
  v1::Diversify diversify;
  float max_similarity = 0.f;
  std::string collapse_field;
  app.add_option("--max_similarity", max_similarity,
                 "text mode: leave out a hit whose pooled vector has this cosine with a better "
                 "one's (0: off)")
      ->capture_default_str();
  float fusion_weight = -1.f;
  app.add_option("--fusion_weight", fusion_weight,
                 "text mode: the attention score's weight against BM25's in [0, 1] (< 0: the "
                 "server's default)")
      ->capture_default_str();
  app.add_option("--collapse_field", collapse_field,
                 "text mode: at most one hit per value of this metadata field (empty: off)");
  attnsearch::ClientSecurity security;
  app.add_option("--api_key_file", security.api_key_file,
                 "file holding the server's API key (default: the environment variable "
                 "ATTNSEARCH_API_KEY)");
  app.add_option("--tls_ca", security.tls_ca_file,
                 "connect with TLS, trusting the PEM certificates in this file");
  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) return *done;
  if (std::isnan(fusion_weight) || std::isnan(max_similarity)) {
    std::fprintf(stderr, "attnsearch-demo: --fusion_weight and --max_similarity must be numbers\n");
    return 2;
  }
  if (expect.size() > queries.size()) {
    std::fprintf(stderr, "attnsearch-demo: %zu --expect for %zu --query (one per query at most)\n",
                 expect.size(), queries.size());
    return 2;
  }

  auto made = attnsearch::NewClientChannel(server, security);
  if (!made.ok()) {
    std::fprintf(stderr, "attnsearch-demo: %s\n", std::string(made.status().message()).c_str());
    return 2;
  }
  auto channel = *std::move(made);
  auto stub = v1::SearchService::NewStub(channel);
  diversify.set_max_similarity(max_similarity);
  diversify.set_collapse_field(collapse_field);
  if (!queries.empty()) {
    return TextQueries(stub.get(), collection, queries, expect, top_k, diversify, fusion_weight);
  }
  Generator gen(dim, 42);

  if (replace) {  // A fresh collection, asked for.
    grpc::ClientContext ctx;
    v1::DropCollectionRequest req;
    req.set_name(collection);
    v1::DropCollectionResponse resp;
    stub->DropCollection(&ctx, req, &resp);  // NOT_FOUND is fine
  }
  {
    grpc::ClientContext ctx;
    v1::CreateCollectionRequest req;
    req.set_name(collection);
    req.mutable_config()->set_dim(dim);
    req.mutable_config()->set_token_dtype(v1::TOKEN_DTYPE_BF16);
    req.mutable_config()->set_ann_spec("HNSW32,Flat");
    req.mutable_config()->add_numeric_fields("number");  // filterable by range
    v1::CreateCollectionResponse resp;
    grpc::Status s = stub->CreateCollection(&ctx, req, &resp);
    if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      std::fprintf(stderr,
                   "attnsearch-demo: collection '%s' exists; nothing was changed. Give another "
                   "--collection, or --replace to drop it first (its documents are lost)\n",
                   collection.c_str());
      return 1;
    }
    if (!s.ok()) Fail("CreateCollection", s);
    std::printf("created collection '%s': dim %u, bf16 tokens, index %s\n", collection.c_str(),
                resp.collection().config().dim(), resp.collection().config().ann_spec().c_str());
  }

  // Load: one stream, batches of 250 documents.
  std::vector<int> topic_of(size_t(documents), 0);
  {
    grpc::ClientContext ctx;
    v1::UpsertResponse resp;
    auto writer = stub->UpsertStream(&ctx, &resp);
    v1::UpsertRequest batch;
    for (int i = 0; i < documents; ++i) {
      const int topic = gen.Pick(kTopics);
      topic_of[size_t(i)] = topic;
      v1::Document* d = batch.add_documents();
      d->set_id("doc-" + std::to_string(i));
      d->set_text(std::string("a note on ") + kTopicNames[topic] + ", number " + std::to_string(i));
      (*d->mutable_metadata())["topic"] = kTopicNames[topic];
      (*d->mutable_metadata())["number"] = std::to_string(i);
      const int n = 16 + gen.Pick(33);  // 16..48 tokens
      v1::Matrix* m = d->mutable_tokens();
      m->set_rows(uint32_t(n));
      m->set_cols(dim);
      for (int t = 0; t < n; ++t) {
        // Most tokens are on topic; some are generic filler.
        const int tt = gen.Pick(4) == 0 ? gen.Pick(kTopics) : topic;
        for (float x : gen.Token(tt, 1.2f)) m->add_values(x);
        d->add_token_texts(std::string(kTopicNames[tt]).substr(0, 4) + "#" + std::to_string(t));
      }
      batch.set_collection(collection);
      if (batch.documents_size() == 250 || i + 1 == documents) {
        if (!writer->Write(batch)) break;
        batch.Clear();
      }
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) Fail("UpsertStream", s);
    std::printf("loaded %llu documents (16..48 tokens each) through UpsertStream\n",
                (unsigned long long)resp.upserted());
  }

  // Queries: a few tokens about one topic each.
  int correct = 0, total = 0, outside_range = 0;
  const int number_below = documents / 2;
  for (int qi = 0; qi < 4; ++qi) {
    const int topic = (qi * 5) % kTopics;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SearchRequest req;
    req.set_collection(collection);
    v1::Matrix* m = req.mutable_vectors()->mutable_tokens();
    m->set_rows(8);
    m->set_cols(dim);
    for (int t = 0; t < 8; ++t) {
      for (float x : gen.Token(topic, 1.2f)) m->add_values(x);
    }
    req.set_top_k(5);
    req.set_candidates(100);
    req.set_rerank(v1::RERANK_MODE_ATTENTION);
    req.set_temperature(0.1f);
    req.set_include_text(true);
    req.set_include_metadata(true);
    req.set_explain(true);
    if (qi == 3) {  // the last query also filters on metadata and a range
      auto* cond = req.mutable_filter()->add_must();
      cond->set_key("topic");
      cond->add_values(kTopicNames[topic]);
      auto* range = req.mutable_filter()->add_ranges();
      range->set_key("number");
      range->set_lt(number_below);
    }
    v1::SearchResponse resp;
    grpc::Status s = stub->Search(&ctx, req, &resp);
    if (!s.ok()) Fail("Search", s);
    std::printf(
        "\nquery %d: 8 tokens about '%s'%s\n", qi + 1, kTopicNames[topic],
        qi == 3 ? (", filter topic = same, number < " + std::to_string(number_below)).c_str() : "");
    std::printf("  %-4s %-10s %8s %8s  %-11s %s\n", "rank", "id", "score", "ann", "topic", "text");
    for (int r = 0; r < resp.hits_size(); ++r) {
      const v1::Hit& h = resp.hits(r);
      const std::string& t = h.metadata().at("topic");
      std::printf("  %-4d %-10s %8.4f %8.4f  %-11s %s\n", r + 1, h.id().c_str(), h.score(),
                  h.ann_score(), t.c_str(), h.text().c_str());
      correct += t == kTopicNames[topic];
      ++total;
      if (qi == 3 && std::stoi(h.metadata().at("number")) >= number_below) ++outside_range;
    }
    if (resp.hits_size() > 0) {
      const v1::Hit& h = resp.hits(0);
      std::printf("  evidence for %s (query token -> document token, weight, contribution):\n",
                  h.id().c_str());
      for (int k = 0; k < std::min(3, h.matches_size()); ++k) {
        const v1::TokenMatch& tm = h.matches(k);
        std::printf("    q%u -> %s (token %u)  w=%.3f  +%.4f\n", tm.query_token(),
                    tm.document_token_text().c_str(), tm.document_token(), tm.weight(),
                    tm.contribution());
      }
    }
    const v1::Timing& tm = resp.timing();
    std::printf("  timing (us): encode %llu, ann %llu, fetch %llu, rerank %llu, total %llu\n",
                (unsigned long long)tm.encode_us(), (unsigned long long)tm.ann_us(),
                (unsigned long long)tm.fetch_us(), (unsigned long long)tm.rerank_us(),
                (unsigned long long)tm.total_us());
  }
  std::printf("\n%d of %d hits are on the query's topic\n", correct, total);
  if (outside_range > 0) {
    std::fprintf(stderr, "attnsearch-demo: %d filtered hits outside the range\n", outside_range);
    return 1;
  }
  if (correct * 10 < total * 9) {
    std::fprintf(stderr, "attnsearch-demo: too few on-topic hits\n");
    return 1;
  }
  return 0;
}
