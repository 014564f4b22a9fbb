// CPU Adam kernels against the double-precision reference (kernels/reference/adam_ref.h): every
// ISA this CPU has, every gradient / output dtype, Adam and AdamW with weight decay, sizes around
// every vector width, 10 steps; bit16 outputs checked bit for bit; thread-count independence.
#include <gtest/gtest.h>
#include <oneapi/tbb/task_arena.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/adam.h"
#include "kernels/reference/adam_ref.h"
#include "kernels/reference/half.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::close;
using strata::testing::encode;
using strata::testing::Rng;

constexpr int kNoOut = -1;
constexpr int kSteps = 10;

struct Problem {
  std::vector<float> p, m, v;
  std::vector<double> rp, rm, rv;
};

Problem make_problem(size_t n, uint64_t seed) {
  Rng rng(seed);
  Problem pr;
  pr.p.resize(n);
  pr.m.resize(n);
  pr.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    pr.p[i] = rng.uniform(-1.0f, 1.0f);
    pr.m[i] = rng.uniform(-0.05f, 0.05f);
    pr.v[i] = rng.uniform(0.0f, 0.01f);
  }
  pr.rp.assign(pr.p.begin(), pr.p.end());
  pr.rm.assign(pr.m.begin(), pr.m.end());
  pr.rv.assign(pr.v.begin(), pr.v.end());
  return pr;
}

// Gradient magnitudes as a framework would hand them over: fp16 gradients carry a loss scale.
float grad_range(DType g) { return g == DType::kF16 ? 512.0f : 1.0f; }

AdamHyper hyper_for_step(int step, DType g) {
  AdamHyper h;
  h.lr = 1e-3f * (1.0f + 0.1f * static_cast<float>(step));  // a schedule: lr changes every step
  h.beta1 = 0.9f;
  h.beta2 = 0.999f;
  h.eps = 1e-8f;
  h.weight_decay = 0.01f;
  h.grad_scale = g == DType::kF16 ? 1.0f / 512.0f : 0.75f;
  return h;
}

reference::AdamRefHyper to_ref(const AdamHyper& h) {
  return {h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.grad_scale};
}

// Runs kSteps steps of the optimised kernel and of the reference; checks every step's bit16 copy
// and the final state against the reference.
void run_and_compare(const KernelTable& k, DType g, int out, AdamMode mode, size_t n, uint64_t seed) {
  Problem pr = make_problem(n, seed);
  Rng rng(seed ^ 0xabcdef);
  std::vector<uint16_t> bit16(n);
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<float> gv(n);
    for (auto& x : gv) x = rng.uniform(-grad_range(g), grad_range(g));
    const std::vector<unsigned char> grads = encode(gv, g);
    const AdamHyper h = hyper_for_step(step, g);

    AdamTensor t;
    t.params = pr.p.data();
    t.exp_avg = pr.m.data();
    t.exp_avg_sq = pr.v.data();
    t.grads = grads.data();
    t.grad_dtype = g;
    t.params_out = out == kNoOut ? nullptr : bit16.data();
    t.out_dtype = out == kNoOut ? DType::kBF16 : static_cast<DType>(out);
    t.count = n;
    adam_update(k, make_adam_coeffs(mode, true, step, h), std::span<const AdamTensor>(&t, 1));
    reference::adam_step_ref(mode, true, step, to_ref(h), pr.rp.data(), pr.rm.data(), pr.rv.data(), grads.data(), g, n);

    if (out != kNoOut) {
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) {
        const uint16_t want = static_cast<DType>(out) == DType::kBF16 ? reference::float_to_bf16(pr.p[i])
                                                                      : reference::float_to_fp16(pr.p[i]);
        if (bit16[i] != want && bad++ < 3)
          ADD_FAILURE() << "step " << step << " bit16 copy of element " << i << ": got 0x" << std::hex << bit16[i]
                        << ", rounding the fp32 result gives 0x" << want << std::dec;
      }
      ASSERT_EQ(bad, 0u) << "bit16 copies differ from the rounded fp32 params";
    }
  }
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool ok = close(pr.p[i], pr.rp[i], 2e-6, 1e-5) && close(pr.m[i], pr.rm[i], 1e-7, 1e-5) &&
                    close(pr.v[i], pr.rv[i], 1e-9, 1e-5);
    if (!ok && bad++ < 3)
      ADD_FAILURE() << "element " << i << ": p " << pr.p[i] << " vs " << pr.rp[i] << ", m " << pr.m[i] << " vs "
                    << pr.rm[i] << ", v " << pr.v[i] << " vs " << pr.rv[i];
  }
  EXPECT_EQ(bad, 0u) << "of " << n << " elements differ from the reference";
}

using Param = std::tuple<Isa, DType, int, AdamMode, size_t>;

class CpuAdamVsReference : public ::testing::TestWithParam<Param> {};

TEST_P(CpuAdamVsReference, TenStepsMatch) {
  const auto [isa, g, out, mode, n] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << isa_name(isa);
  auto k = kernel_table(isa);
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  run_and_compare(*k.value(), g, out, mode, n, 1000 + n);
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [isa, g, out, mode, n] = info.param;
  std::string s = std::string(isa_name(isa)) + "_g" + std::string(dtype_name(g)) + "_out";
  s += out == kNoOut ? std::string("none") : std::string(dtype_name(static_cast<DType>(out)));
  s += mode == AdamMode::kAdam ? "_adam_" : "_adamw_";
  return s + std::to_string(n);
}

INSTANTIATE_TEST_SUITE_P(
    AllCombinations, CpuAdamVsReference,
    ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(kNoOut, static_cast<int>(DType::kBF16), static_cast<int>(DType::kF16)),
                       ::testing::Values(AdamMode::kAdam, AdamMode::kAdamW),
                       ::testing::Values(size_t{0}, size_t{1}, size_t{7}, size_t{15}, size_t{16}, size_t{17},
                                         size_t{1023}, size_t{4096 + 3}, size_t{1} << 20)),
    param_name);

// One size past 1 << 24 with the best ISA, every dtype combination (alternating Adam / AdamW).
class CpuAdamLarge : public ::testing::TestWithParam<std::tuple<DType, int>> {};

TEST_P(CpuAdamLarge, TenStepsMatch) {
  const auto [g, out] = GetParam();
  auto k = kernel_table(best_isa());
  ASSERT_TRUE(k.is_ok());
  const AdamMode mode = (static_cast<int>(g) + out) % 2 == 0 ? AdamMode::kAdamW : AdamMode::kAdam;
  run_and_compare(*k.value(), g, out, mode, (size_t{1} << 24) + 5, 77);
}

INSTANTIATE_TEST_SUITE_P(Over16M, CpuAdamLarge,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(kNoOut, static_cast<int>(DType::kBF16),
                                                              static_cast<int>(DType::kF16))),
                         [](const auto& p) {
                           std::string s = "g";
                           s += dtype_name(std::get<0>(p.param));
                           s += "_out";
                           const int out = std::get<1>(p.param);
                           s += out == kNoOut ? std::string_view("none") : dtype_name(static_cast<DType>(out));
                           return s;
                         });

TEST(CpuAdam, NoBiasCorrectionMatchesReference) {
  const size_t n = 1000;
  Problem pr = make_problem(n, 5);
  Rng rng(6);
  auto k = kernel_table(best_isa());
  ASSERT_TRUE(k.is_ok());
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<float> g(n);
    for (auto& x : g) x = rng.uniform(-1.0f, 1.0f);
    AdamHyper h = hyper_for_step(step, DType::kF32);
    AdamTensor t{pr.p.data(), pr.m.data(), pr.v.data(), g.data(), DType::kF32, nullptr, DType::kBF16, n};
    adam_update(*k.value(), make_adam_coeffs(AdamMode::kAdamW, false, step, h), std::span<const AdamTensor>(&t, 1));
    reference::adam_step_ref(AdamMode::kAdamW, false, step, to_ref(h), pr.rp.data(), pr.rm.data(), pr.rv.data(),
                             g.data(), DType::kF32, n);
  }
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(close(pr.p[i], pr.rp[i], 2e-6, 1e-5)) << i;
}

// The same update with 1, 2 and 3 threads gives identical bits, across several tensors at once.
TEST(CpuAdam, ResultsDoNotDependOnThreadCount) {
  const size_t sizes[] = {(size_t{1} << 20) + 3, 5, 70001};
  std::vector<std::vector<uint32_t>> results;
  for (int threads : {1, 2, 3}) {
    std::vector<Problem> probs;
    std::vector<std::vector<uint16_t>> grads, outs;
    std::vector<AdamTensor> ts;
    for (size_t j = 0; j < 3; ++j) {
      probs.push_back(make_problem(sizes[j], 40 + j));
      Rng rng(90 + j);
      std::vector<float> g(sizes[j]);
      for (auto& x : g) x = rng.uniform(-1.0f, 1.0f);
      std::vector<unsigned char> enc = encode(g, DType::kBF16);
      grads.emplace_back(sizes[j]);
      std::memcpy(grads.back().data(), enc.data(), enc.size());
      outs.emplace_back(sizes[j]);
    }
    for (size_t j = 0; j < 3; ++j)
      ts.push_back(AdamTensor{probs[j].p.data(), probs[j].m.data(), probs[j].v.data(), grads[j].data(), DType::kBF16,
                              outs[j].data(), DType::kF16, sizes[j]});
    auto opt = CpuAdam::create(CpuAdamOptions{AdamMode::kAdamW, true, threads, best_isa()});
    ASSERT_TRUE(opt.is_ok());
    EXPECT_EQ(opt.value()->num_threads(), threads);
    AdamHyper h;
    h.weight_decay = 0.1f;
    for (int s = 0; s < 3; ++s) ASSERT_TRUE(opt.value()->step(h, ts).is_ok());
    std::vector<uint32_t> bits;
    for (size_t j = 0; j < 3; ++j) {
      for (float* a : {probs[j].p.data(), probs[j].m.data(), probs[j].v.data()})
        for (size_t i = 0; i < sizes[j]; ++i) bits.push_back(reference::float_bits(a[i]));
      for (uint16_t o : outs[j]) bits.push_back(o);
    }
    results.push_back(std::move(bits));
  }
  EXPECT_TRUE(results[0] == results[1]) << "1 vs 2 threads";
  EXPECT_TRUE(results[0] == results[2]) << "1 vs 3 threads";
}

// adam_update reports non-finite updated params, on every ISA, wherever the bad element falls
// (a full vector or the padded tail), and only then; the update itself is done either way.
TEST(CpuAdam, ReportsParamsThatTurnNonFinite) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!isa_supported(isa)) continue;
    SCOPED_TRACE(std::string(isa_name(isa)));
    auto k = kernel_table(isa);
    ASSERT_TRUE(k.is_ok());
    for (size_t n : {size_t{1}, size_t{7}, size_t{16}, size_t{37}, size_t{1000}}) {
      for (size_t bad : {size_t{0}, n / 2, n - 1}) {
        Problem pr = make_problem(n, 11);
        std::vector<float> g(n, 0.5f);
        AdamTensor t{pr.p.data(), pr.m.data(), pr.v.data(), g.data(), DType::kF32, nullptr, DType::kBF16, n};
        AdamHyper h = hyper_for_step(1, DType::kF32);
        EXPECT_TRUE(
            adam_update(*k.value(), make_adam_coeffs(AdamMode::kAdamW, true, 1, h), std::span<const AdamTensor>(&t, 1)))
            << n;
        pr.p[bad] = 3.0e38f;  // finite; AdamW's decay 1 - lr * wd = -1e5 sends it past fp32's range
        h.lr = 1000.0f;
        h.weight_decay = 100.0f;
        EXPECT_FALSE(
            adam_update(*k.value(), make_adam_coeffs(AdamMode::kAdamW, true, 2, h), std::span<const AdamTensor>(&t, 1)))
            << "n " << n << " bad " << bad;
        EXPECT_TRUE(std::isinf(pr.p[bad])) << "the update still ran";
      }
    }
  }
}

}  // namespace
}  // namespace strata::kernels
