// bench/grad_norm: the global gradient norm + inf/NaN check (multi_tensor_sumsq) over 10^8
// gradient elements in 64 tensors, beside, in the same run, its limit (a loop reading the same
// bytes with the same chunks and threads, adding in float lanes) and a plain sequential double loop.
// One JSON object per line on stdout, a table on stderr.
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"
#include "kernels/reference/adam_ref.h"
#include "kernels/reference/half.h"

namespace strata::bench {
namespace {

constexpr size_t kTensors = 64;

struct Grads {
  std::vector<Buffer> bufs;
  std::vector<kernels::TensorView> views;
  size_t elements = 0;
};

// Tensor sizes vary (like layers of a model) and add up to `total`.
Grads make_grads(DType d, size_t total, tbb::task_arena& arena) {
  Grads g;
  size_t left = total;
  for (size_t t = 0; t < kTensors; ++t) {
    const size_t n = t + 1 == kTensors ? left : total / kTensors / 2 + (t % 7) * (total / kTensors / 7);
    const size_t count = std::min(n, left);
    left -= count;
    g.bufs.push_back(alloc_buffer(count * dtype_size(d)));
    unsigned char* p = g.bufs.back().get();
    arena.execute([&] {
      tbb::parallel_for(tbb::blocked_range<size_t>(0, count, 1 << 16), [&](const tbb::blocked_range<size_t>& r) {
        for (size_t i = r.begin(); i != r.end(); ++i) {
          const float x = 0.01f * static_cast<float>(static_cast<int>(i % 201) - 100);
          if (d == DType::kF32) {
            std::memcpy(p + 4 * i, &x, 4);
          } else {
            const uint16_t h = d == DType::kBF16 ? reference::float_to_bf16(x) : reference::float_to_fp16(x);
            std::memcpy(p + 2 * i, &h, 2);
          }
        }
      });
    });
    g.views.push_back(kernels::TensorView{p, d, count});
    g.elements += count;
  }
  return g;
}

int run(size_t total, int reps, const kernels::KernelTable& k) {
  const int all = tbb::info::default_concurrency();
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int threads : thread_counts) {
      tbb::task_arena arena(threads);
      Grads g = make_grads(d, total, arena);
      double sink = 0.0;
      auto norm = [&] { arena.execute([&] { sink += kernels::multi_tensor_sumsq(k, g.views).sumsq; }); };
      auto limit = [&] { arena.execute([&] { sink += kernels::stream_read(k, g.views); }); };
      norm();
      limit();
      std::vector<double> tn, tl;
      for (int r = 0; r < reps; ++r) {
        tn.push_back(seconds(norm));
        tl.push_back(seconds(limit));
      }
      double plain_s = 0.0;
      if (threads == 1) {
        plain_s = seconds([&] {
          for (const auto& v : g.views) sink += reference::sumsq_ref(v.data, v.dtype, v.count);
        });
      }
      const double bytes = static_cast<double>(g.elements * dtype_size(d));
      const double ratio = best(tl) / best(tn);
      std::printf(
          "{\"bench\": \"grad_norm\", \"git_sha\": \"" STRATA_GIT_SHA
          "\", \"where\": %s, \"elements\": %zu, "
          "\"tensors\": %zu, \"dtype\": \"%s\", \"threads\": %d, \"reps\": %d, "
          "\"norm\": {\"elements_per_s\": %.4g, \"gb_per_s\": %.4g, \"best_s\": %.5f, \"median_s\": %.5f}, "
          "\"limit_read\": {\"elements_per_s\": %.4g, \"gb_per_s\": %.4g, \"best_s\": %.5f}, \"ratio_to_limit\": %.3f",
          where_json(k.name).c_str(), g.elements, g.views.size(), std::string(dtype_name(d)).c_str(), threads, reps,
          g.elements / best(tn), bytes / best(tn) / 1e9, best(tn), median(tn), g.elements / best(tl),
          bytes / best(tl) / 1e9, best(tl), ratio);
      if (plain_s > 0)
        std::printf(", \"plain_double_loop_s\": %.4f, \"speedup_vs_plain\": %.2f", plain_s, plain_s / best(tn));
      std::printf(", \"checksum\": %.6g}\n", sink);  // keeps every timed call's result alive
      std::fprintf(stderr, "%-5s %d thr | norm %6.2f GB/s | read limit %6.2f GB/s | ratio %5.3f",
                   std::string(dtype_name(d)).c_str(), threads, bytes / best(tn) / 1e9, bytes / best(tl) / 1e9, ratio);
      if (plain_s > 0) std::fprintf(stderr, " | plain loop x%.1f", plain_s / best(tn));
      std::fprintf(stderr, "\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  size_t total = 100'000'000;
  int reps = 5;
  kernels::Isa isa = kernels::best_isa();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--elements") {
      total = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--reps") {
      reps = std::atoi(v.c_str());
    } else if (a == "--isa") {
      auto r = kernels::parse_isa(v);
      if (!r.is_ok()) {
        std::fprintf(stderr, "%s\n", r.status().message().c_str());
        return 2;
      }
      isa = r.value();
    } else {
      std::fprintf(stderr, "unknown option %s\nusage: %s [--elements N] [--reps R] [--isa NAME]\n", a.c_str(), argv[0]);
      return 2;
    }
  }
  if (total < bench::kTensors || reps < 1 || argc % 2 == 0) {
    std::fprintf(stderr, "usage: %s [--elements N>=64] [--reps R>=1] [--isa NAME]\n", argv[0]);
    return 2;
  }
  auto table = kernels::kernel_table(isa);
  if (!table.is_ok()) {
    std::fprintf(stderr, "%s\n", table.status().to_string().c_str());
    return 1;
  }
  std::fprintf(stderr, "grad_norm: %zu elements in %zu tensors, %s kernels\n", total, bench::kTensors,
               table.value()->name);
  return bench::run(total, reps, *table.value());
}
