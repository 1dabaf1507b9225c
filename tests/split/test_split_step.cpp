// labels: unit
// split/split_step with a device and a server as two thread-ranks of an in-process World: split
// training with fp32 codecs equals centralized training (vanilla and U-shaped), the labels never
// cross the wire in U-shape, and int8 training still learns on a quarter of the bytes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/comm/world.h"
#include "core/util/error.h"
#include "split/channel.h"
#include "split/codec.h"
#include "peft/lora.h"
#include "split/split_step.h"
#include "tests/split/split_test_helpers.h"
#include "tests/test_support.h"
#include "train/adamw.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

using testing::max_diff;
using testing::random_ids;
using testing::seeded_model;
using testing::small_config;

constexpr int kServerRank = 0;
constexpr int kDeviceRank = 1;
constexpr double kLr = 1e-2;

struct StepBatch {
  torch::Tensor ids;
  torch::Tensor targets;
};

std::vector<StepBatch> batches(int64_t count, uint64_t seed) {
  std::vector<StepBatch> out;
  for (int64_t i = 0; i < count; ++i)
    out.push_back({random_ids(64, 2, 8, seed + 2 * i), random_ids(64, 2, 8, seed + 2 * i + 1)});
  return out;
}

// Wraps a channel and keeps every message it sends and receives.
class RecordingChannel : public Channel {
 public:
  explicit RecordingChannel(Channel& inner) : inner_(inner) {}
  void send(const std::string& bytes) override {
    sent.push_back(bytes);
    inner_.send(bytes);
  }
  std::string receive() override {
    received.push_back(inner_.receive());
    return received.back();
  }
  std::string peer_name() const override { return inner_.peer_name(); }

  std::vector<std::string> sent;
  std::vector<std::string> received;

 private:
  Channel& inner_;
};

struct SplitRun {
  std::vector<SplitStepReport> device_reports;
  std::vector<SplitStepReport> server_reports;
  std::vector<std::string> device_sent;      // every message the device sent
  std::vector<std::string> server_received;  // every message the server received
};

// Trains `device_model` and `server_model` (copies of one model) on `data` with the split step, the
// server and the device each on its own thread-rank of the World `group`.
SplitRun train_split(const std::string& group, Decoder device_model, Decoder server_model, const SplitOptions& options,
                     const std::vector<StepBatch>& data) {
  SplitRun run;
  std::string errors[2];
  auto rank_main = [&](int rank) {
    try {
      auto world = World::in_process(group, rank, 2);
      if (rank == kServerRank) {
        WorldChannel wire(*world, kDeviceRank);
        RecordingChannel recorded(wire);
        SplitServer server(server_model, options);
        for (size_t i = 0; i < data.size(); ++i) run.server_reports.push_back(server.step(recorded, kLr));
        run.server_received = recorded.received;
      } else {
        WorldChannel wire(*world, kServerRank);
        RecordingChannel recorded(wire);
        SplitDevice device(device_model, options);
        for (const auto& b : data) run.device_reports.push_back(device.step(recorded, b.ids, b.targets, kLr));
        run.device_sent = recorded.sent;
      }
      world->barrier();
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread server(rank_main, kServerRank), device(rank_main, kDeviceRank);
  server.join();
  device.join();
  EXPECT_EQ(errors[0], "") << "server";
  EXPECT_EQ(errors[1], "") << "device";
  return run;
}

// Centralized training of `model` on `data` with the project's AdamW: the reference. Returns the losses.
std::vector<double> train_centralized(Decoder model, const AdamWOptions& options, const std::vector<StepBatch>& data) {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& item : model->named_parameters()) params.emplace_back(item.key(), item.value());
  AdamW optimizer(params, options);
  model->train();
  std::vector<double> losses;
  for (const auto& b : data) {
    optimizer.zero_grad();
    const auto loss = next_token_loss(model->forward(b.ids), b.targets);
    loss.backward();
    optimizer.step(kLr);
    losses.push_back(loss.item<double>());
  }
  return losses;
}

// Split training equals centralized training: losses step by step, and every final parameter,
// taken from the party that owns it.
// `prepare` (e.g. applying LoRA) runs on every copy of the model.
void expect_split_equals_centralized(const std::string& group, const DecoderConfig& config, const SplitCut& cut,
                                     const std::function<void(Decoder&)>& prepare = {}) {
  const auto data = batches(5, 100);
  SplitOptions options;
  options.cut = cut;
  auto copy = [&] {
    auto model = seeded_model(config, 21);
    if (prepare) prepare(model);
    return model;
  };
  auto reference = copy();
  auto initial = copy();
  const auto losses = train_centralized(reference, options.adamw, data);

  auto device_model = copy();
  auto server_model = copy();
  const auto run = train_split(group, device_model, server_model, options, data);
  ASSERT_EQ(run.device_reports.size(), data.size());
  ASSERT_EQ(run.server_reports.size(), data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    // The loss is known where it is computed: the server in vanilla, the device in U-shape.
    const auto& computed = cut.u_shaped() ? run.device_reports[i] : run.server_reports[i];
    const auto& blind = cut.u_shaped() ? run.server_reports[i] : run.device_reports[i];
    EXPECT_NEAR(computed.loss, losses[i], 1e-5 * std::abs(losses[i])) << "step " << i;
    EXPECT_TRUE(std::isnan(blind.loss)) << "step " << i;
  }

  CutModel sides(device_model, cut);
  const auto device_params = device_model->named_parameters();
  const auto server_params = server_model->named_parameters();
  const auto initial_params = initial->named_parameters();
  for (const auto& item : reference->named_parameters()) {
    const bool on_device = sides.side_of(item.key()) == SplitSide::device;
    const auto& got = (on_device ? device_params : server_params)[item.key()];
    EXPECT_LE(max_diff(got, item.value()), 1e-5) << item.key();
    if (item.value().requires_grad())
      EXPECT_GT(max_diff(item.value(), initial_params[item.key()]), 1e-4) << item.key() << " did not train";
    else
      EXPECT_TRUE(torch::equal(item.value(), initial_params[item.key()])) << item.key() << " is frozen";
  }
}

TEST(SplitStep, VanillaTrainingEqualsCentralizedLlama) {
  expect_split_equals_centralized("split_vanilla_llama", small_config(ModelFamily::llama, false), {2, 0});
}

TEST(SplitStep, VanillaTrainingEqualsCentralizedGpt2) {
  expect_split_equals_centralized("split_vanilla_gpt2", small_config(ModelFamily::gpt2, false), {1, 0});
}

TEST(SplitStep, UShapedTrainingEqualsCentralizedLlama) {
  expect_split_equals_centralized("split_u_llama", small_config(ModelFamily::llama, false), {1, 3});
}

TEST(SplitStep, UShapedTrainingEqualsCentralizedTiedGpt2) {
  expect_split_equals_centralized("split_u_gpt2", small_config(ModelFamily::gpt2, true), {2, 4});
}

TEST(SplitStep, LoraTrainingEqualsCentralizedAndMovesOnlyTheAdapters) {
  LoraOptions lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  expect_split_equals_centralized("split_lora", small_config(ModelFamily::llama, false), {2, 0},
                                  [&](Decoder& model) { apply_lora(model, lora, 3); });
}

// The message and each recorded message's bytes carry the labels if one equals their encoding or
// holds their int32 values as a substring (in any framing).
bool carries(const std::vector<std::string>& messages, const torch::Tensor& targets) {
  const std::string encoded = encode_token_ids(targets);
  const auto raw = targets.to(torch::kInt32).contiguous();
  const std::string values(static_cast<const char*>(raw.data_ptr()), raw.numel() * 4);
  for (const auto& m : messages)
    if (m == encoded || m.find(values) != std::string::npos) return true;
  return false;
}

TEST(SplitStep, LabelsNeverCrossTheWireInUShape) {
  const auto config = small_config(ModelFamily::llama, false);
  const auto data = batches(2, 300);
  for (const bool u_shaped : {false, true}) {
    SplitOptions options;
    options.cut = u_shaped ? SplitCut{1, 3} : SplitCut{2, 0};
    const auto run = train_split(u_shaped ? "split_labels_u" : "split_labels_vanilla", seeded_model(config, 5),
                                 seeded_model(config, 5), options, data);
    ASSERT_EQ(run.server_received.size(), run.device_sent.size());
    EXPECT_EQ(run.server_received, run.device_sent);  // the recording sees what crosses, at both ends
    for (const auto& b : data) {
      // Vanilla sends the labels, so the check can see them; U-shape must not.
      EXPECT_EQ(carries(run.server_received, b.targets), !u_shaped) << (u_shaped ? "U-shaped" : "vanilla");
    }
    if (u_shaped) {
      for (const auto& m : run.server_received)
        EXPECT_THROW(decode_token_ids(m, "recorded"), FormatError) << "a token-id message reached the server";
      // Per step: the activation up, the gradient at tail_cut up; nothing else.
      EXPECT_EQ(run.device_sent.size(), 2 * data.size());
    }
  }
}

TEST(SplitStep, Int8TrainingLearnsOnAQuarterOfTheBytes) {
  const auto config = small_config(ModelFamily::llama, false);
  const std::vector<StepBatch> data(12, batches(1, 700).front());  // one batch, repeated: the loss must fall
  SplitOptions fp32;
  fp32.cut = {2, 0};
  SplitOptions int8 = fp32;
  int8.activation_codec = parse_codec("int8");
  int8.gradient_codec = parse_codec("int8");
  const auto exact = train_split("split_fp32", seeded_model(config, 9), seeded_model(config, 9), fp32, data);
  const auto coded = train_split("split_int8", seeded_model(config, 9), seeded_model(config, 9), int8, data);
  ASSERT_EQ(coded.server_reports.size(), data.size());

  const double first = coded.server_reports.front().loss, last = coded.server_reports.back().loss;
  EXPECT_LT(last, 0.8 * first) << "int8 split training did not learn";
  EXPECT_NEAR(last, exact.server_reports.back().loss, 0.1 * exact.server_reports.back().loss);

  // Exact sizes per step, for activations [2, 8, 32]: a 32-byte header, then fp32 values, or one
  // fp32 scale per token and int8 values; the targets travel as 16 int32 ids with a 24-byte header.
  const int64_t tokens = 16, hidden = 32, header = 32, targets = 24 + 4 * tokens;
  const auto& e = exact.device_reports.front();
  const auto& c = coded.device_reports.front();
  EXPECT_EQ(e.bytes_up, header + 4 * tokens * hidden + targets);
  EXPECT_EQ(e.bytes_down, header + 4 * tokens * hidden);
  EXPECT_EQ(c.bytes_up, header + 4 * tokens + tokens * hidden + targets);
  EXPECT_EQ(c.bytes_down, header + 4 * tokens + tokens * hidden);
  EXPECT_EQ(e.messages_up, 2);
  EXPECT_EQ(e.messages_down, 1);
  // Both parties count the same step.
  EXPECT_EQ(c.bytes_up, coded.server_reports.front().bytes_up);
  EXPECT_EQ(c.bytes_down, coded.server_reports.front().bytes_down);
  // The payload is a quarter of fp32's plus one fp32 scale per token of `hidden` values.
  EXPECT_DOUBLE_EQ(double(c.bytes_down - header) / double(e.bytes_down - header), 0.25 + 1.0 / hidden);
}

TEST(SplitStep, SeededNoiseReachesTheWireAndRepeats) {
  const auto config = small_config(ModelFamily::llama, false);
  const auto data = batches(2, 900);
  auto run_with = [&](const std::string& group, double sigma, uint64_t seed) {
    SplitOptions options;
    options.cut = {2, 0};
    options.noise = {sigma, seed};
    return train_split(group, seeded_model(config, 4), seeded_model(config, 4), options, data);
  };
  const auto clean = run_with("split_noise_clean", 0.0, 1);
  const auto noisy = run_with("split_noise_a", 0.5, 1);
  const auto again = run_with("split_noise_b", 0.5, 1);
  ASSERT_EQ(noisy.server_received.size(), clean.server_received.size());
  const auto clean_activation = decode_tensor(clean.server_received[0], "clean");
  const auto noisy_activation = decode_tensor(noisy.server_received[0], "noisy");
  const double rms = clean_activation.square().mean().sqrt().item<double>();
  const double noise_std = (noisy_activation - clean_activation).std().item<double>();
  EXPECT_NEAR(noise_std / rms, 0.5, 0.5 * 0.1);  // 512 samples: a 10% band
  EXPECT_EQ(noisy.server_received, again.server_received);
  EXPECT_TRUE(std::isfinite(noisy.server_reports.back().loss));
}

TEST(SplitStep, AGradientOfTheWrongShapeIsAFormatErrorOnTheDevice) {
  const auto config = small_config(ModelFamily::llama, false);
  SplitOptions options;
  options.cut = {2, 0};
  std::string device_error;
  auto rank_main = [&](int rank) {
    auto world = World::in_process("split_bad_gradient", rank, 2);
    if (rank == kServerRank) {
      world->recv_bytes(kDeviceRank);  // activation
      world->recv_bytes(kDeviceRank);  // targets
      world->send_bytes(encode_tensor(torch::zeros({2, 7, 32}), Codec{}), kDeviceRank);
    } else {
      WorldChannel wire(*world, kServerRank);
      SplitDevice device(seeded_model(config, 1), options);
      const auto b = batches(1, 1).front();
      device_error = testing::expect_error<FormatError>([&] { device.step(wire, b.ids, b.targets, kLr); },
                                                        {"gradient at split.cut from rank 0", "[2, 7, 32]"});
    }
    world->barrier();
  };
  std::thread server(rank_main, kServerRank), device(rank_main, kDeviceRank);
  server.join();
  device.join();
  EXPECT_EQ(device_error.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace fedsplit
