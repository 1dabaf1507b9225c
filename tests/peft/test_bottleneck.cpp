// labels: unit
// Bottleneck adapters on Decoder. The oracle is the block computed by hand from the unadapted
// model's modules plus the adapter formula y + scale * up(act(down(y))); both sides run the same
// fp32 operations in a different grouping, so they agree to 1e-5 absolute (the reorder tolerance of
// tests/core/test_model.cpp). At initialisation (up = 0) the output is bit-identical to the base.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/io/safetensors.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "peft/bottleneck.h"
#include "tests/peft/peft_test_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

constexpr double kReorderTolerance = 1e-5;


torch::Tensor ids_for_test() {
  auto gen = at::detail::createCPUGenerator(3);
  return torch::randint(512, {2, 9}, gen, torch::kInt64);
}

// Gives every adapter parameter random values, so that the adapters change the output.
void randomise(Decoder& model, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (auto& [path, m] : bottleneck_modules(model))
    for (auto* p : {&m->adapter_down->weight, &m->adapter_down->bias, &m->adapter_up->weight, &m->adapter_up->bias})
      p->copy_(torch::empty(p->sizes(), torch::kFloat32).normal_(0.0, 0.2, gen));
}

torch::Tensor act(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "gelu") return torch::gelu(x);
  return torch::silu(x);
}

// The adapter of `m` applied to y, written out: y + scale * (act(y Wd^T + bd) Wu^T + bu).
torch::Tensor adapted(const BottleneckProjection& m, const torch::Tensor& y) {
  const auto& d = m->adapter_down;
  const auto& u = m->adapter_up;
  return y + m->scale * (torch::matmul(act(m->activation, torch::matmul(y, d->weight.t()) + d->bias), u->weight.t()) + u->bias);
}

}  // namespace

class BottleneckFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(BottleneckFixture, IdentityAtInitAndTrainsOnlyAdapters) {
  Decoder model = load_hf_model(model_dir(GetParam()));
  model->eval();
  const auto ids = ids_for_test();
  torch::Tensor base;
  {
    torch::NoGradGuard no_grad;
    base = model->forward(ids);
  }
  apply_bottleneck(model, BottleneckOptions{}, 5);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(model->forward(ids), base));  // up = 0: exactly the base model
  }
  for (const auto& [path, m] : bottleneck_modules(model)) {
    EXPECT_EQ(m->adapter_up->weight.abs().max().item<double>(), 0.0) << path;
    EXPECT_GT(m->adapter_down->weight.abs().max().item<double>(), 0.0) << path;
    EXPECT_LE(m->adapter_down->weight.abs().max().item<double>(), 1.0 / std::sqrt(double(m->out_features)) + 1e-7) << path;
  }
  // Same seed, same adapters.
  Decoder twin = load_hf_model(model_dir(GetParam()));
  apply_bottleneck(twin, BottleneckOptions{}, 5);
  const auto twin_params = twin->named_parameters();
  for (const auto& item : model->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), twin_params[item.key()])) << item.key();

  randomise(model, 1);
  model->train();
  const auto logits = model->forward(ids);
  torch::nn::functional::cross_entropy(logits.flatten(0, 1), ids.flatten()).backward();
  int adapters = 0;
  for (const auto& item : model->named_parameters()) {
    const bool is_adapter = item.key().find(".adapter_") != std::string::npos;
    adapters += is_adapter;
    EXPECT_EQ(item.value().requires_grad(), is_adapter) << item.key();
    ASSERT_EQ(item.value().grad().defined(), is_adapter) << item.key();
    if (is_adapter) {
      EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
    }
  }
  EXPECT_EQ(adapters, 4 * 2 * model->num_layers());  // houlsby: two adapters per block, four tensors each
}

// With random adapters, each block equals the hand-computed one: attention output adapted, then MLP
// output adapted, each before its residual add.
TEST_P(BottleneckFixture, MatchesHandComputedBlocks) {
  for (const std::string placement : {"houlsby", "pfeiffer"}) {
    Decoder base = load_hf_model(model_dir(GetParam()));
    Decoder model = load_hf_model(model_dir(GetParam()));
    BottleneckOptions o;
    o.size = 8;
    o.placement = placement;
    o.activation = GetParam() == "gpt2" ? "gelu" : "silu";
    o.scale = 0.5;
    apply_bottleneck(model, o, 2);
    randomise(model, 9);
    const auto modules = bottleneck_modules(model);
    const bool gpt2 = GetParam() == "gpt2";
    torch::NoGradGuard no_grad;
    const auto ids = ids_for_test();
    auto h = base->embed(ids);
    const auto [cos, sin] = [&] {
      // The base model's RoPE tables for positions 0..T-1, as run_layers uses them.
      if (base->options.positions != PositionKind::rope) return std::pair<torch::Tensor, torch::Tensor>{};
      auto t = rope_tables(base->options);
      return std::pair{t.first.narrow(0, 0, ids.size(1)), t.second.narrow(0, 0, ids.size(1))};
    }();
    for (int64_t i = 0; i < base->num_layers(); ++i) {
      auto block = base->layer(i);
      const std::string prefix = (gpt2 ? "h." : "layers.") + std::to_string(i);
      auto a = block->attn->forward(block->norm1->forward(h), cos, sin);
      if (placement == "houlsby") a = adapted(modules.at(prefix + (gpt2 ? ".attn.c_proj" : ".self_attn.o_proj")), a);
      h = h + a;
      const auto m = adapted(modules.at(prefix + (gpt2 ? ".mlp.c_proj" : ".mlp.down_proj")), block->mlp->forward(block->norm2->forward(h)));
      h = h + m;
    }
    const auto want = base->head(h);
    model->eval();
    const auto got = model->forward(ids);
    EXPECT_LE(max_diff(got, want), kReorderTolerance) << placement;
    std::cout << GetParam() << " " << placement << ": max |model - hand-computed| = " << max_diff(got, want) << "\n";
    EXPECT_GT(max_diff(got, base->forward(ids)), 1e-2) << placement;  // the adapters do change the output
  }
}

TEST_P(BottleneckFixture, PlacementWrapsTheRightModules) {
  const bool gpt2 = GetParam() == "gpt2";
  for (const std::string placement : {"houlsby", "pfeiffer"}) {
    Decoder model = load_hf_model(model_dir(GetParam()));
    BottleneckOptions o;
    o.placement = placement;
    apply_bottleneck(model, o, 0);
    std::set<std::string> want;
    for (int64_t i = 0; i < model->num_layers(); ++i) {
      const std::string block = (gpt2 ? "h." : "layers.") + std::to_string(i);
      want.insert(block + (gpt2 ? ".mlp.c_proj" : ".mlp.down_proj"));
      if (placement == "houlsby") want.insert(block + (gpt2 ? ".attn.c_proj" : ".self_attn.o_proj"));
    }
    std::set<std::string> got;
    for (const auto& [path, m] : bottleneck_modules(model)) {
      got.insert(path);
      EXPECT_EQ(m->adapter_down->weight.sizes(), (std::vector<int64_t>{64, model->options.hidden_size})) << path;
      EXPECT_EQ(m->adapter_up->weight.sizes(), (std::vector<int64_t>{model->options.hidden_size, 64})) << path;
    }
    EXPECT_EQ(got, want) << placement;
    EXPECT_EQ(got.size(), static_cast<size_t>(model->num_layers() * (placement == "houlsby" ? 2 : 1)));
  }
}

TEST_P(BottleneckFixture, SaveLoadRoundTrip) {
  TempDir tmp("bottleneck_roundtrip_" + GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  BottleneckOptions o;
  o.size = 6;
  o.placement = "pfeiffer";
  o.activation = "gelu";
  o.scale = 2.0;
  apply_bottleneck(model, o, 4);
  randomise(model, 8);
  save_bottleneck_adapter(model, tmp.path());

  const auto config = nlohmann::json::parse(read_text(tmp / "adapter_config.json"));
  EXPECT_EQ(config.at("peft_type"), "BOTTLENECK");
  EXPECT_NE(config.at("note").get<std::string>().find("PEFT does not load it"), std::string::npos);
  const auto tensors = load_safetensors(tmp / "adapter_model.safetensors");
  EXPECT_EQ(tensors.size(), static_cast<size_t>(4 * model->num_layers()));
  const std::string mlp_out = GetParam() == "gpt2" ? "transformer.h.1.mlp.c_proj" : "model.layers.1.mlp.down_proj";
  EXPECT_EQ(tensors.at("base_model.model." + mlp_out + ".adapter_down.weight").sizes(),
            (std::vector<int64_t>{6, model->options.hidden_size}));
  EXPECT_EQ(tensors.count("base_model.model." + mlp_out + ".adapter_up.bias"), 1u);

  Decoder again = load_hf_model(model_dir(GetParam()));
  load_bottleneck_adapter(again, tmp.path());
  const auto reloaded = bottleneck_modules(again);
  ASSERT_EQ(reloaded.size(), bottleneck_modules(model).size());
  for (const auto& [path, m] : bottleneck_modules(model)) {
    EXPECT_EQ(reloaded.at(path)->activation, "gelu");
    EXPECT_DOUBLE_EQ(reloaded.at(path)->scale, 2.0);
  }
  const auto ids = ids_for_test();
  torch::NoGradGuard no_grad;
  model->eval();
  again->eval();
  EXPECT_TRUE(torch::equal(again->forward(ids), model->forward(ids)));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BottleneckFixture, ::testing::Values("llama", "qwen2", "gpt2"));

TEST(BottleneckErrors, BadOptionsNameTheOption) {
  Decoder model = load_hf_model(model_dir("llama"));
  auto with = [](auto edit) {
    BottleneckOptions o;
    edit(o);
    return o;
  };
  expect_one_line_error<ConfigError>([&] { apply_bottleneck(model, with([](auto& o) { o.size = 0; }), 0); }, {"size"});
  expect_one_line_error<ConfigError>([&] { apply_bottleneck(model, with([](auto& o) { o.placement = "middle"; }), 0); },
                                     {"placement", "middle", "houlsby", "pfeiffer"});
  expect_one_line_error<ConfigError>([&] { apply_bottleneck(model, with([](auto& o) { o.activation = "tanh"; }), 0); },
                                     {"activation", "tanh"});
  expect_one_line_error<ConfigError>([&] { apply_bottleneck(model, with([](auto& o) { o.scale = NAN; }), 0); }, {"scale"});
  EXPECT_TRUE(bottleneck_modules(model).empty());
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.requires_grad());
  apply_bottleneck(model, BottleneckOptions{}, 0);
  expect_one_line_error<ConfigError>([&] { apply_bottleneck(model, BottleneckOptions{}, 0); }, {"already wrapped", "o_proj"});
  TempDir tmp("bottleneck_none");
  Decoder plain = load_hf_model(model_dir("llama"));
  expect_one_line_error<DataError>([&] { save_bottleneck_adapter(plain, tmp / "a"); }, {"no bottleneck adapters"});
}

TEST(BottleneckErrors, BadAdapterFilesNameKeyOrTensor) {
  TempDir tmp("bottleneck_files");
  Decoder source = load_hf_model(model_dir("qwen2"));
  BottleneckOptions o;
  o.size = 4;
  apply_bottleneck(source, o, 0);
  save_bottleneck_adapter(source, tmp.path());
  const std::string config = read_text(tmp / "adapter_config.json");
  const auto good = load_safetensors(tmp / "adapter_model.safetensors");
  auto edit_config = [&](const std::string& from, const std::string& to) {
    std::string text = config;
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    write_text(tmp / "adapter_config.json", text.replace(at, from.size(), to));
  };
  Decoder model = load_hf_model(model_dir("qwen2"));
  auto load = [&] { load_bottleneck_adapter(model, tmp.path()); };

  edit_config("\"activation\": \"relu\"", "\"activation\": \"tanh\"");
  expect_one_line_error<ConfigError>(load, {"activation", "tanh", "adapter_config.json"});
  edit_config("\"peft_type\": \"BOTTLENECK\"", "\"peft_type\": \"LORA\"");
  expect_one_line_error<ConfigError>(load, {"peft_type", "LORA"});
  edit_config("\"size\": 4", "\"size\": \"4\"");
  expect_one_line_error<FormatError>(load, {"adapter_config.json", "wrong type"});
  edit_config("\"placement\": \"houlsby\"", "\"placement\": \"pfeiffer\"");
  expect_one_line_error<ConfigError>(load, {"target_modules", "pfeiffer"});
  write_text(tmp / "adapter_config.json", config);

  const std::string key = "base_model.model.model.layers.0.self_attn.o_proj.adapter_up.weight";
  ASSERT_EQ(good.count(key), 1u);
  auto tensors = good;
  tensors[key] = torch::zeros({64, 5});
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  expect_one_line_error<FormatError>(load, {key, "[64, 5]", "[64, 4]", "adapter_model.safetensors"});
  tensors.erase(key);
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  expect_one_line_error<FormatError>(load, {"missing tensor", key});
  tensors = good;
  tensors["base_model.model.model.layers.0.mlp.up_proj.adapter_up.weight"] = torch::zeros({64, 4});
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  expect_one_line_error<FormatError>(load, {"unexpected tensor", "up_proj"});

  // Failed loads leave the model as it was; the good adapter then loads.
  EXPECT_TRUE(bottleneck_modules(model).empty());
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.requires_grad());
  save_safetensors(tmp / "adapter_model.safetensors", good);
  load();
  EXPECT_EQ(bottleneck_modules(model).size(), 4u);
}
