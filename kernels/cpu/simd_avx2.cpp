// CPU kernels for AVX2 + FMA + F16C (8 floats per vector). Built with -mavx2 -mfma -mf16c and
// chosen at run time only on CPUs that have them; everything here has internal linkage so no
// AVX2 code can be linked into baseline paths.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/kernel_types.h"

namespace strata::kernels::cpu {
namespace {

struct Simd {
  using V = __m256;
  using VD = __m256d;
  static constexpr size_t kWidth = 8;

  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }

  static V load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static V load_fp16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_hi16(uint16_t* p, __m256i r) {  // stores the low 16 bits of each 32-bit lane
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  static void store_bf16(uint16_t* p, V x) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i qnan = _mm256_or_si256(b, _mm256_set1_epi32(0x00400000));
    const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    store_hi16(p, _mm256_srli_epi32(_mm256_blendv_epi8(rounded, qnan, is_nan), 16));
  }
  static void store_bf16_trunc(uint16_t* p, V x) { store_hi16(p, _mm256_srli_epi32(_mm256_castps_si256(x), 16)); }
  static void store_fp16(uint16_t* p, V x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }

  static V sign(V x) {
    const V zero = _mm256_setzero_ps();
    const V r = _mm256_blendv_ps(x, _mm256_set1_ps(1.0f), _mm256_cmp_ps(x, zero, _CMP_GT_OQ));
    return _mm256_blendv_ps(r, _mm256_set1_ps(-1.0f), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
  }

  static VD zero_d() { return _mm256_setzero_pd(); }
  static VD add_d(VD a, VD b) { return _mm256_add_pd(a, b); }
  static void acc_sumsq(VD& a0, VD& a1, V x) {
    const VD lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    const VD hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    a0 = _mm256_fmadd_pd(lo, lo, a0);
    a1 = _mm256_fmadd_pd(hi, hi, a1);
  }
  static double hsum_d(VD a) {
    alignas(32) double t[4];
    _mm256_store_pd(t, a);
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
};

#include "kernels/cpu/simd_body.inc"

}  // namespace

extern const KernelTable kAvx2Kernels;
const KernelTable kAvx2Kernels = {"avx2",           adam_entry, sumsq_entry, to_fp32_entry, from_fp32_entry, mix_entry,
                                  accumulate_entry, read_entry, lion_entry,  adagrad_entry, mix1_entry};

}  // namespace strata::kernels::cpu
