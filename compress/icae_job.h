// The ICAE jobs of `fedsplit run` (compress/icae_model.h explains the model):
//
//   run.mode = icae-pretrain   windows of data.seq_len + 1 tokens from the [data] corpora: the first
//                              icae.context_tokens are compressed; a row autoencodes them (with
//                              probability icae.ae_fraction, drawn from the row's tokens so that a
//                              resumed run draws the same) or continues the window after them.
//   run.mode = icae-finetune   prompt-with-context examples (icae.examples: a JSONL file or the
//                              built-in sotu-qa): context compressed, then prompt, then the answer,
//                              the loss on the answer only.
//
// Both start from model.init (the frozen base), train the LoRA of [peft] (or continue icae.encoder)
// with the train job's loop (checkpoints, exact resume, held-out loss = the job's loss), save the
// encoder to <run.dir>/encoder and write <run.dir>/summary.json with the evaluation of
// compress/icae_eval.h on held-out data.
#pragma once
#include <cstdint>
#include <string>

#include "peft/method.h"
#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

/// The [icae] section.
struct IcaeOptions {
  int64_t segment_tokens = 128;  ///< L: tokens per compressed segment
  int64_t ratio = 4;             ///< L / k: memory slots per segment k = segment_tokens / ratio
  int64_t context_tokens = 0;    ///< compressed tokens per example (0 = segment_tokens); more = several segments
  double ae_fraction = 0.5;      ///< pretraining: share of rows that autoencode (the rest continue)
  std::string encoder;           ///< encoder directory to start from (an earlier ICAE run's <run.dir>/encoder)
  std::string examples = "sotu-qa";  ///< fine-tuning data: a JSONL file or sotu-qa
  int64_t tail_tokens = 64;      ///< fine-tuning: prompt + answer tokens at most
  int64_t passage_words = 120;   ///< sotu-qa: words of context per example
  std::string eval_lengths;      ///< reconstruction lengths to evaluate (empty: L/2, L, 2L)
  int64_t eval_passages = 16;    ///< held-out passages per evaluated length
};

/// Registers the [icae] keys.
void bind_icae_options(Recipe& recipe, IcaeOptions& options);

/// Runs run.mode = icae-pretrain or icae-finetune (options.run.mode says which); returns the
/// training result (steps < train.steps when run.stop_after ended it early).
TrainResult run_icae_job(const LmJobOptions& options, const IcaeOptions& icae, const PeftOptions& peft,
                         const std::string& recipe_ini, bool resume);

}  // namespace fedsplit
