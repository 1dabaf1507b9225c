#include "split/cut.h"

#include <cctype>

#include "core/util/error.h"

namespace fedsplit {
namespace {

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s)
    if (!std::isdigit(static_cast<unsigned char>(ch))) return false;
  return true;
}

}  // namespace

void validate_cut(const SplitCut& cut, int64_t num_layers) {
  if (num_layers < 2)
    throw ConfigError("split.cut: a model of " + std::to_string(num_layers) +
                      " block(s) cannot be cut; split learning needs at least 2 blocks");
  if (cut.cut < 1 || cut.cut >= num_layers)
    throw ConfigError("split.cut = " + std::to_string(cut.cut) + " is out of range: the device keeps blocks 0..cut-1, "
                      "so use 1 <= split.cut <= " + std::to_string(num_layers - 1) + " for this " +
                      std::to_string(num_layers) + "-block model");
  if (cut.tail_cut != 0 && (cut.tail_cut <= cut.cut || cut.tail_cut > num_layers))
    throw ConfigError("split.tail_cut = " + std::to_string(cut.tail_cut) + " is out of range: the U-shaped scheme "
                      "needs split.cut < split.tail_cut <= num_layers, here " + std::to_string(cut.cut + 1) + ".." +
                      std::to_string(num_layers) + " (0 for vanilla)");
}

CutModel::CutModel(Decoder model, SplitCut cut) : model_(std::move(model)), cut_(cut) {
  validate_cut(cut_, model_->num_layers());
  if (!cut_.u_shaped() && model_->options.tie_embeddings)
    throw ConfigError("split.tail_cut = 0 (vanilla) cannot split a model with tied embeddings: the server's head "
                      "would need the device's embedding table; use the U-shaped scheme (split.tail_cut > split.cut)");
  if (model_->prefix_length() > 0)
    throw ConfigError("split.cut: prefix tuning is not supported across a split cut (its key/values feed every "
                      "block on both sides); use LoRA or train without peft");
}

torch::Tensor CutModel::device_front(const torch::Tensor& input_ids) {
  return model_->run_layers(model_->embed(input_ids), 0, cut_.cut);
}

torch::Tensor CutModel::server_forward(const torch::Tensor& activation) {
  if (cut_.u_shaped()) return model_->run_layers(activation, cut_.cut, cut_.tail_cut);
  return model_->head(model_->run_layers(activation, cut_.cut, model_->num_layers()));
}

torch::Tensor CutModel::device_tail(const torch::Tensor& hidden) {
  TORCH_CHECK(cut_.u_shaped(), "device_tail is for the U-shaped scheme (tail_cut > 0)");
  return model_->head(model_->run_layers(hidden, cut_.tail_cut, model_->num_layers()));
}

SplitSide CutModel::side_of(const std::string& name) const {
  const auto dot = name.find('.');
  const std::string top = name.substr(0, dot);
  if (top == "embed_tokens" || top == "wte" || top == "wpe" || top == "embed_positions") return SplitSide::device;
  const SplitSide head_side = cut_.u_shaped() ? SplitSide::device : SplitSide::server;
  if (top == "norm" || top == "ln_f" || top == "lm_head") return head_side;
  if ((top == "layers" || top == "h") && dot != std::string::npos) {
    const auto next = name.find('.', dot + 1);
    const std::string index = name.substr(dot + 1, next == std::string::npos ? std::string::npos : next - dot - 1);
    if (all_digits(index)) {
      const int64_t block = std::stoll(index);
      if (block < cut_.cut) return SplitSide::device;
      if (cut_.u_shaped() && block >= cut_.tail_cut) return SplitSide::device;
      return SplitSide::server;
    }
  }
  throw Error("split: parameter '" + name + "' belongs to no part of the cut model (embeddings, blocks, norm, "
              "head); a module added to the model needs a side in split/cut.cpp");
}

NamedParameters CutModel::parameters(SplitSide side) const {
  NamedParameters out;
  for (const auto& item : model_->named_parameters())
    if (item.value().requires_grad() && side_of(item.key()) == side) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace fedsplit
