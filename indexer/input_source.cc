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
#include "indexer/npy_source.h"
#include "indexer/pipelined_source.h"
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

// JSON lines, read as a pipeline: the reader thread reads (and
// decompresses) blocks of lines, the workers parse and validate them.
class JsonLinesSource : public PipelinedSource {
 public:
  JsonLinesSource(std::unique_ptr<InputFile> file, ParseOptions options)
      : file_(std::move(file)),
        options_(options),
        file_path_(file_->path()),
        file_size_(file_->file_size()) {
    Start(options.threads);
  }
  ~JsonLinesSource() override { Stop(); }

  std::string Location(uint64_t position) const override {
    return absl::StrCat(file_path_, ":", position);
  }
  uint64_t file_size() const override { return file_size_; }

 private:
  // Lines read together: enough to keep a worker busy for a while, few
  // enough to bound the memory in flight.
  static constexpr size_t kBlockLines = 256;
  static constexpr size_t kBlockBytes = size_t(8) << 20;

  bool ReadBlock(Block* block, absl::Status* status) override {
    size_t bytes = 0;
    std::string line;
    while (block->lines.size() < kBlockLines && bytes < kBlockBytes && file_->ReadLine(&line)) {
      if (IsBlank(line)) continue;
      bytes += line.size();
      block->lines.emplace_back(file_->line_number(), std::move(line));
    }
    block->bytes_read = file_->bytes_read();
    if (!block->lines.empty()) return true;
    *status = file_->status();
    return false;
  }

  void ParseBlock(Block* block) override {
    block->records.resize(block->lines.size());
    for (size_t i = 0; i < block->lines.size(); ++i) {
      InputRecord& r = block->records[i];
      r.position = block->lines[i].first;
      const std::string& line = block->lines[i].second;
      r.status =
          ParseJsonLine(line, options_, &r.doc, line.capacity() - line.size() >= kJsonLinePadding);
    }
  }

  // Read by the reader thread only.
  const std::unique_ptr<InputFile> file_;
  const ParseOptions options_;
  const std::string file_path_;
  const uint64_t file_size_;
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
    case InputFormat::kNpy:
      return "npy";
    case InputFormat::kAuto:
      break;
  }
  return "auto";
}

bool ParseInputFormat(const std::string& name, InputFormat* out) {
  for (InputFormat f : {InputFormat::kAuto, InputFormat::kJsonLines, InputFormat::kBeir,
                        InputFormat::kFvecs, InputFormat::kNpy}) {
    if (name == InputFormatName(f)) {
      *out = f;
      return true;
    }
  }
  return false;
}

InputFormat DetectFormat(const std::string& input) {
  std::error_code ec;
  if (fs::is_directory(input, ec)) {
    return IsNpyFolder(input) ? InputFormat::kNpy : InputFormat::kBeir;
  }
  if (absl::EndsWith(input, ".fvecs") || absl::EndsWith(input, ".fvecs.gz")) {
    return InputFormat::kFvecs;
  }
  return InputFormat::kJsonLines;
}

absl::StatusOr<std::string> DataFile(const std::string& input, InputFormat format) {
  if (format == InputFormat::kAuto) format = DetectFormat(input);
  if (format == InputFormat::kNpy) {
    for (const char* name : {"tokens.npy", "pooled.npy"}) {
      const std::string p = (fs::path(input) / name).string();
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return p;
    }
    return absl::NotFoundError(absl::StrCat(input, ": no tokens.npy or pooled.npy"));
  }
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
  if (format == InputFormat::kNpy) {
    ATTN_ASSIGN_OR_RETURN(const NpyFolderInfo info, InspectNpyFolder(input));
    return FirstDocument{.text_only = false, .dim = info.dim};
  }
  ATTN_ASSIGN_OR_RETURN(const std::string path, DataFile(input, format));
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  // The first record that parses and states its vectors' length (or has
  // none): a bad line before it is reported, with its line, by the load.
  constexpr int kMostLines = 10000;
  std::string line;
  for (int lines = 0; lines < kMostLines && file->ReadLine(&line);) {
    if (IsBlank(line)) continue;
    ++lines;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    FirstDocument first{.text_only = true};
    for (const char* key : {"pooled", "tokens"}) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) continue;
      first.text_only = false;
      if (first.dim == 0) first.dim = StatedDim(*it, std::string_view(key) == "tokens");
    }
    if (!first.text_only && first.dim == 0) continue;
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
  if (format == InputFormat::kNpy) return OpenNpySource(input, options);
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
