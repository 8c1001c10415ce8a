// HttpServer: the HTTP/1.1 endpoints beside the gRPC service (Prometheus
// metrics, the JSON API), on cpp-httplib.
//
//   HttpServer http;
//   http.Get("/metrics", [&](const HttpRequest&) {
//     return HttpResponse{.content_type = "text/plain; version=0.0.4", .body = Render(),
//                         .headers = {}};
//   });
//   absl::StatusOr<int> port = http.Start("127.0.0.1:0");
//
// GET (and HEAD) or POST of a path registered for it calls its handler;
// another method on it gets 405, any other path 404, a malformed request
// 400, a body over max_body_bytes 413, a POST with neither a Content-Length
// nor chunked transfer encoding 411 (at once). Every
// connection answers one request and closes. Requests are read with a
// timeout and a size bound, so a slow or hostile client holds a thread for
// at most the timeout; a small pool of threads answers concurrently.
//
// Thread safety: register handlers before Start; handlers run on the pool's
// threads, concurrently.
#ifndef ATTNSEARCH_HTTP_HTTP_SERVER_H_
#define ATTNSEARCH_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace attnsearch {

struct HttpServerOptions {
  // Threads answering requests. Default: 2.
  int threads = 2;
  // Seconds a client may take to send its request. Default: 2.
  int read_timeout_s = 2;
  // Largest request body accepted, bytes. Default: 64 KiB.
  size_t max_body_bytes = 64 << 10;
  // Serve HTTPS with this PEM certificate chain and private key (both or
  // neither). Default: none, plain HTTP.
  std::string tls_cert;
  std::string tls_key;
};

struct HttpRequest {
  std::string path;
  std::multimap<std::string, std::string> params;  // the query string's
  std::string authorization;                       // the Authorization header
  std::string body;                                // POST
  std::string request_id;                          // the X-Request-Id header
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Further response headers, e.g. {"Cache-Control", "no-store"}.
  std::vector<std::pair<std::string, std::string>> headers;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Writes one of the server's own errors (a malformed request 400, an
// unknown path 404, another method 405, a POST without a length 411, a body
// over max_body_bytes 413): its HTTP status, the request's path (empty
// when the request was malformed) and a sentence saying what was wrong.
using HttpErrorFormat =
    std::function<HttpResponse(int status, const std::string& path, const std::string& message)>;

// The default format of those errors: the sentence as text/plain.
inline HttpResponse PlainTextError(int status, const std::string& message) {
  return HttpResponse{status, "text/plain; charset=utf-8", message + "\n", {}};
}

// OK when the PEM certificate chain at `cert` and the private key at `key`
// load as a pair (OpenSSL, through cpp-httplib: the key must be the
// certificate's); else INVALID_ARGUMENT naming both files.
absl::Status CheckTlsPair(const std::string& cert, const std::string& key);

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options = {});
  // Stops serving and joins the thread.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves GET and HEAD of exactly `path` with `handler`.
  void Get(const std::string& path, HttpHandler handler);
  // Serves POST of exactly `path` with `handler`.
  void Post(const std::string& path, HttpHandler handler);
  // Answers, with `handler`, every request whose path starts with `prefix`
  // and matches no registered path (instead of a bare 404). Call before
  // Start.
  void NotFound(const std::string& prefix, HttpHandler handler);
  // How the server's own errors are written. Default: the sentence as
  // text/plain. Call before Start.
  void SetErrorFormat(HttpErrorFormat format) { error_format_ = std::move(format); }

  // Binds HOST:PORT ("127.0.0.1:9100", "localhost:0", "[::1]:0", "0.0.0.0:9100";
  // port 0 lets the system choose) and serves on a thread; returns the
  // port. INVALID_ARGUMENT when `host_port` is not HOST:PORT or the TLS
  // certificate and key cannot be loaded, UNAVAILABLE when it cannot be
  // bound.
  absl::StatusOr<int> Start(const std::string& host_port);

 private:
  // Writes one of the server's own errors into `res`, by error_format_.
  void Fail(const std::string& path, int status, const std::string& message,
            httplib::Response& res) const;
  std::unique_ptr<httplib::Server> server_;
  // The methods each registered path answers ("GET", "POST").
  std::map<std::string, std::string> methods_;
  // NotFound's prefixes and their handlers.
  std::vector<std::pair<std::string, HttpHandler>> not_found_;
  HttpErrorFormat error_format_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};  // the thread's accept loop ended
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_HTTP_HTTP_SERVER_H_
