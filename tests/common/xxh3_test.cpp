// The dispatched XXH3-64 against the xxHash library's own XXH3_64bits (the reference: every
// checksum already written was taken with it), on every path this CPU can run.
#include "src/common/xxh3.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdint>
#include <random>
#include <vector>

namespace strata {
namespace {

std::vector<Xxh3Path> runnable_paths() {
  std::vector<Xxh3Path> out;
  for (Xxh3Path p : {Xxh3Path::kBaseline, Xxh3Path::kAvx2, Xxh3Path::kAvx512})
    if (xxh3_path_supported(p)) out.push_back(p);
  return out;
}

TEST(Xxh3, EveryPathMatchesTheLibraryOverLengthsAndOffsets) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf((size_t{1} << 20) + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  // Every length through 2 KiB (the short-input branches and the first stripes), then larger
  // ones around block edges (1 KiB stripes of 64 B), at misaligned starts.
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 2048; ++n) lengths.push_back(n);
  for (size_t n : {size_t{4095}, size_t{4096}, size_t{65537}, size_t{600} << 10, size_t{1} << 20}) lengths.push_back(n);
  for (Xxh3Path p : runnable_paths()) {
    for (size_t n : lengths) {
      const size_t off = n % 61;
      ASSERT_EQ(xxh3_64_by(p, buf.data() + off, n), XXH3_64bits(buf.data() + off, n))
          << "path " << static_cast<int>(p) << ", " << n << " bytes at offset " << off;
    }
  }
  EXPECT_EQ(xxh3_64(buf.data(), buf.size()), XXH3_64bits(buf.data(), buf.size()));
}

TEST(Xxh3, ChangesWithOneFlippedBitAnywhere) {
  std::vector<uint8_t> buf(300000, 0x5a);
  const uint64_t clean = xxh3_64(buf.data(), buf.size());
  for (size_t at : {size_t{0}, size_t{1023}, size_t{150001}, buf.size() - 1}) {
    buf[at] ^= 0x10;
    EXPECT_NE(xxh3_64(buf.data(), buf.size()), clean) << "flip at byte " << at;
    buf[at] ^= 0x10;
  }
  EXPECT_EQ(xxh3_64(buf.data(), buf.size()), clean);
}

TEST(Xxh3, BestPathIsTheWidestSupported) {
  const Xxh3Path best = xxh3_best_path();
  EXPECT_TRUE(xxh3_path_supported(best));
  for (Xxh3Path p : runnable_paths()) EXPECT_LE(static_cast<int>(p), static_cast<int>(best));
}

}  // namespace
}  // namespace strata
