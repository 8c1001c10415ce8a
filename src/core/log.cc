#include "core/log.h"

#include <cstdio>
#include <memory>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace attnsearch {
namespace {

std::mutex& SinkMutex() {
  static std::mutex mu;
  return mu;
}
// Guarded by SinkMutex(); null: stderr.
std::shared_ptr<const LogSink>& Sink() {
  static std::shared_ptr<const LogSink> sink;
  return sink;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

void Log(LogLevel level, std::string_view msg, const std::vector<LogField>& fields) {
  nlohmann::ordered_json j;
  j["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  j["level"] = LevelName(level);
  j["msg"] = std::string(msg);
  for (const LogField& f : fields) {
    std::visit([&](const auto& v) { j[f.key] = v; }, f.value);
  }
  const std::string line =
      j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(SinkMutex());
    sink = Sink();
  }
  if (sink != nullptr) {
    (*sink)(line);
  } else {
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
}

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  Sink() = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
}

}  // namespace attnsearch
