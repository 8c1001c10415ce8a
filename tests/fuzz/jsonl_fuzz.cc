// Bodies of the indexer's input fuzz targets, jsonl and fvecs (see
// fuzz_targets.h).
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <string>
#include <string_view>

#include "core/utf8.h"
#include "dataset/vecs.h"
#include "fuzz/fuzz_targets.h"
#include "indexer/input_source.h"
#include "indexer/record_parser.h"

namespace attnsearch::fuzz {

int FuzzJsonLine(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  indexer::ParseOptions options;
  options.dim = 1 + (data[0] & 7);
  options.beir = (data[0] & 8) != 0;
  options.max_tokens = (data[0] & 16) ? 2 : 16384;
  const std::string_view line(reinterpret_cast<const char*>(data + 1), size - 1);
  Document doc;
  if (!indexer::ParseJsonLine(line, options, &doc).ok()) return 0;
  ATTN_FUZZ_CHECK(indexer::ValidateDocument(&doc, options).ok());  // again: idempotent
  ATTN_FUZZ_CHECK(!doc.id.empty());
  ATTN_FUZZ_CHECK(doc.pooled.empty() || doc.pooled.size() == options.dim);
  ATTN_FUZZ_CHECK(doc.tokens.size() == size_t(doc.num_tokens) * options.dim);
  ATTN_FUZZ_CHECK(doc.num_tokens <= options.max_tokens);
  ATTN_FUZZ_CHECK(doc.token_texts.empty() || doc.token_texts.size() == doc.num_tokens);
  for (float v : doc.pooled) ATTN_FUZZ_CHECK(std::isfinite(v));
  for (float v : doc.tokens) ATTN_FUZZ_CHECK(std::isfinite(v));
  ATTN_FUZZ_CHECK(FindInvalidUtf8(doc.id) == std::string_view::npos);
  ATTN_FUZZ_CHECK(FindInvalidUtf8(doc.text) == std::string_view::npos);
  ATTN_FUZZ_CHECK(indexer::EstimateWireBytes(doc) > 0);
  return 0;
}

int FuzzFvecs(const uint8_t* data, size_t size) {
  // The readers take a path: the bytes go to an anonymous in-memory file.
  const int fd = ::memfd_create("fvecs", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, data + written, size - written);
    if (n <= 0) break;
    written += size_t(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);

  const auto vecs = ReadFvecs(path, 64);
  if (vecs.ok()) {
    ATTN_FUZZ_CHECK(vecs->rows <= 64);
    ATTN_FUZZ_CHECK(vecs->values.size() == size_t(vecs->rows) * vecs->dim);
  }
  const auto ivecs = ReadIvecs(path, 64);
  if (ivecs.ok()) ATTN_FUZZ_CHECK(ivecs->values.size() == size_t(ivecs->rows) * ivecs->dim);

  const auto dim = indexer::PeekFvecsDim(path);
  if (dim.ok() && *dim > 0 && *dim <= 4096) {
    indexer::ParseOptions options;
    options.dim = *dim;
    auto source = indexer::OpenSource(path, indexer::InputFormat::kFvecs, options);
    if (source.ok()) {
      indexer::InputRecord record;
      uint64_t records = 0;
      while (records < 64 && (*source)->Next(&record)) {
        ++records;
        ATTN_FUZZ_CHECK(record.position == records);
        if (record.status.ok()) {
          ATTN_FUZZ_CHECK(record.doc.pooled.size() == *dim);
          for (float v : record.doc.pooled) ATTN_FUZZ_CHECK(std::isfinite(v));
        }
        (void)(*source)->Location(record.position);
      }
      (void)(*source)->status();
    }
  }
  ::close(fd);
  return 0;
}

}  // namespace attnsearch::fuzz
