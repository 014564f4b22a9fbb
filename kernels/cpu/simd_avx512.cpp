// CPU kernels for AVX-512 (F, BW, VL, DQ) with FMA and F16C (16 floats per vector). Built with
// AVX-512 flags and chosen at run time only on CPUs (and kernels) that support it; internal
// linkage throughout, as in simd_avx2.cpp. bf16 rounding uses integer ops, not AVX512-BF16's
// vcvtneps2bf16, which flushes subnormals.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/kernel_types.h"

namespace strata::kernels::cpu {
namespace {

struct Simd {
  using V = __m512;
  using VD = __m512d;
  static constexpr size_t kWidth = 16;

  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }

  static V load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static V load_fp16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_hi16(uint16_t* p, __m512i r) {  // stores the low 16 bits of each 32-bit lane
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static void store_bf16(uint16_t* p, V x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __m512i qnan = _mm512_or_si512(b, _mm512_set1_epi32(0x00400000));
    const __mmask16 is_nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    store_hi16(p, _mm512_srli_epi32(_mm512_mask_blend_epi32(is_nan, rounded, qnan), 16));
  }
  static void store_bf16_trunc(uint16_t* p, V x) { store_hi16(p, _mm512_srli_epi32(_mm512_castps_si512(x), 16)); }
  static void store_fp16(uint16_t* p, V x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }

  static V sign(V x) {
    const V zero = _mm512_setzero_ps();
    const V r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), x, _mm512_set1_ps(1.0f));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), r, _mm512_set1_ps(-1.0f));
  }

  static VD zero_d() { return _mm512_setzero_pd(); }
  static VD add_d(VD a, VD b) { return _mm512_add_pd(a, b); }
  static void acc_sumsq(VD& a0, VD& a1, V x) {
    const VD lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    const VD hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    a0 = _mm512_fmadd_pd(lo, lo, a0);
    a1 = _mm512_fmadd_pd(hi, hi, a1);
  }
  static double hsum_d(VD a) {
    alignas(64) double t[8];
    _mm512_store_pd(t, a);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
};

#include "kernels/cpu/simd_body.inc"

}  // namespace

extern const KernelTable kAvx512Kernels;
const KernelTable kAvx512Kernels = {"avx512",        adam_entry,    sumsq_entry,      to_fp32_entry,
                                    from_fp32_entry, mix_entry,     accumulate_entry, read_entry,
                                    lion_entry,      adagrad_entry, mix1_entry};

}  // namespace strata::kernels::cpu
