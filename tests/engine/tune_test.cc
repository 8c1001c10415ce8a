// Collection::TuneIndex: the tuned efSearch becomes the collection's default
// (held to the explicit setting and to a brute-force recall oracle), is
// stored and survives a reopen and a rebuild; a request's own ann_params
// still win; bad arguments and exact indexes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>

#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::RandomUnitRows;
using testing::TempDir;

constexpr uint32_t kDim = 32;
constexpr size_t kDocs = 5000;
constexpr size_t kQueries = 200;
constexpr uint32_t kTopK = 10;

std::vector<float> RandomUnit(std::mt19937& rng) { return RandomUnitRows(rng, 1, kDim); }

std::vector<Document> RandomDocs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Document> docs(n);
  for (size_t i = 0; i < n; ++i) {
    docs[i].id = "d" + std::to_string(i);
    docs[i].pooled = RandomUnit(rng);
  }
  return docs;
}

// A collection whose untuned beam is as narrow as the results asked for,
// so the tuned default is measurably better.
CollectionOptions NarrowBeam() {
  CollectionOptions o;
  o.ann.ef_search = int(kTopK);
  return o;
}

std::unique_ptr<Collection> MustCreate(const std::string& path, const std::string& spec,
                                       const std::vector<Document>& docs,
                                       const CollectionOptions& options) {
  CollectionConfig config;
  config.dim = kDim;
  config.ann_spec = spec;
  config.token_dtype = TokenDtype::kF32;
  auto c = Collection::Create(path, config, options);
  EXPECT_TRUE(c.ok()) << c.status();
  for (size_t i = 0; i < docs.size(); i += 1000) {
    std::vector<Document> batch(docs.begin() + long(i),
                                docs.begin() + long(std::min(docs.size(), i + 1000)));
    EXPECT_TRUE((*c)->Upsert(std::move(batch)).ok());
  }
  // Every vector linked into the graph: the knobs under test are the graph's.
  EXPECT_TRUE((*c)->BuildIndex().ok());
  return std::move(c).value();
}

// The ids of the top kTopK documents of an ANN-only search (candidates =
// top_k, no reranking), so the ANN knobs decide the result.
std::vector<std::string> AnnSearch(const Collection& c, const std::vector<float>& query,
                                   const std::string& ann_params) {
  SearchQuery q;
  q.pooled = query;
  q.top_k = kTopK;
  q.candidates = kTopK;
  q.mode = RerankMode::kNone;
  q.ann_params = ann_params;
  return testing::SearchIds(c, q);
}

// The exact top kTopK ids of every query (brute force).
std::vector<std::vector<std::string>> ExactTop(const std::vector<Document>& docs,
                                               const std::vector<std::vector<float>>& queries) {
  std::vector<std::vector<std::string>> out;
  for (const auto& q : queries) {
    std::vector<std::pair<float, size_t>> scored;
    for (size_t i = 0; i < docs.size(); ++i) {
      float s = 0;
      for (uint32_t k = 0; k < kDim; ++k) s += q[k] * docs[i].pooled[k];
      scored.emplace_back(-s, i);
    }
    std::partial_sort(scored.begin(), scored.begin() + kTopK, scored.end());
    std::vector<std::string> ids;
    for (size_t i = 0; i < kTopK; ++i) ids.push_back(docs[scored[i].second].id);
    out.push_back(std::move(ids));
  }
  return out;
}

double MeanRecall(const std::vector<std::vector<std::string>>& found,
                  const std::vector<std::vector<std::string>>& truth) {
  double sum = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    size_t hits = 0;
    for (const auto& id : found[i]) {
      hits += std::find(truth[i].begin(), truth[i].end(), id) != truth[i].end();
    }
    sum += double(hits) / double(truth[i].size());
  }
  return sum / double(truth.size());
}

class TuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = RandomDocs(kDocs, 7);
    std::mt19937 rng(99);
    for (size_t i = 0; i < kQueries; ++i) queries_.push_back(RandomUnit(rng));
    truth_ = ExactTop(docs_, queries_);
  }

  std::vector<std::vector<std::string>> SearchAll(const Collection& c,
                                                  const std::string& ann_params) {
    std::vector<std::vector<std::string>> out;
    for (const auto& q : queries_) out.push_back(AnnSearch(c, q, ann_params));
    return out;
  }

  TempDir dir_;
  std::vector<Document> docs_;
  std::vector<std::vector<float>> queries_;
  std::vector<std::vector<std::string>> truth_;
};

TEST_F(TuneTest, TunedEfSearchBecomesTheStoredDefault) {
  const std::string path = dir_.Sub("c");
  auto c = MustCreate(path, std::string(kDefaultAnnSpec), docs_, NarrowBeam());
  EXPECT_EQ(c->config().ann_spec, "HNSW32,SQfp16");
  EXPECT_FALSE(c->tuning().has_value());
  EXPECT_EQ(c->Stats().tuned_ann_params, "");

  const auto untuned = SearchAll(*c, "");
  const double untuned_recall = MeanRecall(untuned, truth_);
  EXPECT_EQ(SearchAll(*c, "efSearch=10"), untuned);  // the narrow beam is the default

  auto r = c->TuneIndex(0.9);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->knob, "efSearch");
  EXPECT_GT(r->value, int(kTopK));
  EXPECT_EQ(r->ann_params, "efSearch=" + std::to_string(r->value));
  EXPECT_GE(r->sample_recall, 0.9);
  EXPECT_EQ(r->sample_queries, 1000u);
  EXPECT_GT(r->seconds, 0.0);

  CollectionStats stats = c->Stats();
  EXPECT_EQ(stats.tuned_ann_params, r->ann_params);
  EXPECT_DOUBLE_EQ(stats.tuned_target_recall, 0.9);
  ASSERT_TRUE(c->tuning().has_value());
  EXPECT_EQ(c->tuning()->k, 10u);
  EXPECT_DOUBLE_EQ(c->tuning()->sample_recall, r->sample_recall);

  // A search without ann_params runs exactly as with the tuned ones, and
  // reaches about the target on fresh queries (the brute-force oracle).
  const auto tuned = SearchAll(*c, "");
  EXPECT_EQ(tuned, SearchAll(*c, r->ann_params));
  const double tuned_recall = MeanRecall(tuned, truth_);
  std::printf(
      "recall@10 on fresh queries: %.3f untuned (efSearch=10), %.3f tuned (%s; %.3f on "
      "the held-out sample)\n",
      untuned_recall, tuned_recall, r->ann_params.c_str(), r->sample_recall);
  EXPECT_GE(tuned_recall, 0.85) << "untuned " << untuned_recall;
  EXPECT_GT(tuned_recall, untuned_recall + 0.03);
  // A request's own ann_params still win.
  EXPECT_EQ(SearchAll(*c, "efSearch=10"), untuned);

  // Stored: a reopened collection has the same default.
  c.reset();
  auto reopened = Collection::Open(path, NarrowBeam());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  c = std::move(reopened).value();
  stats = c->Stats();
  EXPECT_EQ(stats.tuned_ann_params, r->ann_params);
  EXPECT_DOUBLE_EQ(stats.tuned_target_recall, 0.9);
  EXPECT_EQ(SearchAll(*c, ""), tuned);  // the snapshot holds the same graph

  // Collection state, not index state: a rebuild keeps it.
  ASSERT_TRUE(c->RebuildIndex().ok());
  EXPECT_EQ(c->Stats().rebuilds, 1u);
  EXPECT_EQ(c->Stats().tuned_ann_params, r->ann_params);
  EXPECT_EQ(SearchAll(*c, ""), SearchAll(*c, r->ann_params));

  // Tuning again replaces it.
  auto again = c->TuneIndex(0.99, 10, 500);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_GE(again->value, r->value);
  EXPECT_EQ(again->sample_queries, 500u);
  EXPECT_EQ(c->Stats().tuned_ann_params, again->ann_params);
  EXPECT_DOUBLE_EQ(c->Stats().tuned_target_recall, 0.99);
}

TEST_F(TuneTest, BadArgumentsNameTheField) {
  auto c = MustCreate(dir_.Sub("c"), "HNSW32,Flat", RandomDocs(300, 3), CollectionOptions());
  auto expect_invalid = [&](double target, uint32_t k, uint32_t sample, const char* field) {
    auto r = c->TuneIndex(target, k, sample);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(r.status().message().rfind(field, 0), 0u) << r.status();
  };
  expect_invalid(0, 10, 100, "target_recall: ");
  expect_invalid(-0.5, 10, 100, "target_recall: ");
  expect_invalid(1.01, 10, 100, "target_recall: ");
  expect_invalid(std::nan(""), 10, 100, "target_recall: ");
  expect_invalid(std::numeric_limits<double>::infinity(), 10, 100, "target_recall: ");
  expect_invalid(0.9, 0, 100, "k: ");
  expect_invalid(0.9, kMaxTuneK + 1, 100, "k: ");
  expect_invalid(0.9, 10, 0, "sample: ");
  expect_invalid(0.9, 10, kMaxTuneSample + 1, "sample: ");
  EXPECT_FALSE(c->tuning().has_value());
  // The limits themselves are accepted (k = 1000 needs more vectors).
  auto r = c->TuneIndex(1.0, kMaxTuneK, 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(c->TuneIndex(1.0, 1, 10).ok());
}

TEST_F(TuneTest, TooFewVectors) {
  auto c = MustCreate(dir_.Sub("c"), "HNSW32,Flat", RandomDocs(5, 3), CollectionOptions());
  auto r = c->TuneIndex(0.9);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_FALSE(c->tuning().has_value());
}

TEST_F(TuneTest, ExactIndexHasNothingToTune) {
  const std::string path = dir_.Sub("flat");
  auto c = MustCreate(path, "Flat", RandomDocs(300, 5), CollectionOptions());
  auto r = c->TuneIndex(0.9);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->knob, "");
  EXPECT_EQ(r->ann_params, "");
  EXPECT_FALSE(c->tuning().has_value());
  EXPECT_EQ(c->Stats().tuned_ann_params, "");
  c.reset();
  auto reopened = Collection::Open(path, CollectionOptions());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_FALSE((*reopened)->tuning().has_value());
}

TEST_F(TuneTest, SearchesAndWritesGoOnWhileTuning) {
  auto c = MustCreate(dir_.Sub("c"), std::string(kDefaultAnnSpec), docs_, NarrowBeam());
  absl::StatusOr<IndexTuningResult> tuned = absl::UnknownError("not run");
  std::thread tuner([&] { tuned = c->TuneIndex(0.9, 10, 2000); });
  std::mt19937 rng(11);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(AnnSearch(*c, queries_[size_t(i)], "").size(), kTopK);
  std::vector<Document> more = RandomDocs(20, 12);
  for (auto& d : more) d.id = "new-" + d.id;
  EXPECT_TRUE(c->Upsert(more).ok());  // waits for the tuning, then lands
  tuner.join();
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  EXPECT_EQ(c->Stats().num_documents, kDocs + 20);
  EXPECT_EQ(c->Stats().tuned_ann_params, tuned->ann_params);
  EXPECT_EQ(AnnSearch(*c, more[0].pooled, "")[0], more[0].id);
}

}  // namespace
}  // namespace attnsearch
