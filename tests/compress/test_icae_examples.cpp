// labels: unit
// ICAE examples (compress/icae_examples.h): the JSONL round trip and its errors (file:line, field
// names), the batch layout with the fixtures' SentencePiece tokenizer (-1 padding, -100 outside the
// answer, targets = the next tail token, EOS last), the group-level split, epoch order against
// epoch_permutation, position/seek resume, length and option errors naming the key to change, and
// the State of the Union questions (deterministic, three per passage, extractive answers that
// really follow the quoted words).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "compress/icae_examples.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;
using fedsplit::testing::expect_one_line_error;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

const Tokenizer& spm() {
  static const auto tok = load_tokenizer(fedsplit::testing::fixtures() + "/hf-tiny/tokenizers/spm-bpe.model");
  return *tok;
}

// n examples with distinct contexts; example k is in group "g<k / per_group>" (per_group 0: no group).
std::vector<IcaeTextExample> numbered(int n, int per_group) {
  std::vector<IcaeTextExample> out;
  for (int k = 0; k < n; ++k)
    out.push_back({"the text of example " + std::to_string(k), "Question: what?\nAnswer:", "number " + std::to_string(k),
                   per_group > 0 ? "g" + std::to_string(k / per_group) : ""});
  return out;
}

IcaeExampleOptions opts(int64_t batch, double val_fraction, uint64_t split_seed = 0, uint64_t shuffle_seed = 0) {
  IcaeExampleOptions o;
  o.context_tokens = 32;
  o.tail_tokens = 24;
  o.batch_size = batch;
  o.val_fraction = val_fraction;
  o.split_seed = split_seed;
  o.shuffle_seed = shuffle_seed;
  return o;
}

std::vector<int64_t> row(const torch::Tensor& t, int64_t b) {
  const auto r = t[b].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

// ---- JSONL -------------------------------------------------------------------------------------

TEST(IcaeExamples, JsonlRoundTrip) {
  TempDir dir("icae_roundtrip");
  const std::vector<IcaeTextExample> examples = {
      {"A context.", "Question: who?\nAnswer:", "Someone", "1861 Abraham Lincoln"},
      {"Quotes \" and \\ and \u00e9 survive.\nSecond line.", "", "yes", ""},
  };
  const std::string path = dir / "ex.jsonl";
  write_icae_examples(examples, path);
  EXPECT_EQ(read_icae_examples(path), examples);
  // No "group" key when it is empty; keys in the documented order.
  const std::string text = fedsplit::testing::read_text(path);
  EXPECT_EQ(text.find("\"group\":\"\""), std::string::npos);
  EXPECT_EQ(text.rfind("{\"context\":\"A context.\",\"prompt\":", 0), 0u) << text;
}

TEST(IcaeExamples, ReadSkipsBlankLinesAndKeepsNumericGroups) {
  TempDir dir("icae_numeric");
  const std::string path = dir / "ex.jsonl";
  write_text(path, "\n{\"context\": \"c\", \"prompt\": \"p\", \"answer\": \"a\", \"group\": 1861, \"extra\": 1}\n  \n");
  const auto ex = read_icae_examples(path);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].group, "1861");
  EXPECT_EQ(ex[0].answer, "a");
}

TEST(IcaeExamples, ReadErrorsNameTheFileLineAndField) {
  TempDir dir("icae_errors");
  const std::string good = "{\"context\": \"c\", \"prompt\": \"p\", \"answer\": \"a\"}\n";
  const std::string missing = dir / "missing.jsonl";
  write_text(missing, good + "{\"context\": \"c\", \"prompt\": \"p\"}\n");
  expect_one_line_error<FormatError>([&] { read_icae_examples(missing); },
                                     {missing + ":2:", "\"answer\"", "missing", "expected {\"context\", \"prompt\", \"answer\""});
  const std::string bad_json = dir / "bad.jsonl";
  write_text(bad_json, good + "\n{\"context\": \"c\", \n");
  expect_one_line_error<FormatError>([&] { read_icae_examples(bad_json); }, {bad_json + ":3:", "invalid JSON", "expected"});
  const std::string empty_context = dir / "empty_context.jsonl";
  write_text(empty_context, "{\"context\": \"\", \"prompt\": \"p\", \"answer\": \"a\"}\n");
  expect_error<FormatError>([&] { read_icae_examples(empty_context); }, {empty_context + ":1:", "\"context\"", "empty"});
  const std::string wrong_type = dir / "wrong_type.jsonl";
  write_text(wrong_type, "{\"context\": \"c\", \"prompt\": 3, \"answer\": \"a\"}\n");
  expect_error<FormatError>([&] { read_icae_examples(wrong_type); }, {wrong_type + ":1:", "\"prompt\"", "not a string"});
  const std::string bad_group = dir / "bad_group.jsonl";
  write_text(bad_group, "{\"context\": \"c\", \"prompt\": \"\", \"answer\": \"a\", \"group\": true}\n");
  expect_error<FormatError>([&] { read_icae_examples(bad_group); }, {bad_group + ":1:", "\"group\""});
  const std::string empty = dir / "empty.jsonl";
  write_text(empty, "\n  \n");
  expect_error<DataError>([&] { read_icae_examples(empty); }, {empty, "no examples"});
  expect_error<IoError>([&] { read_icae_examples(dir / "absent.jsonl"); }, {dir / "absent.jsonl"});
}

// ---- batches -----------------------------------------------------------------------------------

TEST(IcaeExampleStream, BatchLayoutPadsAndTargetsTheAnswerOnly) {
  const Tokenizer& tok = spm();
  ASSERT_GE(tok.eos_id(), 0);
  const std::vector<IcaeTextExample> examples = {
      {"The quick brown fox jumps over the lazy dog.", "Question: What jumps?\nAnswer:", "The fox", ""},
      {"A second and somewhat longer context sentence, with a comma.", "", "An answer without a prompt", ""},
  };
  IcaeExampleStream stream(examples, tok, opts(2, 0.0), "layout-test");
  ASSERT_EQ(stream.num_train(), 2);
  ASSERT_EQ(stream.num_val(), 0);
  const int64_t C = 32, Q = 24;
  const auto batch = stream.next_batch();
  ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{2, C + Q}));
  ASSERT_EQ(batch.targets.sizes(), (std::vector<int64_t>{2, Q}));
  EXPECT_EQ(batch.input_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);

  std::set<std::vector<int64_t>> seen_contexts;
  for (int64_t b = 0; b < 2; ++b) {
    const auto in = row(batch.input_ids, b);
    const auto tg = row(batch.targets, b);
    // Which example is this row? Its context tokens tell.
    const TokenizedIcaeExample* ex = nullptr;
    for (const auto& e : stream.train_examples())
      if (std::equal(e.context.begin(), e.context.end(), in.begin())) ex = &e;
    ASSERT_NE(ex, nullptr);
    seen_contexts.insert(ex->context);
    // Tokens as the tokenizer gives them, EOS appended to the answer.
    const auto ids = [&](const std::string& s) {
      const auto v = tok.encode(s);
      return std::vector<int64_t>(v.begin(), v.end());
    };
    EXPECT_EQ(ex->context, ids(ex->text.context));
    EXPECT_EQ(ex->prompt, ex->text.prompt.empty() ? std::vector<int64_t>{} : ids(ex->text.prompt));
    auto answer = ids(ex->text.answer);
    answer.push_back(tok.eos_id());
    EXPECT_EQ(ex->answer, answer);
    const auto tail = ex->tail();
    const auto n_ctx = static_cast<int64_t>(ex->context.size());
    const auto n_tail = static_cast<int64_t>(tail.size());
    const auto n_prompt = static_cast<int64_t>(ex->prompt.size());
    ASSERT_LE(n_ctx, C);
    ASSERT_LE(n_tail, Q);
    for (int64_t i = 0; i < C; ++i) EXPECT_EQ(in[i], i < n_ctx ? ex->context[i] : -1) << "context position " << i;
    for (int64_t j = 0; j < Q; ++j) EXPECT_EQ(in[C + j], j < n_tail ? tail[j] : -1) << "tail position " << j;
    EXPECT_EQ(in[C + n_tail - 1], tok.eos_id());
    int64_t scored = 0;
    for (int64_t j = 0; j < Q; ++j) {
      const bool answer_next = j + 1 >= n_prompt && j + 1 < n_tail;
      EXPECT_EQ(tg[j], answer_next ? tail[j + 1] : -100) << "target " << j;
      scored += answer_next;
    }
    // Every answer token is scored, except the first tail token when there is no prompt.
    EXPECT_EQ(scored, n_prompt > 0 ? static_cast<int64_t>(ex->answer.size()) : static_cast<int64_t>(ex->answer.size()) - 1);
    EXPECT_EQ(tg[n_tail - 2], tok.eos_id());  // the last scored target is EOS
  }
  EXPECT_EQ(seen_contexts.size(), 2u);
}

TEST(IcaeExampleStream, SplitKeepsGroupsTogetherAndIsDeterministic) {
  const auto examples = numbered(30, 3);  // 10 groups of 3
  IcaeExampleStream a(examples, spm(), opts(4, 0.2, 7), "split-test");
  IcaeExampleStream b(examples, spm(), opts(4, 0.2, 7), "split-test");
  EXPECT_EQ(a.num_val(), 6);  // round(0.2 * 10) = 2 groups of 3
  EXPECT_EQ(a.num_train(), 24);
  std::map<std::string, std::set<bool>> side;  // group -> held out?
  for (const auto& e : a.train_examples()) side[e.text.group].insert(false);
  for (const auto& e : a.val_examples()) side[e.text.group].insert(true);
  EXPECT_EQ(side.size(), 10u);
  for (const auto& [g, sides] : side) EXPECT_EQ(sides.size(), 1u) << "group " << g << " is split";
  // Same seed, same split, input order kept on both sides.
  ASSERT_EQ(b.num_val(), a.num_val());
  for (int64_t k = 0; k < a.num_val(); ++k) EXPECT_EQ(a.val_examples()[k].number, b.val_examples()[k].number);
  for (int64_t k = 1; k < a.num_val(); ++k) EXPECT_LT(a.val_examples()[k - 1].number, a.val_examples()[k].number);
  // Some other seed holds out other groups.
  bool differs = false;
  for (uint64_t seed = 8; seed < 16 && !differs; ++seed) {
    IcaeExampleStream c(examples, spm(), opts(4, 0.2, seed), "split-test");
    differs = c.val_examples().front().number != a.val_examples().front().number;
  }
  EXPECT_TRUE(differs);
  // Without groups every example is its own group; a small fraction still holds out one.
  IcaeExampleStream solo(numbered(6, 0), spm(), opts(2, 0.05), "solo");
  EXPECT_EQ(solo.num_val(), 1);
  // val batches: B rows, the last smaller, capped by max_batches.
  const auto val = a.val_batches();
  ASSERT_EQ(val.size(), 2u);
  EXPECT_EQ(val[0].input_ids.size(0), 4);
  EXPECT_EQ(val[1].input_ids.size(0), 2);
  EXPECT_EQ(a.val_batches(1).size(), 1u);
  EXPECT_TRUE(torch::equal(a.val_batches(1)[0].targets, val[0].targets));
}

TEST(IcaeExampleStream, EpochsFollowTheEpochPermutation) {
  const auto examples = numbered(10, 0);
  IcaeExampleStream s(examples, spm(), opts(3, 0.0, 0, 5), "epoch-test");
  ASSERT_EQ(s.batches_per_epoch(), 3);  // floor(10 / 3): the partial batch is dropped
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto perm = epoch_permutation(10, 5, epoch);
    std::set<int64_t> seen;
    for (int64_t k = 0; k < 3; ++k) {
      EXPECT_EQ(s.position(), (DataPosition{epoch, k}));
      const auto batch = s.next_batch();
      std::vector<const TokenizedIcaeExample*> rows;
      for (int64_t r = 0; r < 3; ++r) {
        rows.push_back(&s.train_examples()[static_cast<size_t>(perm[static_cast<size_t>(k * 3 + r)])]);
        seen.insert(perm[static_cast<size_t>(k * 3 + r)]);
      }
      const auto want = IcaeExampleStream::make_batch(rows, 32, 24);
      EXPECT_TRUE(torch::equal(batch.input_ids, want.input_ids)) << "epoch " << epoch << " batch " << k;
      EXPECT_TRUE(torch::equal(batch.targets, want.targets));
    }
    EXPECT_EQ(seen.size(), 9u);  // each example at most once, one left out by the dropped batch
  }
  EXPECT_EQ(s.position(), (DataPosition{3, 0}));
}

TEST(IcaeExampleStream, SeekResumesTheSameBatches) {
  const auto examples = numbered(10, 0);
  IcaeExampleStream a(examples, spm(), opts(3, 0.0, 0, 9), "resume-test");
  for (int i = 0; i < 4; ++i) a.next_batch();
  const DataPosition saved = a.position();
  EXPECT_EQ(saved, (DataPosition{1, 1}));
  IcaeExampleStream b(examples, spm(), opts(3, 0.0, 0, 9), "resume-test");
  EXPECT_EQ(b.fingerprint(), a.fingerprint());
  b.seek(saved);
  for (int i = 0; i < 4; ++i) {
    const auto x = a.next_batch(), y = b.next_batch();
    EXPECT_TRUE(torch::equal(x.input_ids, y.input_ids));
    EXPECT_TRUE(torch::equal(x.targets, y.targets));
  }
  EXPECT_EQ(a.position(), b.position());
  expect_error<DataError>([&] { b.seek({0, 3}); }, {"(epoch 0, batch 3)", "resume-test", "3 batches"});
  expect_error<DataError>([&] { b.seek({-1, 0}); }, {"does not exist"});
  IcaeExampleStream other(examples, spm(), opts(3, 0.0, 0, 10), "resume-test");
  EXPECT_NE(other.fingerprint(), a.fingerprint());
}

TEST(IcaeExampleStream, LengthAndOptionErrorsNameTheKey) {
  auto examples = numbered(4, 0);
  examples[1].context = "a much longer context than four tokens could ever hold, by a wide margin";
  const auto n_ctx = static_cast<int64_t>(spm().encode(examples[1].context).size());
  auto o = opts(2, 0.0);
  o.context_tokens = 12;
  ASSERT_GT(n_ctx, 12);
  expect_one_line_error<DataError>(
      [&] { IcaeExampleStream(examples, spm(), o, "long.jsonl"); },
      {"long.jsonl", "example 2", std::to_string(n_ctx) + " tokens", "raise icae.context_tokens to at least " + std::to_string(n_ctx)});
  examples = numbered(4, 0);
  examples[2].answer = "an answer far too long for the handful of tail positions it is given here";
  const auto n_tail = static_cast<int64_t>(spm().encode(examples[2].prompt).size() + spm().encode(examples[2].answer).size() + 1);
  o = opts(2, 0.0);
  o.tail_tokens = 30;
  ASSERT_GT(n_tail, 30);
  expect_one_line_error<DataError>([&] { IcaeExampleStream(examples, spm(), o, "sotu-qa"); },
                                   {"sotu-qa", "example 3", std::to_string(n_tail) + " tokens",
                                    "raise icae.tail_tokens to at least " + std::to_string(n_tail)});

  const auto ok = numbered(4, 0);
  auto bad = opts(2, 0.0);
  bad.context_tokens = 0;
  expect_error<ConfigError>([&] { IcaeExampleStream(ok, spm(), bad, "x"); }, {"icae.context_tokens"});
  bad = opts(2, 0.0);
  bad.tail_tokens = 0;
  expect_error<ConfigError>([&] { IcaeExampleStream(ok, spm(), bad, "x"); }, {"icae.tail_tokens"});
  expect_error<ConfigError>([&] { IcaeExampleStream(ok, spm(), opts(0, 0.0), "x"); }, {"data.batch_size"});
  expect_error<ConfigError>([&] { IcaeExampleStream(ok, spm(), opts(2, 1.0), "x"); }, {"data.val_fraction"});
  expect_error<ConfigError>([&] { IcaeExampleStream(ok, spm(), opts(2, -0.1), "x"); }, {"data.val_fraction"});
  expect_error<DataError>([&] { IcaeExampleStream(ok, spm(), opts(5, 0.0), "few"); },
                          {"few", "fewer training examples than data.batch_size"});
  // A single group: round(0.4 * 1) = 0 holds out nothing; round(0.5 * 1) = 1 would leave no training example.
  const auto one_group = numbered(4, 4);
  EXPECT_EQ(IcaeExampleStream(one_group, spm(), opts(2, 0.4), "one-group").num_val(), 0);
  expect_error<DataError>([&] { IcaeExampleStream(one_group, spm(), opts(2, 0.5), "one-group"); },
                          {"one-group", "no training example", "data.val_fraction"});
}

// ---- State of the Union questions --------------------------------------------------------------

std::string words(const std::string& tag, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? (i % 7 == 0 ? "\n" : " ") : "") + tag + std::to_string(i);
  return s;
}

std::vector<Document> addresses() {
  return {
      {words("lin", 40), {{"president", "Abraham Lincoln"}, {"year", "1861"}, {"party", "Republican"}}},
      {words("was", 200), {{"president", "George Washington"}, {"year", "1790"}}},
      {words("ada", 15), {{"president", "John Adams"}, {"year", "1797"}}},  // shorter than a passage
  };
}

TEST(IcaeSotuQa, ThreeQuestionsPerPassageDeterministicAndGrouped) {
  SotuQaOptions o;
  o.passage_words = 20;
  o.passages_per_address = 2;
  o.seed = 3;
  const auto ex = sotu_qa_examples(addresses(), o);
  ASSERT_EQ(ex.size(), 15u);  // 2 + 2 + 1 passages, 3 questions each
  EXPECT_EQ(sotu_qa_examples(addresses(), o), ex);
  o.seed = 4;
  EXPECT_NE(sotu_qa_examples(addresses(), o), ex);

  const auto docs = addresses();
  const std::vector<std::string> groups = {"1861 Abraham Lincoln", "1861 Abraham Lincoln", "1790 George Washington",
                                           "1790 George Washington", "1797 John Adams"};
  for (size_t p = 0; p < 5; ++p) {
    const auto& who = ex[3 * p];
    const auto& when = ex[3 * p + 1];
    const auto& follow = ex[3 * p + 2];
    SCOPED_TRACE("passage " + std::to_string(p) + ": " + who.context);
    EXPECT_EQ(who.context, when.context);
    EXPECT_EQ(who.context, follow.context);
    for (const auto* e : {&who, &when, &follow}) EXPECT_EQ(e->group, groups[p]);
    EXPECT_EQ(who.prompt, "Question: Which president delivered this address?\nAnswer:");
    EXPECT_EQ(who.answer, groups[p].substr(5));
    EXPECT_EQ(when.prompt, "Question: In which year was this address delivered?\nAnswer:");
    EXPECT_EQ(when.answer, groups[p].substr(0, 4));
    // The context is consecutive words of the address, joined by single spaces.
    const size_t doc = p < 2 ? 0 : p < 4 ? 1 : 2;
    std::string flat = docs[doc].text;
    for (auto& c : flat)
      if (c == '\n') c = ' ';
    EXPECT_NE(flat.find(who.context), std::string::npos);
    const auto n_words = std::count(who.context.begin(), who.context.end(), ' ') + 1;
    EXPECT_EQ(n_words, doc == 2 ? 15 : 20);
    // The extractive answer: 6 words that follow the 4 quoted ones in the context.
    const std::string head = "Question: Which words follow \"";
    ASSERT_EQ(follow.prompt.rfind(head, 0), 0u);
    const auto close = follow.prompt.find("\" in the passage?\nAnswer:");
    ASSERT_NE(close, std::string::npos);
    const std::string quote = follow.prompt.substr(head.size(), close - head.size());
    EXPECT_EQ(std::count(quote.begin(), quote.end(), ' '), 3);
    EXPECT_EQ(std::count(follow.answer.begin(), follow.answer.end(), ' '), 5);
    const auto at = (" " + follow.context + " ").find(" " + quote + " " + follow.answer + " ");
    ASSERT_NE(at, std::string::npos);
    // At least 2 words remain after the answer.
    const std::string after = follow.context.substr(at + quote.size() + 1 + follow.answer.size());
    EXPECT_GE(std::count(after.begin(), after.end(), ' '), 2) << after;
  }
  // Passages of one address come in text order.
  EXPECT_LE(docs[1].text.find(ex[6].context.substr(0, 6)), docs[1].text.find(ex[9].context.substr(0, 6)));
}

TEST(IcaeSotuQa, MissingMetadataAndBadOptions) {
  auto docs = addresses();
  docs[1].meta.erase("year");
  expect_error<DataError>([&] { sotu_qa_examples(docs, SotuQaOptions{}); }, {"address 2", "\"year\""});
  SotuQaOptions o;
  o.passage_words = 11;
  expect_error<ConfigError>([&] { sotu_qa_examples(addresses(), o); }, {"passage_words"});
  o = SotuQaOptions{};
  o.passages_per_address = 0;
  expect_error<ConfigError>([&] { sotu_qa_examples(addresses(), o); }, {"passages_per_address"});
}

TEST(IcaeSotuQa, FeedsTheStream) {
  SotuQaOptions o;
  o.passage_words = 20;
  const auto ex = sotu_qa_examples(addresses(), o);
  IcaeExampleOptions so = opts(2, 0.34);
  so.context_tokens = 256;  // "lin12"-style words take several tokens each
  so.tail_tokens = 128;
  IcaeExampleStream s(ex, spm(), so, "sotu-qa");
  EXPECT_EQ(s.num_train() + s.num_val(), 15);
  EXPECT_GT(s.num_val(), 0);
  std::set<std::string> train_groups, val_groups;
  for (const auto& e : s.train_examples()) train_groups.insert(e.text.group);
  for (const auto& e : s.val_examples()) val_groups.insert(e.text.group);
  for (const auto& g : val_groups) EXPECT_EQ(train_groups.count(g), 0u) << g;
  EXPECT_NE(s.summary().find("sotu-qa"), std::string::npos);
}

}  // namespace
}  // namespace fedsplit
