// Structured logging: every line is one JSON object,
//
//   {"time":"2026-12-05T14:21:55.377940Z","level":"warn","msg":"...", <fields>}
//
// written whole (one write per line, so lines of concurrent threads never
// interleave) to the sink: stderr unless SetLogSink says otherwise. Every
// module logs through it, so a process's log is JSON lines throughout.
// Field values are strings (bytes that are not UTF-8 become U+FFFD),
// integers, doubles or booleans.
//
// Thread safety: Log may be called from any thread; SetLogSink should be
// called before other threads log (it is itself safe to call at any time).
#ifndef ATTNSEARCH_CORE_LOG_H_
#define ATTNSEARCH_CORE_LOG_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"

namespace attnsearch {

enum class LogLevel { kInfo, kWarn, kError };

// One member of a log line.
struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
#ifndef ABSL_USES_STD_STRING_VIEW
  LogField(std::string_view k, absl::string_view v) : key(k), value(std::string(v)) {}
#endif
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  LogField(std::string_view k, T v) : key(k), value(int64_t(v)) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  LogField(std::string_view k, bool v) : key(k), value(v) {}

  std::string key;
  std::variant<std::string, int64_t, double, bool> value;
};

// Writes one line: time, level, msg, then `fields` in order.
void Log(LogLevel level, std::string_view msg, const std::vector<LogField>& fields = {});
inline void LogInfo(std::string_view msg, const std::vector<LogField>& fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarn(std::string_view msg, const std::vector<LogField>& fields = {}) {
  Log(LogLevel::kWarn, msg, fields);
}
inline void LogError(std::string_view msg, const std::vector<LogField>& fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

// Where lines go: `sink` receives each line with its trailing newline. A
// null sink restores the default, stderr.
using LogSink = std::function<void(std::string_view line)>;
void SetLogSink(LogSink sink);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_LOG_H_
