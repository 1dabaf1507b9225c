// labels: unit
// ICAE through the executable, end to end on a tiny model. ICAE's frozen decoder must be able to
// read its context, so the base is first trained on text whose lines repeat ("s | s"), where
// copying pays; a base that never learned to copy gains nothing from memory slots (measured: slots
// and no context tie). Then:
//   - run.mode = icae-pretrain (8 tokens -> 4 slots, autoencoding only) ends with held-out slots that
//     beat no context: a lower reconstruction loss and a lower continuation perplexity than the base
//     reading nothing (greedy reconstruction of this tiny model stays near zero BLEU: it cannot
//     reproduce text, only predict it better);
//   - a run stopped and resumed trains exactly as one that ran through;
//   - fedsplit icae compress writes ceil(n / 8) * 4 slots of the model's width, decode reads them;
//   - run.mode = icae-finetune on a user's JSONL continues the pretrained encoder and lowers the
//     held-out answer loss;
//   - wrong keys and data are refused with one line naming them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <sstream>

#include "compress/icae_examples.h"
#include "core/io/safetensors.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

std::string tokenizer_path() { return fixtures() + "/hf-tiny/tokenizers/spm-bpe.model"; }

// The fixture text cut into lines of 12 words.
std::vector<std::string> twelve_word_lines() {
  std::istringstream in(read_text(fixtures() + "/hf-tiny/tokenizers/training-text.txt"));
  std::vector<std::string> lines, words;
  for (std::string w; in >> w;) {
    words.push_back(w);
    if (words.size() == 12) {
      std::string line;
      for (const auto& x : words) line += (line.empty() ? "" : " ") + x;
      lines.push_back(line);
      words.clear();
    }
  }
  return lines;
}

// Paragraphs "s | s": a corpus on which a small model learns to copy from its context.
void write_copy_corpus(const std::string& path) {
  std::string text;
  for (const auto& line : twelve_word_lines()) text += line + " | " + line + "\n\n";
  write_text(path, text);
}

std::string data_section(const TempDir& tmp, const std::string& corpus, int64_t seq_len) {
  return "[data]\ncorpus = " + corpus + "\ntokenizer = " + tokenizer_path() + "\nseq_len = " + std::to_string(seq_len) +
         "\nbatch_size = 8\nval_fraction = 0.1\ncache_dir = " + (tmp / "cache") + "\n\n";
}

std::string base_recipe(const TempDir& tmp) {
  return "[run]\ndir = " + (tmp / "base") + "\nseed = 7\nthreads = 2\ndevice = cpu\n\n" +
         data_section(tmp, tmp / "copy.txt", 48) +
         "[model]\nhidden_size = 64\nlayers = 2\nheads = 4\nkv_heads = 2\nmax_position = 128\n\n"
         "[train]\nsteps = 1500\nlr = 3e-3\nwarmup_steps = 5\neval_every = 0\neval_batches = 2\n";
}

std::string pretrain_recipe(const TempDir& tmp, const std::string& dir, int64_t steps) {
  return "[run]\nmode = icae-pretrain\ndir = " + dir + "\nseed = 3\nthreads = 2\ndevice = cpu\n\n[model]\ninit = " +
         (tmp / "base/model") + "\n\n" +
         data_section(tmp, fixtures() + "/hf-tiny/tokenizers/training-text.txt", 12) +
         "[icae]\nsegment_tokens = 8\nratio = 2\ncontext_tokens = 8\nae_fraction = 1\neval_lengths = 8 16\neval_passages = 8\n\n"
         "[peft]\nmethod = lora\nr = 16\nalpha = 32\ndropout = 0\n"
         "target_modules = q_proj k_proj v_proj o_proj gate_proj up_proj down_proj\n\n"
         "[train]\nsteps = " + std::to_string(steps) +
         "\nlr = 1e-2\nwarmup_steps = 5\neval_every = 0\neval_batches = 4\ncheckpoint_every = 0\n";
}

// Questions whose answer is the first word of the context.
void write_examples(const std::string& path) {
  std::vector<fedsplit::IcaeTextExample> examples;
  const auto lines = twelve_word_lines();
  for (size_t i = 0; i < 96 && i < lines.size(); ++i)
    examples.push_back({lines[i], "Question: Which word comes first?\nAnswer:", lines[i].substr(0, lines[i].find(' ')),
                        std::to_string(i)});
  fedsplit::write_icae_examples(examples, path);
}

std::string finetune_recipe(const TempDir& tmp, const std::string& dir) {
  return "[run]\nmode = icae-finetune\ndir = " + dir + "\nseed = 3\nthreads = 2\ndevice = cpu\n\n[model]\ninit = " +
         (tmp / "base/model") + "\n\n[data]\ntokenizer = " + tokenizer_path() +
         "\nbatch_size = 8\nval_fraction = 0.2\n\n"
         "[icae]\nsegment_tokens = 8\nratio = 2\ncontext_tokens = 48\ntail_tokens = 32\nencoder = " +
         (tmp / "pre/encoder") + "\nexamples = " + (tmp / "qa.jsonl") +
         "\n\n[peft]\nmethod = lora\n\n"
         "[train]\nsteps = 40\nlr = 3e-3\nwarmup_steps = 2\neval_every = 40\neval_batches = 4\ncheckpoint_every = 0\n";
}

nlohmann::json summary_of(const std::string& run_dir) { return nlohmann::json::parse(read_text(run_dir + "/summary.json")); }

std::vector<double> logged(const std::string& run_dir, const std::string& event, const std::string& key) {
  std::vector<double> out;
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["event"] == event) out.push_back(j[key].get<double>());
  }
  return out;
}

class CliIcae : public SharedDirSuite<CliIcae> {
 public:
  static constexpr const char* kDirName = "cli_icae";
  static void prepare() {
    write_copy_corpus(*tmp_ / "copy.txt");
    run_ok(*tmp_, "base", base_recipe(*tmp_));
    run_ok(*tmp_, "pre", pretrain_recipe(*tmp_, *tmp_ / "pre", 300));
  }
};

}  // namespace

TEST_F(CliIcae, PretrainedSlotsBeatNoContext) {
  const auto summary = summary_of(*tmp_ / "pre");
  EXPECT_EQ(summary["memory_slots"], 4);
  ASSERT_EQ(summary["reconstruction"].size(), 2u);
  for (const auto& r : summary["reconstruction"]) {
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["passages"], 8);
    // Measured 4.44 vs 4.61 (8 tokens) and 4.20 vs 4.26 (16 tokens, two segments).
    EXPECT_LT(r["loss_with_slots"].get<double>(), r["loss_no_context"].get<double>() - 0.03);
    for (const char* key : {"bleu4", "token_match", "exact_match"}) {
      EXPECT_GE(r[key].get<double>(), 0.0);
      EXPECT_LE(r[key].get<double>(), 1.0);
    }
  }
  const auto& c = summary["continuation"];
  // Measured: 53.7 with slots, 49.7 with the full context, 59.8 with none (the [LM] embedding
  // never trains here: ae_fraction = 1).
  EXPECT_LT(c["ppl_with_slots"].get<double>(), 0.95 * c["ppl_no_context"].get<double>()) << c.dump();
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors", "icae.safetensors"})
    EXPECT_TRUE(fedsplit::path_exists(*tmp_ / ("pre/encoder/" + std::string(file)))) << file;
}

TEST_F(CliIcae, StoppedRunResumesExactly) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "whole.ini", pretrain_recipe(tmp, tmp / "whole", 12));
  write_text(tmp / "parts.ini", pretrain_recipe(tmp, tmp / "parts", 12));
  ASSERT_EQ(run_fedsplit("run " + (tmp / "whole.ini")).exit_code, 0);
  auto r = run_fedsplit("run " + (tmp / "parts.ini") + " --run.stop_after=5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "parts.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The resumed run appends to metrics.jsonl: all 12 steps, as in the run that went through.
  EXPECT_EQ(logged(tmp / "parts", "train", "loss"), logged(tmp / "whole", "train", "loss"));
  EXPECT_EQ(read_text(tmp / "parts/encoder/icae.safetensors"), read_text(tmp / "whole/encoder/icae.safetensors"));
}

TEST_F(CliIcae, CompressAndDecodeCommands) {
  const TempDir& tmp = *tmp_;
  const auto lines = twelve_word_lines();
  write_text(tmp / "passage.txt", lines[5] + " " + lines[6]);
  const std::string model = " --model " + (tmp / "base/model") + " --encoder " + (tmp / "pre/encoder");
  auto r = run_fedsplit("icae compress" + model + " --in " + (tmp / "passage.txt") + " --out " + (tmp / "slots.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto meta = fedsplit::load_safetensors_metadata(tmp / "slots.safetensors");
  const int64_t tokens = std::stoll(meta.at("tokens"));
  const auto slots = fedsplit::load_safetensors(tmp / "slots.safetensors").at("slots");
  EXPECT_EQ(slots.sizes(), (std::vector<int64_t>{(tokens + 7) / 8 * 4, 64}));
  for (const std::string task : {"ae", "lm"}) {
    r = run_fedsplit("icae decode" + model + " --slots " + (tmp / "slots.safetensors") + " --task " + task);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_GT(r.output.size(), 1u);
  }
  r = run_fedsplit("icae decode" + model + " --slots " + (tmp / "slots.safetensors") + " --task prompt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--prompt"), std::string::npos) << r.output;
  r = run_fedsplit("icae decode" + model + " --slots " + (tmp / "slots.safetensors") +
                   " --task prompt --prompt 'Question: Which word comes first?'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("icae compress --model " + (tmp / "base/model") + " --encoder " + (tmp / "base") + " --in " +
                   (tmp / "passage.txt") + " --out " + (tmp / "x.safetensors"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("icae.safetensors"), std::string::npos) << r.output;
}

TEST_F(CliIcae, FinetuneOnUserJsonlLowersTheAnswerLoss) {
  const TempDir& tmp = *tmp_;
  write_examples(tmp / "qa.jsonl");
  write_text(tmp / "ft.ini", finetune_recipe(tmp, tmp / "ft"));
  const auto r = run_fedsplit("run " + (tmp / "ft.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto evals = logged(tmp / "ft", "eval", "val_loss");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_LT(evals.back(), evals.front() - 0.2) << "held-out answer loss before and after";
  const auto summary = summary_of(tmp / "ft");
  EXPECT_GT(summary["examples"].get<int64_t>(), 10);
  EXPECT_LT(summary["answer_ppl_with_slots"].get<double>(), summary["answer_ppl_no_context"].get<double>());
}

TEST_F(CliIcae, BadKeysAndDataAreRefused) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "bad.ini", pretrain_recipe(tmp, tmp / "bad", 2));
  auto refused = [&](const std::string& overrides, const std::vector<std::string>& needles) {
    const auto r = run_fedsplit("run " + (tmp / "bad.ini") + " --run.overwrite=true " + overrides);
    EXPECT_NE(r.exit_code, 0) << overrides;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << overrides << ": " << r.output;
  };
  refused("--icae.ratio=3", {"icae.ratio", "icae.segment_tokens"});
  refused("--peft.method=none", {"peft.method = lora"});
  refused("--data.seq_len=8", {"data.seq_len", "icae.context_tokens"});
  refused("--model.init=", {"model.init"});
  refused("--run.mode=icae-finetune --icae.examples=" + (tmp / "missing.jsonl"), {"missing.jsonl"});
  write_examples(tmp / "long.jsonl");
  refused("--run.mode=icae-finetune --icae.context_tokens=4 --icae.examples=" + (tmp / "long.jsonl"),
          {"icae.context_tokens"});
}
