#include "server/convert.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/utf8.h"
#include "core/vector_math.h"

namespace attnsearch {
namespace {

// Bytes a value takes in `data` when packed in `encoding`; 0 if unknown.
size_t EncodedBytes(v1::ValueEncoding encoding) {
  switch (encoding) {
    case v1::VALUE_ENCODING_F32:
      return 4;
    case v1::VALUE_ENCODING_BF16:
    case v1::VALUE_ENCODING_F16:
      return 2;
    default:
      return 0;
  }
}

// Checks that a Matrix's values (or packed data) fill rows x cols.
absl::Status MatrixShape(const v1::Matrix& m, const std::string& field) {
  const uint64_t want = uint64_t(m.rows()) * m.cols();
  if (!m.data().empty()) {
    if (m.values_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": give values or data, not both"));
    }
    const size_t bytes = EncodedBytes(m.encoding());
    if (bytes == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".encoding: unknown value ", int(m.encoding())));
    }
    if (want * bytes != m.data().size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".data: rows x cols = ", m.rows(), " x ", m.cols(), " = ", want,
                       " values of ", bytes, " bytes, but ", m.data().size(), " bytes were given"));
    }
    return absl::OkStatus();
  }
  if (want != uint64_t(m.values_size())) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": rows x cols = ", m.rows(), " x ",
                                                   m.cols(), " = ", want, " but ", m.values_size(),
                                                   " values were given"));
  }
  return absl::OkStatus();
}

// Copies a Matrix that must have `dim` columns (or be empty).
absl::Status CopyMatrix(const v1::Matrix& m, uint32_t dim, const std::string& field, uint32_t* rows,
                        std::vector<float>* values) {
  ATTN_RETURN_IF_ERROR(MatrixShape(m, field));
  if (m.rows() > 0 && m.cols() != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".cols: expected ", dim, ", got ", m.cols()));
  }
  *rows = m.rows();
  if (m.data().empty()) {
    values->assign(m.values().begin(), m.values().end());
    return absl::OkStatus();
  }
  const size_t n = size_t(m.rows()) * m.cols();
  values->resize(n);
  const char* data = m.data().data();
  switch (m.encoding()) {
    case v1::VALUE_ENCODING_BF16:
    case v1::VALUE_ENCODING_F16: {
      // The bytes of a std::string need not be 2-aligned: converted in
      // aligned chunks.
      uint16_t chunk[1024];
      for (size_t i = 0; i < n; i += 1024) {
        const size_t k = std::min<size_t>(1024, n - i);
        std::memcpy(chunk, data + 2 * i, 2 * k);
        if (m.encoding() == v1::VALUE_ENCODING_BF16) {
          Bf16ToFloat(chunk, values->data() + i, k);
        } else {
          HalfToFloat(chunk, values->data() + i, k);
        }
      }
      break;
    }
    default:
      std::memcpy(values->data(), data, 4 * n);
      break;
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  // A message quoting a long input (a name, a spec) would pass gRPC's limit
  // on a response's metadata (8 KiB by default): the client would get
  // RESOURCE_EXHAUSTED about the metadata instead of this status.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      CutText(message, kMaxStatusMessageBytes));
}

absl::StatusOr<CollectionConfig> FromProto(const v1::CollectionConfig& in) {
  CollectionConfig c;
  c.dim = in.dim();
  switch (in.token_dtype()) {
    case v1::TOKEN_DTYPE_UNSPECIFIED:
    case v1::TOKEN_DTYPE_BF16:
      c.token_dtype = TokenDtype::kBF16;
      break;
    case v1::TOKEN_DTYPE_F32:
      c.token_dtype = TokenDtype::kF32;
      break;
    case v1::TOKEN_DTYPE_INT8:
      c.token_dtype = TokenDtype::kInt8;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("config.token_dtype: unknown value ", int(in.token_dtype())));
  }
  if (!in.ann_spec().empty()) c.ann_spec = in.ann_spec();
  c.numeric_fields.assign(in.numeric_fields().begin(), in.numeric_fields().end());
  const v1::TokenCodec& tc = in.token_codec();
  if (tc.name().empty() || tc.name() == "rows") {
    c.token_codec.kind = TokenCodecKind::kRows;
  } else if (tc.name() == "residual") {
    c.token_codec.kind = TokenCodecKind::kResidual;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("config.token_codec.name: unknown codec '", tc.name(), "' (rows, residual)"));
  }
  if (c.token_codec.kind == TokenCodecKind::kRows) {
    // The fields below belong to the residual codec: given with rows, they
    // would be dropped without a word.
    const char* field = tc.bits() != 0                   ? "bits"
                        : tc.centroids() != 0            ? "centroids"
                        : tc.has_train_after_documents() ? "train_after_documents"
                        : tc.has_keep_full_precision()   ? "keep_full_precision"
                                                         : nullptr;
    if (field != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("config.token_codec.", field,
                                                     ": applies to the residual codec only, "
                                                     "not to rows"));
    }
  }
  if (tc.bits() != 0) c.token_codec.bits = tc.bits();
  c.token_codec.centroids = tc.centroids();
  if (tc.has_train_after_documents()) c.token_codec.train_after = tc.train_after_documents();
  if (tc.has_keep_full_precision()) c.token_codec.keep_full_precision = tc.keep_full_precision();
  ATTN_ASSIGN_OR_RETURN(c.candidates_from,
                        ParseCandidateSource(in.candidates_from(), "config.candidates_from"));
  ATTN_RETURN_IF_ERROR(c.Validate());
  return c;
}

void ToProto(const std::string& name, const Collection& c, v1::CollectionInfo* out) {
  out->set_name(name);
  const CollectionConfig& cfg = c.config();
  out->mutable_config()->set_dim(cfg.dim);
  out->mutable_config()->set_token_dtype(cfg.token_dtype == TokenDtype::kF32 ? v1::TOKEN_DTYPE_F32
                                         : cfg.token_dtype == TokenDtype::kInt8
                                             ? v1::TOKEN_DTYPE_INT8
                                             : v1::TOKEN_DTYPE_BF16);
  out->mutable_config()->set_ann_spec(cfg.ann_spec);
  for (const auto& f : cfg.numeric_fields) out->mutable_config()->add_numeric_fields(f);
  out->mutable_config()->set_candidates_from(std::string(CandidateSourceName(cfg.candidates_from)));
  v1::TokenCodec* tc = out->mutable_config()->mutable_token_codec();
  tc->set_name(std::string(TokenCodecName(cfg.token_codec.kind)));
  if (cfg.token_codec.kind == TokenCodecKind::kResidual) {
    tc->set_bits(cfg.token_codec.bits);
    tc->set_centroids(cfg.token_codec.centroids);
    tc->set_train_after_documents(cfg.token_codec.train_after);
    tc->set_keep_full_precision(cfg.token_codec.keep_full_precision);
  }
  const CollectionStats s = c.Stats();
  out->set_num_documents(s.num_documents);
  out->set_num_tombstones(s.num_tombstones);
  out->set_encoder_version(s.encoder_version);
  out->set_encoder_vocabulary(s.encoder_vocabulary);
  out->set_rebuild_in_progress(s.rebuild_in_progress);
  out->set_rebuilds(s.rebuilds);
  out->set_ann_vectors(s.ann_vectors);
  out->set_ann_pending(s.ann_pending);
  out->set_tuned_ann_params(s.tuned_ann_params);
  out->set_tuned_target_recall(s.tuned_target_recall);
  v1::DiskUsage* disk = out->mutable_disk();
  disk->set_total_bytes(s.disk_bytes);
  disk->set_table_bytes(s.disk_table_bytes);
  disk->set_log_bytes(s.disk_log_bytes);
  disk->set_ann_snapshot_bytes(s.disk_ann_bytes);
  disk->set_other_bytes(s.disk_other_bytes);
  disk->set_bytes_per_document(
      s.num_documents == 0 ? 0.0 : double(s.disk_bytes) / double(s.num_documents));
  out->set_codec_version(s.codec_version);
  out->set_codec_pending(s.codec_pending);
  v1::MemoryUsage* memory = out->mutable_memory();
  memory->set_token_arena(s.token_arena);
  memory->set_arena_bytes(s.arena_bytes);
  memory->set_arena_tokens(s.arena_tokens);
  memory->set_first_stage_bytes(s.first_stage_bytes);
  memory->set_arena_bytes_per_token(
      s.arena_tokens == 0 ? 0.0 : double(s.arena_live_bytes) / double(s.arena_tokens));
}

absl::Status FromProto(const v1::Document& in, const std::string& field, uint32_t dim,
                       Document* out) {
  out->id = in.id();
  out->text = in.text();
  out->metadata = {in.metadata().begin(), in.metadata().end()};
  out->pooled.assign(in.pooled().begin(), in.pooled().end());
  out->token_texts.assign(in.token_texts().begin(), in.token_texts().end());
  out->token_spans.clear();
  for (const auto& s : in.token_spans()) out->token_spans.emplace_back(s.begin(), s.end());
  return CopyMatrix(in.tokens(), dim, field + ".tokens", &out->num_tokens, &out->tokens);
}

void ToProto(Document&& in, bool include_vectors, v1::Document* out) {
  out->set_id(std::move(in.id));
  out->set_text(std::move(in.text));
  for (auto& [k, v] : in.metadata) (*out->mutable_metadata())[k] = std::move(v);
  for (auto& t : in.token_texts) out->add_token_texts(std::move(t));
  for (const auto& [b, e] : in.token_spans) {
    v1::TokenSpan* s = out->add_token_spans();
    s->set_begin(b);
    s->set_end(e);
  }
  if (include_vectors) {
    out->mutable_pooled()->Add(in.pooled.begin(), in.pooled.end());
    v1::Matrix* m = out->mutable_tokens();
    m->set_rows(in.num_tokens);
    m->set_cols(in.num_tokens > 0 ? uint32_t(in.tokens.size() / in.num_tokens) : 0);
    m->mutable_values()->Add(in.tokens.begin(), in.tokens.end());
  }
}

absl::Status FromProto(const v1::SearchRequest& in, uint32_t dim, SearchQuery* out) {
  switch (in.query_case()) {
    case v1::SearchRequest::kText:
      if (in.text().empty()) return absl::InvalidArgumentError("text: empty query");
      out->text = in.text();
      break;
    case v1::SearchRequest::kVectors: {
      const v1::QueryVectors& v = in.vectors();
      out->pooled.assign(v.pooled().begin(), v.pooled().end());
      ATTN_RETURN_IF_ERROR(
          CopyMatrix(v.tokens(), dim, "query.tokens", &out->num_tokens, &out->tokens));
      out->token_weights.assign(v.token_weights().begin(), v.token_weights().end());
      break;
    }
    default:
      return absl::InvalidArgumentError("query: empty; set text or vectors");
  }
  out->top_k = in.top_k();
  out->candidates = in.candidates();
  switch (in.rerank()) {
    case v1::RERANK_MODE_UNSPECIFIED:
    case v1::RERANK_MODE_ATTENTION:
      out->mode = RerankMode::kAttention;
      break;
    case v1::RERANK_MODE_MAXSIM:
      out->mode = RerankMode::kMaxSim;
      break;
    case v1::RERANK_MODE_NONE:
      out->mode = RerankMode::kNone;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("rerank: unknown mode ", int(in.rerank())));
  }
  out->temperature = in.temperature();
  switch (in.retrieval()) {
    case v1::RETRIEVAL_UNSPECIFIED:
      out->retrieval = Retrieval::kDefault;
      break;
    case v1::RETRIEVAL_SEMANTIC:
      out->retrieval = Retrieval::kSemantic;
      break;
    case v1::RETRIEVAL_LEXICAL:
      out->retrieval = Retrieval::kLexical;
      break;
    case v1::RETRIEVAL_HYBRID:
      out->retrieval = Retrieval::kHybrid;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("retrieval: unknown value ", int(in.retrieval())));
  }
  if (in.has_fusion_weight()) out->fusion_weight = in.fusion_weight();
  out->diversify.collapse_field = in.diversify().collapse_field();
  out->diversify.max_per_value = in.diversify().max_per_value();
  out->diversify.max_similarity = in.diversify().max_similarity();
  for (const auto& c : in.filter().must()) {
    out->filter.push_back({c.key(), {c.values().begin(), c.values().end()}});
  }
  for (const auto& r : in.filter().ranges()) {
    RangeCondition rc;
    rc.key = r.key();
    if (r.has_gte()) rc.gte = r.gte();
    if (r.has_gt()) rc.gt = r.gt();
    if (r.has_lte()) rc.lte = r.lte();
    if (r.has_lt()) rc.lt = r.lt();
    out->ranges.push_back(std::move(rc));
  }
  out->ann_params = in.ann_params();
  out->include_text = in.include_text();
  out->include_metadata = in.include_metadata();
  out->explain = in.explain();
  out->attention_map = in.attention_map();
  // The marks come in pairs: one of them alone would close "<b>" with "</em>".
  if (in.highlight_pre().empty() != in.highlight_post().empty()) {
    return absl::InvalidArgumentError(in.highlight_pre().empty()
                                          ? "highlight_pre: give it with highlight_post"
                                          : "highlight_post: give it with highlight_pre");
  }
  if (!in.highlight_pre().empty()) out->highlight_pre = in.highlight_pre();
  if (!in.highlight_post().empty()) out->highlight_post = in.highlight_post();
  return absl::OkStatus();
}

void ToProto(SearchResult&& in, v1::SearchResponse* out) {
  for (auto& h : in.hits) {
    v1::Hit* hit = out->add_hits();
    hit->set_id(std::move(h.id));
    hit->set_score(h.score);
    hit->set_ann_score(h.ann_score);
    hit->set_text(std::move(h.text));
    for (auto& [k, v] : h.metadata) (*hit->mutable_metadata())[k] = std::move(v);
    for (auto& m : h.matches) {
      v1::TokenMatch* tm = hit->add_matches();
      tm->set_query_token(m.query_token);
      tm->set_document_token(m.document_token);
      tm->set_document_token_text(std::move(m.document_token_text));
      tm->set_weight(m.weight);
      tm->set_contribution(m.contribution);
      if (m.has_span) {
        tm->mutable_span()->set_begin(m.span_begin);
        tm->mutable_span()->set_end(m.span_end);
      }
    }
    hit->set_snippet(std::move(h.snippet));
    hit->set_lexical_score(h.lexical_score);
    hit->set_from_codes(h.from_codes);
    if (!h.attention.empty()) {
      v1::AttentionMap* a = hit->mutable_attention();
      a->set_document_tokens(h.attention_cols);
      a->set_query_tokens(uint32_t(h.attention.size() / std::max<uint32_t>(1, h.attention_cols)));
      a->mutable_weights()->Add(h.attention.begin(), h.attention.end());
      for (auto& t : h.token_texts) a->add_document_token_texts(std::move(t));
      for (const auto& [begin, end] : h.token_spans) {
        v1::TokenSpan* span = a->add_document_token_spans();
        span->set_begin(begin);
        span->set_end(end);
      }
    }
  }
  for (auto& t : in.query_token_texts) out->add_query_token_texts(std::move(t));
  v1::Timing* t = out->mutable_timing();
  t->set_encode_us(uint64_t(in.timing.encode_us));
  t->set_ann_us(uint64_t(in.timing.ann_us));
  t->set_fetch_us(uint64_t(in.timing.fetch_us));
  t->set_rerank_us(uint64_t(in.timing.rerank_us));
  t->set_total_us(uint64_t(in.timing.total_us));
  t->set_queue_us(uint64_t(in.timing.queue_us));
  v1::CandidateSources* sources = out->mutable_sources();
  sources->set_store(in.sources.store);
  sources->set_codes(in.sources.codes);
  sources->set_previous_codes(in.sources.previous_codes);
  sources->set_first_stage(std::string(CandidateSourceName(in.sources.first_stage)));
  sources->set_retrieval(std::string(RetrievalName(in.sources.retrieval)));
  sources->set_lexical(in.sources.lexical);
  sources->set_diversified(in.sources.diversified);
}

}  // namespace attnsearch
