// Small helpers shared by the unit tests: a RAII temporary directory and
// seeded random unit vectors.
#ifndef ATTNSEARCH_TESTS_TEST_UTIL_H_
#define ATTNSEARCH_TESTS_TEST_UTIL_H_

#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace attnsearch::testing {

// A fresh, uniquely named directory under the system temporary directory,
// removed with everything in it when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "attnsearch_test_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      std::perror("TempDir: mkdtemp");
      std::abort();
    }
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name, as a string.
  std::string Sub(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

 private:
  std::string path_;
};

// rows x dim values, row-major; each row is drawn from a standard normal
// distribution and scaled to unit L2 norm.
inline std::vector<float> RandomUnitRows(std::mt19937& rng, size_t rows, uint32_t dim) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> out(rows * dim);
  for (size_t r = 0; r < rows; ++r) {
    float* row = out.data() + r * dim;
    double ss = 0.0;
    do {
      ss = 0.0;
      for (uint32_t k = 0; k < dim; ++k) {
        row[k] = normal(rng);
        ss += double(row[k]) * row[k];
      }
    } while (!(ss > 0.0));
    const float inv = float(1.0 / std::sqrt(ss));
    for (uint32_t k = 0; k < dim; ++k) row[k] *= inv;
  }
  return out;
}

}  // namespace attnsearch::testing

#endif  // ATTNSEARCH_TESTS_TEST_UTIL_H_
