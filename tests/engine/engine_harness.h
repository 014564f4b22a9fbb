// Shared by the engine tests: the MLP of mlp_model.h trained through the engine (fetch / grad /
// release per layer, step per micro-batch) on the host-emulated device, from a JSON config.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "src/engine/engine.h"
#include "src/engine/engine_seams.h"
#include "tests/engine/mlp_model.h"

namespace strata::engine::harness {

using strata::testing::Mlp;
using strata::testing::MlpShape;

constexpr int kSteps = 6, kAccum = 2;
constexpr double kLr = 5e-3, kLionLr = 5e-4, kWeightDecay = 0.01, kClip = 0.09;

// The engine as the model's ParamAccess.
class EngineAccess final : public strata::testing::ParamAccess {
 public:
  explicit EngineAccess(Engine& e) : e_(e) {}
  const uint16_t* fetch(const std::string& n) override {
    auto p = e_.fetch(n);
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    return p.is_ok() ? static_cast<const uint16_t*>(p.value()) : nullptr;
  }
  void release(const std::string& n) override { EXPECT_TRUE(e_.release(n).is_ok()); }
  void grad(const std::string& n, const uint16_t* g, size_t count) override {
    Status s = e_.grad(n, g, e_.param_dtype(), count);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }

 private:
  Engine& e_;
};

struct EngineRun {
  std::map<std::string, std::vector<float>> master;
  std::vector<StepResult> steps;
  EngineStats stats;
  size_t device_budget = 0;
};

// The "optimizer" section of the tests' configs: AdamW (lr kLr), Lion (lr kLionLr, betas 0.9 / 0.99)
// or Adagrad (lr kLr), weight decay kWeightDecay.
inline std::string optimizer_json(const std::string& type = "AdamW") {
  const std::string extra = type == "Lion" ? ", \"betas\": [0.9, 0.99]" : "";
  return "\"optimizer\": {\"type\": \"" + type +
         "\", \"params\": {\"lr\": " + std::to_string(type == "Lion" ? kLionLr : kLr) +
         ", \"weight_decay\": " + std::to_string(kWeightDecay) + extra + "}}";
}

// `strata` adds keys to the "strata" section (", \"overlap\": false"); `optimizer` replaces the
// optimizer section (optimizer_json).
inline std::string config_json(const std::string& zero, size_t device_bytes, const std::string& fp16 = "",
                               const std::string& strata = "", const std::string& optimizer = optimizer_json()) {
  return std::string("{") +
         "\"train_micro_batch_size_per_gpu\": 16, \"gradient_accumulation_steps\": " + std::to_string(kAccum) +
         ", \"gradient_clipping\": " + std::to_string(kClip) + "," +
         (fp16.empty() ? "\"bf16\": {\"enabled\": true}," : fp16 + ",") + optimizer + "," + "\"zero_optimization\": {" +
         zero + "}," + "\"strata\": {\"device\": \"host\", \"device_bytes\": " + std::to_string(device_bytes) +
         ", \"chunk_bytes\": 8192" + strata + "}}";
}

// Knobs of a training run through the engine.
struct RunOptions {
  int poison_micro = -1;                                     // >= 0: an inf gradient in that micro-batch
  std::function<std::unique_ptr<offload::Device>()> device;  // EngineOptions::device_factory
  std::vector<std::string>* log = nullptr;                   // receives the engine's log lines
  // Runs before each micro-batch (e.g. to fetch in a different order).
  std::function<void(int micro, Engine&)> before_micro;
  int micro_begin = 0, micro_end = kSteps * kAccum;         // micro-batches to run
  Engine* engine = nullptr;                                 // train this engine (already prepared) instead of a new one
  std::function<void(const std::string&)> checkpoint_hook;  // EngineOptions::checkpoint_hook
  offload::IoSys* io_sys = nullptr;                         // EngineOptions::io_sys
};

// An engine for `cfg` with the MLP's params registered (its seeded initial values) and prepared.
inline StatusOr<std::unique_ptr<Engine>> make_engine(const EngineConfig& cfg, const Mlp& mlp, const RunOptions& o) {
  EngineOptions opts;
  opts.log = [log = o.log](const std::string& l) {
    if (log != nullptr) log->push_back(l);
  };
  EngineSeams seams;  // copied by create
  seams.device_factory = o.device;
  seams.checkpoint_hook = o.checkpoint_hook;
  seams.io_sys = o.io_sys;
  opts.seams = &seams;
  STRATA_ASSIGN_OR_RETURN(auto e, Engine::create(cfg, opts));
  for (const auto& l : mlp.layers()) {
    const auto w = mlp.init(l, true, 1), b = mlp.init(l, false, 1);
    STRATA_RETURN_IF_ERROR(e->register_param(l.w, {l.fan_out, l.fan_in}, DType::kF32, w.data()));
    STRATA_RETURN_IF_ERROR(e->register_param(l.b, {l.fan_out}, DType::kF32, b.data()));
  }
  STRATA_RETURN_IF_ERROR(e->prepare());
  return e;
}

// The fp32 masters of every param of the MLP.
inline std::map<std::string, std::vector<float>> read_masters(Engine& eng, const Mlp& mlp) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& l : mlp.layers())
    for (const std::string& n : {l.w, l.b}) {
      std::vector<float> v(static_cast<size_t>(n == l.w ? l.fan_in * l.fan_out : l.fan_out));
      Status s = eng.read_master(n, v.data(), v.size());
      EXPECT_TRUE(s.is_ok()) << s.to_string();
      out[n] = std::move(v);
    }
  return out;
}

// Trains through the engine: micro-batches [micro_begin, micro_end) of the seeded sequence.
inline EngineRun train_engine(const std::string& json, const Mlp& mlp, const RunOptions& o = {}) {
  EngineRun run;
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string() << "\n" << json;
  if (!cfg.is_ok()) return run;
  std::unique_ptr<Engine> owned;
  if (o.engine == nullptr) {
    auto e = make_engine(cfg.value(), mlp, o);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    if (!e.is_ok()) return run;
    owned = std::move(e).value();
  }
  Engine& eng = o.engine != nullptr ? *o.engine : *owned;
  EngineAccess a(eng);
  std::vector<float> x, y;
  for (int micro = o.micro_begin; micro < o.micro_end; ++micro) {
    if (o.before_micro) o.before_micro(micro, eng);
    mlp.batch(100 + static_cast<uint32_t>(micro), &x, &y);
    mlp.train_micro(a, x, y, eng.param_dtype(), eng.loss_scale(), micro == o.poison_micro ? 3 : -1);
    auto r = eng.step();
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (r.is_ok() && r.value().boundary) run.steps.push_back(r.value());
  }
  run.master = read_masters(eng, mlp);
  run.stats = eng.stats();
  run.device_budget = eng.config().device_bytes;
  return run;
}

}  // namespace strata::engine::harness
