#include "client/client_channel.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/client_interceptor.h"

namespace attnsearch {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": a directory, not the ", what));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the ", what));
  return ss.str();
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// The first field of the first line that is not blank or a comment.
std::string FirstKey(std::string_view text) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    size_t b = 0;
    while (b < line.size() && IsSpace(line[b])) ++b;
    if (b == line.size() || line[b] == '#') continue;
    size_t e = b;
    while (e < line.size() && !IsSpace(line[e])) ++e;
    return std::string(line.substr(b, e - b));
  }
  return "";
}

// Adds the authorization header to every call of the channel.
class ApiKeyInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class ApiKeyInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(std::string key) : header_("Bearer " + std::move(key)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new ApiKeyInterceptor(&header_);
  }

 private:
  // Lives as long as the channel, which owns the factory.
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::string> LoadApiKey(const ClientSecurity& security) {
  if (security.api_key_file.empty()) {
    const char* env = std::getenv("ATTNSEARCH_API_KEY");
    return env == nullptr ? std::string() : FirstKey(env);
  }
  auto text = ReadFile(security.api_key_file, "API key file");
  if (!text.ok()) return text.status();
  std::string key = FirstKey(*text);
  if (key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(security.api_key_file, ": holds no API key"));
  }
  return key;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewClientChannel(const std::string& address,
                                                                const ClientSecurity& security,
                                                                grpc::ChannelArguments args) {
  if (address.find_first_not_of(" \t") == std::string::npos) {
    return absl::InvalidArgumentError("server: empty; give the server's HOST:PORT");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!security.tls_ca_file.empty()) {
    auto ca = ReadFile(security.tls_ca_file, "TLS CA file");
    if (!ca.ok()) return ca.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(ca);
    credentials = grpc::SslCredentials(ssl);
  }
  auto key = LoadApiKey(security);
  if (!key.ok()) return key.status();
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (!key->empty()) factories.push_back(std::make_unique<ApiKeyInterceptorFactory>(*key));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                                 std::move(factories));
}

}  // namespace attnsearch
