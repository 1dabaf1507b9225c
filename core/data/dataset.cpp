#include "core/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/random.h"

namespace fedsplit {
namespace {

uint64_t hash_string(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string join_values(const std::set<std::string>& values, size_t max_shown) {
  std::string out;
  size_t i = 0;
  for (const auto& v : values) {
    if (i == max_shown) {
      out += ", ... (" + std::to_string(values.size() - max_shown) + " more)";
      break;
    }
    out += (i++ ? ", " : "") + (v.empty() ? std::string("<missing>") : v);
  }
  return out;
}

std::string format_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch) + 0x5EEDull)));
  std::vector<int64_t> perm(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i + 1)));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

MetaFilter MetaFilter::parse(const std::string& text) {
  MetaFilter f;
  if (text.empty()) return f;
  const auto ne = text.find("!=");
  const auto eq = text.find('=');
  if (ne != std::string::npos && ne < eq) {
    f.key = text.substr(0, ne);
    f.value = text.substr(ne + 2);
    f.exclude = true;
  } else if (eq != std::string::npos) {
    f.key = text.substr(0, eq);
    f.value = text.substr(eq + 1);
  }
  if (f.key.empty()) throw ConfigError("data filter '" + text + "' is not key=value or key!=value (e.g. president=Abraham Lincoln)");
  return f;
}

std::string MetaFilter::to_string() const { return active() ? key + (exclude ? "!=" : "=") + value : ""; }

TokenDataset::TokenDataset(const std::vector<std::string>& paths, const DatasetOptions& options)
    : TokenDataset(
          [&] {
            if (paths.empty()) throw ConfigError("no token shards given: list at least one shard file");
            std::vector<std::shared_ptr<const TokenShard>> shards;
            for (const auto& p : paths) shards.push_back(std::make_shared<const TokenShard>(p));
            return shards;
          }(),
          options) {}

TokenDataset::TokenDataset(std::vector<std::shared_ptr<const TokenShard>> shards, const DatasetOptions& options,
                           const std::optional<std::vector<DocumentRef>>& subset)
    : shards_(std::move(shards)), options_(options) {
  if (options_.seq_len < 1) throw ConfigError("data seq_len must be >= 1 (got " + std::to_string(options_.seq_len) + ")");
  if (options_.batch_size < 1)
    throw ConfigError("data batch_size must be >= 1 (got " + std::to_string(options_.batch_size) + ")");
  if (!(options_.val_fraction >= 0.0 && options_.val_fraction < 1.0))
    throw ConfigError("data val_fraction must be in [0, 1) (got " + format_double(options_.val_fraction) + ")");
  if (shards_.empty()) throw ConfigError("no token shards given: list at least one shard file");
  for (const auto& s : shards_) {
    if (s->vocab_size() != shards_.front()->vocab_size() || s->eos_id() != shards_.front()->eos_id())
      throw DataError(s->path() + " was tokenized differently from " + shards_.front()->path() + " (vocab " +
                      std::to_string(s->vocab_size()) + " vs " + std::to_string(shards_.front()->vocab_size()) +
                      "): prepare all shards with one tokenizer");
  }

  // Candidate documents: the subset, or every document.
  std::vector<DocumentRef> selected;
  if (subset) {
    for (const auto& ref : *subset) {
      if (ref.shard < 0 || ref.shard >= static_cast<int32_t>(shards_.size()) || ref.doc < 0 ||
          ref.doc >= shards_[static_cast<size_t>(ref.shard)]->num_documents())
        throw DataError("document subset names shard " + std::to_string(ref.shard) + " document " +
                        std::to_string(ref.doc) + ", which does not exist in " + describe_sources());
    }
    selected = *subset;
    std::sort(selected.begin(), selected.end());
    selected.erase(std::unique(selected.begin(), selected.end()), selected.end());
  } else {
    for (size_t s = 0; s < shards_.size(); ++s)
      for (int64_t d = 0; d < shards_[s]->num_documents(); ++d) selected.push_back({static_cast<int32_t>(s), d});
  }

  // Metadata filter; a shard without the key counts as "" for every document.
  const MetaFilter& filter = options_.filter;
  if (filter.active()) {
    bool any_has_key = false;
    std::set<std::string> existing;
    std::vector<DocumentRef> kept;
    for (const auto& ref : selected) {
      const auto& shard = *shards_[static_cast<size_t>(ref.shard)];
      std::string value;
      if (shard.has_meta(filter.key)) {
        any_has_key = true;
        value = shard.meta(filter.key)[static_cast<size_t>(ref.doc)];
      }
      existing.insert(value);
      if (filter.keeps(value)) kept.push_back(ref);
    }
    if (!any_has_key) {
      std::set<std::string> keys;
      for (const auto& s : shards_)
        for (const auto& k : s->meta_keys()) keys.insert(k);
      throw DataError("filter " + filter.to_string() + ": no document of " + describe_sources() +
                      " has metadata key '" + filter.key + "'; keys are: " + (keys.empty() ? "none" : join_values(keys, 50)));
    }
    if (!filter.exclude && kept.empty())
      throw DataError("filter " + filter.to_string() + " matches no document of " + describe_sources() + "; values of '" +
                      filter.key + "' are: " + join_values(existing, 30));
    selected = std::move(kept);
  }
  if (selected.empty())
    throw DataError("no document of " + describe_sources() + " is selected" +
                    (filter.active() ? " by filter " + filter.to_string() : std::string()) + ": the train split would be empty");

  // Document-level split: the n_val documents with the smallest seeded hashes are held out.
  const auto n = static_cast<int64_t>(selected.size());
  int64_t n_val = 0;
  if (options_.val_fraction > 0)
    n_val = std::max<int64_t>(1, std::llround(options_.val_fraction * static_cast<double>(n)));
  if (n_val >= n)
    throw DataError(std::to_string(n) + " selected document(s) of " + describe_sources() +
                    " are too few to hold out val_fraction " + format_double(options_.val_fraction) +
                    " and keep a train split: set val_fraction to 0 or select more documents");
  std::vector<std::pair<uint64_t, DocumentRef>> keyed;
  keyed.reserve(selected.size());
  std::vector<uint64_t> shard_hash;
  for (const auto& s : shards_) shard_hash.push_back(hash_string(s->content_hash()));
  for (const auto& ref : selected) {
    const uint64_t doc_key = splitmix64(shard_hash[static_cast<size_t>(ref.shard)] + static_cast<uint64_t>(ref.doc));
    keyed.push_back({splitmix64(options_.split_seed ^ doc_key), ref});
  }
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second < b.second;
  });
  for (int64_t i = 0; i < n; ++i) (i < n_val ? val_docs_ : train_docs_).push_back(keyed[static_cast<size_t>(i)].second);
  std::sort(val_docs_.begin(), val_docs_.end());
  std::sort(train_docs_.begin(), train_docs_.end());

  train_tokens_ = gather(train_docs_);
  val_tokens_ = gather(val_docs_);

  const int64_t T = options_.seq_len;
  if (num_train_windows() < 1)
    throw DataError("seq_len " + std::to_string(T) + " needs " + std::to_string(T + 1) + " tokens but the train split of " +
                    describe_sources() + " holds " + std::to_string(num_train_tokens()) + ": lower seq_len");
  if (batches_per_epoch() < 1)
    throw DataError("the train split of " + describe_sources() + " holds " + std::to_string(num_train_windows()) +
                    " windows of seq_len " + std::to_string(T) + ", fewer than batch_size " +
                    std::to_string(options_.batch_size) + ": lower batch_size or seq_len");
  if (n_val > 0 && num_val_windows() < 1)
    throw DataError("the validation split of " + describe_sources() + " (" + std::to_string(val_docs_.size()) +
                    " documents) holds " + std::to_string(num_val_tokens()) + " tokens, fewer than seq_len + 1 = " +
                    std::to_string(T + 1) + ": raise val_fraction or lower seq_len");
  // A federated run makes one dataset per client: their lines go to the debug log.
  if (subset)
    log_debug("data: ", summary());
  else
    log_info("data: ", summary());
}

torch::Tensor TokenDataset::gather(const std::vector<DocumentRef>& docs) const {
  int64_t total = 0;
  for (const auto& ref : docs) total += shards_[static_cast<size_t>(ref.shard)]->document_length(ref.doc);
  auto out = torch::empty({total}, torch::kInt);
  int32_t* dst = out.data_ptr<int32_t>();
  // Consecutive documents of one shard are read in one call.
  for (size_t i = 0; i < docs.size();) {
    const auto& shard = *shards_[static_cast<size_t>(docs[i].shard)];
    size_t j = i + 1;
    while (j < docs.size() && docs[j].shard == docs[i].shard && docs[j].doc == docs[j - 1].doc + 1) ++j;
    const auto& off = shard.doc_offsets();
    const auto part = shard.read_tokens(off[static_cast<size_t>(docs[i].doc)], off[static_cast<size_t>(docs[j - 1].doc) + 1]);
    if (part.numel() > 0) {
      const int32_t lo = part.min().item<int32_t>(), hi = part.max().item<int32_t>();
      if (lo < 0 || hi >= shard.vocab_size())
        throw FormatError(shard.path() + " holds token id " + std::to_string(lo < 0 ? lo : hi) + " outside its vocabulary [0, " +
                          std::to_string(shard.vocab_size()) + "): the file is corrupt, regenerate it");
      std::copy(part.data_ptr<int32_t>(), part.data_ptr<int32_t>() + part.numel(), dst);
      dst += part.numel();
    }
    i = j;
  }
  return out;
}

Batch TokenDataset::make_batch(const torch::Tensor& tokens, const int64_t* window_ids, int64_t rows) const {
  const int64_t T = options_.seq_len;
  auto inputs = torch::empty({rows, T}, torch::kLong);
  auto targets = torch::empty({rows, T}, torch::kLong);
  const int32_t* src = tokens.data_ptr<int32_t>();
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* tg = targets.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* w = src + window_ids[r] * T;
    for (int64_t t = 0; t < T; ++t) {
      in[r * T + t] = w[t];
      tg[r * T + t] = w[t + 1];
    }
  }
  return {inputs, targets};
}

const std::vector<int64_t>& TokenDataset::permutation(int64_t epoch) {
  if (perm_epoch_ != epoch) {
    perm_ = epoch_permutation(num_train_windows(), options_.shuffle_seed, epoch);
    perm_epoch_ = epoch;
  }
  return perm_;
}

Batch TokenDataset::next_batch() {
  const auto& perm = permutation(position_.epoch);
  const int64_t B = options_.batch_size;
  Batch batch = make_batch(train_tokens_, perm.data() + position_.index * B, B);
  if (++position_.index == batches_per_epoch()) {
    ++position_.epoch;
    position_.index = 0;
  }
  return batch;
}

void TokenDataset::seek(const DataPosition& position) {
  if (position.epoch < 0 || position.index < 0 || position.index >= batches_per_epoch())
    throw DataError("data position (epoch " + std::to_string(position.epoch) + ", batch " + std::to_string(position.index) +
                    ") does not exist: an epoch of " + describe_sources() + " has " + std::to_string(batches_per_epoch()) +
                    " batches with these options (were seq_len, batch_size or the shards changed since the checkpoint?)");
  position_ = position;
}

std::vector<Batch> TokenDataset::val_batches(int64_t max_batches) const {
  const int64_t windows_total = num_val_windows();
  const int64_t B = options_.batch_size;
  std::vector<Batch> out;
  std::vector<int64_t> ids(static_cast<size_t>(B));
  for (int64_t first = 0; first < windows_total; first += B) {
    if (max_batches > 0 && static_cast<int64_t>(out.size()) >= max_batches) break;
    const int64_t rows = std::min(B, windows_total - first);
    for (int64_t r = 0; r < rows; ++r) ids[static_cast<size_t>(r)] = first + r;
    out.push_back(make_batch(val_tokens_, ids.data(), rows));
  }
  return out;
}

void TokenDataset::check_vocab(int64_t model_vocab_size) const {
  for (const auto& s : shards_) s->check_vocab(model_vocab_size);
}

std::string TokenDataset::describe_sources() const {
  std::string out;
  for (size_t i = 0; i < shards_.size() && i < 4; ++i) out += (i ? ", " : "") + shards_[i]->path();
  if (shards_.size() > 4) out += " and " + std::to_string(shards_.size() - 4) + " more";
  return out;
}

std::string TokenDataset::fingerprint() const {
  uint64_t h = hash_string("fedsplit-dataset-1");
  const auto mix = [&h](uint64_t v) { h = splitmix64(h ^ v); };
  for (const auto& s : shards_) mix(hash_string(s->content_hash()));
  mix(static_cast<uint64_t>(options_.seq_len));
  mix(static_cast<uint64_t>(options_.batch_size));
  mix(options_.split_seed);
  mix(options_.shuffle_seed);
  for (const auto* docs : {&train_docs_, &val_docs_}) {
    mix(docs->size());
    for (const auto& r : *docs) mix((static_cast<uint64_t>(r.shard) << 48) ^ static_cast<uint64_t>(r.doc));
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string TokenDataset::summary() const {
  std::ostringstream s;
  s << describe_sources() << (options_.filter.active() ? " [" + options_.filter.to_string() + "]" : "") << ": train "
    << train_docs_.size() << " documents, " << num_train_tokens() << " tokens, " << num_train_windows() << " windows of "
    << options_.seq_len << " (" << batches_per_epoch() << " batches of " << options_.batch_size << " per epoch); val "
    << val_docs_.size() << " documents, " << num_val_tokens() << " tokens, " << num_val_windows() << " windows";
  return s.str();
}

}  // namespace fedsplit
