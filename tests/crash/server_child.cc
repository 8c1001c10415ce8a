#include "crash/server_child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace attnsearch::crash {

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

ServerChild::~ServerChild() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
  CloseStdout();
}

std::string ServerChild::Start(const std::string& binary, const std::string& data_dir,
                               const std::string& port_file, const std::string& log_file,
                               const std::vector<std::string>& extra, std::chrono::seconds timeout,
                               std::string* error) {
  if (pid_ > 0) {
    *error = "a server is already running";
    return "";
  }
  std::vector<std::string> args = {binary,        "--data_dir",  data_dir, "--listen",
                                   "127.0.0.1:0", "--port_file", port_file};
  args.insert(args.end(), extra.begin(), extra.end());
  // Everything the child needs is prepared before fork: between fork and
  // exec only async-signal-safe calls are allowed (this process has gRPC
  // threads).
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    *error = log_file + ": " + std::strerror(errno);
    return "";
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *error = std::string("pipe2: ") + std::strerror(errno);
    ::close(log_fd);
    return "";
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(log_fd);
    return "";
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // die with the crash test
    if (::getppid() != parent) ::_exit(127);
    if (::dup2(fds[1], STDOUT_FILENO) < 0) ::_exit(126);  // dup2 clears O_CLOEXEC
    if (::dup2(log_fd, STDERR_FILENO) < 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(125);
  }
  ::close(fds[1]);
  ::close(log_fd);
  pid_ = pid;
  stdout_fd_ = fds[0];

  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (line.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *error = "no 'listening on' line within " + std::to_string(timeout.count()) + " s";
      Signal(SIGKILL);
      Wait();
      return "";
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, int(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    char buf[256];
    const ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int status = Wait();
      *error = "attnsearch-server " + DescribeWaitStatus(status) + " before listening (see " +
               log_file + ")";
      return "";
    }
    line.append(buf, size_t(n));
  }
  line.resize(line.find('\n'));
  const std::string prefix = "attnsearch-server listening on ";
  if (line.rfind(prefix, 0) != 0) {
    *error = "unexpected first line from attnsearch-server: '" + line + "'";
    Signal(SIGKILL);
    Wait();
    return "";
  }
  // stdout stays open so a later write cannot SIGPIPE the server.
  return line.substr(prefix.size());
}

bool ServerChild::Signal(int sig) { return pid_ > 0 && ::kill(pid_, sig) == 0; }

int ServerChild::Wait() {
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

void ServerChild::CloseStdout() {
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
}

}  // namespace attnsearch::crash
