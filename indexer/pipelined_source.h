// PipelinedSource: a RecordSource read as a pipeline. One thread reads the
// input block by block (ReadBlock), `threads` workers turn blocks into
// records (ParseBlock), and Next hands the records out in input order, so
// what a load writes and where its checkpoint stands do not depend on the
// thread count. A caller of Next that would wait for the workers parses a
// waiting block itself. Internal to the indexer's sources.
#ifndef ATTNSEARCH_INDEXER_PIPELINED_SOURCE_H_
#define ATTNSEARCH_INDEXER_PIPELINED_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "indexer/input_source.h"

namespace attnsearch::indexer {

class PipelinedSource : public RecordSource {
 public:
  ~PipelinedSource() override;

  bool Next(InputRecord* record) override;
  absl::Status status() const override;
  uint64_t bytes_read() const override { return bytes_consumed_; }

 protected:
  struct Block {
    // Text input: (line number, text) of each line; empty for binary input.
    std::vector<std::pair<uint64_t, std::string>> lines;
    // Binary input: the records' index range [first, first + count).
    uint64_t first = 0, count = 0;
    // Filled by ParseBlock: one record per line, or per index.
    std::vector<InputRecord> records;
    uint64_t bytes_read = 0;  // of the input, once this block was read
    bool claimed = false;     // a worker parses it
    bool parsed = false;
  };

  PipelinedSource() = default;
  // Starts the reader and `threads` workers (0: one per hardware thread).
  // Called by the derived class's constructor, once ReadBlock and
  // ParseBlock can run.
  void Start(uint32_t threads);
  // Stops and joins the threads. The derived class's destructor calls it
  // before its members go.
  void Stop();

  // The reader thread: fills the next block; false (and `status`, OK at
  // the end of the input) when there is none.
  virtual bool ReadBlock(Block* block, absl::Status* status) = 0;
  // A worker: fills block->records from the block. Runs on several blocks
  // at once.
  virtual void ParseBlock(Block* block) = 0;

 private:
  void Read();
  void Parse();
  // Parses `block` (claimed by the caller) and marks it parsed.
  void Finish(Block* block);
  // The conditions the threads wait for (called with mu_ held).
  bool NextReady() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NextReadyOrWork() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RoomToRead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkToDo() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first block no worker has taken, or null.
  Block* Unclaimed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  size_t max_blocks_ = 0;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Block>> blocks_ ABSL_GUARDED_BY(mu_);  // in input order
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status read_status_ ABSL_GUARDED_BY(mu_);

  // The caller's (Next's) side.
  std::unique_ptr<Block> out_;
  size_t out_pos_ = 0;
  std::atomic<uint64_t> bytes_consumed_{0};

  std::thread reader_;
  std::vector<std::thread> workers_;
};

}  // namespace attnsearch::indexer

#endif  // ATTNSEARCH_INDEXER_PIPELINED_SOURCE_H_
