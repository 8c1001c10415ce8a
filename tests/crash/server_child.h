// ServerChild: runs the real attnsearch-server binary as a child process for
// the crash test, without GoogleTest (tests/server/server_process.h is the
// GoogleTest flavour). The child listens on an ephemeral loopback port
// (--listen 127.0.0.1:0 --port_file F); Start reads the one line it prints
// on stdout once it listens. (The server may listen before its collections
// are open; the caller waits for them to answer.)
#ifndef ATTNSEARCH_TESTS_CRASH_SERVER_CHILD_H_
#define ATTNSEARCH_TESTS_CRASH_SERVER_CHILD_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace attnsearch::crash {

class ServerChild {
 public:
  ServerChild() = default;
  // SIGKILLs a child still running.
  ~ServerChild();
  ServerChild(const ServerChild&) = delete;
  ServerChild& operator=(const ServerChild&) = delete;

  // Starts `binary --data_dir data_dir --listen 127.0.0.1:0 --port_file
  // port_file extra...` with its stderr appended to `log_file`, and waits up
  // to `timeout` for it to listen. Returns its address ("127.0.0.1:PORT"),
  // or "" with *error saying why (the child is then stopped).
  std::string Start(const std::string& binary, const std::string& data_dir,
                    const std::string& port_file, const std::string& log_file,
                    const std::vector<std::string>& extra, std::chrono::seconds timeout,
                    std::string* error);

  // Sends `sig`; false when no child runs.
  bool Signal(int sig);
  // Waits for the child to exit; its waitpid status, or -1 if none ran.
  int Wait();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  void CloseStdout();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

// "exited with status 3", "killed by signal 9 (Killed)", ...
std::string DescribeWaitStatus(int status);

}  // namespace attnsearch::crash

#endif  // ATTNSEARCH_TESTS_CRASH_SERVER_CHILD_H_
