// The engine's host threads — the optimizer's CPU kernels, gradient accumulation, the norm — as a
// oneTBB task arena of a chosen size, optionally pinned to a set of CPUs (strata.optimizer_threads
// and strata.optimizer_cpus), so that on a GPU machine they leave the host program's threads the
// other cores. Pinning is done as a thread enters the arena and undone as the calling thread leaves.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/status.h"

namespace strata::engine {

// "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}; every CPU must be one this process may run on. Errors
// name `what` (the key or flag) and the part that is wrong.
StatusOr<std::vector<int>> parse_cpu_list(std::string_view text, const std::string& what);

class CpuThreads {
 public:
  // threads 0: one per CPU of `cpus`, or oneTBB's default concurrency without them.
  static StatusOr<std::unique_ptr<CpuThreads>> create(int threads, std::vector<int> cpus);
  ~CpuThreads();
  tbb::task_arena& arena() { return arena_; }
  // The same threads' work that runs beside the host program's calls (the optimizer's update
  // during backward, from its own thread): an arena of its own, so that the host program's
  // arena calls (gradient accumulation, checks) never queue behind it. Same size and CPUs.
  tbb::task_arena& background_arena() { return background_; }
  int threads() const { return threads_; }
  std::string describe() const;  // "2 threads on CPUs 0-1", "2 threads, no affinity"

 private:
  class Pinner;
  CpuThreads(int threads, std::vector<int> cpus);
  int threads_;
  std::vector<int> cpus_;
  tbb::task_arena arena_, background_;
  std::unique_ptr<Pinner> pinner_, background_pinner_;
};

}  // namespace strata::engine
