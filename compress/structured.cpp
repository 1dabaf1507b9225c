#include "compress/structured.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "compress/calibration.h"
#include "compress/prune.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

void check_fraction(double value, const std::string& key) {
  if (!(value >= 0.0 && value < 1.0))
    throw ConfigError(key + " = " + std::to_string(value) + ": expected a fraction in [0, 1)");
}

// Column scores of a weight [out, in]: ||W[:, j]|| times the input norm of j when given.
torch::Tensor column_scores(const torch::Tensor& weight, const torch::Tensor& input_norms) {
  auto scores = weight.detach().to(torch::kFloat32).norm(2, {0});
  if (input_norms.defined()) scores = scores * input_norms.to(scores.device());
  return scores;
}

// Sorted indices of the `keep` highest scores (ties: the lower index).
torch::Tensor top_sorted(const torch::Tensor& scores, int64_t keep) {
  const auto order = std::get<1>(scores.cpu().sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::get<0>(order.slice(0, 0, keep).sort());
}

// Query heads kept in one block, in order, groups contiguous as grouped-query attention needs.
torch::Tensor kept_heads(const torch::Tensor& head_scores, int64_t kv_heads, int64_t kept_per_group) {
  const int64_t per_group = head_scores.size(0) / kv_heads;
  std::vector<torch::Tensor> kept;
  for (int64_t g = 0; g < kv_heads; ++g)
    kept.push_back(top_sorted(head_scores.slice(0, g * per_group, (g + 1) * per_group), kept_per_group) + g * per_group);
  return torch::cat(kept);
}

// The rows (dim 0) or columns (dim 1) of `index` of a projection's weight, and of its bias for rows.
void copy_projection(const ProjectionImpl& from, ProjectionImpl& to, const torch::Tensor& index, int64_t dim) {
  torch::NoGradGuard no_grad;
  if (!index.defined()) {
    to.weight.copy_(from.weight);
    if (from.bias.defined()) to.bias.copy_(from.bias);
    return;
  }
  const auto i = index.to(from.weight.device());
  to.weight.copy_(from.weight.index_select(dim, i));
  if (from.bias.defined()) to.bias.copy_(dim == 0 ? from.bias.index_select(0, i) : from.bias);
}

// Per-dimension indices of whole heads: head h covers rows h*D .. h*D+D-1.
torch::Tensor head_rows(const torch::Tensor& heads, int64_t head_dim) {
  return (heads.unsqueeze(1) * head_dim + torch::arange(head_dim).unsqueeze(0)).reshape({-1});
}

}  // namespace

std::pair<int64_t, int64_t> structured_sizes(const DecoderConfig& config, const StructuredPruneOptions& options) {
  check_fraction(options.head_fraction, "prune.head_fraction");
  check_fraction(options.channel_fraction, "prune.channel_fraction");
  if (config.family == ModelFamily::gpt2)
    throw ConfigError("structured pruning (prune.head_fraction, prune.channel_fraction) needs separate q/k/v "
                      "projections: it supports llama and qwen2 models, not gpt2");
  const int64_t per_group = config.num_heads / config.num_kv_heads;
  const int64_t heads_kept =
      std::max<int64_t>(1, per_group - static_cast<int64_t>(std::llround(options.head_fraction * per_group)));
  const int64_t width = config.intermediate_size;
  int64_t channels = width - static_cast<int64_t>(std::llround(options.channel_fraction * width));
  if (width % 32 == 0) channels = std::max<int64_t>(32, (channels + 16) / 32 * 32);
  return {heads_kept, std::max<int64_t>(1, channels)};
}

Decoder prune_structured(Decoder& model, const std::vector<torch::Tensor>& calibration,
                         const StructuredPruneOptions& options) {
  const auto& c = model->options;
  const auto [heads_per_group, channels] = structured_sizes(c, options);
  if (options.method != "magnitude" && options.method != "wanda")
    throw ConfigError("prune.method = " + options.method + ": expected magnitude or wanda");
  const int64_t head_dim = c.resolved_head_dim();

  // Scores of every block's heads and channels, from the original model's calibration pass.
  std::vector<torch::Tensor> head_keep(c.num_layers), channel_keep(c.num_layers);
  auto choose = [&](int64_t layer, const torch::Tensor& o_norms, const torch::Tensor& down_norms) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    const auto o_scores = column_scores(projection_at(model, p + "self_attn.o_proj").weight, o_norms);
    const auto head_scores = o_scores.pow(2).view({c.num_heads, head_dim}).sum(1).sqrt();
    head_keep[layer] = kept_heads(head_scores, c.num_kv_heads, heads_per_group);
    channel_keep[layer] = top_sorted(column_scores(projection_at(model, p + "mlp.down_proj").weight, down_norms), channels);
  };
  if (options.method == "magnitude") {
    for (int64_t l = 0; l < c.num_layers; ++l) choose(l, {}, {});
  } else {
    if (calibration.empty())
      throw ConfigError("prune.method = wanda needs calibration data: set prune.calibration_batches > 0");
    std::map<std::string, InputNormCollector> norms;
    calibrate_blockwise(
        model, calibration,
        [&](const std::string& path, const torch::Tensor& x) {
          if (path.find("o_proj") == std::string::npos && path.find("down_proj") == std::string::npos) return;
          auto it = norms.find(path);
          if (it == norms.end()) it = norms.emplace(path, InputNormCollector(x.size(-1))).first;
          it->second.add_batch(x);
        },
        [&](int64_t layer) {
          const std::string p = "layers." + std::to_string(layer) + ".";
          choose(layer, norms.at(p + "self_attn.o_proj").norms(), norms.at(p + "mlp.down_proj").norms());
        });
  }

  DecoderConfig small = c;
  small.head_dim = head_dim;
  small.num_heads = heads_per_group * c.num_kv_heads;
  small.intermediate_size = channels;
  Decoder out(small, /*init=*/false);
  out->to(model->token_embedding().device());
  torch::NoGradGuard no_grad;
  // Everything outside the blocks' projections has the same shape: copied by name.
  auto source = model->named_parameters();
  for (auto& item : out->named_parameters()) {
    if (item.key().find("_proj.") != std::string::npos) continue;
    item.value().copy_(source[item.key()]);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto from = [&](const std::string& n) -> ProjectionImpl& { return projection_at(model, p + n); };
    auto to = [&](const std::string& n) -> ProjectionImpl& { return projection_at(out, p + n); };
    const auto rows = head_rows(head_keep[l], head_dim);
    copy_projection(from("self_attn.q_proj"), to("self_attn.q_proj"), rows, 0);
    copy_projection(from("self_attn.k_proj"), to("self_attn.k_proj"), {}, 0);
    copy_projection(from("self_attn.v_proj"), to("self_attn.v_proj"), {}, 0);
    copy_projection(from("self_attn.o_proj"), to("self_attn.o_proj"), rows, 1);
    if (c.gated_mlp) copy_projection(from("mlp.gate_proj"), to("mlp.gate_proj"), channel_keep[l], 0);
    copy_projection(from("mlp.up_proj"), to("mlp.up_proj"), channel_keep[l], 0);
    copy_projection(from("mlp.down_proj"), to("mlp.down_proj"), channel_keep[l], 1);
  }
  return out;
}

}  // namespace fedsplit
