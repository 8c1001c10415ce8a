// The multi-vector first stages inside a collection. Centroids
// (candidates_from = centroids): pooled until the codec is trained, then
// its candidates hold the exhaustive rerank's top 10. FDE (candidates_from
// = fde): from the first write, its candidates hold more of that top 10
// than pooled vectors do, and its encodings are the same after a reopen and
// a rebuild from the store. For both, deletes, overwrites and filters are
// honoured, they serve again after a reopen, and bad knobs and
// configurations are refused naming them.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 32;

// Documents mixing two of `topics` topics, each topic a few clusters of
// token rows; a query samples one document's topics.
class Topics {
 public:
  explicit Topics(uint32_t seed, uint32_t topics = 40) : rng_(seed), topics_(topics) {
    centres_ = testing::RandomUnitRows(rng_, size_t(topics) * kClusters, kDim);
  }
  std::vector<float> Rows(const std::vector<uint32_t>& topics, size_t n) {
    std::normal_distribution<float> noise(0.f, 0.3f);
    std::vector<float> out(n * kDim);
    for (size_t r = 0; r < n; ++r) {
      const uint32_t t = topics[r % topics.size()];
      const float* c = centres_.data() + (size_t(t) * kClusters + rng_() % kClusters) * kDim;
      testing::NoisyUnitRow(c, kDim, noise, rng_, out.data() + r * kDim);
    }
    return out;
  }
  Document Doc(const std::string& id) {
    Document d;
    d.id = id;
    const std::vector<uint32_t> topics = {uint32_t(rng_() % topics_), uint32_t(rng_() % topics_)};
    d.num_tokens = 8 + rng_() % 24;
    d.tokens = Rows(topics, d.num_tokens);
    d.metadata["tag"] = absl::StrCat("t", rng_() % 4);
    doc_topics_[id] = topics;
    return d;
  }
  SearchQuery Query(const std::string& like, uint32_t candidates) {
    SearchQuery q;
    q.num_tokens = 6;
    q.tokens = Rows(doc_topics_.at(like), q.num_tokens);
    q.top_k = 10;
    q.candidates = candidates;
    return q;
  }

 private:
  static constexpr uint32_t kClusters = 4;
  std::mt19937 rng_;
  uint32_t topics_;
  std::vector<float> centres_;
  std::map<std::string, std::vector<uint32_t>> doc_topics_;
};

CollectionConfig CentroidConfig() {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = "HNSW32,Flat";
  c.token_codec.kind = TokenCodecKind::kResidual;
  c.token_codec.train_after = 0;  // on TrainCodec only
  c.candidates_from = CandidateSource::kCentroids;
  return c;
}

CollectionConfig FdeConfig() {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = "HNSW32,Flat";
  c.candidates_from = CandidateSource::kFde;
  return c;
}

std::vector<std::string> Ids(const SearchResult& r) {
  std::vector<std::string> ids;
  for (const SearchHit& h : r.hits) ids.push_back(h.id);
  return ids;
}

double Overlap(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  const std::set<std::string> sb(b.begin(), b.end());
  size_t n = 0;
  for (const auto& x : a) n += sb.contains(x);
  return b.empty() ? 1.0 : double(n) / double(b.size());
}

// The mean share of the exhaustive rerank's top 10 (every live document
// scored exactly) among the first stage's 100 candidates, over `like`'s
// queries.
double MeanOverlap(Collection& c, Topics& g, const std::vector<std::string>& like,
                   CandidateSource expect, uint64_t live) {
  double sum = 0;
  for (const std::string& id : like) {
    SearchQuery q = g.Query(id, 100), all = q;
    all.candidates = uint32_t(live);
    q.mode = RerankMode::kNone;  // the candidates themselves
    q.top_k = 100;
    auto got = c.Search(q);
    auto exhaustive = c.Search(all);
    EXPECT_TRUE(got.ok() && exhaustive.ok()) << got.status() << exhaustive.status();
    if (!got.ok() || !exhaustive.ok()) return 0;
    EXPECT_EQ(got->sources.first_stage, expect);
    sum += Overlap(Ids(*got), Ids(*exhaustive));
  }
  return sum / double(like.size());
}

TEST(FirstStageTest, CentroidsHoldTheExhaustiveTopTen) {
  TempDir dir;
  Topics g(1);
  auto c = Collection::Create(dir.Sub("c"), CentroidConfig(), {});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> docs;
  std::vector<std::string> like;
  for (int i = 0; i < 1500; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  for (int i = 0; i < 1500; i += 75) like.push_back(docs[i].id);
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  // No codec yet: the pooled index serves.
  const double pooled = MeanOverlap(**c, g, like, CandidateSource::kPooled, docs.size());
  ASSERT_TRUE((*c)->TrainCodec().ok());
  const double centroids = MeanOverlap(**c, g, like, CandidateSource::kCentroids, docs.size());
  std::printf(
      "recall of the exhaustive top 10 among 100 candidates: pooled %.3f, "
      "centroids %.3f\n",
      pooled, centroids);
  EXPECT_GE(centroids, 0.98);
  // Written after training: held by the first stage at once.
  Document late = g.Doc("late");
  ASSERT_TRUE((*c)->Upsert({late}).ok());
  SearchQuery q = g.Query("late", 100);
  q.tokens.assign(late.tokens.begin(), late.tokens.begin() + 6 * kDim);  // its own rows
  auto found = (*c)->Search(q);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->sources.first_stage, CandidateSource::kCentroids);
  ASSERT_FALSE(found->hits.empty());
  EXPECT_EQ(found->hits[0].id, "late");
}

// A second TrainCodec re-encodes every document: meanwhile the pooled index
// serves (the new codec's first stage fills as documents are handed over),
// then the new codec's first stage, holding every document.
TEST(FirstStageTest, ARetrainedCodecServesOnceItHoldsEveryDocument) {
  TempDir dir;
  Topics g(5);
  auto c = Collection::Create(dir.Sub("c"), CentroidConfig(), {});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> docs;
  std::vector<std::string> like;
  for (int i = 0; i < 1200; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  for (int i = 0; i < 1200; i += 100) like.push_back(docs[i].id);
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  ASSERT_TRUE((*c)->TrainCodec().ok());
  auto again = (*c)->TrainCodec();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version, 2u);
  EXPECT_EQ(again->encoded, docs.size());
  EXPECT_EQ((*c)->Stats().codec_pending, 0u);
  EXPECT_GE(MeanOverlap(**c, g, like, CandidateSource::kCentroids, docs.size()), 0.98);
}

// Deletes, overwrites and a filter on a collection whose first stage is
// `source` (trained first when it needs a codec): no deleted document, no
// duplicate, only matches, and most of the exhaustive top 10 (`overlap`).
void CheckDeletesAndFilters(const CollectionConfig& config, double overlap) {
  TempDir dir;
  Topics g(2);
  auto c = Collection::Create(dir.Sub("c"), config, {});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> docs;
  for (int i = 0; i < 800; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  if (config.token_codec.kind == TokenCodecKind::kResidual) ASSERT_TRUE((*c)->TrainCodec().ok());
  std::vector<std::string> doomed;
  std::vector<Document> rewritten;
  std::map<std::string, std::string> tag;
  for (const Document& d : docs) tag[d.id] = d.metadata.at("tag");
  for (int i = 0; i < 800; i += 4) doomed.push_back(docs[i].id);
  for (int i = 1; i < 800; i += 4) {
    rewritten.push_back(g.Doc(docs[i].id));  // new tokens and tag
    tag[docs[i].id] = rewritten.back().metadata.at("tag");
  }
  ASSERT_TRUE((*c)->Delete(doomed).ok());
  ASSERT_TRUE((*c)->Upsert(rewritten).ok());
  const std::set<std::string> gone(doomed.begin(), doomed.end());
  for (int i = 2; i < 800; i += 40) {
    SearchQuery q = g.Query(docs[i].id, 50);
    q.filter = {{"tag", {"t1", "t2"}}};
    SearchQuery all = q;
    all.candidates = 800;
    auto got = (*c)->Search(q);
    auto exhaustive = (*c)->Search(all);
    ASSERT_TRUE(got.ok() && exhaustive.ok()) << got.status() << exhaustive.status();
    EXPECT_EQ(got->sources.first_stage, config.candidates_from);
    std::set<std::string> seen;
    for (const SearchHit& h : got->hits) {
      EXPECT_FALSE(gone.contains(h.id)) << h.id;
      EXPECT_TRUE(seen.insert(h.id).second) << "twice: " << h.id;
      EXPECT_TRUE(tag.at(h.id) == "t1" || tag.at(h.id) == "t2") << h.id;
    }
    EXPECT_GE(Overlap(Ids(*got), Ids(*exhaustive)), overlap);
  }
}

TEST(FirstStageTest, DeletesOverwritesAndFiltersAreHonoured) {
  CheckDeletesAndFilters(CentroidConfig(), 0.8);
}

TEST(FirstStageTest, FdeHonoursDeletesOverwritesAndFilters) {
  CheckDeletesAndFilters(FdeConfig(), 0.7);
}

TEST(FirstStageTest, ServesAgainAfterAReopen) {
  TempDir dir;
  Topics g(3);
  std::vector<Document> docs;
  for (int i = 0; i < 600; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  const SearchQuery q = g.Query("d7", 100);
  std::vector<std::string> before;
  {
    auto c = Collection::Create(dir.Sub("c"), CentroidConfig(), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(docs).ok());
    ASSERT_TRUE((*c)->TrainCodec().ok());
    ASSERT_TRUE((*c)->Delete({"d9"}).ok());
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->sources.first_stage, CandidateSource::kCentroids);
    before = Ids(*r);
  }
  auto c = Collection::Open(dir.Sub("c"), {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->config().candidates_from, CandidateSource::kCentroids);
  auto r = (*c)->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sources.first_stage, CandidateSource::kCentroids);
  EXPECT_EQ(Ids(*r), before);
}

TEST(FirstStageTest, BadKnobsAndConfigurationsNameTheField) {
  TempDir dir;
  CollectionConfig rows = CentroidConfig();
  rows.token_codec.kind = TokenCodecKind::kRows;
  auto refused = Collection::Create(dir.Sub("rows"), rows, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("candidates_from"), std::string::npos)
      << refused.status();
  Topics g(4);
  auto c = Collection::Create(dir.Sub("c"), CentroidConfig(), {});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> docs;
  for (int i = 0; i < 300; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  ASSERT_TRUE((*c)->TrainCodec().ok());
  for (const auto& [params, names] : std::vector<std::pair<std::string, std::string>>{
           {"probe=0", "probe=0"}, {"probe=5000", "probe=5000"}, {"probe_ef=x", "probe_ef=x"}}) {
    SearchQuery q = g.Query("d1", 50);
    q.ann_params = params;
    auto r = (*c)->Search(q);
    ASSERT_FALSE(r.ok()) << params;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(names), std::string::npos) << r.status();
  }
  SearchQuery q = g.Query("d1", 50);
  q.ann_params = "probe=64,probe_ef=128";
  auto r = (*c)->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sources.first_stage, CandidateSource::kCentroids);
}

// TuneIndex picks the smallest probe reaching the target on held-out
// documents, stores it with the index's knob and searches use it; a lower
// target never needs a wider probe.
TEST(FirstStageTest, TuneIndexChoosesTheProbe) {
  TempDir dir;
  Topics g(6);
  CollectionConfig config = CentroidConfig();
  config.ann_spec = "HNSW32,SQfp16";
  config.token_codec.centroids = 512;  // more than the data's clusters: probes matter
  auto c = Collection::Create(dir.Sub("c"), config, {});
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> docs;
  for (int i = 0; i < 1500; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  // Before the codec: only the index's knob.
  auto pooled = (*c)->TuneIndex(0.9, 10, 50);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_EQ(pooled->probe, 0);
  EXPECT_EQ(pooled->ann_params.find("probe"), std::string::npos) << pooled->ann_params;
  ASSERT_TRUE((*c)->TrainCodec().ok());
  auto high = (*c)->TuneIndex(0.99, 10, 50);
  ASSERT_TRUE(high.ok()) << high.status();
  std::printf("probe %d: recall %.3f on %llu documents; ann_params %s\n", high->probe,
              high->first_stage_recall, (unsigned long long)high->first_stage_queries,
              high->ann_params.c_str());
  ASSERT_GE(high->probe, 1);
  EXPECT_EQ(high->first_stage_queries, 50u);
  EXPECT_TRUE(high->first_stage_recall >= 0.99 || high->probe == 128) << high->first_stage_recall;
  EXPECT_NE(high->ann_params.find(absl::StrCat("probe=", high->probe)), std::string::npos);
  EXPECT_NE(high->ann_params.find(high->knob), std::string::npos);
  ASSERT_TRUE((*c)->tuning().has_value());
  EXPECT_EQ((*c)->tuning()->ann_params, high->ann_params);
  // A lower target needs no wider probe; the measure is deterministic:
  // tuned for the recall it reached, it chooses the same probe.
  auto low = (*c)->TuneIndex(0.3, 10, 50);
  ASSERT_TRUE(low.ok()) << low.status();
  EXPECT_LE(low->probe, high->probe);
  EXPECT_GE(low->first_stage_recall, 0.3);
  if (high->probe > 1) {
    auto below = (*c)->TuneIndex(high->first_stage_recall, 10, 50);
    ASSERT_TRUE(below.ok()) << below.status();
    EXPECT_EQ(below->probe, high->probe);
  }
  // Searches without ann_params use the stored choice.
  SearchQuery q = g.Query("d3", 100);
  auto r = (*c)->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sources.first_stage, CandidateSource::kCentroids);
}

// Probing every centroid is the most TuneIndex tries: with 16 centroids it
// stops at probe 16, whatever the target.
TEST(FirstStageTest, TuneIndexProbesNoMoreThanTheCentroids) {
  TempDir dir;
  CollectionConfig config = CentroidConfig();
  config.token_codec.centroids = 16;
  auto c = Collection::Create(dir.Sub("c"), config, {});
  ASSERT_TRUE(c.ok()) << c.status();
  // Random tokens: no probe holds the exhaustive top 10 whole.
  std::mt19937 rng(7);
  std::vector<Document> docs;
  for (int i = 0; i < 600; ++i)
    docs.push_back(testing::MakeDoc(rng, absl::StrCat("d", i), kDim, 4, 8));
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  ASSERT_TRUE((*c)->TrainCodec().ok());
  auto tuned = (*c)->TuneIndex(1.0, 10, 30);
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  std::printf("probe %d: recall %.3f\n", tuned->probe, tuned->first_stage_recall);
  EXPECT_GE(tuned->probe, 1);
  EXPECT_LE(tuned->probe, 16) << tuned->ann_params;
}

TEST(FirstStageTest, FdeHoldsMoreOfTheExhaustiveTopTenThanPooled) {
  TempDir dir;
  Topics g(1), h(1);  // the same documents and queries for both
  auto fde = Collection::Create(dir.Sub("fde"), FdeConfig(), {});
  CollectionConfig pooled_config = FdeConfig();
  pooled_config.candidates_from = CandidateSource::kPooled;
  auto pooled = Collection::Create(dir.Sub("pooled"), pooled_config, {});
  ASSERT_TRUE(fde.ok() && pooled.ok()) << fde.status() << pooled.status();
  std::vector<Document> docs, same;
  std::vector<std::string> like;
  for (int i = 0; i < 1500; ++i) {
    docs.push_back(g.Doc(absl::StrCat("d", i)));
    same.push_back(h.Doc(absl::StrCat("d", i)));
  }
  for (int i = 0; i < 1500; i += 75) like.push_back(docs[i].id);
  ASSERT_TRUE((*fde)->Upsert(docs).ok());
  ASSERT_TRUE((*pooled)->Upsert(same).ok());
  const double by_fde = MeanOverlap(**fde, g, like, CandidateSource::kFde, docs.size());
  const double by_pooled = MeanOverlap(**pooled, h, like, CandidateSource::kPooled, docs.size());
  std::printf("recall of the exhaustive top 10 among 100 candidates: pooled %.3f, fde %.3f\n",
              by_pooled, by_fde);
  EXPECT_GE(by_fde, 0.9);
  EXPECT_GT(by_fde, by_pooled);
}

// The encodings written with the documents, those a reopen recomputes from
// the stored rows (no snapshot) and those of a rebuild give one ranking.
TEST(FirstStageTest, FdeEncodingsAreTheSameAfterAReopenAndARebuild) {
  TempDir dir;
  Topics g(3);
  std::vector<Document> docs;
  for (int i = 0; i < 600; ++i) docs.push_back(g.Doc(absl::StrCat("d", i)));
  SearchQuery q = g.Query("d7", 40);
  q.mode = RerankMode::kNone;  // the first stage's own ranking
  std::vector<std::string> written;
  {
    CollectionOptions options;
    options.background_insert = false;
    CollectionConfig exact = FdeConfig();
    exact.ann_spec = "Flat";  // so that only the encodings decide
    exact.token_dtype = TokenDtype::kInt8;
    auto c = Collection::Create(dir.Sub("c"), exact, options);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(docs).ok());
    ASSERT_TRUE((*c)->Delete({"d9"}).ok());
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->sources.first_stage, CandidateSource::kFde);
    written = Ids(*r);
    ASSERT_EQ(written.size(), 10u);
  }
  std::filesystem::remove(dir.Sub("c") + "/ann.snapshot");
  auto c = Collection::Open(dir.Sub("c"), {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->config().candidates_from, CandidateSource::kFde);
  auto reopened = (*c)->Search(q);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(Ids(*reopened), written);
  ASSERT_TRUE((*c)->RebuildIndex().ok());
  auto rebuilt = (*c)->Search(q);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(Ids(*rebuilt), written);
  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_FLOAT_EQ(rebuilt->hits[i].score, reopened->hits[i].score) << i;
  }
}

TEST(FirstStageTest, FdeNeedsTheTokenRows) {
  TempDir dir;
  CollectionConfig codes_only = FdeConfig();
  codes_only.token_codec.kind = TokenCodecKind::kResidual;
  codes_only.token_codec.keep_full_precision = false;
  auto refused = Collection::Create(dir.Sub("c"), codes_only, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("config.candidates_from"), std::string::npos)
      << refused.status();
  auto unknown = ParseCandidateSource("muvera", "config.candidates_from");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("config.candidates_from: unknown source 'muvera'"),
            std::string::npos)
      << unknown.status();
  EXPECT_EQ(ParseCandidateSource("fde", "x").value(), CandidateSource::kFde);
  EXPECT_EQ(ParseCandidateSource("", "x").value(), CandidateSource::kPooled);
}

}  // namespace
}  // namespace attnsearch
