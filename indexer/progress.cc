#include "indexer/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace attnsearch::indexer {

Progress::Progress(ProgressMode mode, double interval_seconds)
    : mode_(mode), interval_(interval_seconds) {
  if (mode_ == ProgressMode::kAuto) {
    mode_ = ::isatty(STDERR_FILENO) ? ProgressMode::kBar : ProgressMode::kPlain;
  }
  start_ = last_ = std::chrono::steady_clock::now();
}

double Progress::Elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::Line(uint64_t documents, uint64_t stored, uint64_t errors, uint64_t bytes,
                           uint64_t total_bytes) const {
  const double t = std::max(Elapsed(), 1e-9);
  std::string line = absl::StrFormat("%llu docs (%llu stored)  %.0f docs/s  %.1f MB/s  %llu errors",
                                     (unsigned long long)documents, (unsigned long long)stored,
                                     documents / t, bytes / t / 1e6, (unsigned long long)errors);
  if (total_bytes > 0) {
    const double frac = std::min(1.0, double(bytes) / double(total_bytes));
    absl::StrAppendFormat(&line, "  %5.1f%%", frac * 100);
    if (frac > 0.001 && frac < 1.0) {
      const int eta = int(t * (1 - frac) / frac);
      absl::StrAppendFormat(&line, "  ETA %d:%02d:%02d", eta / 3600, eta / 60 % 60, eta % 60);
    }
  }
  return line;
}

void Progress::Update(uint64_t documents, uint64_t stored, uint64_t errors, uint64_t bytes,
                      uint64_t total_bytes) {
  if (mode_ == ProgressMode::kOff) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (mode_ == ProgressMode::kBar) {
    if (drawn_ && since < 0.1) return;
    const std::string line = Line(documents, stored, errors, bytes, total_bytes);
    if (total_bytes > 0) {
      constexpr int kWidth = 24;
      const int fill = int(kWidth * std::min(1.0, double(bytes) / double(total_bytes)));
      std::fprintf(stderr, "\r\033[K[%s%s] %s", std::string(size_t(fill), '#').c_str(),
                   std::string(size_t(kWidth - fill), ' ').c_str(), line.c_str());
    } else {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
    }
    std::fflush(stderr);
    drawn_ = true;
    last_ = now;
    return;
  }
  if (since < interval_) return;
  std::fprintf(stderr, "attnsearch-index: %s\n",
               Line(documents, stored, errors, bytes, total_bytes).c_str());
  last_ = now;
}

void Progress::Clear() {
  if (mode_ == ProgressMode::kBar && drawn_) {
    std::fprintf(stderr, "\r\033[K");
    drawn_ = false;
  }
}

}  // namespace attnsearch::indexer
