// Aligned buffers and the pinned pool: alignment, reuse without new allocations, the budget.
#include "offload/aligned_buffer.h"

#include "offload/huge_arena.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace strata::offload {
namespace {

TEST(AlignedBuffer, PageAlignedAndPadded) {
  for (size_t n : {size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{1} << 20}) {
    auto b = AlignedBuffer::create(n, PinMode::kNone);
    ASSERT_TRUE(b.is_ok()) << b.status().to_string();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.value().data()) % kIoAlign, 0u);
    EXPECT_EQ(b.value().capacity(), align_up(n));
    b.value().bytes()[b.value().capacity() - 1] = 7;  // the whole capacity is usable
  }
  auto moved = AlignedBuffer::create(100, PinMode::kNone);
  AlignedBuffer a = std::move(moved).value();
  AlignedBuffer c = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_NE(c.data(), nullptr);
}

TEST(AlignedBuffer, LargeBuffersComeFromTheHugePageArena) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under AddressSanitizer every buffer is its own allocation (redzones)";
#endif
  const size_t before = HugeArena::instance().regions();
  auto small = AlignedBuffer::create(size_t{64} << 10, PinMode::kNone);
  ASSERT_TRUE(small.is_ok());
  EXPECT_EQ(HugeArena::instance().regions(), before);
  {
    auto big = AlignedBuffer::create(size_t{1} << 20, PinMode::kNone);
    ASSERT_TRUE(big.is_ok());
    EXPECT_EQ(HugeArena::instance().regions(), before + 1);
  }
  EXPECT_EQ(HugeArena::instance().regions(), before);  // destroyed: its region is unmapped
}

TEST(PinnedPool, ReusesBuffersInSteadyState) {
  auto pool = PinnedPool::create(size_t{64} << 20, PinMode::kNone);
  void* first = nullptr;
  {
    auto b = pool->acquire(3 << 20);
    ASSERT_TRUE(b.is_ok());
    first = b.value().data();
    EXPECT_EQ(pool->stats().in_use_bytes, size_t{3} << 20);
  }
  EXPECT_EQ(pool->stats().in_use_bytes, 0u);
  for (int step = 0; step < 10; ++step) {
    auto b = pool->acquire((3 << 20) - 100);  // same class of size: the same buffer comes back
    ASSERT_TRUE(b.is_ok());
    EXPECT_EQ(b.value().data(), first);
  }
  const auto s = pool->stats();
  EXPECT_EQ(s.allocations, 1u);
  EXPECT_EQ(s.reuses, 10u);
}

TEST(PinnedPool, BudgetIsHardAndNamed) {
  auto pool = PinnedPool::create(size_t{8} << 20, PinMode::kNone);
  auto a = pool->acquire(6 << 20);
  ASSERT_TRUE(a.is_ok());
  auto b = pool->acquire(4 << 20);
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(b.status().message().find("budget of 8388608 bytes exhausted: 6291456 bytes in use, asked for 4194304"),
            std::string::npos)
      << b.status().message();
  { PooledBuffer drop = std::move(a).value(); }
  // An idle 6 MiB buffer is released to make room for a different size.
  auto c = pool->acquire(7 << 20);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_LE(pool->stats().allocated_bytes, size_t{8} << 20);
}

}  // namespace
}  // namespace strata::offload
