#include "text/encoder.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "core/checksum.h"
#include "gtest/gtest.h"
#include "text/stemmer.h"
#include "text/tokenizer.h"

namespace attnsearch::text {
namespace {

// ---------------------------------------------------------------------------
// Corpora

struct Topic {
  std::string name;
  std::vector<std::string> words;
};

// Three topics whose words never occur in another topic's sentences.
const std::vector<Topic>& Topics() {
  static const auto* topics = new std::vector<Topic>{
      {"ship",
       {"boat", "vessel", "sail", "harbor", "crew", "anchor", "captain", "deck", "mast", "voyage",
        "sailor", "hull"}},
      {"bank",
       {"money", "loan", "credit", "interest", "deposit", "account", "mortgage", "cash", "debt",
        "lender", "payment", "banker"}},
      {"garden",
       {"flower", "soil", "tulip", "rose", "petal", "garden", "bloom", "compost", "seedling",
        "lily", "weed", "orchid"}},
  };
  return *topics;
}

// Words of every topic.
const std::vector<std::string>& CommonWords() {
  static const auto* words = new std::vector<std::string>{
      "a",   "of",    "and",  "with", "to",   "in",   "was",  "is", "new", "old",
      "big", "small", "very", "many", "some", "this", "that", "on", "for", "at"};
  return *words;
}

// A rare word: only in the first sentence.
constexpr char kRareWord[] = "zeppelin";

// `n` sentences; sentence i is about topic i % 3. Every sentence starts with
// "The"; topic words are sometimes plural or capitalised.
std::vector<std::string> EnglishCorpus(size_t n = 300, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(8, 14);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    const Topic& topic = Topics()[i % Topics().size()];
    std::string s = "The";
    if (i == 0) s += std::string(" ") + kRareWord;
    const int words = length(rng);
    for (int w = 0; w < words; ++w) {
      std::string word;
      if (unit(rng) < 0.55) {
        word = topic.words[std::uniform_int_distribution<size_t>(0, topic.words.size() - 1)(rng)];
        if (unit(rng) < 0.3) word += "s";
        if (unit(rng) < 0.1) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      } else {
        word =
            CommonWords()[std::uniform_int_distribution<size_t>(0, CommonWords().size() - 1)(rng)];
      }
      s += (w % 5 == 4 ? ", " : " ") + word;
    }
    s += ".";
    out.push_back(std::move(s));
  }
  return out;
}

// Twenty short Chinese sentences on neural networks, and twenty (below) on
// the weather.
const std::vector<std::string>& ChineseAiSentences() {
  static const auto* s = new std::vector<std::string>{"注意力机制是神经网络的重要组成部分。",
                                                      "我们用大量数据训练神经网络模型。",
                                                      "深度学习模型需要很多训练数据。",
                                                      "注意力机制帮助模型理解长句子。",
                                                      "训练神经网络需要调整模型参数。",
                                                      "这个模型使用了注意力机制。",
                                                      "神经网络模型的训练很慢。",
                                                      "研究人员改进了注意力机制。",
                                                      "深度学习和神经网络改变了人工智能。",
                                                      "模型在训练数据上表现很好。",
                                                      "注意力机制可以提高模型的准确率。",
                                                      "梯度下降用于训练神经网络。",
                                                      "大模型的训练需要很多计算资源。",
                                                      "我们比较了不同的神经网络结构。",
                                                      "自注意力机制是变换器模型的核心。",
                                                      "训练数据的质量影响模型效果。",
                                                      "神经网络通过反向传播学习参数。",
                                                      "这篇论文提出了新的注意力机制。",
                                                      "深度学习模型在图像识别中很成功。",
                                                      "模型训练完成后我们评估了结果。"};
  return *s;
}

const std::vector<std::string>& ChineseWeatherSentences() {
  static const auto* s = new std::vector<std::string>{"今天天气很好，是个晴天。",
                                                      "明天会下雨，记得带雨伞。",
                                                      "温度下降了，天气变冷了。",
                                                      "晴天的时候温度比较高。",
                                                      "下雨天路上很滑。",
                                                      "天气预报说明天有雨。",
                                                      "夏天的温度很高，阳光很强。",
                                                      "冬天经常下雪，天气寒冷。",
                                                      "这几天一直下雨，温度很低。",
                                                      "周末是晴天，我们去公园。",
                                                      "天气变化很快，早上晴天下午下雨。",
                                                      "今天的最高温度是三十度。",
                                                      "下雨的时候要带雨伞。",
                                                      "晴天阳光明媚，天气温暖。",
                                                      "春天的天气很舒服。",
                                                      "温度升高，天气变热了。",
                                                      "天气预报说周末会下雨。",
                                                      "秋天天气凉爽，经常是晴天。",
                                                      "昨天下了一整天的雨。",
                                                      "气温和温度都在下降。"};
  return *s;
}

Encoder::TextSource FromTexts(const std::vector<std::string>* texts) {
  return [texts](const std::function<absl::Status(std::string_view)>& sink) -> absl::Status {
    for (const std::string& t : *texts) {
      if (absl::Status s = sink(t); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
}

std::unique_ptr<Encoder> MustTrain(const std::vector<std::string>& texts,
                                   const EncoderOptions& options = {},
                                   TrainingStats* stats = nullptr) {
  absl::StatusOr<std::unique_ptr<Encoder>> enc = Encoder::Train(FromTexts(&texts), options, stats);
  EXPECT_TRUE(enc.ok()) << enc.status();
  if (!enc.ok()) return nullptr;
  return *std::move(enc);
}

// The English corpus and the encoder trained on it with default options,
// shared by the tests that only read them.
struct Trained {
  std::vector<std::string> corpus;
  TrainingStats stats;
  std::unique_ptr<Encoder> encoder;
};

const Trained& English() {
  static const Trained* trained = [] {
    auto* t = new Trained;
    t->corpus = EnglishCorpus();
    t->encoder = MustTrain(t->corpus, EncoderOptions(), &t->stats);
    return t;
  }();
  return *trained;
}

// ---------------------------------------------------------------------------
// Vector helpers

double Dot(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

double Norm(const float* a, size_t n) { return std::sqrt(Dot(a, a, n)); }

double Cosine(const float* a, const float* b, size_t n) {
  const double na = Norm(a, n), nb = Norm(b, n);
  return na > 0 && nb > 0 ? Dot(a, b, n) / (na * nb) : 0.0;
}

// The semantic part (first semantic_dims values) of a word's key vector.
std::vector<float> Semantic(const Encoder& enc, std::string_view word) {
  std::vector<float> w = enc.WordVector(word);
  w.resize(enc.options().semantic_dims);
  return w;
}

// The lexical part (the lexical_dims values after the semantic ones).
std::vector<float> Lexical(const Encoder& enc, std::string_view word) {
  std::vector<float> w = enc.WordVector(word);
  return std::vector<float>(w.begin() + enc.options().semantic_dims, w.end());
}

double SemanticCosine(const Encoder& enc, std::string_view a, std::string_view b) {
  const std::vector<float> x = Semantic(enc, a), y = Semantic(enc, b);
  return Cosine(x.data(), y.data(), x.size());
}

// Mean semantic cosine of `word` with the words of `topic` (other than itself).
double MeanTopicCosine(const Encoder& enc, std::string_view word, const Topic& topic) {
  double sum = 0;
  int n = 0;
  for (const std::string& other : topic.words) {
    if (other == word) continue;
    sum += SemanticCosine(enc, word, other);
    ++n;
  }
  return sum / n;
}

Encoding MustEncodeDocument(const Encoder& enc, std::string_view text) {
  absl::StatusOr<Encoding> e = enc.EncodeDocument(text);
  EXPECT_TRUE(e.ok()) << e.status() << " for \"" << text << "\"";
  return e.ok() ? *std::move(e) : Encoding();
}

Encoding MustEncodeQuery(const Encoder& enc, std::string_view text) {
  absl::StatusOr<Encoding> e = enc.EncodeQuery(text);
  EXPECT_TRUE(e.ok()) << e.status() << " for \"" << text << "\"";
  return e.ok() ? *std::move(e) : Encoding();
}

const float* Row(const Encoding& e, uint32_t r, uint32_t dim) {
  return e.tokens.data() + size_t{r} * dim;
}

// The row whose surface form is `text`, or -1.
int FindRow(const Encoding& e, std::string_view text) {
  for (size_t i = 0; i < e.token_texts.size(); ++i) {
    if (e.token_texts[i] == text) return static_cast<int>(i);
  }
  return -1;
}

// Late-interaction score: Σ over query rows of weight · max over document
// rows of the dot product.
double Score(const Encoding& query, const Encoding& doc, uint32_t dim) {
  double score = 0;
  for (uint32_t q = 0; q < query.num_tokens; ++q) {
    double best = -1e9;
    for (uint32_t d = 0; d < doc.num_tokens; ++d) {
      best = std::max(best, Dot(Row(query, q, dim), Row(doc, d, dim), dim));
    }
    score += query.weights[q] * best;
  }
  return score;
}

// Shape and norm invariants every encoding has.
void CheckEncoding(const Encoder& enc, std::string_view text, const Encoding& e, bool query) {
  const uint32_t dim = enc.dim();
  ASSERT_GT(e.num_tokens, 0u);
  ASSERT_EQ(e.tokens.size(), size_t{e.num_tokens} * dim);
  ASSERT_EQ(e.pooled.size(), dim);
  ASSERT_EQ(e.token_texts.size(), e.num_tokens);
  ASSERT_EQ(e.token_spans.size(), e.num_tokens);
  ASSERT_EQ(e.weights.size(), query ? e.num_tokens : 0u);
  EXPECT_NEAR(Norm(e.pooled.data(), dim), 1.0, 1e-4);
  if (query) {
    EXPECT_EQ(e.pooled[dim - 1], 0.f);
  }
  for (uint32_t r = 0; r < e.num_tokens; ++r) {
    EXPECT_NEAR(Norm(Row(e, r, dim), dim), 1.0, 1e-4) << "row " << r;
    if (query) {
      EXPECT_EQ(Row(e, r, dim)[dim - 1], 0.f) << "row " << r;
      EXPECT_GT(e.weights[r], 0.f) << "row " << r;
      EXPECT_TRUE(std::isfinite(e.weights[r]));
    } else {
      EXPECT_GE(Row(e, r, dim)[dim - 1], 0.f) << "row " << r;
    }
    const auto [begin, end] = e.token_spans[r];
    ASSERT_LT(begin, end);
    ASSERT_LE(end, text.size());
    EXPECT_EQ(text.substr(begin, end - begin), e.token_texts[r]) << "row " << r;
    if (r > 0) {
      EXPECT_LT(e.token_spans[r - 1].first, begin) << "rows in order of first occurrence";
    }
  }
}

// Both encoders give bit-identical document and query encodings of `text`.
void ExpectEncodersAgree(const Encoder& a, const Encoder& b, std::string_view text) {
  for (bool query : {false, true}) {
    absl::StatusOr<Encoding> x = query ? a.EncodeQuery(text) : a.EncodeDocument(text);
    absl::StatusOr<Encoding> y = query ? b.EncodeQuery(text) : b.EncodeDocument(text);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_TRUE(x->tokens == y->tokens) << text;
    EXPECT_TRUE(x->pooled == y->pooled) << text;
    EXPECT_TRUE(x->weights == y->weights) << text;
    EXPECT_EQ(x->token_spans, y->token_spans) << text;
  }
}

// Tokenizer + stemmer: the keys of `text`, in order.
std::vector<std::string> Keys(std::string_view text, const std::string& language = "english") {
  const Stemmer stemmer = *Stemmer::Create(language);
  absl::StatusOr<std::vector<Token>> tokens = Tokenizer().Tokenize(text);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  std::vector<std::string> keys;
  if (!tokens.ok()) return keys;
  for (const Token& t : *tokens) keys.push_back(stemmer.Stem(t.text));
  return keys;
}

// BM25's idf.
double Bm25Idf(double n, double df) { return std::log(1.0 + (n - df + 0.5) / (df + 0.5)); }

// ---------------------------------------------------------------------------
// Training

TEST(EncoderTest, TrainReportsStatistics) {
  std::vector<std::string> texts = EnglishCorpus(60, 3);
  // Texts without words count for nothing.
  texts.insert(texts.begin() + 5, "");
  texts.insert(texts.begin() + 9, "   !!! ... ---");
  TrainingStats stats;
  std::unique_ptr<Encoder> enc = MustTrain(texts, EncoderOptions(), &stats);
  ASSERT_NE(enc, nullptr);

  // Oracle: the tokenizer and stemmer.
  uint64_t documents = 0, tokens = 0;
  absl::flat_hash_set<std::string> distinct;
  for (const std::string& t : texts) {
    const std::vector<std::string> keys = Keys(t);
    if (!keys.empty()) ++documents;
    tokens += keys.size();
    distinct.insert(keys.begin(), keys.end());
  }
  EXPECT_EQ(stats.documents, 60u);
  EXPECT_EQ(stats.documents, documents);
  EXPECT_EQ(stats.tokens, tokens);
  EXPECT_EQ(stats.vocabulary, distinct.size());  // min_count 1 keeps every key
  EXPECT_EQ(enc->vocabulary_size(), stats.vocabulary);
  EXPECT_EQ(enc->trained_documents(), stats.documents);
  EXPECT_GT(stats.cooccurrence_pairs, 0u);
  EXPECT_GE(stats.seconds, 0.0);
  EXPECT_EQ(enc->dim(), 96u + 159u + 1u);
  EXPECT_EQ(enc->dim(), enc->options().semantic_dims + enc->options().lexical_dims + 1);

  EncoderOptions small;
  small.semantic_dims = 8;
  small.lexical_dims = 24;
  std::unique_ptr<Encoder> enc2 = MustTrain(texts, small);
  ASSERT_NE(enc2, nullptr);
  EXPECT_EQ(enc2->dim(), 33u);
  EXPECT_EQ(enc2->WordVector("boat").size(), 32u);
  const Encoding e = MustEncodeDocument(*enc2, texts[0]);
  CheckEncoding(*enc2, texts[0], e, /*query=*/false);
}

TEST(EncoderTest, MinCountAndMaxVocabulary) {
  const std::vector<std::string> texts = EnglishCorpus(90, 4);
  absl::flat_hash_map<std::string, uint64_t> count;
  for (const std::string& t : texts) {
    for (const std::string& k : Keys(t)) ++count[k];
  }
  ASSERT_EQ(count[kRareWord], 1u);
  size_t at_least_two = 0;
  for (const auto& [k, c] : count) at_least_two += c >= 2;

  EncoderOptions options;
  options.min_count = 2;
  TrainingStats stats;
  std::unique_ptr<Encoder> enc = MustTrain(texts, options, &stats);
  ASSERT_NE(enc, nullptr);
  EXPECT_EQ(stats.vocabulary, at_least_two);
  // The rare word is left out: it has the idf of an unseen key.
  float idf = 0;
  enc->WordVector(kRareWord, &idf);
  EXPECT_NEAR(idf, Bm25Idf(90, 0), 1e-5);

  options.min_count = 1;
  options.max_vocabulary = 10;
  std::unique_ptr<Encoder> capped = MustTrain(texts, options, &stats);
  ASSERT_NE(capped, nullptr);
  EXPECT_EQ(stats.vocabulary, 10u);
  EXPECT_EQ(capped->vocabulary_size(), 10u);
}

TEST(EncoderTest, IdfIsBm25sFromDocumentFrequencies) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  absl::flat_hash_map<std::string, uint64_t> df;
  for (const std::string& text : t.corpus) {
    std::vector<std::string> keys = Keys(text);
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (const std::string& k : keys) ++df[k];
  }
  const double n = double(t.stats.documents);
  for (const char* word : {"the", "boat", "boats", "loan", "tulip", "of", kRareWord}) {
    float idf = -1;
    t.encoder->WordVector(word, &idf);
    const std::string key = Stemmer::Create("english")->Stem(word);
    ASSERT_GT(df[key], 0u) << word;
    EXPECT_NEAR(idf, Bm25Idf(n, double(df[key])), 1e-5) << word;
  }
  // A word in every document has a lower idf than a rare one.
  ASSERT_EQ(df["the"], t.stats.documents);
  float idf_the = 0, idf_boat = 0, idf_rare = 0, idf_unseen = 0;
  t.encoder->WordVector("the", &idf_the);
  t.encoder->WordVector("boat", &idf_boat);
  t.encoder->WordVector(kRareWord, &idf_rare);
  t.encoder->WordVector("xylophone", &idf_unseen);
  EXPECT_GT(idf_the, 0.f);
  EXPECT_LT(idf_the, idf_boat);
  EXPECT_LT(idf_boat, idf_rare);
  EXPECT_LT(idf_rare, idf_unseen);
  EXPECT_NEAR(idf_unseen, Bm25Idf(n, 0), 1e-5);
}

TEST(EncoderTest, DegenerateCorporaStillEncode) {
  struct Case {
    std::string name;
    std::vector<std::string> texts;
    uint32_t min_count;
    uint32_t vocabulary;
  };
  const std::vector<Case> cases = {
      {"one word", {"boat"}, 1, 1},
      {"one key repeated", {"boat boats Boat", "BOATS"}, 1, 1},
      {"nothing frequent enough", {"a boat", "a loan"}, 100, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EncoderOptions options;
    options.min_count = c.min_count;
    TrainingStats stats;
    std::unique_ptr<Encoder> enc = MustTrain(c.texts, options, &stats);
    ASSERT_NE(enc, nullptr);
    EXPECT_EQ(stats.vocabulary, c.vocabulary);
    for (const std::string text : {"boat", "a loan for a boat", "qqqjjj"}) {
      const Encoding d = MustEncodeDocument(*enc, text);
      CheckEncoding(*enc, text, d, false);
      const Encoding q = MustEncodeQuery(*enc, text);
      CheckEncoding(*enc, text, q, true);
    }
    absl::StatusOr<std::unique_ptr<Encoder>> r = Encoder::Deserialize(enc->Serialize());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->vocabulary_size(), c.vocabulary);
    ExpectEncodersAgree(*enc, **r, "a loan for a boat");
  }
}

// ---------------------------------------------------------------------------
// Encoding

TEST(EncoderTest, DocumentAndQueryRowsAreUnitWithSpans) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const Encoder& enc = *t.encoder;
  for (size_t i = 0; i < 20; ++i) {
    SCOPED_TRACE(t.corpus[i]);
    const Encoding d = MustEncodeDocument(enc, t.corpus[i]);
    CheckEncoding(enc, t.corpus[i], d, /*query=*/false);
    const Encoding q = MustEncodeQuery(enc, t.corpus[i]);
    CheckEncoding(enc, t.corpus[i], q, /*query=*/true);
    // One row per distinct key, in order of first occurrence.
    std::vector<std::string> distinct;
    for (const std::string& k : Keys(t.corpus[i])) {
      if (std::find(distinct.begin(), distinct.end(), k) == distinct.end()) distinct.push_back(k);
    }
    EXPECT_EQ(d.num_tokens, distinct.size());
    EXPECT_EQ(q.num_tokens, distinct.size());
    EXPECT_EQ(d.token_spans, q.token_spans);
  }
  // Unseen words, multibyte text, punctuation.
  for (const std::string text :
       {"Ünïcödé wörds — and a Boat!", "xylophone quux", "The café sold 3 boats in 2024."}) {
    SCOPED_TRACE(text);
    CheckEncoding(enc, text, MustEncodeDocument(enc, text), false);
    CheckEncoding(enc, text, MustEncodeQuery(enc, text), true);
  }
}

TEST(EncoderTest, OneRowPerStemWithTheFirstSpan) {
  ASSERT_NE(English().encoder, nullptr);
  const Encoder& enc = *English().encoder;
  const std::string text = "Boats boat BOAT";
  for (bool query : {false, true}) {
    const Encoding e = query ? MustEncodeQuery(enc, text) : MustEncodeDocument(enc, text);
    CheckEncoding(enc, text, e, query);
    ASSERT_EQ(e.num_tokens, 1u);
    EXPECT_EQ(e.token_texts[0], "Boats");
    EXPECT_EQ(e.token_spans[0], (std::pair<uint32_t, uint32_t>(0, 5)));
  }
  const std::string text2 = "a harbor, the Harbors and a boat";
  const Encoding e = MustEncodeDocument(enc, text2);
  CheckEncoding(enc, text2, e, false);
  ASSERT_EQ(e.num_tokens, 5u);
  EXPECT_EQ(e.token_texts, (std::vector<std::string>{"a", "harbor", "the", "and", "boat"}));
  EXPECT_EQ(e.token_spans[4], (std::pair<uint32_t, uint32_t>(28, 32)));
}

TEST(EncoderTest, RowsAreScaledKeyVectorsAndPooledIsTheWeightedMean) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const Encoder& enc = *t.encoder;
  const uint32_t dim = enc.dim();
  const std::string text = "The captain saw boats and a boat near the harbor, the Boat!";
  // Oracle: len, tf per key, and the key vectors.
  const std::vector<std::string> keys = Keys(text);
  ASSERT_EQ(keys.size(), 12u);
  const double avg = double(t.stats.tokens) / double(t.stats.documents);
  const double k1 = enc.options().k1, b = enc.options().b;
  const double norm = k1 * (1 - b + b * keys.size() / avg);
  const Encoding e = MustEncodeDocument(enc, text);
  CheckEncoding(enc, text, e, false);
  const Encoding q = MustEncodeQuery(enc, text);
  CheckEncoding(enc, text, q, true);
  std::vector<double> pooled(dim, 0.0), qpooled(dim, 0.0);
  for (uint32_t r = 0; r < e.num_tokens; ++r) {
    SCOPED_TRACE(e.token_texts[r]);
    const std::string word = Keys(e.token_texts[r])[0];
    const double tf = double(std::count(keys.begin(), keys.end(), word));
    const double s = tf / (tf + norm);
    float idf = 0;
    const std::vector<float> w = enc.WordVector(absl::AsciiStrToLower(e.token_texts[r]), &idf);
    const float* row = Row(e, r, dim);
    for (uint32_t j = 0; j + 1 < dim; ++j) {
      ASSERT_NEAR(row[j], s * w[j], 1e-6) << j;
      pooled[j] += idf * s * w[j];
      qpooled[j] += idf * tf * w[j];
    }
    EXPECT_NEAR(row[dim - 1], std::sqrt(1 - s * s), 1e-6);
    EXPECT_NEAR(q.weights[r], idf * tf, 1e-4 * idf * tf);
    for (uint32_t j = 0; j + 1 < dim; ++j) ASSERT_NEAR(Row(q, r, dim)[j], w[j], 1e-6) << j;
  }
  for (std::vector<double>* p : {&pooled, &qpooled}) {
    double n2 = 0;
    for (double x : *p) n2 += x * x;
    for (double& x : *p) x /= std::sqrt(n2);
  }
  for (uint32_t j = 0; j < dim; ++j) {
    EXPECT_NEAR(e.pooled[j], pooled[j], 1e-5) << j;
    EXPECT_NEAR(q.pooled[j], qpooled[j], 1e-5) << j;
  }
}

TEST(EncoderTest, ExactMatchScoresTheBm25Saturation) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const Encoder& enc = *t.encoder;
  const uint32_t dim = enc.dim();
  // A key vector has cosine 1 with itself; inflections share it.
  const std::vector<float> boat = enc.WordVector("boat");
  const std::vector<float> boats = enc.WordVector("boats");
  ASSERT_EQ(boat.size(), dim - 1);
  EXPECT_NEAR(Dot(boat.data(), boat.data(), boat.size()), 1.0, 1e-5);
  EXPECT_EQ(boat, boats);

  // 10 tokens; "boat" twice, "harbor" once.
  const std::string doc_text = "The captain saw boats and a boat near the harbor";
  const Encoding doc = MustEncodeDocument(enc, doc_text);
  CheckEncoding(enc, doc_text, doc, false);
  const double avg = double(t.stats.tokens) / double(t.stats.documents);
  const double k1 = enc.options().k1, b = enc.options().b;
  const double norm = k1 * (1 - b + b * 10 / avg);
  const double s_boat = 2 / (2 + norm), s_harbor = 1 / (1 + norm);

  const int boat_row = FindRow(doc, "boats");
  const int harbor_row = FindRow(doc, "harbor");
  ASSERT_GE(boat_row, 0);
  ASSERT_GE(harbor_row, 0);
  for (const char* query_text : {"boat", "boats", "BOATS", "Boat"}) {
    SCOPED_TRACE(query_text);
    const Encoding q = MustEncodeQuery(enc, query_text);
    ASSERT_EQ(q.num_tokens, 1u);
    EXPECT_NEAR(Dot(Row(q, 0, dim), Row(q, 0, dim), dim), 1.0, 1e-5);
    EXPECT_NEAR(Dot(Row(q, 0, dim), Row(doc, boat_row, dim), dim), s_boat, 1e-5);
    // Another word of the document matches less.
    EXPECT_LT(Dot(Row(q, 0, dim), Row(doc, harbor_row, dim), dim), s_harbor - 0.05);
  }
  const Encoding q = MustEncodeQuery(enc, "harbors");
  EXPECT_NEAR(Dot(Row(q, 0, dim), Row(doc, harbor_row, dim), dim), s_harbor, 1e-5);
  // An unseen word matches itself exactly too.
  const Encoding unseen_doc = MustEncodeDocument(enc, "xylophone");
  const Encoding unseen_query = MustEncodeQuery(enc, "xylophone");
  const double s1 = 1 / (1 + k1 * (1 - b + b * 1 / avg));
  EXPECT_NEAR(Dot(Row(unseen_query, 0, dim), Row(unseen_doc, 0, dim), dim), s1, 1e-5);
}

TEST(EncoderTest, QueryWeightsCountOccurrences) {
  ASSERT_NE(English().encoder, nullptr);
  const Encoder& enc = *English().encoder;
  float idf_boat = 0, idf_loan = 0;
  enc.WordVector("boat", &idf_boat);
  enc.WordVector("loan", &idf_loan);
  const Encoding q = MustEncodeQuery(enc, "boat loans Boats BOAT loan");
  ASSERT_EQ(q.num_tokens, 2u);
  EXPECT_EQ(q.token_texts, (std::vector<std::string>{"boat", "loans"}));
  EXPECT_NEAR(q.weights[0], 3 * idf_boat, 1e-5);
  EXPECT_NEAR(q.weights[1], 2 * idf_loan, 1e-5);
}

// ---------------------------------------------------------------------------
// Meaning and unseen words

TEST(EncoderTest, SameTopicWordsAreCloserInMeaning) {
  ASSERT_NE(English().encoder, nullptr);
  const Encoder& enc = *English().encoder;
  double same = 0, cross = 0;
  int n_same = 0, n_cross = 0;
  const auto& topics = Topics();
  for (size_t ta = 0; ta < topics.size(); ++ta) {
    for (size_t tb = ta; tb < topics.size(); ++tb) {
      for (size_t i = 0; i < topics[ta].words.size(); ++i) {
        for (size_t j = 0; j < topics[tb].words.size(); ++j) {
          if (ta == tb && j <= i) continue;
          const double c = SemanticCosine(enc, topics[ta].words[i], topics[tb].words[j]);
          (ta == tb ? same : cross) += c;
          ++(ta == tb ? n_same : n_cross);
        }
      }
    }
  }
  same /= n_same;
  cross /= n_cross;
  EXPECT_GT(same, cross + 0.1) << "same-topic " << same << ", cross-topic " << cross;
  // And word by word: each topic word is closest to its own topic.
  for (const Topic& topic : topics) {
    for (const std::string& word : topic.words) {
      const double own = MeanTopicCosine(enc, word, topic);
      for (const Topic& other : topics) {
        if (&other == &topic) continue;
        EXPECT_GT(own, MeanTopicCosine(enc, word, other)) << word << " vs topic " << other.name;
      }
    }
  }
}

TEST(EncoderTest, UnseenWordsBorrowFromSpellingNeighbours) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const Encoder& enc = *t.encoder;
  const uint32_t ks = enc.options().semantic_dims;
  // Never in training; real neighbours "vessel" and "harbor" (ship topic).
  for (const char* word : {"vesselz", "harbour", "harborr"}) {
    SCOPED_TRACE(word);
    float idf = -1;
    const std::vector<float> w = enc.WordVector(word, &idf);
    EXPECT_NEAR(Norm(w.data(), w.size()), 1.0, 1e-5);
    EXPECT_GT(Norm(w.data(), ks), 0.1) << "no semantic part";
    EXPECT_TRUE(std::isfinite(idf));
    EXPECT_GT(idf, 0.f);
    const double ship = MeanTopicCosine(enc, word, Topics()[0]);
    for (size_t k = 1; k < Topics().size(); ++k) {
      EXPECT_GT(ship, MeanTopicCosine(enc, word, Topics()[k]) + 0.1) << Topics()[k].name;
    }
  }
  // A near-identical spelling (Jaccard of 3/4-grams 0.6) also shares the
  // lexical code of the key it resembles...
  for (auto [typo, real] :
       {std::pair<const char*, const char*>{"harborr", "harbor"}, {"vesselz", "vessel"}}) {
    SCOPED_TRACE(typo);
    const std::vector<float> a = Lexical(enc, typo), b = Lexical(enc, real);
    EXPECT_GT(Cosine(a.data(), b.data(), a.size()), 0.5);
    EXPECT_LT(Cosine(a.data(), b.data(), a.size()), 0.99) << "keeps its own code too";
    EXPECT_GT(SemanticCosine(enc, typo, real), 0.9);
    // ... and its idf.
    float idf_typo = 0, idf_real = 0;
    enc.WordVector(typo, &idf_typo);
    enc.WordVector(real, &idf_real);
    EXPECT_EQ(idf_typo, idf_real);
  }
  // A more distant spelling (Jaccard 7/17) borrows meaning only.
  {
    const std::vector<float> a = Lexical(enc, "harbour"), b = Lexical(enc, "harbor");
    EXPECT_LT(std::abs(Cosine(a.data(), b.data(), a.size())), 0.35);
    float idf = 0;
    enc.WordVector("harbour", &idf);
    EXPECT_NEAR(idf, Bm25Idf(double(t.stats.documents), 0), 1e-5);
  }
  // No neighbour at all: lexical code only, still unit.
  {
    const std::vector<float> w = enc.WordVector("qqqjjj");
    EXPECT_NEAR(Norm(w.data(), w.size()), 1.0, 1e-5);
    EXPECT_EQ(Norm(w.data(), ks), 0.0);
  }
  // Unrelated keys have nearly orthogonal lexical codes.
  {
    const std::vector<float> a = Lexical(enc, "boat"), b = Lexical(enc, "loan");
    EXPECT_LT(std::abs(Cosine(a.data(), b.data(), a.size())), 0.35);
  }
}

TEST(EncoderTest, SemanticMatchRanksTheRightTopicFirst) {
  ASSERT_NE(English().encoder, nullptr);
  const Encoder& enc = *English().encoder;
  const uint32_t dim = enc.dim();
  const Encoding query = MustEncodeQuery(enc, "vessel");
  // Neither document contains the query word.
  const Encoding ship = MustEncodeDocument(enc, "the sailor and the crew on deck");
  const Encoding bank = MustEncodeDocument(enc, "the lender and the banker on credit");
  EXPECT_GT(Score(query, ship, dim), Score(query, bank, dim));
  // Exact matches win over meaning.
  const Encoding exact = MustEncodeDocument(enc, "the vessel and the crew on deck");
  EXPECT_GT(Score(query, exact, dim), Score(query, ship, dim));
}

// ---------------------------------------------------------------------------
// Serialization

void ExpectSameEncoding(const Encoding& a, const Encoding& b) {
  EXPECT_EQ(a.num_tokens, b.num_tokens);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.pooled, b.pooled);
  EXPECT_EQ(a.token_texts, b.token_texts);
  EXPECT_EQ(a.token_spans, b.token_spans);
}

TEST(EncoderTest, SerializeRoundTripIsBitIdentical) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const std::string bytes = t.encoder->Serialize();
  absl::StatusOr<std::unique_ptr<Encoder>> restored = Encoder::Deserialize(bytes);
  ASSERT_TRUE(restored.ok()) << restored.status();
  const Encoder& a = *t.encoder;
  const Encoder& b = **restored;
  EXPECT_EQ(b.dim(), a.dim());
  EXPECT_EQ(b.vocabulary_size(), a.vocabulary_size());
  EXPECT_EQ(b.trained_documents(), a.trained_documents());
  EXPECT_EQ(b.options().stem_language, a.options().stem_language);
  EXPECT_EQ(b.options().k1, a.options().k1);
  EXPECT_EQ(b.options().seed, a.options().seed);
  EXPECT_EQ(b.Serialize(), bytes);
  std::vector<std::string> texts(t.corpus.begin(), t.corpus.begin() + 10);
  texts.push_back("vesselz harbour harborr qqqjjj, Boats!");
  texts.push_back("注意力机制 and café");
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    ExpectSameEncoding(*a.EncodeDocument(text), *b.EncodeDocument(text));
    ExpectSameEncoding(*a.EncodeQuery(text), *b.EncodeQuery(text));
  }
  for (const char* word : {"boat", "vesselz", "harbour", "qqqjjj"}) {
    float ia = 0, ib = 0;
    EXPECT_EQ(a.WordVector(word, &ia), b.WordVector(word, &ib));
    EXPECT_EQ(ia, ib);
  }
  // Options other than the defaults survive too.
  EncoderOptions options;
  options.semantic_dims = 12;
  options.lexical_dims = 20;
  options.semantic_share = 0.5f;
  options.window = 3;
  options.k1 = 1.2f;
  options.b = 0.75f;
  options.stem_language = "none";
  options.max_document_tokens = 7;
  options.temperature = 0.25f;
  options.seed = 5;
  std::unique_ptr<Encoder> c = MustTrain(EnglishCorpus(30, 9), options);
  ASSERT_NE(c, nullptr);
  absl::StatusOr<std::unique_ptr<Encoder>> d = Encoder::Deserialize(c->Serialize());
  ASSERT_TRUE(d.ok()) << d.status();
  const EncoderOptions& o = (*d)->options();
  EXPECT_EQ(o.semantic_dims, 12u);
  EXPECT_EQ(o.lexical_dims, 20u);
  EXPECT_EQ(o.semantic_share, 0.5f);
  EXPECT_EQ(o.window, 3u);
  EXPECT_EQ(o.k1, 1.2f);
  EXPECT_EQ(o.b, 0.75f);
  EXPECT_EQ(o.stem_language, "none");
  EXPECT_EQ(o.max_document_tokens, 7u);
  EXPECT_EQ(o.temperature, 0.25f);
  EXPECT_EQ(o.seed, 5u);
  ExpectSameEncoding(*c->EncodeDocument(texts[0]), *(*d)->EncodeDocument(texts[0]));
}

void ExpectDataLoss(std::string_view bytes, const std::string& what) {
  absl::StatusOr<std::unique_ptr<Encoder>> r = Encoder::Deserialize(bytes);
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << what << ": " << r.status();
}

// A small encoder trained on a seeded corpus, serialised ("" on failure).
// Without WordNet: the bytes end with the neighbour lists and an empty list
// of unseen words' relatives (a u32 0) before the checksum.
std::string SmallEncoderBytes(float wordnet_weight = 0.f) {
  EncoderOptions options;
  options.semantic_dims = 8;
  options.lexical_dims = 16;
  options.wordnet_weight = wordnet_weight;
  std::unique_ptr<Encoder> enc = MustTrain(EnglishCorpus(40, 2), options);
  return enc == nullptr ? "" : enc->Serialize();
}

TEST(EncoderTest, CorruptBytesAreDataLoss) {
  const std::string bytes = SmallEncoderBytes();
  ASSERT_FALSE(bytes.empty());
  ASSERT_TRUE(Encoder::Deserialize(bytes).ok());
  // Header (magic, version, options), vocabulary, vectors, checksum, and a
  // sweep over the whole file.
  const size_t n = bytes.size();
  std::vector<size_t> positions = {0,  3,     7,     8,      12,    40,    56,    64,   70,
                                   90, n / 3, n / 2, n - 40, n - 9, n - 8, n - 4, n - 1};
  for (size_t p = 0; p < n; p += 37) positions.push_back(p);
  for (size_t p : positions) {
    for (unsigned char mask : {0x01, 0x80, 0xff}) {
      std::string bad = bytes;
      bad[p] = static_cast<char>(bad[p] ^ mask);
      ExpectDataLoss(bad, "byte " + std::to_string(p) + " ^ " + std::to_string(mask));
    }
  }
  // Truncated, extended, empty.
  for (size_t len : {size_t{0}, size_t{1}, size_t{8}, size_t{15}, size_t{16}, size_t{17},
                     size_t{64}, n / 2, n - 8, n - 1}) {
    ExpectDataLoss(std::string_view(bytes).substr(0, len), "first " + std::to_string(len));
  }
  ExpectDataLoss(bytes + '\0', "one more byte");
  ExpectDataLoss(bytes + bytes, "twice");
  ExpectDataLoss("", "empty");
  ExpectDataLoss(std::string(1000, '\0'), "zeros");
}

// FNV-1a 64, the checksum of the format: lets a test change the content
// behind a valid checksum and reach the structural checks.
uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Resign(std::string bytes) {
  const uint64_t sum = Checksum64(bytes.data(), bytes.size() - 8);
  std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  return bytes;
}

template <typename T>
std::string Patch(std::string bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
  return Resign(std::move(bytes));
}

// A neighbour's cosine a float rounding above 1 (two keys of the same
// direction; encoders written before cosines were clamped stored them) is
// read as 1; one clearly above 1 is DATA_LOSS.
TEST(EncoderTest, NeighbourCosineARoundingAboveOneIsAccepted) {
  const std::string bytes = SmallEncoderBytes();
  ASSERT_FALSE(bytes.empty());
  // The last neighbour cosine: the neighbour lists end the content, before
  // the 8-byte checksum; the last float in (0.7, 1] there is one.
  size_t at = 0;
  for (size_t o = bytes.size() - 12; o > bytes.size() - 200 && at == 0; --o) {
    float f;
    std::memcpy(&f, bytes.data() + o, 4);
    if (f > 0.7f && f <= 1.f) at = o;
  }
  ASSERT_NE(at, 0u) << "no neighbour cosine found near the end";
  const absl::StatusOr<std::unique_ptr<Encoder>> above =
      Encoder::Deserialize(Patch(bytes, at, 1.0000001f));
  ASSERT_TRUE(above.ok()) << above.status();
  ExpectDataLoss(Patch(bytes, at, 1.01f), "cosine 1.01");
}

TEST(EncoderTest, WellSignedButMalformedBytesAreDataLoss) {
  const std::string bytes = SmallEncoderBytes();
  ASSERT_FALSE(bytes.empty());
  const absl::StatusOr<std::unique_ptr<Encoder>> enc = Encoder::Deserialize(bytes);
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(Resign(bytes), bytes) << "the checksum is XXH3 over the rest";
  // Layout: magic[8], version u32 @8, nine u32 options @12 (semantic_dims
  // first), f32 options @48 (semantic_share first), seed, stem_language
  // (u32 length + bytes), wordnet_weight f32, documents u64, average
  // length f64, vocabulary size u32, then the keys.
  const std::string language("\x07\0\0\0english", 11);
  const size_t language_at = bytes.find(language);
  ASSERT_NE(language_at, std::string::npos);
  ASSERT_LT(language_at, 100u);
  const size_t vocab_size_at = language_at + language.size() + 4 + 8 + 8;
  uint32_t v = 0;
  std::memcpy(&v, bytes.data() + vocab_size_at, 4);
  ASSERT_EQ(v, (*enc)->vocabulary_size());
  float share = 0;
  std::memcpy(&share, bytes.data() + 48, 4);
  ASSERT_EQ(share, (*enc)->options().semantic_share);

  ExpectDataLoss(Patch<uint32_t>(bytes, 8, 99), "version 99");
  ExpectDataLoss(Patch<uint32_t>(bytes, 12, 0), "semantic_dims 0");
  ExpectDataLoss(Patch<uint32_t>(bytes, 12, 9), "semantic_dims 9: vectors do not fit");
  ExpectDataLoss(Patch<float>(bytes, 48, 2.f), "semantic_share 2");
  ExpectDataLoss(Patch<uint32_t>(bytes, language_at, 1000), "stem_language past the end");
  {
    std::string b = bytes;
    b.replace(language_at + 4, 7, "klingon");
    ExpectDataLoss(Resign(b), "stem_language klingon");
  }
  ExpectDataLoss(Patch<uint32_t>(bytes, vocab_size_at, v + 1), "vocabulary + 1");
  ExpectDataLoss(Patch<uint32_t>(bytes, vocab_size_at, v - 1), "vocabulary - 1");
  ExpectDataLoss(Patch<uint32_t>(bytes, vocab_size_at, 0xffffffffu), "vocabulary 2^32 - 1");
  ExpectDataLoss(Patch<uint32_t>(bytes, vocab_size_at + 4, 0xffffffffu), "key length 2^32 - 1");
  {
    // A byte more before the checksum.
    std::string b = bytes;
    b.insert(b.size() - 8, 1, '\0');
    ExpectDataLoss(Resign(b), "trailing byte");
    // A byte less.
    b = bytes;
    b.erase(b.size() - 9, 1);
    ExpectDataLoss(Resign(b), "missing byte");
  }
  {
    // Two equal keys: make the second key a copy of the first when they
    // have the same length.
    size_t at = vocab_size_at + 4;
    uint32_t len0 = 0, len1 = 0;
    std::memcpy(&len0, bytes.data() + at, 4);
    const size_t second = at + 4 + len0 + 4;
    std::memcpy(&len1, bytes.data() + second, 4);
    std::string b = bytes;
    // Rebuild: first key, its df, then the first key again with the second's df.
    std::string first_key = bytes.substr(at + 4, len0);
    std::string tail = bytes.substr(second + 4 + len1);  // second df onwards
    b = bytes.substr(0, second) + bytes.substr(at, 4) + first_key + tail;
    ExpectDataLoss(Resign(b), "duplicate keys");
  }
}

// Models of formats 3 (FNV-1a checksum) and 4 (XXH3) — format 5 without
// wordnet_weight and without the unseen words' relatives — still load, as
// trained without WordNet.
TEST(EncoderTest, ReadsFormats3And4) {
  const std::string bytes = SmallEncoderBytes();
  ASSERT_FALSE(bytes.empty());
  const std::string language("\x07\0\0\0english", 11);
  const size_t language_at = bytes.find(language);
  ASSERT_NE(language_at, std::string::npos);
  // Drop the wordnet_weight after the language and the relatives' count
  // (0) before the checksum.
  std::string old = bytes.substr(0, language_at + language.size()) +
                    bytes.substr(language_at + language.size() + 4);
  uint32_t count = 1;
  std::memcpy(&count, old.data() + old.size() - 12, 4);
  ASSERT_EQ(count, 0u);
  old.erase(old.size() - 12, 4);
  for (uint32_t version : {3u, 4u}) {
    SCOPED_TRACE(version);
    std::string b = old;
    std::memcpy(b.data() + 8, &version, 4);  // the version, after the magic
    const std::string_view summed = std::string_view(b).substr(0, b.size() - 8);
    const uint64_t sum = version == 3 ? Fnv1a(summed) : Checksum64(summed.data(), summed.size());
    std::memcpy(b.data() + b.size() - 8, &sum, 8);
    absl::StatusOr<std::unique_ptr<Encoder>> r = Encoder::Deserialize(b);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->options().wordnet_weight, 0.f);
    EXPECT_EQ((*r)->Serialize(), bytes);  // written back as format 5
    b[20] = char(b[20] ^ 1);
    ExpectDataLoss(b, "one bit flipped");
  }
}

// ---------------------------------------------------------------------------
// Errors

void ExpectInvalid(const absl::Status& status, const std::string& needle) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(needle), std::string::npos)
      << "\"" << needle << "\" not in: " << status;
}

TEST(EncoderTest, BadTextsAreInvalidArgumentNamingTheField) {
  ASSERT_NE(English().encoder, nullptr);
  const Encoder& enc = *English().encoder;
  for (const std::string text : {"", "   !!! ...", " \t\n", "👍 🎉 — «»"}) {
    SCOPED_TRACE(text);
    ExpectInvalid(enc.EncodeDocument(text, "documents[3].text").status(), "documents[3].text");
    ExpectInvalid(enc.EncodeQuery(text, "query").status(), "query");
    ExpectInvalid(enc.EncodeDocument(text).status(), "text");
  }
  for (const std::string text : {"abc\xff", "boat \xe6\xb3", "\xc0\xaf", "ok \xed\xa0\x80"}) {
    ExpectInvalid(enc.EncodeDocument(text, "documents[7].text").status(), "invalid UTF-8");
    ExpectInvalid(enc.EncodeDocument(text, "documents[7].text").status(), "documents[7].text");
    ExpectInvalid(enc.EncodeQuery(text, "query").status(), "invalid UTF-8");
  }
  EXPECT_EQ(enc.EncodeDocument("boat \xff", "d").status().message(), "d: invalid UTF-8 at byte 5");
}

TEST(EncoderTest, BadTrainingInputIsInvalidArgument) {
  {
    const std::vector<std::string> none = {"", "!!!", "   ... ---"};
    ExpectInvalid(Encoder::Train(FromTexts(&none), EncoderOptions()).status(), "training texts");
    const std::vector<std::string> empty;
    EXPECT_EQ(Encoder::Train(FromTexts(&empty), EncoderOptions()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    // The third text (1-based "training text 3") is invalid.
    const std::vector<std::string> texts = {"a boat", "", "bad \xff text", "a loan"};
    const absl::Status s = Encoder::Train(FromTexts(&texts), EncoderOptions()).status();
    ExpectInvalid(s, "training text 3");
    ExpectInvalid(s, "invalid UTF-8 at byte 4");
  }
  {
    // The source's own error comes back unchanged.
    const Encoder::TextSource failing =
        [](const std::function<absl::Status(std::string_view)>& sink) -> absl::Status {
      if (absl::Status s = sink("a boat in the harbor"); !s.ok()) return s;
      return absl::UnavailableError("disk went away");
    };
    const absl::Status s = Encoder::Train(failing, EncoderOptions()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(s.message(), "disk went away");
  }
}

TEST(EncoderTest, OverridesReplaceOnlyTheFieldsTheySet) {
  const EncoderOptions defaults;
  const EncoderOptions none = EncoderOverrides{}.Apply();
  EXPECT_EQ(none.semantic_share, defaults.semantic_share);
  EXPECT_EQ(none.stem_language, defaults.stem_language);
  EXPECT_EQ(none.window, defaults.window);
  EXPECT_EQ(none.min_count, defaults.min_count);
  EXPECT_EQ(none.temperature, defaults.temperature);
  EXPECT_EQ(none.expansion_weight, defaults.expansion_weight);

  EncoderOverrides set;
  set.semantic_share = 0.6f;
  set.stem_language = "none";
  set.window = 2;
  set.min_count = 3;
  set.temperature = 0.5f;
  set.expansion_weight = 2.f;
  const EncoderOptions all = set.Apply();
  EXPECT_EQ(all.semantic_share, 0.6f);
  EXPECT_EQ(all.stem_language, "none");
  EXPECT_EQ(all.window, 2u);
  EXPECT_EQ(all.min_count, 3u);
  EXPECT_EQ(all.temperature, 0.5f);
  EXPECT_EQ(all.expansion_weight, 2.f);
  EXPECT_EQ(all.semantic_dims, defaults.semantic_dims);  // not an override
  EXPECT_TRUE(all.Validate().ok());

  set.expansion_weight = -1.f;  // off
  EXPECT_EQ(set.Apply().expansion_weight, 0.f);
  // NaN is not "the default": passed through for Validate to refuse.
  for (float EncoderOverrides::*field :
       {&EncoderOverrides::expansion_weight, &EncoderOverrides::wordnet_weight}) {
    EncoderOverrides nan;
    nan.*field = std::nanf("");
    EXPECT_TRUE(absl::IsInvalidArgument(nan.Apply().Validate()));
  }
  EncoderOverrides nan;
  nan.expansion_weight = std::nanf("");
  EXPECT_NE(nan.Apply().Validate().message().find("expansion_weight"), std::string::npos);
  set.semantic_share = 7.f;  // passed through for Validate to refuse
  EXPECT_NE(set.Apply().Validate().message().find("semantic_share"), std::string::npos);
}

TEST(EncoderTest, BadOptionsAreInvalidArgumentNamingTheField) {
  const std::vector<std::string> texts = EnglishCorpus(10, 1);
  struct Case {
    std::string field;
    std::function<void(EncoderOptions*)> set;
  };
  const std::vector<Case> cases = {
      {"semantic_share", [](EncoderOptions* o) { o->semantic_share = 2.f; }},
      {"semantic_share", [](EncoderOptions* o) { o->semantic_share = -0.1f; }},
      {"semantic_share", [](EncoderOptions* o) { o->semantic_share = std::nanf(""); }},
      {"stem_language", [](EncoderOptions* o) { o->stem_language = "klingon"; }},
      {"klingon", [](EncoderOptions* o) { o->stem_language = "klingon"; }},
      {"semantic_dims", [](EncoderOptions* o) { o->semantic_dims = 0; }},
      {"semantic_dims", [](EncoderOptions* o) { o->semantic_dims = 5000; }},
      {"lexical_dims", [](EncoderOptions* o) { o->lexical_dims = 0; }},
      {"window", [](EncoderOptions* o) { o->window = 0; }},
      {"context_smoothing", [](EncoderOptions* o) { o->context_smoothing = 0.f; }},
      {"k1", [](EncoderOptions* o) { o->k1 = 0.f; }},
      {"b", [](EncoderOptions* o) { o->b = 1.5f; }},
      {"temperature", [](EncoderOptions* o) { o->temperature = 0.f; }},
      // Below what a search accepts: every text search would be refused.
      {"temperature", [](EncoderOptions* o) { o->temperature = 1e-38f; }},
      {"max_vocabulary", [](EncoderOptions* o) { o->max_vocabulary = 0; }},
      {"max_document_tokens", [](EncoderOptions* o) { o->max_document_tokens = 0; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    EncoderOptions options;
    c.set(&options);
    ExpectInvalid(Encoder::Train(FromTexts(&texts), options).status(), c.field);
    if (c.field != "stem_language" && c.field != "klingon")
      ExpectInvalid(options.Validate(), c.field);
  }
  EXPECT_TRUE(EncoderOptions().Validate().ok());
}

// ---------------------------------------------------------------------------
// Long documents

// `n` words: the i-th distinct one is "w" + a base-26 spelling of a random
// number, so the keys are many and unseen.
std::string LongDocument(size_t n, size_t distinct, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> vocab;
  for (size_t i = 0; i < distinct; ++i) {
    std::string w = "w";
    for (uint32_t x = uint32_t(rng()) % 1000000 + 1; x > 0; x /= 26) w += char('a' + x % 26);
    vocab.push_back(w);
  }
  std::uniform_int_distribution<size_t> pick(0, distinct - 1);
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    text += i % 11 == 10 ? "boat" : vocab[pick(rng)];
    text += i % 13 == 12 ? ". " : " ";
  }
  return text;
}

TEST(EncoderTest, VeryLongDocumentIsCappedAtMaxDocumentTokens) {
  const std::string text = LongDocument(200000, 2000, 77);
  // Oracle: the first distinct keys.
  std::vector<std::string> first;
  absl::flat_hash_set<std::string> seen;
  const std::vector<std::string> keys = Keys(text);
  ASSERT_EQ(keys.size(), 200000u);
  for (const std::string& k : keys) {
    if (seen.insert(k).second) first.push_back(k);
  }
  ASSERT_GT(first.size(), 1000u);

  EncoderOptions options;
  options.max_document_tokens = 50;
  options.expansion_weight = 0.f;  // no expansion rows after the 50
  std::unique_ptr<Encoder> enc = MustTrain(EnglishCorpus(60, 5), options);
  ASSERT_NE(enc, nullptr);
  const uint32_t dim = enc->dim();
  for (bool query : {false, true}) {
    SCOPED_TRACE(query ? "query" : "document");
    const Encoding e = query ? MustEncodeQuery(*enc, text) : MustEncodeDocument(*enc, text);
    CheckEncoding(*enc, text, e, query);
    ASSERT_EQ(e.num_tokens, 50u);
    EXPECT_EQ(e.distinct_keys, first.size());  // says what it cut
    for (uint32_t r = 0; r < 50; ++r) {
      EXPECT_EQ(Keys(e.token_texts[r])[0], first[r]) << r;
      for (uint32_t o = 0; o < r; ++o) {
        EXPECT_NE(std::vector<float>(Row(e, r, dim), Row(e, r, dim) + dim),
                  std::vector<float>(Row(e, o, dim), Row(e, o, dim) + dim))
            << "rows " << o << " and " << r;
      }
    }
  }
  // The default cap keeps every distinct key here; rows still follow BM25
  // (the long length saturates nothing: "boat" is 1 word in 11).
  TrainingStats stats;
  std::unique_ptr<Encoder> uncapped = MustTrain(EnglishCorpus(60, 5), EncoderOptions(), &stats);
  ASSERT_NE(uncapped, nullptr);
  const Encoding all = MustEncodeDocument(*uncapped, text);
  EXPECT_EQ(all.num_tokens, first.size());
  EXPECT_EQ(all.distinct_keys, first.size());
  CheckEncoding(*uncapped, text, all, false);
  const int boat = FindRow(all, "boat");
  ASSERT_GE(boat, 0);
  const double tf = double(std::count(keys.begin(), keys.end(), "boat"));
  ASSERT_EQ(tf, 200000 / 11);
  const double avg = double(stats.tokens) / double(stats.documents);
  const double k1 = uncapped->options().k1, b = uncapped->options().b;
  const double s = tf / (tf + k1 * (1 - b + b * 200000 / avg));
  const float* row = Row(all, boat, uncapped->dim());
  EXPECT_NEAR(row[uncapped->dim() - 1], std::sqrt(1 - s * s), 1e-5);
}

// ---------------------------------------------------------------------------
// Chinese

TEST(EncoderTest, ChineseCorpus) {
  std::vector<std::string> texts;
  for (size_t i = 0; i < 20; ++i) {
    texts.push_back(ChineseAiSentences()[i]);
    texts.push_back(ChineseWeatherSentences()[i]);
  }
  for (const std::string language : {"none", "english"}) {
    SCOPED_TRACE(language);
    EncoderOptions options;
    options.stem_language = language;
    TrainingStats stats;
    std::unique_ptr<Encoder> enc = MustTrain(texts, options, &stats);
    ASSERT_NE(enc, nullptr);
    EXPECT_EQ(stats.documents, 40u);
    EXPECT_GT(stats.vocabulary, 50u);
    const uint32_t dim = enc->dim();

    const std::string query_text = "注意力机制";
    const Encoding query = MustEncodeQuery(*enc, query_text);
    CheckEncoding(*enc, query_text, query, true);
    ASSERT_GE(query.num_tokens, 2u);
    EXPECT_GE(FindRow(query, "机制"), 0);
    std::string joined;
    for (const std::string& t : query.token_texts) joined += t;
    EXPECT_EQ(joined, query_text);

    const std::string ai = "这个神经网络使用注意力机制。";
    const std::string weather = "明天是晴天，温度很高。";
    const Encoding ai_doc = MustEncodeDocument(*enc, ai);
    const Encoding weather_doc = MustEncodeDocument(*enc, weather);
    CheckEncoding(*enc, ai, ai_doc, false);
    CheckEncoding(*enc, weather, weather_doc, false);
    EXPECT_GT(Score(query, ai_doc, dim), Score(query, weather_doc, dim));

    // Without the query's words: the topic decides.
    const Encoding q2 = MustEncodeQuery(*enc, "神经网络");
    const Encoding ai2 = MustEncodeDocument(*enc, "深度学习模型需要训练数据。");
    const Encoding weather2 = MustEncodeDocument(*enc, "明天下雨，天气很冷。");
    EXPECT_GT(Score(q2, ai2, dim), Score(q2, weather2, dim));
  }
}

// ---------------------------------------------------------------------------
// Determinism and threads

// Training is a pure function of (texts, options): same bytes, however the
// process lays out its hash tables.
TEST(EncoderTest, SameSeedSameTextsSameBytes) {
  const std::vector<std::string> texts = EnglishCorpus(120, 6);
  std::unique_ptr<Encoder> a = MustTrain(texts);
  std::unique_ptr<Encoder> b = MustTrain(texts);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::string x = a->Serialize(), y = b->Serialize();
  ASSERT_EQ(x.size(), y.size());
  size_t first = 0, differing = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] != y[i] && differing++ == 0) first = i;
  }
  EXPECT_EQ(differing, 0u) << "first at byte " << first << " of " << x.size();
  // Equal bytes mean equal encodings.
  const Encoding da = MustEncodeDocument(*a, texts[0]), db = MustEncodeDocument(*b, texts[0]);
  EXPECT_TRUE(da.tokens == db.tokens);
}

TEST(EncoderTest, ConcurrentCallsMatchSingleThreaded) {
  const Trained& t = English();
  ASSERT_NE(t.encoder, nullptr);
  const Encoder& enc = *t.encoder;
  std::vector<std::string> texts(t.corpus.begin(), t.corpus.begin() + 12);
  texts.push_back("vesselz harbour harborr qqqjjj");
  texts.push_back("注意力机制");
  std::vector<Encoding> docs, queries;
  for (const std::string& text : texts) {
    docs.push_back(MustEncodeDocument(enc, text));
    queries.push_back(MustEncodeQuery(enc, text));
  }
  constexpr int kThreads = 4;
  constexpr int kRounds = 20;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + size_t(th) * 3) % texts.size();
          absl::StatusOr<Encoding> d = enc.EncodeDocument(texts[k]);
          absl::StatusOr<Encoding> q = enc.EncodeQuery(texts[k]);
          if (!d.ok() || d->tokens != docs[k].tokens || d->pooled != docs[k].pooled) {
            ++mismatches[th];
          }
          if (!q.ok() || q->tokens != queries[k].tokens || q->weights != queries[k].weights) {
            ++mismatches[th];
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int th = 0; th < kThreads; ++th) EXPECT_EQ(mismatches[th], 0) << "thread " << th;
}

namespace attnsearch::text {
namespace {

// Query expansion: off by default; on, each known query word brings its
// nearest keys by meaning as extra rows weighted expansion_weight x cosine x
// the word's weight, and the words' own rows are unchanged.
TEST(EncoderExpansionTest, AddsNeighbourRowsWithCosineWeights) {
  const std::vector<std::string> texts = EnglishCorpus(600, 3);
  auto plain = MustTrain(texts);
  ASSERT_NE(plain, nullptr);
  EncoderOptions options;
  options.expansion_weight = 0.8f;
  options.expansion_min_cosine = -1.f;  // every key qualifies
  options.expansion_neighbours = 2;
  auto expanding = MustTrain(texts, options);
  ASSERT_NE(expanding, nullptr);

  auto base = plain->EncodeQuery("boat");
  auto wide = expanding->EncodeQuery("boat");
  ASSERT_TRUE(base.ok() && wide.ok());
  ASSERT_EQ(base->num_tokens, 1u);
  ASSERT_EQ(wide->num_tokens, 3u);
  const uint32_t d = plain->dim(), ks = options.semantic_dims;
  const float a = std::sqrt(options.semantic_share);
  // Same first row and weight as without expansion.
  EXPECT_EQ(std::vector<float>(wide->tokens.begin(), wide->tokens.begin() + d),
            std::vector<float>(base->tokens.begin(), base->tokens.begin() + d));
  EXPECT_FLOAT_EQ(wide->weights[0], base->weights[0]);
  for (uint32_t r = 1; r < 3; ++r) {
    const float* q0 = wide->tokens.data();
    const float* qr = wide->tokens.data() + size_t{r} * d;
    double sem = 0;  // cosine of the (scaled) semantic parts
    for (uint32_t j = 0; j < ks; ++j) sem += double(q0[j]) * qr[j];
    sem /= double(a) * a;
    EXPECT_NEAR(wide->weights[r], 0.8 * sem * wide->weights[0], 1e-4) << r;
    EXPECT_NE(wide->token_texts[r], "boat");
    // The expansion rows point at the word they expand.
    EXPECT_EQ(wide->token_spans[r], wide->token_spans[0]);
  }
  // Neighbours are ordered by cosine.
  EXPECT_GE(wide->weights[1], wide->weights[2]);
  // The setting survives serialisation.
  auto restored = Encoder::Deserialize(expanding->Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto again = (*restored)->EncodeQuery("boat");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tokens, wide->tokens);
  EXPECT_EQ(again->weights, wide->weights);

  // A row limit keeps every word and the expansions of largest weight, in
  // their order; words alone over it are refused naming the field.
  auto many = expanding->EncodeQuery("boat river water");
  ASSERT_TRUE(many.ok()) << many.status();
  ASSERT_GT(many->num_tokens, 5u);  // 3 words, up to 2 expansions each
  auto cut = expanding->EncodeQuery("boat river water", "text", 5);
  ASSERT_TRUE(cut.ok()) << cut.status();
  ASSERT_EQ(cut->num_tokens, 5u);
  for (uint32_t r = 0; r < 3; ++r) EXPECT_EQ(cut->token_texts[r], many->token_texts[r]);
  std::vector<float> expansion_weights(many->weights.begin() + 3, many->weights.end());
  std::sort(expansion_weights.rbegin(), expansion_weights.rend());
  std::vector<float> kept(cut->weights.begin() + 3, cut->weights.end());
  std::sort(kept.rbegin(), kept.rend());
  EXPECT_EQ(kept, std::vector<float>(expansion_weights.begin(), expansion_weights.begin() + 2));
  auto refused = expanding->EncodeQuery("boat river water", "text", 2);
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status()));
  EXPECT_EQ(refused.status().message().rfind("text: 3 distinct words", 0), 0u) << refused.status();
  EXPECT_EQ(expanding->EncodeQuery("boat river water", "text", 3)->num_tokens, 3u);
}

}  // namespace
}  // namespace attnsearch::text

// ---------------------------------------------------------------------------
// WordNet (Debian's wordnet-base, which scripts/test.sh installs)

// The rows of a query, by their texts.
std::vector<std::string> RowTexts(const Encoding& e) { return e.token_texts; }

bool HasRow(const Encoding& e, const std::string& text) {
  return std::find(e.token_texts.begin(), e.token_texts.end(), text) != e.token_texts.end();
}

// "ship" never occurs in the corpus ("vessel" and "boat" do): with WordNet
// it asks for its relatives at half the relation's weight and takes their
// meaning; from the texts alone it asks for nothing.
TEST(EncoderWordNetTest, UnseenWordAsksForItsWordNetRelatives) {
  TrainingStats with_stats, alone_stats;
  std::unique_ptr<Encoder> with = MustTrain(EnglishCorpus(), EncoderOptions(), &with_stats);
  EncoderOptions off;
  off.wordnet_weight = 0.f;
  std::unique_ptr<Encoder> alone = MustTrain(EnglishCorpus(), off, &alone_stats);
  ASSERT_NE(with, nullptr);
  ASSERT_NE(alone, nullptr);
  EXPECT_NE(with_stats.wordnet.find("WordNet at /usr/share/wordnet"), std::string::npos)
      << with_stats.wordnet;
  EXPECT_GT(with_stats.wordnet_relations, 0u);
  EXPECT_NE(alone_stats.wordnet.find("texts alone"), std::string::npos) << alone_stats.wordnet;
  EXPECT_EQ(alone_stats.wordnet_relations, 0u);

  const Encoding q = MustEncodeQuery(*with, "ship");
  ASSERT_TRUE(HasRow(q, "vessel")) << testing::PrintToString(RowTexts(q));
  for (uint32_t r = 1; r < q.num_tokens; ++r) {
    EXPECT_GT(q.weights[r], 0.f);
    EXPECT_LE(q.weights[r], 0.5f * q.weights[0] + 1e-5f) << q.token_texts[r];
  }
  EXPECT_EQ(MustEncodeQuery(*alone, "ship").num_tokens, 1u);
  // Its meaning is its relatives': nearer "vessel" than "money".
  const uint32_t ks = with->options().semantic_dims;
  auto semantic_cosine = [&](const Encoder& enc, const char* x, const char* y) {
    const std::vector<float> a = enc.WordVector(x), b = enc.WordVector(y);
    double dot = 0, na = 0, nb = 0;
    for (uint32_t j = 0; j < ks; ++j) {
      dot += a[j] * b[j];
      na += a[j] * a[j];
      nb += b[j] * b[j];
    }
    return dot / std::sqrt(na * nb);
  };
  EXPECT_GT(semantic_cosine(*with, "ship", "vessel"), 0.7);
  EXPECT_GT(semantic_cosine(*with, "ship", "vessel"),
            semantic_cosine(*with, "ship", "money") + 0.3);
}

// Without the database training goes on from the texts alone, says so, and
// encodes exactly as with WordNet off.
TEST(EncoderWordNetTest, MissingDatabaseTrainsFromTheTextsAlone) {
  EncoderOptions missing;
  missing.wordnet_dir = "/nonexistent/wordnet";
  TrainingStats stats;
  std::unique_ptr<Encoder> enc = MustTrain(EnglishCorpus(60, 4), missing, &stats);
  ASSERT_NE(enc, nullptr);
  EXPECT_NE(stats.wordnet.find("no WordNet"), std::string::npos) << stats.wordnet;
  EXPECT_NE(stats.wordnet.find("/nonexistent/wordnet"), std::string::npos) << stats.wordnet;
  EXPECT_EQ(stats.wordnet_relations, 0u);
  EncoderOptions off;
  off.wordnet_weight = 0.f;
  std::unique_ptr<Encoder> alone = MustTrain(EnglishCorpus(60, 4), off);
  for (const char* text : {"the boat and the ship", "money for a zeppelin"}) {
    const Encoding a = MustEncodeQuery(*enc, text), b = MustEncodeQuery(*alone, text);
    EXPECT_EQ(a.tokens, b.tokens) << text;
    EXPECT_EQ(a.weights, b.weights) << text;
    EXPECT_EQ(MustEncodeDocument(*enc, text).tokens, MustEncodeDocument(*alone, text).tokens);
  }
}

// The relatives are part of the model: a round trip keeps them bit for bit,
// and damaged bytes in them are DATA_LOSS.
TEST(EncoderWordNetTest, RelativesSurviveSerialize) {
  EncoderOptions options;
  options.semantic_dims = 8;
  options.lexical_dims = 16;
  std::unique_ptr<Encoder> fresh = MustTrain(EnglishCorpus(150, 2), options);
  ASSERT_NE(fresh, nullptr);
  const std::string bytes = fresh->Serialize();
  absl::StatusOr<std::unique_ptr<Encoder>> back = Encoder::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->Serialize(), bytes);
  EXPECT_EQ((*back)->options().wordnet_weight, 1.f);
  const Encoding a = MustEncodeQuery(**back, "ship"), b = MustEncodeQuery(*fresh, "ship");
  EXPECT_GT(a.num_tokens, 1u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.weights, b.weights);
  // The last relative's weight (the float before the checksum) out of (0, 1].
  float last = 0;
  std::memcpy(&last, bytes.data() + bytes.size() - 12, 4);
  ASSERT_GT(last, 0.f);
  ASSERT_LE(last, 1.f);
  ExpectDataLoss(Patch(bytes, bytes.size() - 12, 1.5f), "relative weight 1.5");
  ExpectDataLoss(Patch(bytes, bytes.size() - 16, 0xffffffffu), "relative key 2^32 - 1");
}
}  // namespace
}  // namespace attnsearch::text
