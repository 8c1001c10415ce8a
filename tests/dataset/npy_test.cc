// NpyArray against files numpy itself wrote (npy/make_fixtures.py): the
// values below are the ones given to numpy there.
#include "dataset/npy.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace attnsearch {
namespace {

std::string Fixture(const std::string& name) { return std::string(ATTN_NPY_FIXTURES) + "/" + name; }

NpyArray OpenOk(const std::string& name) {
  absl::StatusOr<NpyArray> a = NpyArray::Open(Fixture(name));
  EXPECT_TRUE(a.ok()) << a.status();
  return *std::move(a);
}

std::vector<float> AllRows(const NpyArray& a) {
  std::vector<float> out(a.rows() * a.cols());
  a.RowsToFloat(0, a.rows(), out.data());
  return out;
}

TEST(NpyTest, ReadsFloat32Float16AndBFloat16) {
  NpyArray f32 = OpenOk("f32.npy");
  EXPECT_EQ(f32.kind(), NpyArray::Kind::kFloat32);
  EXPECT_EQ(f32.shape(), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(AllRows(f32), (std::vector<float>{1, -2.5f, std::ldexp(1.f, -10), 0, 65504, -0.f}));
  EXPECT_TRUE(std::signbit(AllRows(f32)[5]));

  NpyArray f16 = OpenOk("f16.npy");
  EXPECT_EQ(f16.kind(), NpyArray::Kind::kFloat16);
  EXPECT_EQ(AllRows(f16),
            (std::vector<float>{1, -2.5f, std::ldexp(1.f, -10), 0, 65504, std::ldexp(1.f, -24)}));

  NpyArray bf16 = OpenOk("bf16.npy");
  EXPECT_EQ(bf16.kind(), NpyArray::Kind::kBFloat16);
  EXPECT_EQ(bf16.descr(), "|V2");
  EXPECT_EQ(AllRows(bf16),
            (std::vector<float>{1, -2.5f, std::ldexp(1.f, -10), 0, 1.5f * std::ldexp(1.f, 100),
                                std::ldexp(1.f, -130)}));

  // One row at a time, from the middle.
  std::vector<float> row(3);
  f16.RowsToFloat(1, 1, row.data());
  EXPECT_EQ(row, (std::vector<float>{0, 65504, std::ldexp(1.f, -24)}));
}

TEST(NpyTest, RowsOfAThreeDimensionalArrayJoinTheTrailingAxes) {
  NpyArray cube = OpenOk("cube.npy");
  EXPECT_EQ(cube.rows(), 2u);
  EXPECT_EQ(cube.cols(), 4u);
  EXPECT_EQ(AllRows(cube), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(cube.Describe(), "2 x 2 x 2 '<f4'");
}

TEST(NpyTest, ReadsIntegersOfEverySignAndWidth) {
  NpyArray offsets = OpenOk("offsets_i8.npy");
  EXPECT_EQ(offsets.kind(), NpyArray::Kind::kSigned);
  EXPECT_EQ(offsets.shape(), (std::vector<uint64_t>{4}));
  std::vector<int64_t> got;
  for (uint64_t i = 0; i < offsets.rows(); ++i) got.push_back(offsets.IntAt(i));
  EXPECT_EQ(got, (std::vector<int64_t>{0, 2, 2, 5}));

  NpyArray lengths = OpenOk("lengths_u4.npy");
  EXPECT_EQ(lengths.kind(), NpyArray::Kind::kUnsigned);
  EXPECT_EQ(lengths.IntAt(2), 3);
  NpyArray negative = OpenOk("negative_i2.npy");
  EXPECT_EQ(negative.IntAt(0), -1);
  EXPECT_EQ(negative.IntAt(1), 300);
  // Format version 2.0 (a 4-byte header length).
  NpyArray v2 = OpenOk("v2.npy");
  EXPECT_EQ(v2.IntAt(2), 9);
}

TEST(NpyTest, ReadsUnicodeAndByteStringsAsUtf8) {
  NpyArray u = OpenOk("ids_unicode.npy");
  EXPECT_EQ(u.kind(), NpyArray::Kind::kUnicode);
  std::vector<std::string> got(u.rows());
  for (uint64_t i = 0; i < u.rows(); ++i) ASSERT_TRUE(u.StringAt(i, &got[i]));
  EXPECT_EQ(got, (std::vector<std::string>{"a", "d\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC",
                                           "\xF0\x9F\x98\x80x"}));
  NpyArray s = OpenOk("ids_bytes.npy");
  std::string id;
  ASSERT_TRUE(s.StringAt(0, &id));
  EXPECT_EQ(id, "x");
  ASSERT_TRUE(s.StringAt(1, &id));
  EXPECT_EQ(id, "yz");
}

TEST(NpyTest, RefusesWhatItCannotReadNamingTheFile) {
  for (const char* name :
       {"big_endian.npy", "fortran.npy", "bool.npy", "structured.npy", "f64.npy"}) {
    absl::StatusOr<NpyArray> a = NpyArray::Open(Fixture(name));
    ASSERT_FALSE(a.ok()) << name;
    EXPECT_TRUE(absl::IsInvalidArgument(a.status())) << a.status();
    EXPECT_NE(a.status().message().find(name), std::string::npos) << a.status();
  }
  absl::StatusOr<NpyArray> missing = NpyArray::Open(Fixture("nope.npy"));
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
}

TEST(NpyTest, ATruncatedFileIsDataLoss) {
  testing::TempDir dir;
  std::ifstream in(Fixture("f32.npy"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t cut : {bytes.size() - 1, size_t(40), size_t(9)}) {
    const std::string path = dir.path() + "/cut.npy";
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), std::streamsize(cut));
    absl::StatusOr<NpyArray> a = NpyArray::Open(path);
    ASSERT_FALSE(a.ok()) << cut;
    if (cut > 10) {
      EXPECT_TRUE(absl::IsDataLoss(a.status())) << a.status();
      EXPECT_NE(a.status().message().find("truncated"), std::string::npos) << a.status();
    }
  }
}

}  // namespace
}  // namespace attnsearch
