#include "core/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>

#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "core/tokenizer/regex.h"
#include "core/tokenizer/utf8.h"
#include "core/tokenizer/unsupported.h"
#include "core/util/error.h"

namespace fedsplit::tok {

namespace {

using json = nlohmann::json;

class UnicodeForm : public Normalizer {
 public:
  UnicodeForm(const std::string& kind, const std::string& where) : kind_(kind) {
    UErrorCode status = U_ZERO_ERROR;
    if (kind == "NFC") form_ = icu::Normalizer2::getNFCInstance(status);
    else if (kind == "NFD") form_ = icu::Normalizer2::getNFDInstance(status);
    else if (kind == "NFKC") form_ = icu::Normalizer2::getNFKCInstance(status);
    else form_ = icu::Normalizer2::getNFKDInstance(status);
    if (U_FAILURE(status)) throw FormatError(where + ": ICU has no " + kind + " data (" + u_errorName(status) + ")");
  }
  std::string apply(const std::string& text) const override {
    UErrorCode status = U_ZERO_ERROR;
    // Most text is already normalized; the quick check avoids copying it.
    if (form_->isNormalizedUTF8(text, status) && U_SUCCESS(status)) return text;
    std::string out;
    status = U_ZERO_ERROR;
    icu::StringByteSink<std::string> sink(&out);
    form_->normalizeUTF8(0, text, sink, nullptr, status);
    if (U_FAILURE(status)) throw DataError(kind_ + " normalization failed: " + u_errorName(status));
    return out;
  }

 private:
  std::string kind_;
  const icu::Normalizer2* form_ = nullptr;
};

class Lowercase : public Normalizer {
 public:
  std::string apply(const std::string& text) const override {
    std::string out;
    UErrorCode status = U_ZERO_ERROR;
    icu::StringByteSink<std::string> sink(&out);
    // Root locale: full Unicode lowercase mapping, as Rust's str::to_lowercase.
    icu::CaseMap::utf8ToLower("", 0, text, sink, nullptr, status);
    if (U_FAILURE(status)) throw DataError(std::string("lowercasing failed: ") + u_errorName(status));
    return out;
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string apply(const std::string& text) const override {
    size_t begin = 0, end = text.size();
    while (left_ && begin < end) {
      const CodePoint cp = utf8_next(text, begin);
      if (!is_unicode_whitespace(cp.value)) break;
      begin += cp.length;
    }
    while (right_ && end > begin) {
      const size_t start = utf8_prev_start(text, end);
      if (!is_unicode_whitespace(utf8_next(text, start).value)) break;
      end = start;
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  std::string apply(const std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const CodePoint cp = utf8_next(text, pos);
      if (!cp.valid || !is_mark(cp.value)) out.append(text, pos, cp.length);
      pos += cp.length;
    }
    return out;
  }
};

class Replace : public Normalizer {
 public:
  Replace(const json& pattern, std::string content, const std::string& where) : content_(std::move(content)) {
    if (pattern.contains("String")) {
      literal_ = pattern.at("String").get<std::string>();
      if (literal_.empty()) throw FormatError(where + ": Replace normalizer with an empty pattern");
    } else if (pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(pattern.at("Regex").get<std::string>(), where);
    } else {
      throw FormatError(where + ": Replace normalizer pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  std::string apply(const std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (regex_) {
      regex_->find_all(text, matches);
    } else {
      for (size_t at = text.find(literal_); at != std::string::npos; at = text.find(literal_, at + literal_.size()))
        matches.emplace_back(at, at + literal_.size());
    }
    std::string out;
    size_t prev = 0;
    for (const auto& [begin, end] : matches) {
      out.append(text, prev, begin - prev);
      out += content_;
      prev = end;
    }
    out.append(text, prev, std::string::npos);
    return out;
  }

 private:
  std::string content_;
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string apply(const std::string& text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string apply(const std::string& text) const override {
    std::string out = text;
    for (const auto& step : steps_) out = step->apply(out);
    return out;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string kind = spec.value("type", "");
  if (kind == "NFC" || kind == "NFD" || kind == "NFKC" || kind == "NFKD") return std::make_unique<UnicodeForm>(kind, where);
  if (kind == "Lowercase") return std::make_unique<Lowercase>();
  if (kind == "Strip") return std::make_unique<Strip>(spec.value("strip_left", true), spec.value("strip_right", true));
  if (kind == "StripAccents") return std::make_unique<StripAccents>();
  if (kind == "Replace") return std::make_unique<Replace>(spec.at("pattern"), spec.at("content").get<std::string>(), where);
  if (kind == "Prepend") return std::make_unique<Prepend>(spec.at("prepend").get<std::string>());
  if (kind == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : spec.at("normalizers")) {
      if (auto n = parse_normalizer(step, where)) steps.push_back(std::move(n));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  throw UnsupportedTokenizer(where + ": normalizer '" + kind +
                    "' is not supported (known: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, "
                    "Replace, Prepend, Sequence): use a SentencePiece .model or a byte-level BPE tokenizer.json");
}

}  // namespace fedsplit::tok
