#include "compress/distill_loss.h"

#include <cmath>
#include <sstream>

#include "core/config/recipe.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

constexpr int64_t kIgnoreIndex = -100;  // cross_entropy's default, as next_token_loss uses it

// Rows of x [..., d] flattened to [N, d], restricted to the rows where `valid_rows` [N] (if defined).
torch::Tensor valid_rows(const torch::Tensor& x, const torch::Tensor& valid) {
  auto rows = x.reshape({-1, x.size(-1)});
  if (!valid.defined()) return rows;
  return rows.index_select(0, valid.reshape({-1}).nonzero().reshape({-1}));
}

}  // namespace

void validate(const DistillLossOptions& o) {
  if (!(o.alpha >= 0.0 && o.alpha <= 1.0))
    throw ConfigError("distill.alpha = " + std::to_string(o.alpha) + " is outside [0, 1]: 0 = labels only, 1 = teacher only");
  if (!(o.temperature > 0.0) || !std::isfinite(o.temperature))
    throw ConfigError("distill.temperature = " + std::to_string(o.temperature) + " must be > 0 (1 = the plain softmax)");
  if (o.divergence != "forward" && o.divergence != "reverse")
    throw ConfigError("distill.divergence = '" + o.divergence + "': use forward (KL(teacher||student)) or reverse");
  if (!(o.hidden_weight >= 0.0) || !std::isfinite(o.hidden_weight))
    throw ConfigError("distill.hidden_weight = " + std::to_string(o.hidden_weight) + " must be >= 0 (0 = off)");
}

torch::Tensor soft_kl_per_token(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                const DistillLossOptions& o) {
  TORCH_CHECK(student_logits.sizes() == teacher_logits.sizes(), "distillation: student logits ", student_logits.sizes(),
              " and teacher logits ", teacher_logits.sizes(), " differ (the vocabularies must match)");
  const int64_t vocab = student_logits.size(-1);
  const double tau = o.temperature;
  const auto log_s = torch::log_softmax(student_logits.reshape({-1, vocab}).to(torch::kFloat32) / tau, -1);
  const auto log_t = torch::log_softmax(teacher_logits.detach().reshape({-1, vocab}).to(torch::kFloat32) / tau, -1);
  const auto kl = o.divergence == "reverse" ? (log_s.exp() * (log_s - log_t)).sum(-1)
                                            : (log_t.exp() * (log_t - log_s)).sum(-1);
  return kl * (tau * tau);
}

DistillLossParts distill_logit_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                    const torch::Tensor& targets, const DistillLossOptions& o) {
  const int64_t vocab = student_logits.size(-1);
  const auto flat_targets = targets.reshape({-1});
  DistillLossParts parts;
  parts.ce = torch::nn::functional::cross_entropy(student_logits.reshape({-1, vocab}).to(torch::kFloat32), flat_targets);
  const auto valid = (flat_targets != kIgnoreIndex).to(torch::kFloat32);
  const auto kl = soft_kl_per_token(student_logits, teacher_logits, o);
  parts.kl = (kl * valid).sum() / valid.sum().clamp_min(1.0);
  parts.hidden = torch::zeros({}, parts.ce.options());
  parts.total = parts.ce * (1.0 - o.alpha) + parts.kl * o.alpha;
  return parts;
}

LayerMap even_layer_map(int64_t student_layers, int64_t teacher_layers) {
  LayerMap map;
  for (int64_t i = 0; i < student_layers; ++i) map.emplace_back(i, (i + 1) * teacher_layers / student_layers - 1);
  return map;
}

LayerMap parse_layer_map(const std::string& text, int64_t student_layers, int64_t teacher_layers) {
  const auto items = split_list(text);
  if (items.empty()) return even_layer_map(student_layers, teacher_layers);
  LayerMap map;
  for (const auto& item : items) {
    const auto colon = item.find(':');
    int64_t i = -1, j = -1;
    try {
      size_t used_i = 0, used_j = 0;
      if (colon != std::string::npos) {
        i = std::stoll(item.substr(0, colon), &used_i);
        j = std::stoll(item.substr(colon + 1), &used_j);
      }
      if (used_i != colon || used_j != item.size() - colon - 1) i = j = -1;
    } catch (const std::exception&) {
      i = j = -1;
    }
    if (i < 0 || j < 0 || i >= student_layers || j >= teacher_layers)
      throw ConfigError("distill.layer_map item '" + item + "' is not student_layer:teacher_layer with student layers 0.." +
                        std::to_string(student_layers - 1) + " and teacher layers 0.." + std::to_string(teacher_layers - 1));
    map.emplace_back(i, j);
  }
  return map;
}

HiddenProjectorImpl::HiddenProjectorImpl(int64_t student_hidden, int64_t teacher_hidden, LayerMap map, uint64_t seed)
    : map_(std::move(map)) {
  proj_ = register_module("proj", torch::nn::ModuleList());
  auto gen = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < map_.size(); ++k) {
    torch::nn::Linear linear(torch::nn::LinearOptions(student_hidden, teacher_hidden).bias(true));
    if (student_hidden == teacher_hidden) {
      linear->weight.copy_(torch::eye(student_hidden));
    } else {
      linear->weight.copy_(at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(student_hidden)),
                                      {teacher_hidden, student_hidden}, gen));
    }
    linear->bias.zero_();
    proj_->push_back(linear);
  }
}

torch::Tensor HiddenProjectorImpl::forward(const std::vector<torch::Tensor>& student,
                                           const std::vector<torch::Tensor>& teacher, const torch::Tensor& valid) {
  TORCH_CHECK(!map_.empty(), "hidden-state matching without layer pairs");
  torch::Tensor total;
  for (size_t k = 0; k < map_.size(); ++k) {
    const auto [i, j] = map_[k];
    TORCH_CHECK(i < static_cast<int64_t>(student.size()) && j < static_cast<int64_t>(teacher.size()),
                "hidden-state matching: layer pair ", i, ":", j, " outside the ", student.size(), " student and ",
                teacher.size(), " teacher hidden states given");
    const auto hs = valid_rows(student[static_cast<size_t>(i)], valid);
    const auto ht = valid_rows(teacher[static_cast<size_t>(j)].detach(), valid).to(torch::kFloat32);
    const auto projected = proj_->ptr<torch::nn::LinearImpl>(k)->forward(hs.to(torch::kFloat32));
    const auto mse = (projected - ht).square().mean();
    total = total.defined() ? total + mse : mse;
  }
  return total / static_cast<double>(map_.size());
}

DistillLossParts distill_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                              const torch::Tensor& targets, const DistillLossOptions& o, HiddenProjectorImpl* projector,
                              const std::vector<torch::Tensor>& student_hidden,
                              const std::vector<torch::Tensor>& teacher_hidden) {
  DistillLossParts parts = distill_logit_loss(student_logits, teacher_logits, targets, o);
  if (o.hidden_weight > 0 && projector) {
    parts.hidden = projector->forward(student_hidden, teacher_hidden, targets != kIgnoreIndex);
    parts.total = parts.total + parts.hidden * o.hidden_weight;
  }
  return parts;
}

}  // namespace fedsplit
