#include "server/console.h"

#include <string>

namespace attnsearch {

std::string_view ConsoleContentType(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".png")) return "image/png";
  if (name.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

void RegisterConsole(HttpServer* http) {
  for (const EmbeddedFile& file : ConsoleFiles()) {
    HttpResponse response;
    response.content_type = std::string(ConsoleContentType(file.name));
    response.body = std::string(file.bytes);
    response.headers = {
        // Only the page's own files and its own JSON API; no inline script.
        {"Content-Security-Policy",
         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},
        // Revalidated on every load, so a new server version shows its own console.
        {"Cache-Control", "no-cache"},
    };
    const HttpHandler serve = [response](const HttpRequest&) { return response; };
    std::string path = "/";
    path += file.name;
    http->Get(path, serve);
    if (file.name == "index.html") http->Get("/", serve);
  }
}

}  // namespace attnsearch
