#include "dataset/input_file.h"

#include <isa-l/igzip_lib.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attnsearch {
namespace {
constexpr size_t kChunk = size_t{1} << 20;
}  // namespace

struct InputFile::Inflater {
  inflate_state state;
  std::vector<uint8_t> in = std::vector<uint8_t>(kChunk);
  bool file_done = false;
};

absl::StatusOr<std::unique_ptr<InputFile>> InputFile::Open(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": a directory; give a file (or, with --format npy or beir, the folder)"));
  }
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) {
    // A pipe (/dev/stdin) or device: a load reads its input twice and
    // resumes by position, which takes a file.
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": not a regular file (a pipe or a device); save the input to a "
                     "file and load that"));
  }
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  unsigned char magic[2] = {0, 0};
  const size_t got = std::fread(magic, 1, 2, f);
  const bool gzip = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  std::rewind(f);
  return std::unique_ptr<InputFile>(new InputFile(path, f, size, gzip));
}

InputFile::InputFile(std::string path, std::FILE* file, uint64_t size, bool gzip)
    : path_(std::move(path)), file_(file), file_size_(size) {
  if (!gzip) return;
  inflater_ = std::make_unique<Inflater>();
  isal_inflate_init(&inflater_->state);
  inflater_->state.crc_flag = ISAL_GZIP;
}

InputFile::~InputFile() { std::fclose(file_); }

uint64_t InputFile::bytes_read() const {
  return inflater_ == nullptr ? compressed_read_ : compressed_read_ - inflater_->state.avail_in;
}

bool InputFile::ReadCompressed() {
  Inflater& z = *inflater_;
  if (z.file_done) return false;
  const size_t n = std::fread(z.in.data(), 1, z.in.size(), file_);
  if (n < z.in.size()) z.file_done = true;
  compressed_read_ += n;
  z.state.next_in = z.in.data();
  z.state.avail_in = uint32_t(n);
  return n > 0;
}

int64_t InputFile::Decode(size_t n) {
  const size_t old = buffer_.size();
  buffer_.resize(old + n);
  auto* out = reinterpret_cast<uint8_t*>(buffer_.data() + old);
  if (inflater_ == nullptr) {
    const size_t got = std::fread(out, 1, n, file_);
    compressed_read_ += got;
    buffer_.resize(old + got);
    if (got == 0 && std::ferror(file_)) {
      status_ = absl::DataLossError(absl::StrCat(path_, ": read error"));
      return -1;
    }
    return int64_t(got);
  }
  inflate_state& st = inflater_->state;
  st.next_out = out;
  st.avail_out = uint32_t(n);
  while (st.avail_out > 0) {
    if (st.block_state == ISAL_BLOCK_FINISH) {
      // The end of a member: another may follow.
      if (st.avail_in == 0 && !ReadCompressed()) break;
      uint8_t* const next_in = st.next_in;
      const uint32_t avail_in = st.avail_in;
      isal_inflate_reset(&st);
      st.next_in = next_in;
      st.avail_in = avail_in;
      st.crc_flag = ISAL_GZIP;
      continue;
    }
    if (st.avail_in == 0 && !ReadCompressed()) {
      if (st.block_state != ISAL_BLOCK_FINISH) {
        status_ = absl::DataLossError(absl::StrCat(path_, ": read error: truncated gzip data"));
        buffer_.resize(old + (n - st.avail_out));
        return -1;
      }
      break;
    }
    const int r = isal_inflate(&st);
    if (r < 0) {
      status_ = absl::DataLossError(absl::StrCat(
          path_, ": read error: ",
          r == ISAL_INCORRECT_CHECKSUM ? "gzip checksum mismatch" : "corrupt gzip data"));
      buffer_.resize(old + (n - st.avail_out));
      return -1;
    }
  }
  buffer_.resize(old + (n - st.avail_out));
  return int64_t(n - st.avail_out);
}

bool InputFile::Fill() {
  if (eof_) return false;
  buffer_.erase(0, pos_);
  pos_ = 0;
  const int64_t n = Decode(kChunk);
  if (n <= 0) eof_ = true;
  return n > 0;
}

bool InputFile::ReadLine(std::string* line) {
  for (;;) {
    const size_t nl = buffer_.find('\n', pos_);
    if (nl != std::string::npos) {
      size_t end = nl;
      if (end > pos_ && buffer_[end - 1] == '\r') --end;
      line->reserve(end - pos_ + kLinePadding);
      line->assign(buffer_, pos_, end - pos_);
      pos_ = nl + 1;
      ++line_number_;
      return true;
    }
    if (!Fill()) {
      if (!status_.ok() || pos_ >= buffer_.size()) return false;
      line->reserve(buffer_.size() - pos_ + kLinePadding);
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
