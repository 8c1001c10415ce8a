// HttpExchange: one raw HTTP exchange over a loopback socket, for tests of
// the HTTP endpoints that must see exactly what a client sends (malformed
// requests included) and everything the server answers.
#ifndef ATTNSEARCH_TESTS_HTTP_HTTP_EXCHANGE_H_
#define ATTNSEARCH_TESTS_HTTP_HTTP_EXCHANGE_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace attnsearch::testing {

// Sends `request` to 127.0.0.1:port (or [::1]:port) and returns the whole
// response, read until the server closes the connection; "" if it cannot
// connect.
inline std::string HttpExchange(int port, const std::string& request, bool ipv6 = false) {
  const int fd = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr4{};
  sockaddr_in6 addr6{};
  addr4.sin_family = AF_INET;
  addr4.sin_port = htons(uint16_t(port));
  addr4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr6.sin6_family = AF_INET6;
  addr6.sin6_port = htons(uint16_t(port));
  addr6.sin6_addr = in6addr_loopback;
  const int connected = ipv6 ? ::connect(fd, reinterpret_cast<sockaddr*>(&addr6), sizeof(addr6))
                             : ::connect(fd, reinterpret_cast<sockaddr*>(&addr4), sizeof(addr4));
  if (connected != 0) {
    ::close(fd);
    return "";
  }
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, size_t(n));
  ::close(fd);
  return out;
}

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_HTTP_HTTP_EXCHANGE_H_
