// XXH3-64 with the xxHash library's AVX512 loop, built with AVX512 flags (src/CMakeLists.txt) and
// called by xxh3.cpp only on CPUs that have it. Everything from the header has internal linkage.
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX512
// GCC 12 warns on the self-initialised _mm512_undefined_*() inside its own AVX-512 headers
// (GCC PR 105593), here reached through xxhash.h's intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <xxhash.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstddef>
#include <cstdint>

namespace strata::xxh3_isa {

uint64_t avx512(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace strata::xxh3_isa
