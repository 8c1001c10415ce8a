#include "engine/catalog.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/log.h"
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
  // Leftovers of an interrupted create are cleared on open; a folder whose
  // name is no collection name is left alone, with a warning naming it.
  std::filesystem::create_directories(options.data_dir + "/collections/.creating-gamma-9/store");
  std::filesystem::create_directories(options.data_dir + "/collections/copied by hand/store");
  std::vector<std::string> lines;
  SetLogSink([&](std::string_view line) { lines.emplace_back(line); });
  {
    auto catalog = Catalog::Open(options);
    SetLogSink(nullptr);
    bool warned = false;
    for (const std::string& line : lines)
      warned |= line.find("copied by hand") != std::string::npos;
    EXPECT_TRUE(warned) << "the skipped folder is not named in the log";
    EXPECT_TRUE(std::filesystem::exists(options.data_dir + "/collections/copied by hand/store"));
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

// A call may still hold a dropped collection (a TrainEncoder, a search); its
// store has files under the name's old path until it lets go. Creating the
// name again meanwhile is refused; afterwards it makes a new, empty one.
TEST(CatalogTest, ANameDroppedWhileHeldIsCreatedAgainOnceReleased) {
  TempDir dir;
  CatalogOptions options;
  options.data_dir = dir.Sub("data");
  {
    auto catalog = Catalog::Open(options);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    auto& cat = **catalog;
    auto held = cat.Create("dd", Config(16));
    ASSERT_TRUE(held.ok()) << held.status();
    Document text;
    text.id = "t";
    text.text = "wing flutter at supersonic speed";
    ASSERT_TRUE((*held)->Upsert({text}).ok());
    ASSERT_TRUE(cat.Drop("dd").ok());
    const absl::Status again = cat.Create("dd", Config(4)).status();
    EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable) << again;
    EXPECT_NE(again.message().find("still holds it open"), std::string::npos) << again;
    EXPECT_FALSE(std::filesystem::exists(options.data_dir + "/collections/dd"));
    // The holder's long call stops at the drop.
    EXPECT_EQ((*held)->TrainEncoder({}).status().code(), absl::StatusCode::kAborted);
    held->reset();
    auto created = cat.Create("dd", Config(4));
    ASSERT_TRUE(created.ok()) << created.status();
    EXPECT_EQ((*created)->Stats().num_documents, 0u);
  }
  auto catalog = Catalog::Open(options);
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  auto dd = (*catalog)->Get("dd");
  ASSERT_TRUE(dd.ok()) << dd.status();
  EXPECT_EQ((*dd)->config().dim, 4u);
  EXPECT_EQ((*dd)->Stats().num_documents, 0u);
}

}  // namespace
}  // namespace attnsearch
