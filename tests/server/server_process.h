// ServerProcess: runs the real attnsearch-server binary as a child process
// for integration tests, plus helpers to talk to it over gRPC.
//
//   ServerProcess server;
//   const std::string address = server.Start(data_dir);   // "127.0.0.1:PORT"
//   ASSERT_FALSE(address.empty());
//   auto stub = NewSearchStub(address);
//   ...
//   server.Kill(SIGTERM);
//   const int status = server.Wait();                      // waitpid status
//
// The child listens on an ephemeral loopback port (--listen 127.0.0.1:0);
// Start learns the port from the one line the server prints on stdout once
// it accepts calls. Start blocks on that read (bounded by a timeout, so a
// hung server fails the test instead of hanging it); nothing sleeps.
//
// The binary is ATTN_SERVER_BINARY, a compile definition set by the build.
#ifndef ATTNSEARCH_TESTS_SERVER_SERVER_PROCESS_H_
#define ATTNSEARCH_TESTS_SERVER_SERVER_PROCESS_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "attnsearch/v1/search.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server_channel.h"

#ifndef ATTN_SERVER_BINARY
#error "ATTN_SERVER_BINARY must name the attnsearch-server binary"
#endif

namespace attnsearch::testing {

// "exited with status 3", "killed by signal 9", ... for a waitpid status.
inline std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

class ServerProcess {
 public:
  // How long Start waits for the "listening on" line before giving up.
  static constexpr std::chrono::seconds kStartTimeout{60};

  ServerProcess() = default;
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
    CloseStdout();
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server on `data_dir` (with --listen 127.0.0.1:0, unless
  // `extra` gives --listen, and `extra` arguments) and waits until it
  // listens. Returns its address
  // ("127.0.0.1:PORT"), or "" after recording a test failure that says why
  // (e.g. the child's exit status when it died before listening).
  std::string Start(const std::string& data_dir, const std::vector<std::string>& extra = {}) {
    if (pid_ > 0) {
      ADD_FAILURE() << "ServerProcess::Start: a server is already running (pid " << pid_ << ")";
      return "";
    }
    std::vector<std::string> args = {ATTN_SERVER_BINARY, "--data_dir", data_dir};
    if (std::find(extra.begin(), extra.end(), "--listen") == extra.end()) {
      args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    // Everything the child needs is prepared before fork: between fork and
    // exec only async-signal-safe calls are allowed (the test process has
    // gRPC threads).
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return "";
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      ::close(fds[0]);
      ::close(fds[1]);
      return "";
    }
    if (pid == 0) {
      // Child. Die with the test process, whatever happens to it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (::dup2(fds[1], STDOUT_FILENO) < 0) ::_exit(126);  // dup2 clears O_CLOEXEC
      ::execv(argv[0], argv.data());
      ::_exit(125);  // exec failed
    }
    ::close(fds[1]);
    pid_ = pid;
    stdout_fd_ = fds[0];

    // Read the first line of the child's stdout.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    bool eof = false;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        ADD_FAILURE() << "attnsearch-server printed no 'listening on' line within "
                      << kStartTimeout.count() << " s (got so far: '" << line << "')";
        StopAfterFailedStart();
        return "";
      }
      pollfd p{stdout_fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, int(left.count()));  // blocks until data or EOF
      if (ready < 0) {
        if (errno == EINTR) continue;
        ADD_FAILURE() << "poll: " << std::strerror(errno);
        StopAfterFailedStart();
        return "";
      }
      if (ready == 0) continue;  // the deadline check above reports it
      char buf[256];
      const ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        ADD_FAILURE() << "read: " << std::strerror(errno);
        StopAfterFailedStart();
        return "";
      }
      if (n == 0) {
        eof = true;
        break;
      }
      line.append(buf, size_t(n));
      if (line.find('\n') != std::string::npos) break;
    }
    if (eof) {
      // The child closed its stdout without the line: it is exiting.
      const int status = Wait();
      ADD_FAILURE() << "attnsearch-server " << DescribeWaitStatus(status)
                    << " before printing its 'listening on' line (stdout: '" << line
                    << "'; its stderr is above)";
      return "";
    }
    line.resize(line.find('\n'));
    const std::string prefix = "attnsearch-server listening on ";
    if (line.rfind(prefix, 0) != 0) {
      ADD_FAILURE() << "unexpected first line from attnsearch-server: '" << line << "'";
      StopAfterFailedStart();
      return "";
    }
    address_ = line.substr(prefix.size());
    const size_t colon = address_.rfind(':');
    if (colon == std::string::npos || std::atoi(address_.c_str() + colon + 1) <= 0) {
      ADD_FAILURE() << "no port in attnsearch-server's line '" << line << "'";
      StopAfterFailedStart();
      return "";
    }
    // stdout stays open (read end kept) so a later write cannot SIGPIPE it.
    return address_;
  }

  // Sends `sig` to the running server; false if none runs.
  bool Kill(int sig) { return pid_ > 0 && ::kill(pid_, sig) == 0; }

  // Waits for the server to exit and returns its waitpid status (use
  // WIFEXITED / WEXITSTATUS / WIFSIGNALED); -1 if none was started.
  int Wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    pid_ = -1;
    CloseStdout();
    return r < 0 ? -1 : status;
  }

  // Like Wait, but gives up after `timeout`: then the server still runs
  // and the result is -1.
  int WaitFor(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        CloseStdout();
        return status;
      }
      if (r < 0 && errno != EINTR) return -1;
      if (std::chrono::steady_clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }

 private:
  void CloseStdout() {
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
    stdout_fd_ = -1;
  }
  void StopAfterFailedStart() {
    Kill(SIGKILL);
    Wait();
  }

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
};

// A finished child process: its wait status and what it printed.
struct ProcessRun {
  int status = -1;
  std::string output;  // stdout and stderr
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Runs a binary (args[0]) to its end, stdout and stderr captured in
// `out_path`; `env` entries ("NAME=value") are added to the environment.
inline ProcessRun RunBinary(const std::string& out_path, std::vector<std::string> args,
                            const std::vector<std::string>& env = {}) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  ProcessRun run;
  const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    ADD_FAILURE() << "open " << out_path;
    return run;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::dup2(fd, STDOUT_FILENO) < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(125);
  }
  ::close(fd);
  while (::waitpid(pid, &run.status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream in(out_path);
  std::stringstream ss;
  ss << in.rdbuf();
  run.output = ss.str();
  return run;
}

// Runs `fn` with this process's stderr sent to `path` (a child started
// meanwhile inherits it).
inline void WithStderrTo(const std::string& path, const std::function<void()>& fn) {
  fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ::dup2(fd, STDERR_FILENO);
  ::close(fd);
  fn();
  fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
}

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_SERVER_SERVER_PROCESS_H_
