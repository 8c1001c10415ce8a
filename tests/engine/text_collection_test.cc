// Collection with the built-in text encoder: text-only documents awaiting
// the encoder, TrainEncoder and re-encoding, text queries with explanations,
// client vectors left alone, residual codes on the encoder's vocabulary,
// persistence, the resumption of an interrupted re-encoding on Open, and
// bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "core/types.h"
#include "engine/collection.h"
#include "engine/token_codes.h"
#include "engine_test_util.h"
#include "storage/doc_store.h"
#include "text/encoder.h"
#include "text/stemmer.h"

namespace attnsearch {
namespace {

using testing::RandomUnitRows;
using testing::RoundBf16;
using testing::TempDir;

constexpr uint32_t kDim = 256;
// bf16 keeps 8 significant bits: unit-vector components come back within
// 2^-9 relative, < 4e-3 absolute.
constexpr float kBf16Tolerance = 4e-3f;

// ---------------------------------------------------------------------------
// A seeded English corpus: sentences on four topics, plus three documents
// each holding words no other document has.

const std::vector<std::vector<std::string>>& TopicWords() {
  static const auto* topics = new std::vector<std::vector<std::string>>{
      {"solar", "panel", "grid", "battery", "voltage", "power", "plant", "energy", "storage",
       "cable", "meter", "current"},
      {"recipe", "oven", "flour", "butter", "sugar", "bake", "dough", "bread", "kitchen", "salt",
       "pepper", "soup"},
      {"guitar", "melody", "concert", "piano", "rhythm", "singer", "chord", "drum", "album", "band",
       "song", "stage"},
      {"ship", "harbor", "sailor", "anchor", "deck", "voyage", "captain", "mast", "crew", "wave",
       "hull", "port"},
  };
  return *topics;
}

const std::vector<std::string>& CommonWords() {
  static const auto* words = new std::vector<std::string>{
      "the", "a",     "of",   "and",  "with", "in",  "on", "was",  "is",    "new",
      "old", "every", "some", "this", "near", "for", "at", "very", "small", "big"};
  return *words;
}

struct TextDoc {
  std::string id;
  std::string text;
};

// Documents whose distinctive words ("turbine", "ridge", "saffron",
// "risotto", "cello", "lighthouse", ...) occur nowhere else.
const std::vector<TextDoc>& SpecialDocs() {
  static const auto* docs = new std::vector<TextDoc>{
      {"turbine", "The old wind Turbine on the northern ridge feeds the grid with power."},
      {"saffron", "A recipe for risotto with saffron, butter and a little salt."},
      {"cello", "The cello and the piano played a slow melody at the concert."},
  };
  return *docs;
}

// `n` generated documents "t<i>" (topic i % 4) followed by SpecialDocs().
std::vector<TextDoc> EnglishCorpus(size_t n, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(10, 16);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<TextDoc> out;
  for (size_t i = 0; i < n; ++i) {
    const auto& topic = TopicWords()[i % TopicWords().size()];
    std::string s;
    const int words = length(rng);
    for (int w = 0; w < words; ++w) {
      const auto& pool = unit(rng) < 0.55 ? topic : CommonWords();
      std::string word = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
      if (unit(rng) < 0.2) word += "s";
      if (w == 0) word[0] = absl::ascii_toupper(word[0]);
      s += (w ? " " : "") + word;
    }
    out.push_back({"t" + std::to_string(i), s + "."});
  }
  for (const auto& d : SpecialDocs()) out.push_back(d);
  return out;
}

Document TextOnly(const TextDoc& t) {
  Document d;
  d.id = t.id;
  d.text = t.text;
  return d;
}

std::vector<Document> TextOnlyBatch(const std::vector<TextDoc>& docs) {
  std::vector<Document> out;
  for (const auto& t : docs) out.push_back(TextOnly(t));
  return out;
}

// A document "id" with its own (deliberately unnormalised) vectors: `rows`
// token rows and a pooled vector.
Document ClientDoc(std::mt19937& rng, const std::string& id, const std::string& text,
                   uint32_t rows) {
  Document d;
  d.id = id;
  d.text = text;
  d.metadata = {{"kind", "client"}};
  d.num_tokens = rows;
  d.tokens = RandomUnitRows(rng, rows, kDim);
  for (float& x : d.tokens) x *= 2.5f;
  d.pooled = RandomUnitRows(rng, 1, kDim);
  for (float& x : d.pooled) x *= 0.25f;
  return d;
}

std::vector<float> NormalizedRows(std::vector<float> v) {
  for (size_t r = 0; r * kDim < v.size(); ++r) {
    double ss = 0;
    for (uint32_t k = 0; k < kDim; ++k) ss += double(v[r * kDim + k]) * v[r * kDim + k];
    const float inv = float(1.0 / std::sqrt(ss));
    for (uint32_t k = 0; k < kDim; ++k) v[r * kDim + k] *= inv;
  }
  return v;
}

// ---------------------------------------------------------------------------
// Collection helpers.

CollectionConfig Config(uint32_t dim = kDim) {
  CollectionConfig c;
  c.dim = dim;  // token dtype: the default, bf16
  return c;
}

std::unique_ptr<Collection> MustCreate(const std::string& path,
                                       const CollectionConfig& config = Config()) {
  auto c = Collection::Create(path, config, CollectionOptions());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

std::unique_ptr<Collection> MustOpen(const std::string& path) {
  auto c = Collection::Open(path, CollectionOptions());
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

absl::StatusOr<SearchResult> TextSearch(const Collection& c, const std::string& text,
                                        uint32_t top_k = 10, bool explain = false,
                                        bool include_text = false) {
  SearchQuery q;
  q.text = text;
  q.top_k = top_k;
  q.explain = explain;
  q.include_text = include_text;
  return c.Search(q);
}

std::vector<std::string> Ids(const SearchResult& r) {
  std::vector<std::string> ids;
  for (const auto& h : r.hits) ids.push_back(h.id);
  return ids;
}

// The ids of a text search's hits; a failed search records a failure.
std::vector<std::string> TextSearchIds(const Collection& c, const std::string& text,
                                       uint32_t top_k = 10) {
  auto r = TextSearch(c, text, top_k);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status();
  return r.ok() ? Ids(*r) : std::vector<std::string>();
}

Document MustGetOne(const Collection& c, const std::string& id, bool include_vectors) {
  auto got = c.Get({id}, include_vectors);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok() || got->documents.size() != 1) {
    ADD_FAILURE() << "document " << id << " not found (include_vectors=" << include_vectors << ")";
    return Document();
  }
  return std::move(got->documents[0]);
}

std::string StemOf(const text::Stemmer& stemmer, const std::string& word) {
  return stemmer.Stem(absl::AsciiStrToLower(word));
}

text::Stemmer English() {
  auto s = text::Stemmer::Create("english");
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

// A corpus loaded as text only (plus client documents), before training.
struct Loaded {
  std::vector<TextDoc> texts;     // text-only documents
  std::vector<Document> clients;  // as sent
  std::vector<std::string> client_ids;
};

constexpr size_t kGenerated = 120;

// Upserts EnglishCorpus(kGenerated) as text only and three client documents
// ("c0" and "c1" with text, "c2" without).
Loaded LoadCorpus(Collection& c) {
  Loaded l;
  l.texts = EnglishCorpus(kGenerated);
  std::mt19937 rng(11);
  l.clients = {ClientDoc(rng, "c0", "client document zero about storage", 3),
               ClientDoc(rng, "c1", "client document one", 5), ClientDoc(rng, "c2", "", 2)};
  for (const auto& d : l.clients) l.client_ids.push_back(d.id);
  std::vector<Document> batch = TextOnlyBatch(l.texts);
  auto n = c.Upsert(batch);
  EXPECT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n.value_or(0), batch.size());
  auto m = c.Upsert(l.clients);
  EXPECT_TRUE(m.ok()) << m.status();
  return l;
}

// ---------------------------------------------------------------------------
// Before training.

TEST(TextCollectionTest, TextOnlyDocumentsAwaitTheEncoder) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  const Loaded l = LoadCorpus(*c);
  const size_t total = l.texts.size() + l.clients.size();

  const CollectionStats stats = c->Stats();
  EXPECT_EQ(stats.num_documents, total);
  EXPECT_EQ(stats.ann_vectors, l.clients.size());
  EXPECT_EQ(stats.encoder_version, 0u);
  EXPECT_EQ(stats.encoder_vocabulary, 0u);

  // A text query needs the encoder.
  auto r = TextSearch(*c, "turbines");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "encoder")) << r.status();

  // A vector search over everything finds only the client documents.
  std::mt19937 rng(3);
  SearchQuery q;
  q.pooled = RandomUnitRows(rng, 1, kDim);
  q.top_k = 50;
  q.candidates = 500;
  auto vr = c->Search(q);
  ASSERT_TRUE(vr.ok()) << vr.status();
  std::vector<std::string> ids = Ids(*vr);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, l.client_ids);

  // The documents are stored, with their text, awaiting the encoder.
  for (const auto& t : {l.texts.front(), l.texts.back()}) {
    const Document d = MustGetOne(*c, t.id, /*include_vectors=*/false);
    EXPECT_EQ(d.text, t.text);
    EXPECT_EQ(d.encoded_by, kAwaitingEncoder);
  }
  EXPECT_EQ(MustGetOne(*c, "c0", false).encoded_by, kClientVectors);
}

// Get with vectors of a document awaiting the encoder: it exists, so it is
// returned (without vectors), not reported as not found.
TEST(TextCollectionTest, GetWithVectorsOfAnAwaitingDocument) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Upsert({TextOnly(SpecialDocs()[0])}).ok());
  auto got = c->Get({"turbine"}, /*include_vectors=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->not_found_ids.empty())
      << "an awaiting document is reported as not found by Get(include_vectors=true)";
  ASSERT_EQ(got->documents.size(), 1u);
  EXPECT_EQ(got->documents[0].text, SpecialDocs()[0].text);
  EXPECT_EQ(got->documents[0].encoded_by, kAwaitingEncoder);
  EXPECT_TRUE(got->documents[0].pooled.empty());
  EXPECT_EQ(got->documents[0].num_tokens, 0u);
}

// ---------------------------------------------------------------------------
// Training and text search.

TEST(TextCollectionTest, TrainEncoderEncodesAwaitingDocuments) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  const Loaded l = LoadCorpus(*c);
  // A deleted text-only document is neither trained on nor encoded.
  auto del = c->Delete({"t0"});
  ASSERT_TRUE(del.ok() && del->deleted == 1);
  const size_t text_only = l.texts.size() - 1;
  const size_t total = text_only + l.clients.size();

  auto trained = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->version, 1u);
  EXPECT_EQ(trained->reencoded, text_only);
  EXPECT_EQ(trained->training.documents, text_only + 2);  // + c0, c1 (c2 has no text)
  EXPECT_GT(trained->training.vocabulary, 0u);

  const CollectionStats stats = c->Stats();
  EXPECT_EQ(stats.num_documents, total);
  EXPECT_EQ(stats.ann_vectors, total);
  EXPECT_EQ(stats.encoder_version, 1u);
  EXPECT_EQ(stats.encoder_vocabulary, trained->training.vocabulary);

  // Every distinctive word finds its document first; case and inflection do
  // not matter.
  EXPECT_EQ(TextSearchIds(*c, "turbines").at(0), "turbine");
  EXPECT_EQ(TextSearchIds(*c, "saffron risotto").at(0), "saffron");
  EXPECT_EQ(TextSearchIds(*c, "CELLO").at(0), "cello");
  EXPECT_EQ(TextSearchIds(*c, "northern ridge").at(0), "turbine");

  // Explanations point into the stored text.
  const text::Stemmer stemmer = English();
  auto r = TextSearch(*c, "turbines", 10, /*explain=*/true, /*include_text=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->hits.empty());
  const SearchHit& top = r->hits[0];
  ASSERT_EQ(top.id, "turbine");
  EXPECT_EQ(top.text, SpecialDocs()[0].text);
  EXPECT_GT(top.score, 0.f);
  ASSERT_FALSE(top.matches.empty());
  bool matched = false;
  for (const TokenMatch& m : top.matches) {
    EXPECT_EQ(m.query_token, 0u);  // one query word
    ASSERT_TRUE(m.has_span);
    ASSERT_LE(m.span_begin, m.span_end);
    ASSERT_LE(m.span_end, top.text.size());
    const std::string word = top.text.substr(m.span_begin, m.span_end - m.span_begin);
    EXPECT_EQ(m.document_token_text, word);
    if (StemOf(stemmer, word) == StemOf(stemmer, "turbines")) {
      matched = true;
      EXPECT_EQ(word, "Turbine");
      EXPECT_TRUE(absl::StrContains(top.snippet, "<em>" + word + "</em>")) << top.snippet;
    }
  }
  EXPECT_TRUE(matched) << "no match points at 'Turbine'";
  // Other hits carry ids and, without include_text, no text.
  auto plain = TextSearch(*c, "wind power grid", 10);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_FALSE(plain->hits.empty());
  for (const auto& h : plain->hits) {
    EXPECT_FALSE(h.id.empty());
    EXPECT_TRUE(h.text.empty());
    EXPECT_TRUE(h.matches.empty());
  }

  // A two-word query: each query word's match points at a word of the text
  // with its stem.
  auto two = TextSearch(*c, "Risottos saffron", 5, /*explain=*/true);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_FALSE(two->hits.empty());
  ASSERT_EQ(two->hits[0].id, "saffron");
  const std::string& text = SpecialDocs()[1].text;
  std::set<std::string> stems;
  for (const TokenMatch& m : two->hits[0].matches) {
    ASSERT_TRUE(m.has_span);
    ASSERT_LE(m.span_end, text.size());
    stems.insert(StemOf(stemmer, text.substr(m.span_begin, m.span_end - m.span_begin)));
  }
  EXPECT_TRUE(stems.count(StemOf(stemmer, "risottos"))) << "no match for 'Risottos'";
  EXPECT_TRUE(stems.count(StemOf(stemmer, "saffron"))) << "no match for 'saffron'";
  EXPECT_TRUE(absl::StrContains(two->hits[0].snippet, "<em>saffron</em>")) << two->hits[0].snippet;
  EXPECT_TRUE(absl::StrContains(two->hits[0].snippet, "<em>risotto</em>")) << two->hits[0].snippet;

  // Encoded documents carry their version; client documents stay client's.
  EXPECT_EQ(MustGetOne(*c, "t5", false).encoded_by, 1u);
  EXPECT_EQ(MustGetOne(*c, "c1", false).encoded_by, kClientVectors);
  auto gone = c->Get({"t0"}, false);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->not_found_ids, std::vector<std::string>{"t0"});
}

// ---------------------------------------------------------------------------
// Residual token codes of text.

CollectionConfig ResidualText(bool keep_full_precision) {
  CollectionConfig c = Config();
  c.token_codec.kind = TokenCodecKind::kResidual;
  c.token_codec.bits = 1;
  c.token_codec.train_after = 0;
  c.token_codec.keep_full_precision = keep_full_precision;
  return c;
}

// A text collection keeping only codes: its codec's centroids are the
// encoder's vocabulary, every row decodes to its own word's direction, and
// searches on the codes score as the same collection's bf16 rows do.
TEST(TextCollectionTest, ResidualCodesOfTextNameTheirWords) {
  TempDir dir;
  auto rows = MustCreate(dir.Sub("rows"));
  auto codes = MustCreate(dir.Sub("codes"), ResidualText(/*keep_full_precision=*/false));
  ASSERT_NE(rows, nullptr);
  ASSERT_NE(codes, nullptr);
  LoadCorpus(*rows);
  LoadCorpus(*codes);
  ASSERT_TRUE(rows->TrainEncoder(text::EncoderOptions()).ok());
  auto enc = codes->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto trained = codes->TrainCodec();
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->centroids, enc->training.vocabulary);
  EXPECT_EQ(trained->code_bytes, 2u + 1u + kDim / 8);  // id, gain, 1 bit a dimension
  ASSERT_NE(codes->codec(), nullptr);
  EXPECT_EQ(codes->codec()->encoder_version, 1u);

  // Decoded rows point where the stored ones do (the last coordinate, which
  // queries never see, apart).
  for (const std::string id : {"t7", "t42", "turbine", "saffron"}) {
    const Document want = MustGetOne(*rows, id, true);
    const Document got = MustGetOne(*codes, id, true);
    ASSERT_EQ(got.num_tokens, want.num_tokens) << id;
    for (uint32_t r = 0; r < got.num_tokens; ++r) {
      double dot = 0, a = 0, b = 0;
      for (uint32_t t = 0; t + 1 < kDim; ++t) {
        const double x = got.tokens[size_t(r) * kDim + t], y = want.tokens[size_t(r) * kDim + t];
        dot += x * y;
        a += x * x;
        b += y * y;
      }
      EXPECT_GT(dot / std::sqrt(a * b), 0.999) << id << " row " << r;
      EXPECT_NEAR(std::sqrt(a), std::sqrt(b), 0.01) << id << " row " << r;
    }
  }
  // Searches: the same top hit, and every shared hit's score within the
  // int8 scoring's rounding of the rows' score (the query and the codes in
  // s8 steps; 2.6% at most on these queries).
  for (const std::string query : {"turbines", "saffron risotto", "CELLO", "northern ridge",
                                  "solar battery voltage", "bread oven butter", "ship captain"}) {
    auto a = TextSearch(*rows, query, 10);
    auto b = TextSearch(*codes, query, 10);
    ASSERT_TRUE(a.ok() && b.ok()) << query;
    ASSERT_FALSE(a->hits.empty());
    ASSERT_FALSE(b->hits.empty());
    EXPECT_EQ(b->hits[0].id, a->hits[0].id) << query;
    std::map<std::string, float> want;
    for (const auto& h : a->hits) want[h.id] = h.score;
    size_t shared = 0;
    for (const auto& h : b->hits) {
      auto it = want.find(h.id);
      if (it == want.end()) continue;
      ++shared;
      EXPECT_NEAR(h.score, it->second, 0.04 * std::max(1.f, std::fabs(it->second)))
          << query << ": " << h.id;
    }
    EXPECT_GE(shared, 5u) << query;  // the tail of near-zero scores may reorder
  }
}

// Text through the centroid first stage: a search without `candidates`
// takes 100 (not 1,000) once it serves, from the codes, and finds what the
// rows collection finds over the pooled index.
TEST(TextCollectionTest, TextSearchesTakeAHundredCandidatesFromTheCentroids) {
  TempDir dir;
  auto rows = MustCreate(dir.Sub("rows"));
  CollectionConfig config = ResidualText(/*keep_full_precision=*/true);
  config.candidates_from = CandidateSource::kCentroids;
  auto codes = MustCreate(dir.Sub("codes"), config);
  ASSERT_NE(rows, nullptr);
  ASSERT_NE(codes, nullptr);
  LoadCorpus(*rows);
  LoadCorpus(*codes);
  ASSERT_TRUE(rows->TrainEncoder(text::EncoderOptions()).ok());
  ASSERT_TRUE(codes->TrainEncoder(text::EncoderOptions()).ok());
  auto before = TextSearch(*codes, "turbines");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->sources.first_stage, CandidateSource::kPooled);  // no codec yet
  ASSERT_TRUE(codes->TrainCodec().ok());
  ASSERT_GT(codes->Stats().num_documents, 100u);
  for (const std::string query : {"turbines", "saffron risotto", "CELLO", "northern ridge",
                                  "solar battery voltage", "bread oven butter", "ship captain"}) {
    auto a = TextSearch(*rows, query, 10);
    auto b = TextSearch(*codes, query, 10);
    ASSERT_TRUE(a.ok() && b.ok()) << query;
    EXPECT_EQ(b->sources.first_stage, CandidateSource::kCentroids) << query;
    EXPECT_EQ(b->sources.codes, 100u) << query;  // the candidates, all from codes
    ASSERT_FALSE(a->hits.empty());
    ASSERT_FALSE(b->hits.empty());
    EXPECT_EQ(b->hits[0].id, a->hits[0].id) << query;
  }
}

// A codec that trains itself waits for the text's rows: documents awaiting
// the encoder do not count toward train_after, and TrainEncoder starts the
// training, on the new vocabulary.
TEST(TextCollectionTest, TheCodecTrainsItselfOnceTheTextHasRows) {
  TempDir dir;
  CollectionConfig config = ResidualText(/*keep_full_precision=*/true);
  config.token_codec.train_after = 50;
  auto c = MustCreate(dir.Sub("c"), config);
  ASSERT_NE(c, nullptr);
  LoadCorpus(*c);  // 123 awaiting the encoder, 3 with client vectors
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(c->codec(), nullptr);
  EXPECT_EQ(c->Stats().codec_version, 0u);
  auto enc = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(enc.ok()) << enc.status();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((c->Stats().codec_version == 0 || c->Stats().codec_pending > 0) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(c->codec(), nullptr);
  EXPECT_EQ(c->codec()->encoder_version, 1u);
  EXPECT_EQ(c->codec()->codec->num_centroids(), enc->training.vocabulary);
  EXPECT_EQ(c->Stats().codec_pending, 0u);
  EXPECT_EQ(TextSearchIds(*c, "saffron risotto").at(0), "saffron");
}

// With the rows kept, a new encoder makes the codec on the old vocabulary
// stale: it trains again in the background, on the new vocabulary, and the
// searches keep working.
TEST(TextCollectionTest, ANewEncoderRetrainsTheCodecOnItsVocabulary) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), ResidualText(/*keep_full_precision=*/true));
  ASSERT_NE(c, nullptr);
  LoadCorpus(*c);
  ASSERT_TRUE(c->TrainEncoder(text::EncoderOptions()).ok());
  ASSERT_TRUE(c->TrainCodec().ok());
  EXPECT_EQ(c->codec()->encoder_version, 1u);
  // More text, new words: the second encoder's vocabulary is larger.
  std::vector<Document> more =
      TextOnlyBatch({{"x1", "Quartz crystals and granite boulders line the canyon."},
                     {"x2", "The canyon river carved granite over many years."}});
  ASSERT_TRUE(c->Upsert(more).ok());
  auto second = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->version, 2u);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((c->codec()->encoder_version != 2 || c->Stats().codec_pending > 0) &&
         std::chrono::steady_clock::now() < until) {
    EXPECT_EQ(TextSearchIds(*c, "saffron risotto").at(0), "saffron");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::shared_ptr<const TokenCodecState> state = c->codec();
  EXPECT_EQ(state->encoder_version, 2u);
  EXPECT_EQ(state->version, 2u);
  EXPECT_EQ(state->codec->num_centroids(), second->training.vocabulary);
  EXPECT_EQ(c->Stats().codec_pending, 0u);
  const std::vector<std::string> canyon = TextSearchIds(*c, "granite canyon");
  ASSERT_GE(canyon.size(), 2u);
  EXPECT_EQ(std::set<std::string>(canyon.begin(), canyon.begin() + 2),
            (std::set<std::string>{"x1", "x2"}));
  // Reopened, the codec remembers its encoder version: nothing to retrain.
  c.reset();
  c = MustOpen(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->codec()->encoder_version, 2u);
  EXPECT_EQ(c->codec()->version, 2u);
}

TEST(TextCollectionTest, TextOnlyDocumentsAfterTrainingAreEncodedAtOnce) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  LoadCorpus(*c);
  ASSERT_TRUE(c->TrainEncoder(text::EncoderOptions()).ok());
  const uint64_t vectors_before = c->Stats().ann_vectors;

  const std::string text = "A lighthouse keeper watched the harbor; the Lighthouse stood tall.";
  ASSERT_TRUE(c->Upsert({TextOnly(TextDoc{"light", text})}).ok());
  EXPECT_EQ(c->Stats().ann_vectors, vectors_before + 1);
  EXPECT_EQ(TextSearchIds(*c, "lighthouses").at(0), "light");

  const Document d = MustGetOne(*c, "light", /*include_vectors=*/true);
  EXPECT_EQ(d.text, text);
  EXPECT_EQ(d.encoded_by, 1u);
  // One row per distinct stem: a, lighthouse, keeper, watch, the, harbor,
  // stood, tall.
  EXPECT_EQ(d.num_tokens, 8u);
  ASSERT_EQ(d.pooled.size(), kDim);
  ASSERT_EQ(d.tokens.size(), size_t(d.num_tokens) * kDim);
  ASSERT_EQ(d.token_texts.size(), d.num_tokens);
  ASSERT_EQ(d.token_spans.size(), d.num_tokens);
  for (uint32_t r = 0; r < d.num_tokens; ++r) {
    const auto [b, e] = d.token_spans[r];
    ASSERT_LE(e, text.size());
    EXPECT_EQ(d.token_texts[r], text.substr(b, e - b));
    double ss = 0;
    for (uint32_t k = 0; k < kDim; ++k)
      ss += double(d.tokens[r * kDim + k]) * d.tokens[r * kDim + k];
    EXPECT_NEAR(ss, 1.0, 2 * kBf16Tolerance) << "row " << r;
  }
  // The first occurrence of each word: "lighthouse", not "Lighthouse".
  EXPECT_EQ(d.token_texts[1], "lighthouse");
}

TEST(TextCollectionTest, RetrainingKeepsClientVectorsAndReencodesText) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  const Loaded l = LoadCorpus(*c);
  auto first = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->version, 1u);
  // One more text-only document, encoded by version 1 at once.
  ASSERT_TRUE(
      c->Upsert({TextOnly(TextDoc{"late", "The crew painted the hull before the voyage."})}).ok());
  const size_t text_only = l.texts.size() + 1;

  std::map<std::string, Document> before;
  for (const auto& id : l.client_ids) before[id] = MustGetOne(*c, id, true);

  auto second = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->version, 2u);
  EXPECT_EQ(second->reencoded, text_only);
  EXPECT_EQ(second->training.documents, text_only + 2);
  EXPECT_EQ(c->Stats().encoder_version, 2u);
  EXPECT_EQ(c->Stats().num_documents, text_only + l.clients.size());

  for (const Document& sent : l.clients) {
    SCOPED_TRACE(sent.id);
    const Document after = MustGetOne(*c, sent.id, true);
    const Document& was = before[sent.id];
    EXPECT_EQ(after.encoded_by, kClientVectors);
    EXPECT_EQ(after.text, sent.text);
    EXPECT_EQ(after.metadata, sent.metadata);
    ASSERT_EQ(after.num_tokens, sent.num_tokens);
    ASSERT_EQ(after.tokens.size(), was.tokens.size());
    ASSERT_EQ(after.pooled.size(), was.pooled.size());
    // Unchanged, and still what the client sent (normalised, bf16 tokens).
    EXPECT_EQ(after.tokens, was.tokens);
    EXPECT_EQ(after.pooled, was.pooled);
    const std::vector<float> tokens = NormalizedRows(sent.tokens);
    const std::vector<float> pooled = NormalizedRows(sent.pooled);
    for (size_t i = 0; i < tokens.size(); ++i) {
      ASSERT_NEAR(after.tokens[i], tokens[i], kBf16Tolerance) << i;
    }
    for (size_t i = 0; i < pooled.size(); ++i) ASSERT_NEAR(after.pooled[i], pooled[i], 1e-5f);
  }
  for (const std::string id : {"t1", "t119", "turbine", "late"}) {
    EXPECT_EQ(MustGetOne(*c, id, false).encoded_by, 2u) << id;
  }
  // A client document is still found by its own vectors.
  SearchQuery q;
  q.pooled = l.clients[1].pooled;
  q.num_tokens = l.clients[1].num_tokens;
  q.tokens = l.clients[1].tokens;
  q.top_k = 1;
  auto vr = c->Search(q);
  ASSERT_TRUE(vr.ok()) << vr.status();
  ASSERT_EQ(vr->hits.size(), 1u);
  EXPECT_EQ(vr->hits[0].id, "c1");
  // And text search works with version 2.
  EXPECT_EQ(TextSearchIds(*c, "turbines").at(0), "turbine");
  EXPECT_EQ(TextSearchIds(*c, "painted").at(0), "late");
}

// ---------------------------------------------------------------------------
// Persistence.

TEST(TextCollectionTest, EncoderSurvivesReopen) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  const std::vector<std::string> queries = {"turbines", "saffron risotto", "melody concert",
                                            "sailor anchor harbor", "bread and butter"};
  std::vector<std::vector<std::string>> top10;
  CollectionStats stats;
  {
    auto c = MustCreate(path);
    ASSERT_NE(c, nullptr);
    LoadCorpus(*c);
    ASSERT_TRUE(c->TrainEncoder(text::EncoderOptions()).ok());
    stats = c->Stats();
    for (const auto& q : queries) top10.push_back(TextSearchIds(*c, q, 10));
  }
  auto c = MustOpen(path);
  ASSERT_NE(c, nullptr);
  const CollectionStats reopened = c->Stats();
  EXPECT_EQ(reopened.encoder_version, 1u);
  EXPECT_EQ(reopened.encoder_vocabulary, stats.encoder_vocabulary);
  EXPECT_EQ(reopened.num_documents, stats.num_documents);
  EXPECT_EQ(reopened.ann_vectors, stats.ann_vectors);
  for (size_t i = 0; i < queries.size(); ++i) {
    EXPECT_EQ(top10[i].size(), 10u) << queries[i];
    EXPECT_EQ(TextSearchIds(*c, queries[i], 10), top10[i]) << queries[i];
  }
  // New text-only documents are encoded by the reloaded encoder.
  ASSERT_TRUE(c->Upsert({TextOnly(TextDoc{"light", "A lighthouse on the cliff."})}).ok());
  EXPECT_EQ(MustGetOne(*c, "light", false).encoded_by, 1u);
  EXPECT_EQ(TextSearchIds(*c, "lighthouse").at(0), "light");
}

// Open finishes a re-encoding that a crash interrupted: the state is what
// TrainEncoder writes before it re-encodes.
TEST(TextCollectionTest, OpenFinishesAnInterruptedReencoding) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  const std::vector<TextDoc> corpus = EnglishCorpus(kGenerated);
  {
    auto c = MustCreate(path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Upsert(TextOnlyBatch(corpus)).ok());
    EXPECT_EQ(c->Stats().ann_vectors, 0u);
  }
  {
    auto store = DocStore::Open(path + "/store", StorageOptions());
    ASSERT_TRUE(store.ok()) << store.status();
    text::EncoderOptions options;
    ASSERT_TRUE(Collection::DeriveEncoderDims(kDim, &options).ok());
    auto enc = text::Encoder::Train(
        [&](const std::function<absl::Status(std::string_view)>& sink) -> absl::Status {
          for (const auto& t : corpus) {
            absl::Status s = sink(t.text);
            if (!s.ok()) return s;
          }
          return absl::OkStatus();
        },
        options);
    ASSERT_TRUE(enc.ok()) << enc.status();
    ASSERT_EQ((*enc)->dim(), kDim);
    ASSERT_TRUE((*store)
                    ->PutEncoderState({{"model", (*enc)->Serialize()},
                                       {"version", "1"},
                                       {"reencode_below", std::to_string((*store)->next_label())}})
                    .ok());
  }
  {
    auto c = MustOpen(path);
    ASSERT_NE(c, nullptr);
    const CollectionStats stats = c->Stats();
    EXPECT_EQ(stats.encoder_version, 1u);
    EXPECT_EQ(stats.num_documents, corpus.size());
    EXPECT_EQ(stats.ann_vectors, corpus.size());
    EXPECT_EQ(TextSearchIds(*c, "turbines").at(0), "turbine");
    EXPECT_EQ(TextSearchIds(*c, "saffron").at(0), "saffron");
    EXPECT_EQ(TextSearchIds(*c, "cello").at(0), "cello");
    // Every document is encoded and found by its own text.
    for (size_t i = 0; i < corpus.size(); i += 7) {
      EXPECT_EQ(MustGetOne(*c, corpus[i].id, false).encoded_by, 1u) << corpus[i].id;
      SearchQuery q;
      q.text = corpus[i].text;
      q.top_k = 1000;
      q.candidates = 1000;
      auto r = c->Search(q);
      ASSERT_TRUE(r.ok()) << r.status();
      const std::vector<std::string> ids = Ids(*r);
      EXPECT_NE(std::find(ids.begin(), ids.end(), corpus[i].id), ids.end()) << corpus[i].id;
    }
  }
  auto store = DocStore::Open(path + "/store", StorageOptions());
  ASSERT_TRUE(store.ok()) << store.status();
  auto below = (*store)->GetEncoderState("reencode_below");
  ASSERT_TRUE(below.ok()) << below.status();
  EXPECT_FALSE(below->has_value()) << **below;
  auto version = (*store)->GetEncoderState("version");
  ASSERT_TRUE(version.ok() && version->has_value());
  EXPECT_EQ(**version, "1");
}

// ---------------------------------------------------------------------------
// Bad input.

// Expects INVALID_ARGUMENT naming `field` and nothing of the batch stored.
void ExpectRejectedBatch(Collection& c, std::vector<Document> batch, const std::string& field) {
  const CollectionStats before = c.Stats();
  std::vector<std::string> ids;
  for (const auto& d : batch) ids.push_back(d.id);
  auto r = c.Upsert(std::move(batch));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), field)) << r.status();
  EXPECT_EQ(c.Stats().num_documents, before.num_documents);
  EXPECT_EQ(c.Stats().ann_vectors, before.ann_vectors);
  auto got = c.Get(ids, false);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->documents.empty());
}

TEST(TextCollectionTest, BadDocumentsAreRejectedBeforeAndAfterTraining) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  LoadCorpus(*c);
  for (int trained = 0; trained < 2; ++trained) {
    SCOPED_TRACE(trained ? "after training" : "before training");
    Document good = TextOnly(TextDoc{"good", "A perfectly fine sentence about ships."});
    Document bad = TextOnly(TextDoc{"bad", std::string("broken \xC3\x28 bytes")});
    ExpectRejectedBatch(*c, {good, bad}, "documents[1].text");
    Document truncated = TextOnly(TextDoc{"trunc", std::string("ends mid sequence \xE6\xB3")});
    ExpectRejectedBatch(*c, {truncated, good}, "documents[0].text");
    Document empty;
    empty.id = "empty";
    ExpectRejectedBatch(*c, {good, empty}, "documents[1]");
    if (!trained) ASSERT_TRUE(c->TrainEncoder(text::EncoderOptions()).ok());
  }
}

// A text is never cut without a word: more distinct words than the
// collection's limit, or than the encoder keeps, refuse the batch naming the
// document, and nothing is stored.
TEST(TextCollectionTest, TooManyDistinctWordsAreRefusedNotCut) {
  TempDir dir;
  CollectionOptions options;
  options.limits.max_document_tokens = 40;
  auto created = Collection::Create(dir.Sub("c"), Config(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  Collection& c = **created;
  LoadCorpus(c);
  text::EncoderOptions encoder;
  encoder.max_document_tokens = 30;
  ASSERT_TRUE(c.TrainEncoder(encoder).ok());
  const auto words = [](int n) {
    std::string text;
    for (int i = 0; i < n; ++i)
      text += absl::StrCat("w", std::string(1, char('a' + i % 26)),
                           std::string(1, char('a' + i / 26)), " ");
    return text;
  };
  Document good = TextOnly(TextDoc{"good", words(30)});
  ASSERT_TRUE(c.Upsert({good}).ok());
  EXPECT_EQ(MustGetOne(c, "good", true).num_tokens, 30u);
  Document over_encoder = TextOnly(TextDoc{"enc", words(31)});
  Document fine = TextOnly(TextDoc{"fine", words(3)});
  ExpectRejectedBatch(c, {fine, over_encoder},
                      "documents[1].text: 31 distinct words exceed the built-in encoder's limit "
                      "of 30");
  Document over_limit = TextOnly(TextDoc{"lim", words(41)});
  ExpectRejectedBatch(c, {over_limit},
                      "documents[0].text: 41 distinct words exceed the limit of 40");
}

TEST(TextCollectionTest, BadQueries) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"));
  ASSERT_NE(c, nullptr);
  LoadCorpus(*c);
  ASSERT_TRUE(c->TrainEncoder(text::EncoderOptions()).ok());

  SearchQuery empty;
  empty.top_k = 10;
  auto r = c->Search(empty);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();

  std::mt19937 rng(5);
  SearchQuery both;
  both.text = "turbines";
  both.pooled = RandomUnitRows(rng, 1, kDim);
  both.top_k = 10;
  r = c->Search(both);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  both.pooled.clear();
  both.num_tokens = 1;
  both.tokens = RandomUnitRows(rng, 1, kDim);
  r = c->Search(both);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();

  // Invalid UTF-8 in a query names the text.
  r = TextSearch(*c, std::string("bad \xFF query"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "text")) << r.status();
  // A query without words.
  r = TextSearch(*c, "?! ...");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  // top_k is still checked.
  r = TextSearch(*c, "turbines", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
}

TEST(TextCollectionTest, TrainEncoderNeedsSixteenDimensions) {
  TempDir dir;
  auto c = MustCreate(dir.Sub("c"), Config(8));
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Upsert({TextOnly(TextDoc{"a", "some words to train on"})}).ok());
  auto r = c->TrainEncoder(text::EncoderOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "dim")) << r.status();
  EXPECT_EQ(c->Stats().encoder_version, 0u);
  EXPECT_EQ(c->Stats().num_documents, 1u);
}

TEST(TextCollectionTest, TrainEncoderWithoutTextFailsAndChangesNothing) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  std::mt19937 rng(9);
  std::vector<Document> docs;
  for (int i = 0; i < 20; ++i) docs.push_back(ClientDoc(rng, "v" + std::to_string(i), "", 2));
  {
    auto c = MustCreate(path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Upsert(docs).ok());
    auto r = c->TrainEncoder(text::EncoderOptions());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), "no stored document has text"))
        << r.status();
    EXPECT_EQ(c->Stats().encoder_version, 0u);
    // Still works: vector search, writes; text search still needs training.
    SearchQuery q;
    q.pooled = docs[3].pooled;
    q.top_k = 1;
    q.mode = RerankMode::kNone;  // the pooled vector is the oracle
    auto vr = c->Search(q);
    ASSERT_TRUE(vr.ok()) << vr.status();
    ASSERT_EQ(vr->hits.size(), 1u);
    EXPECT_EQ(vr->hits[0].id, "v3");
    ASSERT_TRUE(c->Upsert({ClientDoc(rng, "v20", "", 1)}).ok());
    EXPECT_EQ(c->Stats().num_documents, 21u);
    auto tr = TextSearch(*c, "anything");
    EXPECT_EQ(tr.status().code(), absl::StatusCode::kFailedPrecondition) << tr.status();
    // Once text arrives, training succeeds.
    ASSERT_TRUE(c->Upsert({TextOnly(TextDoc{"w", "words at last"})}).ok());
    auto ok = c->TrainEncoder(text::EncoderOptions());
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->version, 1u);
    EXPECT_EQ(ok->reencoded, 1u);
  }
  auto c = MustOpen(path);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Stats().num_documents, 22u);
  EXPECT_EQ(c->Stats().encoder_version, 1u);
}

// A text-only document whose text has no words ("?!") is accepted before
// training like any other; training must then neither fail on it nor leave
// the collection unopenable. (After training, such a document is rejected at
// Upsert: "contains no words".)
TEST(TextCollectionTest, TextWithoutWordsDoesNotBreakTraining) {
  TempDir dir;
  const std::string path = dir.Sub("c");
  {
    auto c = MustCreate(path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Upsert(TextOnlyBatch(EnglishCorpus(20))).ok());
    auto up = c->Upsert({TextOnly(TextDoc{"noword", "?! -- ..."})});
    if (!up.ok()) {
      // Rejecting it up front is fine too.
      EXPECT_EQ(up.status().code(), absl::StatusCode::kInvalidArgument) << up.status();
    }
    auto r = c->TrainEncoder(text::EncoderOptions());
    EXPECT_TRUE(r.ok()) << r.status();
  }
  auto c = Collection::Open(path, CollectionOptions());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(TextSearchIds(**c, "turbines").at(0), "turbine");
}

// ---------------------------------------------------------------------------
// Chinese.

TEST(TextCollectionTest, ChineseTextSearch) {
  // Three topics: attention models, cooking, football.
  const std::vector<std::vector<std::string>> topics = {
      {"注意力机制是深度学习模型的核心组件。", "这个神经网络使用了多头注意力机制。",
       "研究人员改进了注意力机制的计算效率。", "模型通过训练数据学习语言的规律。",
       "深度学习需要大量的计算资源和数据。", "神经网络的参数在训练中不断更新。",
       "变换器模型完全依赖注意力机制。", "机器翻译系统采用了编码器和解码器。",
       "研究人员发布了新的预训练语言模型。", "梯度下降是训练神经网络的常用方法。"},
      {"妈妈在厨房里做了一锅红烧肉。", "这道菜需要先把鸡蛋炒熟。", "米饭煮好以后要焖十分钟。",
       "他喜欢在周末包饺子。", "炒青菜的时候要多放一点蒜。", "这家餐厅的面条非常好吃。",
       "做蛋糕需要面粉、牛奶和鸡蛋。", "厨师把牛肉切成薄片再下锅。", "汤里加一点盐和胡椒味道更好。",
       "我们晚饭吃了米饭和炒青菜。"},
      {"足球比赛在晚上八点开始。", "这名前锋在比赛中打进了两个球。", "球队的教练调整了防守阵型。",
       "守门员扑出了对方的点球。", "球迷们在体育场里大声欢呼。", "这支球队赢得了联赛冠军。",
       "中场球员的传球非常准确。", "裁判给了他一张黄牌。", "比赛进入了加时赛。",
       "他们在训练场上练习射门。"},
  };
  TempDir dir;
  auto c = MustCreate(dir.Sub("zh"));
  ASSERT_NE(c, nullptr);
  std::vector<Document> docs;
  std::map<std::string, size_t> topic_of;
  for (size_t t = 0; t < topics.size(); ++t) {
    for (size_t i = 0; i < topics[t].size(); ++i) {
      const std::string id = "z" + std::to_string(t) + "_" + std::to_string(i);
      topic_of[id] = t;
      docs.push_back(TextOnly(TextDoc{id, topics[t][i]}));
    }
  }
  ASSERT_TRUE(c->Upsert(docs).ok());
  auto trained = c->TrainEncoder(text::EncoderOptions());
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->reencoded, docs.size());

  struct Case {
    std::string query;
    size_t topic;
  };
  for (const Case& k : std::vector<Case>{{"注意力机制", 0},
                                         {"神经网络", 0},
                                         {"炒青菜", 1},
                                         {"鸡蛋", 1},
                                         {"守门员", 2},
                                         {"比赛", 2}}) {
    SCOPED_TRACE(k.query);
    auto r = TextSearch(*c, k.query, 5, /*explain=*/true, /*include_text=*/true);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->hits.empty());
    const SearchHit& top = r->hits[0];
    EXPECT_EQ(topic_of[top.id], k.topic) << top.id << ": " << top.text;
    // The top hit holds a query word, highlighted.
    EXPECT_TRUE(absl::StrContains(top.snippet, "<em>")) << top.snippet;
  }
  // "注意力机制" is in four documents of topic 0: all of them come first.
  auto r = TextSearch(*c, "注意力机制", 4, false, true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->hits.size(), 4u);
  for (const auto& h : r->hits) {
    EXPECT_TRUE(absl::StrContains(h.text, "注意力机制")) << h.id << ": " << h.text;
  }
}

}  // namespace
}  // namespace attnsearch
