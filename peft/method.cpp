#include "peft/method.h"

#include <nlohmann/json.hpp>

#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "peft/adapter_dir.h"
#include "peft/peft_format.h"

namespace fedsplit {
namespace {

// Parses "key=value" list items of a pattern key into a map, naming the recipe key on errors.
template <typename T>
std::map<std::string, T> parse_patterns(const std::string& text, const std::string& key) {
  std::map<std::string, T> out;
  for (const auto& item : split_list(text)) {
    const auto eq = item.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw ConfigError(key + ": '" + item + "' is not of the form regex=value (e.g. q_proj=16)");
    const std::string value = item.substr(eq + 1);
    try {
      size_t used = 0;
      const double number = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
      out[item.substr(0, eq)] = static_cast<T>(number);
    } catch (const std::exception&) {
      throw ConfigError(key + ": '" + value + "' in '" + item + "' is not a number");
    }
  }
  return out;
}

bool is_lora(const std::string& method) { return method == "lora" || method == "dora"; }

void check(const PeftOptions& o) {
  if (o.base_bits != 0 && o.base_bits != 8 && o.base_bits != 4)
    throw ConfigError("peft.base_bits = " + std::to_string(o.base_bits) + ": use 0 (fp32 base), 8 or 4");
  if (o.base_bits != 0 && !is_lora(o.method))
    throw ConfigError("peft.base_bits applies to peft.method = lora or dora (got " + o.method +
                      "): set peft.base_bits = 0");
  if (is_lora(o.method)) lora_options(o);  // parses the pattern keys
}

}  // namespace

LoraOptions lora_options(const PeftOptions& o) {
  LoraOptions lora;
  lora.r = o.r;
  lora.alpha = o.alpha;
  lora.dropout = o.dropout;
  lora.rslora = o.rslora;
  lora.use_dora = o.method == "dora";
  lora.target_modules = split_list(o.target_modules);
  lora.rank_pattern = parse_patterns<int64_t>(o.rank_pattern, "peft.rank_pattern");
  lora.alpha_pattern = parse_patterns<double>(o.alpha_pattern, "peft.alpha_pattern");
  return lora;
}

void bind_peft_options(Recipe& r, PeftOptions& o) {
  r.add_choice("peft.method", &o.method, {"none", "lora", "dora", "prefix", "bottleneck"},
               "parameter-efficient method (none = full fine-tuning)");
  r.add("peft.r", &o.r, "lora/dora: rank", 1, 65536);
  r.add("peft.alpha", &o.alpha, "lora/dora: the update is scaled by alpha / r", 1e-9, 1e9);
  r.add("peft.dropout", &o.dropout, "lora/dora: dropout on the adapter path's input while training", 0.0, 0.99);
  r.add("peft.rslora", &o.rslora, "lora/dora: rank-stabilised scaling alpha / sqrt(r)");
  r.add("peft.target_modules", &o.target_modules, "lora/dora: projections to adapt, by HF module name (q_proj v_proj, c_attn, ...)");
  r.add("peft.rank_pattern", &o.rank_pattern, "lora/dora: per-module ranks as regex=r items (e.g. 'q_proj=16 layers\\.0\\..*=4')");
  r.add("peft.alpha_pattern", &o.alpha_pattern, "lora/dora: per-module alphas as regex=alpha items");
  r.add("peft.base_bits", &o.base_bits, "lora/dora: hold the frozen projections quantized to 8 or 4 bits (0 = fp32)", 0, 8);
  r.add("peft.base_group_size", &o.base_group_size, "lora/dora: input features per quantization scale (must divide them)", 1, 1 << 20);
  r.add("peft.num_virtual_tokens", &o.prefix.num_virtual_tokens, "prefix: key/value pairs per layer", 1, 1 << 16);
  r.add("peft.bottleneck_size", &o.bottleneck.size, "bottleneck: adapter width", 1, 1 << 20);
  r.add_choice("peft.placement", &o.bottleneck.placement, {"houlsby", "pfeiffer"},
               "bottleneck: after attention and MLP (houlsby) or after the MLP only (pfeiffer)");
  r.add_choice("peft.activation", &o.bottleneck.activation, {"relu", "gelu", "silu"}, "bottleneck: nonlinearity");
  r.add("peft.adapter_scale", &o.bottleneck.scale, "bottleneck: factor on the adapter's output", -1e6, 1e6);
}

std::optional<ModelAdaptation> peft_adaptation(const PeftOptions& o) {
  if (o.method == "none") return std::nullopt;
  check(o);
  ModelAdaptation a;
  a.method = o.method;
  if (o.base_bits > 0) {
    a.method += "-int" + std::to_string(o.base_bits) + "-base";
    a.prepare_base = [o](Decoder& model) {
      quantize_frozen_base(model, BaseQuantOptions{static_cast<int>(o.base_bits), o.base_group_size});
    };
  }
  if (is_lora(o.method)) {
    a.apply = [o](Decoder& model, uint64_t seed) { apply_lora(model, lora_options(o), seed); };
    a.save = [](const Decoder& model, const std::string& dir) { save_adapter(model, dir); };
    a.mergeable = true;
  } else if (o.method == "prefix") {
    a.apply = [o](Decoder& model, uint64_t seed) { apply_prefix_tuning(model, o.prefix, seed); };
    a.save = [](const Decoder& model, const std::string& dir) { save_prefix_adapter(model, dir); };
  } else {
    a.apply = [o](Decoder& model, uint64_t seed) { apply_bottleneck(model, o.bottleneck, seed); };
    a.save = [](const Decoder& model, const std::string& dir) { save_bottleneck_adapter(model, dir); };
  }
  return a;
}

void load_peft_adapter(Decoder& model, const std::string& dir) {
  const std::string path = adapter_dir::config_path(dir);
  const std::string type = adapter_dir::read_config(path, "")["peft_type"];
  if (type == "LORA") return load_adapter(model, dir);
  if (type == "PREFIX_TUNING") return load_prefix_adapter(model, dir);
  if (type == "BOTTLENECK") return load_bottleneck_adapter(model, dir);
  throw ConfigError(path + ": peft_type " + type + " is not supported (fedsplit loads LORA, PREFIX_TUNING, BOTTLENECK)");
}

}  // namespace fedsplit
