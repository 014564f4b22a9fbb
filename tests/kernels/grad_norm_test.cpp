// Multi-tensor sum of squares and inf/NaN detection against the sequential double reference,
// for every ISA and dtype; determinism across thread counts; the clip coefficient.
#include <gtest/gtest.h>
#include <oneapi/tbb/task_arena.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/work_split.h"
#include "kernels/reference/adam_ref.h"
#include "kernels/reference/half.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::encode;
using strata::testing::Rng;

struct Grads {
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<TensorView> views;
};

Grads make_grads(DType dtype, const std::vector<size_t>& sizes, uint64_t seed) {
  Grads g;
  Rng rng(seed);
  for (size_t n : sizes) {
    std::vector<float> v(n);
    for (auto& x : v) x = rng.uniform(-2.0f, 2.0f);
    g.bufs.push_back(encode(v, dtype));
  }
  for (size_t i = 0; i < sizes.size(); ++i) g.views.push_back(TensorView{g.bufs[i].data(), dtype, sizes[i]});
  return g;
}

double reference_sumsq(const Grads& g) {
  double s = 0;
  for (const TensorView& v : g.views) s += reference::sumsq_ref(v.data, v.dtype, v.count);
  return s;
}

void set_element(Grads& g, size_t tensor, size_t i, float value) {
  const DType d = g.views[tensor].dtype;
  std::vector<unsigned char> one = encode({value}, d);
  std::memcpy(g.bufs[tensor].data() + i * dtype_size(d), one.data(), one.size());
}

class GradNorm : public ::testing::TestWithParam<std::tuple<Isa, DType>> {};

TEST_P(GradNorm, MatchesReferenceAndFindsInfNaN) {
  const auto [isa, dtype] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << isa_name(isa);
  const KernelTable& k = *kernel_table(isa).value();
  const std::vector<size_t> sizes = {0, 1, 7, 17, 1023, 4099, (size_t{1} << 20) + 9, 100000};
  Grads g = make_grads(dtype, sizes, 11);
  ASSERT_TRUE(validate_views(g.views).is_ok());
  const NormResult r = multi_tensor_sumsq(k, g.views);
  const double want = reference_sumsq(g);
  EXPECT_TRUE(r.finite);
  EXPECT_TRUE(strata::testing::close(r.sumsq, want, 0.0, 1e-10)) << r.sumsq << " vs " << want;
  EXPECT_TRUE(strata::testing::close(r.l2(), std::sqrt(want), 0.0, 1e-10));

  // One bad element anywhere (first, inside a vector, in a tail, in the last tensor) is found.
  const float bads[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()};
  const std::pair<size_t, size_t> places[] = {{1, 0}, {2, 6}, {4, 1022}, {6, (size_t{1} << 20) + 8}, {7, 54321}};
  for (float bad : bads) {
    for (auto [t, i] : places) {
      Grads h = make_grads(dtype, sizes, 11);
      set_element(h, t, i, bad);
      const NormResult b = multi_tensor_sumsq(k, h.views);
      EXPECT_FALSE(b.finite) << "missed " << bad << " in tensor " << t << " at " << i;
      EXPECT_FALSE(std::isfinite(b.l2()));
    }
  }
  // The largest finite values stay finite (squares of fp32 values do not overflow in double).
  Grads big = make_grads(dtype, {33}, 3);
  const float huge = dtype == DType::kF16    ? 65504.0f
                     : dtype == DType::kBF16 ? reference::bf16_to_float(0x7f7f)
                                             : std::numeric_limits<float>::max();
  for (size_t i = 0; i < 33; ++i) set_element(big, 0, i, huge);
  EXPECT_TRUE(multi_tensor_sumsq(k, big.views).finite);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, GradNorm,
                         ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                                            ::testing::Values(DType::kF32, DType::kBF16, DType::kF16)),
                         [](const auto& p) {
                           return std::string(isa_name(std::get<0>(p.param))) + "_" +
                                  std::string(dtype_name(std::get<1>(p.param)));
                         });

TEST(GradNormDeterminism, SameBitsForAnyThreadCount) {
  Grads g = make_grads(DType::kF32, {(size_t{1} << 21) + 3, 999, 300000}, 21);
  const KernelTable& k = *kernel_table(best_isa()).value();
  std::vector<double> sums;
  for (int threads : {1, 2, 3, 4}) {
    tbb::task_arena arena(threads);
    double s = 0;
    arena.execute([&] { s = multi_tensor_sumsq(k, g.views).sumsq; });
    sums.push_back(s);
  }
  for (double s : sums) EXPECT_EQ(s, sums[0]);
}

// Partial sums taken view by view (a gradient written away once final), concatenated in view
// order and added front to back: multi_tensor_sumsq's result bit for bit; each view's partials
// cover its fixed chunks; their plain sum matches the sequential reference.
TEST(GradNormPartials, ViewByViewAddsUpToTheMultiTensorSum) {
  Grads g = make_grads(DType::kF32, {(size_t{1} << 20) + 5, 0, 999, kChunkElems, 300001}, 33);
  const KernelTable& k = *kernel_table(best_isa()).value();
  const double whole = multi_tensor_sumsq(k, g.views).sumsq;
  std::vector<double> joined;
  for (const TensorView& v : g.views) {
    const std::vector<double> p = sumsq_partials(k, {&v, 1});
    EXPECT_EQ(p.size(), (v.count + kChunkElems - 1) / kChunkElems);
    joined.insert(joined.end(), p.begin(), p.end());
  }
  EXPECT_EQ(joined, sumsq_partials(k, g.views));
  double sum = 0;
  for (double p : joined) sum += p;
  EXPECT_EQ(sum, whole);
  EXPECT_NEAR(sum, reference_sumsq(g), 1e-9 * reference_sumsq(g));
}

TEST(GradNormValidation, NamesTheBadView) {
  float x[4] = {};
  std::vector<TensorView> v = {{x, DType::kF32, 4}, {nullptr, DType::kBF16, 3}};
  Status s = validate_views(v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gradient 1: data is NULL"), std::string::npos) << s.message();
  v[1] = TensorView{x, static_cast<DType>(9), 1};
  EXPECT_NE(validate_views(v).message().find("gradient 1: invalid dtype 9"), std::string::npos);
  v[1] = TensorView{reinterpret_cast<char*>(x) + 1, DType::kF32, 1};
  EXPECT_NE(validate_views(v).message().find("not aligned"), std::string::npos);
  v[1] = TensorView{nullptr, DType::kF32, 0};  // empty views need no data
  EXPECT_TRUE(validate_views(v).is_ok());
}

TEST(ClipCoefficient, FollowsTorch) {
  EXPECT_DOUBLE_EQ(clip_coefficient(10.0, 1.0), 1.0 / (10.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_coefficient(10.0, 0.0), 1.0);
}

}  // namespace
}  // namespace strata::kernels
