// Helpers shared by the peft tests: where the reference models and adapters live, and how a model's
// logits are compared with them.
#pragma once
#include <torch/torch.h>

#include <string>

#include "core/model/decoder.h"
#include "tests/test_support.h"

namespace fedsplit::testing {

/// The hf-tiny reference model of `family` (llama, qwen2, gpt2).
inline std::string model_dir(const std::string& family) { return fixtures() + "/hf-tiny/" + family; }

/// A PEFT reference adapter in tests/fixtures/peft (kind: dora, prefix) with its reference logits.
inline std::string peft_reference_dir(const std::string& family, const std::string& kind) {
  return std::string(FEDSPLIT_SOURCE_DIR) + "/tests/fixtures/peft/" + family + "/" + kind;
}

/// Logits of `model` in eval mode, without gradients.
inline torch::Tensor logits_of(Decoder& model, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(ids);
}

/// max |a - b|, computed in float64.
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace fedsplit::testing
