// labels: unit
// The engine profile (infer/engine_profile.h) of a tiny llama exported to Q8_0: a positive time
// per block, embedding and head; weight bytes equal to the file's tensors (exact); the engine's
// cache size (fp32 keys and values); the timed position lowered to fit the model's context; the
// problem it makes for the planner; and the refusals.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "compress/gguf.h"
#include "compress/gguf_export.h"
#include "core/model/decoder.h"
#include "core/util/error.h"
#include "infer/engine_profile.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;
using fedsplit::testing::TempDir;

/// Bytes of the file's tensors whose names start with `prefix`.
int64_t tensor_bytes(const GgufFile& file, const std::string& prefix) {
  int64_t total = 0;
  for (const auto& t : file.tensors)
    if (t.name.rfind(prefix, 0) == 0) total += int64_t(gguf_tensor_bytes(t.type, t.dims));
  return total;
}

TEST(EngineProfile, TimesEveryLayerAndCountsTheFilesBytes) {
  TempDir dir("engine_profile");
  const DecoderConfig c = family_config(ModelFamily::llama, 96, 64, 3, 4, 2, 0, 64);
  Decoder model(c, /*init=*/false);
  model->init_weights(3);
  GgufExportOptions options;
  options.quant = GgufQuant::q8_0;
  export_gguf(model, options, dir / "q8");
  const std::string path = dir / "q8/model.gguf";

  EngineProfileOptions o;
  o.repetitions = 3;
  o.position = 128;  // past the model's 64 positions: lowered to 64 - 3 - 1
  const EngineProfile p = profile_engine(path, o);
  EXPECT_EQ(p.position, 60);
  EXPECT_EQ(p.max_position, 64);
  EXPECT_EQ(p.architecture, "llama");
  ASSERT_EQ(p.layers.size(), 3u);
  const GgufFile file = read_gguf(path);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GT(p.layers[i].seconds, 0);
    EXPECT_TRUE(std::isfinite(p.layers[i].seconds));
    EXPECT_EQ(p.layers[i].weight_bytes, tensor_bytes(file, "blk." + std::to_string(i) + "."));
    // Keys and values, fp32: 2 x kv_heads (2) x head_dim (16) x 4 bytes.
    EXPECT_EQ(p.layers[i].kv_bytes_per_token, 2 * 2 * 16 * 4);
  }
  EXPECT_GT(p.embed_seconds, 0);
  EXPECT_GT(p.head_seconds, 0);
  EXPECT_EQ(p.embed_weight_bytes, tensor_bytes(file, "token_embd."));
  EXPECT_GE(p.head_weight_bytes, tensor_bytes(file, "output_norm."));
  EXPECT_EQ(p.activation_bytes, 64 * 4);
  EXPECT_EQ(p.head_copy_bytes, c.tie_embeddings ? p.embed_weight_bytes : 0);
  const std::string table = p.table();
  EXPECT_NE(table.find("block 2"), std::string::npos) << table;
  EXPECT_NE(table.find("total"), std::string::npos) << table;

  // One unlimited device holds everything; context 0 is the model's 64 positions.
  const InferDevicesFile devices = parse_infer_devices("[device here]\nspeed = 1\n", "one.ini");
  const InferProblem problem = infer_problem(p, devices, InferObjective::latency, 0, 2);
  EXPECT_EQ(problem.context, 64);
  const InferPlan plan = solve(problem);
  ASSERT_EQ(plan.stages.size(), 1u);
  int64_t weights = p.embed_weight_bytes + p.head_weight_bytes;
  for (const auto& l : p.layers) weights += l.weight_bytes;
  EXPECT_EQ(plan.stages[0].memory_bytes, weights + 3 * 256 * 64 * 2);
}

TEST(EngineProfile, RefusesBadOptions) {
  EngineProfileOptions o;
  o.repetitions = 0;
  expect_one_line_error<ConfigError>([&] { profile_engine("unused.gguf", o); }, {"--repetitions 0"});
  o.repetitions = 1;
  o.position = -1;
  expect_one_line_error<ConfigError>([&] { profile_engine("unused.gguf", o); }, {"position -1"});
}

}  // namespace
}  // namespace fedsplit
