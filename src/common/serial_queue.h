// SerialQueue: tasks run one at a time, in the order queued, on a thread of their own. A failed
// task does not stop the ones after it (whoever waits must see them done); the first error is
// kept for wait(). The emulated device's streams are SerialQueues, and the optimizer runs its
// update during backward on one, off the host program's thread. Its thread may run at idle
// priority (SCHED_IDLE): it then gets only CPU time no other thread of the machine wants.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "src/common/status.h"

namespace strata {

class SerialQueue {
 public:
  enum class Priority { kNormal, kIdle };
  explicit SerialQueue(Priority priority = Priority::kNormal);
  ~SerialQueue();  // runs what is queued, then stops the thread
  SerialQueue(const SerialQueue&) = delete;
  SerialQueue& operator=(const SerialQueue&) = delete;

  void post(std::function<Status()> task);
  // Blocks until every task posted so far finished; returns the first error since the last
  // wait (and forgets it).
  Status wait();
  bool idle();  // nothing queued or running (never blocks for long)
  // kIdle asked and granted (the OS may refuse: then the thread runs at normal priority).
  bool idle_priority() const { return idle_priority_; }

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<Status()>> queue_;
  bool busy_ = false, stop_ = false;
  Status error_;
  bool idle_priority_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace strata
