#include "compress/icae_examples.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/hash.h"
#include "core/util/random.h"

namespace fedsplit {
namespace {

using nlohmann::json;

const char* const kExpected = " (expected {\"context\", \"prompt\", \"answer\"[, \"group\"]})";

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

// The string field `key` of `j`; FormatError at `where` when it is missing, not a string, or empty
// where it must not be.
std::string string_field(const json& j, const char* key, bool allow_empty, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end()) throw FormatError(where + ": field \"" + key + "\" is missing" + kExpected);
  if (!it->is_string()) throw FormatError(where + ": field \"" + key + "\" is not a string" + kExpected);
  std::string value = it->get<std::string>();
  if (!allow_empty && value.empty()) throw FormatError(where + ": field \"" + key + "\" is empty" + kExpected);
  return value;
}

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(std::move(w));
  return words;
}

std::string join_words(const std::vector<std::string>& words, size_t first, size_t count) {
  std::string out;
  for (size_t i = first; i < first + count; ++i) {
    if (i > first) out += ' ';
    out += words[i];
  }
  return out;
}

const std::string& meta_value(const Document& doc, const std::string& key, size_t index) {
  const auto it = doc.meta.find(key);
  if (it == doc.meta.end() || it->second.empty())
    throw DataError("sotu-qa: address " + std::to_string(index + 1) + " has no metadata \"" + key +
                    "\": use the sotu corpus, whose documents carry \"president\" and \"year\"");
  return it->second;
}

// Whether the 4 words before index i occur exactly once as a run of the passage.
bool quote_is_unique(const std::vector<std::string>& words, size_t i) {
  int found = 0;
  for (size_t s = 0; s + 4 <= words.size(); ++s)
    if (std::equal(words.begin() + s, words.begin() + s + 4, words.begin() + (i - 4)) && ++found > 1) return false;
  return true;
}

std::vector<int64_t> encode64(const Tokenizer& tokenizer, const std::string& text) {
  if (text.empty()) return {};
  const auto ids = tokenizer.encode(text);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

std::vector<IcaeTextExample> read_icae_examples(const std::string& path) {
  std::istringstream lines(read_file(path));  // IoError naming the path
  std::vector<IcaeTextExample> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (is_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw FormatError(where + ": invalid JSON (" + std::string(e.what()) + ")" + kExpected);
    }
    if (!j.is_object()) throw FormatError(where + ": not a JSON object" + kExpected);
    IcaeTextExample ex;
    ex.context = string_field(j, "context", false, where);
    ex.prompt = string_field(j, "prompt", true, where);
    ex.answer = string_field(j, "answer", false, where);
    if (const auto g = j.find("group"); g != j.end()) {
      if (g->is_string())
        ex.group = g->get<std::string>();
      else if (g->is_number())
        ex.group = g->dump();  // 1861 -> "1861"
      else
        throw FormatError(where + ": field \"group\" is neither a string nor a number" + kExpected);
    }
    out.push_back(std::move(ex));
  }
  if (out.empty()) throw DataError(path + " holds no examples: add JSONL lines" + std::string(kExpected));
  return out;
}

void write_icae_examples(const std::vector<IcaeTextExample>& examples, const std::string& path) {
  std::string text;
  for (const auto& ex : examples) {
    nlohmann::ordered_json j;  // keeps the documented key order
    j["context"] = ex.context;
    j["prompt"] = ex.prompt;
    j["answer"] = ex.answer;
    if (!ex.group.empty()) j["group"] = ex.group;
    text += j.dump() + "\n";
  }
  write_text_atomically(path, text);
}

std::vector<IcaeTextExample> sotu_qa_examples(const std::vector<Document>& addresses, const SotuQaOptions& options) {
  if (options.passage_words < 12)
    throw ConfigError("icae.passage_words must be at least 12 (got " + std::to_string(options.passage_words) +
                      "): an extractive question quotes 4 words and asks for the next 6");
  if (options.passages_per_address < 1)
    throw ConfigError("sotu-qa passages_per_address must be at least 1 (got " +
                      std::to_string(options.passages_per_address) + ")");
  const auto P = static_cast<size_t>(options.passage_words);
  std::vector<IcaeTextExample> out;
  for (size_t a = 0; a < addresses.size(); ++a) {
    const std::string president = meta_value(addresses[a], "president", a);
    const std::string year = meta_value(addresses[a], "year", a);
    const auto words = split_words(addresses[a].text);
    if (words.empty()) continue;
    std::mt19937_64 rng(splitmix64(options.seed ^ splitmix64(static_cast<uint64_t>(a))));
    std::vector<size_t> starts;
    if (words.size() <= P) {
      starts.push_back(0);
    } else {
      for (int64_t k = 0; k < options.passages_per_address; ++k)
        starts.push_back(static_cast<size_t>(uniform_below(rng, words.size() - P + 1)));
      std::sort(starts.begin(), starts.end());  // text order
    }
    const std::string group = year + " " + president;
    for (const size_t start : starts) {
      const std::vector<std::string> passage(words.begin() + start, words.begin() + std::min(words.size(), start + P));
      const std::string context = join_words(passage, 0, passage.size());
      out.push_back({context, "Question: Which president delivered this address?\nAnswer:", president, group});
      out.push_back({context, "Question: In which year was this address delivered?\nAnswer:", year, group});
      if (passage.size() < 12) continue;
      // i in [4, n - 8]: 4 quoted words before it, the 6 answer words and 2 more after.
      const size_t span = passage.size() - 8 - 4 + 1;
      const size_t drawn = static_cast<size_t>(uniform_below(rng, span));
      size_t i = 4 + drawn;
      for (size_t k = 0; k < span; ++k) {  // prefer a quote that points at one place only
        const size_t cand = 4 + (drawn + k) % span;
        if (quote_is_unique(passage, cand)) {
          i = cand;
          break;
        }
      }
      out.push_back({context,
                     "Question: Which words follow \"" + join_words(passage, i - 4, 4) + "\" in the passage?\nAnswer:",
                     join_words(passage, i, 6), group});
    }
  }
  if (out.empty()) throw DataError("sotu-qa: the addresses hold no words");
  return out;
}

std::vector<int64_t> TokenizedIcaeExample::tail() const {
  std::vector<int64_t> t(prompt);
  t.insert(t.end(), answer.begin(), answer.end());
  return t;
}

IcaeExampleStream::IcaeExampleStream(const std::vector<IcaeTextExample>& examples, const Tokenizer& tokenizer,
                                     const IcaeExampleOptions& options, const std::string& source)
    : options_(options), source_(source) {
  if (options.context_tokens < 1)
    throw ConfigError("icae.context_tokens must be at least 1 (got " + std::to_string(options.context_tokens) + ")");
  if (options.tail_tokens < 1)
    throw ConfigError("icae.tail_tokens must be at least 1 (got " + std::to_string(options.tail_tokens) + ")");
  if (options.batch_size < 1)
    throw ConfigError("data.batch_size must be at least 1 (got " + std::to_string(options.batch_size) + ")");
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0))
    throw ConfigError("data.val_fraction must be in [0, 1) (got " + fmt(options.val_fraction) + ")");
  if (examples.empty()) throw DataError(source + " holds no examples");

  std::vector<TokenizedIcaeExample> all;
  all.reserve(examples.size());
  const int32_t eos = tokenizer.eos_id();
  for (size_t k = 0; k < examples.size(); ++k) {
    TokenizedIcaeExample t;
    t.number = static_cast<int64_t>(k) + 1;
    t.text = examples[k];
    t.context = encode64(tokenizer, t.text.context);
    t.prompt = encode64(tokenizer, t.text.prompt);
    t.answer = encode64(tokenizer, t.text.answer);
    if (eos >= 0) t.answer.push_back(eos);
    const std::string where = source + ": example " + std::to_string(t.number);
    const auto n_context = static_cast<int64_t>(t.context.size());
    const auto n_tail = static_cast<int64_t>(t.prompt.size() + t.answer.size());
    if (n_context > options.context_tokens)
      throw DataError(where + " has a context of " + std::to_string(n_context) + " tokens, more than icae.context_tokens = " +
                      std::to_string(options.context_tokens) + ": raise icae.context_tokens to at least " +
                      std::to_string(n_context));
    if (n_tail > options.tail_tokens)
      throw DataError(where + " has a prompt and answer of " + std::to_string(n_tail) +
                      " tokens, more than icae.tail_tokens = " + std::to_string(options.tail_tokens) +
                      ": raise icae.tail_tokens to at least " + std::to_string(n_tail));
    // Only tail tokens after the first are predicted, so an answer must reach past index 0.
    if (n_tail < 2 || t.answer.empty())
      throw DataError(where + " has no answer token after the first tail position, so nothing to learn: "
                      "give it a prompt or a longer answer");
    all.push_back(std::move(t));
  }

  // Group-level split: the n_val groups with the smallest seeded hashes are held out.
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t k = 0; k < all.size(); ++k) {
    const auto& g = all[k].text.group;
    groups[g.empty() ? "#" + std::to_string(k) : "g" + g].push_back(k);  // prefixes keep the two kinds apart
  }
  const auto G = static_cast<int64_t>(groups.size());
  int64_t n_val = options.val_fraction > 0 ? std::llround(options.val_fraction * static_cast<double>(G)) : 0;
  if (options.val_fraction > 0 && G >= 2) n_val = std::max<int64_t>(1, n_val);
  if (n_val >= G)
    throw DataError(source + ": holding out data.val_fraction " + fmt(options.val_fraction) + " of " + std::to_string(G) +
                    " group(s) leaves no training example: lower data.val_fraction or add examples");
  std::vector<std::pair<uint64_t, const std::string*>> keyed;
  for (const auto& [key, members] : groups) {
    Fnv64 h;
    h.str(key);
    keyed.push_back({splitmix64(options.split_seed ^ h.h), &key});
  }
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : *a.second < *b.second; });
  std::vector<bool> held(all.size(), false);
  for (int64_t i = 0; i < n_val; ++i)
    for (const size_t k : groups[*keyed[static_cast<size_t>(i)].second]) held[k] = true;
  for (size_t k = 0; k < all.size(); ++k) (held[k] ? val_ : train_).push_back(std::move(all[k]));
  val_groups_ = n_val;
  train_groups_ = G - n_val;

  if (batches_per_epoch() < 1)
    throw DataError(source + ": " + std::to_string(num_train()) +
                    " training example(s), fewer training examples than data.batch_size = " +
                    std::to_string(options.batch_size) + ": lower data.batch_size or add examples");
}

Batch IcaeExampleStream::make_batch(const std::vector<const TokenizedIcaeExample*>& rows, int64_t context_tokens,
                                    int64_t tail_tokens) {
  const auto B = static_cast<int64_t>(rows.size());
  const int64_t C = context_tokens, Q = tail_tokens;
  auto input = torch::full({B, C + Q}, -1, torch::kInt64);
  auto targets = torch::full({B, Q}, -100, torch::kInt64);
  auto in = input.accessor<int64_t, 2>();
  auto tg = targets.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& ex = *rows[static_cast<size_t>(b)];
    const auto tail = ex.tail();
    const auto n_ctx = static_cast<int64_t>(ex.context.size());
    const auto n_tail = static_cast<int64_t>(tail.size());
    if (n_ctx > C || n_tail > Q)
      throw DataError("ICAE example " + std::to_string(ex.number) + " (" + std::to_string(n_ctx) + " context, " +
                      std::to_string(n_tail) + " tail tokens) does not fit icae.context_tokens = " + std::to_string(C) +
                      " and icae.tail_tokens = " + std::to_string(Q));
    for (int64_t i = 0; i < n_ctx; ++i) in[b][i] = ex.context[static_cast<size_t>(i)];
    for (int64_t j = 0; j < n_tail; ++j) in[b][C + j] = tail[static_cast<size_t>(j)];
    const auto n_prompt = static_cast<int64_t>(ex.prompt.size());
    for (int64_t j = 0; j + 1 < n_tail; ++j)
      if (j + 1 >= n_prompt) tg[b][j] = tail[static_cast<size_t>(j + 1)];
  }
  return {input, targets};
}

Batch IcaeExampleStream::next_batch() {
  if (perm_epoch_ != position_.epoch) {
    perm_ = epoch_permutation(num_train(), options_.shuffle_seed, position_.epoch);
    perm_epoch_ = position_.epoch;
  }
  const int64_t B = options_.batch_size;
  std::vector<const TokenizedIcaeExample*> rows;
  for (int64_t r = 0; r < B; ++r) rows.push_back(&train_[static_cast<size_t>(perm_[static_cast<size_t>(position_.index * B + r)])]);
  Batch batch = make_batch(rows, options_.context_tokens, options_.tail_tokens);
  if (++position_.index == batches_per_epoch()) {
    ++position_.epoch;
    position_.index = 0;
  }
  return batch;
}

void IcaeExampleStream::seek(const DataPosition& position) {
  if (position.epoch < 0 || position.index < 0 || position.index >= batches_per_epoch())
    throw DataError("data position (epoch " + std::to_string(position.epoch) + ", batch " +
                    std::to_string(position.index) + ") does not exist: an epoch of " + source_ + " has " +
                    std::to_string(batches_per_epoch()) +
                    " batches with these options (were data.batch_size, data.val_fraction or the examples changed?)");
  position_ = position;
}

std::vector<Batch> IcaeExampleStream::val_batches(int64_t max_batches) const {
  const int64_t B = options_.batch_size;
  std::vector<Batch> out;
  for (int64_t first = 0; first < num_val(); first += B) {
    if (max_batches > 0 && static_cast<int64_t>(out.size()) >= max_batches) break;
    std::vector<const TokenizedIcaeExample*> rows;
    for (int64_t k = first; k < std::min(num_val(), first + B); ++k) rows.push_back(&val_[static_cast<size_t>(k)]);
    out.push_back(make_batch(rows, options_.context_tokens, options_.tail_tokens));
  }
  return out;
}

std::string IcaeExampleStream::summary() const {
  return source_ + ": " + std::to_string(num_train()) + " training examples (" + std::to_string(train_groups_) +
         " groups), " + std::to_string(num_val()) + " held out (" + std::to_string(val_groups_) + " groups), " +
         std::to_string(batches_per_epoch()) + " batches of " + std::to_string(options_.batch_size) + " per epoch";
}

std::string IcaeExampleStream::fingerprint() const {
  Fnv64 h;
  h.str("fedsplit-icae-examples-1");
  h.u64(static_cast<uint64_t>(options_.context_tokens));
  h.u64(static_cast<uint64_t>(options_.tail_tokens));
  h.u64(static_cast<uint64_t>(options_.batch_size));
  h.u64(options_.shuffle_seed);
  auto seq = [&](const std::vector<int64_t>& v) {
    h.u64(v.size());
    for (const int64_t x : v) h.u64(static_cast<uint64_t>(x));
  };
  h.u64(train_.size());
  for (const auto& ex : train_) {
    seq(ex.context);
    seq(ex.prompt);
    seq(ex.answer);
  }
  return h.hex();
}

}  // namespace fedsplit
