// Scalar bf16 / fp16 <-> fp32 conversions, round to nearest even, exactly as the hardware does it
// (F16C vcvtps2ph for fp16; for bf16 the usual integer rounding, with NaN kept a quiet NaN and
// subnormals kept, unlike AVX512-BF16's vcvtneps2bf16, which flushes them). The library's own
// scalar conversions (the scalar kernels, exports, MPI's bit16 reductions) and the reference for
// every optimised cast; beside dtype.h because every layer uses them.
#pragma once

#include <cstdint>
#include <cstring>

namespace strata {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_fp16(float f) {
  uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  uint32_t out;
  if (u > 0x7f800000u) {
    out = 0x7c00u | 0x0200u | ((u >> 13) & 0x3ffu);  // NaN: quiet, payload's top bits kept
  } else if (u >= 0x47800000u) {
    out = 0x7c00u;  // >= 65536 (or inf): infinity. [65520, 65536) overflows below, as RNE says.
  } else if (u < 0x38800000u) {
    // Result is subnormal or zero: let the FPU round by adding a magic number whose ulp is 2^-24.
    const uint32_t magic = (127u - 15u + 23u - 10u + 1u) << 23;  // 0.5f
    const float sum = bits_float(u) + bits_float(magic);
    out = float_bits(sum) - magic;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;
    out = u >> 13;
  }
  return static_cast<uint16_t>(out | sign);
}

}  // namespace strata
