// XXH3-64 (the xxHash library's XXH3_64bits, seed 0) with its widest vector loop chosen at run
// time. The Debian library is built for baseline x86-64 and hashes with SSE2 at about half the
// rate AVX2 / AVX-512 reach on cache-resident data; the NVMe store checks 12 B per parameter each
// step, so the rate shows in the step. The value is the same whichever loop runs (XXH3 is defined
// independently of its vector width), so checksums already on disk or in checkpoints stay valid.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata {

enum class Xxh3Path : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The hash, by the widest path this CPU (and OS) supports.
uint64_t xxh3_64(const void* data, size_t bytes);
// The hash by one path (tests); a path the CPU cannot run falls back to the widest it can.
uint64_t xxh3_64_by(Xxh3Path path, const void* data, size_t bytes);
Xxh3Path xxh3_best_path();
bool xxh3_path_supported(Xxh3Path path);

}  // namespace strata
