#include "ann/ann_index.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace attnsearch {
namespace {

using ::attnsearch::testing::RandomUnitRows;
using ::attnsearch::testing::TempDir;

// A seeded data set: n unit vectors under gapped labels, and queries.
struct DataSet {
  uint32_t dim = 0;
  std::vector<Label> labels;
  std::vector<float> vectors;
  std::vector<float> queries;
  size_t num_queries = 0;

  const float* query(size_t q) const { return queries.data() + q * dim; }
};

DataSet MakeDataSet(uint32_t seed, size_t n, uint32_t dim, size_t num_queries) {
  std::mt19937 rng(seed);
  DataSet d;
  d.dim = dim;
  d.vectors = RandomUnitRows(rng, n, dim);
  d.queries = RandomUnitRows(rng, num_queries, dim);
  d.num_queries = num_queries;
  for (size_t i = 0; i < n; ++i) d.labels.push_back(1000 + 7 * Label(i));
  return d;
}

// The exact oracle: the k admissible labels with the highest inner product,
// best first, computed by brute force in double precision.
std::vector<std::pair<double, Label>> ExactTopK(const DataSet& d, const float* query, size_t k,
                                                const LabelFilter& filter) {
  std::vector<std::pair<double, Label>> all;
  for (size_t i = 0; i < d.labels.size(); ++i) {
    if (filter && !filter(d.labels[i])) continue;
    double s = 0.0;
    for (uint32_t j = 0; j < d.dim; ++j) s += double(query[j]) * d.vectors[i * d.dim + j];
    all.emplace_back(s, d.labels[i]);
  }
  const size_t kk = std::min(k, all.size());
  std::partial_sort(all.begin(), all.begin() + long(kk), all.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  all.resize(kk);
  return all;
}

std::unique_ptr<AnnIndex> Build(const std::string& spec, const DataSet& d,
                                const AnnOptions& options = AnnOptions()) {
  auto index = AnnIndex::Create(spec, d.dim, options);
  EXPECT_TRUE(index.ok()) << index.status();
  if (!index.ok()) return nullptr;
  // Two batches, to exercise label bookkeeping across Add calls.
  const size_t half = d.labels.size() / 2;
  EXPECT_TRUE((*index)->Add(d.labels.data(), d.vectors.data(), half).ok());
  EXPECT_TRUE(
      (*index)
          ->Add(d.labels.data() + half, d.vectors.data() + half * d.dim, d.labels.size() - half)
          .ok());
  return std::move(index).value();
}

std::vector<AnnNeighbor> SearchOrDie(const AnnIndex& index, const float* query, size_t k,
                                     const AnnSearchParams& params,
                                     const LabelFilter& filter = nullptr) {
  std::vector<AnnNeighbor> out;
  absl::Status s = index.Search(query, k, params, filter, &out);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// Mean recall@k of `index` against the exact oracle over all queries; also
// checks every result is admissible and, with exact_scores (not for
// compressed storage, whose scores approximate), that results are best
// first and each returned score is the true inner product of its label.
double Recall(const AnnIndex& index, const DataSet& d, size_t k, const AnnSearchParams& params,
              const LabelFilter& filter = nullptr, bool exact_scores = true) {
  double total = 0.0;
  for (size_t q = 0; q < d.num_queries; ++q) {
    const auto want = ExactTopK(d, d.query(q), k, filter);
    const auto got = SearchOrDie(index, d.query(q), k, params, filter);
    std::set<Label> want_labels;
    for (const auto& [s, l] : want) want_labels.insert(l);
    size_t hits = 0;
    for (size_t r = 0; r < got.size(); ++r) {
      const Label l = got[r].label;
      if (filter) EXPECT_TRUE(filter(l)) << "label " << l << " not admitted";
      hits += want_labels.count(l);
      if (!exact_scores) continue;
      if (r > 0) EXPECT_GE(got[r - 1].score, got[r].score);
      // The label is one of ours and its score is its inner product.
      auto it = std::lower_bound(d.labels.begin(), d.labels.end(), l);
      EXPECT_TRUE(it != d.labels.end() && *it == l) << "unknown label " << l;
      if (it != d.labels.end() && *it == l) {
        const size_t pos = size_t(it - d.labels.begin());
        double s = 0.0;
        for (uint32_t j = 0; j < d.dim; ++j) {
          s += double(d.query(q)[j]) * d.vectors[pos * d.dim + j];
        }
        EXPECT_NEAR(got[r].score, s, 1e-5);
      }
    }
    total += want.empty() ? 1.0 : double(hits) / double(want.size());
  }
  return total / double(d.num_queries);
}

AnnSearchParams Ef(int ef) {
  AnnSearchParams p;
  p.ef_search = ef;
  return p;
}

bool EveryTenth(Label l) { return l % 10 == 0; }

// One data set and its Flat and HNSW indexes, built once for the suite.
class AnnIndexTest : public ::testing::Test {
 protected:
  static constexpr size_t kN = 5000;
  static constexpr uint32_t kDim = 32;
  static constexpr size_t kQueries = 50;
  static constexpr size_t kK = 10;

  static void SetUpTestSuite() {
    data_ = new DataSet(MakeDataSet(2024, kN, kDim, kQueries));
    flat_ = Build("Flat", *data_).release();
    hnsw_ = Build("HNSW32,Flat", *data_).release();
  }
  static void TearDownTestSuite() {
    delete hnsw_;
    delete flat_;
    delete data_;
    hnsw_ = flat_ = nullptr;
    data_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(flat_, nullptr);
    ASSERT_NE(hnsw_, nullptr);
  }

  static DataSet* data_;
  static AnnIndex* flat_;
  static AnnIndex* hnsw_;
};

DataSet* AnnIndexTest::data_ = nullptr;
AnnIndex* AnnIndexTest::flat_ = nullptr;
AnnIndex* AnnIndexTest::hnsw_ = nullptr;

TEST_F(AnnIndexTest, AccessorsReflectWhatWasAdded) {
  for (const AnnIndex* index : {flat_, hnsw_}) {
    EXPECT_EQ(index->size(), kN);
    EXPECT_EQ(index->dim(), kDim);
    EXPECT_TRUE(index->has_labels());
    EXPECT_EQ(index->max_label(), 1000 + 7 * Label(kN - 1));
    EXPECT_EQ(index->labels(), data_->labels);
  }
  EXPECT_EQ(flat_->spec(), "Flat");
  EXPECT_EQ(hnsw_->spec(), "HNSW32,Flat");
}

TEST_F(AnnIndexTest, FlatIsExact) {
  EXPECT_EQ(Recall(*flat_, *data_, kK, AnnSearchParams()), 1.0);
  // And in the oracle's order.
  for (size_t q = 0; q < 5; ++q) {
    const auto want = ExactTopK(*data_, data_->query(q), kK, nullptr);
    const auto got = SearchOrDie(*flat_, data_->query(q), kK, AnnSearchParams());
    ASSERT_EQ(got.size(), kK);
    for (size_t r = 0; r < kK; ++r) EXPECT_EQ(got[r].label, want[r].second) << r;
  }
}

TEST_F(AnnIndexTest, HnswRecallAtEfSearch200) {
  const double recall = Recall(*hnsw_, *data_, kK, Ef(200));
  RecordProperty("recall", std::to_string(recall));
  EXPECT_GE(recall, 0.95);
}

TEST_F(AnnIndexTest, ExhaustiveEqualsExactOracle) {
  AnnSearchParams exhaustive;
  exhaustive.exhaustive = true;
  for (const LabelFilter& filter : {LabelFilter(), LabelFilter(EveryTenth)}) {
    for (size_t q = 0; q < kQueries; ++q) {
      const auto want = ExactTopK(*data_, data_->query(q), kK, filter);
      const auto got = SearchOrDie(*hnsw_, data_->query(q), kK, exhaustive, filter);
      ASSERT_EQ(got.size(), want.size());
      for (size_t r = 0; r < want.size(); ++r) {
        EXPECT_EQ(got[r].label, want[r].second) << "query " << q << " rank " << r;
        EXPECT_NEAR(got[r].score, want[r].first, 1e-5);
      }
    }
  }
}

TEST_F(AnnIndexTest, FilterIsAppliedInsideTheSearch) {
  const LabelFilter filter = EveryTenth;  // admits 500 of the 5000 labels
  for (const AnnIndex* index : {flat_, hnsw_}) {
    SCOPED_TRACE(index->spec());
    for (size_t q = 0; q < kQueries; ++q) {
      const auto got = SearchOrDie(*index, data_->query(q), kK, Ef(200), filter);
      // k results although 90% of the nearest neighbours are filtered out.
      ASSERT_EQ(got.size(), kK) << "query " << q;
      for (const AnnNeighbor& n : got) EXPECT_TRUE(filter(n.label)) << n.label;
    }
  }
  EXPECT_EQ(Recall(*flat_, *data_, kK, AnnSearchParams(), filter), 1.0);
  const double hnsw_recall = Recall(*hnsw_, *data_, kK, Ef(200), filter);
  RecordProperty("hnsw_filtered_recall", std::to_string(hnsw_recall));
  EXPECT_GE(hnsw_recall, 0.9);
}

TEST_F(AnnIndexTest, FilterAdmittingFewerThanK) {
  // Exactly five admissible labels: all of them come back, best first.
  const std::set<Label> few = {data_->labels[3], data_->labels[777], data_->labels[1234],
                               data_->labels[4000], data_->labels[4999]};
  const LabelFilter filter = [&](Label l) { return few.count(l) > 0; };
  AnnSearchParams exhaustive;
  exhaustive.exhaustive = true;
  for (size_t q = 0; q < 5; ++q) {
    const auto want = ExactTopK(*data_, data_->query(q), kK, filter);
    ASSERT_EQ(want.size(), 5u);
    for (const AnnSearchParams& params : {AnnSearchParams(), exhaustive}) {
      const AnnIndex* index = params.exhaustive ? hnsw_ : flat_;
      const auto got = SearchOrDie(*index, data_->query(q), kK, params, filter);
      ASSERT_EQ(got.size(), 5u);
      for (size_t r = 0; r < 5; ++r) EXPECT_EQ(got[r].label, want[r].second);
    }
    // The graph search may not reach all five, but returns only admissible
    // labels.
    for (const AnnNeighbor& n : SearchOrDie(*hnsw_, data_->query(q), kK, Ef(200), filter)) {
      EXPECT_TRUE(filter(n.label));
    }
  }
  // A filter that admits nothing gives nothing.
  const LabelFilter none = [](Label) { return false; };
  for (const AnnIndex* index : {flat_, hnsw_}) {
    EXPECT_TRUE(SearchOrDie(*index, data_->query(0), kK, Ef(50), none).empty());
  }
}

TEST_F(AnnIndexTest, KLargerThanIndexAndZeroK) {
  auto small = AnnIndex::Create("Flat", kDim, AnnOptions());
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE((*small)->Add(data_->labels.data(), data_->vectors.data(), 3).ok());
  EXPECT_EQ(SearchOrDie(**small, data_->query(0), 10, AnnSearchParams()).size(), 3u);
  EXPECT_TRUE(SearchOrDie(*hnsw_, data_->query(0), 0, Ef(50)).empty());
}

TEST_F(AnnIndexTest, BeamIsNeverNarrowerThanK) {
  // ef_search 1 still yields k results.
  for (size_t q = 0; q < 10; ++q) {
    EXPECT_EQ(SearchOrDie(*hnsw_, data_->query(q), kK, Ef(1)).size(), kK);
  }
}

TEST_F(AnnIndexTest, SaveThenLoadGivesIdenticalResults) {
  TempDir tmp;
  for (const AnnIndex* index : {flat_, hnsw_}) {
    SCOPED_TRACE(index->spec());
    const std::string path = tmp.Sub("index.snap");
    ASSERT_TRUE(index->Save(path).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    auto loaded = AnnIndex::Load(path, index->spec(), kDim, AnnOptions());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->labels(), index->labels());
    EXPECT_EQ((*loaded)->size(), index->size());
    EXPECT_EQ((*loaded)->max_label(), index->max_label());
    for (size_t q = 0; q < kQueries; ++q) {
      for (const LabelFilter& filter : {LabelFilter(), LabelFilter(EveryTenth)}) {
        const auto a = SearchOrDie(*index, data_->query(q), kK, Ef(64), filter);
        const auto b = SearchOrDie(**loaded, data_->query(q), kK, Ef(64), filter);
        ASSERT_EQ(a.size(), b.size());
        for (size_t r = 0; r < a.size(); ++r) {
          EXPECT_EQ(a[r].label, b[r].label);
          EXPECT_EQ(a[r].score, b[r].score);
        }
      }
    }
  }
}

TEST_F(AnnIndexTest, LoadRejectsMissingCorruptAndMismatchedSnapshots) {
  TempDir tmp;
  const std::string path = tmp.Sub("hnsw.snap");
  ASSERT_TRUE(hnsw_->Save(path).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(bytes.size(), 1000u);
  auto write = [&](const std::string& name, const std::string& content) {
    const std::string p = tmp.Sub(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(content.data(), std::streamsize(content.size()));
    return p;
  };

  EXPECT_EQ(
      AnnIndex::Load(tmp.Sub("missing.snap"), "HNSW32,Flat", kDim, AnnOptions()).status().code(),
      absl::StatusCode::kNotFound);

  for (size_t len :
       {size_t{0}, size_t{7}, size_t{40}, bytes.size() / 2, bytes.size() - 9, bytes.size() - 1}) {
    const std::string p = write("truncated.snap", bytes.substr(0, len));
    auto r = AnnIndex::Load(p, "HNSW32,Flat", kDim, AnnOptions());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
        << "length " << len << ": " << r.status();
  }
  // Flips in the magic, the dim, the spec, the label map, the FAISS bytes and
  // the checksum.
  for (size_t at : {size_t{0}, size_t{9}, size_t{13}, size_t{20}, size_t{30}, bytes.size() / 2,
                    bytes.size() - 20, bytes.size() - 1}) {
    std::string flipped = bytes;
    flipped[at] = char(flipped[at] ^ 0x10);
    const std::string p = write("flipped.snap", flipped);
    auto r = AnnIndex::Load(p, "HNSW32,Flat", kDim, AnnOptions());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
        << "flip at " << at << ": " << r.status();
  }
  // Trailing garbage.
  {
    const std::string p = write("extra.snap", bytes + "garbage");
    EXPECT_EQ(AnnIndex::Load(p, "HNSW32,Flat", kDim, AnnOptions()).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(AnnIndex::Load(path, "Flat", kDim, AnnOptions()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(AnnIndex::Load(path, "HNSW16,Flat", kDim, AnnOptions()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(AnnIndex::Load(path, "HNSW32,Flat", kDim + 1, AnnOptions()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // The intact snapshot still loads.
  EXPECT_TRUE(AnnIndex::Load(path, "HNSW32,Flat", kDim, AnnOptions()).ok());
}

TEST_F(AnnIndexTest, DefaultEfSearchComesFromOptions) {
  // A request without ef_search uses AnnOptions::ef_search: an index loaded
  // with options.ef_search = 400 searches exactly like an explicit 400.
  TempDir tmp;
  const std::string path = tmp.Sub("hnsw.snap");
  ASSERT_TRUE(hnsw_->Save(path).ok());
  AnnOptions wide;
  wide.ef_search = 400;
  auto loaded = AnnIndex::Load(path, "HNSW32,Flat", kDim, wide);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t q = 0; q < 10; ++q) {
    const auto a = SearchOrDie(**loaded, data_->query(q), kK, AnnSearchParams());
    const auto b = SearchOrDie(*hnsw_, data_->query(q), kK, Ef(400));
    ASSERT_EQ(a.size(), b.size());
    for (size_t r = 0; r < a.size(); ++r) EXPECT_EQ(a[r].label, b[r].label);
  }
}

TEST_F(AnnIndexTest, SearchIsSafeFromSeveralThreads) {
  // Expected results computed single-threaded, then four threads search the
  // same index at once (with and without a filter, different ef_search).
  constexpr int kThreads = 4;
  std::vector<std::vector<std::vector<AnnNeighbor>>> expected(kThreads);
  auto params_of = [](int t) { return Ef(t % 2 == 0 ? 32 : 200); };
  auto filter_of = [](int t) { return t < 2 ? LabelFilter() : LabelFilter(EveryTenth); };
  for (int t = 0; t < kThreads; ++t) {
    for (size_t q = 0; q < kQueries; ++q) {
      expected[t].push_back(SearchOrDie(*hnsw_, data_->query(q), kK, params_of(t), filter_of(t)));
    }
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<AnnNeighbor> out;
      for (int round = 0; round < 4; ++round) {
        for (size_t q = 0; q < kQueries; ++q) {
          if (!hnsw_->Search(data_->query(q), kK, params_of(t), filter_of(t), &out).ok() ||
              out.size() != expected[t][q].size()) {
            ++mismatches;
            continue;
          }
          for (size_t r = 0; r < out.size(); ++r) {
            if (out[r].label != expected[t][q][r].label) ++mismatches;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(AnnIndexHardDataTest, PerRequestEfSearchTakesEffect) {
  // High-dimensional random data is hard for a graph index: a narrow beam
  // misses neighbours that a wide one finds.
  const DataSet d = MakeDataSet(77, 20000, 64, 50);
  AnnOptions options;
  options.ef_construction = 40;  // keeps the build fast
  auto index = Build("HNSW32,Flat", d, options);
  ASSERT_NE(index, nullptr);
  const double narrow = Recall(*index, d, 10, Ef(10));
  const double wide = Recall(*index, d, 10, Ef(400));
  RecordProperty("recall_ef10", std::to_string(narrow));
  RecordProperty("recall_ef400", std::to_string(wide));
  EXPECT_LT(narrow, wide);
  EXPECT_LT(narrow, wide - 0.05) << "narrow " << narrow << " wide " << wide;
  EXPECT_GE(wide, 0.95);
}

TEST(AnnIndexIvfTest, NprobeIsPerRequestAndFilterWorks) {
  const DataSet d = MakeDataSet(5, 4000, 16, 30);
  auto index = Build("IVF16,Flat", d);
  ASSERT_NE(index, nullptr);
  AnnSearchParams all_lists;
  all_lists.nprobe = 16;
  AnnSearchParams one_list;
  one_list.nprobe = 1;
  EXPECT_EQ(Recall(*index, d, 10, all_lists), 1.0);
  EXPECT_EQ(Recall(*index, d, 10, all_lists, EveryTenth), 1.0);
  const double one_list_recall = Recall(*index, d, 10, one_list);
  RecordProperty("recall_nprobe1", std::to_string(one_list_recall));
  EXPECT_LT(one_list_recall, 0.9);
}

// An IVF index has no exact scorer: an exhaustive search probes every list.
TEST(AnnIndexIvfTest, ExhaustiveIsExactForIvf) {
  const DataSet d = MakeDataSet(6, 4000, 16, 30);
  AnnOptions options;
  options.nprobe = 1;
  auto index = Build("IVF16,Flat", d, options);
  ASSERT_NE(index, nullptr);
  AnnSearchParams exhaustive;
  exhaustive.exhaustive = true;
  EXPECT_EQ(Recall(*index, d, 10, exhaustive), 1.0);
}

TEST(AnnIndexBasicsTest, AddRequiresIncreasingLabels) {
  std::mt19937 rng(3);
  const std::vector<float> v = RandomUnitRows(rng, 4, 8);
  auto index = AnnIndex::Create("Flat", 8, AnnOptions());
  ASSERT_TRUE(index.ok());
  const Label unordered[] = {5, 4};
  EXPECT_FALSE((*index)->Add(unordered, v.data(), 2).ok());
  const Label first[] = {5, 9};
  ASSERT_TRUE((*index)->Add(first, v.data(), 2).ok());
  const Label stale[] = {9};
  EXPECT_FALSE((*index)->Add(stale, v.data(), 1).ok());
  EXPECT_EQ((*index)->size(), 2u);
  EXPECT_EQ((*index)->labels(), (std::vector<Label>{5, 9}));
}

TEST(AnnIndexBasicsTest, EmptyIndexSearchesToNothing) {
  auto index = AnnIndex::Create("HNSW32,Flat", 8, AnnOptions());
  ASSERT_TRUE(index.ok());
  EXPECT_FALSE((*index)->has_labels());
  EXPECT_EQ((*index)->size(), 0u);
  std::vector<float> q(8, 0.f);
  q[0] = 1.f;
  std::vector<AnnNeighbor> out = {{1, 1.f}};
  ASSERT_TRUE((*index)->Search(q.data(), 10, AnnSearchParams(), nullptr, &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST(AnnIndexBasicsTest, CreateWithBogusSpecIsInvalidArgument) {
  for (const char* spec : {"Bogus42", "HNSWxyz,Flat", "Flat,Flat,Flat"}) {
    auto index = AnnIndex::Create(spec, 16, AnnOptions());
    EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument)
        << spec << ": " << index.status();
    // FAISS's own message, without the C++ signature and source position
    // FAISS puts in front of it.
    EXPECT_EQ(index.status().message().find("Error in "), std::string::npos) << index.status();
    EXPECT_EQ(index.status().message().find(".cpp:"), std::string::npos) << index.status();
  }
}

// Specs FAISS builds but a collection cannot use are refused by name, and
// the usual ones pass the probe, also in one dimension (ties).
TEST(AnnIndexBasicsTest, CreateRefusesSpecsThatCannotServe) {
  for (const char* spec :
       {"IDMap,Flat", "IDMap2,Flat", "HNSW0,Flat", "HNSW1,Flat", "HNSW257,Flat", "HNSW100000,Flat",
        "NSG32,Flat", "IDMap,HNSW32,Flat", "Flat,Refine(Flat)",
        // Built with squared L2 whatever is asked: the farthest ranked first.
        "HNSW32,PQ2",
        // Trained later, then no distance computer: every search failed.
        "IVF4,Flat,RFlat", "OPQ2,IVF4,PQ2", "PCA4,HNSW16,Flat",
        // A stray comma, which FAISS would read as ",Flat".
        "HNSW32,", "HNSW32,,Flat"}) {
    auto index = AnnIndex::Create(spec, 16, AnnOptions());
    EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument)
        << spec << ": " << index.status();
    EXPECT_EQ(index.status().message().rfind(absl::StrCat("ann_spec: '", spec, "'"), 0), 0u)
        << index.status();
  }
  for (uint32_t dim : {1u, 2u, 16u, 130u}) {
    for (const char* spec :
         {"Flat", "HNSW2,Flat", "HNSW32,Flat", "HNSW256,Flat", "HNSW32,SQfp16", "IVF4,Flat"}) {
      EXPECT_TRUE(AnnIndex::Create(spec, dim, AnnOptions()).ok()) << spec << " at " << dim;
    }
  }
  for (const char* spec : {"PQ4", "OPQ4,PQ4", "PCA8,Flat", "IVF4,PQ4", "HNSW16,SQ8"}) {
    EXPECT_TRUE(AnnIndex::Create(spec, 16, AnnOptions()).ok()) << spec;
  }
}

TEST(AnnSearchParamsTest, ParseAcceptsKnownKnobs) {
  auto p = AnnSearchParams::Parse("efSearch=128,nprobe=4");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ef_search, 128);
  EXPECT_EQ(p->nprobe, 4);
  EXPECT_FALSE(p->exhaustive);
  auto empty = AnnSearchParams::Parse("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->ef_search, 0);
  EXPECT_EQ(empty->nprobe, 0);
  auto one = AnnSearchParams::Parse("nprobe=16");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->ef_search, 0);
  EXPECT_EQ(one->nprobe, 16);
  EXPECT_EQ(one->refine, -1);  // the first stage's default
  auto centroid = AnnSearchParams::Parse("probe=8,probe_ef=64,refine=0");
  ASSERT_TRUE(centroid.ok()) << centroid.status();
  EXPECT_EQ(centroid->probe, 8);
  EXPECT_EQ(centroid->probe_ef, 64);
  EXPECT_EQ(centroid->refine, 0);  // off
}

TEST(AnnSearchParamsTest, ParseRejectsMalformedKnobs) {
  for (const char* text : {"efSearch=abc", "foo=1", "efSearch=0", "efSearch=-5", "efSearch",
                           "efSearch=", "nprobe=100001", "efSearch=12,bogus=3", "refine=-1",
                           "refine=100001", "probe=0"}) {
    auto p = AnnSearchParams::Parse(text);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument)
        << "'" << text << "': " << p.status();
  }
  // The message names the knob.
  EXPECT_NE(AnnSearchParams::Parse("refine=-1").status().message().find("refine=-1"),
            std::string::npos);
  // An empty knob, a repeated one, a bare word: each said as such.
  const std::vector<std::pair<std::string, std::string>> said = {
      {"efSearch=64,", "an empty knob"},
      {",efSearch=64", "an empty knob"},
      {"efSearch=64,,nprobe=2", "an empty knob"},
      {"efSearch=64,efSearch=8", "efSearch is given twice"},
      {"garbage", "'garbage' is not name=value"},
      {"probe=1025", "'probe=1025' needs a value in 1..1024"},
  };
  for (const auto& [text, message] : said) {
    auto p = AnnSearchParams::Parse(text);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(p.status().message().find(message), std::string::npos) << text << ": " << p.status();
  }
  // Spaces around knobs, names and values are fine; so is text of spaces
  // only. A value is plain decimal digits.
  auto spaced = AnnSearchParams::Parse(" efSearch=12 , nprobe = 3 ");
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  EXPECT_EQ(spaced->ef_search, 12);
  EXPECT_EQ(spaced->nprobe, 3);
  for (const char* text :
       {"efSearch=+5", "efSearch=5 0", "efSearch=0x10", "efSearch=1e3", "efSearch=00000000012"}) {
    auto p = AnnSearchParams::Parse(text);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument)
        << "'" << text << "': " << p.status();
  }
  EXPECT_TRUE(AnnSearchParams::Parse("  ").ok());
}

// A knob the collection's index or first stage does not read is refused,
// naming it.
TEST(AnnSearchParamsTest, KnobsMustApplyToTheIndexAndFirstStage) {
  struct Case {
    std::string text, spec;
    bool centroids;
    std::string refused;  // empty: accepted
  };
  const std::vector<Case> cases = {
      {"efSearch=64", "HNSW32,SQfp16", false, ""},
      {"efSearch=64", "Flat", false, "efSearch"},
      {"efSearch=64", "IVF64,Flat", false, "efSearch"},
      {"nprobe=8", "IVF64,Flat", false, ""},
      {"nprobe=8", "HNSW32,Flat", false, "nprobe"},
      {"probe=8", "HNSW32,Flat", false, "probe"},
      {"probe_ef=8", "HNSW32,Flat", false, "probe_ef"},
      {"refine=0", "HNSW32,Flat", false, "refine"},
      {"efSearch=40,probe=8,probe_ef=16,refine=500", "HNSW32,SQfp16", true, ""},
      {"probe=8", "Flat", true, ""},
  };
  for (const Case& c : cases) {
    auto p = AnnSearchParams::Parse(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status();
    const absl::Status s = p->CheckApplies(c.spec, c.centroids);
    if (c.refused.empty()) {
      EXPECT_TRUE(s.ok()) << c.text << " on " << c.spec << ": " << s;
    } else {
      EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.text << " on " << c.spec;
      EXPECT_EQ(s.message().rfind("ann_params: " + c.refused + " ", 0), 0u) << s;
    }
  }
}

// A knob with more than one '=' is malformed.
TEST(AnnSearchParamsTest, ParseRejectsExtraEquals) {
  for (const char* text : {"efSearch=12=3", "nprobe=4=", "efSearch=1,nprobe=2=2"}) {
    auto p = AnnSearchParams::Parse(text);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument)
        << "'" << text << "' parsed as efSearch=" << (p.ok() ? p->ef_search : -1)
        << " nprobe=" << (p.ok() ? p->nprobe : -1);
  }
}

}  // namespace
}  // namespace attnsearch

namespace attnsearch {
namespace {

// Recall by label only, for compressed storage.
double LabelRecall(const AnnIndex& index, const DataSet& d, size_t k,
                   const AnnSearchParams& params) {
  return Recall(index, d, k, params, nullptr, /*exact_scores=*/false);
}

TEST(AnnIndexStorageTest, SimdScoringSurvivesSaveAndLoad) {
  const DataSet d = MakeDataSet(21, 3000, 24, 30);
  TempDir dir;
  for (const char* spec : {"HNSW16,Flat", "HNSW16,SQfp16", "HNSW16,SQ8", "Flat"}) {
    SCOPED_TRACE(spec);
    AnnOptions options;
    options.train_min = 100;
    auto index = Build(spec, d, options);
    ASSERT_NE(index, nullptr);
    EXPECT_TRUE(index->trained());
    EXPECT_EQ(index->distance_implementation().rfind("simd-", 0), 0u)
        << index->distance_implementation();
    const std::string path = dir.path() + "/snap";
    ASSERT_TRUE(index->Save(path).ok());
    auto loaded = AnnIndex::Load(path, spec, d.dim, options);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->distance_implementation(), index->distance_implementation());
    for (size_t q = 0; q < d.num_queries; ++q) {
      const auto a = SearchOrDie(*index, d.query(q), 10, Ef(50));
      const auto b = SearchOrDie(**loaded, d.query(q), 10, Ef(50));
      ASSERT_EQ(a.size(), b.size());
      for (size_t r = 0; r < a.size(); ++r) EXPECT_EQ(a[r].label, b[r].label);
    }
  }
}

TEST(AnnIndexStorageTest, CompressedStorageKeepsRecall) {
  const DataSet d = MakeDataSet(22, 4000, 32, 40);
  AnnOptions options;
  options.train_min = 500;
  auto fp16 = Build("HNSW32,SQfp16", d, options);
  auto sq8 = Build("HNSW32,SQ8", d, options);
  ASSERT_NE(fp16, nullptr);
  ASSERT_NE(sq8, nullptr);
  AnnSearchParams exhaustive;
  exhaustive.exhaustive = true;
  // Exhaustive over fp16 codes is exact up to half precision.
  EXPECT_GE(LabelRecall(*fp16, d, 10, exhaustive), 0.98);
  EXPECT_GE(LabelRecall(*fp16, d, 10, Ef(200)), 0.95);
  EXPECT_GE(LabelRecall(*sq8, d, 10, Ef(200)), 0.85);
}

// Our graph construction gives a graph at least as searchable as FAISS's
// own: compare with an index FAISS built (PQ storage is built by FAISS).
TEST(AnnIndexStorageTest, SimdBuiltGraphIsSearchable) {
  const DataSet d = MakeDataSet(23, 6000, 32, 50);
  auto index = Build("HNSW32,Flat", d);
  ASSERT_NE(index, nullptr);
  EXPECT_GE(Recall(*index, d, 10, Ef(100)), 0.97);
  // Every vector finds itself first.
  for (size_t i = 0; i < d.labels.size(); i += 97) {
    const auto got = SearchOrDie(*index, d.vectors.data() + i * d.dim, 1, Ef(64));
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].label, d.labels[i]);
  }
}

TEST(AnnIndexTrainingTest, UntrainedIndexSearchesExactlyUntilEnoughVectors) {
  const DataSet d = MakeDataSet(24, 2000, 16, 20);
  AnnOptions options;
  options.train_min = 300;
  auto index = AnnIndex::Create("IVF16,Flat", d.dim, options);
  ASSERT_TRUE(index.ok());
  // 100 vectors: fewer than train_min and than 39 per list.
  ASSERT_TRUE((*index)->Add(d.labels.data(), d.vectors.data(), 100).ok());
  EXPECT_FALSE((*index)->trained());
  EXPECT_EQ((*index)->size(), 100u);
  DataSet first = d;
  first.labels.resize(100);
  first.vectors.resize(100 * d.dim);
  AnnSearchParams one;
  one.nprobe = 1;
  EXPECT_EQ(Recall(**index, first, 10, one), 1.0);  // exact while untrained
  // An untrained snapshot holds nothing: the owner re-adds from its store.
  TempDir dir;
  ASSERT_TRUE((*index)->Save(dir.path() + "/snap").ok());
  auto loaded = AnnIndex::Load(dir.path() + "/snap", "IVF16,Flat", d.dim, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->size(), 0u);
  // The rest: 39 x 16 = 624 reached, trained on a sample, all indexed.
  ASSERT_TRUE((*index)->Add(d.labels.data() + 100, d.vectors.data() + 100 * d.dim, 1900).ok());
  EXPECT_TRUE((*index)->trained());
  EXPECT_EQ((*index)->size(), 2000u);
  AnnSearchParams all;
  all.nprobe = 16;
  EXPECT_EQ(Recall(**index, d, 10, all), 1.0);
}

TEST(AnnIndexTrainingTest, TrainsOnASampleWhenManyArrive) {
  const DataSet d = MakeDataSet(25, 3000, 16, 20);
  AnnOptions options;
  options.train_min = 100;
  options.train_sample_max = 700;  // >= 39 x 16
  auto index = Build("IVF16,Flat", d, options);
  ASSERT_NE(index, nullptr);
  EXPECT_TRUE(index->trained());
  AnnSearchParams all;
  all.nprobe = 16;
  EXPECT_EQ(Recall(*index, d, 10, all), 1.0);
}

TEST(AnnIndexTrainingTest, IvfPqTrainsSearchesAndPersists) {
  const DataSet d = MakeDataSet(30, 4000, 32, 30);
  AnnOptions options;
  options.train_min = 1000;
  auto index = Build("IVF16,PQ8", d, options);
  ASSERT_NE(index, nullptr);
  EXPECT_TRUE(index->trained());
  AnnSearchParams all;
  all.nprobe = 16;
  // PQ codes approximate the vectors: a good share of the exact top 10.
  const double recall = LabelRecall(*index, d, 10, all);
  RecordProperty("recall_ivfpq", std::to_string(recall));
  EXPECT_GE(recall, 0.3);
  TempDir dir;
  ASSERT_TRUE(index->Save(dir.path() + "/snap").ok());
  auto loaded = AnnIndex::Load(dir.path() + "/snap", "IVF16,PQ8", d.dim, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t q = 0; q < d.num_queries; ++q) {
    const auto a = SearchOrDie(*index, d.query(q), 10, all);
    const auto b = SearchOrDie(**loaded, d.query(q), 10, all);
    ASSERT_EQ(a.size(), b.size());
    for (size_t r = 0; r < a.size(); ++r) EXPECT_EQ(a[r].label, b[r].label);
  }
  // SearchAmong scores through the direct map.
  std::vector<AnnNeighbor> among;
  ASSERT_TRUE(index->SearchAmong(d.query(0), 3, d.labels.data(), 50, &among).ok());
  EXPECT_EQ(among.size(), 3u);
}

TEST(AnnIndexFilterTest, SelectiveFiltersAreExactAndWideOnesUseTheGraph) {
  const DataSet d = MakeDataSet(26, 6000, 32, 40);
  AnnOptions options;
  options.exact_filter_max = 500;
  auto index = Build("HNSW32,Flat", d, options);
  ASSERT_NE(index, nullptr);
  std::mt19937 rng(9);
  for (double fraction : {0.001, 0.01, 0.05, 0.3}) {
    SCOPED_TRACE(fraction);
    LabelBitmap admitted;
    std::bernoulli_distribution pick(fraction);
    for (Label l : d.labels) {
      if (pick(rng)) admitted.Set(l);
    }
    double total = 0;
    for (size_t q = 0; q < d.num_queries; ++q) {
      const auto want = ExactTopK(d, d.query(q), 10, [&](Label l) { return admitted.Test(l); });
      std::vector<AnnNeighbor> got;
      ASSERT_TRUE(index->SearchFiltered(d.query(q), 10, Ef(40), admitted, &got).ok());
      ASSERT_EQ(got.size(), std::min<size_t>(10, admitted.count()));
      std::set<Label> want_labels;
      for (const auto& [s, l] : want) want_labels.insert(l);
      size_t hits = 0;
      for (const auto& n : got) {
        EXPECT_TRUE(admitted.Test(n.label));
        hits += want_labels.count(n.label);
      }
      total += want.empty() ? 1.0 : double(hits) / double(want.size());
    }
    const double recall = total / double(d.num_queries);
    if (admitted.count() <= options.exact_filter_max) {
      EXPECT_EQ(recall, 1.0);
    } else {
      EXPECT_GE(recall, 0.95);
    }
  }
}

TEST(AnnIndexFilterTest, SearchAmongSkipsUnknownLabels) {
  const DataSet d = MakeDataSet(27, 500, 8, 5);
  auto index = Build("HNSW16,Flat", d);
  ASSERT_NE(index, nullptr);
  const std::vector<Label> among = {1, d.labels[3], d.labels[10], d.labels[499], 999999};
  std::vector<AnnNeighbor> got;
  ASSERT_TRUE(index->SearchAmong(d.query(0), 10, among.data(), among.size(), &got).ok());
  ASSERT_EQ(got.size(), 3u);
  for (const auto& n : got) {
    EXPECT_TRUE(n.label == d.labels[3] || n.label == d.labels[10] || n.label == d.labels[499]);
  }
}

TEST(AnnIndexTuneTest, TunedBeamLandsNearTheTargetOnHeldOutQueries) {
  // Queries from the same distribution as the data, none of them stored.
  const DataSet d = MakeDataSet(28, 8000, 24, 300);
  auto index = Build("HNSW16,Flat", d);
  ASSERT_NE(index, nullptr);
  for (double target : {0.8, 0.9}) {
    auto tuned = index->Tune(target, 10, 400, 7);
    ASSERT_TRUE(tuned.ok()) << tuned.status();
    EXPECT_EQ(tuned->knob, "efSearch");
    EXPECT_GE(tuned->sample_recall, target);
    auto params = AnnSearchParams::Parse(tuned->ann_params);
    ASSERT_TRUE(params.ok());
    const double recall = LabelRecall(*index, d, 10, *params);
    RecordProperty("tuned_" + std::to_string(int(target * 100)),
                   tuned->ann_params + " recall " + std::to_string(recall));
    EXPECT_NEAR(recall, target, 0.04) << tuned->ann_params;
  }
}

TEST(AnnIndexTuneTest, RejectsBadTargetsAndHasNothingToTuneForFlat) {
  const DataSet d = MakeDataSet(29, 200, 8, 5);
  auto flat = Build("Flat", d);
  ASSERT_NE(flat, nullptr);
  EXPECT_EQ(flat->Tune(0.0, 10, 50).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(flat->Tune(1.5, 10, 50).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(flat->Tune(0.9, 0, 50).status().code(), absl::StatusCode::kInvalidArgument);
  auto tuned = flat->Tune(0.9, 10, 50);
  ASSERT_TRUE(tuned.ok());
  EXPECT_TRUE(tuned->knob.empty());
  EXPECT_EQ(tuned->sample_recall, 1.0);
  EXPECT_EQ(tuned->sample_queries, 0u);
  auto tiny = AnnIndex::Create("HNSW16,Flat", d.dim, AnnOptions());
  ASSERT_TRUE(tiny.ok());
  ASSERT_TRUE((*tiny)->Add(d.labels.data(), d.vectors.data(), 5).ok());
  EXPECT_EQ((*tiny)->Tune(0.9, 10, 50).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace attnsearch
