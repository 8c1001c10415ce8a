#include "indexer/input_source.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

class JsonLinesSource : public RecordSource {
 public:
  JsonLinesSource(std::unique_ptr<InputFile> file, ParseOptions options)
      : file_(std::move(file)), options_(options) {}

  bool Next(InputRecord* record) override {
    while (file_->ReadLine(&line_)) {
      if (IsBlank(line_)) continue;
      record->position = file_->line_number();
      record->status = ParseJsonLine(line_, options_, &record->doc);
      return true;
    }
    return false;
  }
  absl::Status status() const override { return file_->status(); }
  std::string Location(uint64_t position) const override {
    return absl::StrCat(file_->path(), ":", position);
  }
  uint64_t bytes_read() const override { return file_->bytes_read(); }
  uint64_t file_size() const override { return file_->file_size(); }

 private:
  std::unique_ptr<InputFile> file_;
  const ParseOptions options_;
  std::string line_;
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

absl::StatusOr<bool> FirstDocumentIsTextOnly(const std::string& input, InputFormat format) {
  if (format == InputFormat::kAuto) format = DetectFormat(input);
  if (format == InputFormat::kFvecs) return false;
  ATTN_ASSIGN_OR_RETURN(const std::string path, DataFile(input, format));
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  std::string line;
  while (file->ReadLine(&line)) {
    if (IsBlank(line)) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return false;
    for (const char* key : {"pooled", "tokens"}) {
      auto it = j.find(key);
      if (it != j.end() && !it->is_null()) return false;
    }
    return true;
  }
  ATTN_RETURN_IF_ERROR(file->status());
  return false;
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
