// bench/train: `strata train`'s step on the GPT reference model for several placements, each
// beside its analytical bound measured in the same run:
//   bound = max(compute, host<->device traffic / copy bandwidth, NVMe reads / store read rate +
//               NVMe writes / store write rate, params / CPU Adam rate)
// compute = the same model's step with everything on the device (no offload, same kernels), run
// before every offloaded run and after the last: each offloaded run's compute term is the mean of
// the in-memory runs on either side of it;
// copy bandwidth = memcpy of 64 MiB buffers (the emulated device's copies are memcpy), or on a
// GPU (--device cuda) pinned host -> device cudaMemcpy of 256 MiB;
// store rates = the NvmeStore alone on the run's own optimizer-state arrays; and, for the
// placements whose optimizer runs on the host, CPU Adam over every param at the rate CpuAdam
// reaches here on 32 M params (all threads, fp32 gradients, bf16 output). Also the matmul
// rate (oneDNN, the model's largest matmul) and the TFLOPS it implies. Target: <= 1.10x the bound.
// One JSON object per placement on stdout, a table on stderr.
//
//   strata_bench_train --nvme-dir DIR [--preset NAME | --layers N --channels N --heads N] [--batch B] [--seq T]
//                      [--steps S] [--device host|cuda] [--checkpointing 1] [--sync 1] [--rounds R]
//                      [--paired 0|1] [--speculate-device 1] [--also KEYS]
// --sync 1 adds each offloaded placement with the synchronous step (strata.speculate = false).
// --also KEYS adds each offloaded placement with more "strata" keys (e.g. '"background_priority":
// "normal"'): an A/B of a setting in one run, each side paired with its in-memory neighbours.
// --rounds R (default 15; 5 left a few % of a 2-vCPU VM's drift in the medians, ~4 min here):
// every placement runs R times, each run between two in-memory runs; a
// row's ratio is the median over its runs of step / bound (paired with its neighbours), shown with
// the spread over the rounds and "fastest": its fastest run over the fastest in-memory run.
// --speculate-device 1 adds the in-memory placement with strata.speculate_device.
// --paired 0: one in-memory run per round and one at the end instead (a GPU's timing does not
// drift like this VM's, and each in-memory run of a large model costs its set-up).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "gpt_flags.h"
#include "kernels/cpu/adam.h"
#include "kernels/cpu/gpt_ops.h"
#include "kernels/cpu/isa.h"
#include "src/train/openmp_wait.h"
#include "src/train/trainer.h"
#include "store_rates.h"

#if defined(STRATA_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace strata::bench {
namespace {

// GFLOP/s of oneDNN on [N, C] x [C, 4C] (the MLP's first matmul).
double matmul_gflops(int N, int C) {
  std::vector<float> x(static_cast<size_t>(N) * C, 0.5f), w(static_cast<size_t>(4) * C * C, 0.25f),
      out(static_cast<size_t>(N) * 4 * C);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r)
    t.push_back(
        seconds([&] { (void)kernels::gpt::matmul_forward(out.data(), x.data(), w.data(), nullptr, N, C, 4 * C); }));
  return 2.0 * N * C * 4.0 * C / best(t) / 1e9;
}

// GB/s of pinned host -> device copies (0 without CUDA or on failure).
double h2d_gbps() {
#if defined(STRATA_HAVE_CUDA)
  const size_t n = size_t{256} << 20;
  void *h = nullptr, *d = nullptr;
  if (cudaMallocHost(&h, n) != cudaSuccess || cudaMalloc(&d, n) != cudaSuccess) return 0;
  std::memset(h, 1, n);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) t.push_back(seconds([&] { (void)cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); }));
  cudaFree(d);
  cudaFreeHost(h);
  return static_cast<double>(n) / best(t) / 1e9;
#else
  return 0;
#endif
}

// Params per second of CpuAdam over 32 M params (fp32 master / m / v / gradients, bf16 out).
double cpu_adam_rate() {
  const size_t n = size_t{32} << 20;
  std::vector<float> p(n, 0.5f), m(n, 0.0f), v(n, 0.0f), g(n, 1e-3f);
  std::vector<uint16_t> out(n);
  auto adam = check(kernels::CpuAdam::create(kernels::CpuAdamOptions{}));
  const kernels::AdamTensor t{p.data(), m.data(), v.data(), g.data(), DType::kF32, out.data(), DType::kBF16, n};
  std::vector<double> times;
  for (int r = 0; r < 4; ++r) times.push_back(seconds([&] { (void)adam->step(kernels::AdamHyper{}, {&t, 1}); }));
  return static_cast<double>(n) / best(times);
}

struct Result {
  train::TrainSummary::Step step;  // the median step
  double tokens_per_s = 0, loss_first = 0, loss_last = 0;
};

// A placement's run; an error (a plan the machine cannot hold: the NVMe rows of a 7B model on a
// small disk) is returned, and the other placements still run.
StatusOr<Result> run(const std::string& json, const train::TrainOptions& o) {
  auto cfg = check(engine::parse_engine_config(json));
  engine::EngineOptions e;
  e.log = [](const std::string&) {};
  STRATA_ASSIGN_OR_RETURN(const train::TrainSummary s, run_training(
                                                           cfg, o, [](const std::string&) {}, e));
  std::vector<train::TrainSummary::Step> steps(s.step_records.begin() + 1,
                                               s.step_records.end());  // after a warm-up step
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.seconds < b.seconds; });
  Result r;
  r.step = steps[steps.size() / 2];
  r.tokens_per_s = static_cast<double>(o.batch) * o.seq / r.step.seconds;
  r.loss_first = s.losses.front();
  r.loss_last = s.losses.back();
  return r;
}

}  // namespace
}  // namespace strata::bench

constexpr const char* kUsage =
    "usage: %s --nvme-dir DIR [--preset NAME | --layers N --channels N --heads N] [--batch B] [--seq T] [--steps S]\n"
    "          [--device host|cuda] [--checkpointing 1] [--sync 1] [--rounds R] [--paired 0|1]\n          "
    "[--speculate-device 1] [--also KEYS]\n";

int main(int argc, char** argv) {
  strata::train::prefer_passive_openmp(argv);  // oneDNN's OpenMP threads would spin on the model's cores
  using namespace strata;
  using namespace strata::bench;
  train::TrainOptions o;
  o.shape = train::GptShape{6, 4, 256, 256, 64};
  o.batch = 8;
  o.seq = 64;
  o.steps = 10;
  o.warmup = 2;
  o.val_every = 0;
  o.val_batches = 1;
  std::string dir, device = "host", also;
  bool sync_rows = false, paired = true, speculate_device = false;
  int rounds = 15;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--nvme-dir")
      dir = argv[i + 1];
    else if (a == "--preset")
      o.shape = check(train::gpt_preset(argv[i + 1]));
    else if (a == "--device")
      device = argv[i + 1];
    else if (a == "--also")
      also = argv[i + 1];
    else if (a == "--checkpointing")
      o.checkpointing = v != 0;
    else if (a == "--sync")
      sync_rows = v != 0;
    else if (a == "--speculate-device")
      speculate_device = v != 0;
    else if (a == "--paired")
      paired = v != 0;
    else if (a == "--rounds" && v >= 1)
      rounds = v;
    else if (!gpt_flag(a, v, &o)) {
      std::fprintf(stderr, kUsage, argv[0]);
      return 2;
    }
  }
  if (dir.empty() || (argc % 2) == 0 || (device != "host" && device != "cuda")) {
    std::fprintf(stderr, kUsage, argv[0]);
    return 2;
  }
  o.lr = train::default_lr(o.shape);
  std::filesystem::create_directories(dir);
  o.data_path = dir + "/corpus.txt";
  if (Status s = train::write_default_corpus(o.data_path, size_t{1} << 20); !s.is_ok()) return 1;
  const size_t params = o.shape.num_params();
  // Chunks as large as the largest param (fc.w: 4C x C); device: 2 working chunks + 2 buckets.
  const size_t chunk = static_cast<size_t>(4) * o.shape.channels * o.shape.channels * 2;
  const size_t budget = 4 * chunk + (64 << 10);
  const bool gpu = device == "cuda";
  const double flops = train::gpt_flops(o.shape, o.batch, o.seq);
  const double gflops = gpu ? 0 : matmul_gflops(o.batch * o.seq, o.shape.channels);
  const double copy = gpu ? h2d_gbps() : memcpy_gbps();
  std::vector<size_t> arrays;
  {  // the optimizer-state arrays of this model's chunks: 3 per chunk of at most `chunk / 2` params
    size_t left = params;
    while (left > 0) {
      const size_t n = std::min(left, chunk / 2);
      for (int a = 0; a < 3; ++a) arrays.push_back(n * 4);
      left -= n;
    }
  }
  const Rates store = check(store_rates(dir, arrays));
  const double adam_rate = cpu_adam_rate();
  std::fprintf(
      stderr,
      "train bench: %d layers x %d channels, %.2f M params (bf16 %.1f MB), batch %d x %d; device budget %.1f MB (%.1fx "
      "smaller than the bf16 params), %s device\n  oneDNN matmul %.1f GFLOP/s, %s %.1f GB/s, NvmeStore read %.2f / "
      "write "
      "%.2f GB/s, CPU Adam %.2f G params/s\n",
      o.shape.layers, o.shape.channels, params / 1e6, params * 2 / 1e6, o.batch, o.seq, budget / 1e6,
      params * 2.0 / static_cast<double>(budget), device.c_str(), gflops, gpu ? "pinned H2D" : "memcpy", copy,
      store.read_gbps, store.write_gbps, adam_rate / 1e9);
  auto json = [&](const std::string& zero, size_t dev, const std::string& strata = "") {
    return "{\"bf16\": {\"enabled\": true}, \"gradient_clipping\": 1.0, \"zero_optimization\": {" + zero +
           "}, \"strata\": {\"device\": \"" + device + "\", \"device_bytes\": " + std::to_string(dev) +
           ", \"chunk_bytes\": " + std::to_string(chunk) + strata + "}}";
  };
  const std::string path = "\"nvme_path\": \"" + dir + "\"";
  // In memory: every state on the device (on a GPU, params + grads + fp32 master/m/v: 16 bytes per param).
  const size_t all_on_device = gpu ? params * 20 : params * 40;
  // The process's first run pays one-time costs (oneDNN's JIT, first touches of memory, thread
  // start-up; 237 vs 130 ms here): a warm-up run, not counted.
  (void)check(run(json("\"stage\": 0", all_on_device), o));
  Result base = check(run(json("\"stage\": 0", all_on_device), o));
  struct Placement {
    std::string name, zero, strata;  // zero_optimization, more "strata" keys
    size_t device_bytes = 0;         // 0: the offload budget
  };
  const std::string all_nvme = "\"stage\": 3, \"offload_param\": {\"device\": \"nvme\", " + path +
                               "}, \"offload_optimizer\": {\"device\": \"nvme\", " + path + "}";
  std::vector<Placement> placements = {
      {"in memory (all on device)", "", ""},
      {"params+optimizer cpu",
       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": {\"device\": \"cpu\"}", ""},
      {"params cpu, optimizer nvme",
       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": {\"device\": \"nvme\", " + path +
           "}",
       ""},
      {"params+optimizer nvme", all_nvme, ""},
      // fp32 gradients on NVMe too (strata.gradient_tier): host memory holds buffers only.
      {"params+optimizer+grads nvme", all_nvme, ", \"gradient_tier\": \"nvme\""}};
  // --sync 1: each offloaded placement again with the synchronous step (strata.speculate = false),
  // the peer of the step during backward.
  const size_t offloaded = placements.size();
  for (size_t i = 1; sync_rows && i < offloaded; ++i)
    placements.push_back(
        {placements[i].name + " (sync)", placements[i].zero, placements[i].strata + ", \"speculate\": false"});
  for (size_t i = 1; !also.empty() && i < offloaded; ++i)
    placements.push_back({placements[i].name + " (also)", placements[i].zero, placements[i].strata + ", " + also});
  if (!also.empty()) std::fprintf(stderr, "  rows \"(also)\": the placement with the strata keys %s\n", also.c_str());
  // --speculate-device 1: everything on the device with strata.speculate_device (the device kernel
  // updates each chunk during backward), beside the in-memory step without it (the compute term).
  if (speculate_device)
    placements.push_back(
        {"in memory, speculate_device", "\"stage\": 0", ", \"speculate_device\": true", all_on_device});
  // Rounds: every offloaded placement runs once per round, each right after an in-memory run, and
  // one more in-memory run closes the last round, so that every placement run lies between two
  // in-memory runs seconds apart. This VM's speed drifts by 10-20% within minutes: a row's ratio
  // is the median over the rounds of its step over the bound whose compute term is the mean of its
  // two neighbouring in-memory runs (paired: the drift cancels); "fastest" is each row's fastest
  // run over the fastest in-memory run.
  struct Paired {
    StatusOr<Result> run = StatusOr<Result>(internal_error("not run"));
    double compute_s = 0;  // the mean of the in-memory runs before and after it
  };
  std::vector<std::vector<Paired>> runs(placements.size());
  std::vector<Result> in_memory = {base};
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 1; i < placements.size(); ++i) {
      if (paired ? round > 0 || i > 1 : round > 0 && i == 1)
        in_memory.push_back(check(run(json("\"stage\": 0", all_on_device), o)));
      Paired p;
      const size_t dev = placements[i].device_bytes > 0 ? placements[i].device_bytes : budget;
      p.run = run(json(placements[i].zero, dev, placements[i].strata), o);
      if (p.run.is_ok())
        std::fprintf(stderr, "  round %d, %s: step %.1f ms (in memory before it %.1f ms)\n", round + 1,
                     placements[i].name.c_str(), p.run.value().step.seconds * 1e3, in_memory.back().step.seconds * 1e3);
      else
        std::fprintf(stderr, "  round %d, %s: not run: %s\n", round + 1, placements[i].name.c_str(),
                     p.run.status().to_string().c_str());
      runs[i].push_back(std::move(p));
    }
  }
  in_memory.push_back(check(run(json("\"stage\": 0", all_on_device), o)));
  // Offloaded run n (in the order they ran) lies between in-memory runs n and n + 1 (unpaired: the
  // runs of round r between in-memory runs r and r + 1).
  for (size_t i = 1; i < placements.size(); ++i)
    for (size_t round = 0; round < runs[i].size(); ++round) {
      const size_t n = paired ? round * (placements.size() - 1) + i - 1 : round;
      runs[i][round].compute_s = (in_memory[n].step.seconds + in_memory[n + 1].step.seconds) / 2;
    }
  std::vector<double> im_s;
  std::string ims;
  for (const Result& r : in_memory) {
    im_s.push_back(r.step.seconds);
    ims += (ims.empty() ? "" : " / ") + std::to_string(static_cast<int>(r.step.seconds * 1e3 + 0.5));
  }
  std::fprintf(stderr, "in-memory steps over the run: %s ms\n", ims.c_str());
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  const double fastest_compute = *std::min_element(im_s.begin(), im_s.end());
  // The in-memory row: its median run.
  std::vector<Result> by_step = in_memory;
  std::sort(by_step.begin(), by_step.end(),
            [](const Result& a, const Result& b) { return a.step.seconds < b.step.seconds; });
  runs[0].push_back(Paired{by_step[by_step.size() / 2], by_step[by_step.size() / 2].step.seconds});
  std::fprintf(stderr, "%-34s %9s %9s %9s %9s %9s %9s %9s %9s %7s %13s %7s %7s\n", "placement", "step ms", "tok/s",
               "TFLOPS", "stall ms", "copy ms", "nvme ms", "adam ms", "bound ms", "ratio", "(rounds)", "fastest",
               "loss");
  for (size_t i = 0; i < placements.size(); ++i) {
    const auto& [name, zero, strata, dev_bytes] = placements[i];
    std::vector<double> steps, bounds, ratios;
    const Result* fastest = nullptr;
    const Result* shown = nullptr;
    double t_copy = 0, t_nvme = 0;
    // The host runs Adam for every offloaded placement (on the emulated device the all-on-device
    // run's Adam is host work too, inside its compute time).
    const double t_adam = zero.empty() || dev_bytes > 0 ? 0.0 : static_cast<double>(params) / adam_rate;
    for (const Paired& p : runs[i]) {
      if (!p.run.is_ok()) continue;
      const Result& r = p.run.value();
      t_copy = static_cast<double>(r.step.h2d + r.step.d2h) / (copy * 1e9);
      t_nvme = r.step.nvme_read / (store.read_gbps * 1e9) + r.step.nvme_write / (store.write_gbps * 1e9);
      const double bound = std::max({p.compute_s, t_copy, t_nvme, t_adam});
      steps.push_back(r.step.seconds);
      bounds.push_back(bound);
      ratios.push_back(r.step.seconds / bound);
      if (fastest == nullptr || r.step.seconds < fastest->step.seconds) fastest = &r;
    }
    if (steps.empty()) {
      std::fprintf(stderr, "%-34s not run (above)\n", name.c_str());
      continue;
    }
    const double step_s = median(steps), bound_s = median(bounds), ratio = median(ratios);
    for (const Paired& p : runs[i])  // the run whose step is the median (the counters shown)
      if (p.run.is_ok() &&
          (shown == nullptr || std::abs(p.run.value().step.seconds - step_s) < std::abs(shown->step.seconds - step_s)))
        shown = &p.run.value();
    const Result& r = *shown;
    const double fastest_ratio =
        fastest->step.seconds / std::max({i == 0 ? fastest->step.seconds : fastest_compute, t_copy, t_nvme, t_adam});
    const double lo = *std::min_element(ratios.begin(), ratios.end()),
                 hi = *std::max_element(ratios.begin(), ratios.end());
    std::printf(
        "{\"bench\": \"train\", \"placement\": \"%s\", \"params\": %zu, \"batch\": %d, \"seq\": %d, \"device_budget\": "
        "%zu, "
        "\"step_s\": %.5f, \"tokens_per_s\": %.1f, \"tflops\": %.4f, \"stall_s\": %.5f, \"h2d_bytes\": %zu, "
        "\"d2h_bytes\": %zu, "
        "\"nvme_read_bytes\": %zu, \"nvme_write_bytes\": %zu, \"compute_s\": %.5f, \"copy_s\": %.5f, \"nvme_s\": %.5f, "
        "\"adam_s\": %.5f, \"bound_s\": %.5f, \"vs_bound\": %.3f, \"vs_bound_min\": %.3f, \"vs_bound_max\": %.3f, "
        "\"vs_bound_fastest\": %.3f, \"rounds\": %zu, \"matmul_gflops\": %.1f, \"memcpy_gbps\": %.2f, "
        "\"store_read_gbps\": %.3f, "
        "\"store_write_gbps\": %.3f, \"loss_first\": %.4f, \"loss_last\": %.4f, \"where\": %s, \"git\": \"%s\"}\n",
        name.c_str(), params, o.batch, o.seq,
        zero.empty()    ? all_on_device
        : dev_bytes > 0 ? dev_bytes
                        : budget,
        step_s, o.batch * o.seq / step_s, flops / step_s / 1e12, r.step.stall_seconds, r.step.h2d, r.step.d2h,
        r.step.nvme_read, r.step.nvme_write, median(im_s), t_copy, t_nvme, t_adam, bound_s, ratio, lo, hi,
        fastest_ratio, steps.size(), gflops, copy, store.read_gbps, store.write_gbps, r.loss_first, r.loss_last,
        where_json(check(kernels::kernel_table(kernels::best_isa()))->name).c_str(), STRATA_GIT_SHA);
    char spread[32];
    std::snprintf(spread, sizeof(spread), "%.2f-%.2f", lo, hi);
    std::fprintf(stderr, "%-34s %9.1f %9.0f %9.4f %9.1f %9.1f %9.1f %9.1f %9.1f %6.2fx %13s %6.2fx %.3f->%.3f\n",
                 name.c_str(), step_s * 1e3, o.batch * o.seq / step_s, flops / step_s / 1e12,
                 r.step.stall_seconds * 1e3, t_copy * 1e3, t_nvme * 1e3, t_adam * 1e3, bound_s * 1e3, ratio, spread,
                 fastest_ratio, r.loss_first, r.loss_last);
  }
  return 0;
}
