// quality_metrics: the ranking metrics on hand-computed cases and the BEIR
// qrels / queries and run-file readers, including every malformed-line error.
#include "quality_metrics.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "test_util.h"

namespace attnsearch::bench {
namespace {

// Judgements used by most metric tests: three relevant docs with grades 3, 2
// and 1, and one doc judged non-relevant (grade 0).
Judgements ThreeRelevant() { return {{"a", 3}, {"d", 2}, {"c", 1}, {"b", 0}}; }

// Ideal DCG of grades {3, 2, 1}: 3/log2(2) + 2/log2(3) + 1/log2(4)
//   = 3 + 1.2618595 + 0.5 = 4.7618595.
const double kIdcg321 = 3.0 + 2.0 / std::log2(3.0) + 1.0 / 2.0;

TEST(NdcgTest, GradedGainsOnHandComputedRanking) {
  // Ranks: 1 a (grade 3), 2 x (unjudged), 3 c (grade 1); d (grade 2) is not
  // retrieved. DCG = 3/log2(2) + 0 + 1/log2(4) = 3 + 0.5 = 3.5.
  // nDCG@10 = 3.5 / 4.7618595 = 0.7350070.
  const Ranking r = {"a", "x", "c"};
  EXPECT_DOUBLE_EQ(NdcgAtK(r, ThreeRelevant(), 10), 3.5 / kIdcg321);
  EXPECT_NEAR(NdcgAtK(r, ThreeRelevant(), 10), 0.7350070, 1e-7);
}

TEST(NdcgTest, CutOffAppliesToBothDcgAndIdealDcg) {
  const Ranking r = {"a", "x", "c"};
  // k = 2: c (rank 3) is cut. DCG@2 = 3; IDCG@2 = 3 + 2/log2(3) = 4.2618595.
  // nDCG@2 = 3 / 4.2618595 = 0.7039181.
  EXPECT_DOUBLE_EQ(NdcgAtK(r, ThreeRelevant(), 2), 3.0 / (3.0 + 2.0 / std::log2(3.0)));
  EXPECT_NEAR(NdcgAtK(r, ThreeRelevant(), 2), 0.7039181, 1e-7);
  // k = 1: DCG@1 = 3 = IDCG@1.
  EXPECT_DOUBLE_EQ(NdcgAtK(r, ThreeRelevant(), 1), 1.0);
  // k <= 0: empty top k.
  EXPECT_EQ(NdcgAtK(r, ThreeRelevant(), 0), 0.0);
  EXPECT_EQ(NdcgAtK(r, ThreeRelevant(), -1), 0.0);
}

TEST(NdcgTest, PerfectEmptyAndUnjudged) {
  // Grades in ideal order; trailing non-relevant docs cost nothing.
  EXPECT_DOUBLE_EQ(NdcgAtK({"a", "d", "c"}, ThreeRelevant(), 10), 1.0);
  EXPECT_DOUBLE_EQ(NdcgAtK({"a", "d", "c", "b", "x"}, ThreeRelevant(), 10), 1.0);
  // Reversed (grades 1, 2, 3): DCG = 1/log2(2) + 2/log2(3) + 3/log2(4).
  EXPECT_DOUBLE_EQ(NdcgAtK({"c", "d", "a"}, ThreeRelevant(), 10),
                   (1.0 + 2.0 / std::log2(3.0) + 1.5) / kIdcg321);
  EXPECT_EQ(NdcgAtK({}, ThreeRelevant(), 10), 0.0);
  EXPECT_EQ(NdcgAtK({"x", "b"}, ThreeRelevant(), 10), 0.0);  // b is judged 0
  // No relevant judgement: 0, whatever the ranking.
  EXPECT_EQ(NdcgAtK({"b"}, Judgements{{"b", 0}}, 10), 0.0);
  EXPECT_EQ(NdcgAtK({"b"}, Judgements{}, 10), 0.0);
  // Negative grades are non-relevant: IDCG over {2} only, DCG = 2/log2(3).
  EXPECT_DOUBLE_EQ(NdcgAtK({"n", "p"}, Judgements{{"n", -1}, {"p", 2}}, 10), 1.0 / std::log2(3.0));
}

TEST(NdcgTest, RepeatedIdCountsOnceAndKeepsItsSlot) {
  // 1 a (3), 2 a (repeat: 0), 3 c (1): DCG = 3 + 0 + 1/2 = 3.5, as with an
  // unjudged doc at rank 2.
  EXPECT_DOUBLE_EQ(NdcgAtK({"a", "a", "c"}, ThreeRelevant(), 10), 3.5 / kIdcg321);
  // Repeating the best doc cannot push nDCG above 1.
  EXPECT_DOUBLE_EQ(NdcgAtK({"a", "d", "c", "a", "a"}, ThreeRelevant(), 10), 1.0);
  // Without the rule DCG would be 3 + 3/log2(3) + 3/2 = 6.39 > IDCG; with it
  // DCG = 3 + 0 + 0 = 3, nDCG = 3 / 4.7618595.
  EXPECT_DOUBLE_EQ(NdcgAtK({"a", "a", "a"}, ThreeRelevant(), 10), 3.0 / kIdcg321);
}

TEST(RecallTest, HandComputed) {
  // Relevant: a, d, c. Retrieved a and c: 2/3.
  EXPECT_DOUBLE_EQ(RecallAtK({"a", "x", "c"}, ThreeRelevant(), 10), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(RecallAtK({"a", "x", "c"}, ThreeRelevant(), 2), 1.0 / 3.0);  // c cut
  EXPECT_DOUBLE_EQ(RecallAtK({"c", "a", "d"}, ThreeRelevant(), 3), 1.0);
  EXPECT_EQ(RecallAtK({"b", "x"}, ThreeRelevant(), 10), 0.0);  // b is judged 0
  EXPECT_EQ(RecallAtK({}, ThreeRelevant(), 10), 0.0);
  EXPECT_EQ(RecallAtK({"a"}, Judgements{{"a", 0}}, 10), 0.0);  // nothing relevant
  // A repeated relevant doc counts once: 1/3, not 3/3.
  EXPECT_DOUBLE_EQ(RecallAtK({"a", "a", "a"}, ThreeRelevant(), 10), 1.0 / 3.0);
}

TEST(RecallTest, CutOffAtHundred) {
  // The only relevant doc at rank 100 is inside Recall@100, at rank 101 not.
  Ranking r;
  for (int i = 0; i < 150; ++i) r.push_back("n" + std::to_string(i));
  const Judgements at100 = {{"n99", 1}};
  const Judgements at101 = {{"n100", 1}};
  EXPECT_EQ(RecallAtK(r, at100, 100), 1.0);
  EXPECT_EQ(RecallAtK(r, at101, 100), 0.0);
  EXPECT_EQ(RecallAtK(r, at101, 101), 1.0);
}

TEST(MrrTest, HandComputed) {
  // First relevant (c) at rank 3: 1/3.
  EXPECT_DOUBLE_EQ(MrrAtK({"x", "y", "c", "a"}, ThreeRelevant(), 10), 1.0 / 3.0);
  EXPECT_EQ(MrrAtK({"x", "y", "c", "a"}, ThreeRelevant(), 2), 0.0);  // cut at 2
  EXPECT_DOUBLE_EQ(MrrAtK({"x", "y", "c", "a"}, ThreeRelevant(), 3), 1.0 / 3.0);
  EXPECT_EQ(MrrAtK({"a"}, ThreeRelevant(), 10), 1.0);
  // b is judged 0, so the first relevant is a at rank 2: 1/2.
  EXPECT_EQ(MrrAtK({"b", "a"}, ThreeRelevant(), 10), 0.5);
  EXPECT_EQ(MrrAtK({}, ThreeRelevant(), 10), 0.0);
  EXPECT_EQ(MrrAtK({"x"}, ThreeRelevant(), 10), 0.0);
}

TEST(OverlapTest, HandComputed) {
  const Ranking a = {"1", "2", "3", "4"};
  const Ranking b = {"2", "1", "5", "6"};
  EXPECT_EQ(OverlapAtK(a, b, 2), 1.0);        // {1,2} vs {2,1}: 2/2
  EXPECT_EQ(OverlapAtK(a, b, 3), 2.0 / 3.0);  // {1,2,3} vs {2,1,5}: 2/3
  EXPECT_EQ(OverlapAtK(a, b, 10), 0.5);       // 2 / min(10, 4)
  EXPECT_EQ(OverlapAtK(a, a, 10), 1.0);
  EXPECT_EQ(OverlapAtK(b, a, 3), OverlapAtK(a, b, 3));
  // Different lengths: 1 / min(10, max(3, 1)) = 1/3.
  const Ranking c = {"1", "2", "3"};
  const Ranking d = {"1"};
  EXPECT_EQ(OverlapAtK(c, d, 10), 1.0 / 3.0);
  EXPECT_EQ(OverlapAtK(d, c, 10), 1.0 / 3.0);
  EXPECT_EQ(OverlapAtK(c, d, 1), 1.0);  // {1} vs {1}
  // Empty rankings.
  EXPECT_EQ(OverlapAtK({}, {}, 10), 1.0);
  EXPECT_EQ(OverlapAtK(c, {}, 10), 0.0);
  EXPECT_EQ(OverlapAtK({}, c, 10), 0.0);
  // Repeats count once: {1,2} vs {1,2}.
  EXPECT_EQ(OverlapAtK({"1", "1", "2"}, {"1", "2"}, 10), 1.0);
  EXPECT_EQ(OverlapAtK({"1", "1", "1"}, {"1", "1", "1"}, 10), 1.0);
}

TEST(EvaluateTest, AveragesOverQueriesWithRelevantDocs) {
  Qrels qrels;
  qrels.by_query["q1"] = ThreeRelevant();
  qrels.by_query["q2"] = {{"x", 1}, {"z", 0}};
  qrels.by_query["q3"] = {{"y", 0}};  // no relevant doc: not evaluated
  qrels.by_query["q4"] = {{"w", 2}};  // missing from the runs: empty ranking
  Runs runs;
  runs["q1"] = {"a", "x", "c"};  // nDCG 3.5/4.7618595, recall 2/3, MRR 1
  runs["q2"] = {"p", "x"};       // nDCG (1/log2(3))/1, recall 1, MRR 1/2
  runs["q3"] = {"y"};            // ignored
  runs["q5"] = {"a"};            // not in qrels: ignored
  const QualitySummary s = Evaluate(runs, qrels);
  EXPECT_EQ(s.queries, 3u);
  // (0.7350070 + 0.6309298 + 0) / 3 = 0.4553122.
  EXPECT_DOUBLE_EQ(s.ndcg10, (3.5 / kIdcg321 + 1.0 / std::log2(3.0)) / 3.0);
  EXPECT_NEAR(s.ndcg10, 0.4553122, 1e-7);
  EXPECT_DOUBLE_EQ(s.recall100, (2.0 / 3.0 + 1.0 + 0.0) / 3.0);  // 5/9
  EXPECT_DOUBLE_EQ(s.mrr10, (1.0 + 0.5 + 0.0) / 3.0);            // 1/2
}

TEST(EvaluateTest, NothingToEvaluate) {
  Qrels qrels;
  qrels.by_query["q"] = {{"y", 0}};
  const QualitySummary s = Evaluate({{"q", {"y"}}}, qrels);
  EXPECT_EQ(s.queries, 0u);
  EXPECT_EQ(s.ndcg10, 0.0);
  EXPECT_EQ(s.recall100, 0.0);
  EXPECT_EQ(s.mrr10, 0.0);
}

// ---- Readers ----

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// The status is INVALID_ARGUMENT and its message starts with "path:line: ".
::testing::AssertionResult IsLineError(const absl::Status& status, const std::string& path,
                                       int line) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "not INVALID_ARGUMENT: " << status;
  }
  const std::string prefix = path + ":" + std::to_string(line) + ": ";
  if (std::string(status.message()).rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "message does not start with " << prefix << ": " << status;
  }
  return ::testing::AssertionSuccess();
}

TEST(ReadQrelsTest, ReadsGradesIncludingZero) {
  testing::TempDir dir;
  const std::string path = dir.Sub("qrels.tsv");
  WriteText(path,
            "query-id\tcorpus-id\tscore\n"
            "1\t184\t3\n"
            "1\t29\t0\r\n"  // CRLF line ending
            "\n"            // empty lines are skipped
            "2\t7\t1\n"
            "1\t30\t-1");  // no final newline
  const absl::StatusOr<Qrels> qrels = ReadQrels(path);
  ASSERT_TRUE(qrels.ok()) << qrels.status();
  ASSERT_EQ(qrels->by_query.size(), 2u);
  const Judgements& q1 = qrels->by_query.at("1");
  ASSERT_EQ(q1.size(), 3u);
  EXPECT_EQ(q1.at("184"), 3);
  EXPECT_EQ(q1.at("29"), 0);
  EXPECT_EQ(q1.at("30"), -1);
  EXPECT_EQ(qrels->by_query.at("2").at("7"), 1);
}

TEST(ReadQrelsTest, AnyHeaderTextAndLastRowWins) {
  testing::TempDir dir;
  const std::string path = dir.Sub("qrels.tsv");
  WriteText(path, "query_id\tdoc_id\trelevance\nq\td\t1\nq\td\t2\n");
  const absl::StatusOr<Qrels> qrels = ReadQrels(path);
  ASSERT_TRUE(qrels.ok()) << qrels.status();
  EXPECT_EQ(qrels->by_query.at("q").at("d"), 2);
  // A header-only file has no judgements.
  WriteText(path, "whatever\n");
  const absl::StatusOr<Qrels> empty = ReadQrels(path);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->by_query.empty());
}

TEST(ReadQrelsTest, MalformedLinesNameFileAndLine) {
  testing::TempDir dir;
  const std::string path = dir.Sub("qrels.tsv");
  const std::string header = "query-id\tcorpus-id\tscore\n1\td1\t1\n";
  // Each bad line is line 3, after the header and one good row.
  for (const std::string bad : {
           "1\td2",               // 2 columns
           "1\td2\t1\textra",     // 4 columns
           "1 d2 1",              // spaces, not tabs: 1 column
           "1\td2\tx",            // not a number
           "1\td2\t1.5",          // not an integer
           "1\td2\t",             // empty grade
           "1\td2\t99999999999",  // out of int range
           "\td2\t1",             // empty query id
           "1\t\t1",              // empty doc id
       }) {
    WriteText(path, header + bad + "\n2\td3\t1\n");
    const absl::StatusOr<Qrels> qrels = ReadQrels(path);
    EXPECT_TRUE(IsLineError(qrels.status(), path, 3)) << "line: " << bad;
  }
  EXPECT_EQ(ReadQrels(dir.Sub("missing.tsv")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ReadQueriesTest, StringAndNumericIdsInFileOrder) {
  testing::TempDir dir;
  const std::string path = dir.Sub("queries.jsonl");
  WriteText(path,
            "{\"_id\": \"q7\", \"text\": \"first query\", \"metadata\": {}}\n"
            "\n"
            "{\"id\": 3, \"text\": \"second \\u00e9\"}\n"
            "{\"_id\": \"x\", \"id\": \"ignored\", \"text\": \"\"}\n");
  const absl::StatusOr<std::vector<BeirQuery>> queries = ReadQueries(path);
  ASSERT_TRUE(queries.ok()) << queries.status();
  ASSERT_EQ(queries->size(), 3u);
  EXPECT_EQ((*queries)[0].id, "q7");
  EXPECT_EQ((*queries)[0].text, "first query");
  EXPECT_EQ((*queries)[1].id, "3");
  EXPECT_EQ((*queries)[1].text, "second \xc3\xa9");
  EXPECT_EQ((*queries)[2].id, "x");  // "_id" wins over "id"
  EXPECT_EQ((*queries)[2].text, "");
}

TEST(ReadQueriesTest, MalformedLinesNameFileAndLine) {
  testing::TempDir dir;
  const std::string path = dir.Sub("queries.jsonl");
  const std::string good = "{\"_id\": \"1\", \"text\": \"ok\"}\n";
  // Each bad line is line 2.
  for (const std::string bad : {
           "{\"_id\": \"2\", \"text\": ",          // truncated JSON
           "not json",                             // not JSON
           "{\"_id\": \"2\", \"text\": \"a\"} x",  // trailing garbage
           "[\"2\", \"a\"]",                       // not an object
           "\"2\"",                                // not an object
           "{\"text\": \"a\"}",                    // missing id
           "{\"_id\": null, \"text\": \"a\"}",     // mistyped id
           "{\"_id\": 2.5, \"text\": \"a\"}",      // non-integer id
           "{\"id\": true, \"text\": \"a\"}",      // mistyped id
           "{\"_id\": \"\", \"text\": \"a\"}",     // empty id
           "{\"_id\": \"2\"}",                     // missing text
           "{\"_id\": \"2\", \"title\": \"a\"}",   // missing text
           "{\"_id\": \"2\", \"text\": 5}",        // mistyped text
           "{\"_id\": \"1\", \"text\": \"a\"}",    // duplicate id
       }) {
    WriteText(path, good + bad + "\n" + "{\"_id\": \"3\", \"text\": \"c\"}\n");
    const absl::StatusOr<std::vector<BeirQuery>> queries = ReadQueries(path);
    EXPECT_TRUE(IsLineError(queries.status(), path, 2)) << "line: " << bad;
  }
  EXPECT_EQ(ReadQueries(dir.Sub("missing.jsonl")).status().code(), absl::StatusCode::kNotFound);
}

TEST(ReadRunTest, SortsEachQueryByRank) {
  testing::TempDir dir;
  const std::string path = dir.Sub("run.tsv");
  WriteText(path,
            "q1\tb\t2\t9.5\n"
            "q2\tz\t1\t1e3\n"
            "q1\tc\t3\t-1\n"
            "\n"
            "q1\ta\t1\t10\n");
  const absl::StatusOr<Runs> runs = ReadRun(path);
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ(runs->at("q1"), (Ranking{"a", "b", "c"}));
  EXPECT_EQ(runs->at("q2"), (Ranking{"z"}));
}

TEST(ReadRunTest, MalformedLinesNameFileAndLine) {
  testing::TempDir dir;
  const std::string path = dir.Sub("run.tsv");
  const std::string good = "q1\ta\t1\t2.5\n";
  // Each bad line is line 2.
  for (const std::string bad : {
           "q1\tb\t2",        // 3 columns
           "q1\tb\t2\t1\tx",  // 5 columns
           "q1\tb\tx\t1",     // rank not a number
           "q1\tb\t1.5\t1",   // rank not an integer
           "q1\tb\t0\t1",     // rank < 1
           "q1\tb\t-3\t1",    // rank < 1
           "q1\tb\t2\tabc",   // score not a number
           "q1\tb\t2\t",      // empty score
           "\tb\t2\t1",       // empty query id
           "q1\t\t2\t1",      // empty doc id
       }) {
    WriteText(path, good + bad + "\n");
    const absl::StatusOr<Runs> runs = ReadRun(path);
    EXPECT_TRUE(IsLineError(runs.status(), path, 2)) << "line: " << bad;
  }
  EXPECT_EQ(ReadRun(dir.Sub("missing.tsv")).status().code(), absl::StatusCode::kNotFound);
}

TEST(WriteRunTest, WritesSortedQueriesAndRoundTrips) {
  testing::TempDir dir;
  const std::string path = dir.Sub("run.tsv");
  const Runs runs = {{"q2", {"z"}}, {"q1", {"a", "b"}}, {"q3", {}}};
  ASSERT_TRUE(WriteRun(path, runs, {{"q1", {2.5, 1.25}}}).ok());
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // q1 uses its scores; q2 has none, so -rank.
  EXPECT_EQ(text, "q1\ta\t1\t2.5\nq1\tb\t2\t1.25\nq2\tz\t1\t-1\n");
  const absl::StatusOr<Runs> back = ReadRun(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size(), 2u);  // q3 had no entries
  EXPECT_EQ(back->at("q1"), runs.at("q1"));
  EXPECT_EQ(back->at("q2"), runs.at("q2"));
}

TEST(WriteRunTest, RejectsIdsWithTabsOrNewlines) {
  testing::TempDir dir;
  EXPECT_EQ(WriteRun(dir.Sub("a.tsv"), {{"q\t1", {"a"}}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteRun(dir.Sub("b.tsv"), {{"q", {"a\nb"}}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteRun(dir.Sub("no/such/dir/c.tsv"), {{"q", {"a"}}}).code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace attnsearch::bench
