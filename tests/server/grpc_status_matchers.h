// gRPC status assertions shared by the tests that talk to a real server.
#ifndef ATTNSEARCH_TESTS_SERVER_GRPC_STATUS_MATCHERS_H_
#define ATTNSEARCH_TESTS_SERVER_GRPC_STATUS_MATCHERS_H_

#include <string>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace attnsearch::testing {

// Success when `s` has `code` and its message names `field`.
inline ::testing::AssertionResult HasError(const grpc::Status& s, grpc::StatusCode code,
                                           const std::string& field) {
  if (s.error_code() != code) {
    return ::testing::AssertionFailure()
           << "expected code " << int(code) << ", got " << int(s.error_code()) << " ('"
           << s.error_message() << "')";
  }
  if (s.error_message().find(field) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message '" << s.error_message() << "' does not name '" << field << "'";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace attnsearch::testing

#define ASSERT_OK(expr)                                                                         \
  do {                                                                                          \
    const grpc::Status _s = (expr);                                                             \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << int(_s.error_code()) << " " << _s.error_message(); \
  } while (0)
#define EXPECT_OK(expr)                                                                         \
  do {                                                                                          \
    const grpc::Status _s = (expr);                                                             \
    EXPECT_TRUE(_s.ok()) << #expr << ": " << int(_s.error_code()) << " " << _s.error_message(); \
  } while (0)

#endif  // ATTNSEARCH_TESTS_SERVER_GRPC_STATUS_MATCHERS_H_
