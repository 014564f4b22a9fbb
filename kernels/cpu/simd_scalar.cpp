// CPU kernels for any x86-64 (or other) CPU: one float per "vector", conversions from
// src/common/half.h. Built with baseline flags; the fallback when no SIMD ISA is usable.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/kernel_types.h"
#include "src/common/half.h"

namespace strata::kernels::cpu {
namespace {

struct Simd {
  using V = float;
  using VD = double;
  static constexpr size_t kWidth = 1;

  static V load(const float* p) { return *p; }
  static void store(float* p, V x) { *p = x; }
  static V set1(float x) { return x; }
  static V add(V a, V b) { return a + b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V sqrt(V a) { return std::sqrt(a); }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static V fnmadd(V a, V b, V c) { return c - a * b; }
  static V load_bf16(const uint16_t* p) { return bf16_to_float(*p); }
  static V load_fp16(const uint16_t* p) { return fp16_to_float(*p); }
  static void store_bf16(uint16_t* p, V x) { *p = float_to_bf16(x); }
  static void store_bf16_trunc(uint16_t* p, V x) { *p = static_cast<uint16_t>(float_bits(x) >> 16); }
  static void store_fp16(uint16_t* p, V x) { *p = float_to_fp16(x); }
  static V sign(V x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }
  static VD zero_d() { return 0.0; }
  static VD add_d(VD a, VD b) { return a + b; }
  static void acc_sumsq(VD& a0, VD&, V x) { a0 += static_cast<double>(x) * x; }
  static double hsum_d(VD a) { return a; }
};

#include "kernels/cpu/simd_body.inc"

}  // namespace

extern const KernelTable kScalarKernels;
const KernelTable kScalarKernels = {"scalar",        adam_entry,    sumsq_entry,      to_fp32_entry,
                                    from_fp32_entry, mix_entry,     accumulate_entry, read_entry,
                                    lion_entry,      adagrad_entry, mix1_entry};

}  // namespace strata::kernels::cpu
