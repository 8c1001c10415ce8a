// The residual token codec inside a collection: training (explicit and
// automatic), codes written with every write and held in the token arena,
// scoring on them against a reference on the decoded rows, the exact tier
// against the reference on the stored rows, reopening, retraining under
// concurrent writes and searches, a collection that keeps only codes, and
// bad input.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/collection.h"
#include "engine_test_util.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 32;

// Token rows near one of `centers` (as trained embeddings cluster), unit.
class Clustered {
 public:
  explicit Clustered(uint32_t seed, size_t centers = 24) : rng_(seed) {
    centers_ = testing::RandomUnitRows(rng_, centers, kDim);
  }
  std::vector<float> Rows(size_t n) {
    std::normal_distribution<float> noise(0.f, 0.25f);
    std::vector<float> out(n * kDim);
    for (size_t r = 0; r < n; ++r) {
      const size_t c = rng_() % (centers_.size() / kDim);
      testing::NoisyUnitRow(centers_.data() + c * kDim, kDim, noise, rng_, out.data() + r * kDim);
    }
    return out;
  }
  Document Doc(const std::string& id) {
    Document d;
    d.id = id;
    d.num_tokens = 4 + rng_() % 20;
    d.tokens = Rows(d.num_tokens);
    d.text = "text of " + id;
    return d;
  }
  SearchQuery Query(bool explain) {
    SearchQuery q;
    q.num_tokens = 4;
    q.tokens = Rows(4);
    q.top_k = 10;
    q.explain = explain;
    return q;
  }

 private:
  std::mt19937 rng_;
  std::vector<float> centers_;
};

CollectionConfig ResidualConfig(uint32_t bits, bool exact, uint64_t train_after = 0) {
  CollectionConfig c;
  c.dim = kDim;
  c.token_dtype = TokenDtype::kBF16;
  c.ann_spec = "Flat";
  c.token_codec.kind = TokenCodecKind::kResidual;
  c.token_codec.bits = bits;
  c.token_codec.train_after = train_after;
  c.token_codec.keep_full_precision = exact;
  return c;
}

std::vector<Document> Docs(Clustered& g, int n, const std::string& prefix = "d") {
  std::vector<Document> docs;
  for (int i = 0; i < n; ++i) docs.push_back(g.Doc(absl::StrCat(prefix, i)));
  return docs;
}

// The stored (bf16) rows of every document, by id.
std::map<std::string, Document> Stored(const Collection& c, const std::vector<Document>& docs) {
  std::vector<std::string> ids;
  for (const auto& d : docs) ids.push_back(d.id);
  auto got = c.Get(ids, true);
  EXPECT_TRUE(got.ok()) << got.status();
  std::map<std::string, Document> out;
  for (auto& d : got->documents) out[d.id] = std::move(d);
  return out;
}

double Reference(const SearchQuery& q, const std::vector<float>& tokens, uint32_t rows, bool bf16) {
  std::vector<float> w(q.num_tokens, 1.f / float(q.num_tokens));
  const std::vector<float> qt = bf16 ? testing::RoundBf16(q.tokens) : q.tokens;
  return ReferenceScore(qt.data(), q.num_tokens, w.data(), tokens.data(), rows, kDim,
                        RerankMode::kAttention, kDefaultTemperature);
}

TEST(TokenCodecTest, CodesInTheArenaScoreAsTheirDecodedRows) {
  TempDir dir;
  Clustered g(1);
  auto c = Collection::Create(dir.Sub("c"), ResidualConfig(2, /*exact=*/false), {});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<Document> docs = Docs(g, 400);
  ASSERT_TRUE((*c)->Upsert(docs).ok());
  const uint64_t rows_bytes = (*c)->Stats().arena_live_bytes;
  // The stored rows, read before training drops them (no exact tier).
  const std::map<std::string, Document> stored = Stored(**c, docs);
  auto trained = (*c)->TrainCodec();
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->version, 1u);
  EXPECT_EQ(trained->bits, 2u);
  EXPECT_EQ(trained->code_bytes, 2u + 1u + kDim * 2 / 8);  // id, gain, 2 bits a dimension
  EXPECT_EQ(trained->encoded, docs.size());
  const CollectionStats s = (*c)->Stats();
  EXPECT_EQ(s.codec_version, 1u);
  EXPECT_EQ(s.codec_pending, 0u);
  uint64_t tokens = 0;
  for (const auto& d : docs) tokens += d.num_tokens;
  EXPECT_EQ(s.arena_tokens, tokens);
  // 10 bytes a token (and 8 a document) instead of 64 in bf16.
  EXPECT_EQ(s.arena_live_bytes, tokens * trained->code_bytes + docs.size() * 8);
  EXPECT_LT(s.arena_live_bytes * 4, rows_bytes);

  // Every hit is scored from its codes: as the reference scores the rows
  // its codes decode to (the int8 steps of the scorer aside: within 0.02),
  // and ranked as that reference ranks every document.
  const std::shared_ptr<const TokenCodecState> codec = (*c)->codec();
  ASSERT_NE(codec, nullptr);
  double overlap = 0;
  constexpr int kQueries = 20;
  for (int k = 0; k < kQueries; ++k) {
    SearchQuery q = g.Query(k % 2 == 0);
    q.candidates = 400;  // every document
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->hits.size(), 10u);
    // The oracle: the reference over every document's decoded rows.
    std::map<std::string, double> oracle;
    std::vector<std::pair<double, std::string>> ranked;
    for (const auto& [id, d] : stored) {
      std::vector<uint8_t> codes(d.num_tokens * codec->codec->code_bytes());
      std::vector<float> decoded(d.num_tokens * kDim);
      codec->codec->Encode(d.tokens.data(), d.num_tokens, codes.data());
      codec->codec->Decode(codes.data(), d.num_tokens, decoded.data());
      oracle[id] = Reference(q, decoded, d.num_tokens, false);
      ranked.push_back({oracle[id], id});
    }
    std::sort(ranked.rbegin(), ranked.rend());
    std::set<std::string> top;
    for (int i = 0; i < 10; ++i) top.insert(ranked[i].second);
    for (const SearchHit& h : r->hits) {
      EXPECT_TRUE(h.from_codes);
      overlap += top.count(h.id) / 10.0 / kQueries;
      EXPECT_NEAR(h.score, oracle.at(h.id), 0.02) << h.id;
      if (q.explain) {
        // The evidence comes from the similarities the score came from.
        ASSERT_EQ(h.matches.size(), q.num_tokens);
        double sum = 0;
        for (const auto& m : h.matches) sum += m.contribution;
        EXPECT_NEAR(sum, h.score, 1e-5 * std::max(1.0, std::fabs(double(h.score))))
            << h.id << ": the contributions add up to the score";
      }
    }
  }
  EXPECT_GE(overlap, 0.9);
  // The attention maps come from the same similarities: each row sums to 1,
  // and its largest weight is the evidence's, whose contributions add up
  // to the score.
  SearchQuery q = g.Query(/*explain=*/true);
  q.attention_map = true;
  auto r = (*c)->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const SearchHit& h : r->hits) {
    ASSERT_EQ(h.matches.size(), q.num_tokens);
    ASSERT_EQ(h.attention.size(), size_t(q.num_tokens) * h.attention_cols) << h.id;
    double sum = 0;
    for (uint32_t i = 0; i < q.num_tokens; ++i) {
      const float* row = h.attention.data() + size_t(i) * h.attention_cols;
      double total = 0;
      for (uint32_t j = 0; j < h.attention_cols; ++j) total += row[j];
      EXPECT_NEAR(total, 1.0, 1e-5) << h.id;
      const TokenMatch& m = h.matches[i];
      EXPECT_FLOAT_EQ(*std::max_element(row, row + h.attention_cols), m.weight) << h.id;
      EXPECT_FLOAT_EQ(row[m.document_token], m.weight) << h.id;
      sum += m.contribution;
    }
    EXPECT_NEAR(sum, h.score, 1e-5 * std::max(1.0, std::fabs(double(h.score)))) << h.id;
  }
}

TEST(TokenCodecTest, ExactTierScoresTheStoredRowsAndReopens) {
  TempDir dir;
  Clustered g(2);
  const std::vector<Document> docs = Docs(g, 300);
  Clustered more(3);
  const std::vector<Document> late = Docs(more, 50, "late");
  {
    auto c = Collection::Create(dir.Sub("c"), ResidualConfig(1, /*exact=*/true), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(docs).ok());
    ASSERT_TRUE((*c)->TrainCodec().ok());
    // Written after training: encoded by the write itself.
    ASSERT_TRUE((*c)->Upsert(late).ok());
    EXPECT_EQ((*c)->Stats().codec_pending, 0u);
  }
  auto c = Collection::Open(dir.Sub("c"), {});
  ASSERT_TRUE(c.ok()) << c.status();
  const CollectionStats s = (*c)->Stats();
  EXPECT_EQ(s.codec_version, 1u);
  EXPECT_EQ(s.codec_pending, 0u);
  EXPECT_LT(s.arena_live_bytes, s.arena_tokens * 10);  // codes: 6 bytes a token at 1 bit
  std::vector<Document> all = docs;
  all.insert(all.end(), late.begin(), late.end());
  const std::map<std::string, Document> stored = Stored(**c, all);
  for (int k = 0; k < 20; ++k) {
    SearchQuery q = g.Query(true);
    // Every document (exhaustive: each scored from its stored rows, so the
    // top 10 is the reference's), or 100 of them (the codes choose the
    // best 2 x top_k, scored again from their rows).
    const bool exhaustive = k % 2 == 0;
    q.candidates = exhaustive ? 350 : 100;
    auto r = (*c)->Search(q);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->hits.size(), 10u);
    if (exhaustive) {
      EXPECT_EQ(r->sources.codes, 0u);
      EXPECT_EQ(r->sources.store, 350u);
      std::vector<std::pair<double, std::string>> ranked;
      for (const auto& [id, d] : stored) {
        ranked.push_back({Reference(q, d.tokens, d.num_tokens, true), id});
      }
      std::sort(ranked.rbegin(), ranked.rend());
      for (size_t i = 0; i < 10; ++i) EXPECT_EQ(r->hits[i].id, ranked[i].second) << i;
    }
    for (const SearchHit& h : r->hits) {
      EXPECT_FALSE(h.from_codes) << "the exact tier scored it";
      auto it = stored.find(h.id);
      ASSERT_NE(it, stored.end());
      EXPECT_NEAR(h.score, Reference(q, it->second.tokens, it->second.num_tokens, true),
                  2e-3 * std::abs(h.score) + 1e-4)
          << h.id;
      double sum = 0;
      for (const auto& m : h.matches) sum += m.contribution;
      EXPECT_NEAR(sum, h.score, 1e-3);
    }
  }
}

// Without the exact tier a collection keeps only codes: training drops the
// rows of what it encodes, later writes store codes alone, and everything
// a reader sees comes from the codes, with the token arena or without it,
// before and after reopening.
TEST(TokenCodecTest, WithoutFullPrecisionOnlyCodesAreStored) {
  TempDir dir;
  Clustered g(4);
  const std::vector<Document> docs = Docs(g, 300);
  const std::vector<Document> late = Docs(g, 40, "late");
  // Token rows in the closed collection's store.
  auto rows_stored = [&]() {
    auto store = DocStore::Open(dir.Sub("c") + "/store", StorageOptions());
    EXPECT_TRUE(store.ok()) << store.status();
    size_t n = 0;
    EXPECT_TRUE((*store)
                    ->ScanTokens(0,
                                 [&](Label, std::string_view, uint32_t) {
                                   ++n;
                                   return absl::OkStatus();
                                 })
                    .ok());
    return n;
  };
  std::vector<SearchQuery> queries;
  for (int k = 0; k < 8; ++k) {
    queries.push_back(g.Query(k % 2 == 0));
    queries.back().candidates = 340;
  }
  {
    auto c = Collection::Create(dir.Sub("c"), ResidualConfig(2, /*exact=*/false), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(docs).ok());
  }
  EXPECT_EQ(rows_stored(), docs.size()) << "rows until the codec is trained";
  {
    auto c = Collection::Open(dir.Sub("c"), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->TrainCodec().ok());
  }
  EXPECT_EQ(rows_stored(), 0u) << "training dropped the rows it encoded";
  std::vector<SearchResult> before;
  {
    auto c = Collection::Open(dir.Sub("c"), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(late).ok());
    // Trained once: the rows a new codec would need are gone.
    auto again = (*c)->TrainCodec();
    EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(again.status().message().find("keep_full_precision"), std::string::npos);

    // Get gives each document's tokens as its codes decode: as the
    // collection's codec encodes the row written (normalised on write, it
    // may differ in a last bit and so pick another of two tied centroids).
    const std::shared_ptr<const TokenCodecState> codec = (*c)->codec();
    ASSERT_NE(codec, nullptr);
    const std::map<std::string, Document> got = Stored(**c, late);
    ASSERT_EQ(got.size(), late.size());
    size_t rows = 0, same = 0;
    for (const Document& d : late) {
      const Document& back = got.at(d.id);
      ASSERT_EQ(back.num_tokens, d.num_tokens);
      ASSERT_EQ(back.tokens.size(), d.tokens.size());
      Document expect;
      ASSERT_TRUE(codec->DecodeRecord(codec->Encode(d.tokens.data(), d.num_tokens), &expect).ok());
      const std::vector<float>& decoded = expect.tokens;
      for (uint32_t r = 0; r < d.num_tokens; ++r) {
        float diff = 0, dot = 0;
        for (uint32_t t = 0; t < kDim; ++t) {
          diff = std::max(diff, std::abs(back.tokens[r * kDim + t] - decoded[r * kDim + t]));
          dot += back.tokens[r * kDim + t] * d.tokens[r * kDim + t];
        }
        ++rows;
        same += diff < 1e-6f;
        EXPECT_GT(dot, 0.8f) << d.id << " row " << r << ": decoded far from the row";
      }
    }
    EXPECT_GE(double(same), 0.99 * double(rows));
    for (const SearchQuery& q : queries) {
      auto r = (*c)->Search(q);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->hits.size(), 10u);
      for (const SearchHit& h : r->hits) EXPECT_TRUE(h.from_codes);
      before.push_back(*r);
    }
  }
  EXPECT_EQ(rows_stored(), 0u) << "a write after training stores codes alone";
  // Reopened, with the arena (built from the codes) and without it (codes
  // read from the store per search): the same hits and scores.
  for (bool arena : {true, false}) {
    CollectionOptions o;
    o.token_arena = arena;
    auto c = Collection::Open(dir.Sub("c"), o);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->Stats().codec_pending, 0u);
    for (size_t k = 0; k < queries.size(); ++k) {
      auto r = (*c)->Search(queries[k]);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->hits.size(), before[k].hits.size()) << "arena " << arena;
      for (size_t i = 0; i < r->hits.size(); ++i) {
        EXPECT_EQ(r->hits[i].id, before[k].hits[i].id) << "arena " << arena;
        EXPECT_NEAR(r->hits[i].score, before[k].hits[i].score, 1e-5) << "arena " << arena;
        EXPECT_TRUE(r->hits[i].from_codes);
        EXPECT_EQ(r->hits[i].matches.size(), before[k].hits[i].matches.size());
      }
    }
  }
}

// A codes-only collection with documents a crash left as rows (written
// here straight to its store, as an interrupted re-encoding leaves them),
// opened as attnsearch-index opens it (no arena, indexing deferred): they
// are counted as pending, searched and explained from their rows beside the
// coded ones, and FinishCodec encodes exactly them and drops their rows.
TEST(TokenCodecTest, CodesOnlyFinishesWhatACrashLeftWithoutTheArena) {
  TempDir dir;
  Clustered g(6);
  const std::vector<Document> docs = Docs(g, 200);
  {
    auto c = Collection::Create(dir.Sub("c"), ResidualConfig(2, /*exact=*/false), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->Upsert(docs).ok());
    ASSERT_TRUE((*c)->TrainCodec().ok());
  }
  std::vector<Document> left = Docs(g, 3, "left");
  {
    auto store = DocStore::Open(dir.Sub("c") + "/store", StorageOptions());
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<DocWrite> writes;
    for (Document& d : left) {
      d.pooled.assign(kDim, 0.f);
      for (uint32_t r = 0; r < d.num_tokens; ++r) {
        for (uint32_t t = 0; t < kDim; ++t) d.pooled[t] += d.tokens[r * kDim + t];
      }
      float norm = 0;
      for (float v : d.pooled) norm += v * v;
      for (float& v : d.pooled) v /= std::sqrt(norm);
      writes.push_back({(*store)->next_label() + writes.size(), std::nullopt, &d});
    }
    ASSERT_TRUE((*store)->Commit(writes, {}).ok());
  }
  auto c = Collection::Open(dir.Sub("c"), CollectionOptions::ForBulkLoad());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->Stats().codec_pending, left.size());
  ASSERT_TRUE((*c)->BuildIndex().ok());
  // Every document a candidate, explained: the coded ones from their
  // decoded codes, the left ones from their rows.
  SearchQuery q = g.Query(/*explain=*/true);
  q.candidates = 203;
  q.top_k = 203;
  auto r = (*c)->Search(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->hits.size(), 203u);
  size_t from_rows = 0;
  for (const SearchHit& h : r->hits) {
    from_rows += !h.from_codes;
    EXPECT_EQ(h.from_codes, h.id.rfind("left", 0) != 0) << h.id;
    ASSERT_EQ(h.matches.size(), q.num_tokens) << h.id << " has its evidence";
    double sum = 0;
    for (const auto& m : h.matches) sum += m.contribution;
    EXPECT_NEAR(sum, h.score, 1e-5 * std::max(1.0, std::fabs(double(h.score))))
        << h.id << ": the contributions add up to the score";
  }
  EXPECT_EQ(from_rows, left.size());
  // As attnsearch-index ends such a load: the codec kept, the rest encoded.
  EXPECT_EQ((*c)->TrainCodec().status().code(), absl::StatusCode::kFailedPrecondition);
  auto finished = (*c)->FinishCodec();
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->version, 1u);
  EXPECT_EQ(finished->encoded, left.size());
  EXPECT_EQ((*c)->Stats().codec_pending, 0u);
  auto again = (*c)->Search(q);
  ASSERT_TRUE(again.ok()) << again.status();
  for (const SearchHit& h : again->hits) EXPECT_TRUE(h.from_codes) << h.id;
}

TEST(TokenCodecTest, TrainsItselfOnceEnoughDocumentsAreStored) {
  TempDir dir;
  Clustered g(4);
  auto c = Collection::Create(dir.Sub("c"), ResidualConfig(2, true, /*train_after=*/300), {});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Upsert(Docs(g, 200)).ok());
  EXPECT_EQ((*c)->codec(), nullptr);
  ASSERT_TRUE((*c)->Upsert(Docs(g, 200, "e")).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (((*c)->Stats().codec_version == 0 || (*c)->Stats().codec_pending > 0) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ((*c)->Stats().codec_version, 1u);
  EXPECT_EQ((*c)->Stats().codec_pending, 0u);
}

// Writers replace and delete documents and readers search while the codec
// is trained twice: nothing acknowledged is lost, every search succeeds,
// and at the end every live document is held as codes of the last version.
TEST(TokenCodecTest, RetrainingUnderWritesAndSearchesLosesNothing) {
  TempDir dir;
  Clustered g(5);
  auto opened = Collection::Create(dir.Sub("c"), ResidualConfig(2, true), {});
  ASSERT_TRUE(opened.ok()) << opened.status();
  Collection& c = **opened;
  ASSERT_TRUE(c.Upsert(Docs(g, 600)).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> search_errors{0}, searches{0};
  std::mutex mu;
  std::string first_error;
  std::map<std::string, int> live;  // id -> tokens, as acknowledged
  for (int i = 0; i < 600; ++i) live[absl::StrCat("d", i)] = 0;
  std::thread writer([&] {
    Clustered w(6);
    for (int round = 0; !stop; ++round) {
      std::vector<Document> batch;
      for (int k = 0; k < 20; ++k)
        batch.push_back(w.Doc(absl::StrCat("d", (round * 20 + k) % 700)));
      ASSERT_TRUE(c.Upsert(batch).ok());
      const std::string gone = absl::StrCat("d", (round * 7) % 700);
      ASSERT_TRUE(c.Delete({gone}).ok());
      std::lock_guard<std::mutex> l(mu);
      for (const auto& d : batch) live[d.id] = 1;
      live.erase(gone);
    }
  });
  std::thread reader([&] {
    Clustered r(7);
    while (!stop) {
      SearchQuery q = r.Query(searches % 3 == 0);
      auto res = c.Search(q);
      if (!res.ok() || res->hits.size() != 10) {
        if (search_errors++ == 0) {
          std::lock_guard<std::mutex> l(mu);
          first_error =
              res.ok() ? absl::StrCat(res->hits.size(), " hits") : res.status().ToString();
        }
      }
      ++searches;
    }
  });
  for (uint64_t v = 1; v <= 2; ++v) {
    auto t = c.TrainCodec();
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->version, v);
  }
  stop = true;
  writer.join();
  reader.join();
  EXPECT_EQ(search_errors.load(), 0) << first_error;
  EXPECT_GT(searches.load(), 10);
  // Everything acknowledged is there.
  std::vector<std::string> ids;
  for (const auto& [id, _] : live) ids.push_back(id);
  auto got = c.Get(ids, true);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->not_found_ids.empty());
  EXPECT_EQ(c.Stats().num_documents, live.size());
  // Let a re-encoding the writes left pending finish; then all is codes.
  auto again = c.TrainCodec();
  ASSERT_TRUE(again.ok());
  const CollectionStats s = c.Stats();
  EXPECT_EQ(s.codec_version, 3u);
  EXPECT_EQ(s.codec_pending, 0u);
  uint64_t tokens = 0;
  for (const auto& d : got->documents) tokens += d.num_tokens;
  EXPECT_EQ(s.arena_tokens, tokens);
  EXPECT_EQ(s.arena_live_bytes, tokens * again->code_bytes + live.size() * 8);
}

// While a retrained codec re-encodes the collection, the documents not yet
// re-encoded are scored from the previous codec's codes in memory: no
// search reads a candidate's rows from the store, and some see the
// previous codes; afterwards only the new codec's codes are used.
TEST(TokenCodecTest, ARetrainingScoresTheRestWithThePreviousCodec) {
  TempDir dir;
  Clustered g(9);
  auto opened = Collection::Create(dir.Sub("c"), ResidualConfig(2, true), {});
  ASSERT_TRUE(opened.ok()) << opened.status();
  Collection& c = **opened;
  for (int b = 0; b < 8; ++b) ASSERT_TRUE(c.Upsert(Docs(g, 500, absl::StrCat("b", b, "-"))).ok());
  ASSERT_TRUE(c.TrainCodec().ok());
  std::atomic<bool> stop{false};
  std::atomic<int> searches{0}, saw_previous{0}, read_store{0}, errors{0};
  std::thread reader([&] {
    Clustered r(10);
    while (!stop) {
      SearchQuery q = r.Query(false);
      q.candidates = 50;
      auto res = c.Search(q);
      if (!res.ok() || res->hits.size() != 10) {
        ++errors;
      } else {
        if (res->sources.previous_codes > 0) ++saw_previous;
        if (res->sources.store > 0) ++read_store;
      }
      ++searches;
    }
  });
  auto retrained = c.TrainCodec();
  stop = true;
  reader.join();
  ASSERT_TRUE(retrained.ok()) << retrained.status();
  EXPECT_EQ(retrained->version, 2u);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(read_store.load(), 0) << "of " << searches.load() << " searches";
  EXPECT_GT(saw_previous.load(), 0) << "of " << searches.load() << " searches";
  EXPECT_EQ(c.previous_codec(), nullptr);
  Clustered r(11);
  SearchQuery q = r.Query(false);
  q.candidates = 50;
  auto after = c.Search(q);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->sources.previous_codes, 0u);
  EXPECT_EQ(after->sources.codes, 50u);
  EXPECT_EQ(after->sources.store, 0u);
}

TEST(TokenCodecTest, BadInputNamesTheField) {
  TempDir dir;
  CollectionConfig bits = ResidualConfig(3, true);
  auto s = bits.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("config.token_codec.bits"), std::string::npos) << s;
  CollectionConfig centroids = ResidualConfig(2, true);
  centroids.token_codec.centroids = 8;
  s = centroids.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("config.token_codec.centroids"), std::string::npos) << s;
  EXPECT_FALSE(Collection::Create(dir.Sub("bad"), bits, {}).ok());

  // A rows collection has nothing to train.
  CollectionConfig rows = ResidualConfig(2, true);
  rows.token_codec = TokenCodecConfig();
  auto r = Collection::Create(dir.Sub("rows"), rows, {});
  ASSERT_TRUE(r.ok());
  auto t = (*r)->TrainCodec();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("token_codec"), std::string::npos) << t.status();

  // Too few tokens for the centroids asked: refused, nothing changes.
  CollectionConfig big = ResidualConfig(2, true);
  big.token_codec.centroids = 4096;
  auto c = Collection::Create(dir.Sub("small"), big, {});
  ASSERT_TRUE(c.ok());
  Clustered g(8);
  ASSERT_TRUE((*c)->Upsert(Docs(g, 30)).ok());
  t = (*c)->TrainCodec();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
  EXPECT_NE(t.status().message().find("token_codec"), std::string::npos) << t.status();
  EXPECT_EQ((*c)->codec(), nullptr);
  EXPECT_EQ((*c)->Stats().codec_version, 0u);
  SearchQuery q = g.Query(false);
  auto res = (*c)->Search(q);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->hits.size(), 10u);
}

}  // namespace
}  // namespace attnsearch
