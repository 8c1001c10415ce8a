// The web console: a single page (src/server/console/: index.html,
// console.js, console.css, favicon.svg) embedded in the binary at build
// time and served by the JSON API's listener at GET / (and /index.html) and
// /<file>. It needs no network beyond that listener: it calls the
// JSON API (json_gateway.h) with the user's API key, so it can do exactly
// what the key allows. Responses carry a Content-Security-Policy that lets
// the page load and call only its own origin.
#ifndef ATTNSEARCH_SERVER_CONSOLE_H_
#define ATTNSEARCH_SERVER_CONSOLE_H_

#include <span>
#include <string_view>

#include "http/http_server.h"

namespace attnsearch {

// A file embedded at build time (cmake/embed_files.cmake).
struct EmbeddedFile {
  std::string_view name;   // relative to its folder, e.g. "console.js"
  std::string_view bytes;  // its contents
};

// The console's files, as embedded.
std::span<const EmbeddedFile> ConsoleFiles();

// The Content-Type a console file is served with, by its extension.
std::string_view ConsoleContentType(std::string_view name);

// Registers GET of every console file at /<name>, and of index.html at /.
void RegisterConsole(HttpServer* http);

}  // namespace attnsearch

#endif  // ATTNSEARCH_SERVER_CONSOLE_H_
