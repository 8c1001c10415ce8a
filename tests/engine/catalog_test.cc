#include "engine/catalog.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "engine_test_util.h"

namespace attnsearch {
namespace {

using testing::TempDir;

CollectionConfig Config(uint32_t dim) {
  CollectionConfig c;
  c.dim = dim;
  return c;
}

TEST(CatalogTest, CreateGetListDropAndReopen) {
  TempDir dir;
  CatalogOptions options;
  options.data_dir = dir.Sub("data");
  {
    auto catalog = Catalog::Open(options);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto& cat = **catalog;
    ASSERT_TRUE(cat.Create("beta", Config(8)).ok());
    ASSERT_TRUE(cat.Create("alpha", Config(4)).ok());
    EXPECT_EQ(cat.Create("alpha", Config(4)).status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_EQ(cat.Create("bad name", Config(4)).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(cat.Create("../x", Config(4)).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(cat.Create(std::string(65, 'a'), Config(4)).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(cat.Create("zero", Config(0)).status().code(), absl::StatusCode::kInvalidArgument);
    auto list = cat.List();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].first, "alpha");
    EXPECT_EQ(list[1].first, "beta");
    EXPECT_EQ(cat.Get("nope").status().code(), absl::StatusCode::kNotFound);
    std::mt19937 rng(1);
    auto beta = cat.Get("beta");
    ASSERT_TRUE(beta.ok());
    ASSERT_TRUE((*beta)->Upsert({testing::MakeDoc(rng, "x", 8, 2, 2)}).ok());
    ASSERT_TRUE(cat.Drop("alpha").ok());
    EXPECT_EQ(cat.Drop("alpha").code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(cat.Get("alpha").status().code(), absl::StatusCode::kNotFound);
  }
  // Leftovers of an interrupted create are cleared on open.
  std::filesystem::create_directories(options.data_dir + "/collections/.creating-gamma-9/store");
  {
    auto catalog = Catalog::Open(options);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto list = (*catalog)->List();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].first, "beta");
    EXPECT_EQ(list[0].second->Stats().num_documents, 1u);
    EXPECT_EQ(list[0].second->config().dim, 8u);
    EXPECT_FALSE(std::filesystem::exists(options.data_dir + "/collections/.creating-gamma-9"));
    EXPECT_FALSE(std::filesystem::exists(options.data_dir + "/collections/alpha"));
    // A dropped name can be created again, empty.
    auto again = (*catalog)->Create("alpha", Config(4));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*again)->Stats().num_documents, 0u);
  }
}

}  // namespace
}  // namespace attnsearch
