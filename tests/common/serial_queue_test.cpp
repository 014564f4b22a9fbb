// SerialQueue: tasks run in the order posted, one at a time, on a thread other than the poster's;
// wait() returns once all of them ran, with the first error since the last wait (then forgets
// it); a failed or throwing task does not stop the ones after it; the destructor runs what is
// still queued. An idle-priority queue's tasks run at SCHED_IDLE, a normal one's do not.
#include "src/common/serial_queue.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace strata {
namespace {

TEST(SerialQueue, RunsInOrderOneAtATimeOffTheCallersThread) {
  SerialQueue q;
  std::vector<int> order;  // written by the queue's thread only, read after wait()
  std::atomic<int> running{0}, most{0};
  std::thread::id ran_on;
  for (int i = 0; i < 200; ++i) {
    q.post([&, i] {
      const int now = ++running;
      if (now > most) most = now;
      if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      order.push_back(i);
      ran_on = std::this_thread::get_id();
      --running;
      return Status::ok();
    });
  }
  ASSERT_TRUE(q.wait().is_ok());
  EXPECT_TRUE(q.idle());
  ASSERT_EQ(order.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  EXPECT_EQ(most.load(), 1);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(SerialQueue, TheFirstErrorIsKeptUntilWaitAndLaterTasksStillRun) {
  SerialQueue q;
  int after = 0;
  q.post([] { return invalid_argument("first"); });
  q.post([] { return internal_error("second"); });
  q.post([]() -> Status { throw std::runtime_error("boom"); });
  q.post([&] {
    ++after;
    return Status::ok();
  });
  const Status s = q.wait();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_EQ(after, 1);
  EXPECT_TRUE(q.wait().is_ok()) << "wait forgets the error it returned";
  q.post([]() -> Status { throw std::runtime_error("boom"); });
  const Status t = q.wait();
  EXPECT_EQ(t.code(), StatusCode::kInternal) << t.to_string();
  EXPECT_NE(t.message().find("boom"), std::string::npos) << t.message();
}

TEST(SerialQueue, TheDestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    SerialQueue q;
    for (int i = 0; i < 50; ++i)
      q.post([&] {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        ++ran;
        return Status::ok();
      });
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(SerialQueue, AnIdleQueueRunsItsTasksAtIdlePriority) {
  int normal_policy = -1, idle_policy = -1;
  SerialQueue normal;
  SerialQueue idle(SerialQueue::Priority::kIdle);
  // Linux lets a process lower its own threads' priority without privilege.
  EXPECT_TRUE(idle.idle_priority());
  EXPECT_FALSE(normal.idle_priority());
  for (auto [q, policy] : {std::pair{&normal, &normal_policy}, std::pair{&idle, &idle_policy}})
    q->post([policy = policy] {
      *policy = sched_getscheduler(0);  // 0: the calling thread
      return Status::ok();
    });
  ASSERT_TRUE(normal.wait().is_ok());
  ASSERT_TRUE(idle.wait().is_ok());
  EXPECT_EQ(idle_policy, SCHED_IDLE);
  EXPECT_NE(normal_policy, SCHED_IDLE);
  EXPECT_EQ(sched_getscheduler(0), normal_policy) << "the caller's own priority unchanged";
}

}  // namespace
}  // namespace strata
