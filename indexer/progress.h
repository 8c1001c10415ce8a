// Progress reports of a load on stderr: a live one-line bar (redrawn with
// \r) when stderr is a terminal, otherwise a plain line every few seconds.
#ifndef ATTNSEARCH_INDEXER_PROGRESS_H_
#define ATTNSEARCH_INDEXER_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace attnsearch::indexer {

enum class ProgressMode { kAuto, kBar, kPlain, kOff };

class Progress {
 public:
  // kAuto: kBar when stderr is a terminal, else kPlain. Plain lines are
  // printed every `interval_seconds`.
  Progress(ProgressMode mode, double interval_seconds);

  // Reports the state; draws when due (the bar at most 10 times a second).
  // `documents` written, `stored` of them durable (checkpointed: a re-run
  // after a crash resumes after them), `bytes` of `total_bytes` read (total
  // 0: unknown, no ETA).
  void Update(uint64_t documents, uint64_t stored, uint64_t errors, uint64_t bytes,
              uint64_t total_bytes);
  // Clears the bar so that another line can be printed; the next Update
  // redraws it.
  void Clear();
  // Seconds since construction.
  double Elapsed() const;

 private:
  std::string Line(uint64_t documents, uint64_t stored, uint64_t errors, uint64_t bytes,
                   uint64_t total_bytes) const;

  ProgressMode mode_;
  double interval_;
  std::chrono::steady_clock::time_point start_, last_;
  bool drawn_ = false;
};

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_PROGRESS_H_
