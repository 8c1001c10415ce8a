#include "server/json_gateway.h"

#include <algorithm>
#include <string>

#include "attnsearch/v1/search.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace attnsearch {
namespace {

using Stub = v1::SearchService::Stub;

constexpr const char* kCodeNames[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// {"error": {"code": HTTP status, "status": name, "message": ...}}.
HttpResponse ErrorShape(int http_status, const char* name, const std::string& message) {
  nlohmann::json body = {
      {"error", {{"code", http_status}, {"status", name}, {"message", message}}}};
  // Bytes of the request that are not UTF-8 (quoted back in a message) are
  // replaced, not thrown on.
  return HttpResponse{http_status,
                      "application/json",
                      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                      {}};
}

HttpResponse Error(grpc::StatusCode code, const std::string& message) {
  const int c = int(code);
  return ErrorShape(HttpStatusOf(code), c >= 0 && c <= 16 ? kCodeNames[c] : "UNKNOWN", message);
}

// The body (`field`) as a request message (an empty body is the empty
// message).
bool Parse(const std::string& json, google::protobuf::Message* out, HttpResponse* error,
           const std::string& field = "body") {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      json.find_first_not_of(" \t\r\n") == std::string::npos ? "{}" : json, out, options);
  if (status.ok()) return true;
  *error = Error(grpc::StatusCode::INVALID_ARGUMENT, field + ": not a JSON " +
                                                         out->GetDescriptor()->name() + ": " +
                                                         std::string(status.message()));
  return false;
}

HttpResponse Reply(const grpc::Status& status, const google::protobuf::Message& response) {
  if (!status.ok()) return Error(status.error_code(), status.error_message());
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;  // the proto's names, as the requests may use
  // A score of 0, an empty text, false: printed, not left out, so that a
  // client reads every field the proto declares (repeated ones as []).
  options.always_print_primitive_fields = true;
  const auto printed = google::protobuf::util::MessageToJsonString(response, &json, options);
  if (!printed.ok()) return Error(grpc::StatusCode::INTERNAL, std::string(printed.message()));
  return HttpResponse{200, "application/json", json + "\n", {}};
}

// Passes the request's Authorization header on as the call's metadata.
// False, with the 401 in *error, when the header holds a byte gRPC does not
// allow in metadata (printable ASCII only): gRPC would abort the call, and
// the process with it.
bool Authorize(const HttpRequest& r, grpc::ClientContext* ctx, HttpResponse* error) {
  for (const char c : r.authorization) {
    if (c < 0x20 || c > 0x7e) {
      *error = Error(grpc::StatusCode::UNAUTHENTICATED,
                     "the Authorization header must be printable ASCII ('Bearer KEY'); API keys "
                     "are printable ASCII");
      return false;
    }
  }
  if (!r.authorization.empty()) ctx->AddMetadata("authorization", r.authorization);
  // The request id, when the service would take it (else it makes one).
  const bool usable_id = !r.request_id.empty() && r.request_id.size() <= 128 &&
                         std::all_of(r.request_id.begin(), r.request_id.end(), [](char c) {
                           return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
                         });
  if (usable_id) ctx->AddMetadata("x-request-id", r.request_id);
  return true;
}

// The reply, with the call's request id (the client's or the one the
// service made) as the X-Request-Id header.
HttpResponse ReplyWithId(const grpc::ClientContext& ctx, const grpc::Status& status,
                         const google::protobuf::Message& response) {
  HttpResponse reply = Reply(status, response);
  const auto& md = ctx.GetServerInitialMetadata();
  if (const auto it = md.find("x-request-id"); it != md.end()) {
    reply.headers.emplace_back("X-Request-Id", std::string(it->second.data(), it->second.size()));
  }
  return reply;
}

// False when keys are configured and the request's is none of them (any
// access will do: the service checks a write RPC's access itself). Such a
// request's body is not read: the call goes to the service empty, which
// refuses it, logs and counts it as it does any call.
bool KeyKnown(const HttpRequest& r, const ApiKeys* keys) {
  if (keys == nullptr || !keys->enabled()) return true;
  const std::string_view header = r.authorization;
  return keys->CheckAuthorization(header.empty() ? nullptr : &header, Access::kRead).ok();
}

template <typename Req, typename Resp>
void Route(HttpServer* http, std::shared_ptr<Stub> stub, const ApiKeys* keys,
           const std::string& name,
           grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*)) {
  http->Post("/v1/" + name, [stub, keys, method](const HttpRequest& r) {
    grpc::ClientContext ctx;
    HttpResponse error;
    if (!Authorize(r, &ctx, &error)) return error;
    Req request;
    if (KeyKnown(r, keys) && !Parse(r.body, &request, &error)) return error;
    Resp response;
    const grpc::Status status = ((*stub).*method)(&ctx, request, &response);
    return ReplyWithId(ctx, status, response);
  });
}

}  // namespace

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::CANCELLED:
      return 499;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

void RegisterJsonGateway(HttpServer* http, std::shared_ptr<grpc::Channel> channel,
                         const ApiKeys* keys) {
  auto stub = std::shared_ptr<Stub>(v1::SearchService::NewStub(channel));
  Route(http, stub, keys, "CreateCollection", &Stub::CreateCollection);
  Route(http, stub, keys, "GetCollection", &Stub::GetCollection);
  Route(http, stub, keys, "ListCollections", &Stub::ListCollections);
  Route(http, stub, keys, "DropCollection", &Stub::DropCollection);
  Route(http, stub, keys, "Upsert", &Stub::Upsert);
  Route(http, stub, keys, "Delete", &Stub::Delete);
  Route(http, stub, keys, "Get", &Stub::Get);
  Route(http, stub, keys, "Search", &Stub::Search);
  Route(http, stub, keys, "TrainEncoder", &Stub::TrainEncoder);
  Route(http, stub, keys, "TrainCodec", &Stub::TrainCodec);
  Route(http, stub, keys, "TuneIndex", &Stub::TuneIndex);
  Route(http, stub, keys, "Backup", &Stub::Backup);
  // The HTTP server's own errors under /v1/ (another method, no length, a
  // body too large, a malformed request) in the API's error shape too.
  http->SetErrorFormat([](int status, const std::string& path, const std::string& message) {
    if (path.rfind("/v1/", 0) != 0) {
      return PlainTextError(status, message);
    }
    const char* name = status == 405   ? "UNIMPLEMENTED"
                       : status == 413 ? "RESOURCE_EXHAUSTED"
                       : status == 404 ? "NOT_FOUND"
                                       : "INVALID_ARGUMENT";
    return ErrorShape(status, name, message);
  });
  // Any other path under /v1/: the API's error shape, not a bare 404.
  http->NotFound("/v1/", [](const HttpRequest& r) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 "no RPC at " + r.path + " (POST /v1/<Rpc>, e.g. /v1/Search; see search.proto)");
  });
  // A JSON array of UpsertRequest objects, written in order on one stream.
  http->Post("/v1/UpsertStream", [stub, keys](const HttpRequest& r) {
    grpc::ClientContext ctx;
    HttpResponse error;
    if (!Authorize(r, &ctx, &error)) return error;
    const bool known = KeyKnown(r, keys);
    const nlohmann::json batches = known ? nlohmann::json::parse(r.body, nullptr,
                                                                 /*allow_exceptions=*/false)
                                         : nlohmann::json::array();
    if (!batches.is_array()) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   "body: UpsertStream takes a JSON array of UpsertRequest objects");
    }
    std::vector<v1::UpsertRequest> requests(batches.size());
    for (size_t i = 0; i < batches.size(); ++i) {
      if (!Parse(batches[i].dump(), &requests[i], &error, "body[" + std::to_string(i) + "]")) {
        return error;
      }
    }
    v1::UpsertResponse response;
    auto writer = stub->UpsertStream(&ctx, &response);
    for (const v1::UpsertRequest& request : requests) {
      if (!writer->Write(request)) break;  // the server ended the stream: Finish says why
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    return ReplyWithId(ctx, status, response);
  });
}

}  // namespace attnsearch
