// labels: unit
// GGUF v3 files: write -> read round trips of every metadata type and of F32/F16/Q8_0/Q4_0
// tensors, tensor alignment, the writer's refusals, and malformed files (truncated at every
// length, bad counts, types, offsets, names) each refused with a one-line FormatError.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>

#include "compress/gguf.h"
#include "compress/gguf_tensor.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;
using fedsplit::testing::read_text;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

GgufMetadata every_type_metadata() {
  GgufMetadata m;
  m.set("general.architecture", "llama");
  m.set("t.u8", uint8_t{250});
  m.set("t.i8", int8_t{-100});
  m.set("t.u16", uint16_t{65000});
  m.set("t.i16", int16_t{-32000});
  m.set("t.u32", uint32_t{4000000000u});
  m.set("t.i32", int32_t{-2000000000});
  m.set("t.f32", 3.25f);
  m.set("t.bool_true", true);
  m.set("t.bool_false", false);
  m.set("t.string", std::string("h\xc3\xa9llo, with \0 inside", 21));
  m.set("t.empty_string", std::string());
  m.set("t.u64", uint64_t{18000000000000000000ull});
  m.set("t.i64", int64_t{-9000000000000000000ll});
  m.set("t.f64", -1.0 / 3.0);
  m.set("t.f32_nan", std::numeric_limits<float>::quiet_NaN());
  m.set("t.array_u8", GgufArray{GgufType::U8, {uint8_t{1}, uint8_t{2}, uint8_t{255}}});
  m.set("t.array_i8", GgufArray{GgufType::I8, {int8_t{-1}}});
  m.set("t.array_u16", GgufArray{GgufType::U16, {uint16_t{7}}});
  m.set("t.array_i16", GgufArray{GgufType::I16, {int16_t{-7}}});
  m.set("t.array_u32", GgufArray{GgufType::U32, {uint32_t{70000}}});
  m.set("t.array_i32", GgufArray{GgufType::I32, {int32_t{1}, int32_t{-2}, int32_t{3}}});
  m.set("t.array_f32", GgufArray{GgufType::F32, {0.5f, -0.25f}});
  m.set("t.array_bool", GgufArray{GgufType::Bool, {true, false, true}});
  m.set("t.array_string", GgufArray{GgufType::String, {"<s>", "</s>", "", "\xe2\x96\x81the"}});
  m.set("t.array_u64", GgufArray{GgufType::U64, {uint64_t{1} << 63}});
  m.set("t.array_i64", GgufArray{GgufType::I64, {int64_t{-5}}});
  m.set("t.array_f64", GgufArray{GgufType::F64, {1e300, -1e-300}});
  m.set("t.array_empty", GgufArray{GgufType::F64, {}});
  m.set("t.array_nested",
        GgufArray{GgufType::Array,
                  {GgufArray{GgufType::I32, {int32_t{1}, int32_t{2}}}, GgufArray{GgufType::String, {"x"}}}});
  return m;
}

struct Source {
  std::string name;
  torch::Tensor values;
  GgmlType type;
};

std::vector<Source> sources() {
  torch::manual_seed(11);
  return {
      {"blk.0.f32", torch::randn({3, 40}), GgmlType::F32},  // F32 / F16 rows need no blocks
      {"blk.0.f16", torch::randn({2, 5, 7}) * 100, GgmlType::F16},
      {"blk.0.q8_0", torch::randn({4, 64}) * 3, GgmlType::Q8_0},
      {"blk.0.q4_0", torch::randn({2, 96}), GgmlType::Q4_0},
      {"output_norm", torch::randn({32}), GgmlType::Q8_0},
  };
}

GgufFile sample_file() {
  GgufFile f;
  f.metadata = every_type_metadata();
  for (const auto& s : sources()) f.tensors.push_back(gguf_tensor_from_torch(s.name, s.values, s.type));
  // A tensor given as raw bytes (a type without a codec here: stored and read back as is).
  GgufTensor raw;
  raw.name = "raw.q6_k";
  raw.type = GgmlType::Q6_K;
  raw.dims = {256, 2};
  for (int i = 0; i < 420; ++i) raw.data.push_back(static_cast<uint8_t>(i * 7));
  f.tensors.push_back(raw);
  return f;
}

// Largest error the codec allows for `x` (per block of 32 along the last dim).
void expect_within_codec_bound(const torch::Tensor& x, const torch::Tensor& back, GgmlType type,
                               const std::string& name) {
  ASSERT_EQ(back.sizes(), x.sizes()) << name;
  if (type == GgmlType::F32) {
    EXPECT_TRUE(torch::equal(back, x)) << name;
    return;
  }
  if (type == GgmlType::F16) {
    EXPECT_TRUE(torch::equal(back, x.to(torch::kHalf).to(torch::kFloat))) << name;
    return;
  }
  const auto blocks = x.reshape({-1, 32});
  const auto amax = blocks.abs().amax(1, true);
  // Q8_0: d/2 (+ fp16 rounding of d over 127 steps); Q4_0: one step d = amax/8 (the clamp case).
  const auto bound = type == GgmlType::Q8_0 ? amax / 127 * (0.5 + 127.0 / 2048) : amax / 8 * (1 + 8.0 / 2048);
  const auto err = (back.reshape({-1, 32}) - blocks).abs();
  EXPECT_TRUE((err <= bound * 1.0001 + 1e-12).all().item<bool>())
      << name << ": max error " << err.max().item<float>();
}

TEST(Gguf, RoundTripOfEveryMetadataTypeAndTensorType) {
  TempDir dir("gguf_roundtrip");
  const std::string path = dir / "model.gguf";
  const GgufFile written = sample_file();
  write_gguf(path, written);
  const GgufFile read = read_gguf(path);

  ASSERT_EQ(read.metadata.size(), written.metadata.size());
  for (size_t i = 0; i < written.metadata.size(); ++i) {
    EXPECT_EQ(read.metadata.items()[i].first, written.metadata.items()[i].first);
    EXPECT_TRUE(read.metadata.items()[i].second == written.metadata.items()[i].second)
        << written.metadata.items()[i].first;
  }
  EXPECT_EQ(read.metadata.find("t.string")->get_if<std::string>()->size(), 21u);
  EXPECT_EQ(read.metadata.find("t.array_empty")->get_if<GgufArray>()->type, GgufType::F64);
  EXPECT_EQ(*read.metadata.find("t.u64")->get_if<uint64_t>(), 18000000000000000000ull);

  const auto src = sources();
  ASSERT_EQ(read.tensors.size(), src.size() + 1);
  for (size_t i = 0; i < src.size(); ++i) {
    const GgufTensor& t = read.tensors[i];
    EXPECT_EQ(t.name, src[i].name);
    EXPECT_EQ(t.type, src[i].type);
    EXPECT_EQ(t.dims, gguf_dims_of(src[i].values.sizes().vec())) << t.name;
    EXPECT_EQ(t.data, quantize_tensor(src[i].values, src[i].type)) << t.name << ": bytes differ";
    expect_within_codec_bound(src[i].values, dequantize_gguf_tensor(t), t.type, t.name);
  }
  EXPECT_EQ(read.tensors[0].dims, (std::vector<uint64_t>{40, 3}));  // innermost first
  EXPECT_EQ(read.tensors.back().data, written.tensors.back().data);
  expect_one_line_error<DataError>([&] { dequantize_gguf_tensor(read.tensors.back()); }, {"raw.q6_k", "Q6_K"});

  // Writing what was read gives the same bytes.
  EXPECT_EQ(gguf_to_bytes(read), read_text(path));
}

TEST(Gguf, TensorOffsetsAndDataSectionAreAligned) {
  for (uint32_t alignment : {32u, 64u, 8u, 4096u}) {
    GgufFile f = sample_file();
    if (alignment != 32) f.metadata.set("general.alignment", alignment);
    const std::string bytes = gguf_to_bytes(f);
    EXPECT_EQ(bytes.size() % alignment, 0u) << alignment;
    const GgufFile read = parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem");
    EXPECT_EQ(gguf_alignment(read), alignment);
    uint64_t data_bytes = 0;
    for (const auto& t : read.tensors) {
      EXPECT_EQ(t.offset % alignment, 0u) << t.name << " at alignment " << alignment;
      data_bytes += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    // The data section (the padded tensors, back to back) ends the file and starts aligned.
    const uint64_t data_start = bytes.size() - data_bytes;
    EXPECT_EQ(data_start % alignment, 0u);
    for (const auto& t : read.tensors) {
      EXPECT_EQ(std::memcmp(bytes.data() + data_start + t.offset, t.data.data(), t.data.size()), 0) << t.name;
    }
  }
}

TEST(Gguf, WriterRefusesWhatGgufCannotHold) {
  const auto ok = [] {
    GgufFile f;
    f.tensors.push_back(gguf_tensor_from_torch("a", torch::ones({2, 32}), GgmlType::Q8_0));
    return f;
  };
  {
    GgufFile f = ok();
    f.tensors.push_back(f.tensors[0]);
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"'a'", "twice"});
  }
  {
    GgufFile f = ok();
    f.tensors[0].name = std::string(65, 'n');
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"65 bytes"});
  }
  {
    GgufFile f = ok();
    f.tensors[0].dims = {32, 1, 1, 1, 2};
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"5 dimensions"});
  }
  {
    GgufFile f = ok();
    f.tensors[0].produce = nullptr;
    f.tensors[0].data.assign(67, 0);
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"67 bytes", "need 68"});
  }
  {
    GgufFile f = ok();
    f.metadata.set("bad", GgufArray{GgufType::I32, {int32_t{1}, uint8_t{2}}});
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"'bad'", "u8 item in an array of i32"});
  }
  {
    GgufFile f = ok();
    f.metadata.set("general.alignment", uint32_t{12});
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"general.alignment 12"});
    f.metadata.set("general.alignment", uint64_t{32});
    expect_one_line_error<FormatError>([&] { gguf_to_bytes(f); }, {"general.alignment is a u64"});
  }
  expect_one_line_error<DataError>(
      [&] { gguf_tensor_from_torch("odd", torch::ones({2, 33}), GgmlType::Q4_0); }, {"'odd'", "33", "Q4_0"});
  TempDir dir("gguf_writer_refuses");
  expect_one_line_error<IoError>([&] { write_gguf(dir / "missing/dir/x.gguf", ok()); }, {"missing/dir"});
}

// ---- malformed files ----

// A small valid image with two tensors and a few metadata entries, and where its fields lie.
struct Image {
  std::string bytes;
  size_t pos(const std::string& needle) const {
    const size_t p = bytes.find(needle);
    EXPECT_NE(p, std::string::npos) << needle;
    return p;
  }
  template <typename T>
  void put(size_t at, T v) {
    std::memcpy(&bytes[at], &v, sizeof(T));
  }
  // Fields of the tensor info of `name` (after its name): n_dims, dims, type, offset.
  size_t n_dims_at(const std::string& name) const { return pos(name) + name.size(); }
  size_t dims_at(const std::string& name) const { return n_dims_at(name) + 4; }
  size_t type_at(const std::string& name, uint32_t n_dims) const { return dims_at(name) + 8 * n_dims; }
  size_t offset_at(const std::string& name, uint32_t n_dims) const { return type_at(name, n_dims) + 4; }
};

Image small_image() {
  GgufFile f;
  f.metadata.set("general.name", "tiny");
  f.metadata.set("k.flag", true);
  f.metadata.set("k.list", GgufArray{GgufType::U16, {uint16_t{1}, uint16_t{2}}});
  torch::manual_seed(2);
  f.tensors.push_back(gguf_tensor_from_torch("tensor.aa", torch::randn({2, 32}), GgmlType::Q8_0));
  f.tensors.push_back(gguf_tensor_from_torch("tensor.ab", torch::randn({3}), GgmlType::F32));
  return {gguf_to_bytes(f)};
}

void parse(const std::string& bytes, const std::string& source = "bad.gguf") {
  // A buffer of exactly the image's size, so that any read past it is a read past the allocation.
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  parse_gguf(copy.data(), copy.size(), source);
}

void expect_bad(const Image& image, const std::vector<std::string>& needles) {
  std::vector<std::string> all = {"bad.gguf: "};
  all.insert(all.end(), needles.begin(), needles.end());
  expect_one_line_error<FormatError>([&] { parse(image.bytes); }, all);
}

TEST(Gguf, SmallImageIsValid) {
  const Image image = small_image();
  ASSERT_NO_THROW(parse(image.bytes));
  // The layout the other cases patch: n_dims 2 for tensor.aa, its type Q8_0 (8), offset 0.
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, &image.bytes[image.n_dims_at("tensor.aa")], 4);
  EXPECT_EQ(n_dims, 2u);
  uint32_t type = 0;
  std::memcpy(&type, &image.bytes[image.type_at("tensor.aa", 2)], 4);
  EXPECT_EQ(type, 8u);
}

TEST(Gguf, EveryTruncationIsRefused) {
  const Image image = small_image();
  for (size_t n = 0; n < image.bytes.size(); ++n) {
    try {
      parse(image.bytes.substr(0, n));
      ADD_FAILURE() << "a file truncated to " << n << " of " << image.bytes.size() << " bytes was accepted";
    } catch (const FormatError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("bad.gguf: ", 0), 0u) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  TempDir dir("gguf_truncated");
  write_text(dir / "cut.gguf", image.bytes.substr(0, image.bytes.size() - 1));
  expect_one_line_error<FormatError>([&] { read_gguf(dir / "cut.gguf"); }, {"cut.gguf: ", "tensor.a", "truncated"});
  expect_one_line_error<IoError>([&] { read_gguf(dir / "absent.gguf"); }, {"absent.gguf"});
}

TEST(Gguf, HeaderErrors) {
  Image image = small_image();
  Image bad = image;
  bad.bytes[0] = 'X';
  expect_bad(bad, {"not a GGUF file"});
  bad = image;
  bad.put<uint32_t>(4, 2);
  expect_bad(bad, {"version 2"});
  bad = image;
  bad.put<uint64_t>(8, uint64_t{1} << 40);  // more tensors than bytes
  expect_bad(bad, {"1099511627776 tensors", "cannot fit"});
  bad = image;
  bad.put<uint64_t>(16, ~uint64_t{0});
  expect_bad(bad, {"metadata entries cannot fit"});
}

TEST(Gguf, MetadataErrors) {
  const Image image = small_image();
  const size_t flag_type = image.pos("k.flag") + 6;
  Image bad = image;
  bad.put<uint32_t>(flag_type, 13);
  expect_bad(bad, {"'k.flag'", "unknown value type 13"});
  bad = image;
  bad.bytes[flag_type + 4] = 2;
  expect_bad(bad, {"'k.flag'", "bool byte 2"});
  bad = image;
  bad.put<uint64_t>(image.pos("tiny") - 8, uint64_t{1} << 62);  // the string's length
  expect_bad(bad, {"'general.name'", "truncated"});
  bad = image;
  const size_t list_count = image.pos("k.list") + 6 + 4 + 4;
  bad.put<uint64_t>(list_count, uint64_t{1} << 61);
  expect_bad(bad, {"'k.list'", "array of 2305843009213693952 u16 items cannot fit"});
  bad = image;
  bad.bytes.replace(image.pos("k.list"), 6, "k.flag");  // same length: a second k.flag
  expect_bad(bad, {"'k.flag' appears twice"});
}

TEST(Gguf, AlignmentKeyErrors) {
  GgufFile f;
  f.metadata.set("general.alignment", uint32_t{32});
  f.tensors.push_back(gguf_tensor_from_torch("t", torch::ones({32}), GgmlType::F32));
  Image image{gguf_to_bytes(f)};
  const size_t value = image.pos("general.alignment") + 17 + 4;
  Image bad = image;
  bad.put<uint32_t>(value, 48);
  expect_bad(bad, {"general.alignment 48 is not a power of two"});
  bad = image;
  bad.put<uint32_t>(value - 4, 5);  // declared i32
  expect_bad(bad, {"general.alignment is a i32"});
}

TEST(Gguf, TensorInfoErrors) {
  const Image image = small_image();
  Image bad = image;
  bad.put<uint32_t>(image.type_at("tensor.aa", 2), 99);
  expect_bad(bad, {"'tensor.aa'", "unknown ggml type 99"});
  bad = image;
  bad.put<uint32_t>(image.n_dims_at("tensor.aa"), 5);
  expect_bad(bad, {"'tensor.aa'", "n_dims 5"});
  bad = image;
  bad.put<uint32_t>(image.n_dims_at("tensor.aa"), 0);
  expect_bad(bad, {"'tensor.aa'", "n_dims 0"});
  bad = image;
  bad.put<uint64_t>(image.dims_at("tensor.aa"), 33);  // not whole Q8_0 blocks
  expect_bad(bad, {"'tensor.aa'", "innermost dimension 33", "Q8_0"});
  bad = image;
  bad.put<uint64_t>(image.dims_at("tensor.aa") + 8, uint64_t{1} << 62);  // 2^62 rows: size overflows
  expect_bad(bad, {"'tensor.aa'", "overflow"});
  bad = image;
  bad.put<uint64_t>(image.dims_at("tensor.aa") + 8, 1000);  // fits arithmetic, not the file
  expect_bad(bad, {"'tensor.aa'", "run past the data section"});
  bad = image;
  bad.bytes.replace(image.pos("tensor.ab"), 9, "tensor.aa");
  expect_bad(bad, {"'tensor.aa' appears twice"});
}

TEST(Gguf, TensorDataErrors) {
  const Image image = small_image();
  const size_t aa = image.offset_at("tensor.aa", 2);
  const size_t ab = image.offset_at("tensor.ab", 1);
  uint64_t ab_offset = 0;
  std::memcpy(&ab_offset, &image.bytes[ab], 8);
  EXPECT_EQ(ab_offset, 96u);  // 68 bytes of Q8_0 padded to 32
  Image bad = image;
  bad.put<uint64_t>(aa, 4);
  expect_bad(bad, {"'tensor.aa'", "offset 4 is not a multiple of the alignment 32"});
  bad = image;
  bad.put<uint64_t>(ab, 64);  // inside tensor.aa's 68 bytes
  expect_bad(bad, {"overlaps"});
  bad = image;
  bad.put<uint64_t>(ab, 0);
  expect_bad(bad, {"overlaps"});
  bad = image;
  bad.put<uint64_t>(ab, 128);
  expect_bad(bad, {"'tensor.ab'", "at offset 128 run past the data section of 128 bytes"});
  bad = image;
  bad.put<uint64_t>(ab, ~uint64_t{0} - 31);  // aligned, and near 2^64: no wrap-around
  expect_bad(bad, {"'tensor.ab'", "run past"});
  // Two tensors swapped in the data section are fine: offsets need not follow info order.
  Image swapped = image;
  swapped.put<uint64_t>(ab, 0);
  swapped.put<uint64_t>(aa, 32);
  ASSERT_NO_THROW(parse(swapped.bytes));
}

TEST(Gguf, EveryByteFlipIsHandled) {
  // No single-byte corruption may crash or hang the parser: it parses or throws FormatError.
  const Image image = small_image();
  for (size_t i = 0; i < image.bytes.size(); ++i) {
    for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      Image bad = image;
      bad.bytes[i] = static_cast<char>(bad.bytes[i] ^ x);
      try {
        parse(bad.bytes);
      } catch (const FormatError&) {
      }
    }
  }
}

// Optional: the Python `gguf` package (llama.cpp's gguf-py) reads our file.
TEST(Gguf, PythonGgufReadsOurFile) {
  if (std::system("python3 -c 'import gguf' > /dev/null 2>&1") != 0) GTEST_SKIP() << "python gguf not installed";
  TempDir dir("gguf_python");
  write_gguf(dir / "m.gguf", sample_file());
  const std::string script = dir / "check.py";
  write_text(script,
             "import sys, gguf\n"
             "r = gguf.GGUFReader(sys.argv[1])\n"
             "print(' '.join(f'{t.name}:{t.tensor_type.name}:{list(t.shape)}' for t in r.tensors))\n");
  const std::string out = dir / "out.txt";
  ASSERT_EQ(std::system(("python3 " + script + " " + (dir / "m.gguf") + " > " + out).c_str()), 0);
  const std::string text = read_text(out);
  EXPECT_NE(text.find("blk.0.q8_0:Q8_0:[64, 4]"), std::string::npos) << text;
  EXPECT_NE(text.find("blk.0.q4_0:Q4_0:[96, 2]"), std::string::npos) << text;
}

}  // namespace
}  // namespace fedsplit
