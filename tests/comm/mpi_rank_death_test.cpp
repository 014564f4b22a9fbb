// A rank that dies: under mpirun with 2+ ranks (and orte_abort_on_non_zero_status 0, so mpirun
// lets the others run on), rank 1 exits before an all-reduce; every other rank gets kTimeout from
// its wait within the communicator's timeout, naming the collective — an error, not a hang.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include "comm/communicator.h"

namespace strata::comm {
namespace {

TEST(MpiRankDeath, TheOthersGetATimeoutNotAHang) {
  CommOptions o;
  o.timeout = std::chrono::milliseconds(1500);
  auto c = create_mpi(o);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  if (c.value()->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<float> buf(4096, 1.0f);
  if (c.value()->rank() == 1) _exit(3);  // dies without a word
  const auto t0 = std::chrono::steady_clock::now();
  Status s = c.value()->all_reduce_sync(buf.data(), buf.data(), buf.size(), Elem::kF32, ReduceOp::kSum);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(s.code(), StatusCode::kTimeout) << s.to_string();
  EXPECT_NE(s.message().find("all_reduce of 4096 x fp32"), std::string::npos) << s.message();
  EXPECT_LT(waited, std::chrono::milliseconds(4500));
}

}  // namespace
}  // namespace strata::comm
