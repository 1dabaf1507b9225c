// labels: unit
// Compression of whole models: the block-by-block calibration walk, post-training quantization
// (RTN, GPTQ), unstructured / N:M sparsification and structured head/channel removal, each against
// an exact expectation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/calibration.h"
#include "compress/ptq.h"
#include "compress/quant_record.h"
#include "compress/sparsify.h"
#include "compress/structured.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

Decoder tiny_llama(uint64_t seed = 5) {
  DecoderConfig c;
  c.family = ModelFamily::llama;
  c.vocab_size = 50;
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.intermediate_size = 128;
  c.max_position = 32;
  Decoder model(c);
  model->init_weights(seed);
  model->eval();
  return model;
}

std::vector<torch::Tensor> token_batches(int64_t count, uint64_t seed = 11) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> batches;
  for (int64_t i = 0; i < count; ++i) batches.push_back(torch::randint(0, 50, {2, 16}, torch::kInt64));
  return batches;
}

TEST(Calibration, BlocksSeeTheChangesMadeToEarlierBlocks) {
  Decoder model = tiny_llama();
  const auto ids = token_batches(1);
  const auto q_proj_before = model->named_modules()["layers.1.self_attn.q_proj"];
  torch::Tensor seen;
  calibrate_blockwise(
      model, ids,
      [&](const std::string& path, const torch::Tensor& x) {
        if (path == "layers.1.self_attn.q_proj") seen = x.clone();
      },
      [&](int64_t layer) {
        torch::NoGradGuard no_grad;
        if (layer == 0) projection_at(model, "layers.0.mlp.down_proj").weight.mul_(0.5);
      });
  // Block 1's q_proj input is norm1 of block 0's output computed with the halved down_proj.
  torch::NoGradGuard no_grad;
  const auto h1 = model->run_layers(model->embed(ids[0]), 0, 1);
  const auto expected = model->layer(1)->norm1->forward(h1);
  ASSERT_TRUE(seen.defined());
  EXPECT_LT((seen - expected).abs().max().item<double>(), 1e-6);
  // The observers are gone: the very same modules are back.
  EXPECT_EQ(model->named_modules()["layers.1.self_attn.q_proj"].get(), q_proj_before.get());
  EXPECT_EQ(all_block_projection_paths(model).size(), 14u);
}

TEST(Ptq, EveryBlockProjectionLiesOnItsRecordedGridAndTheHeadIsKept) {
  for (const std::string method : {"rtn", "gptq"}) {
    Decoder model = tiny_llama();
    const auto head = model->named_parameters()["lm_head.weight"].clone();
    const auto embed = model->token_embedding().clone();
    PtqOptions options;
    options.method = method;
    options.gptq.quant = {4, 32};
    options.gptq.block_size = 64;
    const QuantRecord record = quantize_model(model, token_batches(2), options);
    EXPECT_EQ(record.bits, 4);
    EXPECT_EQ(record.group_size, 32);
    ASSERT_EQ(record.scales.size(), 14u) << method;
    for (const auto& path : all_block_projection_paths(model)) {
      const auto& w = projection_at(model, path).weight;
      const auto codes = codes_on_grid(path, w, record.scales.at(path + ".weight"), 4, 1e-4);
      EXPECT_LE(codes.abs().max().item<int>(), 7) << path;
    }
    EXPECT_TRUE(torch::equal(model->named_parameters()["lm_head.weight"], head));
    EXPECT_TRUE(torch::equal(model->token_embedding(), embed));
  }
}

// GPTQ minimises each layer's output error on the calibration inputs: on block 0 (whose inputs
// RTN and GPTQ share) its error is below RTN's for every projection that reads the block input.
TEST(Ptq, GptqBeatsRtnOnTheFirstBlocksCalibrationOutputs) {
  const auto ids = token_batches(4);
  Decoder reference = tiny_llama(), rtn = tiny_llama(), gptq = tiny_llama();
  PtqOptions options;
  options.gptq.quant = {4, 32};
  options.method = "rtn";
  quantize_model(rtn, ids, options);
  options.method = "gptq";
  quantize_model(gptq, ids, options);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> inputs;
  for (const auto& b : ids) inputs.push_back(reference->layer(0)->norm1->forward(reference->embed(b)));
  const auto x = torch::cat(inputs, 1);
  for (const std::string name : {"q_proj", "k_proj", "v_proj"}) {
    const std::string path = "layers.0.self_attn." + name;
    const auto exact = torch::linear(x, projection_at(reference, path).weight);
    const double e_rtn = (torch::linear(x, projection_at(rtn, path).weight) - exact).pow(2).sum().item<double>();
    const double e_gptq = (torch::linear(x, projection_at(gptq, path).weight) - exact).pow(2).sum().item<double>();
    EXPECT_LT(e_gptq, e_rtn) << path;
  }
}

TEST(Ptq, BadOptionsAreRefused) {
  Decoder model = tiny_llama();
  PtqOptions options;
  options.method = "gptq";
  EXPECT_THROW(quantize_model(model, {}, options), ConfigError);
  options.gptq.act_order = true;
  options.gptq.quant = {4, 32};
  EXPECT_THROW(quantize_model(model, token_batches(1), options), ConfigError);
  options.method = "awq";
  EXPECT_THROW(quantize_model(model, token_batches(1), options), ConfigError);
}

TEST(Sparsify, HalfOfEveryRowAndTwoOfEveryFour) {
  for (const std::string method : {"magnitude", "wanda"}) {
    Decoder model = tiny_llama();
    SparsifyOptions options;
    options.method = method;
    options.prune.sparsity = 0.5;
    const auto masks = sparsify_model(model, token_batches(2), options);
    EXPECT_EQ(masks.size(), 14u);
    EXPECT_DOUBLE_EQ(projection_sparsity(model), 0.5) << method;
    for (const auto& path : all_block_projection_paths(model)) {
      const auto zeros_per_row = (projection_at(model, path).weight == 0).sum(1);
      EXPECT_TRUE((zeros_per_row == projection_at(model, path).in_features / 2).all().item<bool>()) << path;
    }
    Decoder nm = tiny_llama();
    options.prune = {0.0, true, 2, 4};
    sparsify_model(nm, token_batches(2), options);
    for (const auto& path : all_block_projection_paths(nm)) {
      const auto& w = projection_at(nm, path).weight;
      const auto kept = (w != 0).view({w.size(0), -1, 4}).sum(2);
      EXPECT_TRUE((kept == 2).all().item<bool>()) << path;
    }
  }
}

// Wanda weighs a weight by its input's norm: with one input feature made loud, its weights survive
// where magnitude pruning drops them (1e-3 is below every row's median |w|; 100 x 1e-3 is above
// every |w| of an N(0, 0.02) init).
TEST(Sparsify, WandaKeepsTheWeightsOfLoudInputs) {
  Decoder magnitude = tiny_llama(), wanda = tiny_llama();
  {
    torch::NoGradGuard no_grad;
    for (Decoder* m : {&magnitude, &wanda}) {
      (*m)->layer(0)->norm1->weight[3] = 100.0;       // input 3 of q/k/v is loud
      projection_at(*m, "layers.0.self_attn.q_proj").weight.select(1, 3).fill_(1e-3);  // but its weights are small
    }
  }
  SparsifyOptions options;
  options.prune.sparsity = 0.5;
  options.method = "magnitude";
  sparsify_model(magnitude, {}, options);
  options.method = "wanda";
  sparsify_model(wanda, token_batches(2), options);
  const auto column = [](Decoder& m) { return (projection_at(m, "layers.0.self_attn.q_proj").weight.select(1, 3) != 0).sum().item<int64_t>(); };
  EXPECT_EQ(column(magnitude), 0);
  EXPECT_EQ(column(wanda), 64);
}

// Heads whose output-projection columns are zero and MLP channels whose down-projection column is
// zero contribute nothing: structured pruning finds them and the smaller model computes the same.
TEST(Structured, RemovesDeadHeadsAndChannelsWithoutChangingTheOutput) {
  for (const std::string method : {"magnitude", "wanda"}) {
    Decoder model = tiny_llama();
    const int64_t D = model->options.resolved_head_dim();
    {
      torch::NoGradGuard no_grad;
      for (int64_t l = 0; l < 2; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        // one head of each key/value group: heads 1 and 2 (groups {0,1} and {2,3})
        for (int64_t h : {1, 2}) projection_at(model, p + "self_attn.o_proj").weight.slice(1, h * D, (h + 1) * D).zero_();
        projection_at(model, p + "mlp.down_proj").weight.slice(1, 0, 32).zero_();
      }
    }
    Decoder small = prune_structured(model, token_batches(2), {method, 0.5, 0.25});
    EXPECT_EQ(small->options.num_heads, 2);
    EXPECT_EQ(small->options.num_kv_heads, 2);
    EXPECT_EQ(small->options.resolved_head_dim(), D);
    EXPECT_EQ(small->options.intermediate_size, 96);
    EXPECT_LT(count_parameters(small), count_parameters(model));
    torch::NoGradGuard no_grad;
    const auto ids = token_batches(1, 99)[0];
    small->eval();
    EXPECT_LT((small->forward(ids) - model->forward(ids)).abs().max().item<double>(), 1e-5) << method;
  }
}

TEST(Structured, NothingRemovedIsTheSameModel) {
  Decoder model = tiny_llama();
  Decoder same = prune_structured(model, {}, {"magnitude", 0.0, 0.0});
  torch::NoGradGuard no_grad;
  const auto ids = token_batches(1)[0];
  same->eval();
  EXPECT_TRUE(torch::equal(same->forward(ids), model->forward(ids)));
}

TEST(Structured, BadRequestsAreRefused) {
  DecoderConfig c = tiny_llama()->options;
  EXPECT_THROW(structured_sizes(c, {"wanda", 1.0, 0.0}), ConfigError);
  EXPECT_THROW(structured_sizes(c, {"wanda", 0.0, -0.1}), ConfigError);
  EXPECT_EQ(structured_sizes(c, {"wanda", 0.9, 0.0}).first, 1);  // a head per group always stays
  c.family = ModelFamily::gpt2;
  EXPECT_THROW(structured_sizes(c, {"wanda", 0.5, 0.0}), ConfigError);
  Decoder model = tiny_llama();
  EXPECT_THROW(prune_structured(model, {}, {"wanda", 0.5, 0.0}), ConfigError);  // wanda without data
}

}  // namespace
}  // namespace fedsplit
