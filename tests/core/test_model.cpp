// labels: unit
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/model/decoder.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace fedsplit;
using fedsplit::testing::expect_one_line_error;
using fedsplit::testing::TempDir;
using nlohmann::json;

namespace {

const std::string kFixtures = fedsplit::testing::fixtures() + "/hf-tiny/";
// transformers' logits vs ours, fp32 (the fixtures' README promises about 1e-4).
constexpr double kHfTolerance = 1e-4;
// Two fp32 computations of the same function that differ only in operation order.
constexpr double kReorderTolerance = 1e-5;

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// A small llama-family config for the exact checks.
DecoderConfig tiny_llama() {
  DecoderConfig c;
  c.family = ModelFamily::llama;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.intermediate_size = 48;
  c.max_position = 64;
  c.rope_theta = 10000.0;
  return c;
}

torch::Tensor random_ids(int64_t vocab, int64_t B, int64_t T, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(vocab, {B, T}, gen, torch::kInt64);
}

void copy_dir(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(fs::path(from) / f, fs::path(to) / f);
}

}  // namespace

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, LogitsMatchTransformers) {
  const std::string dir = kFixtures + GetParam();
  auto model = load_hf_model(dir);
  const auto ref = load_safetensors(dir + "/reference.safetensors");
  torch::NoGradGuard no_grad;
  const auto logits = model->forward(ref.at("input_ids"));
  ASSERT_EQ(logits.sizes(), ref.at("logits").sizes());
  EXPECT_LE(max_diff(logits, ref.at("logits")), kHfTolerance);
}

TEST_P(HfFixture, SaveReloadRoundTrip) {
  const std::string dir = kFixtures + GetParam();
  TempDir tmp("model_save_" + GetParam());
  auto model = load_hf_model(dir);
  save_hf_model(model, tmp.path());
  auto reloaded = load_hf_model(tmp.path());
  const auto ids = load_safetensors(dir + "/reference.safetensors").at("input_ids");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(ids), reloaded->forward(ids)));

  // The saved file holds transformers' tensors: same names, shapes and values.
  const auto original = load_safetensors(dir + "/model.safetensors");
  const auto saved = load_safetensors(tmp / "model.safetensors");
  ASSERT_EQ(saved.size(), original.size());
  for (const auto& [name, t] : original) {
    ASSERT_TRUE(saved.count(name)) << name;
    EXPECT_EQ(saved.at(name).sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(saved.at(name), t)) << name;
  }
  EXPECT_EQ(load_safetensors_metadata(tmp / "model.safetensors").at("format"), "pt");

  // config.json: the fixture's and ours parse to the same DecoderConfig.
  const auto ours = json::parse(read_file(tmp / "config.json"));
  EXPECT_EQ(ours["torch_dtype"], "float32");
  EXPECT_EQ(config_to_hf(config_from_hf(ours, "ours")), config_to_hf(model->options));
  EXPECT_EQ(ours["model_type"], json::parse(read_file(dir + "/config.json"))["model_type"]);
}

INSTANTIATE_TEST_SUITE_P(Families, HfFixture, ::testing::Values("llama", "qwen2", "gpt2"),
                         [](const auto& info) { return info.param; });

TEST(Decoder, FixtureStructure) {
  auto qwen = load_hf_model(kFixtures + "qwen2");
  EXPECT_TRUE(qwen->options.tie_embeddings);
  EXPECT_TRUE(qwen->options.attn_qkv_bias);
  EXPECT_FALSE(qwen->options.attn_out_bias);
  EXPECT_EQ(qwen->options.rope_theta, 1e6);
  const auto params = qwen->named_parameters();
  EXPECT_EQ(params.find("lm_head.weight"), nullptr);
  EXPECT_NE(params.find("layers.1.self_attn.q_proj.bias"), nullptr);
  EXPECT_EQ(params.find("layers.1.self_attn.o_proj.bias"), nullptr);
  int64_t file_numel = 0;
  for (const auto& [n, t] : load_safetensors(kFixtures + "qwen2/model.safetensors")) file_numel += t.numel();
  EXPECT_EQ(count_parameters(qwen), file_numel);

  auto gpt2 = load_hf_model(kFixtures + "gpt2");
  EXPECT_EQ(gpt2->options.activation, Activation::gelu_tanh);
  EXPECT_EQ(gpt2->options.intermediate_size, 256);  // n_inner null -> 4 * n_embd
  EXPECT_EQ(gpt2->named_parameters()["h.0.attn.c_attn.weight"].sizes(), (std::vector<int64_t>{192, 64}));
  EXPECT_FALSE(gpt2->is_training());

  auto llama = load_hf_model(kFixtures + "llama");
  EXPECT_EQ(llama->options.num_kv_heads, 2);
  EXPECT_NE(llama->named_parameters().find("lm_head.weight"), nullptr);
  for (const auto& family : {"llama", "qwen2", "gpt2"}) {
    auto m = load_model(kFixtures + family);
    const auto expected = expected_parameters(m->options);
    const auto actual = m->named_parameters();
    ASSERT_EQ(expected.size(), actual.size()) << family;
    for (const auto& item : actual) EXPECT_EQ(item.value().sizes(), c10::IntArrayRef(expected.at(item.key())));
  }
}

// GQA is multi-head attention whose K/V heads are shared: duplicating each KV head's weights
// (and biases) into its query group gives a plain MHA model with the same function.
TEST(Decoder, GroupedQueryAttentionEqualsDuplicatedHeads) {
  auto gqa_config = tiny_llama();
  gqa_config.family = ModelFamily::qwen2;  // with q/k/v biases
  gqa_config.attn_qkv_bias = true;
  Decoder gqa(gqa_config);
  gqa->init_weights(3);
  {
    torch::NoGradGuard no_grad;  // non-zero biases, so that they are checked too
    for (auto& item : gqa->named_parameters()) {
      if (item.key().find(".bias") != std::string::npos) item.value().normal_(0, 0.1);
    }
  }
  auto mha_config = gqa_config;
  mha_config.num_kv_heads = mha_config.num_heads;
  Decoder mha(mha_config);
  const int64_t rep = gqa_config.num_heads / gqa_config.num_kv_heads;
  const int64_t D = gqa_config.resolved_head_dim();
  {
    torch::NoGradGuard no_grad;
    const auto src = gqa->named_parameters();
    for (auto& item : mha->named_parameters()) {
      const auto& from = src[item.key()];
      const bool kv = item.key().find("k_proj") != std::string::npos || item.key().find("v_proj") != std::string::npos;
      if (!kv) {
        item.value().copy_(from);
        continue;
      }
      // [KV*D, ...] -> [KV, D, ...] -> each KV head repeated rep times, in place of its group.
      auto grouped = from.reshape({gqa_config.num_kv_heads, D, -1}).repeat_interleave(rep, 0);
      item.value().copy_(grouped.reshape(item.value().sizes()));
    }
  }
  const auto ids = random_ids(gqa_config.vocab_size, 2, 11, 5);
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_diff(gqa->forward(ids), mha->forward(ids)), kReorderTolerance);
}

// head_dim != hidden_size / num_heads (q width 64 from hidden 48), and the pieces that split
// learning and pipelines use compose to forward.
TEST(Decoder, ExplicitHeadDimAndPiecewiseComposition) {
  auto c = tiny_llama();
  c.hidden_size = 48;
  c.head_dim = 16;
  c.num_layers = 3;
  c.tie_embeddings = true;
  Decoder model(c);
  model->init_weights(11);
  model->eval();
  EXPECT_EQ(model->named_parameters()["layers.0.self_attn.q_proj.weight"].sizes(), (std::vector<int64_t>{64, 48}));
  EXPECT_EQ(model->named_parameters()["layers.0.self_attn.o_proj.weight"].sizes(), (std::vector<int64_t>{48, 64}));
  const auto ids = random_ids(c.vocab_size, 3, 9, 2);
  torch::NoGradGuard no_grad;
  const auto full = model->forward(ids);
  EXPECT_EQ(full.sizes(), (std::vector<int64_t>{3, 9, c.vocab_size}));
  auto h = model->embed(ids);
  h = model->run_layers(h, 0, 1);
  h = model->run_layers(h, 1, 1);
  h = model->run_layers(h, 1, 3);
  EXPECT_TRUE(torch::equal(model->head(h), full));
}

// RoPE encodes only relative positions: shifting every position leaves a rope model's output
// unchanged, while a learned-position model (gpt2) sees the shift.
TEST(Decoder, RopeDependsOnRelativePositionsOnly) {
  Decoder model(tiny_llama());
  model->init_weights(4);
  model->eval();
  const auto ids = random_ids(97, 2, 10, 9);
  torch::NoGradGuard no_grad;
  const auto h = model->embed(ids);
  const auto at0 = model->head(model->run_layers(h, 0, 2, 0));
  const auto at17 = model->head(model->run_layers(h, 0, 2, 17));
  EXPECT_LE(max_diff(at0, at17), kReorderTolerance);

  auto gpt2 = load_hf_model(kFixtures + "gpt2");
  const auto g0 = gpt2->head(gpt2->run_layers(gpt2->embed(ids, 0), 0, 2));
  const auto g5 = gpt2->head(gpt2->run_layers(gpt2->embed(ids, 5), 0, 2));
  EXPECT_GT(max_diff(g0, g5), 1e-3);
  EXPECT_THROW(model->embed(ids, 60), c10::Error);  // positions past max_position
}

// Logits at position t depend on tokens 0..t only.
TEST(Decoder, Causal) {
  for (const std::string family : {"llama", "gpt2"}) {
    auto model = load_hf_model(kFixtures + family);
    auto ids = random_ids(512, 2, 16, 1);
    torch::NoGradGuard no_grad;
    const auto before = model->forward(ids);
    auto changed = ids.clone();
    changed.narrow(1, 10, 6).fill_(7);
    const auto after = model->forward(changed);
    EXPECT_LE(max_diff(before.narrow(1, 0, 10), after.narrow(1, 0, 10)), 1e-6) << family;
    EXPECT_GT(max_diff(before.narrow(1, 10, 6), after.narrow(1, 10, 6)), 1e-3) << family;
  }
}

// peft/ swaps projections with replace_module; the model must call the replacement.
namespace {
class ScaledProjection : public ProjectionImpl {
 public:
  explicit ScaledProjection(const ProjectionImpl& base)
      : ProjectionImpl(base.in_features, base.out_features, base.bias.defined()) {
    share_frozen(base);
  }
  torch::Tensor forward(const torch::Tensor& x) override { return ProjectionImpl::forward(x) * 2; }
};
}  // namespace

TEST(Decoder, ReplacedProjectionIsCalled) {
  for (const std::string family : {"llama", "gpt2"}) {
    auto model = load_hf_model(kFixtures + family);
    auto reference = load_hf_model(kFixtures + family);
    const std::string parent_path = family == "gpt2" ? "h.1.mlp" : "layers.1.self_attn";
    const std::string child = family == "gpt2" ? "c_fc" : "v_proj";
    auto parent = model->named_modules()[parent_path];
    const auto& base = *std::dynamic_pointer_cast<ProjectionImpl>(parent->named_children()[child]);
    parent->replace_module(child, std::make_shared<ScaledProjection>(base));
    {
      torch::NoGradGuard no_grad;  // the same doubling, in the reference's weights
      const auto params = reference->named_parameters();
      params[parent_path + "." + child + ".weight"].mul_(2);
      if (const auto* b = params.find(parent_path + "." + child + ".bias")) b->mul_(2);
    }
    const auto ids = random_ids(512, 1, 8, 3);
    torch::NoGradGuard no_grad;
    EXPECT_LE(max_diff(model->forward(ids), reference->forward(ids)), kReorderTolerance) << family;
  }
}

// Prefix key/values are a KV cache: with the keys (RoPE applied) and values of the first P tokens as
// the prefix, the remaining tokens get the logits they get in the full sequence.
namespace {
class RecordingProjection : public ProjectionImpl {
 public:
  explicit RecordingProjection(const ProjectionImpl& base)
      : ProjectionImpl(base.in_features, base.out_features, base.bias.defined()) {
    share_frozen(base);
  }
  torch::Tensor forward(const torch::Tensor& x) override { return last = ProjectionImpl::forward(x); }
  torch::Tensor last;
};
}  // namespace

TEST(Decoder, PrefixKeyValuesActAsACacheOfEarlierTokens) {
  for (const std::string family : {"llama", "gpt2"}) {
    auto model = load_hf_model(kFixtures + family);
    const auto& c = model->options;
    const int64_t P = 4, T = 6, KV = c.num_kv_heads, D = c.head_dim;
    const bool gpt2 = family == "gpt2";
    std::vector<std::vector<std::shared_ptr<RecordingProjection>>> recorders;  // per layer: c_attn, or k_proj and v_proj
    for (int64_t i = 0; i < model->num_layers(); ++i) {
      auto parent = model->layer(i)->attn.ptr();
      recorders.emplace_back();
      for (const std::string& name : gpt2 ? std::vector<std::string>{"c_attn"} : std::vector<std::string>{"k_proj", "v_proj"}) {
        auto recorder = std::make_shared<RecordingProjection>(child_projection(*parent, name));
        parent->replace_module(name, recorder);
        recorders.back().push_back(recorder);
      }
    }
    const auto ids = random_ids(512, 1, P + T, 5);
    torch::NoGradGuard no_grad;
    const auto full = model->forward(ids);
    const auto [cos, sin] = rope_tables(c);
    std::vector<torch::Tensor> layers;
    for (const auto& rec : recorders) {
      torch::Tensor k, v;  // [P, KV, D]
      if (gpt2) {
        const auto qkv = rec[0]->last[0].narrow(0, 0, P);
        k = qkv.narrow(1, c.num_heads * D, KV * D).reshape({P, KV, D});
        v = qkv.narrow(1, c.num_heads * D + KV * D, KV * D).reshape({P, KV, D});
      } else {
        k = rec[0]->last[0].narrow(0, 0, P).reshape({P, KV, D});
        v = rec[1]->last[0].narrow(0, 0, P).reshape({P, KV, D});
        k = apply_rope(k.unsqueeze(0), cos.narrow(0, 0, P), sin.narrow(0, 0, P))[0].transpose(0, 1);
      }
      layers.push_back(torch::stack({k, v}, 1));  // [P, 2, KV, D]
    }
    model->set_prefix_key_values(torch::stack(layers, 1).reshape({P, -1}));
    EXPECT_EQ(model->prefix_length(), P);
    const auto tail = model->forward(ids.narrow(1, P, T));
    EXPECT_LE(max_diff(tail, full.narrow(1, P, T)), kReorderTolerance) << family;
    // Hidden states of a batch see the same prefix in every row.
    const auto two = model->forward(ids.narrow(1, P, T).repeat({2, 1}));
    EXPECT_LE(max_diff(two[1], tail[0]), kReorderTolerance) << family;
    model->set_prefix_key_values(torch::Tensor());
    EXPECT_EQ(model->prefix_length(), 0);
    EXPECT_TRUE(torch::equal(model->forward(ids), full)) << family;
    EXPECT_THROW(model->set_prefix_key_values(torch::zeros({P, 3})), c10::Error);
  }
}

// RMSNorm's hand-written backward against autograd through transformers' formula.
TEST(Decoder, RmsNormGradientMatchesAutograd) {
  torch::manual_seed(0);
  for (bool frozen : {false, true}) {
    Norm norm(NormKind::rms, 24, 1e-6);
    torch::NoGradGuard no_grad_init;
    norm->weight.normal_(1.0, 0.3);
    norm->weight.set_requires_grad(!frozen);
    const auto x = (torch::randn({3, 5, 24}) * 2 + 0.5).requires_grad_(true);
    const auto g = torch::randn({3, 5, 24});
    torch::AutoGradMode grad(true);
    const auto w = norm->weight.detach().clone().requires_grad_(!frozen);
    const auto ref = w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
    const auto out = norm->forward(x);
    EXPECT_LE(max_diff(out, ref), 1e-6);
    const auto want = torch::autograd::grad({ref}, frozen ? std::vector<torch::Tensor>{x} : std::vector<torch::Tensor>{x, w}, {g});
    const auto got = torch::autograd::grad({out}, frozen ? std::vector<torch::Tensor>{x} : std::vector<torch::Tensor>{x, norm->weight}, {g});
    for (size_t i = 0; i < want.size(); ++i) EXPECT_LE(max_diff(got[i], want[i]), 1e-5) << "input " << i;
  }
}

TEST(Decoder, InitWeightsIsDeterministic) {
  auto c = tiny_llama();
  Decoder a(c), b(c), d(c);
  a->init_weights(42);
  b->init_weights(42);
  d->init_weights(43);
  const auto pb = b->named_parameters();
  const auto pd = d->named_parameters();
  bool any_differs = false;
  for (const auto& item : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
    any_differs |= !torch::equal(item.value(), pd[item.key()]);
  }
  EXPECT_TRUE(any_differs);
  const auto p = a->named_parameters();
  EXPECT_TRUE(torch::equal(p["norm.weight"], torch::ones({c.hidden_size})));
  const double std_q = p["layers.0.self_attn.q_proj.weight"].std().item<double>();
  const double std_o = p["layers.0.self_attn.o_proj.weight"].std().item<double>();
  EXPECT_NEAR(std_q, 0.02, 0.003);
  EXPECT_NEAR(std_o, 0.02 / std::sqrt(2.0 * c.num_layers), 0.003);
}

TEST(Decoder, TrainsAndRunsInBfloat16) {
  auto model = load_hf_model(kFixtures + "qwen2");
  model->train();
  const auto ids = random_ids(512, 2, 12, 8);
  auto logits = model->forward(ids);
  auto loss = torch::cross_entropy_loss(logits.view({-1, 512}), ids.view({-1}));
  loss.backward();
  for (const auto& item : model->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const auto fp32 = model->forward(ids);
  model->to(torch::kBFloat16);
  const auto bf16 = model->forward(ids);
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_LE(max_diff(bf16.to(torch::kFloat32), fp32), 0.1);
}

TEST(Config, RoundTripsThroughHfJson) {
  for (const std::string family : {"llama", "qwen2", "gpt2"}) {
    const auto path = kFixtures + family + "/config.json";
    const auto c = config_from_hf(json::parse(read_file(path)), path);
    EXPECT_EQ(config_to_hf(config_from_hf(config_to_hf(c), "x")), config_to_hf(c)) << family;
  }
  auto c = tiny_llama();
  c.rope_scaling = RopeScaling::llama3;
  c.rope_factor = 8;
  c.rope_original_max_position = 16;
  c.eos_token_ids = {5, 6};
  c.bos_token_id = 1;
  const auto j = config_to_hf(c);
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(j["eos_token_id"], json({5, 6}));
  const auto back = config_from_hf(j, "x");
  EXPECT_EQ(back.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(back.rope_original_max_position, 16);
  EXPECT_EQ(back.eos_token_ids, (std::vector<int64_t>{5, 6}));
  // transformers 4.x spelling: top-level rope_theta and rope_scaling.
  auto v4 = j;
  v4.erase("rope_parameters");
  v4["rope_theta"] = 500000.0;
  EXPECT_EQ(config_from_hf(v4, "x").rope_theta, 500000.0);
  EXPECT_EQ(config_from_hf(v4, "x").rope_factor, 8);
}

// llama3 scaling keeps high frequencies, divides low ones by the factor, interpolates between.
TEST(Config, Llama3RopeScaling) {
  auto plain = tiny_llama();
  plain.head_dim = 64;
  plain.hidden_size = 64;
  plain.num_heads = 1;
  plain.num_kv_heads = 1;
  auto scaled = plain;
  scaled.rope_scaling = RopeScaling::llama3;
  scaled.rope_factor = 8;
  scaled.rope_low_freq_factor = 1;
  scaled.rope_high_freq_factor = 4;
  scaled.rope_original_max_position = 64;
  // Angle at position 1 is inv_freq itself.
  const auto f0 = torch::atan2(rope_tables(plain).second[1], rope_tables(plain).first[1]);
  const auto f1 = torch::atan2(rope_tables(scaled).second[1], rope_tables(scaled).first[1]);
  const auto wavelen = 2 * M_PI / f0;
  for (int64_t i = 0; i < f0.size(0); ++i) {
    const double w = wavelen[i].item<double>();
    const double ratio = f1[i].item<double>() / f0[i].item<double>();
    if (w < 64.0 / 4) {
      EXPECT_NEAR(ratio, 1.0, 1e-5) << i;
    } else if (w > 64.0) {
      EXPECT_NEAR(ratio, 1.0 / 8, 1e-5) << i;
    } else {
      EXPECT_LT(ratio, 1.0);
      EXPECT_GT(ratio, 1.0 / 8);
    }
  }
}

TEST(Config, ErrorsNameTheKey) {
  const auto path = kFixtures + "llama/config.json";
  const auto base = json::parse(read_file(path));
  auto with = [&](const std::function<void(json&)>& edit) {
    auto j = base;
    edit(j);
    return j;
  };
  expect_one_line_error<ConfigError>([&] { config_from_hf(with([](json& j) { j["model_type"] = "mamba"; }), path); },
                                     {path, "model_type", "mamba"});
  expect_one_line_error<FormatError>([&] { config_from_hf(with([](json& j) { j.erase("hidden_size"); }), path); },
                                     {path, "hidden_size"});
  expect_one_line_error<FormatError>(
      [&] { config_from_hf(with([](json& j) { j["num_hidden_layers"] = "two"; }), path); },
      {path, "num_hidden_layers"});
  expect_one_line_error<ConfigError>([&] { config_from_hf(with([](json& j) { j["num_key_value_heads"] = 3; }), path); },
                                     {path, "num_key_value_heads"});
  expect_one_line_error<ConfigError>(
      [&] {
        config_from_hf(with([](json& j) {
                         j["num_attention_heads"] = 5;
                         j.erase("head_dim");
                         j["num_key_value_heads"] = 5;
                       }),
                       path);
      },
      {path, "num_attention_heads", "hidden_size"});
  expect_one_line_error<ConfigError>(
      [&] { config_from_hf(with([](json& j) { j["rope_parameters"]["rope_type"] = "yarn"; }), path); },
      {path, "rope_type", "yarn"});
  expect_one_line_error<ConfigError>(
      [&] { config_from_hf(with([](json& j) { j["architectures"] = {"LlamaForSequenceClassification"}; }), path); },
      {path, "architectures"});
  const auto gpt2_path = kFixtures + "gpt2/config.json";
  auto gpt2 = json::parse(read_file(gpt2_path));
  gpt2["n_head"] = 5;
  expect_one_line_error<ConfigError>([&] { config_from_hf(gpt2, gpt2_path); }, {gpt2_path, "n_head", "n_embd"});

  auto bad = tiny_llama();
  bad.num_kv_heads = 3;
  expect_one_line_error<ConfigError>([&] { validate(bad); }, {"num_kv_heads", "num_heads"});
  expect_one_line_error<ConfigError>([&] { Decoder m(bad); }, {"num_kv_heads"});
  auto odd = tiny_llama();
  odd.head_dim = 7;
  expect_one_line_error<ConfigError>([&] { validate(odd); }, {"head_dim", "even"});
}

TEST(HfImport, WeightErrorsNameFileTensorAndShapes) {
  TempDir tmp("model_weight_errors");
  const auto dir = tmp / "m";
  copy_dir(kFixtures + "llama", dir);
  const auto weights_path = dir + "/model.safetensors";
  auto weights = load_safetensors(weights_path);

  auto missing = weights;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  save_safetensors(weights_path, missing, {{"format", "pt"}});
  expect_one_line_error<FormatError>([&] { load_hf_model(dir); },
                                     {weights_path, "missing tensor 'model.layers.1.mlp.up_proj.weight'", "[160, 64]"});

  auto extra = weights;
  extra["model.layers.0.self_attn.q_norm.weight"] = torch::ones({16});
  save_safetensors(weights_path, extra, {{"format", "pt"}});
  expect_one_line_error<FormatError>([&] { load_hf_model(dir); },
                                     {weights_path, "unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"});

  auto wrong = weights;
  wrong["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({64, 64});
  save_safetensors(weights_path, wrong, {{"format", "pt"}});
  expect_one_line_error<FormatError>(
      [&] { load_hf_model(dir); },
      {weights_path, "model.layers.0.self_attn.k_proj.weight", "[64, 64]", "expected [32, 64]"});

  // gpt2: shapes are reported in HF's Conv1D layout.
  const auto gdir = tmp / "g";
  copy_dir(kFixtures + "gpt2", gdir);
  auto g = load_safetensors(gdir + "/model.safetensors");
  g["transformer.h.0.mlp.c_fc.weight"] = torch::zeros({256, 64});
  save_safetensors(gdir + "/model.safetensors", g, {{"format", "pt"}});
  expect_one_line_error<FormatError>([&] { load_hf_model(gdir); }, {"c_fc.weight", "[256, 64]", "expected [64, 256]"});

  expect_one_line_error<IoError>([&] { load_model(tmp / "nothing"); }, {"nothing"});
}

TEST(HfImport, ShardedExportLoads) {
  TempDir tmp("model_sharded_export");
  auto model = load_hf_model(kFixtures + "llama");
  save_hf_model(model, tmp.path(), 100 * 1024);
  EXPECT_FALSE(path_exists(tmp / "model.safetensors"));
  EXPECT_TRUE(path_exists(tmp / "model.safetensors.index.json"));
  auto reloaded = load_model(tmp.path());
  const auto ids = random_ids(512, 1, 6, 4);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(ids), reloaded->forward(ids)));
}
