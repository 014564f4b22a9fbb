// bf16 / fp16 conversions: the scalar reference (kernels/reference/half.h) against independent
// definitions (nearest-even chosen by comparing distances in double; F16C hardware for fp16), and
// every ISA's vector casts against the reference, bit for bit, over special and sampled values.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/isa.h"
#include "kernels/reference/half.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using reference::bits_float;
using reference::float_bits;

// bf16 nearest-even by definition: of the two bf16 values around x, the nearer; on a tie, the
// one with an even last bit.
uint16_t bf16_by_definition(float x) {
  if (std::isnan(x)) return static_cast<uint16_t>((float_bits(x) >> 16) | 0x40);
  const uint32_t u = float_bits(x);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);  // toward zero
  if ((u & 0xffff) == 0) return lo;
  const uint16_t hi = static_cast<uint16_t>(lo + 1);  // away from zero
  const double dlo = std::fabs(static_cast<double>(x) - reference::bf16_to_float(lo));
  // Past the largest bf16 the next value up is 2^128 (as if the exponent were unbounded).
  const double vhi = (hi & 0x7fff) == 0x7f80 ? std::copysign(std::ldexp(1.0, 128), static_cast<double>(x))
                                             : static_cast<double>(reference::bf16_to_float(hi));
  const double dhi = std::fabs(static_cast<double>(x) - vhi);
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

// Values that exercise every rounding path: zeros, subnormals, normal boundaries, ties, the fp16
// overflow threshold, infinities, NaNs, plus a stride over all 2^32 bit patterns.
std::vector<float> test_values() {
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu,
                                0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffc00001u, 0x3f800000u,
                                0x3f808000u, 0x3f818000u, 0x3f80c000u, 0x477fe000u, 0x477ff000u, 0x477fefffu,
                                0x47800000u, 0x38800000u, 0x387fffffu, 0x33800000u, 0x33000000u, 0x33000001u,
                                0x337fffffu, 0x387fc000u, 0x38000000u, 0x7f7f8000u};
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65521) bits.push_back(static_cast<uint32_t>(u));
  for (uint32_t e = 0; e < 256; ++e)
    for (uint32_t low : {0x0u, 0x1000u, 0x0fffu, 0x1fffu, 0x8000u, 0x7fffu, 0x18000u, 0x7fffffu})
      bits.push_back((e << 23) | low);
  std::vector<float> out;
  for (uint32_t b : bits) {
    out.push_back(bits_float(b));
    out.push_back(bits_float(b ^ 0x80000000u));
  }
  return out;
}

bool same_bits16(uint16_t a, uint16_t b) { return a == b; }

TEST(HalfReference, Bf16MatchesDefinition) {
  for (float x : test_values())
    ASSERT_TRUE(same_bits16(reference::float_to_bf16(x), bf16_by_definition(x))) << std::hex << float_bits(x);
}

TEST(HalfReference, Fp16MatchesF16cHardware) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU";
  for (float x : test_values()) {
    alignas(16) float in[8] = {x};
    alignas(16) uint16_t out[8];
    // The hardware instruction, through a tiny target-attributed function.
    struct F16c {
      __attribute__((target("f16c"))) static void run(const float* i, uint16_t* o) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o),
                         _mm256_cvtps_ph(_mm256_loadu_ps(i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
    };
    F16c::run(in, out);
    ASSERT_EQ(reference::float_to_fp16(x), out[0]) << std::hex << float_bits(x);
  }
}

TEST(HalfReference, WidenIsExactForEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float b = reference::bf16_to_float(static_cast<uint16_t>(h));
    const float f = reference::fp16_to_float(static_cast<uint16_t>(h));
    if (!std::isnan(b)) {
      ASSERT_EQ(reference::float_to_bf16(b), h);
    }
    if (std::isnan(f)) {
      ASSERT_TRUE((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0);
    } else {
      ASSERT_EQ(reference::float_to_fp16(f), h) << std::hex << h;
    }
  }
  EXPECT_EQ(reference::fp16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(reference::fp16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(reference::fp16_to_float(0xfc00), -std::numeric_limits<float>::infinity());
}

class VectorCasts : public ::testing::TestWithParam<Isa> {};

TEST_P(VectorCasts, EqualTheReferenceBitForBit) {
  const Isa isa = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << isa_name(isa);
  const KernelTable& k = *kernel_table(isa).value();
  const std::vector<float> xs = test_values();
  const size_t n = xs.size();
  for (DType d : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> out(n);
    cast_from_fp32(k, xs.data(), n, d, out.data());
    for (size_t i = 0; i < n; ++i) {
      const uint16_t want = d == DType::kBF16 ? reference::float_to_bf16(xs[i]) : reference::float_to_fp16(xs[i]);
      ASSERT_EQ(out[i], want) << dtype_name(d) << " of 0x" << std::hex << float_bits(xs[i]);
    }
    // Back to fp32 with a scale: exact widening times the scale, as in scalar float arithmetic.
    std::vector<float> back(n);
    cast_to_fp32(k, TensorView{out.data(), d, n}, 0.5f, back.data());
    for (size_t i = 0; i < n; ++i) {
      const float w = d == DType::kBF16 ? reference::bf16_to_float(out[i]) : reference::fp16_to_float(out[i]);
      const float want = w * 0.5f;
      ASSERT_TRUE(float_bits(back[i]) == float_bits(want) || (std::isnan(back[i]) && std::isnan(want))) << i;
    }
  }
}

TEST_P(VectorCasts, AccumulateMatchesDoubleWithinOneUlp) {
  const Isa isa = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << isa_name(isa);
  const KernelTable& k = *kernel_table(isa).value();
  strata::testing::Rng rng(17);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    const size_t n = 100003;
    std::vector<float> acc(n), g(n);
    for (size_t i = 0; i < n; ++i) {
      acc[i] = rng.uniform(-4.0f, 4.0f);
      g[i] = rng.uniform(-300.0f, 300.0f);
    }
    const std::vector<unsigned char> enc = strata::testing::encode(g, d);
    std::vector<float> start = acc;
    accumulate(k, acc.data(), TensorView{enc.data(), d, n}, 1.0f / 128.0f);
    for (size_t i = 0; i < n; ++i) {
      const double gi = d == DType::kF32 ? static_cast<double>(g[i])
                        : d == DType::kBF16
                            ? reference::bf16_to_float(reinterpret_cast<const uint16_t*>(enc.data())[i])
                            : reference::fp16_to_float(reinterpret_cast<const uint16_t*>(enc.data())[i]);
      const double want = static_cast<double>(start[i]) + gi / 128.0;
      ASSERT_TRUE(strata::testing::close(acc[i], want, 1e-30, std::ldexp(1.0, -23)))
          << dtype_name(d) << " element " << i << ": " << acc[i] << " vs " << want;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, VectorCasts, ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const auto& p) { return std::string(isa_name(p.param)); });

}  // namespace
}  // namespace strata::kernels
