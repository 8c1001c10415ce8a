// Body of the request fuzz target (see fuzz_targets.h).
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnsearch/v1/search.pb.h"
#include "engine/catalog.h"
#include "fuzz/fuzz_targets.h"
#include "google/protobuf/stubs/logging.h"
#include "server/convert.h"

namespace attnsearch::fuzz {
namespace {

constexpr uint32_t kDim = 16;
constexpr char kCollection[] = "c";

// ATTN_FUZZ_VERBOSE=1 prints each request's outcome (for checking that
// seeds reach the engine).
void Note(const char* what, const absl::Status& s) {
  static const bool verbose = std::getenv("ATTN_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
}

// The seed documents, kept in the collection (a fuzzed upsert may replace
// them, never delete them).
std::set<std::string>* seed_ids = nullptr;

// A catalog in a temporary directory holding collection "c": dim 16, f32
// tokens, numeric field "n", ten documents with text, metadata and vectors,
// and a built-in encoder trained on their text (so text queries run too).
// Created on first use, removed at exit.
Catalog* TheCatalog() {
  static Catalog* catalog = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "attnsearch_fuzz_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    static std::string dir = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    // Invalid UTF-8 in a string field fails the parse (as in the server);
    // protobuf's log line about each is noise here.
    google::protobuf::SetLogHandler(nullptr);
    CatalogOptions options;
    options.data_dir = dir;
    options.collection.storage.sync_writes = false;
    options.collection.storage.block_cache_bytes = size_t{8} << 20;
    options.collection.storage.write_buffer_bytes = size_t{4} << 20;
    options.collection.limits.max_top_k = 50;
    options.collection.limits.max_candidates = 200;
    options.collection.limits.max_query_tokens = 64;
    options.collection.limits.max_document_tokens = 64;
    options.collection.limits.max_batch_documents = 32;
    options.collection.rerank.max_threads = 1;
    options.collection.rebuild_min_tombstones = 64;
    auto opened = Catalog::Open(options);
    ATTN_FUZZ_CHECK(opened.ok());
    Catalog* c = opened->release();
    CollectionConfig config;
    config.dim = kDim;
    config.token_dtype = TokenDtype::kF32;
    config.ann_spec = "HNSW16,Flat";
    config.numeric_fields = {"n"};
    auto coll = c->Create(kCollection, config);
    ATTN_FUZZ_CHECK(coll.ok());
    static const char* kTexts[] = {"the quick brown fox jumps over the lazy dog",
                                   "copy files securely to another computer",
                                   "東京は日本の首都です",
                                   "search engines rank documents by meaning",
                                   "attention weights sum to one over the tokens",
                                   "a lazy afternoon by the river",
                                   "secure shell remote login",
                                   "numbers like 3.14 and 42 are words too",
                                   "Straße und Fluss",
                                   "rank fusion of lexical and semantic scores"};
    seed_ids = new std::set<std::string>;
    std::vector<Document> docs;
    for (int i = 0; i < 10; ++i) {
      Document d;
      d.id = absl::StrCat("seed", i);
      d.text = kTexts[i];
      d.metadata = {{"n", std::to_string(i)}, {"kind", i % 2 ? "odd" : "even"}};
      d.num_tokens = 2;
      for (uint32_t k = 0; k < 2 * kDim; ++k) d.tokens.push_back(float((i * 7 + k * 3) % 11) - 5.f);
      seed_ids->insert(d.id);
      docs.push_back(std::move(d));
    }
    ATTN_FUZZ_CHECK((*coll)->Upsert(std::move(docs)).ok());
    text::EncoderOptions encoder_options;
    Note("train encoder", (*coll)->TrainEncoder(encoder_options).status());
    return c;
  }();
  return catalog;
}

void FuzzSearch(const v1::SearchRequest& req) {
  auto c = TheCatalog()->Get(req.collection());
  if (!c.ok()) return;
  SearchQuery q;
  const absl::Status converted = FromProto(req, (*c)->config().dim, &q);
  if (!converted.ok()) return Note("search request", converted);
  const size_t top_k = q.top_k;
  auto r = (*c)->Search(std::move(q));
  Note("search", r.status());
  if (!r.ok()) {
    ATTN_FUZZ_CHECK(r.status().code() != absl::StatusCode::kInternal);
    return;
  }
  ATTN_FUZZ_CHECK(r->hits.size() <= top_k);
  v1::SearchResponse resp;
  ToProto(std::move(*r), &resp);
  (void)resp.ByteSizeLong();
}

void FuzzUpsert(const v1::UpsertRequest& req) {
  auto c = TheCatalog()->Get(req.collection());
  if (!c.ok()) return;
  std::vector<Document> docs(size_t(req.documents_size()));
  for (int i = 0; i < req.documents_size(); ++i) {
    const absl::Status converted = FromProto(req.documents(i), absl::StrCat("documents[", i, "]"),
                                             (*c)->config().dim, &docs[size_t(i)]);
    if (!converted.ok()) return Note("upsert request", converted);
  }
  std::vector<std::string> ids;
  for (const Document& d : docs) ids.push_back(d.id);
  auto n = (*c)->Upsert(std::move(docs));
  Note("upsert", n.status());
  if (!n.ok()) {
    ATTN_FUZZ_CHECK(n.status().code() != absl::StatusCode::kInternal);
    return;
  }
  // What was stored reads back.
  auto got = (*c)->Get(ids, /*include_vectors=*/true);
  ATTN_FUZZ_CHECK(got.ok());
  ATTN_FUZZ_CHECK(got->not_found_ids.empty());
  std::vector<std::string> fresh;
  for (const std::string& id : ids) {
    if (seed_ids->count(id) == 0) fresh.push_back(id);
  }
  if (!fresh.empty()) ATTN_FUZZ_CHECK((*c)->Delete(fresh).ok());
}

}  // namespace

int FuzzRequest(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  TheCatalog();
  const uint8_t which = data[0];
  if (which % 2 == 0) {
    v1::SearchRequest req;
    if (req.ParseFromArray(data + 1, int(size - 1))) FuzzSearch(req);
  } else {
    v1::UpsertRequest req;
    if (req.ParseFromArray(data + 1, int(size - 1))) FuzzUpsert(req);
  }
  return 0;
}

}  // namespace attnsearch::fuzz
