// The JSON API: every SearchService RPC over HTTP, at POST /v1/<Rpc> (e.g.
// POST /v1/Search), with request and response bodies in protobuf's JSON
// mapping, so it can never drift from the proto. Each call goes through
// the server's own gRPC service over an in-process channel, carrying the
// request's Authorization header as its metadata: the same API keys,
// limits and validation apply. A gRPC status maps to an HTTP status
// (HttpStatusOf) and the body is {"error": {"code": HTTP status, "status":
// "INVALID_ARGUMENT", "message": the server's message}}. UpsertStream takes
// a JSON array of UpsertRequest objects, streamed in order.
#ifndef ATTNSEARCH_SERVER_JSON_GATEWAY_H_
#define ATTNSEARCH_SERVER_JSON_GATEWAY_H_

#include <memory>

#include "grpcpp/grpcpp.h"
#include "http/http_server.h"
#include "server/auth.h"

namespace attnsearch {

// The HTTP status of a gRPC status code: OK 200, INVALID_ARGUMENT,
// FAILED_PRECONDITION and OUT_OF_RANGE 400, UNAUTHENTICATED 401,
// PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS and ABORTED 409,
// RESOURCE_EXHAUSTED 429, CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE
// 503, DEADLINE_EXCEEDED 504, anything else 500.
int HttpStatusOf(grpc::StatusCode code);

// Registers the routes on `http`, answered through `channel`. With `keys`
// (borrowed; must outlive `http`'s serving) that hold keys, the body of a
// request without a valid key is not read: the call reaches the service
// empty and gets its 401, so only callers with a key learn what the API
// expects.
void RegisterJsonGateway(HttpServer* http, std::shared_ptr<grpc::Channel> channel,
                         const ApiKeys* keys = nullptr);

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_JSON_GATEWAY_H_
