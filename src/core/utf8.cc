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

}  // namespace attnsearch
