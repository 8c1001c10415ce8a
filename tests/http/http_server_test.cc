// Tests of HttpServer against raw HTTP exchanges: what a registered path,
// another path, another method and a malformed request get; NotFound's
// prefix; IPv6; bad and
// taken addresses; a slow client does not hold up the others.
#include "http/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "gtest/gtest.h"
#include "http/http_exchange.h"
#include "zlib.h"

namespace attnsearch::testing {
namespace {

// A server answering GET /metrics with a counter of the calls.
struct CountingServer {
  CountingServer() {
    http.Get("/metrics", [this](const HttpRequest& req) {
      const int n = ++calls;
      std::string body = "calls " + std::to_string(n) + "\n";
      for (const auto& [k, v] : req.params) body += k + "=" + v + "\n";
      return HttpResponse{.content_type = "text/plain; version=0.0.4", .body = body, .headers = {}};
    });
  }
  HttpServer http;
  std::atomic<int> calls{0};
};

TEST(HttpServerTest, AnswersRegisteredPathsOnly) {
  CountingServer s;
  absl::StatusOr<int> port = s.http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);

  const std::string ok = HttpExchange(*port, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << ok;
  EXPECT_NE(ok.find("\r\n\r\ncalls 1\nx=1\n"), std::string::npos) << ok;
  // Each connection answers one request and closes (HttpExchange reads to
  // the end, so it returning at all shows the close).
  EXPECT_NE(ok.find("Connection: close"), std::string::npos) << ok;

  const std::string head = HttpExchange(*port, "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_EQ(head.find("calls"), std::string::npos) << head;

  EXPECT_EQ(HttpExchange(*port, "GET /other HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  const std::string post = HttpExchange(*port, "POST /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD"), std::string::npos) << post;
  EXPECT_EQ(HttpExchange(*port, "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(s.calls.load(), 2);  // GET and HEAD
}

// `body` of a raw response: what follows the headers.
std::string BodyOf(const std::string& raw) {
  const size_t start = raw.find("\r\n\r\n");
  return start == std::string::npos ? "" : raw.substr(start + 4);
}

std::string Gunzip(const std::string& data) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return "";
  std::string out(1 << 20, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = uInt(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = uInt(out.size());
  const int done = inflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return done == Z_STREAM_END ? out : "";
}

// Long bodies go gzipped to a client that accepts gzip, and never as
// brotli (cpp-httplib's brotli runs at its slowest level: seconds for a few
// megabytes); short ones, and clients that refuse gzip, get them as they are.
TEST(HttpServerTest, LongBodiesAreGzippedNeverBrotli) {
  HttpServer http;
  std::string big;
  for (int i = 0; big.size() < 200000; ++i) big += "{\"row\":" + std::to_string(i) + "},";
  http.Get("/big", [&](const HttpRequest&) {
    return HttpResponse{.content_type = "application/json", .body = big, .headers = {}};
  });
  http.Get("/small", [](const HttpRequest&) {
    return HttpResponse{.content_type = "text/plain", .body = "short\n", .headers = {}};
  });
  absl::StatusOr<int> port = http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  const auto get = [&](const std::string& path, const std::string& accept) {
    std::string request = "GET " + path + " HTTP/1.1\r\nHost: a\r\n";
    if (!accept.empty()) request += "Accept-Encoding: " + accept + "\r\n";
    return HttpExchange(*port, request + "\r\n");
  };
  for (const std::string accept : {"gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "x-gzip", "*"}) {
    SCOPED_TRACE(accept);
    const std::string raw = get("/big", accept);
    ASSERT_EQ(raw.rfind("HTTP/1.1 200", 0), 0u) << raw.substr(0, 300);
    EXPECT_NE(raw.find("Content-Encoding: gzip"), std::string::npos) << raw.substr(0, 300);
    EXPECT_NE(raw.find("Vary: Accept-Encoding"), std::string::npos) << raw.substr(0, 300);
    EXPECT_LT(BodyOf(raw).size(), big.size() / 2);
    EXPECT_EQ(Gunzip(BodyOf(raw)), big);
  }
  for (const std::string accept : {"", "br", "identity", "gzip;q=0, br", "*, gzip;q=0"}) {
    SCOPED_TRACE(accept);
    const std::string raw = get("/big", accept);
    EXPECT_EQ(raw.find("Content-Encoding"), std::string::npos) << raw.substr(0, 300);
    EXPECT_EQ(BodyOf(raw), big);
  }
  const std::string small = get("/small", "gzip, br");
  EXPECT_EQ(small.find("Content-Encoding"), std::string::npos) << small;
  EXPECT_EQ(BodyOf(small), "short\n");
}

TEST(HttpServerTest, NotFoundAnswersItsPrefixOnly) {
  CountingServer s;
  s.http.NotFound("/api/", [](const HttpRequest& req) {
    return HttpResponse{.status = 404,
                        .content_type = "application/json",
                        .body = "{\"missing\":\"" + req.path + "\"}",
                        .headers = {}};
  });
  absl::StatusOr<int> port = s.http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string under = HttpExchange(*port, "POST /api/Nope HTTP/1.1\r\n\r\n");
  EXPECT_EQ(under.rfind("HTTP/1.1 404", 0), 0u) << under;
  EXPECT_NE(under.find("{\"missing\":\"/api/Nope\"}"), std::string::npos) << under;
  const std::string other = HttpExchange(*port, "GET /other HTTP/1.1\r\n\r\n");
  EXPECT_EQ(other.rfind("HTTP/1.1 404", 0), 0u) << other;
  EXPECT_EQ(other.find("missing"), std::string::npos) << other;
  // A registered path is still its own.
  EXPECT_EQ(HttpExchange(*port, "GET /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
}

TEST(HttpServerTest, ListensOnIpv6) {
  CountingServer s;
  absl::StatusOr<int> port = s.http.Start("[::1]:0");
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string ok = HttpExchange(*port, "GET /metrics HTTP/1.1\r\n\r\n", /*ipv6=*/true);
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
}

TEST(HttpServerTest, BadOrTakenAddresses) {
  for (const char* bad : {"", "127.0.0.1", ":80", "127.0.0.1:x", "127.0.0.1:70000"}) {
    HttpServer http;
    absl::StatusOr<int> port = http.Start(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(port.status())) << bad << ": " << port.status();
  }
  CountingServer first;
  absl::StatusOr<int> port = first.http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  HttpServer second;
  absl::StatusOr<int> again = second.Start("127.0.0.1:" + std::to_string(*port));
  EXPECT_TRUE(absl::IsUnavailable(again.status())) << again.status();
}

TEST(HttpServerTest, APostMustSayItsLength) {
  HttpServer http;
  std::atomic<int> calls{0};
  http.Post("/echo", [&](const HttpRequest& req) {
    ++calls;
    return HttpResponse{.body = "[" + req.body + "]", .headers = {}};
  });
  absl::StatusOr<int> port = http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  // Neither a length nor chunks: refused at once, not read until the timeout.
  const std::string bare = HttpExchange(*port, "POST /echo HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(bare.rfind("HTTP/1.1 411", 0), 0u) << bare;
  EXPECT_NE(bare.find("Content-Length header"), std::string::npos) << bare;
  const std::string empty = HttpExchange(*port, "POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(empty.rfind("HTTP/1.1 200", 0), 0u) << empty;
  EXPECT_NE(empty.find("\r\n\r\n[]"), std::string::npos) << empty;
  const std::string chunked = HttpExchange(
      *port, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.rfind("HTTP/1.1 200", 0), 0u) << chunked;
  EXPECT_NE(chunked.find("\r\n\r\n[hi]"), std::string::npos) << chunked;
  // A form-encoded body (curl -d's default type) arrives as sent, past 8 KiB
  // too, up to max_body_bytes (64 KiB by default), then 413.
  for (size_t size : {size_t(10), size_t(20000), size_t(64 << 10)}) {
    const std::string body(size, 'x');
    const std::string form =
        HttpExchange(*port,
                     "POST /echo HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: " +
                         std::to_string(size) + "\r\n\r\n" + body);
    EXPECT_EQ(form.rfind("HTTP/1.1 200", 0), 0u) << size;
    EXPECT_NE(form.find("\r\n\r\n[" + body + "]"), std::string::npos) << size;
  }
  const std::string big(size_t(64 << 10) + 1, 'x');
  const std::string over =
      HttpExchange(*port, "POST /echo HTTP/1.1\r\nContent-Length: " + std::to_string(big.size()) +
                              "\r\n\r\n" + big);
  EXPECT_EQ(over.rfind("HTTP/1.1 413", 0), 0u) << over.substr(0, 100);
  EXPECT_EQ(calls.load(), 5);
}

TEST(HttpServerTest, ASilentClientDoesNotHoldUpOthers) {
  CountingServer s;
  absl::StatusOr<int> port = s.http.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok());
  // A client that connects and sends nothing holds one thread until the
  // read timeout; the next client is answered meanwhile.
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(*port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(silent, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string ok = HttpExchange(*port, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
  ::close(silent);
}

}  // namespace
}  // namespace attnsearch::testing
