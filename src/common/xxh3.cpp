// XXH3-64 dispatch (xxh3.h): the baseline loop here, AVX2 and AVX-512 in their own files built
// with those flags and called only where the CPU has them.
#include "src/common/xxh3.h"

#define XXH_INLINE_ALL  // internal linkage: no clash with the other paths' copies
#include <xxhash.h>

namespace strata {
namespace xxh3_isa {
uint64_t avx2(const void* data, size_t bytes);
uint64_t avx512(const void* data, size_t bytes);
}  // namespace xxh3_isa

bool xxh3_path_supported(Xxh3Path path) {
  switch (path) {
    case Xxh3Path::kBaseline:
      return true;
#if defined(__x86_64__)
    case Xxh3Path::kAvx2:
      return __builtin_cpu_supports("avx2");
    case Xxh3Path::kAvx512:
      return __builtin_cpu_supports("avx512f");
#else
    case Xxh3Path::kAvx2:
    case Xxh3Path::kAvx512:
      return false;
#endif
  }
  return false;
}

Xxh3Path xxh3_best_path() {
  static const Xxh3Path best = xxh3_path_supported(Xxh3Path::kAvx512) ? Xxh3Path::kAvx512
                               : xxh3_path_supported(Xxh3Path::kAvx2) ? Xxh3Path::kAvx2
                                                                      : Xxh3Path::kBaseline;
  return best;
}

namespace {

// `path` must be supported.
uint64_t run(Xxh3Path path, const void* data, size_t bytes) {
  switch (path) {
#if defined(__x86_64__)
    case Xxh3Path::kAvx512:
      return xxh3_isa::avx512(data, bytes);
    case Xxh3Path::kAvx2:
      return xxh3_isa::avx2(data, bytes);
#endif
    default:
      return XXH3_64bits(data, bytes);
  }
}

}  // namespace

uint64_t xxh3_64_by(Xxh3Path path, const void* data, size_t bytes) {
  return run(xxh3_path_supported(path) ? path : xxh3_best_path(), data, bytes);
}

// The best path is found once; every checksum of the store comes through here.
uint64_t xxh3_64(const void* data, size_t bytes) { return run(xxh3_best_path(), data, bytes); }

}  // namespace strata
