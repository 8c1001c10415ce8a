// Collection: write semantics, validation, filters, deadlines, and the
// ANN index's recovery from its snapshot and the store.
#include "engine/collection.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine_test_util.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

using testing::MakeDoc;
using testing::TempDir;

constexpr uint32_t kDim = 16;

CollectionConfig Config(const std::string& spec = "HNSW32,Flat",
                        TokenDtype dtype = TokenDtype::kF32) {
  CollectionConfig c;
  c.dim = kDim;
  c.ann_spec = spec;
  c.token_dtype = dtype;
  return c;
}

std::unique_ptr<Collection> MustCreate(const std::string& path,
                                       const CollectionConfig& config = Config(),
                                       const CollectionOptions& options = {}) {
  auto c = Collection::Create(path, config, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

std::unique_ptr<Collection> MustOpen(const std::string& path,
                                     const CollectionOptions& options = {}) {
  auto c = Collection::Open(path, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(c).value();
}

// Searches with a document's own pooled vector; returns the hit ids.
std::vector<std::string> SearchByPooled(const Collection& c, const std::vector<float>& pooled,
                                        uint32_t top_k, uint32_t candidates = 0,
                                        RerankMode mode = RerankMode::kNone) {
  SearchQuery q;
  q.pooled = pooled;
  q.top_k = top_k;
  q.candidates = candidates;
  q.mode = mode;
  return testing::SearchIds(c, q);
}

std::vector<float> PooledOf(const Collection& c, const std::string& id) {
  auto got = c.Get({id}, true);
  EXPECT_TRUE(got.ok() && got->documents.size() == 1) << id;
  return got.ok() && !got->documents.empty() ? got->documents[0].pooled : std::vector<float>();
}

// A Get holds no more than a request may: an id asked for twice is refused
// (one request of a few kilobytes made the server hold gigabytes), and
// reading stops with RESOURCE_EXHAUSTED once the documents found pass
// max_request_bytes.
TEST(CollectionTest, GetIsBoundedLikeARequest) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_request_bytes = 64 << 10;
  auto c = MustCreate(dir.Sub("c"), Config(), options);
  std::mt19937 rng(3);
  std::vector<Document> docs;
  for (int i = 0; i < 40; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 64, 64));
  for (const Document& d : docs) ASSERT_TRUE(c->Upsert({d}).ok());
  auto twice = c->Get({"d1", "d2", "d1"}, false);
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(twice.status().message().find("ids[2]: 'd1' repeats ids[0]"), std::string::npos)
      << twice.status();
  auto empty = c->Get({"d1", ""}, false);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("ids[1]: must not be empty"), std::string::npos);
  std::vector<std::string> all;
  for (const Document& d : docs) all.push_back(d.id);
  // Without vectors the 40 fit; with them (40 x 64 x kDim floats) they do not.
  auto plain = c->Get(all, false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->documents.size(), 40u);
  const size_t row_bytes = size_t(kDim) * sizeof(float);
  ASSERT_GT(40 * 64 * row_bytes, options.limits.max_request_bytes);
  auto full = c->Get(all, true);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_NE(full.status().message().find("max_request_mb"), std::string::npos) << full.status();
  EXPECT_NE(full.status().message().find("include_vectors"), std::string::npos) << full.status();
  // A few with vectors still fit.
  auto some = c->Get({"d3", "d7"}, true);
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_EQ(some->documents[1].id, "d7");
}

TEST(CollectionTest, UpsertGetOverwriteDelete) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  std::mt19937 rng(1);
  Document a = MakeDoc(rng, "a", kDim, 3, 3);
  a.metadata = {{"lang", "en"}};
  a.token_texts = {"x", "y", "z"};
  Document b = MakeDoc(rng, "b", kDim, 1, 5);
  ASSERT_TRUE(c->Upsert({a, b}).ok());

  auto got = c->Get({"b", "missing", "a"}, true);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->documents.size(), 2u);
  EXPECT_EQ(got->documents[0].id, "b");
  EXPECT_EQ(got->documents[1].id, "a");
  EXPECT_EQ(got->documents[1].metadata, a.metadata);
  EXPECT_EQ(got->documents[1].token_texts, a.token_texts);
  EXPECT_EQ(got->documents[1].num_tokens, 3u);
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    EXPECT_NEAR(got->documents[1].tokens[i], a.tokens[i], 1e-6);
  }
  EXPECT_EQ(got->not_found_ids, std::vector<std::string>{"missing"});
  EXPECT_EQ(c->Stats().num_documents, 2u);

  // Overwrite a: the new version replaces the old one everywhere.
  Document a2 = MakeDoc(rng, "a", kDim, 4, 4);
  a2.text = "second version";
  ASSERT_TRUE(c->Upsert({a2}).ok());
  got = c->Get({"a"}, true);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->documents.size(), 1u);
  EXPECT_EQ(got->documents[0].text, "second version");
  EXPECT_EQ(got->documents[0].num_tokens, 4u);
  EXPECT_TRUE(got->documents[0].metadata.empty());
  EXPECT_EQ(c->Stats().num_documents, 2u);
  EXPECT_EQ(c->Stats().num_tombstones, 1u);
  // Searching all candidates returns each id once.
  auto ids = SearchByPooled(*c, PooledOf(*c, "a"), 10, 10);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], "a");
  EXPECT_EQ(ids[1], "b");

  // Delete b and an unknown id.
  auto del = c->Delete({"b", "nope", "b"});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->deleted, 1u);
  EXPECT_EQ(del->not_found_ids, std::vector<std::string>{"nope"});
  got = c->Get({"b"}, false);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->documents.empty());
  EXPECT_EQ(c->Stats().num_documents, 1u);
  EXPECT_EQ(c->Stats().num_tombstones, 2u);
  ids = SearchByPooled(*c, {b.tokens.begin(), b.tokens.begin() + kDim}, 5, 5);
  EXPECT_EQ(ids, std::vector<std::string>{"a"});
}

TEST(CollectionTest, PooledOnlyAndTokensOnlyDocuments) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  std::mt19937 rng(2);
  Document pooled_only;
  pooled_only.id = "p";
  pooled_only.pooled = testing::RandomUnitRows(rng, 1, kDim);
  for (float& v : pooled_only.pooled) v *= 3.f;  // normalised on write
  Document tokens_only = MakeDoc(rng, "t", kDim, 5, 5);
  ASSERT_TRUE(c->Upsert({pooled_only, tokens_only}).ok());
  auto got = c->Get({"p", "t"}, true);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->documents.size(), 2u);
  // The pooled-only document is one token, its unit pooled vector.
  EXPECT_EQ(got->documents[0].num_tokens, 1u);
  EXPECT_NEAR(Dot(got->documents[0].pooled.data(), got->documents[0].pooled.data(), kDim), 1.f,
              1e-5);
  for (uint32_t k = 0; k < kDim; ++k) {
    EXPECT_NEAR(got->documents[0].tokens[k], got->documents[0].pooled[k], 1e-6);
  }
  // The tokens-only document's pooled vector is the normalised token mean.
  std::vector<float> mean(kDim, 0.f);
  for (uint32_t r = 0; r < 5; ++r) {
    for (uint32_t k = 0; k < kDim; ++k) mean[k] += tokens_only.tokens[r * kDim + k];
  }
  NormalizeInPlace(mean.data(), kDim);
  for (uint32_t k = 0; k < kDim; ++k) EXPECT_NEAR(got->documents[1].pooled[k], mean[k], 1e-5);
}

TEST(CollectionTest, BadDocumentsNameTheFieldAndStoreNothing) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  std::mt19937 rng(3);
  ASSERT_TRUE(c->Upsert({MakeDoc(rng, "keep", kDim, 2, 2)}).ok());
  const auto before = PooledOf(*c, "keep");

  struct Case {
    std::string name;
    std::function<void(Document&)> spoil;
    std::string message;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {"empty id", [](Document& d) { d.id = ""; }, "documents[1].id: must not be empty"},
      {"long id", [](Document& d) { d.id = std::string(513, 'x'); }, "documents[1].id: longer"},
      {"pooled dim", [](Document& d) { d.pooled.assign(kDim + 1, 1.f); },
       "documents[1].pooled: expected 16 values, got 17"},
      {"pooled nan",
       [&](Document& d) {
         d.pooled.assign(kDim, 1.f);
         d.pooled[3] = nan;
       },
       "documents[1].pooled: row 0 has a NaN"},
      {"pooled inf",
       [](Document& d) {
         d.pooled.assign(kDim, 1.f);
         d.pooled[0] = INFINITY;
       },
       "documents[1].pooled: row 0 has a NaN or infinite"},
      {"pooled zero", [](Document& d) { d.pooled.assign(kDim, 0.f); },
       "documents[1].pooled: row 0 has zero norm"},
      {"tokens nan", [&](Document& d) { d.tokens[kDim + 2] = nan; },
       "documents[1].tokens: row 1 has a NaN"},
      {"tokens shape", [](Document& d) { d.tokens.pop_back(); }, "documents[1].tokens: expected"},
      {"no text or vectors",
       [](Document& d) {
         d.text.clear();
         d.tokens.clear();
         d.num_tokens = 0;
         d.pooled.clear();
       },
       "documents[1]: no text, pooled vector or tokens"},
      {"text-only, invalid UTF-8",
       [](Document& d) {
         d.text = "caf\xc3";
         d.tokens.clear();
         d.num_tokens = 0;
         d.pooled.clear();
         d.token_texts.clear();
         d.token_spans.clear();
       },
       "documents[1].text: invalid UTF-8"},
      {"token texts", [](Document& d) { d.token_texts = {"only one"}; },
       "documents[1].token_texts: expected"},
      {"duplicate id", [](Document& d) { d.id = "new0"; },
       "documents[1].id: 'new0' appears twice in the batch (also documents[0])"},
  };
  for (const Case& k : cases) {
    std::vector<Document> batch = {MakeDoc(rng, "new0", kDim, 2, 2),
                                   MakeDoc(rng, "new1", kDim, 3, 3)};
    k.spoil(batch[1]);
    auto r = c->Upsert(batch);
    ASSERT_FALSE(r.ok()) << k.name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << k.name;
    EXPECT_NE(r.status().message().find(k.message), std::string::npos)
        << k.name << ": " << r.status().message();
    // Nothing of the batch is stored; what was stored is unchanged.
    auto got = c->Get({"new0", "new1"}, false);
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(got->documents.empty()) << k.name;
    EXPECT_EQ(c->Stats().num_documents, 1u);
    EXPECT_EQ(PooledOf(*c, "keep"), before);
  }
}

TEST(CollectionTest, BadQueriesNameTheField) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_top_k = 50;
  options.limits.max_candidates = 200;
  auto c = MustCreate(dir.Sub("c"), Config(), options);
  std::mt19937 rng(4);
  ASSERT_TRUE(c->Upsert({MakeDoc(rng, "a", kDim, 2, 2)}).ok());
  auto good = [&] {
    SearchQuery q;
    q.pooled = testing::RandomUnitRows(rng, 1, kDim);
    q.top_k = 5;
    return q;
  };
  struct Case {
    std::function<void(SearchQuery&)> spoil;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](SearchQuery& q) { q.top_k = 0; }, "top_k: must be at least 1"},
      {[](SearchQuery& q) { q.top_k = 51; }, "top_k: 51 exceeds the limit of 50"},
      {[](SearchQuery& q) { q.candidates = 3; }, "candidates: 3 is less than top_k (5)"},
      {[](SearchQuery& q) { q.candidates = 201; }, "candidates: 201 exceeds the limit of 200"},
      {[](SearchQuery& q) { q.temperature = -1.f; }, "temperature: must be a positive"},
      {[](SearchQuery& q) { q.temperature = NAN; }, "temperature: must be a positive"},
      {[](SearchQuery& q) { q.pooled.clear(); }, "query: empty"},
      {[](SearchQuery& q) { q.pooled.resize(3); }, "query.pooled: expected 16 values, got 3"},
      {[](SearchQuery& q) { q.pooled[0] = NAN; }, "query.pooled: row 0 has a NaN"},
      {[](SearchQuery& q) {
         q.num_tokens = 2;
         q.tokens.assign(kDim, 1.f);
       },
       "query.tokens: expected 2 x 16 values, got 16"},
      {[](SearchQuery& q) {
         q.num_tokens = 1;
         q.tokens.assign(kDim, 1.f);
         q.token_weights = {1, 2};
       },
       "query.token_weights: expected 1 values, got 2"},
      {[](SearchQuery& q) {
         q.num_tokens = 1;
         q.tokens.assign(kDim, 1.f);
         q.token_weights = {-1};
       },
       "query.token_weights[0]: must be a finite, non-negative"},
      {[](SearchQuery& q) { q.ann_params = "efSearch=abc"; }, "ann_params: 'efSearch=abc'"},
      {[](SearchQuery& q) { q.ann_params = "depth=3"; }, "ann_params: unknown knob 'depth'"},
      {[](SearchQuery& q) { q.ann_params = "efSearch=64,"; }, "ann_params: an empty knob"},
      {[](SearchQuery& q) { q.ann_params = "nprobe=8"; }, "ann_params: nprobe needs an IVF index"},
      {[](SearchQuery& q) { q.ann_params = "probe=8"; },
       "ann_params: probe needs candidates_from centroids"},
      {[](SearchQuery& q) {
         q.filter = {{"lang", {}}};
       },
       "filter.must[0].values: must not be empty"},
      {[](SearchQuery& q) {
         q.filter = {{"", {"x"}}};
       },
       "filter.must[0].key: must not be empty"},
  };
  for (const Case& k : cases) {
    SearchQuery q = good();
    k.spoil(q);
    auto r = c->Search(q);
    ASSERT_FALSE(r.ok()) << k.message;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(k.message), std::string::npos)
        << "want '" << k.message << "', got: " << r.status().message();
  }
  // And a good one works.
  auto r = c->Search(good());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hits.size(), 1u);
}

TEST(CollectionTest, ExpiredDeadlineAbandonsTheSearch) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  std::mt19937 rng(5);
  ASSERT_TRUE(c->Upsert({MakeDoc(rng, "a", kDim, 2, 2)}).ok());
  SearchQuery q;
  q.pooled = testing::RandomUnitRows(rng, 1, kDim);
  q.top_k = 1;
  auto r = c->Search(q, absl::Now() - absl::Seconds(1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CollectionTest, FilterInsideSearchFillsTopK) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  std::mt19937 rng(6);
  std::vector<Document> docs;
  for (int i = 0; i < 3000; ++i) {
    Document d = MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 4);
    d.metadata["bucket"] = std::to_string(i % 50);  // 2% per bucket
    d.metadata["parity"] = i % 2 ? "odd" : "even";
    docs.push_back(std::move(d));
  }
  ASSERT_TRUE(c->Upsert(docs).ok());
  // Delete some of bucket 7 to mix tombstones with the filter.
  ASSERT_TRUE(c->Delete({"d7", "d57", "d107"}).ok());
  for (int trial = 0; trial < 10; ++trial) {
    SearchQuery q;
    q.pooled = testing::RandomUnitRows(rng, 1, kDim);
    q.top_k = 10;
    q.candidates = 10;
    q.mode = RerankMode::kNone;
    q.filter = {{"bucket", {"7", "9"}}, {"parity", {"odd"}}};
    q.include_metadata = true;
    auto r = c->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->hits.size(), 10u);  // 117 documents match
    for (const auto& h : r->hits) {
      EXPECT_TRUE(h.metadata.at("bucket") == "7" || h.metadata.at("bucket") == "9") << h.id;
      EXPECT_EQ(h.metadata.at("parity"), "odd");
      EXPECT_NE(h.id, "d7");
      EXPECT_NE(h.id, "d57");
    }
  }
  // A value no document has matches nothing.
  SearchQuery q;
  q.pooled = testing::RandomUnitRows(rng, 1, kDim);
  q.top_k = 10;
  q.filter = {{"bucket", {"none"}}};
  auto r = c->Search(q);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->hits.empty());
}

TEST(CollectionTest, ModesAndExplanations) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config("Flat"));
  std::mt19937 rng(7);
  std::vector<Document> docs;
  for (int i = 0; i < 200; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 12));
  for (auto& d : docs) {
    d.token_texts.clear();
    for (uint32_t t = 0; t < d.num_tokens; ++t) d.token_texts.push_back("w" + std::to_string(t));
  }
  ASSERT_TRUE(c->Upsert(docs).ok());
  SearchQuery base;
  base.num_tokens = 5;
  base.tokens = testing::RandomUnitRows(rng, 5, kDim);
  base.top_k = 10;
  base.candidates = 200;
  base.explain = true;

  // A tiny temperature gives MaxSim's ranking and scores.
  SearchQuery sharp = base, maxsim = base;
  sharp.temperature = 1e-5f;
  maxsim.mode = RerankMode::kMaxSim;
  auto rs = c->Search(sharp), rm = c->Search(maxsim);
  ASSERT_TRUE(rs.ok() && rm.ok());
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(rs->hits[i].id, rm->hits[i].id);
    EXPECT_NEAR(rs->hits[i].score, rm->hits[i].score, 1e-5);
  }
  // Explanations: one match per query token; contributions sum to the score;
  // token texts come from the document.
  for (const auto& h : rm->hits) {
    ASSERT_EQ(h.matches.size(), 5u);
    float sum = 0.f;
    for (const auto& m : h.matches) {
      sum += m.contribution;
      EXPECT_EQ(m.document_token_text, "w" + std::to_string(m.document_token));
      EXPECT_FLOAT_EQ(m.weight, 1.f);
    }
    EXPECT_NEAR(sum, h.score, 1e-5);
  }
  // NONE ranks by the ANN score alone.
  SearchQuery none = base;
  none.mode = RerankMode::kNone;
  auto rn = c->Search(none);
  ASSERT_TRUE(rn.ok());
  for (size_t i = 0; i + 1 < rn->hits.size(); ++i) {
    EXPECT_EQ(rn->hits[i].score, rn->hits[i].ann_score);
    EXPECT_GE(rn->hits[i].ann_score, rn->hits[i + 1].ann_score);
    EXPECT_TRUE(rn->hits[i].matches.empty());
  }
}

// attention_map: every hit's m x n weights equal the reference reranker's
// (ATTENTION: softmax rows; MAXSIM: one-hot at the best token), with the
// document's token texts; NONE and a map over the cell limit are refused
// naming the field and the limit.
TEST(CollectionTest, AttentionMapsMatchTheReference) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_attention_cells = 5 * 12 * 3;  // 3 hits of at most 12 tokens
  auto c = MustCreate(dir.Sub("c"), Config("Flat"), options);
  std::mt19937 rng(17);
  std::vector<Document> docs;
  for (int i = 0; i < 100; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 12));
  for (auto& d : docs) {
    d.token_texts.clear();
    for (uint32_t t = 0; t < d.num_tokens; ++t) d.token_texts.push_back("w" + std::to_string(t));
  }
  ASSERT_TRUE(c->Upsert(docs).ok());
  std::map<std::string, const Document*> by_id;
  for (const auto& d : docs) by_id[d.id] = &d;
  SearchQuery q;
  q.num_tokens = 5;
  q.tokens = testing::RandomUnitRows(rng, 5, kDim);
  q.top_k = 3;
  q.candidates = 100;
  q.attention_map = true;
  for (const RerankMode mode : {RerankMode::kAttention, RerankMode::kMaxSim}) {
    SearchQuery mq = q;
    mq.mode = mode;
    mq.temperature = 0.2f;
    auto r = c->Search(mq);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->hits.size(), 3u);
    for (const SearchHit& h : r->hits) {
      const Document& d = *by_id.at(h.id);
      ASSERT_EQ(h.attention_cols, d.num_tokens) << h.id;
      ASSERT_EQ(h.attention.size(), size_t(5) * d.num_tokens);
      EXPECT_EQ(h.token_texts, d.token_texts);
      // The stored rows are unit (the engine normalises them); so are the
      // query's random rows.
      const std::vector<double> want = ReferenceAttention(mq.tokens.data(), 5, d.tokens.data(),
                                                          d.num_tokens, kDim, mode, mq.temperature);
      for (size_t k = 0; k < want.size(); ++k) {
        EXPECT_NEAR(h.attention[k], want[k], 2e-3) << h.id << " cell " << k;
      }
      for (uint32_t i = 0; i < 5; ++i) {
        float sum = 0.f;
        for (uint32_t j = 0; j < d.num_tokens; ++j) sum += h.attention[i * d.num_tokens + j];
        EXPECT_NEAR(sum, 1.f, 1e-5);
      }
    }
  }
  SearchQuery none = q;
  none.mode = RerankMode::kNone;
  auto refused = c->Search(none);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("attention_map"), std::string::npos);
  SearchQuery many = q;
  many.top_k = 20;
  auto over = c->Search(many);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(over.status().message().find("max_attention_cells"), std::string::npos)
      << over.status();
  SearchQuery plain = many;
  plain.attention_map = false;
  EXPECT_TRUE(c->Search(plain).ok());
}

// Reopening: the snapshot plus the writes made after it, a missing snapshot
// and a corrupt one all give an index that agrees with the store.
TEST(CollectionTest, ReopenCatchesUpAndRebuilds) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  CollectionOptions options;
  options.snapshot_every = 0;  // snapshots only when asked, or on close
  std::mt19937 rng(8);
  std::vector<Document> docs;
  for (int i = 0; i < 1500; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 3));
  {
    auto c = MustCreate(path, Config(), options);
    ASSERT_TRUE(c->Upsert({docs.begin(), docs.begin() + 1000}).ok());
    ASSERT_TRUE(c->SaveSnapshot().ok());
    ASSERT_TRUE(c->Upsert({docs.begin() + 1000, docs.end()}).ok());
    ASSERT_TRUE(c->Delete({"d3", "d1200"}).ok());
    c->DiscardOnClose();  // as if the process died: the snapshot is stale
  }
  auto check = [&](Collection& c) {
    EXPECT_EQ(c.Stats().num_documents, 1498u);
    // Deleted documents may linger in the index as tombstones, never more.
    EXPECT_GE(c.Stats().ann_vectors, 1498u);
    EXPECT_LE(c.Stats().ann_vectors, 1500u);
    for (int i = 0; i < 1500; i += 37) {
      const std::string id = "d" + std::to_string(i);
      auto got = c.Get({id}, true);
      ASSERT_TRUE(got.ok());
      if (got->documents.empty()) continue;
      auto ids = SearchByPooled(c, got->documents[0].pooled, 1, 0);
      ASSERT_EQ(ids.size(), 1u);
      EXPECT_EQ(ids[0], id);
    }
    auto gone = c.Get({"d3", "d1200"}, false);
    ASSERT_TRUE(gone.ok());
    EXPECT_TRUE(gone->documents.empty());
  };
  {
    auto c = MustOpen(path, options);  // snapshot of 1000 + catch-up of 500
    check(*c);
  }
  // Corrupt the snapshot: the index is rebuilt from the store.
  {
    std::fstream f(path + "/ann.snapshot", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  {
    auto c = MustOpen(path, options);
    check(*c);
  }
  // No snapshot at all: rebuilt too.
  std::filesystem::remove(path + "/ann.snapshot");
  {
    auto c = MustOpen(path, options);
    check(*c);
  }
}

TEST(CollectionTest, CreateRejectsBadConfig) {
  TempDir dir;
  CollectionConfig bad = Config();
  bad.dim = 0;
  EXPECT_EQ(Collection::Create(dir.Sub("a"), bad, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = Config("NoSuchIndex");
  auto r = Collection::Create(dir.Sub("b"), bad, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("ann_spec"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("b")));
}

}  // namespace
}  // namespace attnsearch

namespace attnsearch {
namespace {

// Bulk loading: documents are stored at once and indexed once, at the end.
TEST(CollectionTest, BulkLoadDefersTheIndex) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  CollectionOptions bulk = CollectionOptions::ForBulkLoad();
  std::mt19937 rng(9);
  std::vector<Document> docs;
  for (int i = 0; i < 2000; ++i) {
    Document d = MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 3);
    d.metadata["half"] = i < 1000 ? "first" : "second";
    docs.push_back(std::move(d));
  }
  {
    auto c = MustCreate(path, Config(), bulk);
    ASSERT_TRUE(c->Upsert({docs.begin(), docs.begin() + 1000}).ok());
    ASSERT_TRUE(c->Upsert({docs.begin() + 1000, docs.end()}).ok());
    EXPECT_EQ(c->Stats().num_documents, 2000u);
    EXPECT_EQ(c->Stats().ann_vectors, 0u);  // not indexed yet
    auto built = c->BuildIndex();
    ASSERT_TRUE(built.ok()) << built.status();
    EXPECT_EQ(*built, 2000u);
    EXPECT_EQ(c->Stats().ann_vectors, 2000u);
    ASSERT_TRUE(c->Flush().ok());
    auto ids = SearchByPooled(*c, PooledOf(*c, "d1234"), 1);
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_EQ(ids[0], "d1234");
    SearchQuery q;
    q.pooled = PooledOf(*c, "d5");
    q.top_k = 5;
    q.filter = {{"half", {"second"}}};
    q.include_metadata = true;
    auto r = c->Search(q);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->hits.size(), 5u);
    for (const auto& h : r->hits) EXPECT_EQ(h.metadata.at("half"), "second");
  }
  // A load that was never indexed is indexed by the next Open.
  {
    auto c = MustOpen(path, bulk);
    ASSERT_TRUE(c->Upsert({MakeDoc(rng, "late", kDim, 2, 2)}).ok());
    ASSERT_TRUE(c->Flush().ok());
  }
  auto c = MustOpen(path);
  EXPECT_EQ(c->Stats().ann_vectors, 2001u);
  auto ids = SearchByPooled(*c, PooledOf(*c, "late"), 1);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], "late");
}

}  // namespace
}  // namespace attnsearch

namespace attnsearch {
namespace {

TEST(CollectionTest, BatchLimitsNameTheLimit) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_batch_documents = 3;
  auto c = MustCreate(dir.Sub("c"), Config(), options);
  std::mt19937 rng(10);
  std::vector<Document> docs;
  for (int i = 0; i < 4; ++i) docs.push_back(MakeDoc(rng, "d" + std::to_string(i), kDim, 1, 2));
  auto up = c->Upsert(docs);
  EXPECT_EQ(up.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(up.status().message().find("documents: a batch of 4 exceeds the limit of 3"),
            std::string::npos);
  const std::vector<std::string> ids = {"a", "b", "c", "d"};
  auto got = c->Get(ids, false);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find("ids: 4 ids exceed the limit of 3"), std::string::npos);
  EXPECT_EQ(c->Delete(ids).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Stats().num_documents, 0u);
}

}  // namespace
}  // namespace attnsearch

namespace attnsearch {
namespace {

// Token spans: stored, validated, and turned into match spans and a snippet.
TEST(CollectionTest, ExplainGivesSpansAndSnippets) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config("Flat"));
  std::mt19937 rng(11);
  Document d = MakeDoc(rng, "doc", kDim, 3, 3);
  d.text = "alpha beta gamma";
  d.token_spans = {{0, 5}, {6, 10}, {11, 16}};
  Document bad = d;
  bad.id = "bad";
  bad.token_spans[2] = {11, 17};
  auto r = c->Upsert({bad});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("documents[0].token_spans[2]: [11, 17) is not a span"),
            std::string::npos)
      << r.status();
  // Spans must cut the text between UTF-8 characters: a snippet cut inside
  // one would not be UTF-8.
  Document accented = d;
  accented.id = "accented";
  accented.text = "h\xc3\xa9llo beta gamma";  // "héllo": é is 2 bytes
  for (const std::pair<uint32_t, uint32_t> span : {std::pair<uint32_t, uint32_t>{0, 2}, {2, 6}}) {
    accented.token_spans = {span, {7, 11}, {12, 17}};
    auto split = c->Upsert({accented});
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(split.status().message().find("token_spans[0]"), std::string::npos) << split.status();
    EXPECT_NE(split.status().message().find("UTF-8"), std::string::npos) << split.status();
  }
  ASSERT_TRUE(c->Upsert({d}).ok());
  auto got = c->Get({"doc"}, false);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->documents[0].token_spans, d.token_spans);

  // A query whose only token is the document's second token.
  SearchQuery q;
  q.num_tokens = 1;
  q.tokens.assign(d.tokens.begin() + kDim, d.tokens.begin() + 2 * kDim);
  q.top_k = 1;
  q.mode = RerankMode::kMaxSim;
  q.explain = true;
  q.highlight_pre = "[";
  q.highlight_post = "]";
  auto res = c->Search(q);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->hits.size(), 1u);
  ASSERT_EQ(res->hits[0].matches.size(), 1u);
  const TokenMatch& m = res->hits[0].matches[0];
  EXPECT_EQ(m.document_token, 1u);
  EXPECT_TRUE(m.has_span);
  EXPECT_EQ(m.span_begin, 6u);
  EXPECT_EQ(m.span_end, 10u);
  EXPECT_EQ(res->hits[0].snippet, "alpha [beta] gamma");
}

}  // namespace
}  // namespace attnsearch
