#include "compress/icae_eval.h"

#include <cmath>

#include "compress/icae_metrics.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

torch::Tensor row_tensor(const std::vector<int64_t>& ids, torch::Device device) {
  return torch::tensor(ids, torch::kLong).unsqueeze(0).to(device);
}

torch::Device device_of(IcaeModel& model) { return model->memory().device(); }

// Summed cross-entropy of logits [T, V] against targets [T].
double summed_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.to(torch::kFloat), targets,
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
      .item<double>();
}

}  // namespace

std::vector<int64_t> icae_greedy(IcaeModel& model, const torch::Tensor& prefix, int64_t max_tokens, int64_t eos) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> out;
  const torch::Device device = prefix.device();
  while (static_cast<int64_t>(out.size()) < max_tokens) {
    const torch::Tensor ids = out.empty() ? torch::empty({1, 0}, torch::TensorOptions(torch::kLong).device(device))
                                          : row_tensor(out, device);
    const int64_t next = model->decode(prefix, ids)[0][-1].argmax().item<int64_t>();
    if (next == eos) break;
    out.push_back(next);
  }
  return out;
}

std::vector<int64_t> icae_reconstruct(IcaeModel& model, const std::vector<int64_t>& context) {
  torch::NoGradGuard no_grad;
  const auto slots = model->compress(row_tensor(context, device_of(model)));
  return icae_greedy(model, model->task_prefix(slots, IcaeTask::autoencode), static_cast<int64_t>(context.size()));
}

IcaeReconstructionScore score_reconstruction(IcaeModel& model, const std::vector<std::vector<int64_t>>& passages) {
  if (passages.empty()) throw DataError("no held-out passages to reconstruct: raise data.val_fraction");
  std::vector<std::vector<int64_t>> reconstructions;
  double slots_sum = 0, none_sum = 0;
  int64_t tokens = 0;
  for (const auto& p : passages) {
    reconstructions.push_back(icae_reconstruct(model, p));
    torch::NoGradGuard no_grad;
    const int64_t n = static_cast<int64_t>(p.size());
    if (n < 2) continue;
    const torch::Tensor ids = row_tensor(p, device_of(model)), scored = ids[0].slice(0, 1);
    const auto prefix = model->task_prefix(model->compress(ids), IcaeTask::autoencode);
    slots_sum += summed_loss(model->decode(prefix, ids.slice(1, 0, n - 1))[0].slice(0, 1), scored);
    none_sum += summed_loss(model->base()->forward(ids.slice(1, 0, n - 1), 0)[0], scored);
    tokens += n - 1;
  }
  IcaeReconstructionScore score;
  if (tokens > 0) {
    score.loss_with_slots = slots_sum / tokens;
    score.loss_no_context = none_sum / tokens;
  }
  score.passages = static_cast<int64_t>(passages.size());
  score.context_tokens = static_cast<int64_t>(passages.front().size());
  score.bleu4 = corpus_bleu4(reconstructions, passages);
  score.token_match = token_match_rate(reconstructions, passages);
  score.exact_match = exact_match_rate(reconstructions, passages);
  return score;
}

IcaeContinuationScore score_continuations(IcaeModel& model, const std::vector<std::vector<int64_t>>& passages,
                                          int64_t context_tokens) {
  torch::NoGradGuard no_grad;
  const torch::Device device = device_of(model);
  IcaeContinuationScore score;
  double slots_sum = 0, full_sum = 0, none_sum = 0;
  int64_t tokens = 0;
  for (const auto& passage : passages) {
    const int64_t total = static_cast<int64_t>(passage.size());
    if (total < context_tokens + 2) throw DataError("a passage of " + std::to_string(total) +
                                                    " tokens leaves no continuation after " +
                                                    std::to_string(context_tokens) + " context tokens");
    const torch::Tensor ids = row_tensor(passage, device);
    const torch::Tensor context = ids.slice(1, 0, context_tokens), continuation = ids.slice(1, context_tokens);
    const int64_t m = continuation.size(1);
    const torch::Tensor scored = continuation[0].slice(0, 1);  // continuation tokens 2..m

    // decode() row j predicts the token after continuation[j - 1]: rows 1..m-1 predict tokens 2..m.
    const auto prefix = model->task_prefix(model->compress(context), IcaeTask::language_model);
    slots_sum += summed_loss(model->decode(prefix, continuation.slice(1, 0, m - 1))[0].slice(0, 1), scored);
    // The plain decoder (adapters off) over the context's tokens and the continuation.
    const auto full_logits = model->base()->forward(ids.slice(1, 0, total - 1), 0);
    full_sum += summed_loss(full_logits[0].slice(0, context_tokens, total - 1), scored);
    const auto none_logits = model->base()->forward(continuation.slice(1, 0, m - 1), 0);
    none_sum += summed_loss(none_logits[0], scored);
    tokens += m - 1;
  }
  score.passages = static_cast<int64_t>(passages.size());
  if (tokens == 0) throw DataError("no held-out continuations to score: raise data.val_fraction");
  score.with_slots = slots_sum / tokens;
  score.full_context = full_sum / tokens;
  score.no_context = none_sum / tokens;
  return score;
}

IcaeAnswerScore score_answers(IcaeModel& model, const std::vector<TokenizedIcaeExample>& examples, int64_t eos) {
  if (examples.empty()) throw DataError("no held-out examples to evaluate: raise data.val_fraction");
  torch::NoGradGuard no_grad;
  const torch::Device device = device_of(model);
  int64_t correct = 0, answer_tokens = 0, prompted_tokens = 0;
  double slots_sum = 0, full_sum = 0, none_sum = 0;
  for (const auto& ex : examples) {
    const std::vector<int64_t> tail = ex.tail();
    const int64_t n = static_cast<int64_t>(ex.context.size()), p = static_cast<int64_t>(ex.prompt.size()),
                  m = static_cast<int64_t>(tail.size());
    const torch::Tensor slots = model->compress(row_tensor(ex.context, device));
    const torch::Tensor answer = row_tensor(ex.answer, device)[0], tail_ids = row_tensor(tail, device);
    // In each reading, the rows that see the tail's tokens p-1 .. m-2 predict the answer.
    slots_sum += summed_loss(model->decode(slots, tail_ids.slice(1, 0, m - 1))[0].slice(0, p, m), answer);
    std::vector<int64_t> full = ex.context;
    full.insert(full.end(), tail.begin(), tail.end() - 1);
    full_sum += summed_loss(model->base()->forward(row_tensor(full, device), 0)[0].slice(0, n + p - 1, n + m - 1), answer);
    if (p > 0) {
      none_sum += summed_loss(model->base()->forward(tail_ids.slice(1, 0, m - 1), 0)[0].slice(0, p - 1, m - 1), answer);
      prompted_tokens += static_cast<int64_t>(ex.answer.size());
    }
    std::vector<int64_t> expected(ex.answer);
    if (!expected.empty() && expected.back() == eos) expected.pop_back();
    const int64_t budget = static_cast<int64_t>(expected.size()) + (eos >= 0 ? 1 : 0);
    correct += icae_greedy(model, model->prompt_prefix(slots, ex.prompt), budget, eos) == expected ? 1 : 0;
    answer_tokens += static_cast<int64_t>(ex.answer.size());
  }
  IcaeAnswerScore score;
  score.examples = static_cast<int64_t>(examples.size());
  score.exact_match = static_cast<double>(correct) / score.examples;
  score.with_slots = slots_sum / answer_tokens;
  score.full_context = full_sum / answer_tokens;
  score.no_context = prompted_tokens > 0 ? none_sum / prompted_tokens : std::nan("");
  return score;
}

std::vector<std::vector<int64_t>> cut_passages(const std::vector<int64_t>& stream, int64_t length, int64_t count) {
  std::vector<std::vector<int64_t>> out;
  for (size_t start = 0; start + static_cast<size_t>(length) <= stream.size() && static_cast<int64_t>(out.size()) < count;
       start += static_cast<size_t>(length))
    out.emplace_back(stream.begin() + static_cast<std::ptrdiff_t>(start),
                     stream.begin() + static_cast<std::ptrdiff_t>(start + static_cast<size_t>(length)));
  return out;
}

}  // namespace fedsplit
