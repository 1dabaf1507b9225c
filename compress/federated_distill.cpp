#include "compress/federated_distill.h"

#include <torch/torch.h>

#include "core/util/error.h"

namespace fedsplit {

LocalLossFn federated_distill_loss(const DistillOptions& options) {
  if (options.loss.hidden_weight > 0)
    throw ConfigError("distill.hidden_weight = " + std::to_string(options.loss.hidden_weight) +
                      ": federated distillation matches logits only (hidden-state projections would be per-client "
                      "state); set distill.hidden_weight = 0");
  if (options.student_init != "scratch")
    throw ConfigError("distill.student_init = " + options.student_init +
                      " does not apply to run.mode = federated: the student is the federated model (model.init)");
  Decoder teacher = load_teacher(options);
  const DistillLossOptions loss = options.loss;
  const std::string name = options.teacher;
  // mutable: the teacher moves to the batches' device on first use.
  return [teacher, loss, name](const torch::Tensor& logits, const torch::Tensor& ids,
                               const torch::Tensor& targets) mutable {
    if (teacher->options.vocab_size != logits.size(-1))
      throw ConfigError("distill.teacher " + name + " has a vocabulary of " + std::to_string(teacher->options.vocab_size) +
                        " tokens, the federated model " + std::to_string(logits.size(-1)) +
                        ": the teacher must read the same tokenizer");
    if (teacher->token_embedding().device() != ids.device()) teacher->to(ids.device());
    torch::Tensor teacher_logits;
    {
      torch::NoGradGuard no_grad;
      teacher_logits = teacher->forward(ids);
    }
    return distill_logit_loss(logits, teacher_logits, targets, loss).total;
  };
}

}  // namespace fedsplit
