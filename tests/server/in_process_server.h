// InProcessServer: the server (server/server.h) in the test's own process,
// started with attnsearch-server's flags, behind the same calls as
// ServerProcess (server_process.h), so a test that needs no process
// boundary (no crash, no signal, no stderr of its own) runs without one:
//
//   InProcessServer server;
//   const std::string address = server.Start(data_dir, {"--max_top_k", "50"});
//   ...
//   server.Kill(SIGTERM);         // Server::Stop, at once
//   EXPECT_EQ(server.Wait(), 0);  // "exited with status 0"
//
// It listens on a real ephemeral loopback port, so calls still cross gRPC's
// TCP transport (message size limits, deadlines, metadata).
#ifndef ATTNSEARCH_TESTS_SERVER_IN_PROCESS_SERVER_H_
#define ATTNSEARCH_TESTS_SERVER_IN_PROCESS_SERVER_H_

#include <signal.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/server.h"
#include "server/server_channel.h"
#include "server/server_flags.h"

namespace attnsearch::testing {

class InProcessServer {
 public:
  // Starts the server on `data_dir` with --listen 127.0.0.1:0 (unless
  // `extra` gives --listen) and the `extra` flags. Returns "HOST:PORT", or
  // "" after recording a test failure with the reason.
  std::string Start(const std::string& data_dir, const std::vector<std::string>& extra = {}) {
    if (server_ != nullptr) {
      ADD_FAILURE() << "InProcessServer::Start: a server is already running";
      return "";
    }
    std::vector<std::string> args = {"--data_dir", data_dir};
    if (std::find(extra.begin(), extra.end(), "--listen") == extra.end()) {
      args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<ServerOptions> options = ParseServerFlags(args);
    if (!options.ok()) {
      ADD_FAILURE() << "flags: " << options.status();
      return "";
    }
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(*std::move(options));
    if (!server.ok()) {
      ADD_FAILURE() << "Server::Start: " << server.status();
      return "";
    }
    server_ = *std::move(server);
    return server_->address();
  }

  // SIGTERM or SIGINT: stops the server as the binary does on that signal.
  // Any other signal needs a process (ServerProcess): a test failure.
  bool Kill(int sig) {
    if (server_ == nullptr) return false;
    if (sig != SIGTERM && sig != SIGINT) {
      ADD_FAILURE() << "an in-process server cannot take signal " << sig << "; use ServerProcess";
      return false;
    }
    server_->Stop();
    server_.reset();
    stopped_ = true;
    return true;
  }

  // 0 ("exited with status 0") once Kill stopped it; -1 otherwise.
  int Wait() {
    const int status = stopped_ ? 0 : -1;
    stopped_ = false;
    return status;
  }

  Server* server() { return server_.get(); }

 private:
  std::unique_ptr<Server> server_;
  bool stopped_ = false;
};

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_SERVER_IN_PROCESS_SERVER_H_
