// labels: unit
// The distillation job's model pieces (compress/distill_job.h): evenly spaced block choices, a
// student cut from a teacher (llama and gpt2; all blocks kept computes the teacher's logits exactly,
// a subset holds exactly the chosen blocks), and the forward that collects every block's output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/distill_job.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

Decoder tiny(ModelFamily family, int64_t layers) {
  Decoder model(family_config(family, 40, 32, layers, 4, family == ModelFamily::gpt2 ? 4 : 2, 0, 32), /*init=*/false);
  model->init_weights(5);
  model->eval();
  return model;
}

TEST(DistillJob, EvenlySpacedLayersKeepFirstAndLast) {
  EXPECT_EQ(evenly_spaced_layers(3, 6), (std::vector<int64_t>{0, 3, 5}));
  EXPECT_EQ(evenly_spaced_layers(2, 4), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(evenly_spaced_layers(1, 6), (std::vector<int64_t>{5}));
  EXPECT_EQ(evenly_spaced_layers(4, 4), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(DistillJob, StudentCutFromTheTeacher) {
  for (auto family : {ModelFamily::llama, ModelFamily::gpt2}) {
    SCOPED_TRACE(to_string(family));
    Decoder teacher = tiny(family, 4);
    const auto ids = torch::randint(0, 40, {2, 7}, torch::kInt64);
    // Every block kept: the teacher itself.
    Decoder whole = student_from_teacher(teacher, {0, 1, 2, 3});
    whole->eval();
    EXPECT_TRUE(torch::equal(whole->forward(ids), teacher->forward(ids)));
    // Blocks 0 and 3: student block 1 is teacher block 3; embeddings, norm and head are shared values.
    Decoder half = student_from_teacher(teacher, {0, 3});
    EXPECT_EQ(half->num_layers(), 2);
    const std::string container = family == ModelFamily::gpt2 ? "h" : "layers";
    const auto t = teacher->named_parameters();
    for (const auto& item : half->named_parameters()) {
      std::string from = item.key();
      if (from.rfind(container + ".1.", 0) == 0) from = container + ".3." + from.substr(container.size() + 3);
      ASSERT_TRUE(t.contains(from)) << from;
      EXPECT_TRUE(torch::equal(item.value(), t[from])) << item.key() << " <- " << from;
      EXPECT_TRUE(item.value().requires_grad());
    }
    // The forward with hidden states computes the same logits and one state per block.
    half->eval();
    std::vector<torch::Tensor> hidden;
    const auto logits = forward_with_hidden(half, ids, &hidden);
    ASSERT_EQ(hidden.size(), 2u);
    EXPECT_EQ(hidden[1].sizes(), (std::vector<int64_t>{2, 7, 32}));
    EXPECT_TRUE(torch::allclose(logits, half->forward(ids), 0, 1e-6));
    EXPECT_TRUE(torch::allclose(half->head(hidden[1]), logits, 0, 1e-6));
  }
}

TEST(DistillJob, MissingTeacherIsAConfigError) {
  DistillOptions o;
  fedsplit::testing::expect_error<ConfigError>([&] { load_teacher(o); }, {"distill.teacher is required"});
}

}  // namespace
}  // namespace fedsplit
