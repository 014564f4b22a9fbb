// The engine's host threads: CPU lists parsed and checked by name; an arena pinned to a CPU set
// runs every task there and gives the calling thread its own mask back; an engine with one pinned
// thread trains to the same masters as one with all cores (results never depend on threads). The
// background work runs at idle priority on one thread on the host-emulated device (auto), with as
// many threads as the optimizer at normal priority on request: the same masters either way.
#include <gtest/gtest.h>
#include <oneapi/tbb/parallel_for.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <mutex>
#include <set>

#include "src/engine/cpu_threads.h"
#include "tests/engine/engine_harness.h"

namespace strata::engine {
namespace {

std::set<int> my_cpus() {
  cpu_set_t s;
  CPU_ZERO(&s);
  EXPECT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(s), &s), 0);
  std::set<int> out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &s)) out.insert(c);
  return out;
}

TEST(CpuThreads, CpuListsAreParsedAndCheckedByName) {
  const std::set<int> mine = my_cpus();
  ASSERT_FALSE(mine.empty());
  const int first = *mine.begin();
  auto one = parse_cpu_list(std::to_string(first), "strata.optimizer_cpus");
  ASSERT_TRUE(one.is_ok()) << one.status().to_string();
  EXPECT_EQ(one.value(), std::vector<int>{first});
  if (mine.count(first + 1)) {
    auto two = parse_cpu_list(std::to_string(first) + "-" + std::to_string(first + 1) + "," + std::to_string(first),
                              "strata.optimizer_cpus");
    ASSERT_TRUE(two.is_ok());
    EXPECT_EQ(two.value(), (std::vector<int>{first, first + 1})) << "sorted, duplicates dropped";
  }
  auto s = parse_cpu_list("3-1", "strata.optimizer_cpus").status();
  EXPECT_NE(s.message().find("strata.optimizer_cpus = \"3-1\": '3-1' runs backwards"), std::string::npos)
      << s.message();
  s = parse_cpu_list("0,x", "k").status();
  EXPECT_NE(s.message().find("'x' is not a CPU number or range"), std::string::npos) << s.message();
  s = parse_cpu_list("1000", "k").status();
  EXPECT_NE(s.message().find("CPU 1000 is not one this process may run on"), std::string::npos) << s.message();
  auto cfg = parse_engine_config(R"({"strata": {"optimizer_cpus": "1000"}})");
  ASSERT_FALSE(cfg.is_ok());
  EXPECT_NE(cfg.status().message().find("strata.optimizer_cpus = \"1000\""), std::string::npos)
      << cfg.status().to_string();
}

TEST(CpuThreads, APinnedArenaRunsItsTasksThereAndRestoresTheCaller) {
  const std::set<int> before = my_cpus();
  const int cpu = *before.rbegin();
  auto t = CpuThreads::create(2, {cpu});
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t.value()->threads(), 2);
  EXPECT_EQ(t.value()->describe(), "2 threads on CPUs " + std::to_string(cpu));
  std::mutex mu;
  std::set<std::set<int>> seen;
  t.value()->arena().execute([&] {
    tbb::parallel_for(0, 64, [&](int) {
      const std::set<int> c = my_cpus();
      std::lock_guard<std::mutex> lock(mu);
      seen.insert(c);
    });
  });
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(*seen.begin(), std::set<int>{cpu}) << "every task on the pinned CPU";
  EXPECT_EQ(my_cpus(), before) << "the calling thread got its own CPUs back";
  auto free_threads = CpuThreads::create(0, {});
  ASSERT_TRUE(free_threads.is_ok());
  EXPECT_NE(free_threads.value()->describe().find("no affinity"), std::string::npos);
}

TEST(CpuThreads, AnIdleBackgroundArenaHasOneSlotAndSaysSo) {
  auto idle = CpuThreads::create(2, {}, true);
  ASSERT_TRUE(idle.is_ok());
  EXPECT_EQ(idle.value()->arena().max_concurrency(), 2);
  EXPECT_EQ(idle.value()->background_arena().max_concurrency(), 1) << "no oneTBB worker may join it";
  EXPECT_EQ(idle.value()->describe(), "2 threads, no affinity; background work on one thread at idle priority");
  auto normal = CpuThreads::create(2, {});
  ASSERT_TRUE(normal.is_ok());
  EXPECT_EQ(normal.value()->background_arena().max_concurrency(), 2);
  EXPECT_EQ(normal.value()->describe(), "2 threads, no affinity");
}

TEST(CpuThreads, BackgroundPriorityIdleOnTheHostDeviceTrainsAsNormal) {
  const testing::Mlp mlp{testing::MlpShape{}};
  // Params and optimizer in host memory: every chunk is updated during backward, in the background.
  const std::string zero =
      "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"cpu\"}";
  std::vector<std::string> auto_log, normal_log;
  harness::RunOptions o;
  o.log = &auto_log;
  const auto by_default = harness::train_engine(harness::config_json(zero, 32 << 10), mlp, o);
  o.log = &normal_log;
  const auto normal =
      harness::train_engine(harness::config_json(zero, 32 << 10, "", ", \"background_priority\": \"normal\""), mlp, o);
  ASSERT_FALSE(normal.master.empty());
  for (const auto& [n, v] : normal.master) EXPECT_EQ(by_default.master.at(n), v) << n;
  EXPECT_GT(by_default.stats.chunks_speculated, 0);
  EXPECT_EQ(by_default.stats.chunks_speculated, normal.stats.chunks_speculated);
  auto says_idle = [](const std::vector<std::string>& log) {
    bool said = false;
    for (const std::string& l : log)
      said |= l.find("background work on one thread at idle priority") != std::string::npos;
    return said;
  };
  EXPECT_TRUE(says_idle(auto_log)) << "auto: idle priority on the host-emulated device";
  EXPECT_FALSE(says_idle(normal_log));
  auto bad = parse_engine_config(R"({"strata": {"background_priority": "low"}})");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("strata.background_priority = \"low\": expected one of auto, normal, idle"),
            std::string::npos)
      << bad.status().to_string();
}

TEST(CpuThreads, OnePinnedThreadTrainsToTheSameMasters) {
  const testing::Mlp mlp{testing::MlpShape{}};
  const std::string zero = "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}";
  const auto all = harness::train_engine(harness::config_json(zero, 112 << 10), mlp);
  const std::string pin =
      ", \"optimizer_threads\": 1, \"optimizer_cpus\": \"" + std::to_string(*my_cpus().begin()) + "\"";
  std::vector<std::string> log;
  harness::RunOptions o;
  o.log = &log;
  const auto one = harness::train_engine(harness::config_json(zero, 112 << 10, "", pin), mlp, o);
  ASSERT_FALSE(all.master.empty());
  for (const auto& [n, v] : all.master) EXPECT_EQ(one.master.at(n), v) << n;
  bool said = false;
  for (const std::string& l : log)
    said |= l.find("host threads (optimizer, gradient accumulation, norm): 1 thread on CPUs") != std::string::npos;
  EXPECT_TRUE(said) << "the plan shows the host threads";
}

}  // namespace
}  // namespace strata::engine
