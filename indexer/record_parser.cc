#include "indexer/record_parser.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/utf8.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace attnsearch::indexer {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(field.empty() ? std::string(what)
                                                  : absl::StrCat(field, ": ", what));
}

// "string \"NaN\"", "object", ... for error messages.
std::string Describe(const json& v) {
  switch (v.type()) {
    case json::value_t::string: {
      std::string s = v.get_ref<const std::string&>();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return absl::StrCat("string \"", s, "\"");
    }
    case json::value_t::null:
      return "null";
    default:
      return v.type_name();
  }
}

// Drops nlohmann's "[json.exception.parse_error.101] " prefix, and cuts
// its quote of the line ("last read: '...'", which can be the whole line)
// to a few hundred bytes.
std::string CleanJsonError(const char* what) {
  std::string s = what;
  if (s.rfind("[json.exception.", 0) == 0) {
    const size_t end = s.find("] ");
    if (end != std::string::npos) s.erase(0, end + 2);
  }
  return CutText(s, 400);
}

absl::Status ToFloat(const json& v, const std::string& field, float* out) {
  if (!v.is_number()) return Bad(field, absl::StrCat("expected a number, got ", Describe(v)));
  const double d = v.get<double>();
  if (!std::isfinite(d)) return Bad(field, "not a finite number");
  if (std::fabs(d) > double(FLT_MAX)) {
    return Bad(field, absl::StrCat(v.dump(), " is out of the float range"));
  }
  *out = float(d);
  return absl::OkStatus();
}

// Appends the numbers of array `v` to *out; exactly `expected` of them.
absl::Status ToFloats(const json& v, const std::string& field, size_t expected,
                      std::vector<float>* out) {
  if (!v.is_array()) {
    return Bad(field, absl::StrCat("expected an array of numbers, got ", Describe(v)));
  }
  if (v.size() != expected) {
    return Bad(field, absl::StrCat("expected ", expected, " values, got ", v.size()));
  }
  const size_t base = out->size();
  out->resize(base + expected);
  for (size_t i = 0; i < expected; ++i) {
    float* dst = out->data() + base + i;
    // Build the field name only on failure: this is the hot loop.
    if (v[i].is_number_float()) {
      const double d = v[i].get<double>();
      if (std::isfinite(d) && std::fabs(d) <= double(FLT_MAX)) {
        *dst = float(d);
        continue;
      }
    } else if (v[i].is_number()) {
      *dst = v[i].get<float>();
      continue;
    }
    return ToFloat(v[i], absl::StrCat(field, "[", i, "]"), dst);
  }
  return absl::OkStatus();
}

// The value of four hex digits at line[i..i+4), or -1.
int Hex4(std::string_view line, size_t i) {
  if (i + 4 > line.size()) return -1;
  int v = 0;
  for (size_t k = i; k < i + 4; ++k) {
    const char c = line[k];
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// Why `line`, whose first malformed UTF-8 sequence starts at byte `bad`, is
// bad: "FIELD: invalid UTF-8 at byte N", FIELD being the top-level key whose
// value holds the sequence and N its offset in the decoded string. A small
// scan of the valid prefix: nlohmann only says "ill-formed UTF-8 byte".
absl::Status Utf8Error(std::string_view line, size_t bad) {
  int depth = 0;
  bool in_string = false;
  bool after_colon = false;  // at depth 1: the next string is a value
  size_t begin = 0;          // of the current or last string's contents
  size_t decoded = 0;        // bytes of the current string's value so far
  std::string_view last_string, key;
  for (size_t i = 0; i < bad; ++i) {
    const char c = line[i];
    if (in_string) {
      if (c == '"') {
        in_string = false;
        last_string = line.substr(begin, i - begin);
      } else if (c == '\\' && i + 1 < bad) {
        ++i;
        int u;
        if (line[i] == 'u' && (u = Hex4(line, i + 1)) >= 0) {
          i += 4;
          int low;
          if (u >= 0xD800 && u <= 0xDBFF && i + 2 < bad && line[i + 1] == '\\' &&
              line[i + 2] == 'u' && (low = Hex4(line, i + 3)) >= 0xDC00 && low <= 0xDFFF) {
            i += 6;
            decoded += 4;  // a surrogate pair: one code point above U+FFFF
          } else {
            decoded += u < 0x80 ? 1 : u < 0x800 ? 2 : 3;
          }
        } else {
          ++decoded;
        }
      } else {
        ++decoded;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        begin = i + 1;
        decoded = 0;
        break;
      case '{':
      case '[':
        if (++depth == 1) after_colon = false;
        break;
      case '}':
      case ']':
        --depth;
        break;
      case ':':
        if (depth == 1) {
          key = last_string;
          after_colon = true;
        }
        break;
      case ',':
        if (depth == 1) after_colon = false;
        break;
      default:
        break;
    }
  }
  if (!in_string || depth < 1) {
    return Bad("", absl::StrCat("bad JSON: invalid UTF-8 at byte ", bad, " of the line"));
  }
  if (depth == 1 && !after_colon) {
    return Bad("", absl::StrCat("invalid UTF-8 in a field name at byte ", bad, " of the line"));
  }
  return Bad(std::string(key), absl::StrCat("invalid UTF-8 at byte ", decoded));
}

absl::Status ParseUint(const json& v, const std::string& field, uint64_t* out) {
  if (!v.is_number_integer() ||
      (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0)) {
    return Bad(field, absl::StrCat("expected a non-negative integer, got ", Describe(v)));
  }
  *out = v.get<uint64_t>();
  return absl::OkStatus();
}

absl::Status ParseTokens(const json& v, const ParseOptions& options, Document* out) {
  const uint32_t dim = options.dim;
  if (v.is_array()) {
    if (v.empty()) return Bad("tokens", "has no rows");
    if (v.size() > options.max_tokens) {
      return Bad("tokens",
                 absl::StrCat(v.size(), " rows exceed the limit of ", options.max_tokens));
    }
    out->tokens.reserve(v.size() * size_t(dim));
    for (size_t r = 0; r < v.size(); ++r) {
      const std::string field = absl::StrCat("tokens[", r, "]");
      if (!v[r].is_array()) {
        return Bad(field,
                   absl::StrCat("expected an array of ", dim, " numbers, got ", Describe(v[r])));
      }
      absl::Status s = ToFloats(v[r], field, dim, &out->tokens);
      if (!s.ok()) return s;
    }
    out->num_tokens = uint32_t(v.size());
    return absl::OkStatus();
  }
  if (v.is_object()) {
    for (const char* key : {"rows", "cols", "values"}) {
      if (!v.contains(key)) return Bad(absl::StrCat("tokens.", key), "missing");
    }
    uint64_t rows = 0, cols = 0;
    absl::Status s = ParseUint(v["rows"], "tokens.rows", &rows);
    if (!s.ok()) return s;
    s = ParseUint(v["cols"], "tokens.cols", &cols);
    if (!s.ok()) return s;
    if (rows == 0) return Bad("tokens.rows", "must be at least 1");
    if (rows > options.max_tokens) {
      return Bad("tokens.rows", absl::StrCat(rows, " exceeds the limit of ", options.max_tokens));
    }
    if (cols != dim) {
      return Bad("tokens.cols",
                 absl::StrCat("expected ", dim, " (the collection's dim), got ", cols));
    }
    const json& values = v["values"];
    if (values.is_array() && values.size() != rows * cols) {
      return Bad("tokens.values", absl::StrCat("expected rows x cols = ", rows * cols,
                                               " values, got ", values.size()));
    }
    s = ToFloats(values, "tokens.values", rows * cols, &out->tokens);
    if (!s.ok()) return s;
    out->num_tokens = uint32_t(rows);
    return absl::OkStatus();
  }
  return Bad("tokens", absl::StrCat("expected an array of rows or {\"rows\", \"cols\", "
                                    "\"values\"}, got ",
                                    Describe(v)));
}

// The fields of a record object into *out, without the content rule or
// validation.
absl::Status ParseFields(const json& j, const ParseOptions& options, Document* out) {
  if (!j.is_object()) return Bad("", absl::StrCat("expected a JSON object, got ", Describe(j)));
  const char* id_key = options.beir ? "_id" : "id";
  auto it = j.find(id_key);
  if (it == j.end() || it->is_null()) {
    // BEIR corpora in the wild use either spelling.
    const char* other = options.beir ? "id" : "_id";
    auto alt = j.find(other);
    if (alt == j.end() || alt->is_null()) return Bad(id_key, "missing");
    it = alt;
    id_key = other;
  }
  if (!it->is_string()) {
    return Bad(id_key, absl::StrCat("expected a string, got ", Describe(*it)));
  }
  out->id = it->get<std::string>();
  if (out->id.empty()) return Bad(id_key, "must not be empty");
  if (out->id.size() > kMaxIdBytes) {
    return Bad(id_key, absl::StrCat("longer than ", kMaxIdBytes, " bytes"));
  }

  std::string title, text;
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"title", &title}, {"text", &text}}) {
    auto f = j.find(key);
    if (f == j.end() || f->is_null()) continue;
    if (!f->is_string()) {
      return Bad(key, absl::StrCat("expected a string, got ", Describe(*f)));
    }
    *dst = f->get<std::string>();
  }
  out->text = title.empty()  ? std::move(text)
              : text.empty() ? std::move(title)
                             : absl::StrCat(title, "\n\n", text);

  if (auto m = j.find("metadata"); m != j.end() && !m->is_null()) {
    if (!m->is_object()) {
      return Bad("metadata", absl::StrCat("expected an object of strings, got ", Describe(*m)));
    }
    for (auto e = m->begin(); e != m->end(); ++e) {
      const json& v = e.value();
      if (v.is_string()) {
        out->metadata[e.key()] = v.get<std::string>();
      } else if (v.is_number() || v.is_boolean()) {
        out->metadata[e.key()] = v.dump();
      } else {
        return Bad(absl::StrCat("metadata.", e.key()),
                   absl::StrCat("expected a string, number or boolean, got ", Describe(v)));
      }
    }
  }

  const auto pooled = j.find("pooled");
  const auto tokens = j.find("tokens");
  const bool has_pooled = pooled != j.end() && !pooled->is_null();
  const bool has_tokens = tokens != j.end() && !tokens->is_null();
  if (has_pooled) {
    ATTN_RETURN_IF_ERROR(ToFloats(*pooled, "pooled", options.dim, &out->pooled));
  }
  if (has_tokens) ATTN_RETURN_IF_ERROR(ParseTokens(*tokens, options, out));

  if (auto t = j.find("token_texts"); t != j.end() && !t->is_null()) {
    if (!t->is_array()) {
      return Bad("token_texts", absl::StrCat("expected an array of strings, got ", Describe(*t)));
    }
    out->token_texts.reserve(t->size());
    for (size_t i = 0; i < t->size(); ++i) {
      if (!(*t)[i].is_string()) {
        return Bad(absl::StrCat("token_texts[", i, "]"),
                   absl::StrCat("expected a string, got ", Describe((*t)[i])));
      }
      out->token_texts.push_back((*t)[i].get<std::string>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseObject(const json& j, const ParseOptions& options, Document* out) {
  ATTN_RETURN_IF_ERROR(ParseFields(j, options, out));
  auto given = [&j](const char* key) {
    auto it = j.find(key);
    return it != j.end() && !it->is_null();
  };
  if (!given("pooled") && !given("tokens") && out->text.empty()) {
    return Bad("", kNoContentReason);
  }
  return ValidateDocument(out, options);
}

// Parses `line` as JSON; the reason when it is not.
absl::Status ParseJson(std::string_view line, json* j) {
  try {
    *j = json::parse(line.begin(), line.end());
  } catch (const json::out_of_range& e) {
    // nlohmann reports 1e999 and the like here: they would be infinite.
    return Bad("", absl::StrCat("bad JSON: ", CleanJsonError(e.what()), " (not a finite number)"));
  } catch (const json::exception& e) {
    // Checked only here: nlohmann rejects malformed UTF-8 in strings, so a
    // parsed line is valid UTF-8.
    const size_t bad = FindInvalidUtf8(line);
    if (bad != std::string_view::npos) return Utf8Error(line, bad);
    return Bad("", absl::StrCat("bad JSON: ", CleanJsonError(e.what())));
  }
  return absl::OkStatus();
}

// --- The fast path: simdjson ---
//
// Parses the common shape of a record straight into *out and reports
// whether it could. Anything it does not handle the way the full parser
// does (malformed JSON, invalid UTF-8, a wrong type or count, a number out
// of the float range or too large to be exact, a non-string metadata value,
// a field given twice) makes it give up, and the full parser below, which
// names the field and the reason, decides. Both produce the same Document.
// simdjson's DOM parser picks its SIMD kernels for the CPU at run time.
namespace fast {

namespace dom = simdjson::dom;

// Appends exactly `expected` floats of the array `v`.
bool Floats(dom::element v, size_t expected, std::vector<float>* out) {
  dom::array a;
  if (v.get_array().get(a) || a.size() != expected) return false;
  const size_t base = out->size();
  out->resize(base + expected);
  float* dst = out->data() + base;
  for (dom::element x : a) {
    double d;
    if (x.get_double().get(d)) return false;
    // Beyond 2^53 an integer's nearest float may differ from its nearest
    // double's: the full parser decides.
    if (!(std::fabs(d) <= double(FLT_MAX)) || std::fabs(d) > 9007199254740992.0) return false;
    *dst++ = float(d);
  }
  return true;
}

bool Tokens(dom::element v, const ParseOptions& options, Document* out) {
  if (v.is_array()) {
    dom::array rows = v.get_array().value_unsafe();
    if (rows.size() == 0 || rows.size() > options.max_tokens) return false;
    out->tokens.reserve(rows.size() * size_t(options.dim));
    for (dom::element row : rows) {
      if (!Floats(row, options.dim, &out->tokens)) return false;
    }
    out->num_tokens = uint32_t(rows.size());
    return true;
  }
  dom::object m;
  if (v.get_object().get(m) || m.size() != 3) return false;
  uint64_t rows = 0, cols = 0;
  if (m["rows"].get_uint64().get(rows) || m["cols"].get_uint64().get(cols)) return false;
  if (rows == 0 || rows > options.max_tokens || cols != options.dim) return false;
  dom::element values;
  if (m["values"].get(values)) return false;
  out->num_tokens = uint32_t(rows);
  return Floats(values, rows * cols, &out->tokens);
}

// One top-level field into *out; false to give up.
bool Field(std::string_view key, dom::element value, const ParseOptions& options, Document* out,
           std::string* title, std::string* text, uint32_t* seen) {
  auto once = [seen](uint32_t bit) {
    if (*seen & bit) return false;
    *seen |= bit;
    return true;
  };
  if (value.is_null()) return false;  // the full parser's rules
  const std::string_view id_key = options.beir ? "_id" : "id";
  std::string_view sv;
  if (key == id_key) {
    if (!once(1) || value.get_string().get(sv)) return false;
    out->id = sv;
  } else if (key == "title" || key == "text") {
    if (!once(key == "title" ? 2 : 4) || value.get_string().get(sv)) return false;
    *(key == "title" ? title : text) = sv;
  } else if (key == "metadata") {
    dom::object m;
    if (!once(8) || value.get_object().get(m)) return false;
    for (dom::key_value_pair e : m) {
      if (e.value.get_string().get(sv)) return false;
      if (!out->metadata.emplace(std::string(e.key), std::string(sv)).second) return false;
    }
  } else if (key == "pooled") {
    if (!once(16) || !Floats(value, options.dim, &out->pooled)) return false;
  } else if (key == "tokens") {
    if (!once(32) || !Tokens(value, options, out)) return false;
  } else if (key == "token_texts") {
    dom::array a;
    if (!once(64) || value.get_array().get(a)) return false;
    for (dom::element t : a) {
      if (t.get_string().get(sv)) return false;
      out->token_texts.emplace_back(sv);
    }
  } else if (key == "id" || key == "_id") {
    return false;  // the other spelling of the id: the full parser's rules
  }
  return true;
}

static_assert(simdjson::SIMDJSON_PADDING <= kJsonLinePadding);

bool Parse(std::string_view line, const ParseOptions& options, Document* out, bool padded) {
  thread_local dom::parser parser;
  dom::object obj;
  if (parser.parse(line.data(), line.size(), /*realloc_if_needed=*/!padded).get_object().get(obj)) {
    return false;
  }
  std::string title, text;
  uint32_t seen = 0;
  for (dom::key_value_pair field : obj) {
    if (!Field(field.key, field.value, options, out, &title, &text, &seen)) return false;
  }
  if (!(seen & 1) || out->id.empty() || out->id.size() > kMaxIdBytes) return false;
  out->text = title.empty()  ? std::move(text)
              : text.empty() ? std::move(title)
                             : absl::StrCat(title, "\n\n", text);
  return true;
}

}  // namespace fast

}  // namespace

absl::Status ParseJsonLine(std::string_view line, const ParseOptions& options, Document* out,
                           bool padded) {
  *out = Document();
  if (fast::Parse(line, options, out, padded)) return ValidateDocument(out, options);
  return ParseJsonLineFully(line, options, out);
}

absl::Status ParseJsonLineFully(std::string_view line, const ParseOptions& options, Document* out) {
  *out = Document();
  json j;
  ATTN_RETURN_IF_ERROR(ParseJson(line, &j));
  return ParseObject(j, options, out);
}

absl::Status ParseJsonLineFields(std::string_view line, const ParseOptions& options,
                                 Document* out) {
  *out = Document();
  json j;
  ATTN_RETURN_IF_ERROR(ParseJson(line, &j));
  return ParseFields(j, options, out);
}

absl::Status ValidateDocument(Document* doc, const ParseOptions& options) {
  DocumentRules rules;
  rules.dim = options.dim;
  rules.max_tokens = options.max_tokens;
  return CheckDocument(doc, rules, "");
}

size_t EstimateWireBytes(const Document& doc) {
  size_t n = 16 + doc.id.size() + doc.text.size();
  for (const auto& [k, v] : doc.metadata) n += 8 + k.size() + v.size();
  n += 4 * (doc.pooled.size() + doc.tokens.size()) + 16;
  for (const auto& t : doc.token_texts) n += 2 + t.size();
  return n;
}

}  // namespace attnsearch::indexer
