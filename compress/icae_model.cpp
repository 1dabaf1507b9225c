#include "compress/icae_model.h"

#include <random>

#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/random.h"
#include "peft/lora.h"
#include "peft/peft_format.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

constexpr const char* kEncoderFile = "icae.safetensors";

// Switches the base's adapters on for the encoder pass and off again, whatever happens inside.
class EncoderScope {
 public:
  explicit EncoderScope(Decoder& base) : base_(base) { set_lora_enabled(base_, true); }
  ~EncoderScope() { set_lora_enabled(base_, false); }
  EncoderScope(const EncoderScope&) = delete;
  EncoderScope& operator=(const EncoderScope&) = delete;

 private:
  Decoder& base_;
};

// Rows of the base's token embedding for `count` token ids drawn from `seed`, as a fresh leaf.
torch::Tensor embeddings_of_random_tokens(const Decoder& base, int64_t count, uint64_t seed) {
  std::mt19937_64 rng(splitmix64(seed ^ 0x1CAEull));
  const auto vocab = static_cast<uint64_t>(base->options.vocab_size);
  std::vector<int64_t> ids(static_cast<size_t>(count));
  for (auto& id : ids) id = static_cast<int64_t>(uniform_below(rng, vocab));
  torch::NoGradGuard no_grad;
  return base->token_embedding().index_select(0, torch::tensor(ids).to(base->token_embedding().device())).clone();
}

}  // namespace

void check_icae_shape(const IcaeShape& shape, const Decoder& base) {
  if (shape.segment_tokens < 1) throw ConfigError("icae.segment_tokens must be at least 1");
  if (shape.memory_slots < 1) throw ConfigError("icae.memory_slots must be at least 1 (set icae.ratio <= icae.segment_tokens)");
  if (shape.segment_tokens + shape.memory_slots > base->options.max_position)
    throw ConfigError("icae.segment_tokens + memory slots = " + std::to_string(shape.segment_tokens + shape.memory_slots) +
                      " exceed the model's " + std::to_string(base->options.max_position) +
                      " positions: lower icae.segment_tokens");
}

IcaeModelImpl::IcaeModelImpl(Decoder base, const IcaeShape& shape, uint64_t seed) : base_(std::move(base)), shape_(shape) {
  check_icae_shape(shape_, base_);
  if (lora_modules(base_).empty()) throw ConfigError("ICAE's encoder needs LoRA adapters on the base ([peft] method = lora)");
  register_module("base", base_);
  const auto initial = embeddings_of_random_tokens(base_, shape_.memory_slots + 2, seed);
  memory_ = register_parameter("memory", initial.slice(0, 0, shape_.memory_slots).clone());
  ae_token_ = register_parameter("ae_token", initial[shape_.memory_slots].clone());
  lm_token_ = register_parameter("lm_token", initial[shape_.memory_slots + 1].clone());
  set_lora_enabled(base_, false);  // the decoder is the default; compress() switches the encoder on
}

torch::Tensor IcaeModelImpl::positioned(const torch::Tensor& embeddings, int64_t offset) const {
  const torch::Tensor table = base_->position_embedding();
  if (!table.defined()) return embeddings;
  return embeddings + table.slice(0, offset, offset + embeddings.size(1)).to(embeddings.scalar_type());
}

torch::Tensor IcaeModelImpl::compress_segments(const torch::Tensor& segments) {
  const int64_t rows = segments.size(0), length = segments.size(1), k = shape_.memory_slots;
  const torch::Tensor memory = positioned(memory_.unsqueeze(0).expand({rows, k, memory_.size(1)}), length);
  torch::Tensor h = torch::cat({base_->embed(segments, 0), memory.to(base_->token_embedding().scalar_type())}, 1);
  h = base_->run_layers(h, 0, base_->num_layers(), 0);
  return base_->final_norm(h.slice(1, length, length + k));
}

torch::Tensor IcaeModelImpl::compress(const torch::Tensor& context) {
  TORCH_CHECK(context.dim() == 2 && context.size(1) >= 1, "ICAE compress: context ids must be [B, n] with n >= 1, got ",
              context.sizes());
  EncoderScope encoder(base_);
  const int64_t rows = context.size(0), n = context.size(1), L = shape_.segment_tokens, k = shape_.memory_slots;
  const int64_t full = n / L, rest = n % L;
  std::vector<torch::Tensor> parts;
  if (full > 0) {
    // Every full segment of every row in one batch: [B * full, L] -> [B, full * k, hidden].
    const torch::Tensor segments = context.slice(1, 0, full * L).reshape({rows * full, L});
    parts.push_back(compress_segments(segments).reshape({rows, full * k, -1}));
  }
  if (rest > 0) parts.push_back(compress_segments(context.slice(1, full * L, n)));
  return parts.size() == 1 ? parts.front() : torch::cat(parts, 1);
}

torch::Tensor IcaeModelImpl::decode(const torch::Tensor& prefix, const torch::Tensor& ids) {
  const int64_t P = prefix.size(1);
  TORCH_CHECK(P >= 1, "ICAE decode: the prefix holds no slots");
  const auto dtype = base_->token_embedding().scalar_type();
  torch::Tensor h = positioned(prefix.to(dtype), 0);
  if (ids.size(1) > 0) h = torch::cat({h, base_->embed(ids, P)}, 1);
  TORCH_CHECK(h.size(1) <= base_->options.max_position, "ICAE decode: ", h.size(1), " positions exceed the model's ",
              base_->options.max_position);
  h = base_->run_layers(h, 0, base_->num_layers(), 0);
  return base_->head(h.slice(1, P - 1, h.size(1)));
}

torch::Tensor IcaeModelImpl::task_prefix(const torch::Tensor& slots, IcaeTask task) const {
  const torch::Tensor& token = task == IcaeTask::autoencode ? ae_token_ : lm_token_;
  return torch::cat({slots, token.to(slots.scalar_type()).view({1, 1, -1}).expand({slots.size(0), 1, slots.size(2)})}, 1);
}

torch::Tensor IcaeModelImpl::prompt_prefix(const torch::Tensor& slots, const std::vector<int64_t>& prompt) const {
  if (prompt.empty()) return slots;
  const torch::Tensor& table = base_->token_embedding();
  const auto embedded = table.index_select(0, torch::tensor(prompt, torch::kLong).to(table.device()));
  return torch::cat({slots, embedded.to(slots.scalar_type()).unsqueeze(0)}, 1);
}

torch::Tensor IcaeModelImpl::autoencode_loss(const torch::Tensor& context) {
  const auto prefix = task_prefix(compress(context), IcaeTask::autoencode);
  const auto logits = decode(prefix, context.slice(1, 0, context.size(1) - 1));
  return next_token_loss(logits, context);
}

torch::Tensor IcaeModelImpl::continuation_loss(const torch::Tensor& context, const torch::Tensor& continuation) {
  const auto prefix = task_prefix(compress(context), IcaeTask::language_model);
  const auto logits = decode(prefix, continuation.slice(1, 0, continuation.size(1) - 1));
  return next_token_loss(logits, continuation);
}

torch::Tensor IcaeModelImpl::answer_loss(const torch::Tensor& ids, const torch::Tensor& targets, int64_t context_tokens) {
  TORCH_CHECK(ids.size(1) == context_tokens + targets.size(1), "ICAE answer_loss: ids ", ids.sizes(), " do not hold ",
              context_tokens, " context columns and targets ", targets.sizes());
  torch::Tensor total = torch::zeros({}, torch::TensorOptions().device(ids.device()));
  const int64_t answer_tokens = targets.ne(-100).sum().item<int64_t>();
  if (answer_tokens == 0) return total;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const torch::Tensor context = ids[b].slice(0, 0, context_tokens), tail = ids[b].slice(0, context_tokens);
    const int64_t n = context.ne(-1).sum().item<int64_t>(), m = tail.ne(-1).sum().item<int64_t>();
    // Row j of decode() predicts the token after tail[j - 1]; targets[b][j] that after tail[j].
    const auto logits = decode(compress(context.slice(0, 0, n).unsqueeze(0)), tail.slice(0, 0, m).unsqueeze(0));
    const auto row_targets = targets[b].slice(0, 0, m - 1);
    total = total + torch::nn::functional::cross_entropy(
                        logits[0].slice(0, 1, m).to(torch::kFloat), row_targets,
                        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  }
  return total / static_cast<double>(answer_tokens);
}

void IcaeModelImpl::save_encoder(const std::string& dir) const {
  save_adapter(base_, dir);
  const TensorMap tensors{{"memory", memory_.detach().cpu()},
                          {"ae_token", ae_token_.detach().cpu()},
                          {"lm_token", lm_token_.detach().cpu()}};
  save_safetensors(dir + "/" + kEncoderFile, tensors,
                   {{"format", "fedsplit-icae-1"},
                    {"segment_tokens", std::to_string(shape_.segment_tokens)},
                    {"memory_slots", std::to_string(shape_.memory_slots)}});
}

IcaeModel attach_icae_encoder(Decoder base, const std::string& encoder_dir) {
  const std::string path = encoder_dir + "/" + kEncoderFile;
  if (!path_exists(path))
    throw IoError(path + " not found: --encoder must be the encoder directory of an ICAE run (<run.dir>/encoder)");
  const auto meta = load_safetensors_metadata(path);
  auto number = [&](const char* key) {
    const auto it = meta.find(key);
    if (it == meta.end()) throw FormatError(path + ": metadata lacks '" + key + "'");
    return std::stoll(it->second);
  };
  const IcaeShape shape{number("segment_tokens"), number("memory_slots")};
  load_adapter(base, encoder_dir);
  IcaeModel model(base, shape, 0);
  const TensorMap tensors = load_safetensors(path);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters(/*recurse=*/false)) {
    const auto it = tensors.find(item.key());
    if (it == tensors.end()) throw FormatError(path + ": tensor '" + item.key() + "' is missing");
    if (it->second.sizes() != item.value().sizes())
      throw FormatError(path + ": tensor '" + item.key() + "' has shape " + std::string(c10::str(it->second.sizes())) +
                        ", the base model needs " + std::string(c10::str(item.value().sizes())) +
                        ": was the encoder trained on another base?");
    item.value().copy_(it->second);
  }
  return model;
}

IcaeModel load_icae(const std::string& base_path, const std::string& encoder_dir) {
  IcaeModel model = attach_icae_encoder(load_any_model(base_path), encoder_dir);
  model->eval();
  return model;
}

}  // namespace fedsplit
