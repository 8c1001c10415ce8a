#include "dataset/npy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/utf8.h"
#include "core/vector_math.h"

namespace attnsearch {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;

// The header: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (1000, 128), }
struct Header {
  std::string descr;
  bool fortran_order = false;
  bool has_descr = false, has_order = false, has_shape = false;
  std::vector<uint64_t> shape;
};

class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : s_(text) {}

  // Empty on success, else what is wrong.
  std::string Parse(Header* h) {
    if (!Eat('{')) return "expected '{'";
    while (!Eat('}')) {
      std::string key;
      if (!String(&key)) return "expected a quoted key";
      if (!Eat(':')) return absl::StrCat("expected ':' after '", key, "'");
      if (key == "descr") {
        if (Peek() == '[') return "a structured dtype (a list of fields) is not supported";
        if (!String(&h->descr)) return "descr: expected a quoted type";
        h->has_descr = true;
      } else if (key == "fortran_order") {
        if (Word("True")) {
          h->fortran_order = true;
        } else if (!Word("False")) {
          return "fortran_order: expected True or False";
        }
        h->has_order = true;
      } else if (key == "shape") {
        if (!Shape(&h->shape)) return "shape: expected a tuple of integers";
        h->has_shape = true;
      } else {
        return absl::StrCat("unexpected key '", key, "'");
      }
      if (!Eat(',') && Peek() != '}') return "expected ',' or '}'";
    }
    if (!h->has_descr || !h->has_order || !h->has_shape) {
      return "descr, fortran_order or shape is missing";
    }
    return "";
  }

 private:
  char Peek() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n')) ++i_;
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  bool Word(std::string_view w) {
    Peek();
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool String(std::string* out) {
    const char q = Peek();
    if (q != '\'' && q != '"') return false;
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) return false;
    *out = std::string(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return true;
  }
  bool Shape(std::vector<uint64_t>* out) {
    if (!Eat('(')) return false;
    while (!Eat(')')) {
      Peek();
      size_t j = i_;
      while (j < s_.size() && s_[j] >= '0' && s_[j] <= '9') ++j;
      uint64_t v = 0;
      if (j == i_ || !absl::SimpleAtoi(absl::string_view(s_.data() + i_, j - i_), &v)) return false;
      out->push_back(v);
      i_ = j;
      if (!Eat(',') && Peek() != ')') return false;
    }
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
};

// The element type of `descr`; false if unsupported.
bool ParseDescr(const std::string& descr, NpyArray::Kind* kind, size_t* item_bytes) {
  if (descr.size() < 3) return false;
  const char order = descr[0], type = descr[1];
  uint64_t n = 0;
  if (!absl::SimpleAtoi(absl::string_view(descr).substr(2), &n) || n == 0 || n > (1u << 20)) {
    return false;
  }
  // Little-endian, native (this is a little-endian build) or byte-order-free.
  if (order != '<' && order != '|' && order != '=' && !(order == '>' && n == 1 && type != 'U')) {
    return false;
  }
  using K = NpyArray::Kind;
  switch (type) {
    case 'f':
      if (n != 4 && n != 2) return false;
      *kind = n == 4 ? K::kFloat32 : K::kFloat16;
      *item_bytes = n;
      return true;
    case 'V':
      if (n != 2) return false;
      *kind = K::kBFloat16;
      *item_bytes = 2;
      return true;
    case 'i':
    case 'u':
      if (n != 1 && n != 2 && n != 4 && n != 8) return false;
      *kind = type == 'i' ? K::kSigned : K::kUnsigned;
      *item_bytes = n;
      return true;
    case 'U':
      *kind = K::kUnicode;
      *item_bytes = 4 * n;
      return true;
    case 'S':
      *kind = K::kBytes;
      *item_bytes = n;
      return true;
    default:
      return false;
  }
}

uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

absl::StatusOr<NpyArray> NpyArray::Open(const std::string& path) {
  NpyArray a;
  a.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", why));
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  a.map_bytes_ = size_t(st.st_size);
  if (a.map_bytes_ > 0) {
    void* m = ::mmap(nullptr, a.map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": mmap: ", why));
    }
    a.map_ = m;
  }
  ::close(fd);
  const auto* bytes = static_cast<const uint8_t*>(a.map_);
  const size_t size = a.map_bytes_;
  if (size < 10 || std::memcmp(bytes, kMagic, kMagicBytes) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a .npy file (no \\x93NUMPY magic)"));
  }
  const int major = bytes[6];
  if (major < 1 || major > 3) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": .npy format version ", major, ".",
                                                   int(bytes[7]), " is not supported"));
  }
  const size_t prefix = major == 1 ? 10 : 12;
  if (size < prefix) return absl::DataLossError(absl::StrCat(path, ": truncated in its header"));
  const size_t header_len =
      major == 1 ? size_t(bytes[8]) | size_t(bytes[9]) << 8 : LoadLe32(bytes + 8);
  if (size < prefix + header_len) {
    return absl::DataLossError(absl::StrCat(path, ": truncated in its header"));
  }
  Header h;
  const std::string why =
      HeaderParser(std::string_view(reinterpret_cast<const char*>(bytes) + prefix, header_len))
          .Parse(&h);
  if (!why.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad .npy header: ", why));
  a.descr_ = h.descr;
  a.shape_ = h.shape;
  if (!ParseDescr(h.descr, &a.kind_, &a.item_bytes_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": dtype '", h.descr,
        "' is not read: floats must be little-endian float32 or float16 (bfloat16 saved as "
        "'V2'), integers little-endian, strings fixed-width; e.g. a.astype(numpy.float32) for "
        "vectors (numpy's default is float64), a.astype(numpy.int64) for offsets or lengths"));
  }
  if (h.fortran_order && a.shape_.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": Fortran order is not supported (save numpy.ascontiguousarray(a))"));
  }
  uint64_t elements = 1;
  for (uint64_t d : a.shape_) {
    if (d != 0 && elements > (uint64_t{1} << 50) / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": shape ", a.Describe(), " is too large"));
    }
    elements *= d;
  }
  const uint64_t data_bytes = elements * a.item_bytes_;
  if (size - prefix - header_len < data_bytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: the header describes ", a.Describe(), " (", data_bytes,
                     " bytes of data), but only ", size - prefix - header_len, " follow it"));
  }
  a.data_ = bytes + prefix + header_len;
  if (data_bytes > 0) ::madvise(a.map_, a.map_bytes_, MADV_SEQUENTIAL);
  return a;
}

NpyArray::NpyArray(NpyArray&& other) noexcept { *this = std::move(other); }

NpyArray& NpyArray::operator=(NpyArray&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    descr_ = std::move(other.descr_);
    kind_ = other.kind_;
    item_bytes_ = other.item_bytes_;
    shape_ = std::move(other.shape_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
  }
  return *this;
}

NpyArray::~NpyArray() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

uint64_t NpyArray::cols() const {
  uint64_t c = 1;
  for (size_t i = 1; i < shape_.size(); ++i) c *= shape_[i];
  return c;
}

std::string NpyArray::Describe() const {
  return absl::StrCat(shape_.empty() ? "scalar" : absl::StrJoin(shape_, " x "), " '", descr_, "'");
}

int64_t NpyArray::IntAt(uint64_t i) const {
  const uint8_t* p = element(i);
  const bool is_signed = kind_ == Kind::kSigned;
  switch (item_bytes_) {
    case 1:
      return is_signed ? int64_t(int8_t(p[0])) : int64_t(p[0]);
    case 2: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return is_signed ? int64_t(int16_t(v)) : int64_t(v);
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return is_signed ? int64_t(int32_t(v)) : int64_t(v);
    }
    default: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      // An unsigned value past INT64_MAX comes out negative: callers that
      // check a range refuse it.
      return int64_t(v);
    }
  }
}

void NpyArray::RowsToFloat(uint64_t first, uint64_t count, float* out) const {
  const uint64_t n = count * cols();
  const uint8_t* p = element(first * cols());
  switch (kind_) {
    case Kind::kFloat32:
      std::memcpy(out, p, n * sizeof(float));
      break;
    case Kind::kFloat16:
      HalfToFloat(reinterpret_cast<const uint16_t*>(p), out, n);
      break;
    case Kind::kBFloat16:
      Bf16ToFloat(reinterpret_cast<const uint16_t*>(p), out, n);
      break;
    default:
      break;
  }
}

bool NpyArray::StringAt(uint64_t i, std::string* out) const {
  const uint8_t* p = element(i);
  out->clear();
  if (kind_ == Kind::kBytes) {
    size_t n = item_bytes_;
    while (n > 0 && p[n - 1] == 0) --n;
    out->assign(reinterpret_cast<const char*>(p), n);
    return true;
  }
  size_t n = item_bytes_ / 4;
  while (n > 0 && LoadLe32(p + 4 * (n - 1)) == 0) --n;
  for (size_t k = 0; k < n; ++k) {
    const uint32_t c = LoadLe32(p + 4 * k);
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    AppendUtf8(c, out);
  }
  return true;
}

}  // namespace attnsearch
