// InputFile: sequential reading of a plain or gzip-compressed file (the
// compression is detected from the content, not the name), by lines or by
// bytes. Tracks line numbers for error messages and bytes consumed for
// progress reports. Gzip is inflated by ISA-L (igzip, several times zlib's
// speed: a load of gzipped JSON lines is otherwise bound by it); members of
// a multi-member file are read one after another, and each member's CRC
// and length are checked.
#ifndef ATTNSEARCH_DATASET_INPUT_FILE_H_
#define ATTNSEARCH_DATASET_INPUT_FILE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace attnsearch {

class InputFile {
 public:
  // NOT_FOUND when the file cannot be opened.
  static absl::StatusOr<std::unique_ptr<InputFile>> Open(const std::string& path);
  ~InputFile();

  // Spare capacity a line read by ReadLine keeps past its end, so that a
  // parser that reads a little past the end of its input (simdjson) can
  // parse it in place.
  static constexpr size_t kLinePadding = 64;
  // Reads the next line (without its '\n' or "\r\n") into *line, with at
  // least kLinePadding bytes of capacity past its end. Returns false at the
  // end of the file; a read error is reported by status().
  bool ReadLine(std::string* line);
  // Reads exactly n bytes; false at a clean end of file before any byte.
  // A partial read sets status() to DATA_LOSS.
  bool ReadExact(void* dst, size_t n);
  // Appends everything not read yet to *out. False on a read error
  // (status() says which).
  bool ReadRest(std::string* out);

  // Number of the last line ReadLine returned (1-based).
  uint64_t line_number() const { return line_number_; }
  // Bytes of the file (compressed bytes for gzip) consumed so far.
  uint64_t bytes_read() const;
  // Size of the file on disk.
  uint64_t file_size() const { return file_size_; }
  const std::string& path() const { return path_; }
  absl::Status status() const { return status_; }

 private:
  struct Inflater;  // ISA-L's state, for gzip content
  InputFile(std::string path, std::FILE* file, uint64_t size, bool gzip);
  bool Fill();
  // Appends up to n decoded bytes to buffer_; the count, 0 at the end, -1
  // on an error (status_ says which).
  int64_t Decode(size_t n);
  // Refills the compressed input buffer; false at the end of the file.
  bool ReadCompressed();

  std::string path_;
  std::FILE* file_;
  std::unique_ptr<Inflater> inflater_;  // null for plain content
  uint64_t compressed_read_ = 0;        // bytes of the file read so far
  uint64_t file_size_ = 0;
  uint64_t line_number_ = 0;
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  absl::Status status_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_DATASET_INPUT_FILE_H_
