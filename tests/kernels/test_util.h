// Helpers for the kernel tests: a fast seeded generator, encoding to bf16 / fp16, and a closeness
// check that fails on NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernel_types.h"
#include "kernels/reference/half.h"
#include "src/common/dtype.h"

namespace strata::testing {

// xoshiro-style generator (splitmix64): fast enough for 10^8 values, fixed by its seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }

 private:
  uint64_t s_;
};

// `values` rounded (nearest even) into a byte buffer of `dtype`.
inline std::vector<unsigned char> encode(const std::vector<float>& values, DType dtype) {
  std::vector<unsigned char> out(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t h =
          dtype == DType::kBF16 ? reference::float_to_bf16(values[i]) : reference::float_to_fp16(values[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

// True when |a - ref| <= atol + rtol * |ref|; false when either is NaN.
inline bool close(double a, double ref, double atol, double rtol) {
  return std::fabs(a - ref) <= atol + rtol * std::fabs(ref);
}

}  // namespace strata::testing

// Readable test parameters in GoogleTest output ("avx2" rather than "4-byte object <01-00 00-00>").
namespace strata {
inline void PrintTo(DType d, std::ostream* os) { *os << dtype_name(d); }
}  // namespace strata
namespace strata::kernels {
inline void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
inline void PrintTo(AdamMode m, std::ostream* os) { *os << (m == AdamMode::kAdam ? "adam" : "adamw"); }
}  // namespace strata::kernels
