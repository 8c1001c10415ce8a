// The token arena: records found as added, removed at once, compacted
// without a pinned reader losing what it found, the memory budget, and
// readers racing writers. Then inside a collection: searches through the
// arena rank and score exactly as searches that read the store, across
// overwrites, deletes and reopening; and a budget too small refuses an open
// and a write, naming the sizes, with nothing stored changed.
#include "engine/token_arena.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

// The record of `label`: its size and bytes follow from the label, so a
// reader can tell a record from another one or from freed memory.
std::string RecordOf(Label label) {
  const size_t size = 8 + (label * 37) % 300;
  std::string r(size, '\0');
  uint64_t x = label * 0x9E3779B97F4A7C15ull + 1;
  for (char& c : r) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = char(x);
  }
  return r;
}

uint32_t RowsOf(Label label) { return uint32_t(1 + label % 7); }

TEST(TokenArenaTest, FindsWhatWasAddedUntilRemoved) {
  TokenArena arena("t", {});
  EXPECT_TRUE(arena.Find(0).empty());
  EXPECT_TRUE(arena.Find(123456789).empty());
  uint64_t rows = 0, bytes = 0;
  // Labels with gaps, across directory pages.
  std::vector<Label> labels;
  for (Label l = 0; l < 20000; l += 3) labels.push_back(l);
  for (Label l : labels) {
    ASSERT_TRUE(arena.Add(l, RecordOf(l), RowsOf(l)).ok());
    rows += RowsOf(l);
    bytes += RecordOf(l).size();
  }
  EXPECT_EQ(arena.Add(3, RecordOf(3), 1).code(), absl::StatusCode::kAlreadyExists);
  for (Label l = 0; l < 20000; ++l) {
    if (l % 3 == 0) {
      ASSERT_EQ(arena.Find(l), RecordOf(l)) << l;
    } else {
      ASSERT_TRUE(arena.Find(l).empty()) << l;
    }
  }
  TokenArena::Stats s = arena.stats();
  EXPECT_EQ(s.records, labels.size());
  EXPECT_EQ(s.rows, rows);
  EXPECT_EQ(s.live_bytes, bytes);
  EXPECT_GE(s.allocated_bytes, bytes);
  arena.Remove(9);
  arena.Remove(10);  // never added
  arena.Remove(9);   // twice
  EXPECT_TRUE(arena.Find(9).empty());
  EXPECT_EQ(arena.Find(12), RecordOf(12));
  s = arena.stats();
  EXPECT_EQ(s.records, labels.size() - 1);
  EXPECT_EQ(s.rows, rows - RowsOf(9));
  EXPECT_EQ(s.live_bytes, bytes - RecordOf(9).size());
}

// Overwrites give every new version a new label: the directory pages of
// labels all gone are freed (each write used to leave 8 bytes of directory
// behind, and a server overwriting the same documents grew without end),
// and what is still held stays found.
TEST(TokenArenaTest, OverwritingTheSameDocumentsKeepsMemoryBounded) {
  auto budget = std::make_shared<ArenaBudget>(0);
  TokenArenaOptions o;
  o.budget = budget;
  o.max_slab_bytes = 256 << 10;
  TokenArena arena("t", o);
  constexpr size_t kDocs = 100;
  std::vector<Label> current(kDocs);
  Label next = 0;
  for (size_t d = 0; d < kDocs; ++d) {
    current[d] = next++;
    ASSERT_TRUE(arena.Add(current[d], RecordOf(current[d]), RowsOf(current[d])).ok());
  }
  const Label kKept = 7;  // never overwritten: its page must stay
  uint64_t allocated_after_warmup = 0;
  for (int round = 0; round < 3000; ++round) {
    for (size_t d = 0; d < kDocs; ++d) {
      if (current[d] == kKept) continue;
      const Label fresh = next++;
      ASSERT_TRUE(arena.Add(fresh, RecordOf(fresh), RowsOf(fresh)).ok());
      arena.Remove(current[d]);
      current[d] = fresh;
    }
    if (round == 100) allocated_after_warmup = arena.stats().allocated_bytes;
  }
  { TokenArena::Pin pin = arena.PinNow(); }  // lets retired memory go
  ASSERT_GT(next, Label(70) << 12);          // ~300,000 labels: ~72 directory pages of 32 KiB
  const TokenArena::Stats s = arena.stats();
  EXPECT_EQ(s.records, kDocs);
  // The kept label's page, the newest label's, and at most a few between.
  EXPECT_LE(s.allocated_bytes, allocated_after_warmup + (size_t(64) << 10)) << s.allocated_bytes;
  EXPECT_EQ(budget->used(), s.allocated_bytes);
  for (size_t d = 0; d < kDocs; ++d) ASSERT_EQ(arena.Find(current[d]), RecordOf(current[d])) << d;
  EXPECT_TRUE(arena.Find(current[0] - 1).empty());
  EXPECT_TRUE(arena.Find(3).empty());
}

TEST(TokenArenaTest, CompactionKeepsWhatAPinnedReaderFound) {
  TokenArenaOptions o;
  o.max_slab_bytes = 4096;
  TokenArena arena("t", o);
  for (Label l = 0; l < 2000; ++l) ASSERT_TRUE(arena.Add(l, RecordOf(l), RowsOf(l)).ok());
  const uint64_t before = arena.stats().allocated_bytes;
  // A reader pins and finds every record, then writers remove most of them:
  // their slabs are compacted and retired.
  std::optional<TokenArena::Pin> pin = arena.PinNow();
  std::map<Label, std::string_view> found;
  for (Label l = 0; l < 2000; ++l) found[l] = arena.Find(l);
  for (Label l = 0; l < 2000; ++l) {
    if (l % 10 != 0) arena.Remove(l);
  }
  const TokenArena::Stats s = arena.stats();
  EXPECT_GT(s.compactions, 10u);
  EXPECT_EQ(s.records, 200u);
  // What the reader found is still there, byte for byte.
  for (const auto& [l, r] : found) ASSERT_EQ(r, RecordOf(l)) << l;
  // The kept records moved, and are found where they went.
  size_t moved = 0;
  for (Label l = 0; l < 2000; l += 10) {
    ASSERT_EQ(arena.Find(l), RecordOf(l)) << l;
    moved += arena.Find(l).data() != found[l].data();
  }
  EXPECT_GT(moved, 100u);
  // The retired slabs go with the pin.
  EXPECT_GE(arena.stats().allocated_bytes, before);
  pin.reset();
  EXPECT_LT(arena.stats().allocated_bytes, before / 2);
  for (Label l = 0; l < 2000; l += 10) ASSERT_EQ(arena.Find(l), RecordOf(l)) << l;
}

// Every record replaced by one an eighth its size (as codes replace rows):
// slabs left just over half live are not compacted as they go, so up to
// twice the live bytes stay allocated; Compact packs them, and every record
// is found as it was.
TEST(TokenArenaTest, CompactPacksSlabsThatReplacementsLeftHalfEmpty) {
  TokenArenaOptions o;
  o.max_slab_bytes = 64 << 10;
  TokenArena arena("t", o);
  constexpr Label kLabels = 4000;
  for (Label l = 0; l < kLabels; ++l) {
    ASSERT_TRUE(arena.Add(l, std::string(800, char(l)), 8).ok());
  }
  for (Label l = 0; l < kLabels; ++l) ASSERT_TRUE(arena.Replace(l, RecordOf(l) + "x", 1).ok());
  const TokenArena::Stats before = arena.stats();
  EXPECT_EQ(before.records, kLabels);
  arena.Compact(0.9);
  const TokenArena::Stats after = arena.stats();
  EXPECT_EQ(after.records, kLabels);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_GT(after.compactions, before.compactions);
  // Record headers and one partly filled tail slab on top of the bytes.
  EXPECT_LT(double(after.allocated_bytes),
            1.1 * double(after.live_bytes + kLabels * 16) + double(o.max_slab_bytes));
  EXPECT_LT(after.allocated_bytes, before.allocated_bytes);
  for (Label l = 0; l < kLabels; ++l) ASSERT_EQ(arena.Find(l), RecordOf(l) + "x") << l;
}

TEST(TokenArenaTest, BudgetRefusesASlabAndChangesNothing) {
  auto budget = std::make_shared<ArenaBudget>(200 << 10);
  TokenArenaOptions o;
  o.budget = budget;
  o.max_slab_bytes = 64 << 10;
  TokenArena arena("coll", o);
  Label l = 0;
  absl::Status s;
  for (; l < 100000; ++l) {
    s = arena.Add(l, RecordOf(l), RowsOf(l));
    if (!s.ok()) break;
  }
  ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("coll"), std::string::npos) << s;
  EXPECT_NE(s.message().find("of its 204800 bytes"), std::string::npos) << s;
  EXPECT_LE(budget->used(), budget->limit());
  EXPECT_LE(budget->used(), arena.stats().allocated_bytes);
  EXPECT_TRUE(arena.Find(l).empty());
  EXPECT_EQ(arena.stats().records, l);
  for (Label k = 0; k < l; ++k) ASSERT_EQ(arena.Find(k), RecordOf(k));
  // A second arena on the same budget is refused too.
  TokenArena other("other", o);
  EXPECT_EQ(other.Add(0, std::string(70 << 10, 'x'), 1).code(),
            absl::StatusCode::kResourceExhausted);
}

// Readers pin, find and check records while a writer adds and removes
// them, compacting small slabs all along.
TEST(TokenArenaTest, ReadersNeverSeeATornOrFreedRecord) {
  TokenArenaOptions o;
  o.max_slab_bytes = 8192;
  TokenArena arena("t", o);
  constexpr Label kLabels = 3000;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> checked{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937 rng(t);
      while (!stop.load()) {
        TokenArena::Pin pin = arena.PinNow();
        std::vector<std::pair<Label, std::string_view>> seen;
        for (int k = 0; k < 64; ++k) {
          const Label l = rng() % kLabels;
          const std::string_view r = arena.Find(l);
          if (!r.empty()) seen.push_back({l, r});
        }
        std::this_thread::yield();  // the writer moves and retires meanwhile
        for (const auto& [l, r] : seen) {
          bad += r != RecordOf(l);
          ++checked;
        }
      }
    });
  }
  std::mt19937 rng(7);
  std::vector<bool> held(kLabels, false);
  // Until the readers checked enough (they may start late on a busy machine).
  for (int round = 0; round < 60000 || (checked.load() < 20000 && round < 20000000); ++round) {
    const Label l = rng() % kLabels;
    if (held[l]) {
      arena.Remove(l);
    } else {
      ASSERT_TRUE(arena.Add(l, RecordOf(l), RowsOf(l)).ok());
    }
    held[l] = !held[l];
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GE(checked.load(), 20000u);
  EXPECT_GT(arena.stats().compactions, 10u);
  for (Label l = 0; l < kLabels; ++l) {
    if (held[l]) {
      ASSERT_EQ(arena.Find(l), RecordOf(l));
    } else {
      ASSERT_TRUE(arena.Find(l).empty());
    }
  }
}

// ---------------------------------------------------------------------------
// Inside a collection.

constexpr uint32_t kDim = 16;

std::vector<SearchQuery> Queries(std::mt19937& rng, size_t n, bool explain) {
  std::vector<SearchQuery> out;
  for (size_t i = 0; i < n; ++i) {
    SearchQuery q;
    q.num_tokens = 3;
    q.tokens = testing::RandomUnitRows(rng, 3, kDim);
    q.top_k = 10;
    q.candidates = 60;
    q.explain = explain;
    q.mode = i % 2 ? RerankMode::kMaxSim : RerankMode::kAttention;
    out.push_back(q);
  }
  return out;
}

void ExpectSameResults(const Collection& a, const Collection& b,
                       const std::vector<SearchQuery>& queries) {
  for (const SearchQuery& q : queries) {
    auto ra = a.Search(q);
    auto rb = b.Search(q);
    ASSERT_TRUE(ra.ok()) << ra.status();
    ASSERT_TRUE(rb.ok()) << rb.status();
    ASSERT_EQ(ra->hits.size(), rb->hits.size());
    for (size_t i = 0; i < ra->hits.size(); ++i) {
      const SearchHit& x = ra->hits[i];
      const SearchHit& y = rb->hits[i];
      ASSERT_EQ(x.id, y.id) << i;
      ASSERT_EQ(x.score, y.score) << x.id;
      ASSERT_EQ(x.matches.size(), y.matches.size());
      for (size_t k = 0; k < x.matches.size(); ++k) {
        EXPECT_EQ(x.matches[k].document_token, y.matches[k].document_token);
        EXPECT_EQ(x.matches[k].contribution, y.matches[k].contribution);
      }
    }
  }
}

class ArenaCollectionTest : public ::testing::TestWithParam<TokenDtype> {};

// The same writes into a collection with the arena and one without; every
// search must agree exactly (the same bytes reach the same reranker).
TEST_P(ArenaCollectionTest, SearchesEqualThoseReadingTheStore) {
  TempDir dir;
  CollectionConfig config;
  config.dim = kDim;
  config.token_dtype = GetParam();
  // Exact candidates: both collections give the reranker the same ones
  // (two HNSW graphs, linked by background inserters, need not agree).
  config.ann_spec = "Flat";
  CollectionOptions with, without;
  with.rerank.max_rows_per_gemm = 256;  // several matmuls, and pieces across documents
  without.rerank.max_rows_per_gemm = 256;
  without.token_arena = false;
  auto a = Collection::Create(dir.Sub("a"), config, with);
  auto b = Collection::Create(dir.Sub("b"), config, without);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  std::mt19937 rng(11);
  auto write = [&](std::vector<Document> docs) {
    ASSERT_TRUE((*a)->Upsert(docs).ok());
    ASSERT_TRUE((*b)->Upsert(docs).ok());
  };
  for (int batch = 0; batch < 6; ++batch) {
    std::vector<Document> docs;
    for (int i = 0; i < 50; ++i) {
      docs.push_back(testing::MakeDoc(rng, absl::StrCat("d", batch * 50 + i), kDim, 1, 40));
    }
    write(docs);
  }
  std::mt19937 qrng(12);
  const std::vector<SearchQuery> queries = Queries(qrng, 12, /*explain=*/true);
  ExpectSameResults(**a, **b, queries);
  EXPECT_TRUE((*a)->Stats().token_arena);
  EXPECT_FALSE((*b)->Stats().token_arena);
  EXPECT_EQ((*b)->Stats().arena_bytes, 0u);

  // Overwrites and deletes: the arena follows.
  std::vector<Document> again;
  for (int i = 0; i < 300; i += 3) {
    again.push_back(testing::MakeDoc(rng, absl::StrCat("d", i), kDim, 1, 40));
  }
  write(again);
  std::vector<std::string> gone;
  for (int i = 1; i < 300; i += 5) gone.push_back(absl::StrCat("d", i));
  ASSERT_TRUE((*a)->Delete(gone).ok());
  ASSERT_TRUE((*b)->Delete(gone).ok());
  ExpectSameResults(**a, **b, queries);
  const CollectionStats s = (*a)->Stats();
  EXPECT_EQ(s.num_documents, 300u - gone.size());
  // The arena holds the live documents' rows, and only them.
  uint64_t live_rows = 0;
  {
    std::vector<std::string> ids;
    for (int i = 0; i < 300; ++i) ids.push_back(absl::StrCat("d", i));
    auto got = (*a)->Get(ids, false);
    ASSERT_TRUE(got.ok());
    auto vec = (*a)->Get(ids, true);
    for (const Document& d : vec->documents) live_rows += d.num_tokens;
  }
  EXPECT_EQ(s.arena_tokens, live_rows);
  EXPECT_GE(s.arena_bytes, s.arena_live_bytes);

  // Reopened, the arena is loaded from the store: the same again.
  a->reset();
  auto reopened = Collection::Open(dir.Sub("a"), with);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->Stats().arena_tokens, live_rows);
  ExpectSameResults(**reopened, **b, queries);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ArenaCollectionTest,
                         ::testing::Values(TokenDtype::kF32, TokenDtype::kBF16, TokenDtype::kInt8),
                         [](const auto& info) { return std::string(TokenDtypeName(info.param)); });

TEST(ArenaBudgetTest, TooSmallABudgetRefusesOpenAndWritesNamingTheSizes) {
  TempDir dir;
  CollectionConfig config;
  config.dim = 64;
  config.token_dtype = TokenDtype::kF32;
  config.ann_spec = "Flat";
  std::mt19937 rng(3);
  {
    auto c = Collection::Create(dir.Sub("c"), config, CollectionOptions());
    ASSERT_TRUE(c.ok());
    std::vector<Document> docs;
    for (int i = 0; i < 200; ++i)
      docs.push_back(testing::MakeDoc(rng, absl::StrCat("d", i), 64, 40, 40));
    ASSERT_TRUE((*c)->Upsert(docs).ok());  // 200 x 40 rows x 256 B = 2 MB
  }
  CollectionOptions small;
  small.arena_budget = std::make_shared<ArenaBudget>(1 << 20);
  auto refused = Collection::Open(dir.Sub("c"), small);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  const std::string msg(refused.status().message());
  EXPECT_NE(msg.find("token arena"), std::string::npos) << msg;
  EXPECT_NE(msg.find("200 documents (8000 token rows)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("budget is 1.0 MiB"), std::string::npos) << msg;
  EXPECT_EQ(small.arena_budget->used(), 0u) << "the refused arena's memory was given back";

  // With room for the documents but not for a big batch: the batch is
  // refused before anything is written.
  CollectionOptions enough;
  enough.arena_budget = std::make_shared<ArenaBudget>(3 << 20);
  auto c = Collection::Open(dir.Sub("c"), enough);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<Document> big;
  for (int i = 0; i < 200; ++i)
    big.push_back(testing::MakeDoc(rng, absl::StrCat("n", i), 64, 40, 40));
  big.push_back(testing::MakeDoc(rng, "d0", 64, 40, 40));  // would replace d0
  auto w = (*c)->Upsert(big);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kResourceExhausted) << w.status();
  EXPECT_NE(w.status().message().find("documents: the batch's token matrices"), std::string::npos)
      << w.status();
  EXPECT_EQ((*c)->Stats().num_documents, 200u);
  auto got = (*c)->Get({"n0", "d0"}, true);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->documents.size(), 1u);
  EXPECT_EQ(got->not_found_ids, std::vector<std::string>{"n0"});
}

}  // namespace
}  // namespace attnsearch
