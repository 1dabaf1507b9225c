#include "core/tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "core/tokenizer/unsupported.h"
#include "core/util/error.h"

namespace fedsplit::tok {

const char* const kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

using json = nlohmann::json;
using Behavior = PreTokenizer::Behavior;

struct Span {
  size_t begin, end;
  bool is_match;
};

// Matched and unmatched spans covering `text`, in order.
std::vector<Span> find_spans(const PreTokenizer::Step& step, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (step.regex) {
    step.regex->find_all(text, matches);
  } else if (!step.literal.empty()) {
    for (size_t at = text.find(step.literal); at != std::string_view::npos;
         at = text.find(step.literal, at + step.literal.size()))
      matches.emplace_back(at, at + step.literal.size());
  }
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (prev != begin) spans.push_back({prev, begin, false});
    spans.push_back({begin, end, true});
    prev = end;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  if (step.invert)
    for (auto& s : spans) s.is_match = !s.is_match;
  return spans;
}

// Applies the split behavior; what is left are the pieces, in order (unmatched flags mean "keep").
std::vector<Span> apply_behavior(std::vector<Span> spans, Behavior behavior) {
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::removed:
      for (const auto& s : spans)
        if (!s.is_match) out.push_back(s);
      return out;
    case Behavior::isolated:
      return spans;
    case Behavior::merged_with_previous:
      // A match joins the piece before it (unless that piece is itself a match).
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
    case Behavior::merged_with_next:
      // Mirror image of merged_with_previous: walk from the right.
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) out.back().begin = it->begin;
        else out.push_back(*it);
        previous_match = it->is_match;
      }
      return {out.rbegin(), out.rend()};
    case Behavior::contiguous:
      // Runs of matches become one piece (and so do runs of non-matches).
      for (const auto& s : spans) {
        if (!out.empty() && s.is_match == previous_match) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
  }
  return out;
}

Behavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return Behavior::removed;
  if (name == "Isolated") return Behavior::isolated;
  if (name == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (name == "MergedWithNext") return Behavior::merged_with_next;
  if (name == "Contiguous") return Behavior::contiguous;
  throw FormatError(where + ": unknown Split behavior '" + name + "'");
}

// Flattens nested Sequences into `steps`; marks whether the last step came from a ByteLevel.
void add_steps(const json& spec, const std::string& where, std::vector<PreTokenizer::Step>& steps,
               bool& ends_with_byte_level) {
  static const auto gpt2 = std::make_shared<const Regex>(kGpt2SplitPattern, "GPT-2 split pattern");
  const std::string kind = spec.value("type", "");
  PreTokenizer::Step step;
  if (kind == "Sequence") {
    for (const auto& inner : spec.at("pretokenizers")) add_steps(inner, where, steps, ends_with_byte_level);
    return;
  }
  if (kind == "ByteLevel") {
    step.add_prefix_space = spec.value("add_prefix_space", true);
    if (spec.value("use_regex", true)) step.regex = gpt2;
    steps.push_back(std::move(step));
    ends_with_byte_level = true;
    return;
  }
  if (kind == "Split") {
    const json& pattern = spec.at("pattern");
    if (pattern.contains("Regex")) step.regex = std::make_shared<const Regex>(pattern.at("Regex").get<std::string>(), where);
    else if (pattern.contains("String")) step.literal = pattern.at("String").get<std::string>();
    else throw FormatError(where + ": Split pattern must be {\"Regex\": ...} or {\"String\": ...}");
    step.behavior = parse_behavior(spec.at("behavior").get<std::string>(), where);
    step.invert = spec.value("invert", false);
  } else if (kind == "Digits") {
    step.regex = std::make_shared<const Regex>(spec.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", where);
  } else {
    throw UnsupportedTokenizer(where + ": pre_tokenizer '" + kind +
                      "' is not supported (known: ByteLevel, Split, Digits, Sequence): only byte-level BPE "
                      "tokenizer.json files are read; use the model's SentencePiece .model instead");
  }
  steps.push_back(std::move(step));
  ends_with_byte_level = false;
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string>& pieces) const {
  if (text.empty()) return;
  std::vector<std::string> current{std::string(text)};
  std::vector<std::string> next;
  for (const Step& step : steps) {
    next.clear();
    for (std::string& piece : current) {
      if (step.add_prefix_space && piece.front() != ' ') piece.insert(piece.begin(), ' ');
      if (!step.regex && step.literal.empty()) {  // ByteLevel without regex: the piece stays whole
        next.push_back(std::move(piece));
        continue;
      }
      for (const Span& s : apply_behavior(find_spans(step, piece), step.behavior))
        if (s.end > s.begin) next.emplace_back(piece, s.begin, s.end - s.begin);
    }
    current.swap(next);
  }
  for (auto& piece : current)
    if (!piece.empty()) pieces.push_back(std::move(piece));
}

PreTokenizer parse_pre_tokenizer(const json& spec, const std::string& where) {
  if (spec.is_null())
    throw UnsupportedTokenizer(where + ": pre_tokenizer is null, so this is not a byte-level BPE tokenizer: use the "
                      "model's SentencePiece .model instead");
  PreTokenizer pre;
  bool ends_with_byte_level = false;
  add_steps(spec, where, pre.steps, ends_with_byte_level);
  if (!ends_with_byte_level)
    throw UnsupportedTokenizer(where + ": pre_tokenizer does not end with ByteLevel, so this is not a byte-level BPE "
                      "tokenizer: use the model's SentencePiece .model instead");
  return pre;
}

}  // namespace fedsplit::tok
