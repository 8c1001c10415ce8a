#include "core/utf8.h"

#include <utf8cpp/utf8.h>

#include <cstdint>
#include <cstring>

namespace attnsearch {

size_t FindInvalidUtf8(std::string_view s) {
  // ASCII, 8 bytes at a time, then utfcpp from the first other byte.
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & 0x8080808080808080ull) != 0) break;
  }
  const char* bad = utf8::find_invalid(s.data() + i, s.data() + s.size());
  return bad == s.data() + s.size() ? std::string_view::npos : size_t(bad - s.data());
}

void AppendUtf8(uint32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(char(c));
  } else if (c < 0x800) {
    out->push_back(char(0xC0 | (c >> 6)));
    out->push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(char(0xE0 | (c >> 12)));
    out->push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(char(0x80 | (c & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (c >> 18)));
    out->push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(char(0x80 | (c & 0x3F)));
  }
}

std::string CutText(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t cut = max_bytes;
  while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;  // a character boundary
  return std::string(s.substr(0, cut)) + "… (" + std::to_string(s.size()) + " bytes, cut)";
}

}  // namespace attnsearch
