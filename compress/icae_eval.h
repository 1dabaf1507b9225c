// How well ICAE memory slots stand in for their context: greedy reconstruction (BLEU-4, token and
// exact match against the context) and the perplexity of a continuation read after the slots,
// after the full context, and after nothing, all through the same frozen decoder.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "compress/icae_examples.h"
#include "compress/icae_model.h"

namespace fedsplit {

/// Greedy decoding from the frozen decoder: `max_tokens` tokens after `prefix` [1, P, hidden]
/// (stops early at `eos` when eos >= 0). Each token reruns the whole sequence (no KV cache): fine
/// for evaluation-sized passages; the inference engine (infer/) is the fast path.
std::vector<int64_t> icae_greedy(IcaeModel& model, const torch::Tensor& prefix, int64_t max_tokens, int64_t eos = -1);

/// The reconstruction of `context` (ids on the model's device): slots, [AE], then as many
/// greedy tokens as the context holds.
std::vector<int64_t> icae_reconstruct(IcaeModel& model, const std::vector<int64_t>& context);

struct IcaeReconstructionScore {
  int64_t passages = 0;
  int64_t context_tokens = 0;  ///< tokens per passage
  double bleu4 = 0;
  double token_match = 0;      ///< fraction of context positions reproduced
  double exact_match = 0;      ///< fraction of passages reproduced entirely
  /// Teacher-forced loss (nats per token) of tokens 2..n after the slots and [AE], and after
  /// nothing (the decoder as a plain language model): what the slots add over no context.
  double loss_with_slots = 0;
  double loss_no_context = 0;
};

/// Reconstructs every passage (greedy) and scores it against itself.
IcaeReconstructionScore score_reconstruction(IcaeModel& model, const std::vector<std::vector<int64_t>>& passages);

/// Mean loss (nats per token) of continuation tokens 2..m, read by the frozen decoder after three
/// kinds of context; token 1 is left out because the no-context reading has nothing to predict it from.
struct IcaeContinuationScore {
  int64_t passages = 0;
  double with_slots = 0;    ///< slots of the context, [LM], then the continuation
  double full_context = 0;  ///< the context's tokens, then the continuation
  double no_context = 0;    ///< the continuation alone
};

/// Scores continuations: each passage is context tokens followed by continuation tokens, split at
/// `context_tokens`.
IcaeContinuationScore score_continuations(IcaeModel& model, const std::vector<std::vector<int64_t>>& passages,
                                          int64_t context_tokens);

/// Held-out prompt-with-context answers: the greedy answer after slots and prompt against the
/// reference, and the answer's loss (nats per token) read after the slots and prompt, after the
/// context's tokens and the prompt (the plain decoder), and after the prompt alone.
struct IcaeAnswerScore {
  int64_t examples = 0;
  double exact_match = 0;   ///< fraction of answers generated exactly (up to EOS)
  double with_slots = 0;
  double full_context = 0;
  double no_context = 0;    ///< over examples with a prompt (without one, nothing precedes the answer); NaN if none
};

/// Scores `examples` (IcaeExampleStream's tokenized ones); `eos` ends a generated answer (-1: none).
IcaeAnswerScore score_answers(IcaeModel& model, const std::vector<TokenizedIcaeExample>& examples, int64_t eos);

/// Consecutive, non-overlapping passages of `length` tokens from the token stream `stream`, at most `count`.
std::vector<std::vector<int64_t>> cut_passages(const std::vector<int64_t>& stream, int64_t length, int64_t count);

}  // namespace fedsplit
