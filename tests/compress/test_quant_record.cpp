// labels: unit
// The quantization record: saved and loaded unchanged, malformed files refused, codes recovered
// exactly from dequantized RTN weights and weights off their grid refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/quant_record.h"
#include "compress/rtn.h"
#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

TEST(QuantRecord, RoundTripsAndAbsentIsNullopt) {
  testing::TempDir tmp("quant_record");
  const std::string dir = tmp.path();
  EXPECT_FALSE(load_quant_record(dir).has_value());
  QuantRecord record;
  record.bits = 4;
  record.group_size = 32;
  record.method = "gptq";
  record.scales["layers.0.mlp.up_proj.weight"] = torch::rand({8, 2});
  save_quant_record(dir, record);
  const auto back = load_quant_record(dir);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->bits, 4);
  EXPECT_EQ(back->group_size, 32);
  EXPECT_EQ(back->method, "gptq");
  ASSERT_EQ(back->scales.size(), 1u);
  EXPECT_TRUE(torch::equal(back->scales.at("layers.0.mlp.up_proj.weight"), record.scales.at("layers.0.mlp.up_proj.weight")));
}

TEST(QuantRecord, PerChannelRecordsHaveOneScalePerRow) {
  testing::TempDir tmp("quant_record_channel");
  QuantRecord record;
  record.group_size = 0;
  record.scales["w"] = torch::rand({8, 1});
  save_quant_record(tmp.path(), record);
  EXPECT_EQ(load_quant_record(tmp.path())->group_size, 0);
  record.scales["w"] = torch::rand({8, 2});
  save_quant_record(tmp.path(), record);
  EXPECT_THROW(load_quant_record(tmp.path()), FormatError);
}

TEST(QuantRecord, MalformedRecordsAreRefused) {
  testing::TempDir tmp("quant_record_bad");
  const std::string dir = tmp.path();
  save_safetensors(quant_record_path(dir), {{"w.scales", torch::rand({2, 2})}}, {{"format", "other"}});
  EXPECT_THROW(load_quant_record(dir), FormatError);
  save_safetensors(quant_record_path(dir), {{"w.scales", torch::rand({2, 2})}},
                   {{"format", "fedsplit-quantization"}, {"bits", "3"}, {"group_size", "32"}});
  EXPECT_THROW(load_quant_record(dir), FormatError);
  save_safetensors(quant_record_path(dir), {{"w", torch::rand({2, 2})}},
                   {{"format", "fedsplit-quantization"}, {"bits", "4"}, {"group_size", "32"}});
  EXPECT_THROW(load_quant_record(dir), FormatError);
}

TEST(QuantRecord, CodesOnGridRecoverRtnCodesExactly) {
  torch::manual_seed(3);
  const auto w = torch::randn({16, 64});
  for (int bits : {4, 8}) {
    const auto q = rtn_quantize(w, {bits, 32});
    const auto per_channel = rtn_quantize(w, {bits, 0});
    EXPECT_TRUE(torch::equal(codes_on_grid("w", per_channel.weight, per_channel.scales, bits), per_channel.codes)) << bits;
    EXPECT_TRUE(torch::equal(codes_on_grid("w", q.weight, q.scales, bits), q.codes)) << bits;
    // The latent weights of the same model are off the grid: refused, not silently re-rounded.
    EXPECT_THROW(codes_on_grid("w", w, q.scales, bits), DataError);
  }
}

}  // namespace
}  // namespace fedsplit
