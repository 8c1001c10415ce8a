// attnsearch-mancorpus: turns the system's manual pages into a text corpus
// (JSON lines for attnsearch-index), the main job's real-world data.
//
//   attnsearch-mancorpus [--max_words 120] DIR... > corpus.jsonl
//
// For each page (plain or .gz; ".so" aliases skipped) it writes
//   {"id": "scp.1", "title": "scp", "text": "<NAME line>. <DESCRIPTION...>",
//    "metadata": {"section": "1"}}
// where the text is the NAME section's one-line description followed by
// the first --max_words words of the DESCRIPTION section, with roff (man
// and mdoc) macros and escapes removed. Invalid UTF-8 is replaced.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/parse_flags.h"
#include "dataset/input_file.h"
#include "nlohmann/json.hpp"

namespace {

// The page's text, plain or gzip-compressed.
bool ReadPage(const std::string& path, std::string* out) {
  absl::StatusOr<std::unique_ptr<attnsearch::InputFile>> in = attnsearch::InputFile::Open(path);
  return in.ok() && (*in)->ReadRest(out);
}

// Moves *i (at an escape's letter) past the name that follows it: one
// character, "(xx" or "[...]".
void SkipEscapeName(const std::string& in, size_t* i) {
  if (*i + 1 < in.size() && in[*i + 1] == '(') {
    *i += 3;
  } else if (*i + 1 < in.size() && in[*i + 1] == '[') {
    *i = std::min(in.find(']', *i), in.size() - 1);
  } else {
    ++*i;
  }
}

// Removes roff escapes from a line of text.
std::string StripEscapes(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\' || i + 1 >= in.size()) {
      out += in[i];
      continue;
    }
    const char c = in[++i];
    switch (c) {
      case 'f':  // font: \fB, \f(XX, \f[...]
        SkipEscapeName(in, &i);
        break;
      case '(':  // special character \(xx
        if (in.compare(i + 1, 2, "em") == 0 || in.compare(i + 1, 2, "en") == 0) out += " - ";
        if (in.compare(i + 1, 2, "aq") == 0) out += '\'';
        i += 2;
        break;
      case '[': {  // \[xx]
        i = std::min(in.find(']', i), in.size() - 1);
        break;
      }
      case '*':  // string \*x, \*(xx, \*[..]
        SkipEscapeName(in, &i);
        break;
      case 's':  // size \s+1, \s-1, \s0
        while (i + 1 < in.size() && (in[i + 1] == '+' || in[i + 1] == '-' ||
                                     std::isdigit(static_cast<unsigned char>(in[i + 1])))) {
          ++i;
        }
        break;
      case '-':
        out += '-';
        break;
      case 'e':
        out += '\\';
        break;
      case ' ':
        out += ' ';
        break;
      case '"':
        i = in.size();
        break;  // comment to end of line
      default:
        break;  // \& \| \^ \c \0 ... : nothing
    }
  }
  return out;
}

bool IsMdocMacroWord(const std::string& w) {
  return w.size() == 2 && std::isupper(static_cast<unsigned char>(w[0])) &&
         std::islower(static_cast<unsigned char>(w[1]));
}

struct Page {
  std::string name_line, description;
  size_t words = 0;
};

// Extracts the NAME line and the start of DESCRIPTION; false for aliases.
bool ParsePage(const std::string& src, const std::string& name, size_t max_words, Page* page) {
  std::istringstream lines(src);
  std::string line, section;
  bool mdoc = false, first = true;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind(".\\\"", 0) == 0 || line.rfind("'\\\"", 0) == 0) continue;
    if (first && line.rfind(".so ", 0) == 0) return false;
    first = false;
    std::string text;
    if (!line.empty() && (line[0] == '.' || line[0] == '\'')) {
      std::istringstream words(line.substr(1));
      std::string macro;
      words >> macro;
      if (macro == "Dd") mdoc = true;
      if (macro == "SH" || macro == "Sh") {
        std::string rest;
        std::getline(words, rest);
        rest.erase(std::remove(rest.begin(), rest.end(), '"'), rest.end());
        section = rest.substr(rest.find_first_not_of(' ') == std::string::npos
                                  ? rest.size()
                                  : rest.find_first_not_of(' '));
        continue;
      }
      std::string w, kept;
      while (words >> w) {
        if (mdoc && IsMdocMacroWord(w)) continue;
        w.erase(std::remove(w.begin(), w.end(), '"'), w.end());
        if (!kept.empty()) kept += ' ';
        kept += w;
      }
      if (macro == "Nm" && kept.empty()) kept = name;
      text = kept;
    } else {
      text = line;
    }
    text = StripEscapes(text);
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    if (section == "NAME") {
      if (mdoc) {
        // .Nm names ... .Nd description
        if (line.rfind(".Nd", 0) == 0) page->name_line += text;
      } else {
        page->name_line += (page->name_line.empty() ? "" : " ") + text;
      }
    } else if (section == "DESCRIPTION" && page->words < max_words) {
      std::istringstream ws(text);
      std::string w;
      while (ws >> w && page->words < max_words) {
        page->description += (page->description.empty() ? "" : " ") + w;
        ++page->words;
      }
    }
  }
  if (!mdoc) {  // "scp - secure copy": keep the part after the dash
    const size_t dash = page->name_line.find(" - ");
    if (dash != std::string::npos) page->name_line = page->name_line.substr(dash + 3);
  }
  return !page->name_line.empty() || !page->description.empty();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  size_t max_words = 120;
  CLI::App app{"attnsearch-mancorpus: manual pages as a JSON-lines corpus"};
  app.add_option("dirs", dirs, "folders of manual pages, e.g. /usr/share/man/man1")->required();
  app.add_option("--max_words", max_words, "DESCRIPTION words kept per page")
      ->capture_default_str();
  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, 2)) return *done;

  size_t written = 0, skipped = 0;
  for (const std::string& dir : dirs) {
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    if (ec) {
      std::fprintf(stderr, "attnsearch-mancorpus: %s: %s\n", dir.c_str(), ec.message().c_str());
      return 2;
    }
    std::sort(files.begin(), files.end());
    for (const auto& path : files) {
      std::string file = path.filename().string();
      if (file.size() > 3 && file.compare(file.size() - 3, 3, ".gz") == 0) {
        file.resize(file.size() - 3);
      }
      const size_t dot = file.rfind('.');
      if (dot == std::string::npos || dot == 0) continue;
      const std::string name = file.substr(0, dot), section = file.substr(dot + 1);
      std::string src;
      Page page;
      if (!ReadPage(path.string(), &src) || !ParsePage(src, name, max_words, &page)) {
        ++skipped;
        continue;
      }
      std::string text = page.name_line;
      if (!page.description.empty()) text += (text.empty() ? "" : ". ") + page.description;
      nlohmann::json j = {
          {"id", file}, {"title", name}, {"text", text}, {"metadata", {{"section", section}}}};
      std::puts(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      ++written;
    }
  }
  std::fprintf(stderr, "attnsearch-mancorpus: %zu pages written, %zu skipped (aliases, empty)\n",
               written, skipped);
  return written > 0 ? 0 : 1;
}
