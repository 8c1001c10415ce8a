// ParseFlags: CLI11's parse of a tool's command line, with the product's
// exit statuses instead of CLI11's own (100 and up).
//
//   CLI::App app{"attnsearch-x: ..."};
//   app.add_option(...);
//   if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) {
//     return *done;
//   }
//
// Returns nothing when the tool should go on; 0 after --help (printed);
// `usage_status` for bad usage (CLI11's message printed on stderr).
#ifndef ATTNSEARCH_CLI_PARSE_FLAGS_H_
#define ATTNSEARCH_CLI_PARSE_FLAGS_H_

#include <optional>

#include "CLI/CLI.hpp"

namespace attnsearch {

inline std::optional<int> ParseFlags(CLI::App& app, int argc, char** argv, int usage_status) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // prints the help, returns 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints what is wrong
    return usage_status;
  }
  return std::nullopt;
}

}  // namespace attnsearch

#endif  // ATTNSEARCH_CLI_PARSE_FLAGS_H_
