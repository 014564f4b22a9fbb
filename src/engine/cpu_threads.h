// The engine's host threads — the optimizer's CPU kernels, gradient accumulation, the norm — as a
// oneTBB task arena of a chosen size, optionally pinned to a set of CPUs (strata.optimizer_threads
// and strata.optimizer_cpus), so that on a GPU machine they leave the host program's threads the
// other cores. Pinning is done as a thread enters the arena and undone as the calling thread leaves.
// Work beside the host program's calls (strata.background_priority) runs in an arena of its own:
// as many threads at normal priority, or only the queue's own thread, at idle priority
// (oneTBB's worker threads serve every arena, and an unprivileged thread lowered to SCHED_IDLE
// cannot return, so no worker may take part).
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
  // idle_background: the background arena has one slot, for the idle-priority thread that enters it.
  static StatusOr<std::unique_ptr<CpuThreads>> create(int threads, std::vector<int> cpus, bool idle_background = false);
  ~CpuThreads();
  tbb::task_arena& arena() { return arena_; }
  // The work that runs beside the host program's calls (the optimizer's update during backward
  // and read checks, from a thread of their own): an arena of its own, so that the host program's
  // arena calls (gradient accumulation, checks) never queue behind it. Same size and CPUs, or with
  // idle_background one thread.
  tbb::task_arena& background_arena() { return background_; }
  int threads() const { return threads_; }
  bool idle_background() const { return idle_background_; }
  // "2 threads on CPUs 0-1", "2 threads, no affinity; background work on one thread at idle priority"
  std::string describe() const;

 private:
  class Pinner;
  CpuThreads(int threads, std::vector<int> cpus, bool idle_background);
  int threads_;
  bool idle_background_;
  std::vector<int> cpus_;
  tbb::task_arena arena_, background_;
  std::unique_ptr<Pinner> pinner_, background_pinner_;
};

}  // namespace strata::engine
