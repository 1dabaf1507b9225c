// Federated distillation: in run.mode = federated with a [distill] teacher, every client trains
// its local steps on the distillation loss (1-α)·CE + α·τ²·KL against the teacher's logits for the
// same batch instead of on the labels alone. Each rank loads the teacher once; it never travels.
// Logits only: hidden-state projections would be per-client state that FedAvg cannot average.
#pragma once
#include "compress/distill_job.h"
#include "federated/local_training.h"

namespace fedsplit {

/// The clients' loss for `options` (teacher loaded now, moved to the batches' device at first use).
/// ConfigError naming the key for distill.hidden_weight > 0 or distill.student_init = teacher (the
/// federated model is the student), and at first use for a teacher whose vocabulary differs.
LocalLossFn federated_distill_loss(const DistillOptions& options);

}  // namespace fedsplit
