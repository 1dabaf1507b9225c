// labels: unit
// Split learning through the executable (run.mode = split), in one process: vanilla and U-shaped
// split training with fp32 codecs give centralized training's model on the same batches; SplitFed V1
// averages what each client would train alone; SplitLoRA moves only adapters; an int8 codec and
// smashed-data noise are counted and change the loss as they should; bad keys are refused.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;
using fedsplit::path_exists;

namespace {

// The federated test recipe (four speakers as clients, a 2-block model) as a split run.
std::string split_recipe(const TempDir& tmp, const std::string& dir, const std::string& split, const std::string& fed = "") {
  std::string recipe = fedavg_recipe(tmp, dir, "local_steps = 3\n" + (fed.empty() ? "rounds = 2\n" : fed));
  recipe.replace(recipe.find("mode = federated"), 16, "mode = split");
  return recipe + "\n[split]\n" + split;
}

fedsplit::TensorMap model_of(const std::string& run_dir) { return fedsplit::load_safetensors(run_dir + "/model/model.safetensors"); }

nlohmann::json summary_of(const std::string& run_dir) { return nlohmann::json::parse(read_text(run_dir + "/summary.json")); }

class CliSplit : public SharedDirSuite<CliSplit> {
 public:
  static constexpr const char* kDirName = "cli_split";
  static void prepare() {
    write_corpus(*tmp_ / "speakers.jsonl");
  }
};

}  // namespace

TEST_F(CliSplit, VanillaAndUShapedEqualCentralizedTraining) {
  // The same batches in the same order, AdamW on each side over its own parameters (the device's
  // moments travel with its weights from client to client): centralized training's model, to fp32
  // rounding (tolerance 1e-5 per weight and on the loss).
  const TempDir& tmp = *tmp_;
  const std::string central = run_ok(tmp, "central", split_recipe(tmp, tmp / "central", "scheme = none\n"));
  for (const std::string scheme : {"vanilla", "ushaped"}) {
    const std::string dir = run_ok(tmp, scheme, split_recipe(tmp, tmp / scheme, "scheme = " + scheme + "\n"));
    EXPECT_LE(max_difference(model_of(central), model_of(dir)), 1e-5) << scheme;
    const auto c = events(central, "round"), s = events(dir, "round");
    ASSERT_EQ(s.size(), 2u);
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_NEAR(c[i]["train_loss"].get<double>(), s[i]["train_loss"].get<double>(), 1e-5) << scheme << " round " << i + 1;
      EXPECT_EQ(c[i]["tokens"], s[i]["tokens"]);
      EXPECT_GT(s[i]["cut_bytes_up"].get<int64_t>(), 0);
    }
    EXPECT_NEAR(summary_of(central)["val_loss"].get<double>(), summary_of(dir)["val_loss"].get<double>(), 1e-5);
    EXPECT_LT(summary_of(dir)["val_loss"].get<double>(), summary_of(dir)["base_val_loss"].get<double>()) << "it learns";
  }
  // U-shape: the server gets no labels, and sends hidden states back: more bytes down than vanilla.
  EXPECT_GT(summary_of(tmp / "ushaped")["cut_bytes_down"].get<int64_t>(), summary_of(tmp / "vanilla")["cut_bytes_down"].get<int64_t>());
}

TEST_F(CliSplit, SplitFedV1AveragesWhatEachClientTrainsAlone) {
  // In SplitFed V1 every client starts the round from the same parts, with its own server copy and
  // fresh optimizers, so one round's model is the data-weighted mean of four single-client runs.
  const TempDir& tmp = *tmp_;
  const std::string fed = "rounds = 1\n";
  const std::string all = run_ok(tmp, "v1_all", split_recipe(tmp, tmp / "v1_all", "scheme = splitfed1\n", fed));
  const auto partition = nlohmann::json::parse(read_text(all + "/partition.json"));
  fedsplit::TensorMap mean;
  double total = 0;
  for (const auto& client : partition["client_list"]) {
    const std::string name = client["name"];
    std::string recipe = split_recipe(tmp, tmp / ("v1_" + name), "scheme = splitfed1\n", fed);
    recipe.replace(recipe.find("[data]\n"), 7, "[data]\nfilter = speaker=" + name + "\n");
    const std::string dir = run_ok(tmp, "v1_" + name, recipe);
    const double w = client["train_windows"].get<double>();
    EXPECT_EQ(nlohmann::json::parse(read_text(dir + "/partition.json"))["client_list"][0]["train_windows"], client["train_windows"]);
    for (const auto& [key, t] : model_of(dir)) mean[key] = mean.count(key) ? mean[key] + t * w : t * w;
    total += w;
  }
  for (auto& [key, t] : mean) t /= total;
  EXPECT_LE(max_difference(mean, model_of(all)), 1e-5);
}

TEST_F(CliSplit, SplitLoraMovesOnlyAdapters) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "base.ini", "[run]\ndir = " + (tmp / "base") + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
                                   model_section() + "[train]\nsteps = 20\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n");
  ASSERT_EQ(run_fedsplit("run " + (tmp / "base.ini")).exit_code, 0);
  const std::string lora = "\n[peft]\nmethod = lora\nr = 4\nalpha = 8\ntarget_modules = q_proj v_proj\n";
  auto with_base = [&](std::string recipe) {
    recipe.replace(recipe.find("[model]\n"), 8, "[model]\ninit = " + (tmp / "base/model") + "\n");
    return recipe;
  };
  const std::string full = run_ok(tmp, "v2_full", with_base(split_recipe(tmp, tmp / "v2_full", "scheme = splitfed2\n")));
  const std::string adapters = run_ok(tmp, "splitlora", with_base(split_recipe(tmp, tmp / "splitlora", "scheme = splitlora\n")) + lora);
  const auto f = summary_of(full), a = summary_of(adapters);
  EXPECT_TRUE(path_exists(adapters + "/adapter/adapter_model.safetensors"));
  EXPECT_LT(a["weight_bytes_up"].get<double>() * 20, f["weight_bytes_up"].get<double>()) << "adapters, not the device part";
  EXPECT_EQ(a["cut_bytes_up"], f["cut_bytes_up"]) << "the same activations cross the cut";
  // The adapters trained (B starts at zero) on both sides of the cut (q_proj of block 0 on the device,
  // of block 1 on the server).
  const auto adapter = fedsplit::load_safetensors(adapters + "/adapter/adapter_model.safetensors");
  int trained = 0;
  for (const auto& [name, t] : adapter)
    if (name.find("lora_B") != std::string::npos && t.abs().max().item<float>() > 0) ++trained;
  EXPECT_EQ(trained, 4) << "q_proj and v_proj of both blocks";
  EXPECT_NE(a["val_loss"], a["base_val_loss"]);
}

TEST_F(CliSplit, CodecsAndNoiseAreCountedAndFelt) {
  const TempDir& tmp = *tmp_;
  const std::string fp32 = tmp / "vanilla";
  if (!path_exists(fp32 + "/summary.json")) run_ok(tmp, "vanilla", split_recipe(tmp, fp32, "scheme = vanilla\n"));
  const std::string int8 = run_ok(tmp, "int8", split_recipe(tmp, tmp / "int8", "codec = int8\n"));
  const std::string noisy = run_ok(tmp, "noisy", split_recipe(tmp, tmp / "noisy", "noise_sigma = 1\n"));
  const auto f = summary_of(fp32), q = summary_of(int8), n = summary_of(noisy);
  // Up: activations (int8 + a scale per token instead of fp32) and the labels (int32 either way).
  EXPECT_LT(q["cut_bytes_up"].get<double>(), 0.6 * f["cut_bytes_up"].get<double>());
  EXPECT_EQ(q["cut_bytes_down"], f["cut_bytes_down"]) << "gradients stay fp32";
  EXPECT_NEAR(q["val_loss"].get<double>(), f["val_loss"].get<double>(), 0.02 * f["val_loss"].get<double>());
  // Noise as strong as the signal costs training progress.
  EXPECT_GT(n["val_loss"].get<double>(), f["val_loss"].get<double>());
  EXPECT_EQ(n["noise_sigma"], 1.0);
}

TEST_F(CliSplit, AStoppedRunResumesToTheSameModel) {
  // The checkpoint holds both parts, the relayed device moments and the server's AdamW state; every
  // turn seeds its own dropout. A run stopped after round 1 and resumed ends bit for bit where an
  // uninterrupted one does, with dropout on.
  const TempDir& tmp = *tmp_;
  for (const std::string scheme : {"vanilla", "splitfed1", "none"}) {
    std::string recipe = split_recipe(tmp, tmp / ("whole_" + scheme), "scheme = " + scheme + "\n");
    recipe.replace(recipe.find("[model]\n"), 8, "[model]\ndropout = 0.1\n");
    const std::string whole = run_ok(tmp, "whole_" + scheme, recipe);
    std::string parts = recipe;
    parts.replace(parts.find("dir = "), 6 + whole.size(), "dir = " + (tmp / ("parts_" + scheme)));
    write_text(tmp / ("parts_" + scheme + ".ini"), parts);
    auto r = run_fedsplit("run " + (tmp / ("parts_" + scheme + ".ini")) + " --run.stop_after=1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_fedsplit("run " + (tmp / ("parts_" + scheme + ".ini")) + " --resume");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(max_difference(model_of(whole), model_of(tmp / ("parts_" + scheme))), 0.0) << scheme;
    EXPECT_EQ(summary_of(whole)["bytes_up"], summary_of(tmp / ("parts_" + scheme))["bytes_up"]) << scheme;
    EXPECT_EQ(events(tmp / ("parts_" + scheme), "round").size(), 2u);
  }
}

TEST_F(CliSplit, KeysThatDoNotFitAreRefused) {
  const TempDir& tmp = *tmp_;
  const std::vector<std::pair<std::string, std::string>> cases{
      {"scheme = splitlora\n", "split.scheme = splitlora trains LoRA adapters on both parts: set peft.method = lora"},
      {"tail_cut = 2\n", "split.tail_cut is the ushaped scheme's"},
      {"cut = 2\n", "split.cut"},
      {"codec = int4\n", "split.codec"},
      {"scheme = ushaped\ntail_cut = 3\n", "split.tail_cut"}};
  for (const auto& [split, needle] : cases) {
    write_text(tmp / "bad.ini", split_recipe(tmp, tmp / "bad", split));
    const auto r = run_fedsplit("run " + (tmp / "bad.ini") + " --run.overwrite=true");
    EXPECT_NE(r.exit_code, 0) << split;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  }
}
