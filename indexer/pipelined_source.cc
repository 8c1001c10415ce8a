#include "indexer/pipelined_source.h"

#include <algorithm>

namespace attnsearch::indexer {

void PipelinedSource::Start(uint32_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  // Enough blocks in flight to keep every worker busy, few enough to bound
  // the memory they hold.
  max_blocks_ = 2 * size_t(threads) + 2;
  reader_ = std::thread([this] { Read(); });
  for (uint32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Parse(); });
}

void PipelinedSource::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (reader_.joinable()) reader_.join();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

PipelinedSource::~PipelinedSource() { Stop(); }

bool PipelinedSource::Next(InputRecord* record) {
  while (out_ == nullptr || out_pos_ >= out_->records.size()) {
    Block* help = nullptr;
    {
      absl::MutexLock lock(&mu_);
      out_.reset();
      mu_.Await(absl::Condition(this, &PipelinedSource::NextReadyOrWork));
      if (!NextReady()) {
        // Rather than wait for the workers, parse a block here.
        help = Unclaimed();
        help->claimed = true;
      } else {
        if (blocks_.empty()) return false;
        out_ = std::move(blocks_.front());
        blocks_.pop_front();
        out_pos_ = 0;
        bytes_consumed_ = out_->bytes_read;
      }
    }
    if (help != nullptr) Finish(help);
  }
  *record = std::move(out_->records[out_pos_++]);
  return true;
}

void PipelinedSource::Finish(Block* block) {
  ParseBlock(block);
  block->lines = {};
  absl::MutexLock lock(&mu_);
  block->parsed = true;
}

absl::Status PipelinedSource::status() const {
  absl::MutexLock lock(&mu_);
  return read_status_;
}

void PipelinedSource::Read() {
  for (;;) {
    auto block = std::make_unique<Block>();
    absl::Status status;
    const bool more = ReadBlock(block.get(), &status);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &PipelinedSource::RoomToRead));
    if (stop_ || !more) {
      read_done_ = true;
      read_status_ = status;
      return;
    }
    blocks_.push_back(std::move(block));
  }
}

void PipelinedSource::Parse() {
  for (;;) {
    Block* block = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &PipelinedSource::WorkToDo));
      if (stop_) return;
      block = Unclaimed();
      if (block == nullptr) return;  // the input is read and every block taken
      block->claimed = true;
    }
    Finish(block);
  }
}

bool PipelinedSource::NextReady() {
  return (!blocks_.empty() && blocks_.front()->parsed) || (read_done_ && blocks_.empty());
}

bool PipelinedSource::NextReadyOrWork() { return NextReady() || Unclaimed() != nullptr; }

bool PipelinedSource::RoomToRead() { return stop_ || blocks_.size() < max_blocks_; }

bool PipelinedSource::WorkToDo() { return stop_ || read_done_ || Unclaimed() != nullptr; }

PipelinedSource::Block* PipelinedSource::Unclaimed() {
  for (auto& b : blocks_) {
    if (!b->claimed) return b.get();
  }
  return nullptr;
}

}  // namespace attnsearch::indexer
