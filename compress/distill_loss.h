// Knowledge distillation losses (Hinton et al., 2015; TinyBERT's hidden-state matching, Jiao et al.,
// 2020) for a student decoder learning from a teacher's logits and hidden states.
//
// Per token t whose target is not ignored (next_token_loss's convention: target -100 is padding),
// with z_S, z_T the student's and teacher's logits and p^τ = softmax(z / τ):
//   loss_t = (1 - α) · CE(z_S, target) + α · τ² · KL(p_T^τ ‖ p_S^τ)      (divergence = forward)
//                                        α · τ² · KL(p_S^τ ‖ p_T^τ)      (divergence = reverse)
// and the loss is the mean over those tokens, computed in fp32 whatever the logits' dtype. The τ²
// keeps the soft term's gradient, τ · (p_S^τ − p_T^τ) per logit for forward KL, on the scale of the
// hard term's as τ changes.
//
// Hidden-state matching: for each pair (i, j) of a layer map, student block i's output h_S [B, T, d_S]
// goes through a learned linear map W_i [d_T, d_S] (+ bias) to the teacher's width and is compared
// with teacher block j's output h_T [B, T, d_T]: MSE over the valid tokens and the d_T features,
// averaged over the pairs. The total adds β times it.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fedsplit {

/// What the distillation loss weighs and how (recipe section [distill]).
struct DistillLossOptions {
  /// α in [0, 1]: weight of the soft (teacher) term; 1 - α weighs the cross-entropy on the labels.
  double alpha = 0.5;
  /// τ > 0: both distributions are softened by dividing the logits by it; the KL term is scaled by τ².
  double temperature = 2.0;
  /// "forward": KL(p_T ‖ p_S) (mean-seeking, Hinton's); "reverse": KL(p_S ‖ p_T) (mode-seeking).
  std::string divergence = "forward";
  /// β >= 0: weight of the hidden-state MSE (0 = no hidden-state matching).
  double hidden_weight = 0.0;
};

/// Throws ConfigError (one line naming distill.<key>) for α outside [0, 1], τ <= 0, an unknown
/// divergence or β < 0.
void validate(const DistillLossOptions& options);

/// The per-token soft term τ² · KL(...) of `options.divergence`, [N] fp32, for logits [..., V]
/// flattened to N rows (no masking, no α).
torch::Tensor soft_kl_per_token(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                const DistillLossOptions& options);

/// The parts of one batch's loss (scalars, fp32); `total` is what trains.
struct DistillLossParts {
  torch::Tensor total;  ///< (1 - α)·ce + α·kl + β·hidden
  torch::Tensor ce;     ///< mean cross-entropy on the labels
  torch::Tensor kl;     ///< mean τ²·KL over the valid tokens
  torch::Tensor hidden; ///< mean hidden-state MSE (0 without pairs)
};

/// The logit part of the loss: logits [B, T, V] (student with gradients, teacher without), targets
/// [B, T] (-100 = ignored). `hidden` is 0 and `total` leaves it out.
DistillLossParts distill_logit_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                    const torch::Tensor& targets, const DistillLossOptions& options);

/// Student layer i ↔ teacher layer j pairs.
using LayerMap = std::vector<std::pair<int64_t, int64_t>>;

/// The default map: every student block i of `student_layers` paired with teacher block
/// floor((i + 1) · teacher_layers / student_layers) − 1 (evenly spaced; the last with the last).
LayerMap even_layer_map(int64_t student_layers, int64_t teacher_layers);

/// Parses "i:j i:j ..." (or comma separated); empty text gives even_layer_map. ConfigError naming
/// distill.layer_map for a malformed item or a layer out of range.
LayerMap parse_layer_map(const std::string& text, int64_t student_layers, int64_t teacher_layers);

/// The learned projections of hidden-state matching: one linear map [teacher_hidden, student_hidden]
/// with bias per pair of the layer map, registered as "proj.<k>" (parameters "proj.<k>.weight",
/// "proj.<k>.bias"). Initialised to the identity when the widths are equal (a student cut from the
/// teacher starts matched), else to N(0, 1 / student_hidden) from `seed`, with zero bias.
class HiddenProjectorImpl : public torch::nn::Module {
 public:
  HiddenProjectorImpl(int64_t student_hidden, int64_t teacher_hidden, LayerMap map, uint64_t seed = 0);
  /// Mean over the pairs of MSE(proj_k(student[i_k]), teacher[j_k]) over the tokens where `valid`
  /// [B, T] (bool; undefined = all) and the teacher's features; `student`/`teacher` hold every
  /// block's output, indexed by layer. fp32 scalar.
  torch::Tensor forward(const std::vector<torch::Tensor>& student, const std::vector<torch::Tensor>& teacher,
                        const torch::Tensor& valid = {});

  const LayerMap& map() const { return map_; }

 private:
  LayerMap map_;
  torch::nn::ModuleList proj_{nullptr};
};
TORCH_MODULE(HiddenProjector);

/// The whole loss: the logit part plus β · projector(student_hidden, teacher_hidden) when β > 0 and
/// `projector` is given.
DistillLossParts distill_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                              const torch::Tensor& targets, const DistillLossOptions& options,
                              HiddenProjectorImpl* projector = nullptr,
                              const std::vector<torch::Tensor>& student_hidden = {},
                              const std::vector<torch::Tensor>& teacher_hidden = {});

}  // namespace fedsplit
