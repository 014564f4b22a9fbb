// SerialQueue (serial_queue.h).
#include "src/common/serial_queue.h"

#include <pthread.h>
#include <sched.h>

#include <exception>
#include <string>
#include <utility>

namespace strata {

SerialQueue::SerialQueue(Priority priority) : thread_([this] { run(); }) {
  if (priority == Priority::kIdle) {
    const sched_param none{};  // SCHED_IDLE takes priority 0; lowering one's own threads needs no privilege
    idle_priority_ = pthread_setschedparam(thread_.native_handle(), SCHED_IDLE, &none) == 0;
  }
}

SerialQueue::~SerialQueue() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();  // the queue is drained first
}

void SerialQueue::post(std::function<Status()> task) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

Status SerialQueue::wait() {
  std::unique_lock<std::mutex> l(mu_);
  idle_cv_.wait(l, [&] { return queue_.empty() && !busy_; });
  return std::exchange(error_, Status::ok());
}

bool SerialQueue::idle() {
  std::lock_guard<std::mutex> l(mu_);
  return queue_.empty() && !busy_;
}

void SerialQueue::run() {
  for (;;) {
    std::function<Status()> task;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Status s;
    try {
      s = task();
    } catch (const std::exception& e) {
      s = internal_error(std::string("queued task threw: ") + e.what());
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!s.is_ok() && error_.is_ok()) error_ = std::move(s);
      busy_ = false;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace strata
