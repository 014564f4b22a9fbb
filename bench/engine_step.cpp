// bench/engine_step: one training step of an MLP (tests/engine/mlp_model.h) through the engine on
// the host-emulated device, with a device budget about 1/4 of the model's bit16 parameters, beside
// an in-memory baseline of the same model in the same run (plain arrays, the same CPU Adam and
// norm kernels, no chunks, no copies). Prints where the step time goes: compute (the model's own
// math), engine calls (fetch / grad / release, of which stalls: the host blocked on copies), and
// the optimizer step (of which Adam and NVMe). One JSON object per line on stdout, a table on
// stderr.
//
// Each offloaded placement runs twice: synchronous (strata.overlap false: fetch waits for its
// copy, the NVMe step waits per array) and overlapped (prefetch + pipelined step). --trace FILE
// writes the Chrome-trace timeline of the last overlapped run.
//
//   strata_bench_engine_step [--hidden N] [--layers N] [--batch N] [--steps N] [--nvme-dir DIR] [--trace FILE]
#include <oneapi/tbb/task_arena.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/cpu/adam.h"
#include "kernels/cpu/casts.h"
#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"
#include "src/engine/engine.h"
#include "tests/engine/mlp_model.h"

namespace strata::bench {
namespace {

using testing::Mlp;
using testing::MlpShape;

struct Timing {
  double step = 0, compute = 0, calls = 0, stall = 0, stall_fetch = 0, optimizer = 0, adam = 0, nvme = 0;
  double h2d_mb = 0, d2h_mb = 0, nvme_mb = 0;
  double first_loss = 0, last_loss = 0;
};

// In-memory baseline: bit16 params, fp32 gradients, master and moments in plain arrays.
class Baseline final : public testing::ParamAccess {
 public:
  explicit Baseline(const Mlp& mlp) : k_(kernels::kernel_table(kernels::best_isa()).value()) {
    for (const auto& l : mlp.layers()) {
      add(l.w, mlp.init(l, true, 1));
      add(l.b, mlp.init(l, false, 1));
    }
  }
  const uint16_t* fetch(const std::string& n) override { return t_.at(n).p16.data(); }
  void release(const std::string&) override {}
  void grad(const std::string& n, const uint16_t* g, size_t count) override {
    kernels::accumulate(*k_, t_.at(n).acc.data(), kernels::TensorView{g, DType::kBF16, count}, 1.0f);
  }
  void step(double lr) {
    std::vector<kernels::TensorView> views;
    for (auto& [n, t] : t_) views.push_back({t.acc.data(), DType::kF32, t.acc.size()});
    const kernels::NormResult r = kernels::multi_tensor_sumsq(*k_, views);
    kernels::AdamHyper h;
    h.lr = static_cast<float>(lr);
    h.grad_scale = static_cast<float>(kernels::clip_coefficient(r.l2(), 1.0));
    std::vector<kernels::AdamTensor> ts;
    for (auto& [n, t] : t_)
      ts.push_back(
          {t.p.data(), t.m.data(), t.v.data(), t.acc.data(), DType::kF32, t.p16.data(), DType::kBF16, t.p.size()});
    kernels::adam_update(*k_, kernels::make_adam_coeffs(kernels::AdamMode::kAdamW, true, ++step_, h), ts);
    for (auto& [n, t] : t_) std::memset(t.acc.data(), 0, t.acc.size() * 4);
  }

 private:
  struct T {
    std::vector<float> p, m, v, acc;
    std::vector<uint16_t> p16;
  };
  void add(const std::string& n, const std::vector<float>& init) {
    T t{init, std::vector<float>(init.size()), std::vector<float>(init.size()), std::vector<float>(init.size()), {}};
    t.p16.resize(init.size());
    kernels::cast_from_fp32(*k_, init.data(), init.size(), DType::kBF16, t.p16.data());
    t_.emplace(n, std::move(t));
  }
  const kernels::KernelTable* k_;
  std::map<std::string, T> t_;
  int64_t step_ = 0;
};

// The engine as ParamAccess, timing every call.
class Timed final : public testing::ParamAccess {
 public:
  explicit Timed(engine::Engine& e) : e_(e) {}
  const uint16_t* fetch(const std::string& n) override {
    void* p = nullptr;
    calls += seconds([&] { p = check(e_.fetch(n)); });
    return static_cast<const uint16_t*>(p);
  }
  void release(const std::string& n) override {
    calls += seconds([&] { check(e_.release(n)); });
  }
  void grad(const std::string& n, const uint16_t* g, size_t count) override {
    calls += seconds([&] { check(e_.grad(n, g, DType::kBF16, count)); });
  }
  double calls = 0;

  static void check(const Status& s) {
    if (!s.is_ok()) {
      std::fprintf(stderr, "engine_step: %s\n", s.to_string().c_str());
      std::exit(1);
    }
  }
  template <class T>
  static T check(StatusOr<T> s) {
    check(s.status());
    return std::move(s).value();
  }

 private:
  engine::Engine& e_;
};

Timing run_baseline(const Mlp& mlp, int steps) {
  Baseline b(mlp);
  std::vector<float> x, y;
  std::vector<double> step_t, compute_t, opt_t, loss;
  for (int s = 0; s <= steps; ++s) {
    mlp.batch(1, &x, &y);  // one batch, learnt step after step: the loss must fall
    const double c = seconds([&] { loss.push_back(mlp.train_micro(b, x, y, DType::kBF16, 1.0)); });
    const double o = seconds([&] { b.step(1e-3); });
    if (s == 0) continue;  // warm-up
    step_t.push_back(c + o);
    compute_t.push_back(c);
    opt_t.push_back(o);
  }
  Timing t;
  t.step = median(step_t);
  t.compute = median(compute_t);
  t.optimizer = median(opt_t);
  t.adam = t.optimizer;
  t.first_loss = loss.front();
  t.last_loss = loss.back();
  return t;
}

Timing run_engine(const Mlp& mlp, const std::string& json, int steps, std::string* plan) {
  auto cfg = engine::parse_engine_config(json);
  Timed::check(cfg.status());
  engine::EngineOptions opts;
  opts.log = [](const std::string&) {};
  auto eng = Timed::check(engine::Engine::create(cfg.value(), opts));
  for (const auto& l : mlp.layers()) {
    const auto w = mlp.init(l, true, 1), b = mlp.init(l, false, 1);
    Timed::check(eng->register_param(l.w, {l.fan_out, l.fan_in}, DType::kF32, w.data()));
    Timed::check(eng->register_param(l.b, {l.fan_out}, DType::kF32, b.data()));
  }
  Timed::check(eng->prepare());
  *plan = eng->plan_table();
  Timed a(*eng);
  std::vector<float> x, y;
  std::vector<Timing> per;
  std::vector<double> loss;
  for (int s = 0; s <= steps; ++s) {
    mlp.batch(1, &x, &y);  // one batch, learnt step after step: the loss must fall
    const engine::EngineStats before = eng->stats();
    a.calls = 0;
    const double m = seconds([&] { loss.push_back(mlp.train_micro(a, x, y, DType::kBF16, 1.0)); });
    const double o = seconds([&] { Timed::check(eng->step(1e-3)); });
    const engine::EngineStats after = eng->stats();
    if (s == 0) continue;
    Timing t;
    t.step = m + o;
    t.calls = a.calls;
    t.compute = m - a.calls;
    t.stall_fetch = after.stall_fetch_s - before.stall_fetch_s;
    t.stall = t.stall_fetch + (after.stall_grad_s - before.stall_grad_s);
    t.optimizer = o;
    t.adam = after.step_update_s - before.step_update_s;
    t.nvme = after.step_nvme_s - before.step_nvme_s;
    t.h2d_mb = static_cast<double>(after.bytes_h2d - before.bytes_h2d) / 1e6;
    t.d2h_mb = static_cast<double>(after.bytes_d2h - before.bytes_d2h) / 1e6;
    t.nvme_mb = static_cast<double>(after.bytes_nvme_read - before.bytes_nvme_read + after.bytes_nvme_write -
                                    before.bytes_nvme_write) /
                1e6;
    per.push_back(t);
  }
  // The step of median duration, whole (its parts add up).
  std::sort(per.begin(), per.end(), [](const Timing& p, const Timing& q) { return p.step < q.step; });
  Timing t = per[per.size() / 2];
  t.first_loss = loss.front();
  t.last_loss = loss.back();
  return t;
}

void report(const std::string& name, const Timing& t, const Timing& base, size_t params, size_t budget) {
  std::printf(
      "{\"bench\": \"engine_step\", \"config\": \"%s\", \"params\": %zu, \"device_budget\": %zu, \"step_s\": %.5f, "
      "\"compute_s\": %.5f, \"engine_calls_s\": %.5f, \"stall_s\": %.5f, \"stall_fetch_s\": %.5f, \"optimizer_s\": "
      "%.5f, \"adam_s\": %.5f, "
      "\"nvme_s\": %.5f, \"h2d_MB\": %.2f, \"d2h_MB\": %.2f, \"nvme_MB\": %.2f, \"overhead_s\": %.5f, "
      "\"stall_pct\": %.2f, \"vs_in_memory\": %.3f, \"loss_first\": %.5f, \"loss_last\": %.5f, \"where\": %s, \"git\": "
      "\"%s\"}\n",
      name.c_str(), params, budget, t.step, t.compute, t.calls, t.stall, t.stall_fetch, t.optimizer, t.adam, t.nvme,
      t.h2d_mb, t.d2h_mb, t.nvme_mb, t.step - t.compute, 100.0 * t.stall / t.step, t.step / base.step, t.first_loss,
      t.last_loss, where_json(kernels::kernel_table(kernels::best_isa()).value()->name).c_str(), STRATA_GIT_SHA);
  std::fprintf(stderr,
               "%-32s %8.1f %8.1f %8.1f %8.1f %6.1f%% %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %7.3fx  %.4f -> %.4f\n",
               name.c_str(), t.step * 1e3, t.compute * 1e3, t.calls * 1e3, t.stall * 1e3, 100.0 * t.stall / t.step,
               t.optimizer * 1e3, t.adam * 1e3, t.nvme * 1e3, (t.step - t.compute) * 1e3, t.h2d_mb, t.nvme_mb,
               t.step / base.step, t.first_loss, t.last_loss);
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  testing::MlpShape s;
  s.in = 768;
  s.hidden = 768;
  s.out = 256;
  s.hidden_layers = 15;
  s.batch = 8;
  int steps = 5;
  std::string nvme_dir, trace;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--hidden") {
      s.hidden = s.in = std::atoi(next());
    } else if (a == "--layers") {
      s.hidden_layers = std::atoi(next()) - 1;
    } else if (a == "--batch") {
      s.batch = std::atoi(next());
    } else if (a == "--steps") {
      steps = std::atoi(next());
    } else if (a == "--nvme-dir") {
      nvme_dir = next();
    } else if (a == "--trace") {
      trace = next();
    } else {
      std::fprintf(stderr,
                   "usage: %s [--hidden N] [--layers N] [--batch N] [--steps N] [--nvme-dir DIR] [--trace FILE]\n",
                   argv[0]);
      return 2;
    }
  }
  if (s.hidden < 64 || s.hidden_layers < 1 || s.batch < 1 || steps < 1) {
    std::fprintf(stderr, "engine_step: --hidden >= 64, --layers >= 2, --batch >= 1, --steps >= 1\n");
    return 2;
  }
  s.out = std::min(s.out, s.in - 1);
  const testing::Mlp mlp(s);
  const size_t params = mlp.numel();
  // A chunk holds one layer (weight and bias); the device holds 2 working chunks and 2 gradient
  // buckets: about a quarter of the bit16 params for 16 layers.
  const size_t chunk_bytes = (static_cast<size_t>(s.hidden) * (s.hidden + 1) + 128) * 2;
  const size_t budget = 4 * chunk_bytes + (1 << 16);
  std::fprintf(
      stderr, "MLP %d x %d, %d layers, batch %d: %.1f M params, bit16 %.1f MB, device budget %.1f MB (%.1fx smaller)\n",
      s.hidden, s.hidden, s.hidden_layers + 2, s.batch, static_cast<double>(params) / 1e6,
      static_cast<double>(params) * 2 / 1e6, static_cast<double>(budget) / 1e6,
      static_cast<double>(params) * 2 / static_cast<double>(budget));
  std::fprintf(stderr, "%-32s %8s %8s %8s %8s %7s %8s %8s %8s %8s %8s %8s %8s  %s\n", "config (ms, MB per step)",
               "step", "compute", "calls", "stall", "stall%", "optim", "adam", "nvme", "overhead", "h2d MB", "nvme MB",
               "vs mem", "loss");
  const bench::Timing base = bench::run_baseline(mlp, steps);
  bench::report("in-memory", base, base, params, 0);
  const std::string common =
      "\"bf16\": {\"enabled\": true}, \"gradient_clipping\": 1.0, "
      "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3}}, ";
  auto json = [&](const std::string& zero, const std::string& extra) {
    return "{" + common + "\"zero_optimization\": {" + zero +
           "}, \"strata\": {\"device\": \"host\", \"device_bytes\": " + std::to_string(budget) +
           ", \"chunk_bytes\": " + std::to_string(chunk_bytes) + extra + "}}";
  };
  std::vector<std::pair<std::string, std::string>> configs = {
      {"params+optimizer cpu",
       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": {\"device\": \"cpu\"}"}};
  if (!nvme_dir.empty()) {
    configs.push_back({"params cpu, optimizer nvme",
                       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, "
                       "\"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                           nvme_dir + "\"}"});
    configs.push_back({"params+optimizer nvme",
                       "\"stage\": 3, \"offload_param\": {\"device\": \"nvme\", \"nvme_path\": \"" + nvme_dir +
                           "\"}, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" + nvme_dir + "\"}"});
  }
  for (size_t i = 0; i < configs.size(); ++i) {
    const auto& [name, zero] = configs[i];
    std::string plan;
    const bench::Timing sync = bench::run_engine(mlp, json(zero, ", \"overlap\": false"), steps, &plan);
    bench::report(name + ", sync", sync, base, params, budget);
    const std::string tr = i + 1 == configs.size() && !trace.empty() ? ", \"trace\": \"" + trace + "\"" : "";
    const bench::Timing t = bench::run_engine(mlp, json(zero, tr), steps, &plan);
    bench::report(name + ", overlapped", t, base, params, budget);
  }
  return 0;
}
