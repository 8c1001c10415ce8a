#include "dataset/input_file.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace attnsearch {
namespace {
constexpr size_t kChunk = size_t{1} << 20;
}  // namespace

absl::StatusOr<std::unique_ptr<InputFile>> InputFile::Open(const std::string& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  gzFile gz = gzopen(path.c_str(), "rb");
  if (gz == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  gzbuffer(gz, 1 << 18);
  return std::unique_ptr<InputFile>(new InputFile(path, gz, size));
}

InputFile::InputFile(std::string path, void* gz, uint64_t size)
    : path_(std::move(path)), gz_(gz), file_size_(size) {}

InputFile::~InputFile() { gzclose(static_cast<gzFile>(gz_)); }

uint64_t InputFile::bytes_read() const {
  const z_off_t off = gzoffset(static_cast<gzFile>(gz_));
  return off < 0 ? 0 : uint64_t(off);
}

bool InputFile::Fill() {
  if (eof_) return false;
  buffer_.erase(0, pos_);
  pos_ = 0;
  const size_t old = buffer_.size();
  buffer_.resize(old + kChunk);
  const int n = gzread(static_cast<gzFile>(gz_), buffer_.data() + old, unsigned(kChunk));
  if (n < 0) {
    int err = 0;
    status_ = absl::DataLossError(
        absl::StrCat(path_, ": read error: ", gzerror(static_cast<gzFile>(gz_), &err)));
    buffer_.resize(old);
    eof_ = true;
    return false;
  }
  buffer_.resize(old + size_t(n));
  if (n == 0) eof_ = true;
  return n > 0;
}

bool InputFile::ReadLine(std::string* line) {
  for (;;) {
    const size_t nl = buffer_.find('\n', pos_);
    if (nl != std::string::npos) {
      size_t end = nl;
      if (end > pos_ && buffer_[end - 1] == '\r') --end;
      line->assign(buffer_, pos_, end - pos_);
      pos_ = nl + 1;
      ++line_number_;
      return true;
    }
    if (!Fill()) {
      if (!status_.ok() || pos_ >= buffer_.size()) return false;
      line->assign(buffer_, pos_, buffer_.size() - pos_);  // last line, no '\n'
      if (!line->empty() && line->back() == '\r') line->pop_back();
      pos_ = buffer_.size();
      ++line_number_;
      return true;
    }
  }
}

bool InputFile::ReadRest(std::string* out) {
  while (Fill()) {
  }
  out->append(buffer_, pos_, std::string::npos);
  pos_ = buffer_.size();
  return status_.ok();
}

bool InputFile::ReadExact(void* dst, size_t n) {
  while (buffer_.size() - pos_ < n) {
    if (!Fill()) break;
  }
  const size_t have = buffer_.size() - pos_;
  if (have < n) {
    if (have > 0 && status_.ok()) {
      status_ = absl::DataLossError(
          absl::StrCat(path_, ": truncated: wanted ", n, " bytes, ", have, " left"));
    }
    return false;
  }
  std::memcpy(dst, buffer_.data() + pos_, n);
  pos_ += n;
  return true;
}

}  // namespace attnsearch
