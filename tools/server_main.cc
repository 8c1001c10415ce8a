// attnsearch-server: serves the collections of one data directory over gRPC.
//
//   attnsearch-server --data_dir DIR [--listen 127.0.0.1:50051] [--workers N]
//
// Listens at once, then opens (and recovers) the collections: meanwhile the
// health service reports NOT_SERVING and calls answer UNAVAILABLE. Prints
// "attnsearch-server listening on HOST:PORT" once it serves (with --listen
// HOST:0 the port is chosen by the system; --port_file also writes it to a
// file then). SIGINT or SIGTERM stops it gracefully (Server::Stop): the
// health service turns NOT_SERVING, calls are still served for --drain_s
// seconds, then calls in flight finish (up to --shutdown_grace_s) and every
// collection flushes its store, writes its ANN snapshot and closes. Logs
// are JSON lines on stderr (core/log.h); --metrics_listen serves Prometheus
// metrics; --http_listen the JSON API and the web console. The server itself is server/server.h;
// this file is its flags (server/server_flags.h) and the process around it.
//
// Exit status: 0 after a stop signal, 2 for unusable flags or files, 1 when
// it cannot listen or open the collections.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "cli/parse_flags.h"
#include "core/file_sync.h"
#include "core/log.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "server/server.h"
#include "server/server_flags.h"

namespace {

// gRPC's own messages go through the process's logger too, so stderr holds
// JSON lines only.
void LogGrpcMessage(gpr_log_func_args* args) {
  const attnsearch::LogLevel level =
      args->severity == GPR_LOG_SEVERITY_ERROR  ? attnsearch::LogLevel::kError
      : args->severity == GPR_LOG_SEVERITY_INFO ? attnsearch::LogLevel::kInfo
                                                : attnsearch::LogLevel::kWarn;
  attnsearch::Log(level, args->message,
                  {{"source", "grpc"}, {"file", args->file}, {"line", args->line}});
}

// So are protobuf's (e.g. a request whose string field is not UTF-8).
void LogProtobufMessage(google::protobuf::LogLevel level, const char* file, int line,
                        const std::string& message) {
  const attnsearch::LogLevel ours =
      level >= google::protobuf::LOGLEVEL_ERROR  ? attnsearch::LogLevel::kError
      : level == google::protobuf::LOGLEVEL_INFO ? attnsearch::LogLevel::kInfo
                                                 : attnsearch::LogLevel::kWarn;
  attnsearch::Log(ours, message, {{"source", "protobuf"}, {"file", file}, {"line", line}});
}

// OpenMP threads that spin while they wait steal whole scheduler slices
// from the gRPC workers on a busy machine (a 0.5 ms rerank became 16 ms);
// they must sleep instead. The OpenMP runtime reads its environment when it
// loads, so the setting takes a re-exec to apply.
void MakeOpenMpThreadsSleep(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);
  // If the re-exec fails, run on with the spinning default.
}

// The stop signals are caught by a handler that writes the signal's number
// to a pipe, which main reads. A handler, unlike a signal mask, holds in
// every thread, including any a library started before main: a mask set in
// main leaves those threads with the default action, and a SIGTERM the
// kernel delivers to one of them would kill the process without a stop.
int stop_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int sig) {
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = write(stop_pipe[1], &byte, 1);
  errno = saved_errno;
}

bool CatchStopSignals() {
  if (pipe2(stop_pipe, O_CLOEXEC) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGINT, &action, nullptr) == 0 && sigaction(SIGTERM, &action, nullptr) == 0;
}

// Blocks until a stop signal arrives; returns its number.
int WaitForStopSignal() {
  unsigned char byte = 0;
  while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  // The port is also printed or logged: a file that cannot be written is
  // said, and the server goes on.
  const absl::Status s = attnsearch::WriteFileAtomically(path, std::to_string(port) + "\n");
  if (!s.ok()) {
    attnsearch::LogWarn("cannot write the port file", {{"path", path}, {"error", s.message()}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  gpr_set_log_function(LogGrpcMessage);
  google::protobuf::SetLogHandler(LogProtobufMessage);
  MakeOpenMpThreadsSleep(argv);

  attnsearch::ServerOptions options;
  std::string port_file, metrics_port_file, http_port_file;
  CLI::App app{"attnsearch-server: semantic search over gRPC"};
  attnsearch::AddServerFlags(&app, &options);
  app.add_option("--port_file", port_file, "write the chosen port to this file");
  app.add_option("--metrics_port_file", metrics_port_file,
                 "write the metrics port to this file once it listens");
  app.add_option("--http_port_file", http_port_file,
                 "write the JSON API's (and web console's) port to this file once it listens");
  // README: 2 for unusable flags.
  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) return *done;

  if (!CatchStopSignals()) {
    attnsearch::LogError("cannot install the stop signal handlers",
                         {{"error", std::strerror(errno)}});
    return 1;
  }

  absl::StatusOr<std::unique_ptr<attnsearch::Server>> server = attnsearch::Server::Start(options);
  if (!server.ok()) {
    attnsearch::LogError(std::string(server.status().message()));
    return absl::IsInvalidArgument(server.status()) ? 2 : 1;
  }
  if (!options.metrics_listen.empty()) WritePortFile(metrics_port_file, (*server)->metrics_port());
  if (!options.http_listen.empty()) WritePortFile(http_port_file, (*server)->http_port());
  WritePortFile(port_file, (*server)->port());
  std::printf("attnsearch-server listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);

  const int sig = WaitForStopSignal();
  attnsearch::LogInfo("shutting down", {{"signal", sig}});
  (*server)->Stop();
  return 0;
}
