// labels: unit mpi
// Split learning across processes: under `mpirun -np 3` rank 0 runs the server part and ranks 1 and 2
// the clients' device parts, activations and gradients crossing over Gloo; the result is the
// one-process run's (where the two ends are threads joined in memory).
#include <gtest/gtest.h>

#include "core/io/safetensors.h"
#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"

using namespace fedsplit::testing;

TEST(CliSplitMpi, ThreeRanksMatchOneProcess) {
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir tmp("cli_split_mpi");
  write_corpus(tmp / "speakers.jsonl");
  for (const std::string scheme : {"vanilla", "splitfed1", "ushaped"}) {
    for (const std::string shape : {"one", "three"}) {
      std::string recipe = fedavg_recipe(tmp, tmp / (scheme + "_" + shape), "rounds = 2\nlocal_steps = 3\n");
      recipe.replace(recipe.find("mode = federated"), 16, "mode = split");
      write_text(tmp / (scheme + "_" + shape + ".ini"), recipe + "\n[split]\nscheme = " + scheme + "\ncodec = int8\n");
    }
    const auto one = run_fedsplit("run " + (tmp / (scheme + "_one.ini")));
    ASSERT_EQ(one.exit_code, 0) << one.output;
    const auto three = run_command("timeout 300 mpirun --allow-run-as-root --oversubscribe -np 3 '" + std::string(FEDSPLIT_BINARY) +
                                   "' run " + (tmp / (scheme + "_three.ini")) + " 2>&1");
    ASSERT_EQ(three.exit_code, 0) << three.output;
    const auto a = fedsplit::load_safetensors(tmp / (scheme + "_one/model/model.safetensors"));
    const auto b = fedsplit::load_safetensors(tmp / (scheme + "_three/model/model.safetensors"));
    EXPECT_LE(max_difference(a, b), 1e-6) << scheme;
    const auto r1 = events(tmp / (scheme + "_one"), "round"), r3 = events(tmp / (scheme + "_three"), "round");
    ASSERT_EQ(r3.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_NEAR(r1[i]["train_loss"].get<double>(), r3[i]["train_loss"].get<double>(), 1e-6) << scheme;
      EXPECT_EQ(r1[i]["cut_bytes_up"], r3[i]["cut_bytes_up"]) << scheme;
    }
  }
}
