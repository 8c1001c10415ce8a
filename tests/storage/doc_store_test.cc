#include "storage/doc_store.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/types.h"
#include "core/vector_math.h"
#include "gtest/gtest.h"
#include "storage/codec.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::RandomUnitRows;
using ::attnsearch::testing::TempDir;

StorageOptions SmallOptions() {
  StorageOptions o;
  o.block_cache_bytes = size_t{1} << 20;
  o.write_buffer_bytes = size_t{1} << 20;
  return o;
}

// A valid, normalised document with `num_tokens` >= 1 unit token rows and a
// unit pooled vector, as DocStore::Commit requires.
Document MakeDoc(std::mt19937& rng, const std::string& id, uint32_t dim, uint32_t num_tokens) {
  Document d;
  d.id = id;
  d.text = absl::StrCat("text of ", id, " with some words");
  d.metadata = {{"lang", "en"}, {"source", absl::StrCat("src-", id)}};
  d.pooled = RandomUnitRows(rng, 1, dim);
  d.num_tokens = num_tokens;
  d.tokens = RandomUnitRows(rng, num_tokens, dim);
  for (uint32_t t = 0; t < num_tokens; ++t) d.token_texts.push_back(absl::StrCat("tok", t));
  return d;
}

// What the store must give back for a token value after storage.
float Stored(float v, TokenDtype dtype) {
  return dtype == TokenDtype::kF32 ? v : Bf16ToFloat(FloatToBf16(v));
}

void ExpectSameRecord(const Document& got, const Document& want) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(got.metadata, want.metadata);
  EXPECT_EQ(got.token_texts, want.token_texts);
}

void ExpectSameVectors(const Document& got, const Document& want, TokenDtype dtype) {
  // Pooled vectors are always f32: exact.
  ASSERT_EQ(got.pooled.size(), want.pooled.size());
  for (size_t i = 0; i < want.pooled.size(); ++i) EXPECT_EQ(got.pooled[i], want.pooled[i]);
  ASSERT_EQ(got.num_tokens, want.num_tokens);
  ASSERT_EQ(got.tokens.size(), want.tokens.size());
  for (size_t i = 0; i < want.tokens.size(); ++i) {
    if (dtype == TokenDtype::kF32) {
      ASSERT_EQ(got.tokens[i], want.tokens[i]) << i;
    } else {
      ASSERT_NEAR(got.tokens[i], want.tokens[i], 1e-2) << i;
      // And exactly the bf16 rounding of the value written.
      ASSERT_EQ(got.tokens[i], Stored(want.tokens[i], dtype)) << i;
    }
  }
}

std::unique_ptr<DocStore> CreateStore(const std::string& path, const CollectionConfig& config) {
  auto store = DocStore::Create(path, config, SmallOptions());
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

std::unique_ptr<DocStore> OpenStore(const std::string& path) {
  auto store = DocStore::Open(path, SmallOptions());
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

CollectionConfig Config(uint32_t dim, TokenDtype dtype) {
  CollectionConfig c;
  c.dim = dim;
  c.token_dtype = dtype;
  c.ann_spec = "Flat";
  return c;
}

// The labels ScanPooled visits from `from`, in order.
std::vector<Label> PooledLabels(const DocStore& store, Label from) {
  std::vector<Label> labels;
  EXPECT_TRUE(store
                  .ScanPooled(from,
                              [&](Label l, const float*) {
                                labels.push_back(l);
                                return absl::OkStatus();
                              })
                  .ok());
  return labels;
}

// The labels with data that are live: superseded ones awaiting Purge left out.
std::vector<Label> LivePooledLabels(const DocStore& store) {
  std::vector<Label> pending;
  EXPECT_TRUE(store.Tombstones(&pending).ok());
  std::vector<Label> live;
  for (Label l : PooledLabels(store, 0)) {
    if (!std::binary_search(pending.begin(), pending.end(), l)) live.push_back(l);
  }
  return live;
}

// ---------------------------------------------------------------------------
// Create / Open

TEST(DocStoreTest, CreateThenOpenRoundTripsConfig) {
  TempDir tmp;
  const CollectionConfig configs[] = {
      {8, TokenDtype::kF32, "Flat"},
      {48, TokenDtype::kBF16, "HNSW32,Flat"},
      {kMaxDim, TokenDtype::kBF16, "IVF16,PQ8"},
  };
  int i = 0;
  for (const CollectionConfig& config : configs) {
    const std::string path = tmp.Sub(absl::StrCat("store", i++));
    {
      auto store = CreateStore(path, config);
      ASSERT_NE(store, nullptr);
      EXPECT_EQ(store->config().dim, config.dim);
      EXPECT_EQ(store->config().token_dtype, config.token_dtype);
      EXPECT_EQ(store->config().ann_spec, config.ann_spec);
      EXPECT_EQ(store->next_label(), 0u);
      EXPECT_EQ(store->live_count(), 0u);
    }
    auto store = OpenStore(path);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->config().dim, config.dim);
    EXPECT_EQ(store->config().token_dtype, config.token_dtype);
    EXPECT_EQ(store->config().ann_spec, config.ann_spec);
    EXPECT_EQ(store->next_label(), 0u);
    EXPECT_EQ(store->live_count(), 0u);
    auto tombstones = store->Tombstones();
    ASSERT_TRUE(tombstones.ok()) << tombstones.status();
    EXPECT_TRUE(tombstones->empty());
  }
}

TEST(DocStoreTest, CreateOnExistingPathFailsAlreadyExists) {
  TempDir tmp;
  const std::string path = tmp.Sub("store");
  { ASSERT_NE(CreateStore(path, Config(4, TokenDtype::kF32)), nullptr); }
  auto again = DocStore::Create(path, Config(4, TokenDtype::kF32), SmallOptions());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  // Any existing path, even an empty directory, is refused.
  auto on_dir = DocStore::Create(tmp.path(), Config(4, TokenDtype::kF32), SmallOptions());
  EXPECT_EQ(on_dir.status().code(), absl::StatusCode::kAlreadyExists) << on_dir.status();
  // The first store is untouched.
  auto store = OpenStore(path);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->config().dim, 4u);
}

TEST(DocStoreTest, CreateWithInvalidConfigFails) {
  TempDir tmp;
  auto store = DocStore::Create(tmp.Sub("s"), Config(0, TokenDtype::kF32), SmallOptions());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument) << store.status();
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("s")));
}

TEST(DocStoreTest, OpenOfMissingPathFails) {
  TempDir tmp;
  auto store = DocStore::Open(tmp.Sub("nothing-here"), SmallOptions());
  EXPECT_FALSE(store.ok());
}

// ---------------------------------------------------------------------------
// Commit and reads, for both token dtypes.

class DocStoreDtypeTest : public ::testing::TestWithParam<TokenDtype> {
 protected:
  static constexpr uint32_t kDim = 16;
};

TEST_P(DocStoreDtypeTest, CommitThenGetDocumentsAndLookupIds) {
  const TokenDtype dtype = GetParam();
  TempDir tmp;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, dtype));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(11);
  std::vector<Document> docs;
  for (int i = 0; i < 20; ++i) {
    docs.push_back(MakeDoc(rng, absl::StrCat("doc-", i), kDim, 1 + i % 5));
  }
  // Two commits; the first label of the second is above next_label (a gap).
  std::vector<DocWrite> first, second;
  std::vector<Label> labels;
  for (int i = 0; i < 20; ++i) {
    const Label label = i < 12 ? Label(i) : Label(100 + i);
    labels.push_back(label);
    (i < 12 ? first : second).push_back({label, std::nullopt, &docs[i]});
  }
  ASSERT_TRUE(store->Commit(first, {}).ok());
  EXPECT_EQ(store->next_label(), 12u);
  EXPECT_EQ(store->live_count(), 12u);
  ASSERT_TRUE(store->Commit(second, {}).ok());
  EXPECT_EQ(store->next_label(), 120u);
  EXPECT_EQ(store->live_count(), 20u);

  // Query in a shuffled order with missing labels mixed in.
  std::vector<Label> query = labels;
  std::shuffle(query.begin(), query.end(), rng);
  query.insert(query.begin() + 3, 50);  // in the gap
  query.push_back(1000);                // past next_label
  std::map<Label, const Document*> want;
  for (int i = 0; i < 20; ++i) want[labels[i]] = &docs[i];

  using Vectors = DocStore::Vectors;
  for (Vectors vectors : {Vectors::kNone, Vectors::kPooled, Vectors::kAll}) {
    SCOPED_TRACE(::testing::Message() << "vectors " << int(vectors));
    std::vector<std::optional<Document>> out;
    ASSERT_TRUE(store->GetDocuments(query, vectors, &out).ok());
    ASSERT_EQ(out.size(), query.size());
    for (size_t i = 0; i < query.size(); ++i) {
      auto it = want.find(query[i]);
      if (it == want.end()) {
        EXPECT_FALSE(out[i].has_value()) << query[i];
        continue;
      }
      ASSERT_TRUE(out[i].has_value()) << query[i];
      ExpectSameRecord(*out[i], *it->second);
      if (vectors == Vectors::kAll) {
        ExpectSameVectors(*out[i], *it->second, dtype);
        continue;
      }
      if (vectors == Vectors::kPooled) {
        EXPECT_EQ(out[i]->pooled, it->second->pooled);
      } else {
        EXPECT_TRUE(out[i]->pooled.empty());
      }
      EXPECT_TRUE(out[i]->tokens.empty());
      EXPECT_EQ(out[i]->num_tokens, 0u);
    }
  }
  {  // The bool form: true is every vector.
    std::vector<std::optional<Document>> out;
    ASSERT_TRUE(store->GetDocuments({query[0]}, true, &out).ok());
    if (auto it = want.find(query[0]); it != want.end()) {
      ASSERT_TRUE(out[0].has_value());
      ExpectSameVectors(*out[0], *it->second, dtype);
    }
  }

  std::vector<std::string> ids = {"doc-3", "nope", "doc-19", "doc-0", ""};
  auto looked = store->LookupIds(ids);
  ASSERT_TRUE(looked.ok()) << looked.status();
  ASSERT_EQ(looked->size(), ids.size());
  EXPECT_EQ((*looked)[0], std::optional<Label>(3));
  EXPECT_EQ((*looked)[1], std::nullopt);
  EXPECT_EQ((*looked)[2], std::optional<Label>(119));
  EXPECT_EQ((*looked)[3], std::optional<Label>(0));
  EXPECT_EQ((*looked)[4], std::nullopt);

  auto tombstones = store->Tombstones();
  ASSERT_TRUE(tombstones.ok());
  EXPECT_TRUE(tombstones->empty());
}

TEST_P(DocStoreDtypeTest, GetTokensGivesContiguousBlock) {
  const TokenDtype dtype = GetParam();
  TempDir tmp;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, dtype));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(12);
  std::vector<Document> docs;
  std::vector<DocWrite> writes;
  const uint32_t token_counts[] = {3, 1, 7, 2, 5, 1};
  for (int i = 0; i < 6; ++i) {
    docs.push_back(MakeDoc(rng, absl::StrCat("d", i), kDim, token_counts[i]));
  }
  for (int i = 0; i < 6; ++i) writes.push_back({Label(i), std::nullopt, &docs[i]});
  ASSERT_TRUE(store->Commit(writes, {}).ok());

  // Missing labels at the start, in the middle and at the end; a repeat.
  const std::vector<Label> query = {77, 4, 0, 9, 2, 5, 4, 1, 123456};
  TokenBlock block;
  ASSERT_TRUE(store->GetTokens(query, &block).ok());
  ASSERT_EQ(block.rows.size(), query.size());
  ASSERT_EQ(block.offsets.size(), query.size());
  ASSERT_EQ(block.found.size(), query.size());
  size_t expected_offset = 0;
  const size_t elem = TokenDtypeSize(dtype);
  const char* base = static_cast<const char*>(block.data());
  for (size_t i = 0; i < query.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("label ", query[i]));
    EXPECT_EQ(block.offsets[i], expected_offset);
    if (query[i] >= 6) {
      EXPECT_FALSE(block.found[i]);
      EXPECT_EQ(block.rows[i], 0u);
      continue;
    }
    const Document& d = docs[query[i]];
    EXPECT_TRUE(block.found[i]);
    ASSERT_EQ(block.rows[i], d.num_tokens);
    for (size_t e = 0; e < size_t(d.num_tokens) * kDim; ++e) {
      const char* p = base + (block.offsets[i] * kDim + e) * elem;
      float got;
      if (dtype == TokenDtype::kF32) {
        std::memcpy(&got, p, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, p, 2);
        got = Bf16ToFloat(h);
      }
      ASSERT_EQ(got, Stored(d.tokens[e], dtype)) << "element " << e;
    }
    expected_offset += block.rows[i];
  }
  EXPECT_EQ(block.total_rows, expected_offset);
  // 4, 0, 2, 5, 4, 1 hold 5, 3, 7, 1, 5 and 1 rows.
  EXPECT_EQ(block.total_rows, 22u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DocStoreDtypeTest,
                         ::testing::Values(TokenDtype::kF32, TokenDtype::kBF16),
                         [](const ::testing::TestParamInfo<TokenDtype>& info) {
                           return std::string(TokenDtypeName(info.param));
                         });

TEST(DocStoreTest, GetTokensOfNothing) {
  TempDir tmp;
  auto store = CreateStore(tmp.Sub("store"), Config(4, TokenDtype::kBF16));
  ASSERT_NE(store, nullptr);
  TokenBlock block;
  ASSERT_TRUE(store->GetTokens({3, 4}, &block).ok());
  EXPECT_EQ(block.total_rows, 0u);
  EXPECT_EQ(block.rows, (std::vector<uint32_t>{0, 0}));
  EXPECT_EQ(block.offsets, (std::vector<size_t>{0, 0}));
  EXPECT_EQ(block.found, (std::vector<bool>{false, false}));
}

// Two stores on one shared block cache: reads of either fill it, and both
// report its whole usage.
TEST(DocStoreTest, StoresShareABlockCache) {
  TempDir tmp;
  constexpr uint32_t kDim = 16;
  auto cache = std::make_shared<BlockCache>(size_t{4} << 20);
  EXPECT_EQ(cache->capacity(), size_t{4} << 20);
  StorageOptions options = SmallOptions();
  options.block_cache = cache;
  std::mt19937 rng(21);
  std::vector<std::unique_ptr<DocStore>> stores;
  std::vector<std::vector<Document>> docs(2);
  for (int s = 0; s < 2; ++s) {
    auto store = DocStore::Create(tmp.Sub(absl::StrCat("store", s)), Config(kDim, TokenDtype::kF32),
                                  options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<DocWrite> writes;
    for (int i = 0; i < 40; ++i) docs[s].push_back(MakeDoc(rng, absl::StrCat("d", i), kDim, 8));
    for (int i = 0; i < 40; ++i) writes.push_back({Label(i), std::nullopt, &docs[s][i]});
    ASSERT_TRUE((*store)->Commit(writes, {}).ok());
    ASSERT_TRUE((*store)->Flush().ok());  // reads now come through the block cache
    stores.push_back(std::move(store).value());
  }
  std::vector<Label> all(40);
  for (int i = 0; i < 40; ++i) all[i] = Label(i);
  size_t before = cache->usage();
  for (int s = 0; s < 2; ++s) {
    TokenBlock block;
    ASSERT_TRUE(stores[s]->GetTokens(all, &block).ok());
    ASSERT_EQ(block.total_rows, 40u * 8);
    for (int i = 0; i < 40; ++i) {
      const float* got = block.storage.data() + block.offsets[i] * kDim;
      ASSERT_TRUE(std::equal(got, got + 8 * kDim, docs[s][i].tokens.begin())) << s << " " << i;
    }
    EXPECT_GT(cache->usage(), before) << "store " << s;
    before = cache->usage();
  }
  EXPECT_EQ(stores[0]->Memory().block_cache, cache->usage());
  EXPECT_EQ(stores[1]->Memory().block_cache, cache->usage());
}

// ---------------------------------------------------------------------------
// Overwrites, deletes and persistence.

TEST(DocStoreTest, OverwriteSupersedesOldLabel) {
  TempDir tmp;
  constexpr uint32_t kDim = 8;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, TokenDtype::kF32));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(13);
  Document a1 = MakeDoc(rng, "a", kDim, 2);
  Document b = MakeDoc(rng, "b", kDim, 3);
  ASSERT_TRUE(store->Commit({{0, std::nullopt, &a1}, {1, std::nullopt, &b}}, {}).ok());
  ASSERT_EQ(store->live_count(), 2u);

  Document a2 = MakeDoc(rng, "a", kDim, 4);
  a2.text = "second version";
  ASSERT_TRUE(store->Commit({{2, Label(0), &a2}}, {}).ok());
  EXPECT_EQ(store->live_count(), 2u);
  EXPECT_EQ(store->next_label(), 3u);
  {
    // The old version stays readable, marked for purging, until Purge.
    std::vector<Label> pending;
    auto tombstones = store->Tombstones(&pending);
    ASSERT_TRUE(tombstones.ok());
    EXPECT_EQ(*tombstones, (std::vector<Label>{0}));
    EXPECT_EQ(pending, (std::vector<Label>{0}));
    std::vector<std::optional<Document>> old;
    ASSERT_TRUE(store->GetDocuments({0}, true, &old).ok());
    ASSERT_TRUE(old[0].has_value());
    ExpectSameRecord(*old[0], a1);
    EXPECT_EQ(PooledLabels(*store, 0), (std::vector<Label>{0, 1, 2}));
  }
  ASSERT_TRUE(store->Purge({0}).ok());

  auto looked = store->LookupIds({"a", "b"});
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ((*looked)[0], std::optional<Label>(2));
  EXPECT_EQ((*looked)[1], std::optional<Label>(1));

  std::vector<std::optional<Document>> out;
  ASSERT_TRUE(store->GetDocuments({0, 1, 2}, true, &out).ok());
  EXPECT_FALSE(out[0].has_value());
  ASSERT_TRUE(out[1].has_value());
  ExpectSameRecord(*out[1], b);
  ExpectSameVectors(*out[1], b, TokenDtype::kF32);
  ASSERT_TRUE(out[2].has_value());
  ExpectSameRecord(*out[2], a2);
  ExpectSameVectors(*out[2], a2, TokenDtype::kF32);

  TokenBlock block;
  ASSERT_TRUE(store->GetTokens({0}, &block).ok());
  EXPECT_FALSE(block.found[0]);
  EXPECT_EQ(block.rows[0], 0u);

  std::vector<Label> pending;
  auto tombstones = store->Tombstones(&pending);
  ASSERT_TRUE(tombstones.ok());
  EXPECT_EQ(*tombstones, (std::vector<Label>{0}));
  EXPECT_TRUE(pending.empty());

  EXPECT_EQ(PooledLabels(*store, 0), (std::vector<Label>{1, 2}));

  std::map<Label, std::string> records;
  ASSERT_TRUE(store
                  ->ScanDocRecords(0,
                                   [&](Label l, const Document& d) {
                                     records[l] = d.text;
                                     EXPECT_TRUE(d.pooled.empty());
                                     return absl::OkStatus();
                                   })
                  .ok());
  EXPECT_EQ(records, (std::map<Label, std::string>{{1, b.text}, {2, "second version"}}));
}

TEST(DocStoreTest, ReadViewSeesTheStoreAsItWasWhenTaken) {
  TempDir tmp;
  constexpr uint32_t kDim = 8;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, TokenDtype::kF32));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(21);
  Document a1 = MakeDoc(rng, "a", kDim, 2);
  Document b = MakeDoc(rng, "b", kDim, 3);
  ASSERT_TRUE(store->Commit({{0, std::nullopt, &a1}, {1, std::nullopt, &b}}, {}).ok());

  auto view = store->NewReadView();
  ASSERT_TRUE(view.ok()) << view.status();
  Document a2 = MakeDoc(rng, "a", kDim, 4);
  ASSERT_TRUE(store->Commit({{2, Label(0), &a2}}, {{"b", 1}}).ok());
  ASSERT_TRUE(store->Purge({0}).ok());

  // Through the view: a at label 0, b present, both with their tokens.
  auto then = store->LookupIds({"a", "b"}, &*view);
  ASSERT_TRUE(then.ok());
  EXPECT_EQ(*then, (std::vector<std::optional<Label>>{0, 1}));
  std::vector<std::optional<Document>> docs;
  ASSERT_TRUE(store->GetDocuments({0, 1, 2}, true, &docs, &*view).ok());
  ASSERT_TRUE(docs[0].has_value() && docs[1].has_value());
  EXPECT_FALSE(docs[2].has_value());
  ExpectSameVectors(*docs[0], a1, TokenDtype::kF32);
  TokenBlock block;
  ASSERT_TRUE(store->GetTokens({0, 1, 2}, &block, nullptr, &*view).ok());
  EXPECT_EQ(block.found, (std::vector<bool>{true, true, false}));
  EXPECT_EQ(block.total_rows, 5u);

  // Without it: the store as it is.
  auto now = store->LookupIds({"a", "b"});
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(*now, (std::vector<std::optional<Label>>{2, std::nullopt}));
  ASSERT_TRUE(store->GetDocuments({0, 1, 2}, true, &docs).ok());
  EXPECT_FALSE(docs[0].has_value());
  EXPECT_FALSE(docs[1].has_value());
  ASSERT_TRUE(docs[2].has_value());
  ExpectSameVectors(*docs[2], a2, TokenDtype::kF32);
}

TEST(DocStoreTest, DeleteRemovesDocument) {
  TempDir tmp;
  constexpr uint32_t kDim = 8;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, TokenDtype::kBF16));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(14);
  std::vector<Document> docs;
  for (int i = 0; i < 4; ++i) docs.push_back(MakeDoc(rng, absl::StrCat("x", i), kDim, 2));
  std::vector<DocWrite> writes;
  for (int i = 0; i < 4; ++i) writes.push_back({Label(i), std::nullopt, &docs[i]});
  ASSERT_TRUE(store->Commit(writes, {}).ok());

  ASSERT_TRUE(store->Commit({}, {{"x1", 1}, {"x3", 3}}).ok());
  EXPECT_EQ(store->live_count(), 2u);
  EXPECT_EQ(store->next_label(), 4u);
  auto looked = store->LookupIds({"x0", "x1", "x2", "x3"});
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(*looked, (std::vector<std::optional<Label>>{0, std::nullopt, 2, std::nullopt}));
  std::vector<std::optional<Document>> out;
  ASSERT_TRUE(store->GetDocuments({0, 1, 2, 3}, false, &out).ok());
  EXPECT_TRUE(out[0].has_value());
  EXPECT_FALSE(out[1].has_value());
  EXPECT_TRUE(out[2].has_value());
  EXPECT_FALSE(out[3].has_value());
  auto tombstones = store->Tombstones();
  ASSERT_TRUE(tombstones.ok());
  EXPECT_EQ(*tombstones, (std::vector<Label>{1, 3}));

  // A write and a delete in one batch; an id can come back after deletion,
  // under a new label.
  Document x1_again = MakeDoc(rng, "x1", kDim, 1);
  ASSERT_TRUE(store->Commit({{4, std::nullopt, &x1_again}}, {{"x0", 0}}).ok());
  EXPECT_EQ(store->live_count(), 2u);
  EXPECT_EQ(store->next_label(), 5u);
  looked = store->LookupIds({"x0", "x1"});
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(*looked, (std::vector<std::optional<Label>>{std::nullopt, 4}));
  tombstones = store->Tombstones();
  ASSERT_TRUE(tombstones.ok());
  EXPECT_EQ(*tombstones, (std::vector<Label>{0, 1, 3}));

  // Dropping tombstone records (after an index rebuild) leaves the rest,
  // and the documents, as they are; absent labels are ignored.
  ASSERT_TRUE(store->DropTombstones({0, 3, 77}).ok());
  tombstones = store->Tombstones();
  ASSERT_TRUE(tombstones.ok());
  EXPECT_EQ(*tombstones, (std::vector<Label>{1}));
  EXPECT_EQ(store->live_count(), 2u);
  EXPECT_TRUE(store->DropTombstones({}).ok());
}

TEST(DocStoreTest, StatePersistsAcrossReopen) {
  TempDir tmp;
  constexpr uint32_t kDim = 12;
  const std::string path = tmp.Sub("store");
  std::mt19937 rng(15);
  Document a = MakeDoc(rng, "a", kDim, 3);
  Document b = MakeDoc(rng, "b", kDim, 1);
  Document a2 = MakeDoc(rng, "a", kDim, 2);
  {
    auto store = CreateStore(path, Config(kDim, TokenDtype::kBF16));
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Commit({{5, std::nullopt, &a}, {9, std::nullopt, &b}}, {}).ok());
    ASSERT_TRUE(store->Commit({{40, Label(5), &a2}}, {{"b", 9}}).ok());
    EXPECT_EQ(store->next_label(), 41u);
    EXPECT_EQ(store->live_count(), 1u);
  }
  {
    auto store = OpenStore(path);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->next_label(), 41u);
    EXPECT_EQ(store->live_count(), 1u);
    std::vector<Label> pending;
    auto tombstones = store->Tombstones(&pending);
    ASSERT_TRUE(tombstones.ok());
    EXPECT_EQ(*tombstones, (std::vector<Label>{5, 9}));
    EXPECT_EQ(pending, (std::vector<Label>{5}));  // never purged: still pending
    auto looked = store->LookupIds({"a", "b"});
    ASSERT_TRUE(looked.ok());
    EXPECT_EQ(*looked, (std::vector<std::optional<Label>>{40, std::nullopt}));
    std::vector<std::optional<Document>> out;
    ASSERT_TRUE(store->GetDocuments({40}, true, &out).ok());
    ASSERT_TRUE(out[0].has_value());
    ExpectSameRecord(*out[0], a2);
    ExpectSameVectors(*out[0], a2, TokenDtype::kBF16);
    // Writing continues from the persisted next label.
    Document c = MakeDoc(rng, "c", kDim, 1);
    ASSERT_TRUE(store->Commit({{store->next_label(), std::nullopt, &c}}, {}).ok());
  }
  auto store = OpenStore(path);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->next_label(), 42u);
  EXPECT_EQ(store->live_count(), 2u);
}

TEST(DocStoreTest, EmptyCommitChangesNothing) {
  TempDir tmp;
  auto store = CreateStore(tmp.Sub("store"), Config(4, TokenDtype::kF32));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Commit({}, {}).ok());
  EXPECT_EQ(store->next_label(), 0u);
  EXPECT_EQ(store->live_count(), 0u);
}

TEST(DocStoreTest, ScanPooledFromLabel) {
  TempDir tmp;
  constexpr uint32_t kDim = 6;
  auto store = CreateStore(tmp.Sub("store"), Config(kDim, TokenDtype::kBF16));
  ASSERT_NE(store, nullptr);
  std::mt19937 rng(16);
  std::vector<Document> docs;
  std::vector<DocWrite> writes;
  std::vector<Label> labels;
  for (int i = 0; i < 10; ++i) {
    docs.push_back(MakeDoc(rng, absl::StrCat("p", i), kDim, 1));
    labels.push_back(Label(3 * i));  // 0, 3, ..., 27
  }
  for (int i = 0; i < 10; ++i) writes.push_back({labels[i], std::nullopt, &docs[i]});
  ASSERT_TRUE(store->Commit(writes, {}).ok());
  // Delete label 18 (p6); label 300 (255 < 300) must sort after 27 although
  // its low byte does not.
  Document big = MakeDoc(rng, "big", kDim, 1);
  ASSERT_TRUE(store->Commit({{300, std::nullopt, &big}}, {{"p6", 18}}).ok());

  std::vector<Label> seen;
  ASSERT_TRUE(store
                  ->ScanPooled(13,
                               [&](Label l, const float* v) {
                                 seen.push_back(l);
                                 const Document& want = l == 300 ? big : docs[l / 3];
                                 for (uint32_t k = 0; k < kDim; ++k) {
                                   EXPECT_EQ(v[k], want.pooled[k]) << l;
                                 }
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(seen, (std::vector<Label>{15, 21, 24, 27, 300}));

  // From exactly a live label includes it; past the end visits nothing.
  EXPECT_EQ(PooledLabels(*store, 27), (std::vector<Label>{27, 300}));
  EXPECT_TRUE(PooledLabels(*store, 301).empty());

  // The first error stops the scan and is returned.
  seen.clear();
  absl::Status s = store->ScanPooled(0, [&](Label l, const float*) {
    seen.push_back(l);
    return l == 6 ? absl::CancelledError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, (std::vector<Label>{0, 3, 6}));
}

// ---------------------------------------------------------------------------
// Codecs.

void ExpectDataLoss(const absl::Status& s, const std::string& what) {
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << what << ": " << s;
}

TEST(CodecTest, LabelKeySortsLikeLabelsAndRoundTrips) {
  const std::vector<Label> labels = {0, 1, 255, 256, 65535, 65536, 1ull << 40, ~0ull - 1, ~0ull};
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string k = codec::LabelKey(labels[i]);
    ASSERT_EQ(k.size(), 8u);
    auto back = codec::DecodeLabelKey(k);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, labels[i]);
    if (i > 0) EXPECT_LT(codec::LabelKey(labels[i - 1]), k);
  }
  ExpectDataLoss(codec::DecodeLabelKey("").status(), "empty key");
  ExpectDataLoss(codec::DecodeLabelKey("1234567").status(), "7-byte key");
  ExpectDataLoss(codec::DecodeLabelKey("123456789").status(), "9-byte key");
}

TEST(CodecTest, DocRecordRoundTripsAndRejectsTruncation) {
  std::mt19937 rng(17);
  Document d = MakeDoc(rng, "the-id", 4, 3);
  d.metadata["empty"] = "";
  d.text = std::string("with\0nul", 8);
  const std::string v = codec::EncodeDocRecord(d);
  Document back;
  ASSERT_TRUE(codec::DecodeDocRecord(v, &back).ok());
  ExpectSameRecord(back, d);
  for (size_t n = 0; n < v.size(); ++n) {
    Document x;
    ExpectDataLoss(codec::DecodeDocRecord(std::string_view(v).substr(0, n), &x),
                   absl::StrCat("prefix ", n));
  }
  Document x;
  ExpectDataLoss(codec::DecodeDocRecord(v + "!", &x), "trailing byte");
  std::string bad_version = v;
  bad_version[0] = 9;
  ExpectDataLoss(codec::DecodeDocRecord(bad_version, &x), "bad version");
  // A string length pointing far past the end.
  std::string huge_len = v;
  huge_len[4] = char(0xff);
  huge_len[5] = char(0xff);
  huge_len[6] = char(0xff);
  huge_len[7] = char(0x7f);
  ExpectDataLoss(codec::DecodeDocRecord(huge_len, &x), "huge length");
  // Random garbage.
  std::uniform_int_distribution<int> byte(0, 255);
  for (int t = 0; t < 200; ++t) {
    std::string g(size_t(t % 40), '\0');
    for (char& c : g) c = char(byte(rng));
    ExpectDataLoss(codec::DecodeDocRecord(g, &x), "garbage");
  }
}

TEST(CodecTest, ConfigRoundTripsNumericFieldsAndReadsVersion1) {
  CollectionConfig c{24, TokenDtype::kInt8, "HNSW16,Flat"};
  c.numeric_fields = {"price", "year", "geo.lat"};
  const std::string v = codec::EncodeConfig(c);
  auto back = codec::DecodeConfig(v);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dim, 24u);
  EXPECT_EQ(back->token_dtype, TokenDtype::kInt8);
  EXPECT_EQ(back->ann_spec, "HNSW16,Flat");
  EXPECT_EQ(back->numeric_fields, c.numeric_fields);
  for (size_t n = 0; n < v.size(); ++n) {
    EXPECT_FALSE(codec::DecodeConfig(std::string_view(v).substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(codec::DecodeConfig(v + "!").ok());
  // A version 1 record (before numeric fields): version, dim, dtype, spec.
  std::string v1;
  auto put_u32 = [&](uint32_t x) { v1.append(reinterpret_cast<const char*>(&x), 4); };
  put_u32(1);
  put_u32(8);
  put_u32(uint32_t(TokenDtype::kBF16));
  put_u32(4);
  v1 += "Flat";
  auto old = codec::DecodeConfig(v1);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->dim, 8u);
  EXPECT_EQ(old->ann_spec, "Flat");
  EXPECT_TRUE(old->numeric_fields.empty());
  // A duplicate field is corrupt, not silently accepted.
  CollectionConfig dup = c;
  dup.numeric_fields = {"a", "a"};
  EXPECT_FALSE(codec::DecodeConfig(codec::EncodeConfig(dup)).ok());
}

TEST(CodecTest, TokensRoundTripAndRejectBadSizes) {
  std::mt19937 rng(18);
  constexpr uint32_t kDim = 5;
  const std::vector<float> tokens = RandomUnitRows(rng, 3, kDim);
  for (TokenDtype dtype : {TokenDtype::kF32, TokenDtype::kBF16}) {
    SCOPED_TRACE(TokenDtypeName(dtype));
    const std::string v = codec::EncodeTokens(tokens.data(), 3, kDim, dtype);
    EXPECT_EQ(v.size(), 4 + 3 * kDim * TokenDtypeSize(dtype));
    auto rows = codec::TokenRows(v, kDim, dtype);
    ASSERT_TRUE(rows.ok());
    EXPECT_EQ(*rows, 3u);
    std::vector<float> out;
    uint32_t out_rows = 0;
    ASSERT_TRUE(codec::DecodeTokens(v, kDim, dtype, &out, &out_rows).ok());
    EXPECT_EQ(out_rows, 3u);
    ASSERT_EQ(out.size(), tokens.size());
    for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], Stored(tokens[i], dtype));

    for (size_t n = 0; n < v.size(); ++n) {
      const std::string_view prefix = std::string_view(v).substr(0, n);
      ExpectDataLoss(codec::TokenRows(prefix, kDim, dtype).status(),
                     absl::StrCat("TokenRows prefix ", n));
      ExpectDataLoss(codec::DecodeTokens(prefix, kDim, dtype, &out, &out_rows),
                     absl::StrCat("DecodeTokens prefix ", n));
    }
    ExpectDataLoss(codec::DecodeTokens(v + "xx", kDim, dtype, &out, &out_rows), "extra");
    // A row count that disagrees with the size, including a huge one.
    for (uint32_t bad_rows : {2u, 4u, 0xffffffffu}) {
      std::string w = v;
      std::memcpy(w.data(), &bad_rows, 4);
      ExpectDataLoss(codec::DecodeTokens(w, kDim, dtype, &out, &out_rows),
                     absl::StrCat("rows ", bad_rows));
    }
    // The same bytes read with another dim.
    ExpectDataLoss(codec::DecodeTokens(v, kDim + 1, dtype, &out, &out_rows), "dim");
  }
  // Zero rows is a valid (empty) matrix.
  const std::string empty = codec::EncodeTokens(nullptr, 0, kDim, TokenDtype::kBF16);
  auto rows = codec::TokenRows(empty, kDim, TokenDtype::kBF16);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, 0u);
}

TEST(CodecTest, PooledRoundTripsAndRejectsBadSizes) {
  std::mt19937 rng(19);
  const std::vector<float> p = RandomUnitRows(rng, 1, 7);
  const std::string v = codec::EncodePooled(p.data(), 7);
  std::vector<float> out;
  ASSERT_TRUE(codec::DecodePooled(v, 7, &out).ok());
  EXPECT_EQ(out, p);
  for (size_t n = 0; n < v.size(); ++n) {
    ExpectDataLoss(codec::DecodePooled(std::string_view(v).substr(0, n), 7, &out),
                   absl::StrCat("prefix ", n));
  }
  ExpectDataLoss(codec::DecodePooled(v + "z", 7, &out), "extra byte");
  ExpectDataLoss(codec::DecodePooled(v, 8, &out), "other dim");
}

TEST(CodecTest, ConfigRoundTripsAndRejectsGarbage) {
  const CollectionConfig c{300, TokenDtype::kBF16, "HNSW16,Flat"};
  const std::string v = codec::EncodeConfig(c);
  auto back = codec::DecodeConfig(v);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dim, 300u);
  EXPECT_EQ(back->token_dtype, TokenDtype::kBF16);
  EXPECT_EQ(back->ann_spec, "HNSW16,Flat");
  for (size_t n = 0; n < v.size(); ++n) {
    ExpectDataLoss(codec::DecodeConfig(std::string_view(v).substr(0, n)).status(),
                   absl::StrCat("prefix ", n));
  }
  ExpectDataLoss(codec::DecodeConfig(v + "?").status(), "trailing byte");
  // Layout: version, dim, dtype, spec, numeric fields, token codec (kind,
  // bits, centroids, train_after, keep_full_precision), candidates_from.
  // Each field made invalid in turn.
  auto with_u32 = [&](size_t at, uint32_t value) {
    std::string w = v;
    std::memcpy(w.data() + at, &value, 4);
    return w;
  };
  ExpectDataLoss(codec::DecodeConfig(with_u32(0, 0)).status(), "version 0");
  ExpectDataLoss(codec::DecodeConfig(with_u32(0, 5)).status(), "version 5");
  // Version 1 had no numeric fields, version 2 no token codec: theirs are
  // trailing fields there.
  ExpectDataLoss(codec::DecodeConfig(with_u32(0, 1)).status(), "version 1 with fields");
  ExpectDataLoss(codec::DecodeConfig(with_u32(0, 2)).status(), "version 2 with a codec");
  ExpectDataLoss(codec::DecodeConfig(with_u32(0, 3)).status(), "version 3 with a source");
  // A version 3 record (no candidates_from) reads as pooled.
  std::string v3 = with_u32(0, 3);
  v3.resize(v3.size() - 4);
  auto three_back = codec::DecodeConfig(v3);
  ASSERT_TRUE(three_back.ok()) << three_back.status();
  EXPECT_EQ(three_back->candidates_from, CandidateSource::kPooled);
  // A version 2 record (no token codec) reads as the rows codec.
  std::string v2 = with_u32(0, 2);
  v2.resize(v2.size() - 28);
  auto old = codec::DecodeConfig(v2);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->token_codec, TokenCodecConfig());
  // The token codec round-trips; a codec or bit width out of range is
  // DATA_LOSS.
  CollectionConfig coded = c;
  coded.token_codec = {TokenCodecKind::kResidual, 1, 4096, 77, false};
  auto coded_back = codec::DecodeConfig(codec::EncodeConfig(coded));
  ASSERT_TRUE(coded_back.ok()) << coded_back.status();
  EXPECT_EQ(coded_back->token_codec, coded.token_codec);
  const size_t codec_at = v.size() - 28;
  // candidates_from round-trips; an unknown source, or centroids without
  // the residual codec, is DATA_LOSS.
  CollectionConfig centroids = coded;
  centroids.candidates_from = CandidateSource::kCentroids;
  auto centroids_back = codec::DecodeConfig(codec::EncodeConfig(centroids));
  ASSERT_TRUE(centroids_back.ok()) << centroids_back.status();
  EXPECT_EQ(centroids_back->candidates_from, CandidateSource::kCentroids);
  ExpectDataLoss(codec::DecodeConfig(with_u32(v.size() - 4, 7)).status(), "source 7");
  ExpectDataLoss(codec::DecodeConfig(with_u32(v.size() - 4, 1)).status(), "centroids over rows");
  ExpectDataLoss(codec::DecodeConfig(with_u32(codec_at, 9)).status(), "codec kind");
  std::string bits = codec::EncodeConfig(coded);
  const uint32_t three = 3;
  std::memcpy(bits.data() + codec_at + 4, &three, 4);
  ExpectDataLoss(codec::DecodeConfig(bits).status(), "codec bits");
  ExpectDataLoss(codec::DecodeConfig(with_u32(4, 0)).status(), "dim 0");
  ExpectDataLoss(codec::DecodeConfig(with_u32(4, kMaxDim + 1)).status(), "dim too big");
  ExpectDataLoss(codec::DecodeConfig(with_u32(8, 7)).status(), "dtype");
  ExpectDataLoss(codec::DecodeConfig(with_u32(12, 1000)).status(), "spec length");
  CollectionConfig no_spec = c;
  no_spec.ann_spec = "";
  ExpectDataLoss(codec::DecodeConfig(codec::EncodeConfig(no_spec)).status(), "empty spec");
  ExpectDataLoss(codec::DecodeConfig("garbage!garbage!").status(), "garbage");
}

// A dtype field outside the enum's values is DATA_LOSS, even when its low
// byte would name a valid dtype.
TEST(CodecTest, ConfigRejectsDtypeOutsideItsByte) {
  const std::string v = codec::EncodeConfig({16, TokenDtype::kF32, "Flat"});
  for (uint32_t dtype : {0x101u, 0x102u, 0xffffff01u}) {
    std::string w = v;
    std::memcpy(w.data() + 8, &dtype, 4);
    ExpectDataLoss(codec::DecodeConfig(w).status(), absl::StrCat("dtype ", dtype));
  }
}

TEST(CodecTest, U64RoundTripsAndRejectsBadSizes) {
  for (uint64_t x : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 63, ~uint64_t{0}}) {
    auto back = codec::DecodeU64(codec::EncodeU64(x));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, x);
  }
  ExpectDataLoss(codec::DecodeU64("").status(), "empty");
  ExpectDataLoss(codec::DecodeU64("1234567").status(), "7 bytes");
  ExpectDataLoss(codec::DecodeU64("123456789").status(), "9 bytes");
}

TEST(CodecTest, AnnTuningRoundTripsAndRejectsGarbage) {
  AnnTuning t;
  t.ann_params = "efSearch=31";
  t.target_recall = 0.95;
  t.k = 10;
  t.sample_recall = 0.9571;
  t.sample_queries = 1000;
  const std::string v = codec::EncodeAnnTuning(t);
  auto back = codec::DecodeAnnTuning(v);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ann_params, t.ann_params);
  EXPECT_EQ(back->target_recall, t.target_recall);
  EXPECT_EQ(back->k, t.k);
  EXPECT_EQ(back->sample_recall, t.sample_recall);
  EXPECT_EQ(back->sample_queries, t.sample_queries);
  for (size_t n = 0; n < v.size(); ++n) {
    ExpectDataLoss(codec::DecodeAnnTuning(v.substr(0, n)).status(), "truncated");
  }
  ExpectDataLoss(codec::DecodeAnnTuning(v + "x").status(), "trailing byte");
  std::string newer = v;
  newer[0] = 2;  // a version this build does not know
  ExpectDataLoss(codec::DecodeAnnTuning(newer).status(), "version 2");
}

TEST(DocStoreTest, AnnTuningPersistsAcrossReopen) {
  TempDir tmp;
  const std::string path = tmp.Sub("store");
  {
    auto store = CreateStore(path, Config(8, TokenDtype::kF32));
    ASSERT_NE(store, nullptr);
    auto none = store->GetAnnTuning();
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
    AnnTuning t;
    t.ann_params = "efSearch=40";
    t.target_recall = 0.9;
    t.k = 10;
    ASSERT_TRUE(store->PutAnnTuning(t).ok());
    t.ann_params = "efSearch=55";  // replaces the first
    ASSERT_TRUE(store->PutAnnTuning(t).ok());
  }
  auto store = OpenStore(path);
  ASSERT_NE(store, nullptr);
  auto got = store->GetAnnTuning();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->ann_params, "efSearch=55");
  EXPECT_EQ((*got)->target_recall, 0.9);
}

// ---------------------------------------------------------------------------
// I/O faults below RocksDB (StorageFaults)

// A store under fault injection with an expected-state oracle: what every
// acknowledged Commit left, checked against the store (and after reopening).
class FaultyStore {
 public:
  FaultyStore(const std::string& path, uint32_t dim)
      : path_(path), dim_(dim), faults_(std::make_shared<StorageFaults>()), rng_(77) {
    StorageOptions o = Options();
    auto store = DocStore::Create(path, Config(dim, TokenDtype::kF32), o);
    EXPECT_TRUE(store.ok()) << store.status();
    if (store.ok()) store_ = std::move(store).value();
  }

  StorageOptions Options() const {
    StorageOptions o = SmallOptions();
    o.faults = faults_;
    return o;
  }
  StorageFaults& faults() { return *faults_; }
  DocStore& store() { return *store_; }

  // Upserts `ids` (new versions) and deletes `deletes` in one Commit; the
  // oracle changes only when it is acknowledged.
  absl::Status Apply(const std::vector<std::string>& ids,
                     const std::vector<std::string>& deletes = {}) {
    // As the engine does: recover a stopped store before choosing labels.
    absl::Status recovered = Recover();
    if (!recovered.ok()) return recovered;
    Settle();
    auto current = store_->LookupIds(ids);
    if (!current.ok()) return current.status();
    std::vector<Document> docs;
    for (const std::string& id : ids) {
      docs.push_back(MakeDoc(rng_, id, dim_, 1 + rng_() % 4));
      docs.back().text = absl::StrCat("version ", ++version_, " of ", id);
    }
    std::vector<DocWrite> writes;
    for (size_t i = 0; i < ids.size(); ++i) {
      writes.push_back({store_->next_label() + i, (*current)[i], &docs[i]});
    }
    std::vector<DocDelete> dels;
    auto del_labels = store_->LookupIds(deletes);
    if (!del_labels.ok()) return del_labels.status();
    for (size_t i = 0; i < deletes.size(); ++i) {
      if ((*del_labels)[i]) dels.push_back({deletes[i], *(*del_labels)[i]});
    }
    absl::Status s = store_->Commit(writes, dels);
    Batch batch{store_->next_label(), ids.size(), std::move(docs), dels};
    if (!s.ok()) {
      // Not acknowledged: applied whole or not at all, which the next
      // recovery decides (next_label() tells).
      pending_ = std::move(batch);
      reopened_ = false;
      return s;
    }
    batch.first = writes.front().label;
    ApplyToOracle(batch);
    return absl::OkStatus();
  }

  // Recovers a stopped store and settles a failed batch's fate.
  absl::Status Recover() {
    if (!store_->write_stopped()) return absl::OkStatus();
    absl::Status s = store_->Recover();
    reopened_ = true;  // even a failed recovery opens the store read-only
    return s;
  }

  absl::Status Flush() {
    absl::Status s = Recover();
    return s.ok() ? store_->Flush() : s;
  }

  // Every expected document present with its exact content, nothing else
  // live, the counters consistent.
  void ExpectMatchesOracle(const std::string& when) {
    SCOPED_TRACE(when);
    Settle();
    EXPECT_EQ(store_->live_count(), expected_.size());
    std::vector<std::string> ids;
    for (const auto& [id, doc] : expected_) ids.push_back(id);
    for (const std::string& id : ever_written_) {
      if (!expected_.count(id)) ids.push_back(id);
    }
    auto labels = store_->LookupIds(ids);
    ASSERT_TRUE(labels.ok()) << labels.status();
    std::vector<Label> live;
    for (size_t i = 0; i < ids.size(); ++i) {
      auto it = expected_.find(ids[i]);
      if (it == expected_.end()) {
        EXPECT_FALSE((*labels)[i].has_value()) << ids[i] << " must be absent";
        continue;
      }
      ASSERT_TRUE((*labels)[i].has_value()) << ids[i] << " was acknowledged";
      live.push_back(*(*labels)[i]);
      std::vector<std::optional<Document>> got;
      ASSERT_TRUE(store_->GetDocuments({*(*labels)[i]}, true, &got).ok());
      ASSERT_TRUE(got[0].has_value()) << ids[i];
      ExpectSameRecord(*got[0], it->second);
      ExpectSameVectors(*got[0], it->second, TokenDtype::kF32);
    }
    std::sort(live.begin(), live.end());
    EXPECT_EQ(LivePooledLabels(*store_), live) << "live labels beyond the oracle's";
  }

  // Batches whose outcome was in doubt and turned out applied.
  int applied_after_failure() const { return applied_after_failure_; }

  void Remember(const std::vector<std::string>& ids) {
    ever_written_.insert(ever_written_.end(), ids.begin(), ids.end());
  }

  // Closes and reopens the store; on failure no store is open.
  absl::Status TryReopen() {
    store_.reset();
    auto store = DocStore::Open(path_, Options());
    if (!store.ok()) return store.status();
    store_ = std::move(store).value();
    reopened_ = true;
    return absl::OkStatus();
  }
  void Reopen() { ASSERT_EQ(TryReopen(), absl::OkStatus()); }

 private:
  struct Batch {
    Label first = 0;
    size_t n = 0;  // new versions, labels first..first+n-1
    std::vector<Document> docs;
    std::vector<DocDelete> dels;
  };

  void ApplyToOracle(const Batch& b) {
    for (const Document& d : b.docs) expected_[d.id] = d;
    for (const DocDelete& d : b.dels) expected_.erase(d.id);
  }

  // Once the store was reopened after a failed batch, its next label says
  // whether the log replayed that batch (whole) or not at all.
  void Settle() {
    if (!pending_ || !reopened_) return;
    const Label next = store_->next_label();
    if (next == pending_->first + pending_->n) {
      ApplyToOracle(*pending_);
      ++applied_after_failure_;
    } else {
      EXPECT_EQ(next, pending_->first) << "a failed batch was applied in part";
    }
    pending_.reset();
  }

  const std::string path_;
  const uint32_t dim_;
  std::shared_ptr<StorageFaults> faults_;
  std::mt19937 rng_;
  std::unique_ptr<DocStore> store_;
  std::map<std::string, Document> expected_;
  std::vector<std::string> ever_written_;
  int version_ = 0;
  std::optional<Batch> pending_;
  bool reopened_ = false;
  int applied_after_failure_ = 0;
};

struct FaultCase {
  const char* name;
  StorageFaults::Kind kind;
  StorageFaults::Files files;
  absl::StatusCode code;  // what a write gets while the fault lasts
};

class DocStoreFaultTest : public ::testing::TestWithParam<FaultCase> {};

// A fault during writes: each failed Commit reports the fault and changes
// nothing; reads go on; once the fault clears the next write succeeds, and
// the labels the failed batch would have used are reused without the failed
// batch reappearing, neither now nor after reopening.
TEST_P(DocStoreFaultTest, FailedWritesChangeNothingAndWritingResumes) {
  const FaultCase& fc = GetParam();
  TempDir tmp;
  FaultyStore fs(tmp.Sub("store"), 8);
  fs.Remember({"a", "b", "c", "d", "x", "y", "z", "e"});
  ASSERT_EQ(fs.Apply({"a", "b", "c"}), absl::OkStatus());
  ASSERT_EQ(fs.Apply({"d", "a"}, {"b"}), absl::OkStatus());
  fs.ExpectMatchesOracle("before the fault");
  const Label next = fs.store().next_label();

  fs.faults().Arm(fc.kind, fc.files);
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::Status s = fs.Apply({"x", "y", "c"}, {"d"});
    EXPECT_EQ(s.code(), fc.code) << s;
    EXPECT_TRUE(s.message().find("not acknowledged") != std::string_view::npos ||
                s.message().find("recovering from an earlier write error") !=
                    std::string_view::npos)
        << s;
    EXPECT_NE(s.message().find("injected fault"), std::string_view::npos) << s;
    fs.ExpectMatchesOracle("during the fault");
  }
  EXPECT_TRUE(fs.store().write_stopped());
  EXPECT_GT(fs.faults().failures(), 0u);

  fs.faults().Clear();
  // The next batch takes the labels after the failed one's if the log
  // replayed it, else the labels it would have had.
  ASSERT_EQ(fs.Apply({"z", "e"}, {"a"}), absl::OkStatus());
  EXPECT_EQ(fs.store().next_label(), next + 2 + 3 * fs.applied_after_failure());
  EXPECT_FALSE(fs.store().write_stopped());
  ASSERT_EQ(fs.Apply({"c"}), absl::OkStatus());
  fs.ExpectMatchesOracle("after the fault");
  fs.Reopen();
  fs.ExpectMatchesOracle("after reopening");
  ASSERT_EQ(fs.Apply({"y"}), absl::OkStatus());
  fs.Reopen();
  fs.ExpectMatchesOracle("after writing and reopening again");
}

INSTANTIATE_TEST_SUITE_P(
    Faults, DocStoreFaultTest,
    ::testing::Values(FaultCase{"WalWriteError", StorageFaults::Kind::kWriteError,
                                StorageFaults::Files::kWal, absl::StatusCode::kUnavailable},
                      FaultCase{"WalSyncError", StorageFaults::Kind::kSyncError,
                                StorageFaults::Files::kWal, absl::StatusCode::kUnavailable},
                      FaultCase{"DiskFull", StorageFaults::Kind::kDiskFull,
                                StorageFaults::Files::kAll, absl::StatusCode::kResourceExhausted},
                      FaultCase{"AllWritesFail", StorageFaults::Kind::kWriteError,
                                StorageFaults::Files::kAll, absl::StatusCode::kUnavailable}),
    [](const ::testing::TestParamInfo<FaultCase>& info) { return info.param.name; });

// A flush that fails (no space for table files) stops writes like a failed
// write does; the data stays readable, writing resumes when space returns,
// and a flush then succeeds.
TEST(DocStoreFaultTest, FailedFlushStopsWritesUntilSpaceReturns) {
  TempDir tmp;
  FaultyStore fs(tmp.Sub("store"), 8);
  fs.Remember({"a", "b", "c", "d"});
  ASSERT_EQ(fs.Apply({"a", "b"}), absl::OkStatus());
  fs.faults().Arm(StorageFaults::Kind::kDiskFull, StorageFaults::Files::kTables);
  ASSERT_EQ(fs.Apply({"c"}), absl::OkStatus()) << "the WAL is still writable";
  absl::Status flushed = fs.Flush();
  EXPECT_EQ(flushed.code(), absl::StatusCode::kResourceExhausted) << flushed;
  EXPECT_TRUE(fs.store().write_stopped());
  absl::Status s = fs.Apply({"d"});
  EXPECT_FALSE(s.ok());
  fs.ExpectMatchesOracle("while table files cannot be written");

  fs.faults().Clear();
  ASSERT_EQ(fs.Apply({"d"}, {"a"}), absl::OkStatus());
  ASSERT_EQ(fs.Flush(), absl::OkStatus());
  ASSERT_EQ(fs.store().Compact(), absl::OkStatus());
  fs.ExpectMatchesOracle("after space returned");
  fs.Reopen();
  fs.ExpectMatchesOracle("after reopening");
}

// Many short faults of every kind among many writes: the store ends equal to
// the oracle of acknowledged writes, live and after reopening.
TEST(DocStoreFaultTest, RandomFaultsAmongWritesLoseNothingAcknowledged) {
  TempDir tmp;
  FaultyStore fs(tmp.Sub("store"), 8);
  std::mt19937 rng(5);
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(absl::StrCat("doc", i));
  fs.Remember(ids);
  const StorageFaults::Kind kinds[] = {StorageFaults::Kind::kWriteError,
                                       StorageFaults::Kind::kDiskFull,
                                       StorageFaults::Kind::kSyncError};
  const StorageFaults::Files files[] = {StorageFaults::Files::kAll, StorageFaults::Files::kWal,
                                        StorageFaults::Files::kTables,
                                        StorageFaults::Files::kManifest};
  int acknowledged = 0, failed = 0;
  for (int step = 0; step < 300; ++step) {
    if (step % 10 == 0) {
      if (rng() % 2 == 0) {
        fs.faults().Arm(kinds[rng() % 3], files[rng() % 4]);
      } else {
        fs.faults().Clear();
      }
    }
    std::vector<std::string> up, del;
    for (int k = 0; k < 3; ++k) up.push_back(ids[rng() % ids.size()]);
    std::sort(up.begin(), up.end());
    up.erase(std::unique(up.begin(), up.end()), up.end());
    const std::string d = ids[rng() % ids.size()];
    if (std::find(up.begin(), up.end(), d) == up.end()) del.push_back(d);
    absl::Status s = fs.Apply(up, del);
    if (s.ok()) {
      ++acknowledged;
    } else {
      ++failed;
      EXPECT_TRUE(s.code() == absl::StatusCode::kUnavailable ||
                  s.code() == absl::StatusCode::kResourceExhausted)
          << s;
    }
    if (step % 50 == 25) (void)fs.Flush();  // may fail under a fault
  }
  fs.faults().Clear();
  ASSERT_EQ(fs.Apply({ids[0]}), absl::OkStatus());
  EXPECT_GT(acknowledged, 50);
  EXPECT_GT(failed, 20);
  std::printf(
      "[ random faults ] %d batches acknowledged, %d failed (%llu failed file "
      "operations), %d failed batches applied whole by a recovery\n",
      acknowledged, failed, static_cast<unsigned long long>(fs.faults().failures()),
      fs.applied_after_failure());
  fs.ExpectMatchesOracle("after the faults");
  ASSERT_EQ(fs.Flush(), absl::OkStatus());
  fs.Reopen();
  fs.ExpectMatchesOracle("after reopening");
}

// A fault while opening: the open fails with the fault named, and the same
// store opens cleanly once it clears.
TEST(DocStoreFaultTest, OpenUnderFaultFailsCleanly) {
  TempDir tmp;
  FaultyStore fs(tmp.Sub("store"), 8);
  fs.Remember({"a"});
  ASSERT_EQ(fs.Apply({"a"}), absl::OkStatus());
  fs.faults().Arm(StorageFaults::Kind::kDiskFull);
  absl::Status s = fs.TryReopen();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("opening store"), std::string_view::npos) << s;
  fs.faults().Clear();
  fs.Reopen();
  fs.ExpectMatchesOracle("after opening once the fault cleared");
}

// The free-space reserve: below it writes are refused before anything is
// written, an existing store opens read-only, and no store is created;
// writing resumes when space is back.
TEST(DocStoreFaultTest, FreeSpaceReserveKeepsWritesAwayFromAFullDisk) {
  TempDir tmp;
  FaultyStore fs(tmp.Sub("store"), 8);
  fs.Remember({"a", "b", "c", "d"});
  ASSERT_EQ(fs.Apply({"a", "b"}), absl::OkStatus());
  fs.faults().SetFreeSpace(uint64_t{100} << 20);  // below the default 512 MiB
  absl::Status s = fs.Apply({"c"}, {"a"});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("disk nearly full: 100 MiB free"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("reserve of 512 MiB"), std::string_view::npos) << s;
  EXPECT_FALSE(fs.store().write_stopped()) << "nothing failed inside RocksDB";
  fs.ExpectMatchesOracle("while space is low");

  // Opening while space is low: read-only, writes stopped until it is back.
  fs.Reopen();
  EXPECT_TRUE(fs.store().write_stopped());
  fs.ExpectMatchesOracle("opened while space is low");
  s = fs.Apply({"d"});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  // No new store while space is low, and nothing left behind.
  auto created = DocStore::Create(tmp.Sub("other"), Config(8, TokenDtype::kF32), fs.Options());
  EXPECT_EQ(created.status().code(), absl::StatusCode::kResourceExhausted) << created.status();
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("other")));

  fs.faults().SetFreeSpace(std::nullopt);
  ASSERT_EQ(fs.Apply({"c", "d"}, {"a"}), absl::OkStatus());
  EXPECT_FALSE(fs.store().write_stopped());
  fs.Reopen();
  fs.ExpectMatchesOracle("after space came back and a reopen");
}

}  // namespace
}  // namespace attnsearch
