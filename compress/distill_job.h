// The `distill` job of `fedsplit run` (run.mode = distill): a student decoder trained on the [data]
// corpus against a frozen teacher's logits (and optionally hidden states) with the loss of
// compress/distill_loss.h, through the train job's loop (checkpoints, exact resume, held-out eval,
// metrics). The student lands in <run.dir>/model (HF + tokenizer); summary.json compares teacher and
// student held-out loss and perplexity, their parameter counts and the held-out KL(teacher ‖ student)
// before and after.
//
// Students: student_init = scratch builds [model]'s architecture (or loads model.init);
// student_init = teacher takes the teacher's embeddings, final norm, head and `student_layers`
// evenly spaced blocks (first and last included), the usual half-depth initialisation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "compress/distill_loss.h"
#include "core/model/decoder.h"
#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

/// The [distill] section.
struct DistillOptions {
  /// The teacher: HF model directory or checkpoint.h5. Required.
  std::string teacher;
  /// Optional PEFT adapter directory applied to the teacher (LoRA/DoRA folded into its weights).
  std::string teacher_adapter;
  /// alpha, temperature, divergence and hidden_weight of the loss.
  DistillLossOptions loss;
  /// scratch ([model] keys or model.init describe the student) | teacher (cut from the teacher).
  std::string student_init = "scratch";
  /// Blocks the student keeps with student_init = teacher; 0 = half the teacher's, rounded up.
  int64_t student_layers = 0;
  /// Hidden-state pairs "student:teacher ..." (e.g. "0:1 1:3 2:5"); empty = evenly spaced.
  std::string layer_map;
};

/// Registers the [distill] keys.
void bind_distill_options(Recipe& recipe, DistillOptions& options);

/// The teacher of `options`: loaded, with its adapter (LoRA/DoRA merged), frozen, in eval mode.
/// ConfigError when distill.teacher is empty.
Decoder load_teacher(const DistillOptions& options);

/// `keep` block indices of 0 .. total-1, evenly spaced with the first and the last (keep = 1: the last).
std::vector<int64_t> evenly_spaced_layers(int64_t keep, int64_t total);

/// A student with the teacher's config but the blocks `layers` (teacher indices, in order), copying
/// embeddings, those blocks, final norm and head. ConfigError if the teacher holds parameters that a
/// plain decoder does not (an unmerged adapter).
Decoder student_from_teacher(const Decoder& teacher, const std::vector<int64_t>& layers);

/// Logits of `model` for `ids`, and with `hidden` every block's output [B, T, hidden] in order.
torch::Tensor forward_with_hidden(Decoder& model, const torch::Tensor& ids, std::vector<torch::Tensor>* hidden);

/// Mean over the tokens of `batches` of KL(p_teacher ‖ p_student) at temperature 1 (nats), no grad.
double evaluate_teacher_kl(Decoder& teacher, Decoder& student, const std::vector<Batch>& batches, torch::Device device);

/// Runs the job (see the file comment). `recipe_ini` as for run_lm_job.
TrainResult run_distill_job(const LmJobOptions& options, const DistillOptions& distill, const std::string& recipe_ini,
                            bool resume);

}  // namespace fedsplit
