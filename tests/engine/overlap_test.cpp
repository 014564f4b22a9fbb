// Overlap must not change results: trace-driven prefetch of offloaded params and the pipelined
// NVMe optimizer step train the MLP to exactly the masters of the synchronous paths
// (strata.overlap = false), with copies slowed down, with a fetch order that changes mid-training,
// and with every pipeline depth; the device budget holds throughout.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "kernels/reference/half.h"
#include "offload/device.h"
#include "tests/engine/engine_harness.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::RunOptions;
using harness::train_engine;
using testing::Mlp;
using testing::MlpShape;

constexpr size_t kBudget = 32 << 10;  // below the model's bit16 params
const std::string kOff = ", \"overlap\": false";

std::string params_on(const std::string& tier, const std::string& dir) {
  const std::string path = tier == "nvme" ? ", \"nvme_path\": \"" + dir + "\"" : "";
  return "\"stage\": 3, \"offload_optimizer\": {\"device\": \"" + tier + "\"" + path +
         "}, \"offload_param\": {\"device\": \"" + tier + "\"" + path + "}";
}

void expect_same_masters(const EngineRun& a, const EngineRun& b, const std::string& what) {
  ASSERT_EQ(a.master.size(), b.master.size()) << what;
  ASSERT_FALSE(a.master.empty()) << what;
  for (const auto& [n, v] : a.master) EXPECT_EQ(v, b.master.at(n)) << what << ": " << n;
}

class Prefetch : public ::testing::TestWithParam<const char*> {};

TEST_P(Prefetch, OnAndOffTrainTheSameWeightsWithinTheBudget) {
  const Mlp mlp{MlpShape{}};
  ASSERT_LT(kBudget, mlp.numel() * 2);
  strata::testing::ScratchDir d1, d2;
  const EngineRun off = train_engine(config_json(params_on(GetParam(), d1.path()), kBudget, "", kOff), mlp);
  const EngineRun on = train_engine(config_json(params_on(GetParam(), d2.path()), kBudget), mlp);
  expect_same_masters(on, off, std::string("params on ") + GetParam());
  EXPECT_EQ(off.stats.prefetches, 0);
  EXPECT_GT(on.stats.prefetches, 0);
  EXPECT_GT(on.stats.prefetch_hits, on.stats.prefetches / 2) << "most prefetched chunks are used before eviction";
  EXPECT_LT(on.stats.demand_loads, off.stats.demand_loads / 2) << "most fetches find their chunk loaded";
  EXPECT_EQ(on.stats.order_changes, 0);
  EXPECT_LE(on.stats.device_peak_bytes, kBudget);
  EXPECT_LE(off.stats.device_peak_bytes, kBudget);
}

INSTANTIATE_TEST_SUITE_P(ParamsOnCpuAndNvme, Prefetch, ::testing::Values("cpu", "nvme"));

// Every copy sleeps before it moves data: a fetch that returned before its copy finished would
// hand out the previous chunk's values, and the weights would differ.
TEST(PrefetchSeam, SlowCopiesAreWaitedFor) {
  const Mlp mlp{MlpShape{}};
  const std::string zero = params_on("cpu", "");
  const EngineRun off = train_engine(config_json(zero, kBudget, "", kOff), mlp);
  RunOptions o;
  o.device = [] { return offload::make_host_device(kBudget, std::chrono::microseconds(2000)); };
  const EngineRun slow = train_engine(config_json(zero, kBudget), mlp, o);
  expect_same_masters(slow, off, "copies delayed by 2 ms");
  EXPECT_GT(slow.stats.prefetches, 0);
  EXPECT_GT(slow.stats.stall_fetch_s, 0.0) << "the delays were waited for";
}

// From micro-batch 5 on, every other micro-batch first fetches the output layer out of order.
TEST(PrefetchSeam, AChangedFetchOrderIsLoggedOnceAndTrainsTheSameWeights) {
  const Mlp mlp{MlpShape{}};
  const std::string zero = params_on("cpu", "");
  const EngineRun off = train_engine(config_json(zero, kBudget, "", kOff), mlp);
  std::vector<std::string> log;
  RunOptions o;
  o.log = &log;
  const std::string last = mlp.layers().back().w;
  o.before_micro = [&](int micro, Engine& e) {
    if (micro < 5 || micro % 2 == 0) return;
    auto p = e.fetch(last);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    ASSERT_TRUE(e.release(last).is_ok());
  };
  const EngineRun changed = train_engine(config_json(zero, kBudget), mlp, o);
  expect_same_masters(changed, off, "fetch order changed");
  EXPECT_GE(changed.stats.order_changes, 3);
  int logged = 0;
  for (const std::string& l : log) logged += l.find("fetch order changed") != std::string::npos;
  EXPECT_EQ(logged, 1);
  EXPECT_GT(changed.stats.prefetch_hits, 0);
  EXPECT_LE(changed.stats.device_peak_bytes, kBudget);
}

// Evaluation passes (forward only) between training micro-batches keep their own fetch order: no
// order change, prefetch hits in both; and an evaluation pass takes no gradient and no step.
TEST(PrefetchSeam, EvaluationPassesDoNotDisturbTheTrainingOrder) {
  const Mlp mlp{MlpShape{}};
  const std::string zero = params_on("cpu", "");
  const EngineRun off = train_engine(config_json(zero, kBudget, "", kOff), mlp);
  RunOptions o;
  std::vector<std::string> log;
  o.log = &log;
  int evals = 0;
  o.before_micro = [&](int micro, Engine& e) {
    if (micro % 2 != 0) return;  // an evaluation pass before every other micro-batch
    ASSERT_TRUE(e.begin_eval().is_ok());
    EXPECT_EQ(e.begin_eval().code(), StatusCode::kFailedPrecondition);
    for (const auto& l : mlp.layers()) {
      ASSERT_TRUE(e.fetch(l.w).is_ok());
      ASSERT_TRUE(e.release(l.w).is_ok());
    }
    const std::vector<uint16_t> g(static_cast<size_t>(mlp.layers()[0].fan_in) * mlp.layers()[0].fan_out, 0);
    EXPECT_EQ(e.grad(mlp.layers()[0].w, g.data(), e.param_dtype(), g.size()).code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(e.step().status().code(), StatusCode::kFailedPrecondition);
    ASSERT_TRUE(e.end_eval().is_ok());
    ++evals;
  };
  const EngineRun run = train_engine(config_json(zero, kBudget), mlp, o);
  expect_same_masters(run, off, "with evaluation passes");
  EXPECT_EQ(evals, harness::kSteps * harness::kAccum / 2);
  EXPECT_EQ(run.stats.order_changes, 0);
  for (const std::string& l : log) EXPECT_EQ(l.find("fetch order changed"), std::string::npos) << l;
  EXPECT_GT(run.stats.prefetch_hits, 0);
}

// The NVMe optimizer pipeline at every depth, with and without overlap, against the synchronous
// path; with params on the device, on the host and on NVMe (written through the same pipeline).
class Pipeline : public ::testing::TestWithParam<std::tuple<int, const char*>> {};

TEST_P(Pipeline, MatchesTheSynchronousStep) {
  const auto [buffers, params] = GetParam();
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir d1, d2;
  auto zero = [&](const std::string& dir) {
    const std::string path = "\"nvme_path\": \"" + dir + "\"";
    const std::string opt =
        "\"offload_optimizer\": {\"device\": \"nvme\", \"buffer_count\": " + std::to_string(buffers) + ", " + path +
        "}";
    const std::string p = params;
    if (p == "device") return "\"stage\": 2, " + opt;
    return "\"stage\": 3, " + opt + ", \"offload_param\": {\"device\": \"" + p + "\"" +
           (p == "nvme" ? ", " + path : "") + "}";
  };
  const size_t budget = std::string(params) == "device" ? size_t{112} << 10 : kBudget;
  const EngineRun sync = train_engine(config_json(zero(d1.path()), budget, "", kOff), mlp);
  const EngineRun piped = train_engine(config_json(zero(d2.path()), budget), mlp);
  expect_same_masters(piped, sync, std::to_string(buffers) + " buffers, params on " + params);
  // (Params read from NVMe by prefetch may be read more often than on demand.)
  if (std::string(params) != "nvme") {
    EXPECT_EQ(piped.stats.bytes_nvme_read, sync.stats.bytes_nvme_read);
  }
  EXPECT_EQ(piped.stats.bytes_nvme_write, sync.stats.bytes_nvme_write);
  EXPECT_GE(piped.stats.bytes_nvme_write, mlp.numel() * 12 * harness::kSteps);
  EXPECT_GT(piped.stats.chunks_read_ahead, 0) << "state read during the cycle's last micro-batch";
}

INSTANTIATE_TEST_SUITE_P(Depths, Pipeline,
                         ::testing::Combine(::testing::Values(1, 2, 4), ::testing::Values("device", "cpu", "nvme")));

// Params on NVMe: the staging buffers that carried the step's new bit16 values to NVMe keep them,
// so the next forward's first chunk (updated last) is loaded from there — no NVMe read — and holds
// the new values (the masters rounded to bf16).
TEST(StagedOutputs, TheNextForwardsFirstChunkIsNotReadBack) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir dir;
  const std::string zero =
      "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": "
      "{\"device\": \"nvme\", \"nvme_path\": \"" +
      dir.path() + "\"}";
  const std::string json = config_json(zero, kBudget, "", kOff);  // no prefetch: every read is the fetch's own
  auto cfg = parse_engine_config(json);
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  RunOptions o;
  auto made = harness::make_engine(cfg.value(), mlp, o);
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  Engine& e = *made.value();
  o.engine = &e;
  o.micro_end = harness::kAccum;  // one optimizer step
  const EngineRun run = train_engine(json, mlp, o);
  ASSERT_EQ(run.steps.size(), 1u);
  const std::string& first = mlp.layers()[0].w;
  const size_t n = static_cast<size_t>(mlp.layers()[0].fan_in * mlp.layers()[0].fan_out);
  std::vector<float> master(n);
  ASSERT_TRUE(e.read_master(first, master.data(), n).is_ok());
  const size_t read_before = e.stats().bytes_nvme_read;
  auto f = e.fetch(first);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(e.stats().bytes_nvme_read, read_before) << "loaded from the staging buffer that wrote it";
  const auto* bits = static_cast<const uint16_t*>(f.value());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(bits[i], reference::float_to_bf16(master[i])) << "element " << i;
  ASSERT_TRUE(e.release(first).is_ok());
}

// Params on NVMe with a staging buffer for every chunk: a copy loaded to the device stays staged
// for the chunk's next use (the backward, the next micro-batch) and the step's outputs stay staged
// for the next forward, so over the whole run each chunk is read from NVMe once — its first load.
// With two staging buffers the same run reads again and again; both train the same masters.
TEST(StagedCopies, KeptForTheirNextUseEachChunkIsReadOnce) {
  const Mlp mlp{MlpShape{}};
  auto run = [&](int buffers, const std::string& dir) {
    const std::string zero =
        "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"nvme\", "
        "\"nvme_path\": \"" +
        dir + "\", \"buffer_count\": " + std::to_string(buffers) + "}";
    return train_engine(config_json(zero, kBudget), mlp);
  };
  strata::testing::ScratchDir d1, d2;
  const EngineRun kept = run(16, d1.path()), few = run(2, d2.path());
  expect_same_masters(kept, few, "16 vs 2 staging buffers");
  const size_t params_on_nvme = kept.stats.tier_bytes[static_cast<size_t>(Tier::kNvme)];
  ASSERT_GT(params_on_nvme, mlp.numel() * 2 - 1) << "every chunk's bit16 params rest on NVMe, once";
  ASSERT_LT(params_on_nvme, 16u * 8192) << "fewer chunks than staging buffers";
  EXPECT_EQ(kept.stats.bytes_param_nvme_read, params_on_nvme);
  EXPECT_GT(few.stats.bytes_param_nvme_read, harness::kSteps * params_on_nvme);
  EXPECT_GT(kept.stats.prefetch_hits, 0);
}

// The timeline: valid Chrome trace JSON with spans on the lanes the run used, and one summary
// line per optimizer step; an unwritable trace path fails at create.
TEST(Timeline, TraceFileAndStepSummaries) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir dir;
  const std::string trace = dir.path() + "/trace.json";
  std::vector<std::string> log;
  RunOptions o;
  o.log = &log;
  const std::string zero = "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                           dir.path() + "\"}, \"offload_param\": {\"device\": \"cpu\"}";
  const EngineRun run =
      train_engine(config_json(zero, kBudget, "", ", \"trace\": \"" + trace + "\", \"step_summary\": true"), mlp, o);
  std::ifstream in(trace);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON";
  std::map<int, std::string> lanes;
  std::map<std::string, int> spans;
  for (const auto& e : j.at("traceEvents")) {
    if (e.at("ph") == "M" && e.at("name") == "thread_name") lanes[e.at("tid").get<int>()] = e.at("args").at("name");
  }
  for (const auto& e : j.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    EXPECT_GE(e.at("dur").get<double>(), 0.0);
    ++spans[lanes.at(e.at("tid").get<int>())];
  }
  for (const char* lane : {"host program (forward / backward)", "compute stream", "H2D copies", "D2H copies",
                           "NVMe read", "NVMe write", "CPU optimizer", "engine (stalls, step)"})
    EXPECT_GT(spans[lane], 0) << lane;
  EXPECT_EQ(spans["NVMe write"], spans["NVMe read"]) << "every optimizer array read is written back";
  EXPECT_EQ(spans["NVMe read"] % (3 * harness::kSteps), 0) << "three arrays per chunk per step";
  EXPECT_GT(run.stats.chunks_read_ahead, 0);
  int summaries = 0;
  for (const std::string& l : log) {
    if (l.rfind("step ", 0) != 0 || l.find("overlap") == std::string::npos) continue;
    ++summaries;
    EXPECT_NE(l.find("NVMe read"), std::string::npos) << l;
  }
  EXPECT_EQ(summaries, harness::kSteps);

  auto cfg = parse_engine_config(config_json(zero, kBudget, "", ", \"trace\": \"/nonexistent/dir/t.json\""));
  ASSERT_TRUE(cfg.is_ok());
  auto e = Engine::create(cfg.value());
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.status().to_string().find("/nonexistent/dir/t.json"), std::string::npos) << e.status().to_string();
}

}  // namespace
}  // namespace strata::engine
