#include "core/data/shards.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/io/hdf5.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/hash.h"
#include "core/util/log.h"
#include "core/util/progress.h"

namespace fedsplit {
namespace {


std::string encode_key(const std::string& key) {
  if (key == ".") return "%2E";
  std::string out;
  for (char c : key) {
    if (c == '%') out += "%25";
    else if (c == '/') out += "%2F";
    else out += c;
  }
  return out;
}

std::string decode_key(const std::string& name) {
  const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size() && hex(name[i + 1]) && hex(name[i + 2])) {
      out += static_cast<char>(std::stoi(name.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += name[i];
    }
  }
  return out;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > (n < 0 ? 1 : 0); i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

// Tokenizes every document on `threads` threads; results in document order. Progress (from this
// thread only) for corpora over ~1 MB of text.
std::vector<std::vector<int32_t>> tokenize_all(const std::vector<Document>& docs, const Tokenizer& tokenizer,
                                               const ShardWriteOptions& options) {
  std::vector<std::vector<int32_t>> out(docs.size());
  size_t text_bytes = 0;
  for (const auto& d : docs) text_bytes += d.text.size();
  const int64_t block = 16;
  const int64_t blocks = (static_cast<int64_t>(docs.size()) + block - 1) / block;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  const auto work = [&](Progress* progress) {
    for (int64_t b = next++; b < blocks; b = next++) {
      const size_t end = std::min(docs.size(), static_cast<size_t>((b + 1) * block));
      for (size_t i = static_cast<size_t>(b * block); i < end; ++i) out[i] = tokenizer.encode(docs[i].text);
      const int64_t n = ++done;
      if (progress) progress->update(n, "blocks of " + std::to_string(block) + " documents");
    }
  };
  Progress progress("tokenize " + options.corpus, blocks, std::max<int64_t>(blocks / 10, 1),
                    options.progress && text_bytes > (1u << 20));
  const int threads = std::max(1, options.threads);
  std::vector<std::thread> pool;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back([&] {
      try {
        work(nullptr);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = blocks;  // stop the others early
      }
    });
  try {
    work(&progress);
  } catch (...) {
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (!failure) failure = std::current_exception();
    next = blocks;
  }
  for (auto& t : pool) t.join();
  progress.finish();
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace

void write_token_shard(const std::string& path, const std::vector<Document>& documents, const Tokenizer& tokenizer,
                       const ShardWriteOptions& options) {
  if (documents.empty()) throw DataError("no documents to write to " + path + ": check the corpus");
  const int64_t vocab = tokenizer.vocab_size();
  const int32_t eos = tokenizer.eos_id();
  const int32_t bos = tokenizer.bos_id();
  if (eos < 0 || eos >= vocab)
    throw DataError("tokenizer " + tokenizer.path() + " has no EOS token: shards need one to separate documents");
  const bool add_bos = options.add_bos && bos >= 0;
  if (options.add_bos && bos < 0) log_warn("tokenizer ", tokenizer.path(), " has no BOS token: documents start without one");

  const auto encoded = tokenize_all(documents, tokenizer, options);

  // Concatenate, checking ids against the vocabulary.
  std::vector<int64_t> offsets(documents.size() + 1, 0);
  int64_t total = 0;
  for (size_t i = 0; i < encoded.size(); ++i) {
    total += static_cast<int64_t>(encoded[i].size()) + 1 + (add_bos ? 1 : 0);
    offsets[i + 1] = total;
  }
  std::vector<int32_t> tokens;
  tokens.reserve(static_cast<size_t>(total));
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (add_bos) tokens.push_back(bos);
    for (int32_t id : encoded[i]) {
      if (id < 0 || id >= vocab)
        throw DataError("tokenizer " + tokenizer.path() + " produced id " + std::to_string(id) + " outside [0, " +
                        std::to_string(vocab) + ") for document " + std::to_string(i) + " of " + options.corpus +
                        ": the tokenizer is inconsistent");
      tokens.push_back(id);
    }
    tokens.push_back(eos);
  }

  // Metadata: one column per key any document has, "" where missing.
  std::set<std::string> keys;
  for (const auto& d : documents)
    for (const auto& kv : d.meta) keys.insert(kv.first);
  std::map<std::string, std::vector<std::string>> columns;
  for (const auto& key : keys) {
    if (key.empty()) throw DataError("a document of " + options.corpus + " has an empty metadata key: rename it");
    auto& col = columns[key];
    col.reserve(documents.size());
    for (const auto& d : documents) {
      const auto it = d.meta.find(key);
      col.push_back(it == d.meta.end() ? "" : it->second);
    }
  }

  Fnv64 hash;
  hash.u64(static_cast<uint64_t>(vocab));
  hash.u64(static_cast<uint64_t>(static_cast<int64_t>(bos)));
  hash.u64(static_cast<uint64_t>(static_cast<int64_t>(eos)));
  hash.u64(add_bos ? 1 : 0);
  for (int64_t o : offsets) hash.u64(static_cast<uint64_t>(o));
  hash.bytes(tokens.data(), tokens.size() * sizeof(int32_t));  // host byte order (little-endian on our targets)
  for (const auto& [key, col] : columns) {
    hash.str(key);
    for (const auto& v : col) hash.str(v);
  }
  const std::string content_hash = hash.hex();

  if (path_exists(path)) {
    std::string existing_hash;
    try {
      existing_hash = TokenShard(path).content_hash();
    } catch (const Error&) {
      // Not a readable shard: only `overwrite` may replace it.
    }
    if (existing_hash == content_hash) {
      log_info(path, " is up to date (", documents.size(), " documents, ", tokens.size(), " tokens)");
      return;
    }
    if (!options.overwrite)
      throw IoError(path + " exists and holds " + (existing_hash.empty() ? "something other than this shard" : "a different shard") +
                    ": remove it, choose another path, or set overwrite");
  }

  write_atomically(path, [&](const std::string& tmp) {
    auto file = h5::Group::create_file(tmp, /*overwrite=*/true);
    file.set_attr("format", std::string(kShardFormat));
    file.set_attr("format_version", kShardFormatVersion);
    file.set_attr("corpus", options.corpus);
    file.set_attr("tokenizer_path", tokenizer.path());
    file.set_attr("vocab_size", vocab);
    file.set_attr("bos_id", static_cast<int64_t>(bos));
    file.set_attr("eos_id", static_cast<int64_t>(eos));
    file.set_attr("add_bos", static_cast<int64_t>(add_bos ? 1 : 0));
    file.set_attr("num_documents", static_cast<int64_t>(documents.size()));
    file.set_attr("num_tokens", total);
    file.set_attr("content_hash", content_hash);
    const auto token_tensor = torch::from_blob(tokens.data(), {total}, torch::kInt);
    file.write_tensor("tokens", token_tensor, std::max<int64_t>(options.chunk_tokens, 1), options.compress);
    const auto offset_tensor = torch::from_blob(offsets.data(), {static_cast<int64_t>(offsets.size())}, torch::kLong);
    file.write_tensor("doc_offsets", offset_tensor, 1 << 16, options.compress);
    auto meta = file.create_group("meta");
    for (const auto& [key, col] : columns) meta.write_strings(encode_key(key), col);
  });
  log_info("wrote ", path, ": ", documents.size(), " documents, ", with_commas(total), " tokens, ", columns.size(),
           " metadata keys");
}

TokenShard::TokenShard(const std::string& path) : path_(path) {
  file_ = std::make_shared<h5::Group>(h5::Group::open_file(path));  // FormatError if not HDF5 or truncated
  const h5::Group& f = *file_;
  if (!f.has_attr("format") || f.attr_string("format") != kShardFormat)
    throw FormatError(path + " is not a fedsplit token shard (no format=\"" + kShardFormat +
                      "\" attribute): give a shard written by fedsplit's data preparation");
  try {
    const int64_t version = f.attr_int("format_version");
    if (version > kShardFormatVersion || version < 1)
      throw FormatError(path + " has token shard format version " + std::to_string(version) + "; this build reads up to " +
                        std::to_string(kShardFormatVersion) + ": update fedsplit or regenerate the shard");
    corpus_ = f.attr_string("corpus");
    tokenizer_path_ = f.attr_string("tokenizer_path");
    vocab_size_ = f.attr_int("vocab_size");
    bos_id_ = static_cast<int32_t>(f.attr_int("bos_id"));
    eos_id_ = static_cast<int32_t>(f.attr_int("eos_id"));
    add_bos_ = f.attr_int("add_bos") != 0;
    content_hash_ = f.attr_string("content_hash");
    const int64_t n_docs = f.attr_int("num_documents");
    const int64_t n_tokens = f.attr_int("num_tokens");

    const auto token_shape = f.shape("tokens");
    if (token_shape.size() != 1 || f.read_rows("tokens", 0, 0).scalar_type() != torch::kInt)
      throw FormatError(f.where("tokens") + " is not a 1-D int32 dataset: regenerate the shard");
    if (token_shape[0] != n_tokens)
      throw FormatError(f.where("tokens") + " holds " + std::to_string(token_shape[0]) + " tokens but num_tokens says " +
                        std::to_string(n_tokens) + ": regenerate the shard");
    const auto off = f.read_tensor("doc_offsets");
    if (off.dim() != 1 || off.scalar_type() != torch::kLong || off.size(0) != n_docs + 1)
      throw FormatError(f.where("doc_offsets") + " is not an int64 list of num_documents + 1 = " +
                        std::to_string(n_docs + 1) + " offsets: regenerate the shard");
    offsets_.assign(off.data_ptr<int64_t>(), off.data_ptr<int64_t>() + off.numel());
    if (offsets_.front() != 0 || offsets_.back() != n_tokens)
      throw FormatError(f.where("doc_offsets") + " must start at 0 and end at num_tokens = " + std::to_string(n_tokens) +
                        ": regenerate the shard");
    for (size_t i = 1; i < offsets_.size(); ++i)
      if (offsets_[i] < offsets_[i - 1])
        throw FormatError(f.where("doc_offsets") + " decreases at document " + std::to_string(i - 1) +
                          ": regenerate the shard");
    if (f.has("meta")) {
      const auto meta = f.group("meta");
      for (const auto& name : meta.children()) {
        auto values = meta.read_strings(name);
        if (static_cast<int64_t>(values.size()) != n_docs)
          throw FormatError(meta.where(name) + " has " + std::to_string(values.size()) + " values for " +
                            std::to_string(n_docs) + " documents: regenerate the shard");
        meta_[decode_key(name)] = std::move(values);
      }
    }
  } catch (const IoError& e) {
    // The file opened as HDF5, so a failing read means damage rather than a missing file.
    throw FormatError(std::string(e.what()) + " (" + path + " truncated or corrupt?): regenerate the shard");
  }
}

void TokenShard::check_doc(int64_t doc) const {
  if (doc < 0 || doc >= num_documents())
    throw DataError(path_ + ": document " + std::to_string(doc) + " out of range (" + std::to_string(num_documents()) +
                    " documents)");
}

int64_t TokenShard::document_length(int64_t doc) const {
  check_doc(doc);
  return offsets_[static_cast<size_t>(doc) + 1] - offsets_[static_cast<size_t>(doc)];
}

torch::Tensor TokenShard::document_tokens(int64_t doc) const {
  check_doc(doc);
  return read_tokens(offsets_[static_cast<size_t>(doc)], offsets_[static_cast<size_t>(doc) + 1]);
}

torch::Tensor TokenShard::read_tokens(int64_t begin, int64_t end) const { return file_->read_rows("tokens", begin, end); }

torch::Tensor TokenShard::tokens() const { return read_tokens(0, num_tokens()); }

std::vector<std::string> TokenShard::meta_keys() const {
  std::vector<std::string> keys;
  for (const auto& kv : meta_) keys.push_back(kv.first);
  return keys;
}

const std::vector<std::string>& TokenShard::meta(const std::string& key) const {
  const auto it = meta_.find(key);
  if (it == meta_.end()) {
    std::string keys;
    for (const auto& kv : meta_) keys += (keys.empty() ? "" : ", ") + kv.first;
    throw DataError(path_ + " has no metadata key '" + key + "': it has " + (keys.empty() ? "none" : keys));
  }
  return it->second;
}

std::map<std::string, std::string> TokenShard::document_meta(int64_t doc) const {
  check_doc(doc);
  std::map<std::string, std::string> out;
  for (const auto& [key, values] : meta_)
    if (!values[static_cast<size_t>(doc)].empty()) out[key] = values[static_cast<size_t>(doc)];
  return out;
}

void TokenShard::check_vocab(int64_t model_vocab_size) const {
  if (vocab_size_ > model_vocab_size)
    throw DataError(path_ + " was tokenized with a vocabulary of " + std::to_string(vocab_size_) + " ids (" +
                    tokenizer_path_ + ") but the model has " + std::to_string(model_vocab_size) +
                    ": use the model's tokenizer to prepare the data");
}

std::string TokenShard::summary() const {
  std::ostringstream s;
  const int64_t n = num_documents();
  s << path_ << ": token shard of corpus '" << corpus_ << "'\n";
  s << "  tokenizer " << tokenizer_path_ << " (vocab " << vocab_size_ << ", bos " << bos_id_ << ", eos " << eos_id_
    << (add_bos_ ? ", documents start with bos" : "") << ")\n";
  s << "  " << with_commas(n) << " documents, " << with_commas(num_tokens()) << " tokens ("
    << (n > 0 ? num_tokens() / n : 0) << " per document on average)\n";
  for (const auto& [key, values] : meta_) {
    std::map<std::string, int64_t> counts;
    for (const auto& v : values) ++counts[v];
    std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    s << "  meta " << key << ": " << counts.size() << " distinct values (";
    const size_t shown = std::min<size_t>(sorted.size(), 5);
    for (size_t i = 0; i < shown; ++i)
      s << (i ? ", " : "") << (sorted[i].first.empty() ? "<missing>" : sorted[i].first) << " " << sorted[i].second;
    s << (sorted.size() > shown ? ", ...)" : ")") << "\n";
  }
  return s.str();
}

}  // namespace fedsplit
