// labels: unit
// The ICAE model (compress/icae_model.h), checked against computations written out by hand on the
// same tiny decoders (tolerance 1e-5 in fp32):
//   - slots are [B, S*k, hidden]: the final-normed last hidden states at the k memory positions of
//     the adapted encoder over (segment tokens, memory), segments compressed independently, the
//     last one shorter, in segment order;
//   - the decoder is the base without its adapters, over the slots at positions 0.., then the tokens;
//   - training moves the adapters and memory but leaves every base weight bit for bit unchanged;
//   - answer_loss reads IcaeExampleStream's layout (padding -1, ignored targets -100);
//   - the encoder saved and loaded again gives the same slots; bad shapes are refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/icae_model.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "peft/lora.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;
using fedsplit::testing::TempDir;

constexpr int64_t kVocab = 61;

Decoder tiny_base(ModelFamily family, uint64_t seed) {
  DecoderConfig c = family_config(family, kVocab, 32, 2, 4, family == ModelFamily::gpt2 ? 4 : 2, 0, 64);
  Decoder model(c, /*init=*/false);
  model->init_weights(seed);
  return model;
}

LoraOptions lora_on_attention(ModelFamily family) {
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.target_modules = family == ModelFamily::gpt2 ? std::vector<std::string>{"c_attn"}
                                                 : std::vector<std::string>{"q_proj", "v_proj"};
  return o;
}

// An ICAE whose adapters are not zero, so that encoder and decoder differ.
IcaeModel tiny_icae(ModelFamily family, const IcaeShape& shape) {
  Decoder base = tiny_base(family, 5);
  apply_lora(base, lora_on_attention(family), 7);
  torch::manual_seed(11);
  torch::NoGradGuard no_grad;
  for (auto& [path, lora] : lora_modules(base)) lora->lora_B.copy_(torch::randn_like(lora->lora_B) * 0.2);
  IcaeModel model(base, shape, 13);
  model->eval();
  return model;
}

torch::Tensor random_ids(int64_t rows, int64_t length, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(kVocab, {rows, length}, torch::kLong);
}

// The slots of one segment [B, n] computed step by step with the adapters on.
torch::Tensor slots_by_hand(IcaeModel& model, const torch::Tensor& segment) {
  Decoder& base = model->base();
  const int64_t n = segment.size(1), k = model->shape().memory_slots;
  torch::Tensor memory = model->memory().unsqueeze(0).expand({segment.size(0), k, -1});
  if (base->position_embedding().defined()) memory = memory + base->position_embedding().slice(0, n, n + k);
  set_lora_enabled(base, true);
  torch::Tensor h = base->run_layers(torch::cat({base->embed(segment, 0), memory}, 1), 0, base->num_layers(), 0);
  set_lora_enabled(base, false);
  return base->final_norm(h).slice(1, n, n + k);
}

TEST(IcaeModel, SlotsAreTheEncodersNormedStatesAtTheMemoryPositionsPerSegment) {
  for (const auto family : {ModelFamily::llama, ModelFamily::gpt2}) {
    SCOPED_TRACE(to_string(family));
    IcaeModel model = tiny_icae(family, IcaeShape{4, 2});
    torch::NoGradGuard no_grad;
    const auto context = random_ids(2, 10, 1);  // segments of 4, 4 and 2 tokens
    const auto slots = model->compress(context);
    ASSERT_EQ(slots.sizes(), (std::vector<int64_t>{2, 6, 32}));
    for (int64_t s = 0; s < 3; ++s) {
      const auto segment = context.slice(1, 4 * s, std::min<int64_t>(10, 4 * s + 4));
      EXPECT_TRUE(torch::allclose(slots.slice(1, 2 * s, 2 * s + 2), slots_by_hand(model, segment), 1e-5, 1e-5))
          << "segment " << s;
    }
    // A context of exactly one segment, and one shorter than a segment.
    EXPECT_EQ(model->compress(context.slice(1, 0, 4)).sizes(), (std::vector<int64_t>{2, 2, 32}));
    EXPECT_EQ(model->compress(context.slice(1, 0, 1)).sizes(), (std::vector<int64_t>{2, 2, 32}));
    // The adapters are off again: the base computes as it did without them.
    Decoder plain = tiny_base(family, 5);
    EXPECT_TRUE(torch::allclose(model->base()->forward(context), plain->forward(context), 1e-5, 1e-5));
  }
}

TEST(IcaeModel, DecoderIsTheBaseWithoutAdaptersOverSlotsThenTokens) {
  for (const auto family : {ModelFamily::llama, ModelFamily::gpt2}) {
    SCOPED_TRACE(to_string(family));
    IcaeModel model = tiny_icae(family, IcaeShape{4, 2});
    Decoder plain = tiny_base(family, 5);
    torch::NoGradGuard no_grad;
    const auto prefix = model->task_prefix(model->compress(random_ids(1, 6, 2)), IcaeTask::autoencode);
    ASSERT_EQ(prefix.size(1), 5);  // 2 segments of 2 slots, then [AE]
    const auto ids = random_ids(1, 3, 3);
    torch::Tensor h = prefix;
    if (plain->position_embedding().defined()) h = h + plain->position_embedding().slice(0, 0, 5);
    h = torch::cat({h, plain->embed(ids, 5)}, 1);
    const auto want = plain->head(plain->run_layers(h, 0, plain->num_layers(), 0)).slice(1, 4, 8);
    const auto got = model->decode(prefix, ids);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, 4, kVocab}));
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5));
    // A prompt prefix is the slots followed by the prompt's token embeddings.
    const auto slots = prefix.slice(1, 0, 4);
    const auto with_prompt = model->prompt_prefix(slots, {3, 9});
    EXPECT_TRUE(torch::equal(with_prompt.slice(1, 4, 6)[0], plain->token_embedding().index({torch::tensor({3, 9})})));
  }
}

TEST(IcaeModel, TrainingMovesAdaptersAndMemoryButNeverTheBase) {
  IcaeModel model = tiny_icae(ModelFamily::llama, IcaeShape{8, 2});
  std::map<std::string, torch::Tensor> before;
  for (const auto& item : model->named_parameters()) before.emplace(item.key(), item.value().detach().clone());
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  torch::optim::Adam adam(trainable, torch::optim::AdamOptions(3e-3));
  model->train();
  const auto context = random_ids(4, 16, 4), continuation = random_ids(4, 5, 6);
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    adam.zero_grad();
    const auto loss = model->autoencode_loss(context) + model->continuation_loss(context, continuation);
    loss.backward();
    adam.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first) << "the encoder's tensors move down the loss";
  int64_t moved = 0;
  for (const auto& item : model->named_parameters()) {
    const bool trains = item.key().find("lora_") != std::string::npos || item.key() == "memory" ||
                        item.key() == "ae_token" || item.key() == "lm_token";
    EXPECT_EQ(item.value().requires_grad(), trains) << item.key();
    if (trains) moved += torch::equal(item.value(), before.at(item.key())) ? 0 : 1;
    else EXPECT_TRUE(torch::equal(item.value(), before.at(item.key()))) << item.key() << " changed";
  }
  EXPECT_EQ(moved, static_cast<int64_t>(lora_parameters(model->base()).size()) + 3);
}

TEST(IcaeModel, AnswerLossReadsThePaddedExampleLayout) {
  IcaeModel model = tiny_icae(ModelFamily::llama, IcaeShape{4, 2});
  torch::NoGradGuard no_grad;
  // Row 0: context 6 tokens, prompt 2, answer 3. Row 1: context 3 tokens, prompt 1, answer 2.
  const std::vector<std::vector<int64_t>> contexts{{1, 2, 3, 4, 5, 6}, {7, 8, 9}};
  const std::vector<std::vector<int64_t>> prompts{{10, 11}, {12}}, answers{{13, 14, 15}, {16, 17}};
  const int64_t C = 8, Q = 6;
  auto ids = torch::full({2, C + Q}, -1, torch::kLong);
  auto targets = torch::full({2, Q}, -100, torch::kLong);
  double want_sum = 0;
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<int64_t> tail = prompts[b];
    tail.insert(tail.end(), answers[b].begin(), answers[b].end());
    for (size_t i = 0; i < contexts[b].size(); ++i) ids[b][static_cast<int64_t>(i)] = contexts[b][i];
    for (size_t i = 0; i < tail.size(); ++i) ids[b][C + static_cast<int64_t>(i)] = tail[i];
    const int64_t p = static_cast<int64_t>(prompts[b].size()), m = static_cast<int64_t>(tail.size());
    for (int64_t j = p - 1; j < m - 1; ++j) targets[b][j] = tail[static_cast<size_t>(j + 1)];
    // By hand: log-softmax of the decoder's row after each tail token, at the next answer token.
    const auto slots = model->compress(torch::tensor(contexts[b]).unsqueeze(0));
    const auto logits = model->decode(slots, torch::tensor(tail).unsqueeze(0));
    const auto logp = torch::log_softmax(logits[0], -1);
    for (int64_t j = p; j < m; ++j) want_sum -= logp[j][tail[static_cast<size_t>(j)]].item<double>();
  }
  const double got = model->answer_loss(ids, targets, C).item<double>();
  EXPECT_NEAR(got, want_sum / 5.0, 1e-5);
}

TEST(IcaeModel, SavedEncoderLoadsToTheSameSlots) {
  TempDir dir("icae_model");
  IcaeModel model = tiny_icae(ModelFamily::llama, IcaeShape{4, 2});
  Decoder plain = tiny_base(ModelFamily::llama, 5);
  save_hf_model(plain, dir / "base");
  model->save_encoder(dir / "encoder");
  IcaeModel loaded = load_icae(dir / "base", dir / "encoder");
  EXPECT_EQ(loaded->shape().segment_tokens, 4);
  EXPECT_EQ(loaded->shape().memory_slots, 2);
  torch::NoGradGuard no_grad;
  const auto context = random_ids(1, 9, 8);
  EXPECT_TRUE(torch::allclose(loaded->compress(context), model->compress(context), 1e-6, 1e-6));
  expect_error<IoError>([&] { load_icae(dir / "base", dir / "missing"); }, {"icae.safetensors"});
  Decoder other = tiny_base(ModelFamily::llama, 5);
  apply_lora(other, lora_on_attention(ModelFamily::llama), 1);
  expect_error<ConfigError>([&] { IcaeModel(other, IcaeShape{60, 8}, 0); }, {"icae.segment_tokens"});
  expect_error<ConfigError>([&] { IcaeModel(tiny_base(ModelFamily::llama, 5), IcaeShape{4, 2}, 0); }, {"LoRA"});
}

}  // namespace
}  // namespace fedsplit
