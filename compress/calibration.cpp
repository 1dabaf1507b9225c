#include "compress/calibration.h"

#include <torch/torch.h>

#include "core/util/error.h"

namespace fedsplit {
namespace {

// Stands in for a projection while a block is observed: reports its input, then computes as it.
class ObservedProjectionImpl : public ProjectionImpl {
 public:
  ObservedProjectionImpl(std::shared_ptr<ProjectionImpl> base, std::string path, const InputObserver& observe)
      : ProjectionImpl(0, 0, false), base_(std::move(base)), path_(std::move(path)), observe_(observe) {
    in_features = base_->in_features;
    out_features = base_->out_features;
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    observe_(path_, x);
    return base_->forward(x);
  }

 private:
  std::shared_ptr<ProjectionImpl> base_;
  std::string path_;
  const InputObserver& observe_;
};

std::vector<std::string> projection_names(const DecoderConfig& config) {
  if (config.family == ModelFamily::gpt2) return {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
  std::vector<std::string> names = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"};
  if (config.gated_mlp) names.insert(names.end(), {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"});
  else names.insert(names.end(), {"mlp.up_proj", "mlp.down_proj"});
  return names;
}

std::string block_prefix(const Decoder& model, int64_t layer) {
  return (model->options.family == ModelFamily::gpt2 ? "h." : "layers.") + std::to_string(layer) + ".";
}

}  // namespace

std::vector<std::string> block_projection_paths(const Decoder& model, int64_t layer) {
  std::vector<std::string> paths;
  for (const auto& name : projection_names(model->options)) paths.push_back(block_prefix(model, layer) + name);
  return paths;
}

std::vector<std::string> all_block_projection_paths(const Decoder& model) {
  std::vector<std::string> paths;
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    auto block = block_projection_paths(model, l);
    paths.insert(paths.end(), block.begin(), block.end());
  }
  return paths;
}

ProjectionImpl& projection_at(const Decoder& model, const std::string& path) {
  auto [parent, name] = module_parent(model, path);
  return child_projection(*parent, name);
}

void calibrate_blockwise(Decoder& model, const std::vector<torch::Tensor>& input_ids, const InputObserver& observe,
                         const std::function<void(int64_t layer)>& change) {
  if (input_ids.empty()) throw ConfigError("calibration needs at least one batch of tokens");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto device = model->token_embedding().device();
  std::vector<torch::Tensor> hidden;
  for (const auto& ids : input_ids) hidden.push_back(model->embed(ids.to(device)));
  for (int64_t layer = 0; layer < model->num_layers(); ++layer) {
    // Swap in observers for one pass, then put the very same modules back.
    std::vector<std::pair<std::shared_ptr<torch::nn::Module>, std::string>> swapped;
    std::vector<std::shared_ptr<torch::nn::Module>> originals;
    for (const auto& path : block_projection_paths(model, layer)) {
      auto [parent, name] = module_parent(model, path);
      auto original = parent->named_children()[name];
      auto base = std::dynamic_pointer_cast<ProjectionImpl>(original);
      TORCH_CHECK(base, "module ", path, " is not a projection");
      parent->replace_module(name, std::make_shared<ObservedProjectionImpl>(base, path, observe));
      swapped.emplace_back(parent, name);
      originals.push_back(original);
    }
    try {
      for (const auto& h : hidden) model->run_layers(h, layer, layer + 1);
    } catch (...) {
      for (size_t i = 0; i < swapped.size(); ++i) swapped[i].first->replace_module(swapped[i].second, originals[i]);
      throw;
    }
    for (size_t i = 0; i < swapped.size(); ++i) swapped[i].first->replace_module(swapped[i].second, originals[i]);
    change(layer);
    for (auto& h : hidden) h = model->run_layers(h, layer, layer + 1);
  }
  model->train(was_training);
}

}  // namespace fedsplit
