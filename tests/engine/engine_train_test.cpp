// Training equivalence: the MLP of mlp_model.h trained N optimizer steps (with gradient
// accumulation and clipping) (a) in memory by plain code — double-precision Adam of
// kernels/reference, fp32 gradient sums, bit16 params rounded from the master — and (b) through the
// engine on the host-emulated device with each placement, the device budget smaller than the
// model. Every placement must give the same master weights bit for bit (the same kernels run on
// every tier), and match the in-memory run within a stated tolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "src/engine/engine.h"
#include "tests/engine/engine_harness.h"
#include "tests/engine/mlp_model.h"
#include "tests/engine/reference_training.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::kAccum;
using harness::kClip;
using harness::kLr;
using harness::kSteps;
using harness::kWeightDecay;
using harness::RunOptions;
using harness::train_engine;
using reftrain::max_diff;
using reftrain::RefRun;
using reftrain::train_reference;
using testing::Mlp;
using testing::MlpShape;

// The in-memory run keeps its master in double, the engine in fp32; a bit16 param whose master sits
// on a rounding boundary can round differently, so agreement is within a tolerance: the largest
// difference measured over these steps is 1.2e-5 with bf16 and 1.3e-5 with fp16 (the Adam step
// size is lr = 5e-3, so that is 0.25% of one step).
constexpr double kTolerance = 5e-5;

class EngineTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    mlp_ = new Mlp(MlpShape{});
    ref_ = new RefRun(train_reference(*mlp_, DType::kBF16, 1.0));
    baseline_ = new EngineRun(train_engine(config_json("\"stage\": 0", size_t{4} << 20), *mlp_));
  }
  static void TearDownTestSuite() {
    delete baseline_;
    delete ref_;
    delete mlp_;
  }
  // Training state of the model: bit16 params, fp32 gradients, master, m, v.
  static size_t state_bytes() { return mlp_->numel() * 18; }

  void expect_equivalent(const EngineRun& run, const char* what) {
    ASSERT_EQ(run.master.size(), baseline_->master.size()) << what;
    EXPECT_LT(run.device_budget, state_bytes()) << what << ": the device budget must be smaller than the model";
    EXPECT_LE(run.stats.device_peak_bytes, run.device_budget) << what;
    for (const auto& [n, v] : run.master) EXPECT_EQ(v, baseline_->master.at(n)) << what << ": " << n;
    EXPECT_LT(max_diff(run, ref_->ref), kTolerance) << what;
    EXPECT_EQ(run.stats.optimizer_steps, kSteps) << what;
  }

  static Mlp* mlp_;
  static RefRun* ref_;
  static EngineRun* baseline_;
};
Mlp* EngineTraining::mlp_ = nullptr;
RefRun* EngineTraining::ref_ = nullptr;
EngineRun* EngineTraining::baseline_ = nullptr;

TEST_F(EngineTraining, EverythingOnTheDeviceMatchesInMemoryTraining) {
  ASSERT_EQ(baseline_->steps.size(), static_cast<size_t>(kSteps));
  const double d = max_diff(*baseline_, ref_->ref);
  EXPECT_LT(d, kTolerance);
  // The run is not vacuous: the loss falls, params moved by far more than the tolerance, clipping
  // was active in some steps and not in others.
  EXPECT_LT(ref_->losses.back(), ref_->losses.front());
  double moved = 0.0;
  for (const auto& l : mlp_->layers()) {
    const auto w0 = mlp_->init(l, true, 1);
    for (size_t i = 0; i < w0.size(); ++i)
      moved = std::max(moved, static_cast<double>(std::abs(baseline_->master.at(l.w)[i] - w0[i])));
  }
  EXPECT_GT(moved, 100 * kTolerance);
  EXPECT_GT(ref_->clipped, 0);
  EXPECT_LT(ref_->clipped, kSteps);
  int clipped = 0;
  for (const StepResult& s : baseline_->steps) {
    EXPECT_TRUE(s.applied);
    clipped += s.clip_coef < 1.0;
  }
  EXPECT_EQ(clipped, ref_->clipped);
}

TEST_F(EngineTraining, OptimizerOnCpu) {
  const EngineRun r =
      train_engine(config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", 112 << 10), *mlp_);
  expect_equivalent(r, "optimizer on cpu");
  EXPECT_GT(r.stats.bytes_d2h, 0u);
  EXPECT_GT(r.stats.bytes_h2d, 0u) << "updated params go back to the device";
}

TEST_F(EngineTraining, OptimizerPartlyOnCpu) {
  const EngineRun r = train_engine(
      config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\", \"ratio\": 0.5}", 380 << 10), *mlp_);
  expect_equivalent(r, "optimizer ratio 0.5");
}

TEST_F(EngineTraining, OptimizerOnNvme) {
  testing::ScratchDir dir;
  const EngineRun r = train_engine(
      config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" + dir.path() + "\"}",
                  112 << 10),
      *mlp_);
  expect_equivalent(r, "optimizer on nvme");
  EXPECT_GT(r.stats.bytes_nvme_read, mlp_->numel() * 12 * (kSteps - 1));
  EXPECT_GT(r.stats.bytes_nvme_write, mlp_->numel() * 12 * (kSteps - 1));
}

TEST_F(EngineTraining, ParamsOnCpu) {
  const EngineRun r = train_engine(config_json("\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, "
                                               "\"offload_param\": {\"device\": \"cpu\"}",
                                               32 << 10),
                                   *mlp_);
  EXPECT_LT(r.device_budget, mlp_->numel() * 2) << "not even the bit16 params fit on the device";
  expect_equivalent(r, "params on cpu");
}

TEST_F(EngineTraining, ParamsAndOptimizerOnNvme) {
  testing::ScratchDir dir;
  const std::string path = "\"nvme_path\": \"" + dir.path() + "\"";
  const EngineRun r = train_engine(config_json("\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", " + path +
                                                   "}, \"offload_param\": {\"device\": \"nvme\", " + path + "}",
                                               32 << 10),
                                   *mlp_);
  EXPECT_LT(r.device_budget, mlp_->numel() * 2);
  expect_equivalent(r, "params and optimizer on nvme");
}

TEST_F(EngineTraining, ParamsOnNvmeOptimizerOnCpu) {
  testing::ScratchDir dir;
  const EngineRun r = train_engine(config_json("\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, "
                                               "\"offload_param\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                                                   dir.path() + "\"}",
                                               32 << 10),
                                   *mlp_);
  expect_equivalent(r, "params on nvme");
  EXPECT_GT(r.stats.bytes_nvme_read, 0u);
}

// fp16 with dynamic loss scaling: an inf gradient in one micro-batch skips exactly that step
// (the master weights after it equal those of a run without that step) and halves the scale.
TEST(EngineFp16, OverflowSkipsTheStepAndHalvesTheScale) {
  const Mlp mlp{MlpShape{}};
  const std::string fp16 = "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 12, \"hysteresis\": 1}";
  constexpr int kPoisonMicro = 5;  // the second micro-batch of optimizer step 3
  RunOptions poison;
  poison.poison_micro = kPoisonMicro;
  const EngineRun run = train_engine(
      config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", 112 << 10, fp16), mlp, poison);
  RefRun ref = train_reference(mlp, DType::kF16, 4096.0, kPoisonMicro);
  ASSERT_EQ(run.steps.size(), static_cast<size_t>(kSteps));
  for (int s = 0; s < kSteps; ++s) {
    const bool poisoned = s == kPoisonMicro / kAccum;
    EXPECT_EQ(run.steps[static_cast<size_t>(s)].overflow, poisoned) << "step " << s;
    EXPECT_EQ(run.steps[static_cast<size_t>(s)].applied, !poisoned) << "step " << s;
    EXPECT_EQ(ref.applied[static_cast<size_t>(s)], !poisoned);
    EXPECT_EQ(run.steps[static_cast<size_t>(s)].loss_scale, poisoned || s > kPoisonMicro / kAccum ? 2048.0 : 4096.0)
        << "step " << s;
  }
  EXPECT_EQ(run.stats.skipped_steps, 1);
  EXPECT_EQ(run.stats.optimizer_steps, kSteps - 1);
  EXPECT_LT(max_diff(run, ref.ref), kTolerance);
}

}  // namespace
}  // namespace strata::engine
