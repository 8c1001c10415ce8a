// Client-side helpers of the server tests: channels, stubs and requests,
// for a server in a child process (server_process.h) or in this one
// (in_process_server.h) alike.
#ifndef ATTNSEARCH_TESTS_SERVER_SERVER_CHANNEL_H_
#define ATTNSEARCH_TESTS_SERVER_SERVER_CHANNEL_H_

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace attnsearch::testing {

// An insecure channel to `address` that accepts messages as large as the
// server does by default.
inline std::shared_ptr<grpc::Channel> NewServerChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A fresh connection per channel: a restarted server gets a new one.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// An UpsertRequest of `docs` for `collection`.
inline attnsearch::v1::UpsertRequest MakeUpsertRequest(
    const std::string& collection, const std::vector<attnsearch::v1::Document>& docs) {
  attnsearch::v1::UpsertRequest req;
  req.set_collection(collection);
  for (const auto& d : docs) *req.add_documents() = d;
  return req;
}

inline std::unique_ptr<attnsearch::v1::SearchService::Stub> NewSearchStub(
    const std::shared_ptr<grpc::Channel>& channel) {
  return attnsearch::v1::SearchService::NewStub(channel);
}

inline std::unique_ptr<attnsearch::v1::SearchService::Stub> NewSearchStub(
    const std::string& address) {
  return NewSearchStub(NewServerChannel(address));
}

// grpc.health.v1.Health/Check of `service` ("": the whole server); the
// response bytes.
inline grpc::Status HealthCheck(grpc::GenericStub* generic, std::string* response,
                                const std::string& service = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ctx.set_wait_for_ready(true);  // the port is not bound yet at first
  // HealthCheckRequest{service}: field 1, length-delimited.
  std::string bytes;
  if (!service.empty()) bytes = std::string("\x0a") + char(service.size()) + service;
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer reply;
  std::promise<grpc::Status> done;
  generic->UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &reply,
                     [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status s = done.get_future().get();
  std::vector<grpc::Slice> slices;
  response->clear();
  if (s.ok() && reply.Dump(&slices).ok()) {
    for (const auto& sl : slices) {
      response->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
  }
  return s;
}

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_SERVER_SERVER_CHANNEL_H_
