#include "peft/method.h"

#include "core/config/recipe.h"
#include "core/util/error.h"
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

}  // namespace

LoraOptions lora_options(const PeftOptions& o) {
  LoraOptions lora;
  lora.r = o.r;
  lora.alpha = o.alpha;
  lora.dropout = o.dropout;
  lora.rslora = o.rslora;
  lora.target_modules = split_list(o.target_modules);
  lora.rank_pattern = parse_patterns<int64_t>(o.rank_pattern, "peft.rank_pattern");
  lora.alpha_pattern = parse_patterns<double>(o.alpha_pattern, "peft.alpha_pattern");
  return lora;
}

void bind_peft_options(Recipe& r, PeftOptions& o) {
  r.add_choice("peft.method", &o.method, {"none", "lora"}, "parameter-efficient method (none = full fine-tuning)");
  r.add("peft.r", &o.r, "LoRA rank", 1, 65536);
  r.add("peft.alpha", &o.alpha, "LoRA alpha: the update is scaled by alpha / r", 1e-9, 1e9);
  r.add("peft.dropout", &o.dropout, "dropout on the LoRA path's input while training", 0.0, 0.99);
  r.add("peft.rslora", &o.rslora, "rank-stabilised LoRA: scale alpha / sqrt(r)");
  r.add("peft.target_modules", &o.target_modules, "projections to adapt, by HF module name (q_proj v_proj, c_attn, ...)");
  r.add("peft.rank_pattern", &o.rank_pattern, "per-module ranks as regex=r items (e.g. 'q_proj=16 layers\\.0\\..*=4')");
  r.add("peft.alpha_pattern", &o.alpha_pattern, "per-module alphas as regex=alpha items");
}

void apply_peft(Decoder& model, const PeftOptions& o, uint64_t seed) {
  if (o.method == "lora") apply_lora(model, lora_options(o), seed);
}

std::optional<ModelAdaptation> peft_adaptation(const PeftOptions& o) {
  if (o.method == "none") return std::nullopt;
  lora_options(o);  // parse the pattern keys now
  ModelAdaptation adaptation;
  adaptation.method = o.method;
  adaptation.apply = [o](Decoder& model, uint64_t seed) { apply_peft(model, o, seed); };
  adaptation.save = [](const Decoder& model, const std::string& dir) { save_adapter(model, dir); };
  return adaptation;
}

}  // namespace fedsplit
