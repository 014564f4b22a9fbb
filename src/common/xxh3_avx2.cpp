// XXH3-64 with the xxHash library's AVX2 loop, built with AVX2 flags (src/CMakeLists.txt) and
// called by xxh3.cpp only on CPUs that have it. Everything from the header has internal linkage.
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace strata::xxh3_isa {

uint64_t avx2(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace strata::xxh3_isa
