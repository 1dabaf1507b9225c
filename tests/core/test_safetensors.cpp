// labels: unit
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unistd.h>

#include "core/io/hf_weights.h"
#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fs = std::filesystem;
using namespace fedsplit;

namespace {

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (fs::temp_directory_path() / ("fedsplit-st-" + std::string(info->name()) + "-" + std::to_string(::getpid())))
                .string();
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes a raw safetensors file: length prefix, header text, data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data, int64_t length = -1) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  char prefix[8];
  std::memcpy(prefix, &n, 8);
  out.write(prefix, 8);
  out << header << data;
}

// Expects load_safetensors(path) to throw FormatError whose message holds the path and `needle`.
void expect_format_error(const std::string& path, const std::string& needle) {
  try {
    load_safetensors(path);
    FAIL() << "no error for " << path;
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
  }
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
  TempDir dir;
  const auto path = dir.file("a.safetensors");
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
  const std::string root = std::string(FEDSPLIT_FIXTURES) + "/hf-tiny/";
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
  TempDir dir;
  const std::string ok_data(16, '\0');  // 4 floats
  auto header = [](const std::string& name, const std::string& dtype, const std::string& shape, const std::string& off) {
    return "{\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + off + "}}";
  };

  const auto good = dir.file("good.safetensors");
  write_raw(good, header("w", "F32", "[2,2]", "[0,16]"), ok_data);
  EXPECT_EQ(load_safetensors(good).at("w").sizes(), (std::vector<int64_t>{2, 2}));

  const auto too_long = dir.file("too_long.safetensors");
  write_raw(too_long, header("w", "F32", "[2,2]", "[0,16]"), ok_data, 1 << 20);
  expect_format_error(too_long, "larger than the file");

  const auto tiny = dir.file("tiny.safetensors");
  std::ofstream(tiny) << "abc";
  expect_format_error(tiny, "header length");

  const auto bad_json = dir.file("bad_json.safetensors");
  write_raw(bad_json, "{\"w\": {\"dtype\": ", ok_data);
  expect_format_error(bad_json, "not valid JSON");

  const auto out_of_range = dir.file("out_of_range.safetensors");
  write_raw(out_of_range, header("w", "F32", "[2,2]", "[16,32]"), ok_data);
  expect_format_error(out_of_range, "tensor 'w'");

  const auto overlap = dir.file("overlap.safetensors");
  write_raw(overlap,
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
            ok_data);
  expect_format_error(overlap, "overlaps");

  const auto hole = dir.file("hole.safetensors");
  write_raw(hole,
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
            ok_data);
  expect_format_error(hole, "tensor 'b'");

  const auto trailing = dir.file("trailing.safetensors");
  write_raw(trailing, header("w", "F32", "[3]", "[0,12]"), ok_data);
  expect_format_error(trailing, "belong to no tensor");

  const auto size_mismatch = dir.file("size_mismatch.safetensors");
  write_raw(size_mismatch, header("w", "F32", "[3,2]", "[0,16]"), ok_data);
  expect_format_error(size_mismatch, "tensor 'w'");

  const auto unknown_dtype = dir.file("unknown_dtype.safetensors");
  write_raw(unknown_dtype, header("w", "F8_E4M3", "[16]", "[0,16]"), ok_data);
  expect_format_error(unknown_dtype, "unsupported dtype 'F8_E4M3'");

  const auto duplicate = dir.file("duplicate.safetensors");
  write_raw(duplicate,
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
            ok_data);
  expect_format_error(duplicate, "tensor 'w' appears twice");

  // A valid file cut short: the last tensor's offsets now run past the end.
  const auto truncated = dir.file("truncated.safetensors");
  save_safetensors(truncated, {{"a", torch::ones({4})}, {"b", torch::ones({8})}});
  fs::resize_file(truncated, fs::file_size(truncated) - 5);
  expect_format_error(truncated, "tensor 'b'");

  EXPECT_THROW(load_safetensors(dir.file("missing.safetensors")), IoError);
}

TEST(HfWeights, SingleFileAndShardedRoundTrip) {
  TempDir dir;
  TensorMap tensors;
  for (int i = 0; i < 7; ++i) tensors["layer." + std::to_string(i) + ".weight"] = torch::randn({16, 16});  // 1 KiB each
  tensors["big"] = torch::randn({40, 16});                                                              // 2.5 KiB
  tensors["ids"] = torch::arange(10);

  save_hf_weights(dir.path(), tensors);
  EXPECT_TRUE(path_exists(dir.file("model.safetensors")));
  expect_same(tensors, load_hf_weights(dir.path()));

  // 2 KiB shards: the big tensor gets one of its own; the single file is replaced by the shards.
  save_hf_weights(dir.path(), tensors, 2048);
  EXPECT_FALSE(path_exists(dir.file("model.safetensors")));
  const auto index = nlohmann::json::parse(read_file(dir.file("model.safetensors.index.json")));
  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.numel() * t.element_size();
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
  const auto n_shards = index["weight_map"]["big"].get<std::string>();
  EXPECT_EQ(n_shards.substr(0, 6), "model-");
  EXPECT_EQ(n_shards.size(), std::string("model-00001-of-00006.safetensors").size());
  std::map<std::string, std::string> sources;
  expect_same(tensors, load_hf_weights(dir.path(), &sources));
  EXPECT_EQ(sources.at("big"), dir.file(n_shards));
  for (const auto& [name, t] : load_hf_weights(dir.path())) {
    EXPECT_EQ(load_safetensors_metadata(sources.at(name)).at("format"), "pt");
  }

  // Saving fewer shards removes the stale ones of the earlier save.
  save_hf_weights(dir.path(), tensors, 4096);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.path().extension() == ".safetensors";
  const auto index2 = nlohmann::json::parse(read_file(dir.file("model.safetensors.index.json")));
  std::set<std::string> listed;
  for (const auto& f : index2["weight_map"]) listed.insert(f.get<std::string>());
  EXPECT_EQ(files, listed.size());
  expect_same(tensors, load_hf_weights(dir.path()));
}

TEST(HfWeights, MissingShardOrTensorIsAFormatError) {
  TempDir dir;
  TensorMap tensors = {{"a", torch::ones({64})}, {"b", torch::ones({64})}, {"c", torch::ones({64})}};
  save_hf_weights(dir.path(), tensors, 256);
  const auto shard = dir.file("model-00002-of-00003.safetensors");
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
  EXPECT_THROW(load_hf_weights(dir.file("nowhere")), IoError);
}
