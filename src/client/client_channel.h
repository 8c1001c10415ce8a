// Channels of the command-line clients (attnsearch-index, attnsearch-demo)
// to a server that may require TLS and an API key.
//
//   --api_key_file FILE   the key: the first field of the file's first line
//                         that is neither blank nor a '#' comment (a line of
//                         the server's key file works as is); without it,
//                         the environment variable ATTNSEARCH_API_KEY
//   --tls_ca FILE         connect with TLS, trusting the PEM certificates in
//                         FILE (e.g. a self-signed server certificate)
//
// The key is sent on every call as `authorization: Bearer KEY`. It is never
// printed: errors name the file only.
#ifndef ATTNSEARCH_CLIENT_CLIENT_CHANNEL_H_
#define ATTNSEARCH_CLIENT_CLIENT_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace attnsearch {

struct ClientSecurity {
  // File holding the API key; empty: ATTNSEARCH_API_KEY, if set.
  std::string api_key_file;
  // PEM file of the certificates to trust; empty: plaintext.
  std::string tls_ca_file;
};

// A channel to `address` with `args`, using TLS and sending the API key as
// `security` says. INVALID_ARGUMENT / NOT_FOUND naming the file that cannot
// be used.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewClientChannel(const std::string& address,
                                                                const ClientSecurity& security,
                                                                grpc::ChannelArguments args = {});

// The API key `security` names ("" when none is configured).
absl::StatusOr<std::string> LoadApiKey(const ClientSecurity& security);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CLIENT_CLIENT_CHANNEL_H_
