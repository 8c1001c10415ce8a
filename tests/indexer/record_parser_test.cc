// Tests of the indexer's record parser and input sources: every malformed
// case gives a clear reason; gzip input reads like plain input; fvecs.
#include "indexer/record_parser.h"

#include <zlib.h>

#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "indexer/input_source.h"
#include "test_util.h"

namespace attnsearch::indexer {
namespace {

using ::attnsearch::testing::TempDir;

ParseOptions Dim(uint32_t dim) {
  ParseOptions o;
  o.dim = dim;
  return o;
}

// The reason ParseJsonLine gives for `line` (dim 3), or "OK".
std::string Reason(const std::string& line, uint32_t dim = 3) {
  Document d;
  absl::Status s = ParseJsonLine(line, Dim(dim), &d);
  if (s.ok()) return "OK";
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  return std::string(s.message());
}

TEST(RecordParserTest, ParsesEveryField) {
  Document d;
  ASSERT_TRUE(ParseJsonLine(
                  R"({"id":"a","title":"T","text":"body","metadata":{"lang":"en","n":3,)"
                  R"("ok":true},"pooled":[1,0,0.5],"tokens":[[1,2,3],[4,5,6]],)"
                  R"("token_texts":["x","y"],"extra":{"ignored":1}})",
                  Dim(3), &d)
                  .ok());
  EXPECT_EQ(d.id, "a");
  EXPECT_EQ(d.text, "T\n\nbody");
  EXPECT_EQ(d.metadata.at("lang"), "en");
  EXPECT_EQ(d.metadata.at("n"), "3");
  EXPECT_EQ(d.metadata.at("ok"), "true");
  EXPECT_EQ(d.pooled, (std::vector<float>{1, 0, 0.5f}));
  EXPECT_EQ(d.num_tokens, 2u);
  EXPECT_EQ(d.tokens, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(d.token_texts, (std::vector<std::string>{"x", "y"}));
}

TEST(RecordParserTest, TokensAsMatrixObject) {
  Document d;
  ASSERT_TRUE(ParseJsonLine(R"({"id":"a","tokens":{"rows":2,"cols":3,"values":[1,2,3,4,5,6]}})",
                            Dim(3), &d)
                  .ok());
  EXPECT_EQ(d.num_tokens, 2u);
  EXPECT_EQ(d.tokens, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(d.pooled.empty());
}

TEST(RecordParserTest, TitleOrTextAlone) {
  Document d;
  ASSERT_TRUE(ParseJsonLine(R"({"id":"a","title":"only","pooled":[1,2,3]})", Dim(3), &d).ok());
  EXPECT_EQ(d.text, "only");
}

TEST(RecordParserTest, BadJson) {
  EXPECT_NE(Reason(R"({"id":"a","pooled":[1,2,3])").find("bad JSON"), std::string::npos);
  EXPECT_NE(Reason("not json").find("bad JSON"), std::string::npos);
  EXPECT_NE(Reason(R"({"id":"a",})").find("bad JSON"), std::string::npos);
  EXPECT_NE(Reason(R"({"id":"a","pooled":[1,NaN,3]})").find("bad JSON"), std::string::npos);
  EXPECT_NE(Reason(R"([1,2,3])").find("expected a JSON object"), std::string::npos);
}

TEST(RecordParserTest, MissingOrBadId) {
  EXPECT_EQ(Reason(R"({"pooled":[1,2,3]})"), "id: missing");
  EXPECT_EQ(Reason(R"({"id":null,"pooled":[1,2,3]})"), "id: missing");
  EXPECT_EQ(Reason(R"({"id":7,"pooled":[1,2,3]})"), "id: expected a string, got number");
  EXPECT_EQ(Reason(R"({"id":["a"],"pooled":[1,2,3]})"), "id: expected a string, got array");
  EXPECT_EQ(Reason(R"({"id":"","pooled":[1,2,3]})"), "id: must not be empty");
  EXPECT_NE(Reason(R"({"id":")" + std::string(600, 'x') + R"(","pooled":[1,2,3]})")
                .find("longer than 512 bytes"),
            std::string::npos);
  // BEIR lines use _id.
  Document d;
  ParseOptions beir = Dim(3);
  beir.beir = true;
  EXPECT_TRUE(ParseJsonLine(R"({"_id":"b","pooled":[1,2,3]})", beir, &d).ok());
  EXPECT_EQ(d.id, "b");
  EXPECT_FALSE(ParseJsonLine(R"({"id":"b","pooled":[1,2,3]})", beir, &d).ok());
}

TEST(RecordParserTest, TextOnlyDocumentsNeedTheEncoder) {
  EXPECT_EQ(Reason(R"({"id":"a","text":"hello"})"), kNoVectorsReason);
  EXPECT_EQ(Reason(R"({"id":"a","pooled":null})"), kNoVectorsReason);
}

TEST(RecordParserTest, WrongDimension) {
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,2]})"), "pooled: expected 3 values, got 2");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,2,3,4]})"), "pooled: expected 3 values, got 4");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3],[1,2]]})"),
            "tokens[1]: expected 3 values, got 2");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":1,"cols":4,"values":[1,2,3,4]}})"),
            "tokens.cols: expected 3 (the collection's dim), got 4");
}

TEST(RecordParserTest, NonFiniteNumbers) {
  // JSON has no NaN literal: a string where a number belongs, or a number
  // too large for a double (1e999 would be infinite).
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,"NaN",3]})"),
            "pooled[1]: expected a number, got string \"NaN\"");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,"Infinity",3]})"),
            "pooled[1]: expected a number, got string \"Infinity\"");
  EXPECT_NE(Reason(R"({"id":"a","pooled":[1,1e999,3]})").find("not a finite number"),
            std::string::npos);
  EXPECT_NE(Reason(R"({"id":"a","pooled":[1,-1e999,3]})").find("not a finite number"),
            std::string::npos);
  // Finite as a double but not as a float.
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,1e39,3]})"),
            "pooled[1]: 1e+39 is out of the float range");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3],[4,"nan",6]]})"),
            "tokens[1][1]: expected a number, got string \"nan\"");
  // A Document built in memory (fvecs) is checked too.
  Document d;
  d.id = "x";
  d.pooled = {1.f, std::nanf(""), 0.f};
  EXPECT_EQ(ValidateDocument(d, Dim(3)).message(), "pooled[1]: not a finite number");
  d.pooled = {1.f, INFINITY, 0.f};
  EXPECT_EQ(ValidateDocument(d, Dim(3)).message(), "pooled[1]: not a finite number");
}

TEST(RecordParserTest, ZeroVectors) {
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[0,0,0]})"), "pooled: is the zero vector");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,0,0],[0,0,0]]})"),
            "tokens[1]: is the zero vector");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,0,0],[-1,0,0]]})"),
            "tokens: the mean of the token vectors is zero; give pooled");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,0,0],"tokens":[[1,0,0],[-1,0,0]]})"), "OK");
}

TEST(RecordParserTest, WrongTypesAndTokenShapes) {
  EXPECT_EQ(Reason(R"({"id":"a","pooled":"1,2,3"})"),
            "pooled: expected an array of numbers, got string \"1,2,3\"");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,true,3]})"),
            "pooled[1]: expected a number, got boolean");
  EXPECT_EQ(Reason(R"({"id":"a","text":5,"pooled":[1,2,3]})"),
            "text: expected a string, got number");
  EXPECT_EQ(Reason(R"({"id":"a","title":{},"pooled":[1,2,3]})"),
            "title: expected a string, got object");
  EXPECT_EQ(Reason(R"({"id":"a","metadata":["x"],"pooled":[1,2,3]})"),
            "metadata: expected an object of strings, got array");
  EXPECT_EQ(Reason(R"({"id":"a","metadata":{"k":{"x":1}},"pooled":[1,2,3]})"),
            "metadata.k: expected a string, number or boolean, got object");
  EXPECT_EQ(Reason(R"({"id":"a","metadata":{"k":null},"pooled":[1,2,3]})"),
            "metadata.k: expected a string, number or boolean, got null");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":"x"})"),
            "tokens: expected an array of rows or {\"rows\", \"cols\", \"values\"}, got string "
            "\"x\"");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[]})"), "tokens: has no rows");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[1,2,3]})"),
            "tokens[0]: expected an array of 3 numbers, got number");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":2,"cols":3,"values":[1,2,3]}})"),
            "tokens.values: expected rows x cols = 6 values, got 3");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":1,"values":[1,2,3]}})"),
            "tokens.cols: missing");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":-1,"cols":3,"values":[]}})"),
            "tokens.rows: expected a non-negative integer, got number");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":0,"cols":3,"values":[]}})"),
            "tokens.rows: must be at least 1");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3]],"token_texts":["a","b"]})"),
            "token_texts: expected 1 entries (one per token row), got 2");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3]],"token_texts":[1]})"),
            "token_texts[0]: expected a string, got number");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,2,3],"token_texts":["a"]})"),
            "token_texts: expected 0 entries (one per token row), got 1");
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

void WriteGzip(const std::string& path, const std::string& data) {
  gzFile gz = gzopen(path.c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, data.data(), unsigned(data.size())), int(data.size()));
  gzclose(gz);
}

struct Read {
  std::vector<uint64_t> positions;
  std::vector<std::string> outcomes;  // the id, or the reason
  std::vector<Document> docs;
};

Read ReadAll(const std::string& input, InputFormat format, uint32_t dim) {
  Read r;
  auto source = OpenSource(input, format, Dim(dim));
  EXPECT_TRUE(source.ok()) << source.status();
  if (!source.ok()) return r;
  InputRecord rec;
  while ((*source)->Next(&rec)) {
    r.positions.push_back(rec.position);
    r.outcomes.push_back(rec.status.ok() ? rec.doc.id : std::string(rec.status.message()));
    r.docs.push_back(rec.doc);
  }
  EXPECT_TRUE((*source)->status().ok()) << (*source)->status();
  return r;
}

TEST(InputSourceTest, JsonLinesWithLineNumbersAndGzipEqualsPlain) {
  TempDir dir;
  const std::string data =
      "{\"id\":\"a\",\"pooled\":[1,2,3]}\n"
      "\n"  // blank lines are skipped but counted
      "{\"id\":\"b\",\"pooled\":[1,2]}\r\n"
      "{\"id\":\"c\",\"tokens\":[[1,2,3]],\"text\":\"t\"}";  // no final newline
  WriteFile(dir.Sub("in.jsonl"), data);
  WriteGzip(dir.Sub("in.jsonl.gz"), data);
  const Read plain = ReadAll(dir.Sub("in.jsonl"), InputFormat::kAuto, 3);
  EXPECT_EQ(plain.positions, (std::vector<uint64_t>{1, 3, 4}));
  EXPECT_EQ(plain.outcomes,
            (std::vector<std::string>{"a", "pooled: expected 3 values, got 2", "c"}));
  const Read gz = ReadAll(dir.Sub("in.jsonl.gz"), InputFormat::kAuto, 3);
  EXPECT_EQ(gz.positions, plain.positions);
  EXPECT_EQ(gz.outcomes, plain.outcomes);
  ASSERT_EQ(gz.docs.size(), plain.docs.size());
  for (size_t i = 0; i < gz.docs.size(); ++i) {
    EXPECT_EQ(gz.docs[i].pooled, plain.docs[i].pooled);
    EXPECT_EQ(gz.docs[i].tokens, plain.docs[i].tokens);
    EXPECT_EQ(gz.docs[i].text, plain.docs[i].text);
  }
  auto source = OpenSource(dir.Sub("in.jsonl"), InputFormat::kJsonLines, Dim(3));
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->Location(3), dir.Sub("in.jsonl") + ":3");
}

TEST(InputSourceTest, BeirFolder) {
  TempDir dir;
  std::filesystem::create_directory(dir.Sub("scifact"));
  WriteFile(dir.Sub("scifact/corpus.jsonl"),
            "{\"_id\":\"1\",\"title\":\"T\",\"text\":\"X\",\"metadata\":{}}\n"
            "{\"_id\":\"2\",\"title\":\"T\",\"text\":\"X\",\"pooled\":[0,1,0]}\n");
  EXPECT_EQ(DetectFormat(dir.Sub("scifact")), InputFormat::kBeir);
  const Read r = ReadAll(dir.Sub("scifact"), InputFormat::kAuto, 3);
  EXPECT_EQ(r.outcomes, (std::vector<std::string>{kNoVectorsReason, "2"}));
  EXPECT_EQ(r.docs[1].text, "T\n\nX");
  EXPECT_FALSE(OpenSource(dir.path(), InputFormat::kBeir, Dim(3)).ok());  // no corpus
}

// Writes rows x dim values as fvecs; each record's dimension is `dims[i]`
// when given.
std::string Fvecs(const std::vector<std::vector<float>>& rows) {
  std::string out;
  for (const auto& r : rows) {
    const int32_t d = int32_t(r.size());
    out.append(reinterpret_cast<const char*>(&d), 4);
    out.append(reinterpret_cast<const char*>(r.data()), r.size() * 4);
  }
  return out;
}

TEST(InputSourceTest, FvecsRecordsAndBadRecords) {
  TempDir dir;
  const std::string data =
      Fvecs({{1, 2, 3}, {0, 0, 0}, {1, std::nanf(""), 3}, {1, 2}, {4, 5, 6}});
  WriteFile(dir.Sub("v.fvecs"), data);
  WriteGzip(dir.Sub("v.fvecs.gz"), data);
  EXPECT_EQ(*PeekFvecsDim(dir.Sub("v.fvecs.gz")), 3u);
  for (const char* name : {"v.fvecs", "v.fvecs.gz"}) {
    const Read r = ReadAll(dir.Sub(name), InputFormat::kAuto, 3);
    EXPECT_EQ(r.positions, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(r.outcomes, (std::vector<std::string>{"0", "pooled: is the zero vector",
                                                    "pooled[1]: not a finite number",
                                                    "pooled: expected 3 values, got 2", "4"}));
    EXPECT_EQ(r.docs[4].pooled, (std::vector<float>{4, 5, 6}));
  }
  auto source = OpenSource(dir.Sub("v.fvecs"), InputFormat::kAuto, Dim(3));
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->Location(5), dir.Sub("v.fvecs") + ":record 4");
}

TEST(InputSourceTest, TruncatedOrCorruptFvecsStopsReading) {
  TempDir dir;
  std::string data = Fvecs({{1, 2, 3}, {4, 5, 6}});
  WriteFile(dir.Sub("t.fvecs"), data.substr(0, data.size() - 2));
  auto source = OpenSource(dir.Sub("t.fvecs"), InputFormat::kFvecs, Dim(3));
  ASSERT_TRUE(source.ok());
  InputRecord rec;
  EXPECT_TRUE((*source)->Next(&rec));
  EXPECT_FALSE((*source)->Next(&rec));
  EXPECT_TRUE(absl::IsDataLoss((*source)->status())) << (*source)->status();

  const int32_t bad = -5;
  WriteFile(dir.Sub("c.fvecs"), std::string(reinterpret_cast<const char*>(&bad), 4) + data);
  source = OpenSource(dir.Sub("c.fvecs"), InputFormat::kFvecs, Dim(3));
  ASSERT_TRUE(source.ok());
  EXPECT_FALSE((*source)->Next(&rec));
  EXPECT_NE((*source)->status().message().find("bad record dimension -5"), std::string::npos);
}

}  // namespace
}  // namespace attnsearch::indexer
