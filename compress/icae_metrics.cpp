#include "compress/icae_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

namespace fedsplit {
namespace {

using Seqs = std::vector<std::vector<int64_t>>;

void check_sizes(const Seqs& hyps, const Seqs& refs, const char* what) {
  if (hyps.size() != refs.size())
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(hyps.size()) + " hypotheses but " +
                                std::to_string(refs.size()) + " references: pass one hypothesis per reference");
}

// Occurrences of each n-gram of `seq`.
std::map<std::vector<int64_t>, int64_t> ngram_counts(const std::vector<int64_t>& seq, size_t n) {
  std::map<std::vector<int64_t>, int64_t> counts;
  for (size_t i = 0; i + n <= seq.size(); ++i) ++counts[std::vector<int64_t>(seq.begin() + i, seq.begin() + i + n)];
  return counts;
}

}  // namespace

double corpus_bleu4(const Seqs& hypotheses, const Seqs& references) {
  check_sizes(hypotheses, references, "corpus_bleu4");
  int64_t matches[4] = {0, 0, 0, 0}, totals[4] = {0, 0, 0, 0};
  int64_t c = 0, r = 0;
  for (size_t k = 0; k < hypotheses.size(); ++k) {
    const auto& hyp = hypotheses[k];
    const auto& ref = references[k];
    c += static_cast<int64_t>(hyp.size());
    r += static_cast<int64_t>(ref.size());
    for (size_t n = 1; n <= 4; ++n) {
      const auto ref_counts = ngram_counts(ref, n);
      for (const auto& [gram, count] : ngram_counts(hyp, n)) {
        totals[n - 1] += count;
        // Clipping: a hypothesis n-gram matches at most as often as the reference holds it.
        const auto it = ref_counts.find(gram);
        if (it != ref_counts.end()) matches[n - 1] += std::min(count, it->second);
      }
    }
  }
  if (c == 0) return 0.0;
  double log_sum = 0.0;
  for (int n = 0; n < 4; ++n) {
    if (matches[n] == 0) return 0.0;  // also covers totals[n] == 0
    log_sum += std::log(static_cast<double>(matches[n]) / static_cast<double>(totals[n]));
  }
  const double brevity = c < r ? std::exp(1.0 - static_cast<double>(r) / static_cast<double>(c)) : 1.0;
  return brevity * std::exp(log_sum / 4.0);
}

double token_match_rate(const Seqs& hypotheses, const Seqs& references) {
  check_sizes(hypotheses, references, "token_match_rate");
  int64_t same = 0, total = 0;
  for (size_t k = 0; k < references.size(); ++k) {
    const auto& hyp = hypotheses[k];
    const auto& ref = references[k];
    total += static_cast<int64_t>(ref.size());
    const size_t overlap = std::min(hyp.size(), ref.size());
    for (size_t i = 0; i < overlap; ++i) same += hyp[i] == ref[i];
  }
  return total == 0 ? 0.0 : static_cast<double>(same) / static_cast<double>(total);
}

double exact_match_rate(const Seqs& hypotheses, const Seqs& references) {
  check_sizes(hypotheses, references, "exact_match_rate");
  if (references.empty()) return 0.0;
  int64_t same = 0;
  for (size_t k = 0; k < references.size(); ++k) same += hypotheses[k] == references[k];
  return static_cast<double>(same) / static_cast<double>(references.size());
}

}  // namespace fedsplit
