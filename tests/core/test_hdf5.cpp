// labels: unit
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/io/hdf5.h"
#include "core/util/error.h"
#include "tests/test_support.h"

using namespace fedsplit;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

TEST(Hdf5, TensorsAttributesAndStringsRoundTrip) {
  const TempDir dir("hdf5_roundtrip");
  const auto path = dir / "a.h5";
  auto f = torch::randn({5, 3});
  auto i = torch::arange(10, torch::kLong);
  auto b = torch::tensor({1, 0, 1}, torch::kBool);
  {
    auto file = h5::Group::create_file(path, /*overwrite=*/true);
    auto g = file.create_group("model");
    g.write_tensor("w", f);
    g.write_tensor("ids", i, /*chunk_rows=*/4, /*compress=*/true);
    g.write_tensor("mask", b);
    g.write_tensor("scalar", torch::tensor(3.5));
    file.set_attr("name", std::string("run-ä"));
    file.set_attr("step", int64_t{42});
    file.set_attr("lr", 0.25);
    file.write_strings("labels", {"a", "", "Lincoln"});
  }
  auto file = h5::Group::open_file(path);
  auto g = file.group("model");
  EXPECT_TRUE(torch::equal(g.read_tensor("w"), f));
  EXPECT_TRUE(torch::equal(g.read_tensor("ids"), i));
  EXPECT_TRUE(torch::equal(g.read_rows("ids", 3, 7), i.slice(0, 3, 7)));
  EXPECT_TRUE(torch::equal(g.read_tensor("mask"), b.to(torch::kByte)));
  EXPECT_EQ(g.read_tensor("scalar").item<double>(), 3.5);
  EXPECT_EQ(file.attr_string("name"), "run-ä");
  EXPECT_EQ(file.attr_int("step"), 42);
  EXPECT_EQ(file.attr_double("lr"), 0.25);
  EXPECT_EQ(file.read_strings("labels"), (std::vector<std::string>{"a", "", "Lincoln"}));
  EXPECT_EQ(file.children(), (std::vector<std::string>{"labels", "model"}));
  EXPECT_TRUE(file.has("model/w"));
  EXPECT_FALSE(file.has("nope/w"));
  EXPECT_THROW(g.read_rows("ids", 8, 12), DataError);
}

TEST(Hdf5, MissingAndCorruptFilesGiveOneLineErrors) {
  const TempDir dir("hdf5_corrupt");
  EXPECT_THROW(h5::Group::open_file(dir / "missing.h5"), IoError);
  const auto good = dir / "good.h5";
  {
    auto file = h5::Group::create_file(good, true);
    file.write_tensor("x", torch::randn({1000, 100}));
  }
  const auto size = std::filesystem::file_size(good);
  const auto truncated = dir / "truncated.h5";
  std::filesystem::copy_file(good, truncated, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(truncated, size / 2);
  try {
    auto file = h5::Group::open_file(truncated);
    file.read_tensor("x");
    FAIL() << "truncated file was read";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated.h5"), std::string::npos);
  }
  const auto text = dir / "text.h5";
  write_text(text, "not hdf5");
  EXPECT_THROW(h5::Group::open_file(text), FormatError);
  EXPECT_THROW(h5::Group::create_file(good), IoError);  // exists, no overwrite
  auto file = h5::Group::open_file(good);
  EXPECT_THROW(file.group("absent"), FormatError);
  EXPECT_THROW(file.attr_int("absent"), FormatError);
}
