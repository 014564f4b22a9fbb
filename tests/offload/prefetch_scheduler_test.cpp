// PrefetchScheduler: recording, following, lookahead, reuse distance and order changes, checked
// against hand-written fetch sequences.
#include "offload/prefetch_scheduler.h"

#include <gtest/gtest.h>

namespace strata::offload {
namespace {

using Seen = PrefetchScheduler::Seen;

// Forward over units 0..3, backward 3..0 — the order of a 4-layer model's micro-batch.
const std::vector<uint32_t> kPass = {0, 1, 2, 3, 3, 2, 1, 0};

void run_pass(PrefetchScheduler& s, const std::vector<uint32_t>& order) {
  for (uint32_t u : order) (void)s.on_fetch(u);
  s.end_pass();
}

TEST(PrefetchScheduler, RecordsTheFirstPassThenFollowsIt) {
  PrefetchScheduler s({10, 10, 10, 10});
  EXPECT_FALSE(s.following());
  EXPECT_EQ(s.on_fetch(0), Seen::kRecording);
  EXPECT_TRUE(s.upcoming(100).empty());
  for (size_t i = 1; i < kPass.size(); ++i) (void)s.on_fetch(kPass[i]);
  s.end_pass();
  // Consecutive fetches of one unit are one entry.
  EXPECT_EQ(s.trace(), (std::vector<uint32_t>{0, 1, 2, 3, 2, 1, 0}));
  EXPECT_TRUE(s.following());
  // Before the first fetch of a pass the whole trace is ahead.
  EXPECT_EQ(s.upcoming(25), (std::vector<uint32_t>{0, 1}));
  for (uint32_t u : kPass) EXPECT_EQ(s.on_fetch(u), Seen::kOnTrace) << u;
  s.end_pass();
  EXPECT_EQ(s.order_changes(), 0);
}

TEST(PrefetchScheduler, UpcomingStopsAtTheLookaheadAndSkipsRepeats) {
  PrefetchScheduler s({10, 20, 30, 40});
  run_pass(s, kPass);
  (void)s.on_fetch(0);
  EXPECT_EQ(s.upcoming(0), (std::vector<uint32_t>{1})) << "the next unit is always offered";
  EXPECT_EQ(s.upcoming(50), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(s.upcoming(1000), (std::vector<uint32_t>{1, 2, 3})) << "each unit once; 0 is current";
  (void)s.on_fetch(1);
  (void)s.on_fetch(2);
  (void)s.on_fetch(3);
  EXPECT_EQ(s.upcoming(1000), (std::vector<uint32_t>{2, 1, 0}));
}

TEST(PrefetchScheduler, NextUseCountsElementsUntilTheUnitComesBack) {
  PrefetchScheduler s({10, 20, 30, 40});
  run_pass(s, kPass);
  (void)s.on_fetch(0);
  (void)s.on_fetch(1);
  EXPECT_EQ(s.next_use(1), 0u) << "the current unit";
  EXPECT_EQ(s.next_use(2), 0u) << "the next fetch";
  EXPECT_EQ(s.next_use(3), 30u);
  EXPECT_EQ(s.next_use(0), 30u + 40 + 30 + 20);  // 2, 3, 2, 1 come first
  (void)s.on_fetch(2);
  (void)s.on_fetch(3);
  (void)s.on_fetch(2);
  (void)s.on_fetch(1);
  EXPECT_EQ(s.next_use(3), PrefetchScheduler::kNever);
}

TEST(PrefetchScheduler, AChangedOrderStopsPredictionsAndBecomesTheNewTrace) {
  PrefetchScheduler s({1, 1, 1, 1});
  run_pass(s, kPass);
  EXPECT_EQ(s.on_fetch(0), Seen::kOnTrace);
  EXPECT_EQ(s.on_fetch(2), Seen::kOrderChanged);
  EXPECT_NE(s.last_change().find("expected chunk 1"), std::string::npos) << s.last_change();
  EXPECT_FALSE(s.following());
  EXPECT_TRUE(s.upcoming(100).empty());
  EXPECT_EQ(s.next_use(3), PrefetchScheduler::kNever);
  EXPECT_EQ(s.on_fetch(1), Seen::kRecording);
  EXPECT_EQ(s.on_fetch(3), Seen::kRecording);
  s.end_pass();
  EXPECT_EQ(s.order_changes(), 1);
  EXPECT_EQ(s.trace(), (std::vector<uint32_t>{0, 2, 1, 3}));
  for (uint32_t u : {0u, 2u, 1u, 3u}) EXPECT_EQ(s.on_fetch(u), Seen::kOnTrace);
  s.end_pass();
  EXPECT_EQ(s.order_changes(), 1);
}

TEST(PrefetchScheduler, APassThatEndsEarlyIsAChangeToo) {
  PrefetchScheduler s({1, 1, 1, 1});
  run_pass(s, kPass);
  run_pass(s, {0, 1});
  EXPECT_EQ(s.order_changes(), 1);
  EXPECT_EQ(s.trace(), (std::vector<uint32_t>{0, 1}));
  // A fetch past the end of the recorded order.
  (void)s.on_fetch(0);
  (void)s.on_fetch(1);
  EXPECT_EQ(s.on_fetch(2), Seen::kOrderChanged);
  EXPECT_NE(s.last_change().find("ended after 2"), std::string::npos) << s.last_change();
}

TEST(PrefetchScheduler, APassWithoutFetchesKeepsTheTrace) {
  PrefetchScheduler s({1, 1, 1, 1});
  run_pass(s, kPass);
  s.end_pass();
  EXPECT_EQ(s.trace().size(), 7u);
  EXPECT_EQ(s.order_changes(), 0);
}

}  // namespace
}  // namespace strata::offload
