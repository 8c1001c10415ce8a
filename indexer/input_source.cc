#include "indexer/input_source.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/status.h"
#include "dataset/input_file.h"
#include "nlohmann/json.hpp"

namespace attnsearch::indexer {
namespace {

namespace fs = std::filesystem;

bool IsBlank(const std::string& s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

// JSON lines as a pipeline: one thread reads (and decompresses) blocks of
// lines, `threads` workers parse and validate them, and Next hands the
// records out in input order, so what a load writes and where its checkpoint
// stands do not depend on the thread count.
class JsonLinesSource : public RecordSource {
 public:
  JsonLinesSource(std::unique_ptr<InputFile> file, ParseOptions options)
      : file_(std::move(file)),
        options_(options),
        file_path_(file_->path()),
        file_size_(file_->file_size()) {
    const uint32_t threads =
        options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    max_blocks_ = 2 * size_t(threads) + 2;
    reader_ = std::thread([this] { Read(); });
    for (uint32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Parse(); });
  }

  ~JsonLinesSource() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    reader_.join();
    for (std::thread& t : workers_) t.join();
  }

  bool Next(InputRecord* record) override {
    while (out_ == nullptr || out_pos_ >= out_->records.size()) {
      absl::MutexLock lock(&mu_);
      out_.reset();
      mu_.Await(absl::Condition(this, &JsonLinesSource::NextReady));
      if (blocks_.empty()) return false;
      out_ = std::move(blocks_.front());
      blocks_.pop_front();
      out_pos_ = 0;
      bytes_consumed_ = out_->bytes_read;
    }
    *record = std::move(out_->records[out_pos_++]);
    return true;
  }
  absl::Status status() const override {
    absl::MutexLock lock(&mu_);
    return read_status_;
  }
  std::string Location(uint64_t position) const override {
    return absl::StrCat(file_path_, ":", position);
  }
  uint64_t bytes_read() const override { return bytes_consumed_; }
  uint64_t file_size() const override { return file_size_; }

 private:
  // Lines read together: enough to keep a worker busy for a while, few
  // enough to bound the memory in flight (max_blocks_ of them).
  static constexpr size_t kBlockLines = 256;
  static constexpr size_t kBlockBytes = size_t(8) << 20;

  struct Block {
    std::vector<std::pair<uint64_t, std::string>> lines;  // (line number, text)
    std::vector<InputRecord> records;
    uint64_t bytes_read = 0;  // of the file, once this block was read
    bool claimed = false;     // a worker parses it
    bool parsed = false;
  };

  void Read() {
    for (;;) {
      auto block = std::make_unique<Block>();
      size_t bytes = 0;
      std::string line;
      while (block->lines.size() < kBlockLines && bytes < kBlockBytes && file_->ReadLine(&line)) {
        if (IsBlank(line)) continue;
        bytes += line.size();
        block->lines.emplace_back(file_->line_number(), std::move(line));
      }
      block->bytes_read = file_->bytes_read();
      const bool end = block->lines.empty();
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &JsonLinesSource::RoomToRead));
      if (stop_ || end) {
        read_done_ = true;
        read_status_ = file_->status();
        return;
      }
      blocks_.push_back(std::move(block));
    }
  }

  void Parse() {
    for (;;) {
      Block* block = nullptr;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &JsonLinesSource::WorkToDo));
        if (stop_) return;
        block = Unclaimed();
        if (block == nullptr) return;  // the input is read and every block taken
        block->claimed = true;
      }
      block->records.resize(block->lines.size());
      for (size_t i = 0; i < block->lines.size(); ++i) {
        InputRecord& r = block->records[i];
        r.position = block->lines[i].first;
        r.status = ParseJsonLine(block->lines[i].second, options_, &r.doc);
      }
      block->lines = {};
      absl::MutexLock lock(&mu_);
      block->parsed = true;
    }
  }

  // The conditions the threads wait for (called with mu_ held).
  bool NextReady() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (!blocks_.empty() && blocks_.front()->parsed) || (read_done_ && blocks_.empty());
  }
  bool RoomToRead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || blocks_.size() < max_blocks_;
  }
  bool WorkToDo() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || read_done_ || Unclaimed() != nullptr;
  }

  // The first block no worker has taken, or null.
  Block* Unclaimed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto& b : blocks_) {
      if (!b->claimed) return b.get();
    }
    return nullptr;
  }

  // Read by the reader thread only, until it ends.
  const std::unique_ptr<InputFile> file_;
  const ParseOptions options_;
  const std::string file_path_;
  const uint64_t file_size_;
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

class FvecsSource : public RecordSource {
 public:
  FvecsSource(std::unique_ptr<InputFile> file, ParseOptions options)
      : file_(std::move(file)), options_(options) {}

  bool Next(InputRecord* record) override {
    if (!status_.ok()) return false;
    int32_t d = 0;
    if (!file_->ReadExact(&d, sizeof(d))) {
      status_ = file_->status();
      return false;
    }
    // Records are length-prefixed: a dimension that cannot be right means the
    // file is not fvecs (or is corrupt), and nothing after it can be trusted.
    if (d <= 0 || uint32_t(d) > kMaxDim) {
      status_ = absl::DataLossError(absl::StrCat(Location(count_ + 1), ": bad record dimension ", d,
                                                 " (not an fvecs file, or corrupt)"));
      return false;
    }
    values_.resize(size_t(d));
    if (!file_->ReadExact(values_.data(), values_.size() * sizeof(float))) {
      status_ = file_->status().ok()
                    ? absl::DataLossError(absl::StrCat(Location(count_ + 1), ": truncated"))
                    : file_->status();
      return false;
    }
    ++count_;
    record->position = count_;
    record->doc = Document();
    record->doc.id = std::to_string(count_ - 1);
    if (uint32_t(d) != options_.dim) {
      record->status = absl::InvalidArgumentError(
          absl::StrCat("pooled: expected ", options_.dim, " values, got ", d));
      return true;
    }
    record->doc.pooled = values_;
    record->status = ValidateDocument(&record->doc, options_);
    return true;
  }
  absl::Status status() const override { return status_; }
  std::string Location(uint64_t position) const override {
    return absl::StrCat(file_->path(), ":record ", position - 1);
  }
  uint64_t bytes_read() const override { return file_->bytes_read(); }
  uint64_t file_size() const override { return file_->file_size(); }

 private:
  std::unique_ptr<InputFile> file_;
  const ParseOptions options_;
  uint64_t count_ = 0;
  std::vector<float> values_;
  absl::Status status_;
};

}  // namespace

const char* InputFormatName(InputFormat f) {
  switch (f) {
    case InputFormat::kJsonLines:
      return "jsonl";
    case InputFormat::kBeir:
      return "beir";
    case InputFormat::kFvecs:
      return "fvecs";
    case InputFormat::kAuto:
      break;
  }
  return "auto";
}

bool ParseInputFormat(const std::string& name, InputFormat* out) {
  for (InputFormat f :
       {InputFormat::kAuto, InputFormat::kJsonLines, InputFormat::kBeir, InputFormat::kFvecs}) {
    if (name == InputFormatName(f)) {
      *out = f;
      return true;
    }
  }
  return false;
}

InputFormat DetectFormat(const std::string& input) {
  std::error_code ec;
  if (fs::is_directory(input, ec)) return InputFormat::kBeir;
  if (absl::EndsWith(input, ".fvecs") || absl::EndsWith(input, ".fvecs.gz")) {
    return InputFormat::kFvecs;
  }
  return InputFormat::kJsonLines;
}

absl::StatusOr<std::string> DataFile(const std::string& input, InputFormat format) {
  if (format == InputFormat::kAuto) format = DetectFormat(input);
  if (format != InputFormat::kBeir) return input;
  std::error_code ec;
  for (const char* name : {"corpus.jsonl", "corpus.jsonl.gz"}) {
    const std::string p = (fs::path(input) / name).string();
    if (fs::is_regular_file(p, ec)) return p;
  }
  return absl::NotFoundError(
      absl::StrCat(input, ": not a BEIR folder (no corpus.jsonl or corpus.jsonl.gz)"));
}

absl::StatusOr<uint32_t> PeekFvecsDim(const std::string& path) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> f, InputFile::Open(path));
  int32_t d = 0;
  if (!f->ReadExact(&d, sizeof(d))) {
    ATTN_RETURN_IF_ERROR(f->status());
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty"));
  }
  if (d <= 0 || uint32_t(d) > kMaxDim) {
    return absl::DataLossError(
        absl::StrCat(path, ": bad first record dimension ", d, " (not an fvecs file?)"));
  }
  return uint32_t(d);
}

namespace {

// The row length a "pooled" or "tokens" value states; 0 if none.
uint32_t StatedDim(const nlohmann::json& v, bool tokens) {
  if (!tokens) return v.is_array() ? uint32_t(std::min<size_t>(v.size(), kMaxDim + 1)) : 0;
  if (v.is_object()) {
    auto cols = v.find("cols");
    return cols != v.end() && cols->is_number_unsigned()
               ? uint32_t(std::min<uint64_t>(cols->get<uint64_t>(), kMaxDim + 1))
               : 0;
  }
  return v.is_array() && !v.empty() ? StatedDim(v.front(), false) : 0;
}

}  // namespace

absl::StatusOr<FirstDocument> PeekFirstDocument(const std::string& input, InputFormat format) {
  if (format == InputFormat::kAuto) format = DetectFormat(input);
  if (format == InputFormat::kFvecs) return FirstDocument{};
  ATTN_ASSIGN_OR_RETURN(const std::string path, DataFile(input, format));
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  std::string line;
  while (file->ReadLine(&line)) {
    if (IsBlank(line)) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return FirstDocument{};
    FirstDocument first{.text_only = true};
    for (const char* key : {"pooled", "tokens"}) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) continue;
      first.text_only = false;
      if (first.dim == 0) first.dim = StatedDim(*it, std::string_view(key) == "tokens");
    }
    return first;
  }
  ATTN_RETURN_IF_ERROR(file->status());
  return FirstDocument{};
}

absl::StatusOr<std::unique_ptr<RecordSource>> OpenSource(const std::string& input,
                                                         InputFormat format,
                                                         const ParseOptions& options) {
  if (format == InputFormat::kAuto) format = DetectFormat(input);
  if (options.dim == 0 || options.dim > kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat("dim: ", options.dim, " is out of range"));
  }
  ATTN_ASSIGN_OR_RETURN(const std::string path, DataFile(input, format));
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  ParseOptions o = options;
  o.beir = format == InputFormat::kBeir;
  if (format == InputFormat::kFvecs) {
    return std::unique_ptr<RecordSource>(new FvecsSource(std::move(file), o));
  }
  return std::unique_ptr<RecordSource>(new JsonLinesSource(std::move(file), o));
}

}  // namespace attnsearch::indexer
