// The optimizer step during backward (strata.speculate) against the synchronous step
// (strata.speculate = false): bit-identical fp32 masters and bit16 params after training, over
// placements x clipping never / sometimes / every step x an fp16 overflow x accumulation 1 and 2.
// Where clipping triggers, chunks were redone (the redo path ran); where it never does, every
// speculated chunk committed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "tests/engine/engine_harness.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::RunOptions;
using testing::Mlp;
using testing::MlpShape;

constexpr size_t kParamsOffBudget = 32 << 10, kParamsOnBudget = 112 << 10, kAllOnBudget = 512 << 10;
// Everything on the device with room for device backup slots: 5 of the 11 chunks (half of what
// the rest of the plan leaves), so that the others wait for the step.
constexpr size_t kDeviceSlotsBudget = 1 << 20;

struct Placement {
  const char* name;
  const char* zero;  // NVMEDIR: the run's directory
  size_t budget;
  bool speculates;     // some chunk's optimizer state is in host or device memory: updated during backward
  bool nvme_state;     // the optimizer state is on NVMe: read during the cycle's last micro-batch
  const char* strata;  // more keys of the "strata" section
};

const Placement kPlacements[] = {
    // Device-resident state is speculated only with strata.speculate_device (off by default).
    {"opt_device", "\"stage\": 2", kDeviceSlotsBudget, true, false, ", \"speculate_device\": true"},
    {"opt_device_by_default", "\"stage\": 2", kDeviceSlotsBudget, false, false, ""},
    {"opt_half_cpu", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\", \"ratio\": 0.5}", kAllOnBudget, true,
     false, ", \"speculate_device\": true"},
    {"opt_cpu", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", kParamsOnBudget, true, false, ""},
    {"opt_nvme", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
     kParamsOnBudget, false, true, ""},
    {"params_opt_cpu",
     "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"cpu\"}",
     kParamsOffBudget, true, false, ""},
    {"params_cpu_opt_nvme",
     "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}, \"offload_param\": "
     "{\"device\": \"cpu\"}",
     kParamsOffBudget, false, true, ""},
    {"params_opt_nvme",
     "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}, \"offload_param\": "
     "{\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
     kParamsOffBudget, false, true, ""},
};

// The optimizer's state on NVMe with its fp32 gradients there too (no accumulation).
constexpr const char* kNvmeGrads = ", \"gradient_tier\": \"nvme\"";
const Placement kNvmeGradPlacements[] = {
    {"opt_nvme_grads_nvme", kPlacements[4].zero, kParamsOnBudget, false, true, kNvmeGrads},
    {"params_cpu_opt_nvme_grads_nvme", kPlacements[6].zero, kParamsOffBudget, false, true, kNvmeGrads},
    {"params_opt_nvme_grads_nvme", kPlacements[7].zero, kParamsOffBudget, false, true, kNvmeGrads},
};

// The background work here runs on one idle-priority thread (strata.background_priority "auto" on
// the host-emulated device); with a GPU on the optimizer's threads at normal priority: the
// placements whose background does work (updates during backward, checks of state read ahead) that way.
constexpr const char* kNormal = ", \"background_priority\": \"normal\"";
const Placement kBackgroundNormal[] = {
    {"params_opt_cpu_background_normal", kPlacements[5].zero, kParamsOffBudget, true, false, kNormal},
    {"params_opt_nvme_background_normal", kPlacements[7].zero, kParamsOffBudget, false, true, kNormal},
};

void PrintTo(const Placement& p, std::ostream* os) { *os << p.name; }

enum class Clip { kNever, kSometimes, kAlways, kOverflow };  // kOverflow: fp16, an inf in a cycle's last micro-batch
const char* clip_name(Clip c) {
  return c == Clip::kNever       ? "clip_never"
         : c == Clip::kSometimes ? "clip_sometimes"
         : c == Clip::kAlways    ? "clip_always"
                                 : "fp16_overflow";
}

struct Trained {
  EngineRun engine;
  std::map<std::string, std::vector<uint16_t>> bit16;
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
  return s;
}

// Trains the MLP for harness::kSteps optimizer steps with `accum` micro-batches each.
Trained train(const Placement& p, Clip clip, double clip_value, int accum, bool speculate, const std::string& dir) {
  const std::string fp16 =
      clip == Clip::kOverflow ? "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 12, \"hysteresis\": 1}" : "";
  std::string json = config_json(replace_all(p.zero, "NVMEDIR", dir), p.budget, fp16,
                                 std::string(p.strata) + (speculate ? "" : ", \"speculate\": false"));
  json = replace_all(json, "\"gradient_accumulation_steps\": " + std::to_string(harness::kAccum),
                     "\"gradient_accumulation_steps\": " + std::to_string(accum));
  json = replace_all(json, "\"gradient_clipping\": " + std::to_string(harness::kClip),
                     "\"gradient_clipping\": " + std::to_string(clip_value));
  const Mlp mlp{MlpShape{}};
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  Trained run;
  if (!cfg.is_ok()) return run;
  RunOptions o;
  auto made = harness::make_engine(cfg.value(), mlp, o);
  EXPECT_TRUE(made.is_ok()) << made.status().to_string();
  if (!made.is_ok()) return run;
  Engine& e = *made.value();
  o.engine = &e;
  o.micro_end = harness::kSteps * accum;
  if (clip == Clip::kOverflow) o.poison_micro = 2 * accum - 1;  // the second cycle's last micro-batch
  run.engine = harness::train_engine(json, mlp, o);
  for (const auto& l : mlp.layers())
    for (const std::string& n : {l.w, l.b}) {
      const size_t numel = static_cast<size_t>(n == l.w ? l.fan_in * l.fan_out : l.fan_out);
      auto f = e.fetch(n);
      EXPECT_TRUE(f.is_ok()) << f.status().to_string();
      if (!f.is_ok()) continue;
      std::vector<uint16_t> v(numel);
      std::memcpy(v.data(), f.value(), numel * 2);
      run.bit16[n] = std::move(v);
      EXPECT_TRUE(e.release(n).is_ok());
    }
  return run;
}

class Speculation : public ::testing::TestWithParam<std::tuple<Placement, Clip, int>> {};

TEST_P(Speculation, BitIdenticalToTheSynchronousStep) {
  const auto [p, clip, accum] = GetParam();
  strata::testing::ScratchDir d0, d1, d2;
  // "Sometimes": between the smallest and the largest norm of the unclipped run.
  double clip_value = 0.0;
  if (clip == Clip::kAlways) clip_value = 1e-6;
  if (clip == Clip::kSometimes) {
    const Trained probe = train(p, Clip::kNever, 0.0, accum, false, d0.path());
    std::vector<double> norms;
    for (const StepResult& r : probe.engine.steps) norms.push_back(r.grad_norm);
    ASSERT_GE(norms.size(), 3u);
    std::sort(norms.begin(), norms.end());
    clip_value = norms[norms.size() / 2];
  }
  const Trained sync = train(p, clip, clip_value, accum, false, d1.path());
  const Trained spec = train(p, clip, clip_value, accum, true, d2.path());
  ASSERT_FALSE(sync.engine.master.empty());
  for (const auto& [n, v] : sync.engine.master) EXPECT_EQ(spec.engine.master.at(n), v) << "fp32 master of " << n;
  for (const auto& [n, v] : sync.bit16) EXPECT_EQ(spec.bit16.at(n), v) << "bit16 param " << n;

  int clipped = 0, skipped = 0, speculated = 0, redone = 0;
  for (const StepResult& r : sync.engine.steps) {
    clipped += r.applied && r.clip_coef < 1.0;
    skipped += r.overflow;
  }
  for (const StepResult& r : spec.engine.steps) {
    speculated += r.chunks_speculated;
    redone += r.chunks_redone;
    EXPECT_LE(r.chunks_redone, r.chunks_speculated);
  }
  EXPECT_EQ(sync.engine.stats.chunks_speculated, 0) << "speculate = false";
  EXPECT_EQ(sync.engine.stats.chunks_read_ahead, 0) << "speculate = false: no backup slots";
  EXPECT_EQ(spec.engine.stats.chunks_speculated, speculated);
  if (p.nvme_state) {
    EXPECT_GT(spec.engine.stats.chunks_read_ahead, 0) << "NVMe state read in the cycle's last micro-batch";
  } else {
    EXPECT_EQ(spec.engine.stats.chunks_read_ahead, 0);
  }
  if (!p.speculates) {
    EXPECT_EQ(speculated, 0) << "NVMe-resident state (and without speculate_device device-resident state) is updated "
                                "at the step";
    EXPECT_EQ(redone, 0);
    return;
  }
  EXPECT_GT(speculated, 0);
  switch (clip) {
    case Clip::kNever:
      EXPECT_EQ(clipped, 0);
      EXPECT_EQ(redone, 0) << "nothing to redo without clipping";
      break;
    case Clip::kSometimes:
      EXPECT_GT(clipped, 0);
      EXPECT_LT(clipped, static_cast<int>(sync.engine.steps.size()));
      EXPECT_GT(redone, 0);
      EXPECT_LT(redone, speculated) << "the steps that did not clip committed";
      break;
    case Clip::kAlways:
      EXPECT_EQ(clipped, static_cast<int>(sync.engine.steps.size()));
      EXPECT_EQ(redone, speculated) << "every speculated chunk was redone";
      break;
    case Clip::kOverflow:
      EXPECT_EQ(skipped, 1);
      EXPECT_GT(redone, 0) << "the skipped step's chunks were restored";
      break;
  }
}

// Gradients on NVMe against gradients in host memory, the optimizer's state on NVMe: the same
// masters and params bit for bit (the norm from partial sums taken as each chunk's gradient was
// written adds up exactly as the multi-tensor pass over host arrays), every micro-batch's gradient
// written once and each applied step's read once — without step slots; with them (the default)
// the chunks whose state is read ahead take their gradient there and move less. (The host bytes:
// placement_test's closed forms.)
class GradientTier : public ::testing::TestWithParam<std::tuple<Placement, Clip>> {};

TEST_P(GradientTier, NvmeGradientsTrainAsHostGradients) {
  const auto [p, clip] = GetParam();
  strata::testing::ScratchDir d0, d1;
  Placement on_host = p;
  on_host.strata = ", \"gradient_tier\": \"host\"";
  const double clip_value = clip == Clip::kAlways ? 1e-6 : clip == Clip::kSometimes ? 0.5 : 0.0;
  strata::testing::ScratchDir d2, d3;
  const Trained host = train(on_host, clip, clip_value, 1, true, d0.path());
  const Trained nvme = train(p, clip, clip_value, 1, true, d1.path());
  const Trained host_sync = train(on_host, clip, clip_value, 1, false, d2.path());
  const Trained nvme_sync = train(p, clip, clip_value, 1, false, d3.path());
  ASSERT_FALSE(host.engine.master.empty());
  for (const Trained* t : {&nvme, &host_sync, &nvme_sync}) {
    for (const auto& [n, v] : host.engine.master) EXPECT_EQ(t->engine.master.at(n), v) << "fp32 master of " << n;
    for (const auto& [n, v] : host.bit16) EXPECT_EQ(t->bit16.at(n), v) << "bit16 param " << n;
    for (size_t i = 0; i < host.engine.steps.size(); ++i)
      EXPECT_EQ(t->engine.steps.at(i).grad_norm, host.engine.steps[i].grad_norm) << "step " << i;
  }
  // With slots: some gradients joined their state (fewer bytes than one write and read a step).
  const size_t grad_bytes_spec = nvme.engine.stats.tier_bytes[2] - host.engine.stats.tier_bytes[2];
  EXPECT_LT(nvme.engine.stats.bytes_nvme_write - host.engine.stats.bytes_nvme_write,
            grad_bytes_spec * nvme.engine.steps.size());

  const EngineStats &h = host_sync.engine.stats, &g = nvme_sync.engine.stats;
  const size_t grad_bytes = g.tier_bytes[2] - h.tier_bytes[2];  // fp32 gradients on NVMe, once
  EXPECT_GT(grad_bytes, 0u);
  int applied = 0;
  for (const StepResult& r : nvme_sync.engine.steps) applied += r.applied;
  EXPECT_EQ(g.bytes_nvme_write - h.bytes_nvme_write, grad_bytes * nvme_sync.engine.steps.size());
  // (Params read back from NVMe depend on prefetch timing: counted apart and left out.)
  EXPECT_EQ((g.bytes_nvme_read - g.bytes_param_nvme_read) - (h.bytes_nvme_read - h.bytes_param_nvme_read),
            grad_bytes * static_cast<size_t>(applied));
}

INSTANTIATE_TEST_SUITE_P(NvmeGradients, GradientTier,
                         ::testing::Combine(::testing::ValuesIn(kNvmeGradPlacements),
                                            ::testing::Values(Clip::kSometimes, Clip::kOverflow)),
                         [](const ::testing::TestParamInfo<std::tuple<Placement, Clip>>& i) {
                           return std::string(std::get<0>(i.param).name) + "_" + clip_name(std::get<1>(i.param));
                         });

// A prepared engine for `json` with the MLP registered (the seam tests drive it by hand).
std::unique_ptr<Engine> engine_for(const std::string& json, const Mlp& mlp) {
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  if (!cfg.is_ok()) return nullptr;
  auto made = harness::make_engine(cfg.value(), mlp, RunOptions{});
  EXPECT_TRUE(made.is_ok()) << made.status().to_string();
  return made.is_ok() ? std::move(made).value() : nullptr;
}

// read_master between the cycle's last backward and its step sees the masters before the step
// (the speculated chunks are restored first), and the run still ends bit-identical.
TEST(SpeculationSeam, ReadMasterInsideACycleSeesTheStateBeforeTheStep) {
  const Mlp mlp{MlpShape{}};
  std::map<std::string, std::vector<float>> final_masters[2];
  for (int speculate = 0; speculate < 2; ++speculate) {
    std::string json = config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}", kParamsOnBudget, "",
                                   speculate ? "" : ", \"speculate\": false");
    json = replace_all(json, "\"gradient_clipping\": " + std::to_string(harness::kClip), "\"gradient_clipping\": 0");
    const std::unique_ptr<Engine> made = engine_for(json, mlp);
    ASSERT_NE(made, nullptr);
    Engine& e = *made;
    harness::EngineAccess a(e);
    std::vector<float> x, y;
    int64_t restored = 0;
    for (int micro = 0; micro < harness::kSteps * harness::kAccum; ++micro) {
      const auto before = harness::read_masters(e, mlp);
      mlp.batch(100 + static_cast<uint32_t>(micro), &x, &y);
      mlp.train_micro(a, x, y, e.param_dtype(), e.loss_scale());
      const int64_t spec0 = e.stats().chunks_speculated;
      EXPECT_EQ(harness::read_masters(e, mlp), before) << "micro-batch " << micro;
      restored += e.stats().chunks_speculated - spec0;  // counted when the read restores them
      ASSERT_TRUE(e.step().is_ok());
    }
    if (speculate) {
      EXPECT_GT(restored, 0) << "chunks were speculated and restored for the reads";
    }
    final_masters[speculate] = harness::read_masters(e, mlp);
  }
  EXPECT_EQ(final_masters[1], final_masters[0]);
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<Placement, Clip, int>>& i) {
  return std::string(std::get<0>(i.param).name) + "_" + clip_name(std::get<1>(i.param)) + "_gas" +
         std::to_string(std::get<2>(i.param));
}

// Gradients on NVMe that joined their state in a step slot: read_master between the last backward
// and the step drops the slots, so the gradients go to NVMe first; the step finds them there and
// the run ends as one with host gradients and no reads in between.
TEST(SpeculationSeam, ReadMasterInsideACycleKeepsGradientsThatJoinedASlot) {
  const Mlp mlp{MlpShape{}};
  std::map<std::string, std::vector<float>> final_masters[2];
  for (int nvme = 0; nvme < 2; ++nvme) {
    strata::testing::ScratchDir dir;
    std::string json = config_json(replace_all(kPlacements[7].zero, "NVMEDIR", dir.path()), kParamsOffBudget, "",
                                   nvme ? kNvmeGrads : ", \"gradient_tier\": \"host\"");
    json = replace_all(json, "\"gradient_accumulation_steps\": " + std::to_string(harness::kAccum),
                       "\"gradient_accumulation_steps\": 1");
    const std::unique_ptr<Engine> made = engine_for(json, mlp);
    ASSERT_NE(made, nullptr);
    Engine& e = *made;
    harness::EngineAccess a(e);
    std::vector<float> x, y;
    for (int micro = 0; micro < harness::kSteps; ++micro) {
      mlp.batch(100 + static_cast<uint32_t>(micro), &x, &y);
      mlp.train_micro(a, x, y, e.param_dtype(), e.loss_scale());
      if (nvme) (void)harness::read_masters(e, mlp);
      auto r = e.step();
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    }
    if (nvme) {
      EXPECT_GT(e.stats().chunks_read_ahead, 0);
    }
    final_masters[nvme] = harness::read_masters(e, mlp);
  }
  EXPECT_EQ(final_masters[1], final_masters[0]);
}

INSTANTIATE_TEST_SUITE_P(Placements, Speculation,
                         ::testing::Combine(::testing::ValuesIn(kPlacements),
                                            ::testing::Values(Clip::kNever, Clip::kSometimes, Clip::kAlways,
                                                              Clip::kOverflow),
                                            ::testing::Values(1, 2)),
                         param_name);
INSTANTIATE_TEST_SUITE_P(BackgroundNormal, Speculation,
                         ::testing::Combine(::testing::ValuesIn(kBackgroundNormal),
                                            ::testing::Values(Clip::kNever, Clip::kSometimes, Clip::kAlways,
                                                              Clip::kOverflow),
                                            ::testing::Values(1, 2)),
                         param_name);
// Gradients on NVMe need gradient_accumulation_steps = 1.
INSTANTIATE_TEST_SUITE_P(NvmeGradients, Speculation,
                         ::testing::Combine(::testing::ValuesIn(kNvmeGradPlacements),
                                            ::testing::Values(Clip::kNever, Clip::kSometimes, Clip::kAlways,
                                                              Clip::kOverflow),
                                            ::testing::Values(1)),
                         param_name);

}  // namespace
}  // namespace strata::engine
