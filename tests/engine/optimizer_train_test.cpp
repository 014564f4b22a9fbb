// Lion and Adagrad through the engine: the MLP of mlp_model.h trained with each placement of
// engine_train_test (in memory, optimizer on the host, on NVMe, params on the host, params and
// optimizer on NVMe), the device budget smaller than the model. Every placement gives the same
// fp32 masters bit for bit, and they follow the double-precision reference run of the same
// optimizer (reference_training.h) within a stated tolerance. The NVMe store and the plan use the
// optimizer's own arrays (two per element, not Adam's three).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "src/engine/engine.h"
#include "tests/engine/engine_harness.h"
#include "tests/engine/reference_training.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::kSteps;
using harness::optimizer_json;
using harness::train_engine;
using reftrain::RefOptimizer;
using testing::Mlp;
using testing::MlpShape;

// Agreement with the double reference (fp32 master against double, bit16 params that may round
// the other way at a boundary). Largest differences measured: Lion 5.3e-8, Adagrad 1.6e-5.
// Lion's update is lr * sign(c): where c is within rounding of zero the fp32 run may take the other
// sign and that element moves 2 lr apart; such elements must be rare.
struct Case {
  const char* type;
  RefOptimizer ref;
  double tolerance;     // most elements agree this closely
  double max_outliers;  // share of elements allowed beyond it (Lion's sign ties)
};

const Case kCases[] = {{"Lion", RefOptimizer::kLion, 5e-5, 0.002}, {"Adagrad", RefOptimizer::kAdagrad, 5e-5, 0.0}};

struct Placement {
  const char* name;
  std::string zero;  // with "$NVME" for the scratch directory
  size_t device_bytes;
};

std::vector<Placement> placements() {
  return {{"in_memory", "\"stage\": 0", size_t{4} << 20},
          {"optimizer_cpu", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", 112 << 10},
          {"optimizer_nvme", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"$NVME\"}",
           112 << 10},
          {"params_cpu",
           "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"cpu\"}",
           32 << 10},
          {"params_and_optimizer_nvme",
           "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"$NVME\"}, "
           "\"offload_param\": {\"device\": \"nvme\", \"nvme_path\": \"$NVME\"}",
           32 << 10}};
}

std::string with_dir(std::string s, const std::string& dir) {
  for (size_t at; (at = s.find("$NVME")) != std::string::npos;) s.replace(at, 5, dir);
  return s;
}

class OptimizerTraining : public ::testing::TestWithParam<Case> {};

TEST_P(OptimizerTraining, EveryPlacementGivesTheSameMastersAndFollowsTheReference) {
  const Case c = GetParam();
  const Mlp mlp{MlpShape{}};
  const reftrain::RefRun ref = reftrain::train_reference(mlp, DType::kBF16, 1.0, -1, c.ref);
  EXPECT_GT(ref.clipped, 0) << "clipping is exercised";
  // Not vacuous: the masters moved far beyond the tolerance.
  double moved = 0.0;
  for (const auto& l : mlp.layers()) {
    const auto w0 = mlp.init(l, true, 1);
    const auto& w = ref.ref.master(l.w);
    for (size_t i = 0; i < w0.size(); ++i) moved = std::max(moved, std::abs(w[i] - w0[i]));
  }
  EXPECT_GT(moved, 20 * c.tolerance);
  const EngineRun* first = nullptr;
  std::vector<EngineRun> runs;
  runs.reserve(placements().size());
  for (const Placement& p : placements()) {
    SCOPED_TRACE(std::string(c.type) + " " + p.name);
    testing::ScratchDir dir;
    runs.push_back(
        train_engine(config_json(with_dir(p.zero, dir.path()), p.device_bytes, "", "", optimizer_json(c.type)), mlp));
    const EngineRun& r = runs.back();
    ASSERT_EQ(r.steps.size(), static_cast<size_t>(kSteps));
    EXPECT_EQ(r.stats.optimizer_steps, kSteps);
    if (p.device_bytes < mlp.numel() * 14) {
      EXPECT_LE(r.stats.device_peak_bytes, r.device_budget);
    }
    if (std::string(p.name) == "optimizer_nvme") {
      // Two fp32 arrays per element (master + one state) read and written each step after the first.
      EXPECT_GE(r.stats.bytes_nvme_read, mlp.numel() * 8 * (kSteps - 1));
      EXPECT_LT(r.stats.bytes_nvme_read, mlp.numel() * 12 * (kSteps - 1)) << "Adam's third array is not moved";
    }
    if (first == nullptr) {
      first = &r;
    } else {
      for (const auto& [n, v] : r.master) EXPECT_EQ(v, first->master.at(n)) << n << " differs from the in-memory run";
    }
    size_t total = 0, beyond = 0;
    double worst = 0.0;
    for (const auto& [n, v] : r.master) {
      const auto& want = ref.ref.master(n);
      for (size_t i = 0; i < v.size(); ++i) {
        const double d = std::abs(static_cast<double>(v[i]) - want[i]);
        worst = std::max(worst, d);
        beyond += d > c.tolerance;
        ++total;
      }
    }
    std::printf("%s %s: largest difference from the reference %.3g, %zu of %zu beyond %.1g\n", c.type, p.name, worst,
                beyond, total, c.tolerance);
    EXPECT_LE(static_cast<double>(beyond), c.max_outliers * static_cast<double>(total))
        << beyond << " of " << total << " elements differ from the reference by more than " << c.tolerance
        << " (largest " << worst << ")";
    if (c.ref == RefOptimizer::kLion) {
      EXPECT_LE(worst, 2.0 * harness::kLionLr * kSteps) << "a sign flip moves at most 2 lr per step";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(LionAndAdagrad, OptimizerTraining, ::testing::ValuesIn(kCases),
                         [](const auto& p) { return std::string(p.param.type); });

// The plan counts the optimizer's arrays: Lion and Adagrad need 8 bytes per element, Adam 12.
TEST(OptimizerTraining, ThePlanCountsTheOptimizersArrays) {
  const Mlp mlp{MlpShape{}};
  size_t opt_bytes[3] = {};
  int i = 0;
  for (const char* type : {"AdamW", "Lion", "Adagrad"}) {
    auto cfg = parse_engine_config(config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", 112 << 10,
                                               "", "", optimizer_json(type)));
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
    auto e = harness::make_engine(cfg.value(), mlp, {});
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    opt_bytes[i++] = e.value()->plan()->bytes[static_cast<int>(Tier::kHost)][static_cast<int>(Use::kOptimizer)];
  }
  EXPECT_GT(opt_bytes[0], 0u);
  EXPECT_EQ(opt_bytes[1] * 3, opt_bytes[0] * 2) << "Lion: 8 of Adam's 12 bytes";
  EXPECT_EQ(opt_bytes[2], opt_bytes[1]);
}

TEST(OptimizerTraining, AnUnknownTypeNamesTheAcceptedOnes) {
  auto cfg = parse_engine_config(R"({"optimizer": {"type": "Sophia"}})");
  ASSERT_FALSE(cfg.is_ok());
  EXPECT_NE(cfg.status().message().find("accepted: Adam, AdamW, Lion, Adagrad"), std::string::npos)
      << cfg.status().to_string();
}

}  // namespace
}  // namespace strata::engine
