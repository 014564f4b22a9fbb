// CpuThreads: CPU lists, the arena, and a scheduler observer that pins the arena's threads.
#include "src/engine/cpu_threads.h"

#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_scheduler_observer.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace strata::engine {
namespace {

cpu_set_t allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) CPU_ZERO(&set);
  return set;
}

std::string ranges(const std::vector<int>& cpus) {
  std::string s;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    s += (s.empty() ? "" : ",") + std::to_string(cpus[i]) + (j > i ? "-" + std::to_string(cpus[j]) : "");
    i = j + 1;
  }
  return s;
}

}  // namespace

StatusOr<std::vector<int>> parse_cpu_list(std::string_view text, const std::string& what) {
  std::vector<int> cpus;
  const std::string all(text);
  auto bad = [&](const std::string& why) { return invalid_argument(what + " = \"" + all + "\": " + why); };
  if (text.empty()) return bad("empty (give CPUs as 0-3,8)");
  const cpu_set_t allowed = allowed_cpus();
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string_view part = text.substr(at, comma - at);
    const size_t dash = part.find('-');
    auto number = [&](std::string_view s, int* out) {
      if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
      *out = std::stoi(std::string(s));
      return *out < CPU_SETSIZE;
    };
    int lo = 0, hi = 0;
    if (!number(part.substr(0, dash), &lo) ||
        !number(dash == std::string_view::npos ? part : part.substr(dash + 1), &hi))
      return bad("'" + std::string(part) + "' is not a CPU number or range");
    if (hi < lo) return bad("'" + std::string(part) + "' runs backwards");
    for (int c = lo; c <= hi; ++c) {
      if (!CPU_ISSET(c, &allowed)) return bad("CPU " + std::to_string(c) + " is not one this process may run on");
      cpus.push_back(c);
    }
    at = comma + 1;
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

// Pins every thread that enters the arena to the CPU set; the calling thread gets its own mask
// back when it leaves (workers stay pinned: they serve only this arena).
class CpuThreads::Pinner final : public tbb::task_scheduler_observer {
 public:
  Pinner(tbb::task_arena& a, const std::vector<int>& cpus) : tbb::task_scheduler_observer(a) {
    CPU_ZERO(&set_);
    for (int c : cpus) CPU_SET(c, &set_);
    observe(true);
  }
  ~Pinner() override { observe(false); }
  void on_scheduler_entry(bool worker) override {
    if (!worker) {
      saved().valid = pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), &saved().mask) == 0;
    }
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set_), &set_);
  }
  void on_scheduler_exit(bool worker) override {
    if (!worker && saved().valid) (void)pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &saved().mask);
  }

 private:
  struct Saved {
    cpu_set_t mask;
    bool valid = false;
  };
  static Saved& saved() {
    thread_local Saved s;
    return s;
  }
  cpu_set_t set_;
};

CpuThreads::CpuThreads(int threads, std::vector<int> cpus, bool idle_background)
    : threads_(threads),
      idle_background_(idle_background),
      cpus_(std::move(cpus)),
      arena_(threads),
      background_(idle_background ? 1 : threads) {  // 1: the entering thread's slot only, no worker
  if (!cpus_.empty()) {
    pinner_ = std::make_unique<Pinner>(arena_, cpus_);
    background_pinner_ = std::make_unique<Pinner>(background_, cpus_);
  }
}

CpuThreads::~CpuThreads() {
  pinner_.reset();
  background_pinner_.reset();
}

StatusOr<std::unique_ptr<CpuThreads>> CpuThreads::create(int threads, std::vector<int> cpus, bool idle_background) {
  if (threads < 0) return invalid_argument("strata.optimizer_threads = " + std::to_string(threads) + ": must be >= 0");
  if (threads == 0) threads = cpus.empty() ? tbb::info::default_concurrency() : static_cast<int>(cpus.size());
  return std::unique_ptr<CpuThreads>(new CpuThreads(threads, std::move(cpus), idle_background));
}

std::string CpuThreads::describe() const {
  return std::to_string(threads_) + (threads_ == 1 ? " thread" : " threads") +
         (cpus_.empty() ? ", no affinity" : " on CPUs " + ranges(cpus_)) +
         (idle_background_ ? "; background work on one thread at idle priority" : "");
}

}  // namespace strata::engine
