// NVMe faults during training: an I/O error in the pipelined optimizer step or in a prefetched
// param read comes back from the call that needed the data, names the tensor, and is never turned
// into wrong values; loading the last checkpoint then continues exactly like an undisturbed run.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "tests/engine/engine_harness.h"
#include "tests/offload/faulty_io_sys.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::kAccum;
using harness::kSteps;
using harness::RunOptions;
using harness::train_engine;
using testing::Mlp;
using testing::MlpShape;

// The engine as ParamAccess that keeps the first error instead of failing the test, handing out
// zeros when a fetch failed so the model can finish the micro-batch.
class Tolerant final : public strata::testing::ParamAccess {
 public:
  explicit Tolerant(Engine& e) : e_(e), zeros_(1 << 16, 0) {}
  const uint16_t* fetch(const std::string& n) override {
    auto p = e_.fetch(n);
    if (!p.is_ok()) {
      keep(p.status());
      return zeros_.data();
    }
    fetched_.push_back(n);
    return static_cast<const uint16_t*>(p.value());
  }
  void release(const std::string& n) override {
    for (size_t i = 0; i < fetched_.size(); ++i)
      if (fetched_[i] == n) {
        fetched_.erase(fetched_.begin() + static_cast<long>(i));
        keep(e_.release(n));
        return;
      }
  }
  void grad(const std::string& n, const uint16_t* g, size_t count) override {
    if (error.is_ok()) keep(e_.grad(n, g, e_.param_dtype(), count));
  }
  void keep(Status s) {
    if (error.is_ok() && !s.is_ok()) error = std::move(s);
  }
  Status error;

 private:
  Engine& e_;
  std::vector<uint16_t> zeros_;
  std::vector<std::string> fetched_;
};

struct Case {
  const char* name;
  const char* zero;  // with NVMEDIR for the directory
  size_t budget;
  bool fail_reads;          // reads, else writes
  const char* strata = "";  // extra keys of the "strata" section (the NVMe rewrite mode)
  int accumulation = kAccum;
};

class NvmeFault : public ::testing::TestWithParam<Case> {};

TEST_P(NvmeFault, IsReportedAndTheLastCheckpointResumesExactly) {
  const Case& c = GetParam();
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir d1, d2, ckpt;
  auto json = [&](const std::string& dir) {
    std::string z = c.zero;
    for (size_t at; (at = z.find("NVMEDIR")) != std::string::npos;) z.replace(at, 7, dir);
    std::string j = config_json(z, c.budget, "", c.strata);
    const std::string gas = "\"gradient_accumulation_steps\": ";
    return j.replace(j.find(gas), gas.size() + std::to_string(kAccum).size(), gas + std::to_string(c.accumulation));
  };
  const EngineRun straight = train_engine(json(d1.path()), mlp);

  strata::testing::FaultyIoSys faulty;
  RunOptions o;
  o.io_sys = &faulty;
  auto cfg = parse_engine_config(json(d2.path()));
  ASSERT_TRUE(cfg.is_ok());
  auto made = harness::make_engine(cfg.value(), mlp, o);
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  Engine& e = *made.value();
  const int saved_at = 2 * kAccum;
  o.engine = &e;
  o.micro_end = saved_at;
  (void)train_engine(json(d2.path()), mlp, o);
  ASSERT_TRUE(e.save(ckpt.path()).is_ok());

  // The next NVMe transfers of the chosen kind fail with EIO.
  faulty.completion_error = EIO;
  faulty.completion_error_reads = c.fail_reads;
  faulty.completion_error_count = 3;
  Tolerant a(e);
  std::vector<float> x, y;
  Status failed;
  for (int micro = saved_at; micro < kSteps * kAccum && failed.is_ok(); ++micro) {
    mlp.batch(100 + static_cast<uint32_t>(micro), &x, &y);
    mlp.train_micro(a, x, y, e.param_dtype(), e.loss_scale());
    failed = a.error;
    if (!failed.is_ok()) break;
    auto r = e.step();
    if (!r.is_ok()) failed = r.status();
  }
  if (failed.is_ok()) failed = e.synchronize();  // a write-back may be the one that failed
  ASSERT_FALSE(failed.is_ok()) << "the injected EIO was never reported";
  EXPECT_EQ(failed.code(), StatusCode::kIo) << failed.to_string();
  EXPECT_NE(failed.to_string().find("Input/output error"), std::string::npos) << failed.to_string();
  EXPECT_NE(failed.to_string().find("tensor 'c"), std::string::npos) << "names the tensor: " << failed.to_string();
  if (std::string(c.name) == "optimizer_gradients_write") {
    EXPECT_NE(failed.to_string().find("fp32 gradient of chunk"), std::string::npos) << failed.to_string();
    EXPECT_NE(failed.to_string().find(".grad32'"), std::string::npos) << failed.to_string();
  }
  // The optimizer's NVMe state went through the backup slots: read ahead, written back behind the step.
  if (std::string(c.name).rfind("optimizer", 0) == 0 && std::string(c.strata).find("speculate") == std::string::npos) {
    EXPECT_GT(e.stats().chunks_read_ahead, 0);
  }

  // Recovery: release what is still fetched, load the checkpoint, run the rest.
  faulty.completion_error_count = 0;
  for (const auto& l : mlp.layers())
    for (const std::string& n : {l.w, l.b}) (void)e.release(n);
  Status l = e.load(ckpt.path());
  ASSERT_TRUE(l.is_ok()) << l.to_string();
  o.micro_begin = saved_at;
  o.micro_end = kSteps * kAccum;
  const EngineRun resumed = train_engine(json(d2.path()), mlp, o);
  for (const auto& [n, v] : straight.master) EXPECT_EQ(resumed.master.at(n), v) << n;
}

// Gradients on NVMe written slowly, across a skipped step (an inf gradient: the step reads none of
// them): the next cycle's writes of the same keys wait for the old ones instead of failing, and
// the run ends as one whose writes were not slowed.
TEST(NvmeGradientWrites, SlowWritesAcrossASkippedStep) {
  const Mlp mlp{MlpShape{}};
  auto json = [](const std::string& dir) {
    std::string j =
        config_json("\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" + dir + "\"}",
                    256 << 10, "", ", \"gradient_tier\": \"nvme\", \"speculate\": false");
    const std::string gas = "\"gradient_accumulation_steps\": ";
    j.replace(j.find(gas), gas.size() + std::to_string(kAccum).size(), gas + "1");
    // Chunks of 32 Ki elements: fewer chunks than assembly buffers, so a write need not be reaped
    // to free a buffer before its chunk's next one.
    const std::string chunk = "\"chunk_bytes\": 8192";
    return j.replace(j.find(chunk), chunk.size(), "\"chunk_bytes\": 65536");
  };
  strata::testing::ScratchDir d1, d2;
  RunOptions o;
  o.poison_micro = 1;
  const EngineRun straight = train_engine(json(d1.path()), mlp, o);
  strata::testing::FaultyIoSys slow;
  slow.write_completion_delay_us = 30000;
  o.io_sys = &slow;
  const EngineRun slowed = train_engine(json(d2.path()), mlp, o);
  int skipped = 0;
  for (const StepResult& r : slowed.steps) skipped += r.overflow;
  EXPECT_EQ(skipped, 1);
  ASSERT_FALSE(straight.master.empty());
  for (const auto& [n, v] : straight.master) EXPECT_EQ(slowed.master.at(n), v) << n;
}

INSTANTIATE_TEST_SUITE_P(
    Placements, NvmeFault,
    ::testing::Values(Case{"optimizer_read",
                           "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           112 << 10, true},
                      Case{"optimizer_write",
                           "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           112 << 10, false},
                      Case{"optimizer_write_ab_slots",
                           "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           112 << 10, false, ", \"nvme_rewrite\": \"ab_slots\""},
                      // fp32 gradients on NVMe, no step slots (which would take them): the first
                      // writes after the checkpoint are gradients'.
                      Case{"optimizer_gradients_write",
                           "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           112 << 10, false, ", \"gradient_tier\": \"nvme\", \"speculate\": false", 1},
                      Case{"optimizer_gradients_read",
                           "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           112 << 10, true, ", \"gradient_tier\": \"nvme\"", 1},
                      Case{"params_read",
                           "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": "
                           "{\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}",
                           32 << 10, true}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace strata::engine
