#include "http/http_server.h"

#include <httplib.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attnsearch {

namespace {

std::unique_ptr<httplib::Server> MakeServer(const HttpServerOptions& o) {
  if (o.tls_cert.empty()) return std::make_unique<httplib::Server>();
  return std::make_unique<httplib::SSLServer>(o.tls_cert.c_str(), o.tls_key.c_str());
}

// The path as a regular expression matching only itself.
std::string Escaped(const std::string& path) {
  std::string pattern;
  for (char c : path) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) pattern += '\\';
    pattern += c;
  }
  return pattern;
}

// Whether an Accept-Encoding header admits gzip ("gzip", "x-gzip" or "*",
// with no q=0).
bool AcceptsGzip(absl::string_view header) {
  bool gzip = false;
  for (absl::string_view item : absl::StrSplit(header, ',')) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ';');
    const absl::string_view coding = absl::StripAsciiWhitespace(parts[0]);
    if (!absl::EqualsIgnoreCase(coding, "gzip") && !absl::EqualsIgnoreCase(coding, "x-gzip") &&
        coding != "*") {
      continue;
    }
    bool zero = false;
    for (size_t i = 1; i < parts.size(); ++i) {
      const absl::string_view param = absl::StripAsciiWhitespace(parts[i]);
      double q = 1;
      if (absl::StartsWithIgnoreCase(param, "q=") && absl::SimpleAtod(param.substr(2), &q)) {
        zero = q <= 0;
      }
    }
    if (zero && coding != "*") return false;  // gzip;q=0 refuses it outright
    gzip = gzip || !zero;
  }
  return gzip;
}

// `data` as a gzip stream at zlib's fastest level; false if zlib fails.
bool Gzip(const std::string& data, std::string* out) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return false;
  }
  out->resize(deflateBound(&zs, uLong(data.size())) + 32);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = uInt(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out->data());
  zs.avail_out = uInt(out->size());
  const int done = deflate(&zs, Z_FINISH);
  out->resize(zs.total_out);
  deflateEnd(&zs);
  return done == Z_STREAM_END;
}

// Bodies at least this long are sent gzipped to clients that accept it.
constexpr size_t kGzipMinBytes = 1024;

void Respond(const HttpHandler& handler, const httplib::Request& req, std::string body,
             httplib::Response& res) {
  HttpRequest request{req.path,
                      {req.params.begin(), req.params.end()},
                      req.get_header_value("Authorization"),
                      std::move(body),
                      req.get_header_value("X-Request-Id")};
  HttpResponse response = handler(request);
  res.status = response.status;
  for (const auto& [name, value] : response.headers) res.set_header(name, value);
  // The body is compressed here, with gzip at its fastest level, and never
  // by cpp-httplib: given "br" (every browser sends it) it compresses at
  // brotli's slowest level, ~13 s for a 3 MB attention map. Taking the
  // header off the request (which cpp-httplib owns and hands over as const)
  // is what keeps cpp-httplib from compressing.
  const bool gzip = AcceptsGzip(req.get_header_value("Accept-Encoding"));
  const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
  if (response.body.size() >= kGzipMinBytes) {
    res.set_header("Vary", "Accept-Encoding");
    std::string compressed;
    if (gzip && Gzip(response.body, &compressed)) {
      response.body.swap(compressed);
      res.set_header("Content-Encoding", "gzip");
    }
  }
  res.set_content(std::move(response.body), response.content_type.c_str());
}

httplib::Server::Handler Adapt(HttpHandler handler) {
  return [handler](const httplib::Request& req, httplib::Response& res) {
    Respond(handler, req, req.body, res);
  };
}

// A POST's body as it came, whatever its Content-Type: cpp-httplib would
// parse a form-encoded one (curl -d's default type) into parameters, and
// refuse one over 8 KiB with an empty 413.
httplib::Server::HandlerWithContentReader AdaptReadingBody(HttpHandler handler) {
  return [handler](const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& reader) {
    std::string body;
    const bool read = reader([&body](const char* data, size_t n) {
      body.append(data, n);
      return true;
    });
    if (!read) {  // cpp-httplib set 413 for a body over max_body_bytes
      if (res.status < 400) res.status = 400;
      return;
    }
    Respond(handler, req, std::move(body), res);
  };
}

}  // namespace

absl::Status CheckTlsPair(const std::string& cert, const std::string& key) {
  if (httplib::SSLServer(cert.c_str(), key.c_str()).is_valid()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("tls_cert, tls_key: '", cert, "' and '", key,
                   "' do not load as a PEM certificate chain and its private key (not PEM, or "
                   "the key of another certificate)"));
}

HttpServer::HttpServer(HttpServerOptions options) : server_(MakeServer(options)) {
  const int threads = std::max(1, options.threads);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  server_->set_keep_alive_max_count(1);  // one request per connection
  server_->set_read_timeout(options.read_timeout_s, 0);
  server_->set_write_timeout(options.read_timeout_s, 0);
  server_->set_payload_max_length(options.max_body_bytes);
  // SO_REUSEADDR only: cpp-httplib's default also sets SO_REUSEPORT, with
  // which a second server would silently share a port already in use.
  server_->set_socket_options([](int sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // A registered path answers the methods it was registered for only.
  server_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const auto it = methods_.find(req.path);
    if (it == methods_.end()) {
      for (const auto& [prefix, handler] : not_found_) {
        if (req.path.rfind(prefix, 0) == 0) {
          Adapt(handler)(req, res);
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string method = req.method == "HEAD" ? "GET" : req.method;
    if (it->second == method) {
      // A POST that says neither its length nor that it is chunked: cpp-httplib
      // would read its body until the client closes, or the read timeout.
      if (method == "POST" && !req.has_header("Content-Length") &&
          !req.has_header("Transfer-Encoding")) {
        Fail(req.path, 411, "a POST needs a Content-Length header (0 for an empty body)", res);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string allow = it->second == "GET" ? "GET, HEAD" : it->second;
    Fail(req.path, 405, absl::StrCat(req.method, " is not allowed here; ", allow, " is"), res);
    res.set_header("Allow", allow);
    return httplib::Server::HandlerResponse::Handled;
  });
  // cpp-httplib's own errors come with an empty body: say what was wrong.
  const size_t max_body = options.max_body_bytes;
  server_->set_error_handler(httplib::Server::HandlerWithResponse(
      [this, max_body](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string message;
        switch (res.status) {
          case 400:
            message = "malformed HTTP request";
            break;
          case 404:
            message = absl::StrCat("nothing at ", req.path);
            break;
          case 413:
            message = absl::StrCat("the request body exceeds ", max_body, " bytes");
            break;
          default:
            message = absl::StrCat("HTTP status ", res.status);
        }
        Fail(req.path, res.status, message, res);
        return httplib::Server::HandlerResponse::Handled;
      }));
}

void HttpServer::Fail(const std::string& path, int status, const std::string& message,
                      httplib::Response& res) const {
  HttpResponse response =
      error_format_ ? error_format_(status, path, message) : PlainTextError(status, message);
  res.status = response.status;
  for (const auto& [name, value] : response.headers) res.set_header(name, value);
  res.set_content(std::move(response.body), response.content_type.c_str());
}

HttpServer::~HttpServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Get(const std::string& path, HttpHandler handler) {
  methods_[path] = "GET";
  server_->Get(Escaped(path), Adapt(std::move(handler)));
}

void HttpServer::NotFound(const std::string& prefix, HttpHandler handler) {
  not_found_.emplace_back(prefix, std::move(handler));
}

void HttpServer::Post(const std::string& path, HttpHandler handler) {
  methods_[path] = "POST";
  server_->Post(Escaped(path), AdaptReadingBody(std::move(handler)));
}

absl::StatusOr<int> HttpServer::Start(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "' is not HOST:PORT"));
  }
  if (!server_->is_valid()) {
    return absl::InvalidArgumentError(
        "tls: cannot load the certificate and key (PEM files, the key matching the certificate)");
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]
  }
  const int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host_port));
  }
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_ = true;
  });
  // Until the thread runs its accept loop, stop() would not reach it: wait
  // for that, so the destructor can always stop it.
  while (!server_->is_running() && !listen_returned_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return bound;
}

}  // namespace attnsearch
