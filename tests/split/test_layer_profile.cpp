// labels: unit
// The layer profile of a small random Decoder: one entry per stage, exact cut and parameter bytes,
// measured times and kept memory that make sense, and the model left as it was found.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/model/decoder.h"
#include "split/layer_profile.h"
#include "split/split_plan.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

Decoder small_model(ModelFamily family) {
  const int64_t kv_heads = family == ModelFamily::gpt2 ? 4 : 2;  // gpt2 has no grouped-query attention
  DecoderConfig c = family_config(family, /*vocab_size=*/96, /*hidden_size=*/32, /*num_layers=*/3, /*num_heads=*/4,
                                  kv_heads, /*intermediate_size=*/0, /*max_position=*/64);
  Decoder model(c);
  model->init_weights(7);
  return model;
}

int64_t model_parameter_bytes(const Decoder& model) {
  int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel() * static_cast<int64_t>(p.element_size());
  return total;
}

}  // namespace

TEST(LayerProfile, StagesBytesAndTimes) {
  torch::set_num_threads(2);  // the profile runs on o.threads = 1 and puts this back
  Decoder model = small_model(ModelFamily::llama);
  model->eval();
  ProfileOptions o;
  o.batch_size = 2;
  o.seq_len = 8;
  o.codec = "bf16";
  o.threads = 1;
  const LayerProfile profile = profile_layers(model, o, "small llama");
  const int64_t B = 2, T = 8, H = 32, V = 96;

  ASSERT_EQ(profile.stages.size(), 5u);
  EXPECT_EQ(profile.stages[0].name, "embed");
  EXPECT_EQ(profile.stages[1].name, "block 0");
  EXPECT_EQ(profile.stages[3].name, "block 2");
  EXPECT_EQ(profile.stages[4].name, "head");

  int64_t params = 0;
  for (size_t s = 0; s < profile.stages.size(); ++s) {
    const auto& st = profile.stages[s];
    SCOPED_TRACE(st.name);
    EXPECT_GT(st.forward_seconds, 0);
    EXPECT_GT(st.backward_seconds, 0);
    EXPECT_EQ(st.cut_bytes, s + 1 < profile.stages.size() ? B * T * H * 2 : 0);  // bf16: 2 bytes per element
    EXPECT_EQ(st.trainable_bytes, st.param_bytes);                                // everything trains
    EXPECT_EQ(st.tied_bytes, 0);
    params += st.param_bytes;
  }
  EXPECT_EQ(params, model_parameter_bytes(model));
  EXPECT_EQ(profile.stages[0].param_bytes, V * H * 4);  // the token table, fp32
  EXPECT_EQ(profile.stages[4].param_bytes, H * 4 + V * H * 4);  // final RMSNorm + lm_head

  // Kept memory is measured: each stage holds at least its fp32 output, the head its logits, and the
  // three identical blocks allocate the same.
  EXPECT_GE(profile.stages[0].activation_bytes, B * T * H * 4);
  EXPECT_GE(profile.stages[1].activation_bytes, 2 * B * T * H * 4);
  EXPECT_EQ(profile.stages[1].activation_bytes, profile.stages[2].activation_bytes);
  EXPECT_EQ(profile.stages[2].activation_bytes, profile.stages[3].activation_bytes);
  EXPECT_GE(profile.stages[4].activation_bytes, B * T * V * 4);

  // The model is left as found: eval mode, no gradients, the thread count.
  EXPECT_FALSE(model->is_training());
  EXPECT_EQ(torch::get_num_threads(), 2);
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());

  // The table has a row per stage.
  const std::string table = profile.table();
  for (const char* row : {"\nembed ", "\nblock 0 ", "\nblock 2 ", "\nhead "})
    EXPECT_NE(table.find(row), std::string::npos) << table;
}

TEST(LayerProfile, FrozenTiedAndCodecs) {
  torch::set_num_threads(1);
  Decoder model = small_model(ModelFamily::gpt2);  // tied head, learned positions
  for (auto& p : model->layer(1)->parameters()) p.requires_grad_(false);
  ProfileOptions o;
  o.batch_size = 1;
  o.seq_len = 4;
  o.codec = "int8";
  o.repetitions = 1;
  const LayerProfile profile = profile_layers(model, o);
  const int64_t H = 32, V = 96, P = 64;
  EXPECT_EQ(profile.stages[0].param_bytes, (V + P) * H * 4);  // tokens + positions
  EXPECT_EQ(profile.stages[4].tied_bytes, V * H * 4);         // the head reads the token table
  EXPECT_EQ(profile.stages[4].param_bytes, 2 * H * 4);        // ln_f weight and bias only
  EXPECT_EQ(profile.stages[2].trainable_bytes, 0);            // block 1 is frozen
  EXPECT_GT(profile.stages[2].param_bytes, 0);
  EXPECT_EQ(profile.stages[1].cut_bytes, 1 * 4 * H * 1);
  int64_t params = 0;
  for (const auto& st : profile.stages) params += st.param_bytes;
  EXPECT_EQ(params, model_parameter_bytes(model));

  // Vanilla split puts the head on the server, which then keeps its own copy of the tied table;
  // U-shaped keeps both ends on the device and needs none.
  DevicesProfile devices;
  const auto vanilla = split_problem(profile, devices, SplitScheme::vanilla);
  EXPECT_EQ(vanilla.stages[4].param_bytes, 2 * H * 4 + V * H * 4);
  EXPECT_EQ(vanilla.stages[4].trainable_bytes, 2 * H * 4 + V * H * 4);
  const auto ushaped = split_problem(profile, devices, SplitScheme::ushaped);
  EXPECT_EQ(ushaped.stages[4].param_bytes, 2 * H * 4);
  EXPECT_EQ(ushaped.parties, (std::vector<int>{0, 1, 0}));

  EXPECT_EQ(cut_element_bytes("fp32", "x"), 4);
  EXPECT_EQ(cut_element_bytes("fp16", "x"), 2);
  expect_one_line_error<ConfigError>([] { cut_element_bytes("fp8", "--codec"); }, {"--codec", "fp8", "fp32|fp16|bf16|int8"});
}

TEST(LayerProfile, RejectsSequencesBeyondTheModel) {
  Decoder model = small_model(ModelFamily::llama);
  ProfileOptions o;
  o.seq_len = 65;
  expect_one_line_error<ConfigError>([&] { profile_layers(model, o); }, {"seq_len 65", "max_position 64"});
  o.seq_len = 8;
  o.batch_size = 0;
  expect_one_line_error<ConfigError>([&] { profile_layers(model, o); }, {"batch size"});
}
