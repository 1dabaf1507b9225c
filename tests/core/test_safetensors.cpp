// labels: unit
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/io/hf_weights.h"
#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace fedsplit;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

namespace {

// Writes a raw safetensors file: length prefix, header text, data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data, int64_t length = -1) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  char prefix[8];
  std::memcpy(prefix, &n, 8);
  out.write(prefix, 8);
  out << header << data;
}

// Expects load_safetensors(path) to throw a one-line FormatError that holds the path and `needle`.
void expect_format_error(const std::string& path, const std::string& needle) {
  SCOPED_TRACE(path);
  fedsplit::testing::expect_one_line_error<FormatError>([&] { load_safetensors(path); }, {path, needle});
}

TensorMap sample_tensors() {
  torch::manual_seed(7);
  TensorMap t;
  t["f32"] = torch::randn({3, 4});
  t["f64"] = torch::randn({2, 2}, torch::kFloat64);
  t["f16"] = torch::randn({5}).to(torch::kFloat16);
  t["bf16"] = torch::randn({2, 3}).to(torch::kBFloat16);
  t["i64"] = torch::arange(-6, 6, torch::kInt64).view({3, 4});
  t["i32"] = torch::arange(-3, 3, torch::kInt32);
  t["i16"] = torch::arange(-3, 3, torch::kInt16);
  t["i8"] = torch::arange(-3, 3, torch::kInt8);
  t["u8"] = torch::arange(0, 255, 7, torch::kUInt8);
  t["bool"] = torch::tensor({true, false, true});
  t["scalar"] = torch::tensor(3.5);
  t["empty"] = torch::zeros({0, 4});
  t["strided"] = torch::arange(12, torch::kFloat32).view({3, 4}).t();  // saved contiguous
  return t;
}

void expect_same(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(it->second.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(it->second, t)) << name;
  }
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  TempDir dir("st_roundtrip");
  const auto path = dir / "a.safetensors";
  const auto tensors = sample_tensors();
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "héllo"}});
  expect_same(tensors, load_safetensors(path));
  const auto meta = load_safetensors_metadata(path);
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("note"), "héllo");

  // Header padded to 8 bytes; no temporary left behind.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);

  save_safetensors(path, {{"x", torch::ones({2})}});
  EXPECT_TRUE(load_safetensors_metadata(path).empty());
}

TEST(Safetensors, FixturesLoad) {
  const std::string root = fedsplit::testing::fixtures() + "/hf-tiny/";
  const auto ref = load_safetensors(root + "llama/reference.safetensors");
  EXPECT_EQ(ref.at("input_ids").scalar_type(), torch::kInt64);
  EXPECT_EQ(ref.at("input_ids").sizes(), (std::vector<int64_t>{2, 24}));
  EXPECT_EQ(ref.at("logits").sizes(), (std::vector<int64_t>{2, 24, 512}));
  for (const char* m : {"llama", "qwen2", "gpt2"}) {
    const auto w = load_safetensors(root + m + "/model.safetensors");
    EXPECT_GT(w.size(), 10u) << m;
    EXPECT_EQ(load_safetensors_metadata(root + m + "/model.safetensors").at("format"), "pt") << m;
  }
  EXPECT_EQ(load_safetensors(root + "gpt2/model.safetensors").at("transformer.h.0.attn.c_attn.weight").sizes(),
            (std::vector<int64_t>{64, 192}));
}

TEST(Safetensors, CorruptFilesThrowFormatErrorNamingFileAndTensor) {
  TempDir dir("st_corrupt");
  const std::string ok_data(16, '\0');  // 4 floats
  auto header = [](const std::string& name, const std::string& dtype, const std::string& shape, const std::string& off) {
    return "{\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + off + "}}";
  };

  const auto good = dir / "good.safetensors";
  write_raw(good, header("w", "F32", "[2,2]", "[0,16]"), ok_data);
  EXPECT_EQ(load_safetensors(good).at("w").sizes(), (std::vector<int64_t>{2, 2}));

  const auto too_long = dir / "too_long.safetensors";
  write_raw(too_long, header("w", "F32", "[2,2]", "[0,16]"), ok_data, 1 << 20);
  expect_format_error(too_long, "larger than the file");

  const auto tiny = dir / "tiny.safetensors";
  write_text(tiny, "abc");
  expect_format_error(tiny, "header length");

  // Writes `<name>.safetensors` with `header_text` and the 16 data bytes, and expects a one-line
  // FormatError that names the file and holds `needle`.
  auto expect_corrupt = [&](const std::string& name, const std::string& header_text, const std::string& needle) {
    const auto path = dir / (name + ".safetensors");
    write_raw(path, header_text, ok_data);
    expect_format_error(path, needle);
  };
  expect_corrupt("bad_json", "{\"w\": {\"dtype\": ", "not valid JSON");
  expect_corrupt("out_of_range", header("w", "F32", "[2,2]", "[16,32]"), "tensor 'w'");
  expect_corrupt("overlap",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 "overlaps");
  expect_corrupt("hole",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 "tensor 'b'");
  expect_corrupt("trailing", header("w", "F32", "[3]", "[0,12]"), "belong to no tensor");
  expect_corrupt("size_mismatch", header("w", "F32", "[3,2]", "[0,16]"), "tensor 'w'");
  expect_corrupt("unknown_dtype", header("w", "F8_E4M3", "[16]", "[0,16]"), "unsupported dtype 'F8_E4M3'");
  expect_corrupt("duplicate",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 "tensor 'w' appears twice");

  // A valid file cut short: the last tensor's offsets now run past the end.
  const auto truncated = dir / "truncated.safetensors";
  save_safetensors(truncated, {{"a", torch::ones({4})}, {"b", torch::ones({8})}});
  fs::resize_file(truncated, fs::file_size(truncated) - 5);
  expect_format_error(truncated, "tensor 'b'");

  EXPECT_THROW(load_safetensors(dir / "missing.safetensors"), IoError);
}

TEST(HfWeights, SingleFileAndShardedRoundTrip) {
  TempDir dir("hf_weights_roundtrip");
  TensorMap tensors;
  for (int i = 0; i < 7; ++i) tensors["layer." + std::to_string(i) + ".weight"] = torch::randn({16, 16});  // 1 KiB each
  tensors["big"] = torch::randn({40, 16});                                                              // 2.5 KiB
  tensors["ids"] = torch::arange(10);

  save_hf_weights(dir.path(), tensors);
  EXPECT_TRUE(path_exists(dir / "model.safetensors"));
  expect_same(tensors, load_hf_weights(dir.path()));

  // 2 KiB shards: the big tensor gets one of its own; the single file is replaced by the shards.
  save_hf_weights(dir.path(), tensors, 2048);
  EXPECT_FALSE(path_exists(dir / "model.safetensors"));
  const auto index = nlohmann::json::parse(read_file(dir / "model.safetensors.index.json"));
  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.numel() * t.element_size();
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
  const auto n_shards = index["weight_map"]["big"].get<std::string>();
  EXPECT_EQ(n_shards.substr(0, 6), "model-");
  EXPECT_EQ(n_shards.size(), std::string("model-00001-of-00006.safetensors").size());
  std::map<std::string, std::string> sources;
  expect_same(tensors, load_hf_weights(dir.path(), &sources));
  EXPECT_EQ(sources.at("big"), dir / n_shards);
  for (const auto& [name, t] : load_hf_weights(dir.path())) {
    EXPECT_EQ(load_safetensors_metadata(sources.at(name)).at("format"), "pt");
  }

  // Saving fewer shards removes the stale ones of the earlier save.
  save_hf_weights(dir.path(), tensors, 4096);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.path().extension() == ".safetensors";
  const auto index2 = nlohmann::json::parse(read_file(dir / "model.safetensors.index.json"));
  std::set<std::string> listed;
  for (const auto& f : index2["weight_map"]) listed.insert(f.get<std::string>());
  EXPECT_EQ(files, listed.size());
  expect_same(tensors, load_hf_weights(dir.path()));
}

TEST(HfWeights, MissingShardOrTensorIsAFormatError) {
  TempDir dir("hf_weights_missing");
  TensorMap tensors = {{"a", torch::ones({64})}, {"b", torch::ones({64})}, {"c", torch::ones({64})}};
  save_hf_weights(dir.path(), tensors, 256);
  const auto shard = dir / "model-00002-of-00003.safetensors";
  ASSERT_TRUE(path_exists(shard));
  fs::remove(shard);
  try {
    load_hf_weights(dir.path());
    FAIL() << "no error for a missing shard";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00003.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos) << e.what();
  }
  // A shard that lacks a tensor the index lists.
  save_safetensors(shard, {{"x", torch::ones({64})}});
  try {
    load_hf_weights(dir.path());
    FAIL() << "no error for a tensor missing from its shard";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_hf_weights(dir / "nowhere"), IoError);
}
