// The huge-page arena behind large I/O buffers: no overlap, first fit with coalescing, memory
// returned on release, regions unmapped when empty, and huge pages where the kernel offers them.
#include "offload/huge_arena.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace strata::offload {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(HugeArena, RandomAllocationsKeepTheirBytes) {
  HugeArena& a = HugeArena::instance();
  const size_t regions_before = a.regions();
  std::mt19937 rng(7);
  std::map<uint8_t*, std::pair<size_t, uint8_t>> live;  // address -> (bytes, fill)
  auto check_all = [&] {
    for (const auto& [p, v] : live)
      for (size_t i = 0; i < v.first; i += 4093) ASSERT_EQ(p[i], v.second) << "buffer at " << static_cast<void*>(p);
  };
  for (int op = 0; op < 400; ++op) {
    if (live.empty() || rng() % 3 != 0) {
      const size_t bytes = (1 + rng() % 1536) * 4096;  // 4 KiB .. 6 MiB
      auto* p = static_cast<uint8_t*>(a.allocate(bytes));
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
      // No overlap with any live buffer.
      auto next = live.lower_bound(p);
      if (next != live.end()) {
        ASSERT_LE(p + bytes, next->first);
      }
      if (next != live.begin()) {
        ASSERT_LE(std::prev(next)->first + std::prev(next)->second.first, p);
      }
      const auto fill = static_cast<uint8_t>(1 + op % 250);
      std::memset(p, fill, bytes);
      live[p] = {bytes, fill};
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      a.release(it->first, it->second.first);
      live.erase(it);
    }
    if (op % 50 == 0) check_all();
  }
  check_all();
  for (const auto& [p, v] : live) a.release(p, v.first);
  EXPECT_EQ(a.regions(), regions_before);  // every region this test made is unmapped again
}

// Engine threads allocate and free concurrently (staging, slots, the emulated device): each
// thread's buffers keep their bytes while the others carve and return theirs.
TEST(HugeArena, ConcurrentThreadsKeepTheirBytes) {
  HugeArena& a = HugeArena::instance();
  const size_t regions_before = a.regions();
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&a, &bad, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::vector<std::pair<uint8_t*, size_t>> mine;
      for (int op = 0; op < 200; ++op) {
        if (mine.empty() || rng() % 3 != 0) {
          const size_t bytes = (1 + rng() % 256) * 4096;
          auto* p = static_cast<uint8_t*>(a.allocate(bytes));
          if (p == nullptr) {
            ++bad;
            return;
          }
          std::memset(p, t + 1, bytes);
          mine.emplace_back(p, bytes);
        } else {
          const size_t i = rng() % mine.size();
          for (size_t b = 0; b < mine[i].second; b += 4096) bad += mine[i].first[b] != t + 1;
          a.release(mine[i].first, mine[i].second);
          mine.erase(mine.begin() + static_cast<long>(i));
        }
      }
      for (auto& [p, n] : mine) {
        for (size_t b = 0; b < n; b += 4096) bad += p[b] != t + 1;
        a.release(p, n);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0) << "a buffer lost its bytes to another thread's";
  EXPECT_EQ(a.regions(), regions_before);
}

TEST(HugeArena, FreedNeighboursCoalesce) {
  HugeArena& a = HugeArena::instance();
  const size_t regions_before = a.regions();
  void* keep = a.allocate(kMiB);  // holds the region open
  ASSERT_NE(keep, nullptr);
  const size_t rest = HugeArena::kRegion - kMiB;
  std::vector<void*> pieces;
  for (size_t done = 0; done < rest; done += kMiB) pieces.push_back(a.allocate(kMiB));
  EXPECT_EQ(a.regions(), regions_before + 1);
  // Released out of order: the free list must merge them back into one run.
  for (size_t i = 0; i < pieces.size(); i += 2) a.release(pieces[i], kMiB);
  for (size_t i = 1; i < pieces.size(); i += 2) a.release(pieces[i], kMiB);
  void* big = a.allocate(rest);
  EXPECT_EQ(a.regions(), regions_before + 1) << "the freed megabytes did not coalesce";
  EXPECT_EQ(big, static_cast<uint8_t*>(keep) + kMiB);
  a.release(big, rest);
  a.release(keep, kMiB);
  EXPECT_EQ(a.regions(), regions_before);
}

TEST(HugeArena, ReleasedPagesGoBackToTheKernel) {
  HugeArena& a = HugeArena::instance();
  void* keep = a.allocate(kMiB);
  auto* p = static_cast<uint8_t*>(a.allocate(4 * kMiB));
  std::memset(p, 0xAB, 4 * kMiB);
  a.release(p, 4 * kMiB);
  // First fit hands the same range back; its pages were dropped, so they read as zero.
  auto* q = static_cast<uint8_t*>(a.allocate(4 * kMiB));
  ASSERT_EQ(q, p);
  for (size_t i = 0; i < 4 * kMiB; i += 4096) ASSERT_EQ(q[i], 0) << "byte " << i << " kept its old value";
  a.release(q, 4 * kMiB);
  a.release(keep, kMiB);
}

// The AnonHugePages of the mapping that holds `p` (kB), from /proc/self/smaps.
long anon_huge_kb(const void* p) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14));
  }
  return -1;
}

TEST(HugeArena, BacksBuffersWithHugePagesWhereTheKernelOffersThem) {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string m((std::istreambuf_iterator<char>(mode)), std::istreambuf_iterator<char>());
  if (m.empty() || m.find("[never]") != std::string::npos) GTEST_SKIP() << "transparent huge pages are off here";
  HugeArena& a = HugeArena::instance();
  auto* p = static_cast<uint8_t*>(a.allocate(8 * kMiB));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, 8 * kMiB);
  EXPECT_GT(anon_huge_kb(p), 0) << "THP is '" << m << "' but the buffer has no huge page";
  a.release(p, 8 * kMiB);
}

}  // namespace
}  // namespace strata::offload
