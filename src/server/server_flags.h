// attnsearch-server's command line: one flag per ServerOptions field, with
// the field's default. Shared by the binary (tools/server_main.cc) and by
// tests that start the server in-process with the binary's flags.
#ifndef ATTNSEARCH_SERVER_SERVER_FLAGS_H_
#define ATTNSEARCH_SERVER_SERVER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/server.h"

namespace CLI {
class App;
}

namespace attnsearch {

// Declares the flags on `app`, each writing into `*options` as it parses.
// `options` must outlive the parse.
void AddServerFlags(CLI::App* app, ServerOptions* options);

// Parses `args` (flags only, no program name) over the defaults.
// INVALID_ARGUMENT with the parser's message for an unknown flag or a bad
// value.
absl::StatusOr<ServerOptions> ParseServerFlags(const std::vector<std::string>& args);

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_SERVER_FLAGS_H_
