#include "indexer/npy_source.h"

#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/types.h"
#include "dataset/input_file.h"
#include "dataset/npy.h"
#include "indexer/pipelined_source.h"
#include "indexer/record_parser.h"

namespace attnsearch::indexer {
namespace {

namespace fs = std::filesystem;

std::string Join(const std::string& dir, const char* name) {
  return (fs::path(dir) / name).string();
}

bool Exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Opens `name` in `dir` when it exists.
absl::StatusOr<std::optional<NpyArray>> OpenIfPresent(const std::string& dir, const char* name) {
  const std::string path = Join(dir, name);
  if (!Exists(path)) return std::optional<NpyArray>();
  ATTN_ASSIGN_OR_RETURN(NpyArray a, NpyArray::Open(path));
  return std::optional<NpyArray>(std::move(a));
}

bool IsFloat(const NpyArray& a) {
  return a.kind() == NpyArray::Kind::kFloat32 || a.kind() == NpyArray::Kind::kFloat16 ||
         a.kind() == NpyArray::Kind::kBFloat16;
}

// A matrix of vectors: 2-D, float, dim in range.
absl::Status CheckVectors(const NpyArray& a, const char* what) {
  if (!IsFloat(a)) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.path(), ": dtype '", a.descr(),
                     "' is not float32, float16 or bfloat16 (saved as 'V2'); convert with "
                     "a.astype(numpy.float32)"));
  }
  if (a.shape().size() != 2 || a.shape()[1] == 0 || a.shape()[1] > kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat(a.path(), ": expected a 2-D array of ", what,
                                                   " x dim (dim 1..", kMaxDim, "), got ",
                                                   a.Describe()));
  }
  return absl::OkStatus();
}

absl::Status CheckIndexArray(const NpyArray& a) {
  if ((a.kind() != NpyArray::Kind::kSigned && a.kind() != NpyArray::Kind::kUnsigned) ||
      a.shape().size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(a.path(), ": expected a 1-D array of integers, got ", a.Describe()));
  }
  return absl::OkStatus();
}

// What one docs.jsonl line adds to its document.
struct SideFields {
  uint64_t line = 0;
  std::string text;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> token_texts;
};

// The folder, opened and checked.
struct NpyFolder {
  std::string dir;
  std::optional<NpyArray> tokens, pooled;
  std::vector<uint64_t> offsets;                   // N + 1 (tokens); empty without tokens
  std::vector<std::string> ids;                    // N
  std::string ids_file;                            // "ids.npy" or "ids.txt"
  std::string docs_file;                           // the side file, or empty
  absl::flat_hash_map<uint64_t, SideFields> side;  // by document index
  uint64_t documents = 0;
  uint32_t dim = 0;

  std::string Path(const std::string& name) const { return Join(dir, name.c_str()); }
};

// offsets.npy or lengths.npy into folder->offsets.
absl::Status ReadOffsets(NpyFolder* f) {
  const uint64_t rows = f->tokens->rows();
  ATTN_ASSIGN_OR_RETURN(std::optional<NpyArray> offsets, OpenIfPresent(f->dir, "offsets.npy"));
  ATTN_ASSIGN_OR_RETURN(std::optional<NpyArray> lengths, OpenIfPresent(f->dir, "lengths.npy"));
  if (offsets.has_value() == lengths.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(f->dir, ": tokens.npy needs ",
                     offsets ? "offsets.npy or lengths.npy, not both"
                             : "offsets.npy (N + 1 row offsets) or lengths.npy "
                               "(N row counts)"));
  }
  if (offsets) {
    ATTN_RETURN_IF_ERROR(CheckIndexArray(*offsets));
    const uint64_t n = offsets->rows();
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(offsets->path(), ": empty (N documents need N + 1 offsets)"));
    }
    f->offsets.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      const int64_t v = offsets->IntAt(i);
      const int64_t prev = i == 0 ? 0 : int64_t(f->offsets[i - 1]);
      if (i == 0 && v != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(offsets->path(), ": index 0 is ", v, "; the first offset must be 0"));
      }
      if (v < prev) {
        return absl::InvalidArgumentError(absl::StrCat(offsets->path(), ": index ", i, " is ", v,
                                                       ", less than index ", i - 1, " (", prev,
                                                       "): offsets must not decrease"));
      }
      if (uint64_t(v) > rows) {
        return absl::InvalidArgumentError(absl::StrCat(offsets->path(), ": index ", i, " is ", v,
                                                       ", past the ", rows, " rows of tokens.npy"));
      }
      f->offsets[i] = uint64_t(v);
    }
    if (f->offsets.back() != rows) {
      return absl::InvalidArgumentError(absl::StrCat(offsets->path(), ": the last offset (index ",
                                                     n - 1, ") is ", f->offsets.back(),
                                                     ", but tokens.npy has ", rows, " rows"));
    }
    return absl::OkStatus();
  }
  ATTN_RETURN_IF_ERROR(CheckIndexArray(*lengths));
  const uint64_t n = lengths->rows();
  f->offsets.assign(n + 1, 0);
  for (uint64_t i = 0; i < n; ++i) {
    const int64_t v = lengths->IntAt(i);
    if (v < 0 || uint64_t(v) > rows - f->offsets[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat(lengths->path(), ": index ", i, " is ", v,
                       v < 0 ? ": a length must not be negative"
                             : absl::StrCat(", past the ", rows, " rows of tokens.npy")));
    }
    f->offsets[i + 1] = f->offsets[i] + uint64_t(v);
  }
  if (f->offsets.back() != rows) {
    return absl::InvalidArgumentError(absl::StrCat(lengths->path(), ": the lengths sum to ",
                                                   f->offsets.back(), ", but tokens.npy has ", rows,
                                                   " rows"));
  }
  return absl::OkStatus();
}

// What says how many documents there are, for messages.
std::string CountSource(const NpyFolder& f) {
  if (!f.tokens) return absl::StrCat("pooled.npy has ", f.documents, " rows");
  return Exists(f.Path("offsets.npy"))
             ? absl::StrCat("offsets.npy has ", f.documents + 1, " entries")
             : absl::StrCat("lengths.npy has ", f.documents, " entries");
}

absl::Status ReadIds(NpyFolder* f) {
  const std::string npy = f->Path("ids.npy"), txt = f->Path("ids.txt");
  if (Exists(npy) == Exists(txt)) {
    return absl::InvalidArgumentError(
        absl::StrCat(f->dir, Exists(npy) ? ": give ids.npy or ids.txt, not both"
                                         : ": no ids.npy (strings) or ids.txt (one id per line)"));
  }
  if (Exists(npy)) {
    f->ids_file = "ids.npy";
    ATTN_ASSIGN_OR_RETURN(NpyArray ids, NpyArray::Open(npy));
    if ((ids.kind() != NpyArray::Kind::kUnicode && ids.kind() != NpyArray::Kind::kBytes) ||
        ids.shape().size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(npy, ": expected a 1-D array of strings, got ", ids.Describe()));
    }
    f->ids.resize(ids.rows());
    for (uint64_t i = 0; i < ids.rows(); ++i) {
      if (!ids.StringAt(i, &f->ids[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(npy, ": index ", i, " holds a character that is not Unicode"));
      }
    }
  } else {
    f->ids_file = "ids.txt";
    ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> in, InputFile::Open(txt));
    std::string line;
    while (in->ReadLine(&line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      f->ids.push_back(std::move(line));
    }
    ATTN_RETURN_IF_ERROR(in->status());
  }
  if (f->ids.size() != f->documents) {
    return absl::InvalidArgumentError(absl::StrCat(f->Path(f->ids_file), ": ", f->ids.size(),
                                                   " ids for ", f->documents, " documents (",
                                                   CountSource(*f), ")"));
  }
  return absl::OkStatus();
}

// docs.jsonl (or .gz), keyed by id, into folder->side.
absl::Status ReadSideFile(NpyFolder* f) {
  for (const char* name : {"docs.jsonl", "docs.jsonl.gz"}) {
    if (Exists(f->Path(name))) f->docs_file = name;
  }
  if (f->docs_file.empty()) return absl::OkStatus();
  absl::flat_hash_map<std::string_view, uint64_t> index;
  for (uint64_t i = 0; i < f->ids.size(); ++i) index.emplace(f->ids[i], i);
  const std::string path = f->Path(f->docs_file);
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> in, InputFile::Open(path));
  ParseOptions po;
  po.dim = f->dim;
  std::string line;
  Document d;
  while (in->ReadLine(&line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(path, ":", in->line_number(), ": ");
    absl::Status s = ParseJsonLineFields(line, po, &d);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(where, s.message()));
    if (!d.pooled.empty() || d.num_tokens > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "vectors belong in tokens.npy and pooled.npy, not here"));
    }
    auto it = index.find(d.id);
    if (it == index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "id: '", d.id, "' is not in ", f->ids_file));
    }
    auto [side, fresh] = f->side.try_emplace(it->second);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "id: '", d.id, "' appears twice (first at line ", side->second.line, ")"));
    }
    side->second = {in->line_number(), std::move(d.text), std::move(d.metadata),
                    std::move(d.token_texts)};
  }
  return in->status();
}

absl::StatusOr<std::unique_ptr<NpyFolder>> OpenFolder(const std::string& dir) {
  auto f = std::make_unique<NpyFolder>();
  f->dir = dir;
  ATTN_ASSIGN_OR_RETURN(f->tokens, OpenIfPresent(dir, "tokens.npy"));
  ATTN_ASSIGN_OR_RETURN(f->pooled, OpenIfPresent(dir, "pooled.npy"));
  if (!f->tokens && !f->pooled) {
    return absl::NotFoundError(absl::StrCat(dir, ": no tokens.npy or pooled.npy"));
  }
  if (f->tokens) {
    ATTN_RETURN_IF_ERROR(CheckVectors(*f->tokens, "token rows"));
    ATTN_RETURN_IF_ERROR(ReadOffsets(f.get()));
    f->documents = f->offsets.size() - 1;
    f->dim = uint32_t(f->tokens->cols());
  }
  if (f->pooled) {
    ATTN_RETURN_IF_ERROR(CheckVectors(*f->pooled, "documents"));
    if (!f->tokens) {
      f->documents = f->pooled->rows();
      f->dim = uint32_t(f->pooled->cols());
    } else if (f->pooled->rows() != f->documents || f->pooled->cols() != f->dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          f->pooled->path(), ": ", f->pooled->Describe(), ", expected ", f->documents, " x ",
          f->dim, " (", CountSource(*f), "; tokens.npy has rows of ", f->dim, ")"));
    }
  }
  ATTN_RETURN_IF_ERROR(ReadIds(f.get()));
  ATTN_RETURN_IF_ERROR(ReadSideFile(f.get()));
  return f;
}

// Adds to a reason from the document check the file and row that hold the
// bad value: "tokens: row 2 has a NaN ..." → "... (tokens.npy row 1090)".
std::string LocateReason(const NpyFolder& f, uint64_t i, std::string reason) {
  if (absl::StartsWith(reason, "tokens")) {
    uint64_t row = 0;
    const size_t at = reason.find(": row ");
    if (at != std::string::npos) {
      const size_t begin = at + 6, end = reason.find(' ', begin);
      if (absl::SimpleAtoi(absl::string_view(reason).substr(begin, end - begin), &row)) {
        return absl::StrCat(reason, " (tokens.npy row ", f.offsets[i] + row, ")");
      }
    }
    return f.tokens ? absl::StrCat(reason, " (tokens.npy rows ", f.offsets[i], "..",
                                   f.offsets[i + 1], ")")
                    : absl::StrCat(reason, " (pooled.npy row ", i, ")");
  }
  if (absl::StartsWith(reason, "pooled")) return absl::StrCat(reason, " (pooled.npy row ", i, ")");
  if (absl::StartsWith(reason, "id")) {
    return absl::StrCat(reason, " (", f.ids_file, " index ", i, ")");
  }
  auto side = f.side.find(i);
  if (side != f.side.end()) {
    return absl::StrCat(reason, " (", f.docs_file, ":", side->second.line, ")");
  }
  return reason;
}

class NpySource : public PipelinedSource {
 public:
  NpySource(std::unique_ptr<NpyFolder> folder, const ParseOptions& options)
      : f_(std::move(folder)), options_(options) {
    const NpyArray& main = f_->tokens ? *f_->tokens : *f_->pooled;
    file_size_ = main.rows() * main.cols() * main.item_bytes();
    Start(options.threads);
  }
  ~NpySource() override { Stop(); }

  std::string Location(uint64_t position) const override {
    return absl::StrCat(f_->dir, ":document ", position - 1);
  }
  uint64_t file_size() const override { return file_size_; }

 private:
  // Documents per block, and most token rows.
  static constexpr uint64_t kBlockDocuments = 128;
  static constexpr uint64_t kBlockRows = 16384;

  bool ReadBlock(Block* block, absl::Status*) override {
    if (next_ >= f_->documents) return false;
    block->first = next_;
    uint64_t end = next_ + 1;
    while (end < f_->documents && end - next_ < kBlockDocuments &&
           (!f_->tokens || f_->offsets[end + 1] - f_->offsets[next_] <= kBlockRows)) {
      ++end;
    }
    block->count = end - next_;
    next_ = end;
    block->bytes_read = f_->tokens
                            ? f_->offsets[end] * f_->tokens->cols() * f_->tokens->item_bytes()
                            : end * f_->pooled->cols() * f_->pooled->item_bytes();
    return true;
  }

  void ParseBlock(Block* block) override {
    block->records.resize(block->count);
    for (uint64_t k = 0; k < block->count; ++k) {
      const uint64_t i = block->first + k;
      InputRecord& r = block->records[k];
      r.position = i + 1;
      r.status = Convert(i, r.position <= options_.skip_to, &r.doc);
      if (!r.status.ok()) {
        r.status =
            absl::InvalidArgumentError(LocateReason(*f_, i, std::string(r.status.message())));
      }
    }
  }

  // Document i; `skipped`: only what the load counts for a document an
  // earlier run loaded (its id, and enough to tell whether it has vectors).
  absl::Status Convert(uint64_t i, bool skipped, Document* doc) const {
    doc->id = f_->ids[i];
    const uint32_t dim = f_->dim;
    if (f_->tokens) {
      const uint64_t rows = f_->offsets[i + 1] - f_->offsets[i];
      if (rows > options_.max_tokens) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokens: ", rows, " rows exceed the limit of ", options_.max_tokens));
      }
      doc->num_tokens = uint32_t(rows);
      if (!skipped) {
        doc->tokens.resize(rows * dim);
        f_->tokens->RowsToFloat(f_->offsets[i], rows, doc->tokens.data());
      }
    }
    if (f_->pooled && (!skipped || doc->num_tokens == 0)) {
      doc->pooled.resize(dim);
      f_->pooled->RowsToFloat(i, 1, doc->pooled.data());
    }
    auto side = f_->side.find(i);
    if (side != f_->side.end()) {
      doc->text = side->second.text;
      doc->metadata = side->second.metadata;
      doc->token_texts = side->second.token_texts;
    }
    if (IsTextOnly(*doc) && doc->text.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tokens: none (offsets ", f_->offsets[i],
                                                     " to ", f_->offsets[i + 1],
                                                     "), and no pooled vector or text"));
    }
    return skipped ? absl::OkStatus() : ValidateDocument(doc, options_);
  }

  const std::unique_ptr<NpyFolder> f_;
  const ParseOptions options_;
  uint64_t file_size_ = 0;
  uint64_t next_ = 0;  // the reader's next document
};

}  // namespace

bool IsNpyFolder(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) &&
         (Exists(Join(dir, "tokens.npy")) || Exists(Join(dir, "pooled.npy")));
}

absl::StatusOr<NpyFolderInfo> InspectNpyFolder(const std::string& dir) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<NpyFolder> f, OpenFolder(dir));
  return NpyFolderInfo{f->documents, f->dim, f->tokens ? f->tokens->path() : f->pooled->path()};
}

absl::StatusOr<std::unique_ptr<RecordSource>> OpenNpySource(const std::string& dir,
                                                            const ParseOptions& options) {
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<NpyFolder> f, OpenFolder(dir));
  if (f->dim != options.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(f->tokens ? f->tokens->path() : f->pooled->path(), ": rows of ", f->dim,
                     " values, but the collection's dim is ", options.dim));
  }
  return std::unique_ptr<RecordSource>(new NpySource(std::move(f), options));
}

}  // namespace attnsearch::indexer
