// bench/state_checksums: the NVMe store's checksums of a chunk's optimizer arrays (master, m, v) as
// the optimizer takes them after a read — cold in memory — over T threads: one array per thread
// (how they were taken before the checksum was segmented: at most 3 threads busy) against the
// checksum's segments over all T threads (NvmeStore::segment_checksum, as OptimizerRunner
// does now). The limit, measured in the same run: reading the same bytes over the same threads
// (memchr for a byte that is not there). Prints GB/s and the ratio to the limit; one JSON line.
//
//   strata_bench_state_checksums [--threads T] [--array-kib K]
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "offload/nvme_store.h"
#include "src/common/xxh3.h"

namespace strata::bench {
namespace {

using offload::NvmeStore;
constexpr size_t kArrays = 3;                 // Adam: master, exp_avg, exp_avg_sq
constexpr size_t kTotal = size_t{384} << 20;  // cycled through: far beyond the caches

int run(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  size_t array_bytes = size_t{1} << 20;  // a 512 KiB chunk of bf16: 256 Ki params
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--array-kib")
      array_bytes = static_cast<size_t>(std::atol(argv[i + 1])) << 10;
    else {
      std::fprintf(stderr, "usage: %s [--threads T] [--array-kib K]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || array_bytes < 4096) {
    std::fprintf(stderr, "--threads must be >= 1 and --array-kib >= 4\n");
    return 2;
  }
  const size_t sets = std::max<size_t>(4, kTotal / (kArrays * array_bytes));
  std::vector<Buffer> arrays;
  for (size_t i = 0; i < sets * kArrays; ++i) {
    arrays.push_back(alloc_buffer(array_bytes));
    std::memset(arrays.back().get(), 7, array_bytes);
  }
  tbb::task_arena arena(threads);
  const size_t segs = NvmeStore::checksum_segments(array_bytes);
  uint64_t sink = 0;
  // mode 0: the read limit; 1: one array per thread; 2: segments over the threads.
  auto pass = [&](int mode) {
    return seconds([&] {
      for (size_t s = 0; s < sets; ++s) {
        std::vector<uint64_t> got(kArrays * segs);
        arena.execute([&] {
          const size_t items = mode == 1 ? kArrays : kArrays * segs;
          tbb::parallel_for(tbb::blocked_range<size_t>(0, items, 1), [&](const tbb::blocked_range<size_t>& r) {
            for (size_t p = r.begin(); p != r.end(); ++p) {
              if (mode == 1) {
                got[p] = xxh3_64(arrays[s * kArrays + p].get(), array_bytes);
                continue;
              }
              const size_t ai = p / segs, at = (p % segs) * NvmeStore::kChecksumSegment;
              unsigned char* base = arrays[s * kArrays + ai].get();
              got[p] = mode == 2 ? NvmeStore::segment_checksum(base, array_bytes, p % segs)
                                 : std::memchr(base + at, 0xab,
                                               std::min(NvmeStore::kChecksumSegment, array_bytes - at)) != nullptr;
            }
          });
        });
        for (uint64_t g : got) sink ^= g;
      }
    });
  };
  std::vector<double> t[3];
  for (int r = 0; r < 5; ++r)
    for (int m = 0; m < 3; ++m) t[m].push_back(pass(m));
  if (sink == 42) std::fprintf(stderr, " ");
  const double bytes = static_cast<double>(sets * kArrays * array_bytes);
  const double limit = bytes / best(t[0]) / 1e9, per_array = bytes / best(t[1]) / 1e9,
               segmented = bytes / best(t[2]) / 1e9;
  std::fprintf(stderr,
               "state checksums: %zu x %zu KiB arrays (%zu segments each), cold, %d threads, best of 5\n"
               "  read limit           %6.2f GB/s\n"
               "  one array a thread   %6.2f GB/s  %.2f of the limit\n"
               "  segments             %6.2f GB/s  %.2f of the limit (%.2fx one array a thread)\n",
               kArrays, array_bytes >> 10, segs, threads, limit, per_array, per_array / limit, segmented,
               segmented / limit, segmented / per_array);
  std::printf(
      "{\"bench\": \"state_checksums\", \"threads\": %d, \"array_bytes\": %zu, \"segments\": %zu, "
      "\"read_gbps\": %.3f, \"per_array_gbps\": %.3f, \"segments_gbps\": %.3f, \"per_array_vs_read\": %.3f, "
      "\"segments_vs_read\": %.3f, \"where\": %s, \"git\": \"%s\"}\n",
      threads, array_bytes, segs, limit, per_array, segmented, per_array / limit, segmented / limit,
      where_json(xxh3_best_path() == Xxh3Path::kAvx512 ? "avx512"
                 : xxh3_best_path() == Xxh3Path::kAvx2 ? "avx2"
                                                       : "baseline")
          .c_str(),
      STRATA_GIT_SHA);
  return 0;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) { return strata::bench::run(argc, argv); }
