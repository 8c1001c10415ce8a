// Conversions between the attnsearch.v1 messages and the engine's types.
// Shape errors that only the wire format can have (a Matrix whose values do
// not match rows x cols, an unknown enum value) are reported here, naming
// the field; everything else is validated by the engine.
#ifndef ATTNSEARCH_SERVER_CONVERT_H_
#define ATTNSEARCH_SERVER_CONVERT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attnsearch/v1/search.pb.h"
#include "engine/catalog.h"
#include "engine/collection.h"
#include "grpcpp/support/status.h"

namespace attnsearch {

// Longest status message sent; a longer one is cut there (at a UTF-8
// boundary) and says how long it was.
inline constexpr size_t kMaxStatusMessageBytes = 2048;

// The one place an absl::Status becomes a grpc::Status (the codes share
// their numbers).
grpc::Status ToGrpc(const absl::Status& status);

absl::StatusOr<CollectionConfig> FromProto(const v1::CollectionConfig& in);
void ToProto(const std::string& name, const Collection& c, v1::CollectionInfo* out);

// `field` prefixes error messages, e.g. "documents[3]".
absl::Status FromProto(const v1::Document& in, const std::string& field, uint32_t dim,
                       Document* out);
void ToProto(Document&& in, bool include_vectors, v1::Document* out);

// `dim` is the collection's dimension (token matrices must have dim columns).
absl::Status FromProto(const v1::SearchRequest& in, uint32_t dim, SearchQuery* out);
void ToProto(SearchResult&& in, v1::SearchResponse* out);

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_CONVERT_H_
