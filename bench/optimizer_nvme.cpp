// bench/optimizer_nvme: the engine's optimizer step with fp32 master, exp_avg and exp_avg_sq on
// NVMe, 1e8+ parameters, synchronous (strata.overlap false: read, Adam, write, one array at a
// time) and pipelined (offload_optimizer.buffer_count buffer sets: read ahead, write behind),
// against the bound measured in the same run:
//   max(Adam over the same parameters in memory, bytes read / fio read GB/s + bytes written / fio write GB/s)
// fio runs on the same directory with the store's block size, queue depth and threads, before
// and after the engine runs; the faster of the two is used (the bound is then the lower one).
// A second, tighter I/O bound uses the NvmeStore's own rates for the same arrays with nothing
// else running (fio reads slower than the store on some virtual disks; docs/benchmarks.md).
// Params rest on the host (stage 3, offload_param cpu), so the step is Adam + NVMe only.
// With overlap the engine starts reading the state during the micro-batch that ends the
// accumulation cycle and leaves the last write-backs in flight when step returns, so each mode
// is timed over the whole cycle (gradient hand-off + step + wait for the write-backs), and the
// optimizer's share is that minus the hand-off time of the synchronous run.
// One JSON object per configuration on stdout, a table on stderr.
//
//   strata_bench_optimizer_nvme --dir DIR [--params N] [--chunk-mb M] [--buffers B] [--steps S]
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "fio.h"
#include "kernels/cpu/adam.h"
#include "kernels/cpu/isa.h"
#include "offload/nvme_store.h"
#include "src/engine/engine.h"
#include "store_rates.h"

namespace strata::bench {
namespace {

// Adam over n params in memory (fp32 state, fp32 gradients, bf16 output): the compute bound.
double adam_in_memory(size_t n, int reps) {
  const kernels::KernelTable* k = check(kernels::kernel_table(kernels::best_isa()));
  std::vector<float> p(n, 0.01f), m(n, 0.0f), v(n, 0.0f), g(n, 1e-3f);
  std::vector<uint16_t> out(n);
  kernels::AdamHyper h;
  std::vector<double> t;
  for (int r = 0; r <= reps; ++r) {
    kernels::AdamTensor a{p.data(), m.data(), v.data(), g.data(), DType::kF32, out.data(), DType::kBF16, n};
    const double s = seconds([&] {
      kernels::adam_update(*k, kernels::make_adam_coeffs(kernels::AdamMode::kAdamW, true, r + 1, h), {&a, 1});
    });
    if (r > 0) t.push_back(s);
  }
  return median(t);
}

struct StepTimes {
  double handoff = 0, step = 0, drain = 0;  // gradient hand-off, step(), waiting for write-backs
  double adam = 0, nvme_wait = 0;
  double read_bytes = 0, write_bytes = 0;
};

StepTimes run_engine(const std::string& dir, size_t params, size_t chunk_elems, int buffers, bool overlap, int steps) {
  const std::string json =
      "{\"bf16\": {\"enabled\": true}, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-4}},"
      "\"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": "
      "{\"device\": "
      "\"nvme\", \"nvme_path\": \"" +
      dir + "\", \"buffer_count\": " + std::to_string(buffers) +
      "}},"
      "\"strata\": {\"device\": \"host\", \"device_bytes\": " +
      std::to_string(chunk_elems * 2 * 4 + (1 << 20)) + ", \"chunk_bytes\": " + std::to_string(chunk_elems * 2) +
      ", \"overlap\": " + (overlap ? "true" : "false") + "}}";
  auto cfg = check(engine::parse_engine_config(json));
  engine::EngineOptions o;
  o.log = [](const std::string&) {};
  auto eng = check(engine::Engine::create(cfg, o));
  std::vector<std::string> names;
  for (size_t done = 0; done < params; done += chunk_elems) {
    names.push_back("p" + std::to_string(names.size()));
    const size_t n = std::min(chunk_elems, params - done);
    check(eng->register_param(names.back(), {static_cast<int64_t>(n)}, DType::kF32, nullptr));
  }
  check(eng->prepare());
  std::vector<uint16_t> grad(chunk_elems, 0x3a83);  // bf16 ~1e-3
  std::vector<StepTimes> per;
  for (int s = 0; s <= steps; ++s) {
    const engine::EngineStats a = eng->stats();
    const double handoff = seconds([&] {
      for (size_t i = names.size(); i-- > 0;) {  // backward order
        const size_t n = std::min(chunk_elems, params - i * chunk_elems);
        (void)check(eng->fetch(names[i]));
        check(eng->grad(names[i], grad.data(), DType::kBF16, n));
        check(eng->release(names[i]));
      }
    });
    const double t = seconds([&] { (void)check(eng->step()); });
    const double drain = seconds([&] { check(eng->synchronize()); });
    const engine::EngineStats b = eng->stats();
    if (s == 0) continue;  // the first step also writes slot B of every file for the first time
    StepTimes st;
    st.handoff = handoff;
    st.step = t;
    st.drain = drain;
    st.adam = b.step_update_s - a.step_update_s;
    st.nvme_wait = b.step_nvme_s - a.step_nvme_s;
    st.read_bytes = static_cast<double>(b.bytes_nvme_read - a.bytes_nvme_read);
    st.write_bytes = static_cast<double>(b.bytes_nvme_write - a.bytes_nvme_write);
    per.push_back(st);
  }
  std::sort(per.begin(), per.end(), [](const StepTimes& x, const StepTimes& y) {
    return x.handoff + x.step + x.drain < y.handoff + y.step + y.drain;
  });
  return per[per.size() / 2];
}

// The NvmeStore alone on the same arrays (chunks x 3 of chunk_elems fp32).
Rates store_alone(const std::string& dir, size_t params, size_t chunk_elems) {
  std::vector<size_t> sizes;
  for (size_t done = 0; done < params; done += chunk_elems)
    for (int a = 0; a < 3; ++a) sizes.push_back(std::min(chunk_elems, params - done) * 4);
  return check(store_rates(dir, sizes));
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::bench;
  std::string dir;
  size_t params = 100'000'000, chunk_mb = 64;
  int buffers = 4, steps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--params" && i + 1 < argc) {
      params = static_cast<size_t>(std::strtod(argv[++i], nullptr));
    } else if (a == "--chunk-mb" && i + 1 < argc) {
      chunk_mb = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--buffers" && i + 1 < argc) {
      buffers = std::atoi(argv[++i]);
    } else if (a == "--steps" && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s --dir DIR [--params N] [--chunk-mb M] [--buffers B] [--steps S]\n", argv[0]);
      return 2;
    }
  }
  if (dir.empty() || params < 1000 || chunk_mb < 1 || buffers < 1 || steps < 1) {
    std::fprintf(stderr, "optimizer_nvme: --dir is required; --params >= 1000, --chunk-mb, --buffers, --steps >= 1\n");
    return 2;
  }
  std::filesystem::create_directories(dir);
  const size_t chunk_elems = (chunk_mb << 20) / 2;  // chunk_bytes counts bit16 bytes
  const double state_bytes = static_cast<double>(params) * 12;
  const offload::AioConfig aio;
  const FioConfig fc{aio.block_size, aio.queue_depth, aio.intra_op_parallelism};
  std::fprintf(
      stderr,
      "optimizer_nvme: %.0f M params, %.2f GB of optimizer state on %s, chunks of %zu M params, %d buffer sets\n",
      static_cast<double>(params) / 1e6, state_bytes / 1e9, dir.c_str(), chunk_elems >> 20, buffers);
  const Rates f1 = check(fio_once(dir, static_cast<size_t>(state_bytes), fc));
  const double adam = adam_in_memory(params, 3);
  const StepTimes sync = run_engine(dir, params, chunk_elems, buffers, false, steps);
  const StepTimes piped = run_engine(dir, params, chunk_elems, buffers, true, steps);
  const Rates f2 = check(fio_once(dir, static_cast<size_t>(state_bytes), fc));
  const Rates alone = store_alone(dir, params, chunk_elems);
  const Rates fio{std::max(f1.write_gbps, f2.write_gbps), std::max(f1.read_gbps, f2.read_gbps)};
  const double io_bound = piped.read_bytes / (fio.read_gbps * 1e9) + piped.write_bytes / (fio.write_gbps * 1e9);
  const double bound = std::max(adam, io_bound);
  const double store_io = piped.read_bytes / (alone.read_gbps * 1e9) + piped.write_bytes / (alone.write_gbps * 1e9);
  const double store_bound = std::max(adam, store_io);
  // If the disk served reads and writes at full speed at the same time (it may: a virtual disk
  // with a host cache), the bound would be the larger of the two instead of their sum.
  const double duplex_bound =
      std::max({adam, piped.read_bytes / (alone.read_gbps * 1e9), piped.write_bytes / (alone.write_gbps * 1e9)});
  std::fprintf(stderr, "fio: read %.2f GB/s, write %.2f GB/s (runs before / after: %.2f/%.2f, %.2f/%.2f)\n",
               fio.read_gbps, fio.write_gbps, f1.read_gbps, f2.read_gbps, f1.write_gbps, f2.write_gbps);
  std::fprintf(stderr,
               "bound: max(Adam in memory %.3f s, NVMe %.2f GB read + %.2f GB write at fio rates %.3f s) = %.3f s\n",
               adam, piped.read_bytes / 1e9, piped.write_bytes / 1e9, io_bound, bound);
  std::fprintf(
      stderr,
      "tighter bound at the store's own rates (read %.2f GB/s, write %.2f GB/s, nothing else running): %.3f s\n",
      alone.read_gbps, alone.write_gbps, store_bound);
  std::fprintf(stderr, "full-duplex bound (reads and writes at full speed at once, the larger of the two): %.3f s\n",
               duplex_bound);
  for (const auto& [name, t] : {std::pair<const char*, StepTimes>{"sync", sync}, {"pipelined", piped}}) {
    const double opt = t.handoff + t.step + t.drain - sync.handoff;
    std::printf(
        "{\"bench\": \"optimizer_nvme\", \"mode\": \"%s\", \"params\": %zu, \"chunk_params\": %zu, \"buffers\": %d, "
        "\"handoff_s\": %.4f, \"step_call_s\": %.4f, \"writeback_wait_s\": %.4f, \"optimizer_s\": %.4f, \"adam_s\": "
        "%.4f, \"nvme_wait_s\": %.4f, \"read_GB\": %.3f, \"write_GB\": %.3f, "
        "\"fio_read_GBps\": %.3f, \"fio_write_GBps\": %.3f, \"adam_in_memory_s\": %.4f, \"bound_s\": %.4f, "
        "\"vs_bound\": %.3f, \"store_read_GBps\": %.3f, \"store_write_GBps\": %.3f, \"store_bound_s\": %.4f, "
        "\"vs_store_bound\": %.3f, \"duplex_bound_s\": %.4f, \"vs_duplex_bound\": %.3f, \"where\": %s, \"git\": "
        "\"%s\"}\n",
        name, params, chunk_elems, buffers, t.handoff, t.step, t.drain, opt, t.adam, t.nvme_wait, t.read_bytes / 1e9,
        t.write_bytes / 1e9, fio.read_gbps, fio.write_gbps, adam, bound, opt / bound, alone.read_gbps, alone.write_gbps,
        store_bound, opt / store_bound, duplex_bound, opt / duplex_bound,
        where_json(check(kernels::kernel_table(kernels::best_isa()))->name).c_str(), STRATA_GIT_SHA);
    std::fprintf(
        stderr,
        "%-10s cycle %.3f s = hand-off %.3f + step() %.3f + write-back wait %.3f; optimizer %.3f s (Adam %.3f, step "
        "waiting for NVMe %.3f) = %.3fx the fio bound, %.3fx the store bound, %.3fx the full-duplex bound\n",
        name, t.handoff + t.step + t.drain, t.handoff, t.step, t.drain, opt, t.adam, t.nvme_wait, opt / bound,
        opt / store_bound, opt / duplex_bound);
  }
  return 0;
}
