// `strata train` from the command line: a short run succeeds and prints progress and a summary;
// bad input gives one line naming the problem and exit 1 (2 for usage) before any work.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/common/run_command.h"
#include "tests/offload/scratch_dir.h"

namespace {

std::string run(const std::string& args, int* rc) {
  return strata::testing::run_command(std::string(STRATA_CLI) + " train " + args, rc);
}

TEST(TrainCli, AShortRunAndItsErrors) {
  strata::testing::ScratchDir dir;
  const std::string data = dir.path() + "/corpus.txt";
  {
    std::ofstream f(data);
    for (int i = 0; i < 400; ++i) f << "The engine moves the params to the device before the step. ";
  }
  const std::string base = "--data " + data + " --device host --device-memory 8M --batch 2 --seq 32 --val-every 0 ";
  int rc = 0;
  std::string out = run(base + "--steps 3 --warmup 1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("placement plan"), std::string::npos) << out;
  EXPECT_NE(out.find("step    3/3 | loss"), std::string::npos) << out;
  EXPECT_NE(out.find("validation loss"), std::string::npos) << out;
  EXPECT_NE(out.find("done: 3 steps"), std::string::npos) << out;
  // The CPU model runs with OpenMP threads that sleep when idle, unless the user chose otherwise.
  out = strata::testing::run_command(
      "env -u OMP_WAIT_POLICY " + std::string(STRATA_CLI) + " train " + base + "--steps 1", &rc);
  EXPECT_NE(out.find("OpenMP wait policy passive"), std::string::npos) << out;
  out = strata::testing::run_command(
      "OMP_WAIT_POLICY=active " + std::string(STRATA_CLI) + " train " + base + "--steps 1 --warmup 1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("OpenMP wait policy active"), std::string::npos) << out;

  out = run("--data " + dir.path() + "/nope.txt --device host --device-memory 8M", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("nope.txt"), std::string::npos) << out;
  EXPECT_EQ(out.find("step "), std::string::npos) << "no work before the error: " << out;

  const std::string cfg = dir.path() + "/bad.json";
  std::ofstream(cfg) << R"({"zero_optimization": {"stage": 2, "offload_optimzer": {"device": "cpu"}}})";
  out = run(base + "--config " + cfg, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("zero_optimization.offload_optimzer: unknown key"), std::string::npos) << out;

  out = run("--data " + data + " --device host", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--device host needs --device-memory"), std::string::npos) << out;

  out = run(base + "--device-memory 64K", &rc);  // the plan cannot fit
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("OUT_OF_MEMORY"), std::string::npos) << out;

  out = run(base + "--model gpt-7", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("unknown model preset 'gpt-7'"), std::string::npos) << out;

  out = run(base + "--steps x", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--steps x: expected an integer in 1 .. "), std::string::npos) << out;

  out = run(base + "--frobnicate 3", &rc);
  EXPECT_EQ(rc, 2) << out;
}

}  // namespace
