// Overwrites are atomic for readers: while writers keep replacing versioned
// documents, every Get and every Search (unfiltered and filtered, through
// the graph and exact) sees each document that exists, whole, and never a
// version older than one acknowledged before the read began.
//
// Each document's version is in its metadata, its text and its vectors
// (tokens drawn from a seed of id and version), so a reader can tell a torn
// document (parts of two versions) from a whole one, and check a search
// score against the reference reranker on that version's tokens.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/vector_math.h"
#include "engine/collection.h"
#include "engine_test_util.h"
#include "rerank/reference.h"

namespace attnsearch {
namespace {

using testing::TempDir;

constexpr uint32_t kDim = 8;
constexpr int kDocs = 6;
constexpr int kTokens = 3;
constexpr int kWriters = 2;  // writer w owns the documents i with i % kWriters == w
constexpr int kReaders = 2;
constexpr auto kRunFor = std::chrono::milliseconds(2500);

std::string Id(int i) { return absl::StrCat("doc", i); }

// The tokens of version v of document i.
std::vector<float> TokensOf(int i, uint64_t v) {
  std::mt19937 rng(uint32_t(i * 1000003 + v));
  return testing::RandomUnitRows(rng, kTokens, kDim);
}

Document Version(int i, uint64_t v) {
  Document d;
  d.id = Id(i);
  d.text = absl::StrCat("version ", v);
  d.metadata = {{"version", absl::StrCat(v)}, {"group", "all"}};
  d.num_tokens = kTokens;
  d.tokens = TokensOf(i, v);
  return d;
}

// Equal up to the rounding of normalisation.
bool SameVectors(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (std::abs(a[k] - b[k]) > 1e-5f) return false;
  }
  return true;
}

int IndexOf(const std::string& id) {
  int i = -1;
  if (id.size() <= 3 || !absl::SimpleAtoi(id.substr(3), &i)) return -1;
  return i;
}

struct Versions {
  // Highest version acknowledged, and highest version whose write began.
  std::atomic<uint64_t> acked[kDocs] = {};
  std::atomic<uint64_t> started[kDocs] = {};
};

struct Problems {
  std::atomic<uint64_t> missing{0}, torn{0}, stale{0}, reads{0};
  std::mutex mu;
  std::vector<std::string> examples;
  void Note(std::atomic<uint64_t>& counter, const std::string& what) {
    ++counter;
    std::lock_guard<std::mutex> lock(mu);
    if (examples.size() < 10) examples.push_back(what);
  }
};

// Checks one document version seen by a read that began when `floor` was
// acknowledged: within [floor, started] and whole.
void CheckSeen(int i, const std::string& version_text, const std::string& text,
               const uint64_t floor[kDocs], const Versions& versions, Problems* p,
               const std::string& where) {
  uint64_t v = 0;
  if (!absl::SimpleAtoi(version_text, &v)) {
    p->Note(p->torn, absl::StrCat(where, ": ", Id(i), " has no version"));
    return;
  }
  if (!text.empty() && text != absl::StrCat("version ", v)) {
    p->Note(p->torn, absl::StrCat(where, ": ", Id(i), " metadata v", v, ", text '", text, "'"));
  }
  if (v < floor[i]) {
    p->Note(p->stale,
            absl::StrCat(where, ": ", Id(i), " v", v, " after v", floor[i], " was acknowledged"));
  }
  if (v > versions.started[i].load()) {
    p->Note(p->torn, absl::StrCat(where, ": ", Id(i), " v", v, " was never written"));
  }
}

void Reader(const Collection& c, const Versions& versions, const std::atomic<bool>& stop, int seed,
            Problems* p) {
  std::mt19937 rng(seed);
  const std::vector<float> query = testing::RandomUnitRows(rng, 2, kDim);
  const std::vector<float> weights(2, 0.5f);
  std::vector<std::string> ids;
  for (int i = 0; i < kDocs; ++i) ids.push_back(Id(i));
  for (int round = 0; !stop.load(); ++round) {
    uint64_t floor[kDocs];
    for (int i = 0; i < kDocs; ++i) floor[i] = versions.acked[i].load();
    const int kind = round % 4;
    if (kind == 0) {
      auto got = c.Get(ids, /*include_vectors=*/true);
      ASSERT_TRUE(got.ok()) << got.status();
      for (const std::string& id : got->not_found_ids) p->Note(p->missing, "Get: " + id);
      for (const Document& d : got->documents) {
        const int i = IndexOf(d.id);
        ASSERT_GE(i, 0) << d.id;
        CheckSeen(i, d.metadata.count("version") ? d.metadata.at("version") : "", d.text, floor,
                  versions, p, "Get");
        uint64_t v = 0;
        if (absl::SimpleAtoi(d.metadata.count("version") ? d.metadata.at("version") : "", &v) &&
            !SameVectors(d.tokens, TokensOf(i, v))) {
          p->Note(p->torn, absl::StrCat("Get: ", d.id, " v", v, " with other tokens"));
        }
      }
    } else {
      SearchQuery q;
      q.num_tokens = 2;
      q.tokens = query;
      q.top_k = kDocs;
      q.candidates = kDocs;  // every document
      // 1: the ANN scores alone (no token fetch), 2: reranked, 3: reranked
      // with a filter (an exact scan of the matching documents).
      if (kind == 1) q.mode = RerankMode::kNone;
      if (kind == 3) q.filter = {{"group", {"all"}}};
      q.include_text = true;
      q.include_metadata = true;
      auto r = c.Search(q);
      ASSERT_TRUE(r.ok()) << r.status();
      const std::string where = absl::StrCat("Search kind ", kind);
      bool seen[kDocs] = {};
      for (const SearchHit& h : r->hits) {
        const int i = IndexOf(h.id);
        ASSERT_GE(i, 0) << h.id;
        seen[i] = true;
        const std::string version = h.metadata.count("version") ? h.metadata.at("version") : "";
        CheckSeen(i, version, h.text, floor, versions, p, where);
        uint64_t v = 0;
        if (!absl::SimpleAtoi(version, &v)) continue;
        // The score is that of the version the hit says it is.
        const std::vector<float> t = TokensOf(i, v);
        double want = 0;
        if (kind == 1) {
          std::vector<float> qp(kDim), dp(kDim);
          PoolRows(query.data(), 2, kDim, nullptr, qp.data());
          PoolRows(t.data(), kTokens, kDim, nullptr, dp.data());
          want = Dot(qp.data(), dp.data(), kDim);
        } else {
          want = ReferenceScore(query.data(), 2, weights.data(), t.data(), kTokens, kDim,
                                RerankMode::kAttention, kDefaultTemperature);
        }
        if (std::abs(want - h.score) > 1e-4) {
          p->Note(p->torn, absl::StrCat(where, ": ", h.id, " v", v, " scored ", h.score,
                                        ", its tokens score ", want));
        }
      }
      for (int i = 0; i < kDocs; ++i) {
        if (!seen[i]) p->Note(p->missing, absl::StrCat(where, ": ", Id(i)));
      }
    }
    ++p->reads;
  }
}

TEST(OverwriteTest, ReadersNeverMissATornOrStaleDocument) {
  for (const std::string spec : {"HNSW32,Flat", "Flat"}) {
    SCOPED_TRACE(spec);
    TempDir dir;
    CollectionConfig config;
    config.dim = kDim;
    config.token_dtype = TokenDtype::kF32;
    config.ann_spec = spec;
    CollectionOptions options;
    options.storage.sync_writes = false;   // more overwrites per second
    options.rebuild_min_tombstones = 200;  // rebuilds happen meanwhile too
    auto c = Collection::Create(dir.Sub("c"), config, options);
    ASSERT_TRUE(c.ok()) << c.status();
    Versions versions;
    {
      std::vector<Document> first;
      for (int i = 0; i < kDocs; ++i) first.push_back(Version(i, 1));
      ASSERT_TRUE((*c)->Upsert(first).ok());
      for (int i = 0; i < kDocs; ++i) versions.acked[i] = versions.started[i] = 1;
    }
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> writes{0};
    Problems problems;
    std::vector<std::thread> threads;
    for (int w = 0; w < kWriters; ++w) {
      threads.emplace_back([&, w] {
        while (!stop.load()) {
          for (int i = w; i < kDocs; i += kWriters) {
            const uint64_t v = versions.started[i].load() + 1;
            versions.started[i] = v;
            auto s = (*c)->Upsert({Version(i, v)});
            ASSERT_TRUE(s.ok()) << s.status();
            versions.acked[i] = v;
            ++writes;
          }
        }
      });
    }
    for (int r = 0; r < kReaders; ++r) {
      threads.emplace_back([&, r] { Reader(**c, versions, stop, 100 + r, &problems); });
    }
    std::this_thread::sleep_for(kRunFor);
    stop = true;
    for (auto& t : threads) t.join();
    std::string examples;
    for (const auto& e : problems.examples) examples += "\n  " + e;
    std::printf(
        "%s: %llu overwrites, %llu reads, %llu rebuilds: missing %llu, torn %llu, "
        "stale %llu\n",
        spec.c_str(), (unsigned long long)writes.load(), (unsigned long long)problems.reads.load(),
        (unsigned long long)(*c)->Stats().rebuilds, (unsigned long long)problems.missing,
        (unsigned long long)problems.torn, (unsigned long long)problems.stale);
    EXPECT_GT(writes.load(), 100u);
    EXPECT_GT(problems.reads.load(), 100u);
    EXPECT_EQ(problems.missing.load(), 0u) << examples;
    EXPECT_EQ(problems.torn.load(), 0u) << examples;
    EXPECT_EQ(problems.stale.load(), 0u) << examples;
  }
}

}  // namespace
}  // namespace attnsearch
