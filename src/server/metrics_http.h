// MetricsHttpServer: a minimal HTTP/1.1 server for Prometheus scrapes.
//
// One thread accepts connections on HOST:PORT and answers each with one
// response, then closes it: `GET /metrics` gets 200 and the text the
// callback renders (text/plain; version=0.0.4), any other path 404, any
// other method 405. Requests are read with a short timeout and a size
// bound, so a slow or hostile client cannot hold the thread for long.
#ifndef ATTNSEARCH_SERVER_METRICS_HTTP_H_
#define ATTNSEARCH_SERVER_METRICS_HTTP_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace attnsearch {

class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(std::function<std::string()> render) : render_(std::move(render)) {}
  // Stops the thread.
  ~MetricsHttpServer();

  // Binds HOST:PORT (an IPv4 address or "localhost"; PORT 0 picks a free
  // one) and starts serving; returns the port.
  absl::StatusOr<int> Start(const std::string& host_port);

 private:
  void Serve();
  void Answer(int fd);

  const std::function<std::string()> render_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe; writing to it stops Serve
  std::thread thread_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_METRICS_HTTP_H_
