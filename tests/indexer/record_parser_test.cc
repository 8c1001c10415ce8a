// Tests of the indexer's record parser and input sources: every malformed
// case gives a clear reason; gzip input reads like plain input; fvecs.
#include "indexer/record_parser.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataset/input_file.h"
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
// `v`'s rows (each `dim` long) scaled to unit length: the stored form.
std::vector<float> Unit(std::vector<float> v, size_t dim) {
  for (size_t r = 0; r < v.size(); r += dim) {
    double sq = 0;
    for (size_t j = r; j < r + dim; ++j) sq += double(v[j]) * v[j];
    for (size_t j = r; j < r + dim; ++j) v[j] = float(v[j] / std::sqrt(sq));
  }
  return v;
}

// Expects `got` to equal `want` within float rounding.
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "at " << i;
}

std::string Reason(const std::string& line, uint32_t dim = 3) {
  Document d;
  absl::Status s = ParseJsonLine(line, Dim(dim), &d);
  if (s.ok()) return "OK";
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  return std::string(s.message());
}

TEST(RecordParserTest, ParsesEveryField) {
  Document d;
  ASSERT_TRUE(ParseJsonLine(R"({"id":"a","title":"T","text":"body","metadata":{"lang":"en","n":3,)"
                            R"("ok":true},"pooled":[1,0,0.5],"tokens":[[1,2,3],[4,5,6]],)"
                            R"("token_texts":["x","y"],"extra":{"ignored":1}})",
                            Dim(3), &d)
                  .ok());
  EXPECT_EQ(d.id, "a");
  EXPECT_EQ(d.text, "T\n\nbody");
  EXPECT_EQ(d.metadata.at("lang"), "en");
  EXPECT_EQ(d.metadata.at("n"), "3");
  EXPECT_EQ(d.metadata.at("ok"), "true");
  // Vectors come out in their stored form: every row normalised.
  ExpectNear(d.pooled, Unit({1, 0, 0.5f}, 3));
  EXPECT_EQ(d.num_tokens, 2u);
  ExpectNear(d.tokens, Unit({1, 2, 3, 4, 5, 6}, 3));
  EXPECT_EQ(d.token_texts, (std::vector<std::string>{"x", "y"}));
}

TEST(RecordParserTest, TokensAsMatrixObject) {
  Document d;
  ASSERT_TRUE(
      ParseJsonLine(R"({"id":"a","tokens":{"rows":2,"cols":3,"values":[1,2,3,4,5,6]}})", Dim(3), &d)
          .ok());
  EXPECT_EQ(d.num_tokens, 2u);
  ExpectNear(d.tokens, Unit({1, 2, 3, 4, 5, 6}, 3));
  // The pooled vector is the normalised mean of the normalised rows.
  const std::vector<float> rows = Unit({1, 2, 3, 4, 5, 6}, 3);
  ExpectNear(d.pooled, Unit({rows[0] + rows[3], rows[1] + rows[4], rows[2] + rows[5]}, 3));
}

// ParseJsonLine's fast path (simdjson) against the full parser alone, on
// seeded records of every shape, valid and not: the same status and the
// same Document, bit for bit.
TEST(RecordParserTest, FastPathAgreesWithTheFullParser) {
  std::mt19937 rng(4242);
  auto pick = [&](std::initializer_list<const char*> xs) {
    return std::string(*(xs.begin() + rng() % xs.size()));
  };
  auto number = [&]() -> std::string {
    switch (rng() % 8) {
      case 0:
        return std::to_string(int(rng() % 2001) - 1000);
      case 1:
        return pick({"1e39", "-1e39", "3.4028235e38", "1e-45", "9007199254740993", "0.0", "-0.5"});
      case 2:
        return pick({"\"1\"", "true", "null", "[1]"});  // not a number
      default: {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.9g", std::ldexp(double(rng() % 100000) - 50000, -14));
        return buf;
      }
    }
  };
  auto row = [&](int n) {
    std::string r = "[";
    for (int i = 0; i < n; ++i) r += (i ? "," : "") + number();
    return r + "]";
  };
  int fast_shapes = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<std::string> fields;
    if (rng() % 20)
      fields.push_back("\"id\":" + pick({"\"a\"", "\"\\u00e9t\\u00e9\"", "\"\"", "7"}));
    if (rng() % 3 == 0)
      fields.push_back("\"title\":" + pick({"\"T\"", "\"\"", "null", "\"x\\ny\""}));
    if (rng() % 2)
      fields.push_back("\"text\":" + pick({"\"hello world\"", "\"!!!\"", "\"caf\\u00e9\""}));
    if (rng() % 3 == 0) {
      fields.push_back("\"metadata\":" + pick({"{\"k\":\"v\"}", "{\"n\":3}",
                                               "{\"k\":\"v\",\"k\":\"w\"}", "{}", "[]"}));
    }
    const int dim = 3;
    if (rng() % 2) fields.push_back("\"pooled\":" + row(rng() % 6 ? dim : int(rng() % 5)));
    const int rows = 1 + int(rng() % 4);
    switch (rng() % 4) {
      case 0: {
        std::string t = "\"tokens\":[";
        for (int r = 0; r < rows; ++r) t += (r ? "," : "") + row(rng() % 8 ? dim : 2);
        fields.push_back(t + "]");
        break;
      }
      case 1: {
        std::string v = "[";
        for (int k = 0; k < rows * dim; ++k) v += (k ? "," : "") + number();
        fields.push_back("\"tokens\":{\"rows\":" + std::to_string(rows) +
                         ",\"cols\":" + pick({"3", "3", "4"}) + ",\"values\":" + v + "]}");
        break;
      }
      default:
        break;
    }
    if (rng() % 4 == 0) {
      std::string t = "\"token_texts\":[";
      for (int r = 0; r < rows; ++r) t += (r ? "," : "") + pick({"\"w\"", "\"x\"", "1"});
      fields.push_back(t + "]");
    }
    if (rng() % 4 == 0)
      fields.push_back("\"extra\":" + pick({"{\"a\":[1,{\"b\":null}]}", "1e999", "tru"}));
    if (rng() % 10 == 0) fields.push_back(fields.empty() ? "\"id\":\"b\"" : fields.front());
    std::shuffle(fields.begin(), fields.end(), rng);
    std::string line = "{";
    for (size_t f = 0; f < fields.size(); ++f) line += (f ? "," : "") + fields[f];
    line += "}";
    if (rng() % 25 == 0) line += pick({" ", " x", "}"});
    SCOPED_TRACE(line);
    ParseOptions options = Dim(dim);
    Document a, b;
    const absl::Status sa = ParseJsonLine(line, options, &a);
    const absl::Status sb = ParseJsonLineFully(line, options, &b);
    ASSERT_EQ(sa, sb);
    // The same line parsed in place, with stray JSON in the padding past it.
    std::string padded = line;
    padded.resize(line.size() + kJsonLinePadding, pick({"\"", "{", "]", "1"})[0]);
    padded.resize(line.size());
    ASSERT_GE(padded.capacity() - padded.size(), kJsonLinePadding);
    Document c;
    ASSERT_EQ(ParseJsonLine(padded, options, &c, /*padded=*/true), sb);
    if (sa.ok()) {
      EXPECT_EQ(c.id, b.id);
      EXPECT_EQ(c.pooled, b.pooled);
      EXPECT_EQ(c.tokens, b.tokens);
    }
    if (!sa.ok()) continue;
    ++fast_shapes;
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.metadata, b.metadata);
    EXPECT_EQ(a.num_tokens, b.num_tokens);
    EXPECT_EQ(a.token_texts, b.token_texts);
    ASSERT_EQ(a.tokens.size(), b.tokens.size());
    ASSERT_EQ(a.pooled.size(), b.pooled.size());
    EXPECT_EQ(std::memcmp(a.tokens.data(), b.tokens.data(), 4 * a.tokens.size()), 0);
    EXPECT_EQ(std::memcmp(a.pooled.data(), b.pooled.data(), 4 * a.pooled.size()), 0);
  }
  EXPECT_GT(fast_shapes, 300);  // valid records of many shapes were compared
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
  // A long bad line is quoted in a few hundred bytes, not whole.
  const std::string unterminated = R"({"id":"a","text":")" + std::string(1 << 20, 'x');
  const std::string long_reason = Reason(unterminated);
  EXPECT_NE(long_reason.find("bad JSON"), std::string::npos);
  EXPECT_LT(long_reason.size(), 600u) << long_reason.substr(0, 600);
  EXPECT_NE(long_reason.find("bytes, cut)"), std::string::npos) << long_reason;
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
  // Either spelling is accepted when the expected one is absent (BEIR
  // corpora in the wild use both); the expected one wins.
  ASSERT_TRUE(ParseJsonLine(R"({"id":"c","pooled":[1,2,3]})", beir, &d).ok());
  EXPECT_EQ(d.id, "c");
  ASSERT_TRUE(ParseJsonLine(R"({"id":"c","_id":"d","pooled":[1,2,3]})", beir, &d).ok());
  EXPECT_EQ(d.id, "d");
  ASSERT_TRUE(ParseJsonLine(R"({"_id":"e","pooled":[1,2,3]})", Dim(3), &d).ok());
  EXPECT_EQ(d.id, "e");
  EXPECT_EQ(Reason(R"({"_id":7,"pooled":[1,2,3]})"), "_id: expected a string, got number");
  Document none;
  EXPECT_EQ(ParseJsonLine(R"({"text":"x"})", beir, &none).message(), "_id: missing");
}

TEST(RecordParserTest, TextOnlyDocuments) {
  Document d;
  ASSERT_TRUE(
      ParseJsonLine(R"({"id":"a","title":"Wings","text":"lift and drag"})", Dim(3), &d).ok());
  EXPECT_EQ(d.text, "Wings\n\nlift and drag");
  EXPECT_TRUE(IsTextOnly(d));
  EXPECT_TRUE(d.pooled.empty());
  EXPECT_EQ(d.num_tokens, 0u);
  EXPECT_EQ(Reason(R"({"id":"a","text":"hello"})"), "OK");
  EXPECT_EQ(Reason(R"({"id":"a","title":"hello","text":""})"), "OK");
  EXPECT_EQ(Reason(R"({"id":"a","text":"3.14","pooled":null,"tokens":null})"), "OK");
  EXPECT_EQ(Reason(R"({"id":"a","text":"\u00c9t\u00e9 \u6771\u4eac"})"), "OK");
  // The dim does not matter without vectors.
  EXPECT_EQ(Reason(R"({"id":"a","text":"hello"})", 7), "OK");
}

TEST(RecordParserTest, NoTextAndNoVectors) {
  EXPECT_EQ(Reason(R"({"id":"a"})"), kNoContentReason);
  EXPECT_EQ(Reason(R"({"id":"a","title":"","text":""})"), kNoContentReason);
  EXPECT_EQ(Reason(R"({"id":"a","text":null,"pooled":null})"), kNoContentReason);
  EXPECT_EQ(std::string(kNoContentReason), "no text, pooled vector or tokens");
  // Text the encoder cannot read: no words at all.
  EXPECT_EQ(Reason(R"({"id":"a","text":" -- !!! ... "})"),
            std::string(
                "text: contains no words (a document without vectors is encoded from its words)"));
  EXPECT_EQ(Reason(R"({"id":"a","title":"   ","text":"\t"})"),
            std::string(
                "text: contains no words (a document without vectors is encoded from its words)"));
  // ... which is fine next to vectors.
  EXPECT_EQ(Reason(R"({"id":"a","text":"!!!","pooled":[1,2,3]})"), "OK");
  // The encoder makes its own token texts.
  EXPECT_EQ(Reason(R"({"id":"a","text":"hello","token_texts":["hello"]})"),
            "token_texts: given without a token matrix (the encoder makes its own)");
  // A Document built in memory is checked the same way.
  Document d;
  d.id = "x";
  EXPECT_EQ(ValidateDocument(&d, Dim(3)).message(), kNoContentReason);
  d.text = "ok";
  EXPECT_TRUE(ValidateDocument(&d, Dim(3)).ok());
}

TEST(RecordParserTest, InvalidUtf8NamesTheFieldAndTheByte) {
  // Latin-1 "été" in the text: the offset is in the field's decoded value.
  EXPECT_EQ(Reason("{\"id\":\"a\",\"text\":\"an \xE9t\xE9\"}"), "text: invalid UTF-8 at byte 3");
  EXPECT_EQ(Reason("{\"id\":\"a\",\"title\":\"\xE9\",\"text\":\"x\"}"),
            "title: invalid UTF-8 at byte 0");
  // Escapes before the bad byte count as the bytes they decode to: "\n" 1,
  // "\u00e9" 2, "\u20ac" 3, a surrogate pair 4, "\u0041" 1.
  EXPECT_EQ(Reason("{\"id\":\"a\",\"text\":\"\\n\\u00e9\\u20ac\\ud83d\\ude00\\u0041\\\"\xFF\"}"),
            "text: invalid UTF-8 at byte 12");
  EXPECT_EQ(Reason("{\"id\":\"a\xFF\",\"text\":\"x\"}"), "id: invalid UTF-8 at byte 1");
  EXPECT_EQ(Reason("{\"id\":\"a\",\"metadata\":{\"k\":\"v\xC0\"},\"text\":\"x\"}"),
            "metadata: invalid UTF-8 at byte 1");
  EXPECT_EQ(Reason("{\"id\":\"a\",\"te\xFFxt\":\"x\"}"),
            "invalid UTF-8 in a field name at byte 13 of the line");
  EXPECT_EQ(Reason("{\"id\":\"a\" \xFF}"), "bad JSON: invalid UTF-8 at byte 10 of the line");
  // Valid UTF-8 is still checked in documents built in memory.
  Document d;
  d.id = "x";
  d.text =
      "a\xFF"
      "b";
  d.pooled = {1, 0, 0};
  EXPECT_EQ(ValidateDocument(&d, Dim(3)).message(), "text: invalid UTF-8 at byte 1");
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
  EXPECT_EQ(ValidateDocument(&d, Dim(3)).message(), "pooled: row 0 has a NaN or infinite value");
  d.pooled = {1.f, INFINITY, 0.f};
  EXPECT_EQ(ValidateDocument(&d, Dim(3)).message(), "pooled: row 0 has a NaN or infinite value");
}

TEST(RecordParserTest, ZeroVectors) {
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[0,0,0]})"), "pooled: row 0 has zero norm");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,0,0],[0,0,0]]})"), "tokens: row 1 has zero norm");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,0,0],[-1,0,0]]})"),
            "tokens: the token vectors cancel out (their mean, normalised per row, is zero or "
            "nearly so); give pooled");
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
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":1,"values":[1,2,3]}})"), "tokens.cols: missing");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":-1,"cols":3,"values":[]}})"),
            "tokens.rows: expected a non-negative integer, got number");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":{"rows":0,"cols":3,"values":[]}})"),
            "tokens.rows: must be at least 1");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3]],"token_texts":["a","b"]})"),
            "token_texts: expected 1 entries, got 2");
  EXPECT_EQ(Reason(R"({"id":"a","tokens":[[1,2,3]],"token_texts":[1]})"),
            "token_texts[0]: expected a string, got number");
  EXPECT_EQ(Reason(R"({"id":"a","pooled":[1,2,3],"token_texts":["a"]})"),
            "token_texts: expected 0 entries, got 1");
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
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

Read ReadAll(const std::string& input, InputFormat format, uint32_t dim, uint32_t threads = 0) {
  Read r;
  ParseOptions options = Dim(dim);
  options.threads = threads;
  auto source = OpenSource(input, format, options);
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

// Gzip input: members of a multi-member file are read one after another
// (as zlib's gzread does); a truncated or corrupt file is DATA_LOSS naming
// the file, after the bytes that could be trusted.
TEST(InputFileTest, GzipMembersTruncationAndCorruption) {
  TempDir dir;
  std::mt19937 rng(77);
  std::string a, b;
  for (int i = 0; i < 50000; ++i) a += std::to_string(rng()) + "\n";
  for (int i = 0; i < 30000; ++i) b += "second member line " + std::to_string(i) + "\n";
  WriteGzip(dir.Sub("a.gz"), a);
  WriteGzip(dir.Sub("b.gz"), b);
  const std::string ga = ReadBytes(dir.Sub("a.gz")), gb = ReadBytes(dir.Sub("b.gz"));
  WriteFile(dir.Sub("ab.gz"), ga + gb);
  auto in = InputFile::Open(dir.Sub("ab.gz"));
  ASSERT_TRUE(in.ok());
  std::string all;
  EXPECT_TRUE((*in)->ReadRest(&all));
  EXPECT_TRUE(all == a + b) << all.size() << " bytes read, " << (a + b).size() << " expected";
  EXPECT_EQ((*in)->bytes_read(), ga.size() + gb.size());

  WriteFile(dir.Sub("cut.gz"), ga.substr(0, ga.size() - 1000));
  in = InputFile::Open(dir.Sub("cut.gz"));
  std::string part;
  EXPECT_FALSE((*in)->ReadRest(&part));
  EXPECT_TRUE(absl::IsDataLoss((*in)->status())) << (*in)->status();
  EXPECT_NE((*in)->status().message().find("cut.gz"), std::string::npos);
  EXPECT_TRUE(a.compare(0, part.size(), part) == 0);  // what came out is the start

  std::string flipped = ga;
  flipped[flipped.size() / 2] ^= 0x55;
  WriteFile(dir.Sub("bad.gz"), flipped);
  in = InputFile::Open(dir.Sub("bad.gz"));
  part.clear();
  EXPECT_FALSE((*in)->ReadRest(&part));
  EXPECT_TRUE(absl::IsDataLoss((*in)->status())) << (*in)->status();
}

// JSON lines are parsed by a pool of threads: the records, their positions
// and their outcomes come out in input order, the same for any thread
// count, and each equals what ParseJsonLine makes of its line alone.
TEST(InputSourceTest, ParallelParsingKeepsInputOrder) {
  TempDir dir;
  std::mt19937 rng(1616);
  std::string data;
  std::vector<std::string> lines;
  for (int i = 0; i < 3000; ++i) {
    std::string line;
    switch (rng() % 7) {
      case 0:
        line = "{\"id\":\"bad" + std::to_string(i) + "\",\"pooled\":[1,2]}";  // wrong dim
        break;
      case 1:
        line = "{not json";
        break;
      case 2:
        line = "   ";  // blank: skipped
        break;
      default: {
        line = "{\"id\":\"d" + std::to_string(i) + "\",\"tokens\":[";
        const int rows = 1 + int(rng() % 40);
        for (int r = 0; r < rows; ++r) {
          line += r ? ",[" : "[";
          for (int j = 0; j < 3; ++j) {
            line += (j ? "," : "") + std::to_string(int(rng() % 9) + 1);
          }
          line += "]";
        }
        line += "]}";
      }
    }
    lines.push_back(line);
    data += line + "\n";
  }
  WriteGzip(dir.Sub("p.jsonl.gz"), data);
  Read expected;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] == "   ") continue;
    Document d;
    const absl::Status s = ParseJsonLine(lines[i], Dim(3), &d);
    expected.positions.push_back(i + 1);
    expected.outcomes.push_back(s.ok() ? d.id : std::string(s.message()));
    expected.docs.push_back(d);
  }
  for (uint32_t threads : {1u, 2u, 5u}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const Read r = ReadAll(dir.Sub("p.jsonl.gz"), InputFormat::kJsonLines, 3, threads);
    EXPECT_EQ(r.positions, expected.positions);
    EXPECT_EQ(r.outcomes, expected.outcomes);
    ASSERT_EQ(r.docs.size(), expected.docs.size());
    for (size_t i = 0; i < r.docs.size(); ++i) {
      EXPECT_EQ(r.docs[i].tokens, expected.docs[i].tokens) << i;
      EXPECT_EQ(r.docs[i].pooled, expected.docs[i].pooled) << i;
    }
  }
  // A source dropped after a few records stops its threads.
  for (uint32_t threads : {1u, 3u}) {
    ParseOptions options = Dim(3);
    options.threads = threads;
    auto source = OpenSource(dir.Sub("p.jsonl.gz"), InputFormat::kJsonLines, options);
    ASSERT_TRUE(source.ok());
    InputRecord rec;
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*source)->Next(&rec));
  }
}

TEST(InputFileTest, ReadRestGivesWhatIsLeftPlainOrGzip) {
  TempDir dir;
  std::string data = "first line\r\n";
  for (int i = 0; i < 200000; ++i) data += "line " + std::to_string(i) + "\n";  // > 1 chunk
  data += "no newline at the end";
  WriteFile(dir.Sub("p.txt"), data);
  WriteGzip(dir.Sub("p.txt.gz"), data);
  for (const char* name : {"p.txt", "p.txt.gz"}) {
    auto in = InputFile::Open(dir.Sub(name));
    ASSERT_TRUE(in.ok()) << in.status();
    std::string line, rest = "kept:";
    ASSERT_TRUE((*in)->ReadLine(&line));
    EXPECT_EQ(line, "first line");
    ASSERT_TRUE((*in)->ReadRest(&rest));
    EXPECT_EQ(rest, "kept:" + data.substr(data.find('\n') + 1)) << name;
    EXPECT_FALSE((*in)->ReadLine(&line));
    EXPECT_TRUE((*in)->ReadRest(&rest));  // nothing more
    EXPECT_EQ(rest.size(), 5 + data.size() - data.find('\n') - 1);
  }
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
  EXPECT_EQ(r.outcomes, (std::vector<std::string>{"1", "2"}));  // text-only, and with a vector
  EXPECT_TRUE(IsTextOnly(r.docs[0]));
  EXPECT_EQ(r.docs[1].text, "T\n\nX");
  EXPECT_FALSE(OpenSource(dir.path(), InputFormat::kBeir, Dim(3)).ok());  // no corpus
  EXPECT_TRUE(PeekFirstDocument(dir.Sub("scifact"), InputFormat::kAuto)->text_only);
}

TEST(InputSourceTest, TextOnlyLinesAndTheirErrorsWithLineNumbers) {
  TempDir dir;
  const std::string data =
      "{\"id\":\"a\",\"title\":\"Wings\",\"text\":\"lift\"}\n"
      "{\"id\":\"b\",\"text\":\"caf\xE9 au lait\"}\n"  // Latin-1, not UTF-8
      "\n"
      "{\"id\":\"c\",\"title\":\"\",\"text\":\"\"}\n"
      "{\"id\":\"d\",\"text\":\"...\"}\n"
      "{\"id\":\"e\",\"text\":\"fine\"}\n";
  WriteFile(dir.Sub("t.jsonl"), data);
  WriteGzip(dir.Sub("t.jsonl.gz"), data);
  for (const char* name : {"t.jsonl", "t.jsonl.gz"}) {
    const std::string path = dir.Sub(name);
    auto source = OpenSource(path, InputFormat::kAuto, Dim(256));
    ASSERT_TRUE(source.ok()) << source.status();
    std::vector<std::string> reports;  // "FILE:LINE: reason" or the id
    InputRecord rec;
    while ((*source)->Next(&rec)) {
      reports.push_back(rec.status.ok() ? rec.doc.id
                                        : (*source)->Location(rec.position) + ": " +
                                              std::string(rec.status.message()));
    }
    EXPECT_EQ(reports,
              (std::vector<std::string>{
                  "a", path + ":2: text: invalid UTF-8 at byte 3", path + ":4: " + kNoContentReason,
                  path + ":5: " +
                      std::string("text: contains no words (a document without vectors is encoded "
                                  "from its words)"),
                  "e"}));
    EXPECT_TRUE(PeekFirstDocument(path, InputFormat::kAuto)->text_only);
  }
}

TEST(InputSourceTest, FirstDocumentIsTextOnlyOrStatesTheDim) {
  TempDir dir;
  WriteFile(dir.Sub("v.jsonl"),
            "\n{\"id\":\"a\",\"text\":\"x\",\"pooled\":[1,2]}\n{\"id\":\"b\"}\n");
  WriteFile(dir.Sub("tok.jsonl"), "{\"id\":\"a\",\"tokens\":[[1,2,3]]}\n");
  WriteFile(dir.Sub("mat.jsonl"),
            "{\"id\":\"a\",\"tokens\":{\"rows\":1,\"cols\":4,\"values\":[1,2,3,4]}}\n");
  WriteFile(dir.Sub("t.jsonl"), "\n\n{\"id\":\"a\",\"text\":\"x\",\"pooled\":null}\n");
  WriteFile(dir.Sub("bad.jsonl"), "{\"id\":\n");
  WriteFile(dir.Sub("empty.jsonl"), "");
  auto peek = [&](const char* name) {
    return *PeekFirstDocument(dir.Sub(name), InputFormat::kAuto);
  };
  EXPECT_FALSE(peek("v.jsonl").text_only);
  EXPECT_EQ(peek("v.jsonl").dim, 2u);
  EXPECT_FALSE(peek("tok.jsonl").text_only);
  EXPECT_EQ(peek("tok.jsonl").dim, 3u);
  EXPECT_EQ(peek("mat.jsonl").dim, 4u);
  EXPECT_TRUE(peek("t.jsonl").text_only);
  EXPECT_EQ(peek("t.jsonl").dim, 0u);
  EXPECT_FALSE(peek("bad.jsonl").text_only);
  EXPECT_EQ(peek("bad.jsonl").dim, 0u);
  EXPECT_FALSE(peek("empty.jsonl").text_only);
  EXPECT_FALSE(PeekFirstDocument(dir.Sub("nope.jsonl"), InputFormat::kAuto).ok());
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
  const std::string data = Fvecs({{1, 2, 3}, {0, 0, 0}, {1, std::nanf(""), 3}, {1, 2}, {4, 5, 6}});
  WriteFile(dir.Sub("v.fvecs"), data);
  WriteGzip(dir.Sub("v.fvecs.gz"), data);
  EXPECT_EQ(*PeekFvecsDim(dir.Sub("v.fvecs.gz")), 3u);
  for (const char* name : {"v.fvecs", "v.fvecs.gz"}) {
    const Read r = ReadAll(dir.Sub(name), InputFormat::kAuto, 3);
    EXPECT_EQ(r.positions, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(r.outcomes, (std::vector<std::string>{"0", "pooled: row 0 has zero norm",
                                                    "pooled: row 0 has a NaN or infinite value",
                                                    "pooled: expected 3 values, got 2", "4"}));
    ExpectNear(r.docs[4].pooled, Unit({4, 5, 6}, 3));
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
