// CPU Lion and Adagrad kernels against the double-precision reference
// (kernels/reference/optimizers_ref.h): every ISA this CPU has, every gradient / output dtype,
// weight decay, sizes around every vector width, 10 steps with a changing lr; bit16 outputs
// checked bit for bit; results independent of the thread count; non-finite params reported.
#include <gtest/gtest.h>
#include <oneapi/tbb/task_arena.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/adagrad.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/lion.h"
#include "kernels/cpu/opt_tensor.h"
#include "kernels/cpu/parallel.h"
#include "kernels/reference/optimizers_ref.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::close;
using strata::testing::encode;
using strata::testing::Rng;

constexpr int kNoOut = -1;
constexpr int kSteps = 10;
enum class Opt { kLion, kAdagrad };

float grad_range(DType g) { return g == DType::kF16 ? 512.0f : 1.0f; }
float grad_scale(DType g) { return g == DType::kF16 ? 1.0f / 512.0f : 0.75f; }

struct Problem {
  std::vector<float> p, s;
  std::vector<double> rp, rs;
  std::vector<char> tied;  // Lion: elements whose sign was a tie at some step
  int ties_max = 0;
};

Problem make_problem(Opt opt, size_t n, uint64_t seed) {
  Rng rng(seed);
  Problem pr;
  pr.p.resize(n);
  pr.s.resize(n);
  for (size_t i = 0; i < n; ++i) {
    pr.p[i] = rng.uniform(-1.0f, 1.0f);
    pr.s[i] = opt == Opt::kLion ? rng.uniform(-0.05f, 0.05f) : rng.uniform(0.0f, 0.01f);
  }
  pr.rp.assign(pr.p.begin(), pr.p.end());
  pr.rs.assign(pr.s.begin(), pr.s.end());
  pr.tied.assign(n, 0);
  return pr;
}

float lr_at(Opt opt, int step) {
  return (opt == Opt::kLion ? 1e-4f : 1e-2f) * (1.0f + 0.1f * static_cast<float>(step));
}

// One step of the kernel (through its parallel driver) and of the reference.
bool step_both(const KernelTable& k, Opt opt, int step, Problem& pr, const std::vector<unsigned char>& grads, DType g,
               void* out, DType out_dtype) {
  const size_t n = pr.p.size();
  OptTensor t{pr.p.data(), pr.s.data(), grads.data(), g, out, out_dtype, n};
  const float lr = lr_at(opt, step);
  if (opt == Opt::kLion) {
    const LionHyper h{lr, 0.9f, 0.99f, 0.1f, grad_scale(g)};
    EXPECT_TRUE(validate_lion_hyper(h).is_ok());
    const bool finite = lion_update(k, make_lion_coeffs(h), {&t, 1});
    std::unique_ptr<bool[]> flags(new bool[n]());
    reference::lion_step_ref({h.lr, h.beta1, h.beta2, h.weight_decay, h.grad_scale}, pr.rp.data(), pr.rs.data(),
                             grads.data(), g, n, 1e-6, flags.get());
    for (size_t i = 0; i < n; ++i) pr.tied[i] = static_cast<char>(pr.tied[i] + (flags[i] ? 1 : 0));
    return finite;
  }
  const AdagradHyper h{lr, 1e-10f, 0.01f, grad_scale(g)};
  EXPECT_TRUE(validate_adagrad_hyper(h).is_ok());
  const bool finite = adagrad_update(k, make_adagrad_coeffs(h), {&t, 1});
  reference::adagrad_step_ref({h.lr, h.eps, h.weight_decay, h.grad_scale}, pr.rp.data(), pr.rs.data(), grads.data(), g,
                              n);
  return finite;
}

void run_and_compare(const KernelTable& k, Opt opt, DType g, int out, size_t n, uint64_t seed) {
  Problem pr = make_problem(opt, n, seed);
  Rng rng(seed ^ 0x5151);
  std::vector<uint16_t> bit16(n);
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<float> gv(n);
    for (auto& x : gv) x = rng.uniform(-grad_range(g), grad_range(g));
    const std::vector<unsigned char> grads = encode(gv, g);
    const DType od = out == kNoOut ? DType::kBF16 : static_cast<DType>(out);
    EXPECT_TRUE(step_both(k, opt, step, pr, grads, g, out == kNoOut ? nullptr : bit16.data(), od));
    if (out == kNoOut) continue;
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint16_t want = od == DType::kBF16 ? reference::float_to_bf16(pr.p[i]) : reference::float_to_fp16(pr.p[i]);
      if (bit16[i] != want && bad++ < 3)
        ADD_FAILURE() << "step " << step << " bit16 copy of element " << i << ": got 0x" << std::hex << bit16[i]
                      << ", rounding the fp32 result gives 0x" << want << std::dec;
    }
    ASSERT_EQ(bad, 0u);
  }
  size_t bad = 0, tied = 0;
  for (size_t i = 0; i < n; ++i) {
    // A tie lets the float kernel take the other sign: the param may then differ by 2 lr per tie.
    const double slack = opt == Opt::kLion ? 2.0 * lr_at(opt, kSteps) * pr.tied[i] * 1.01 : 0.0;
    tied += pr.tied[i] != 0;
    const bool ok =
        close(pr.p[i], pr.rp[i], 2e-6 + slack, 1e-5) && close(pr.s[i], pr.rs[i], opt == Opt::kLion ? 1e-7 : 1e-9, 1e-5);
    if (!ok && bad++ < 3)
      ADD_FAILURE() << "element " << i << ": p " << pr.p[i] << " vs " << pr.rp[i] << ", state " << pr.s[i] << " vs "
                    << pr.rs[i] << " (ties " << int(pr.tied[i]) << ")";
  }
  EXPECT_EQ(bad, 0u) << "of " << n << " elements differ from the reference";
  EXPECT_LE(tied, n / 1000 + 2) << "sign ties should be rare; the threshold is off";
}

using Param = std::tuple<Opt, Isa, DType, int, size_t>;
class CpuLionAdagradVsReference : public ::testing::TestWithParam<Param> {};

TEST_P(CpuLionAdagradVsReference, TenStepsMatch) {
  const auto [opt, isa, g, out, n] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << isa_name(isa);
  auto k = kernel_table(isa);
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  run_and_compare(*k.value(), opt, g, out, n, 3000 + n);
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [opt, isa, g, out, n] = info.param;
  std::string s = std::string(opt == Opt::kLion ? "lion_" : "adagrad_") + std::string(isa_name(isa)) + "_g" +
                  std::string(dtype_name(g)) + "_out";
  s += out == kNoOut ? std::string("none") : std::string(dtype_name(static_cast<DType>(out)));
  return s + "_" + std::to_string(n);
}

INSTANTIATE_TEST_SUITE_P(
    AllCombinations, CpuLionAdagradVsReference,
    ::testing::Combine(::testing::Values(Opt::kLion, Opt::kAdagrad),
                       ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(kNoOut, static_cast<int>(DType::kBF16), static_cast<int>(DType::kF16)),
                       ::testing::Values(size_t{1}, size_t{7}, size_t{17}, size_t{4096 + 3}, size_t{1} << 18)),
    param_name);

// The same updates with 1, 2 and 3 threads give identical bits, over several tensors at once.
TEST(CpuLionAdagrad, ResultsDoNotDependOnThreadCount) {
  auto k = kernel_table(best_isa());
  ASSERT_TRUE(k.is_ok());
  const size_t sizes[] = {(size_t{1} << 19) + 3, 5, 70001};
  for (Opt opt : {Opt::kLion, Opt::kAdagrad}) {
    std::vector<std::vector<uint32_t>> results;
    for (int threads : {1, 2, 3}) {
      std::vector<Problem> probs;
      std::vector<std::vector<unsigned char>> grads;
      std::vector<std::vector<uint16_t>> outs;
      std::vector<OptTensor> ts;
      for (size_t j = 0; j < 3; ++j) {
        probs.push_back(make_problem(opt, sizes[j], 40 + j));
        Rng rng(90 + j);
        std::vector<float> g(sizes[j]);
        for (auto& x : g) x = rng.uniform(-1.0f, 1.0f);
        grads.push_back(encode(g, DType::kBF16));
        outs.emplace_back(sizes[j]);
      }
      for (size_t j = 0; j < 3; ++j)
        ts.push_back(OptTensor{probs[j].p.data(), probs[j].s.data(), grads[j].data(), DType::kBF16, outs[j].data(),
                               DType::kF16, sizes[j]});
      ASSERT_TRUE(validate_opt_tensors(ts, "state").is_ok());
      tbb::task_arena arena(threads);
      arena_execute(arena, [&] {
        for (int s = 0; s < 3; ++s) {
          if (opt == Opt::kLion) {
            lion_update(*k.value(), make_lion_coeffs(LionHyper{1e-3f, 0.9f, 0.99f, 0.1f, 1.0f}), ts);
          } else {
            adagrad_update(*k.value(), make_adagrad_coeffs(AdagradHyper{1e-2f, 1e-10f, 0.1f, 1.0f}), ts);
          }
        }
      });
      std::vector<uint32_t> bits;
      for (size_t j = 0; j < 3; ++j) {
        for (const std::vector<float>* a : {&probs[j].p, &probs[j].s})
          for (float x : *a) bits.push_back(reference::float_bits(x));
        for (uint16_t o : outs[j]) bits.push_back(o);
      }
      results.push_back(std::move(bits));
    }
    EXPECT_TRUE(results[0] == results[1]) << "1 vs 2 threads";
    EXPECT_TRUE(results[0] == results[2]) << "1 vs 3 threads";
  }
}

// A param that turns inf is reported wherever it falls (a full vector or the padded tail).
TEST(CpuLionAdagrad, ReportsParamsThatTurnNonFinite) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!isa_supported(isa)) continue;
    SCOPED_TRACE(std::string(isa_name(isa)));
    auto k = kernel_table(isa);
    ASSERT_TRUE(k.is_ok());
    for (size_t n : {size_t{1}, size_t{7}, size_t{16}, size_t{37}, size_t{1000}}) {
      for (size_t bad : {size_t{0}, n / 2, n - 1}) {
        for (Opt opt : {Opt::kLion, Opt::kAdagrad}) {
          Problem pr = make_problem(opt, n, 11);
          std::vector<float> g(n, 0.5f);
          OptTensor t{pr.p.data(), pr.s.data(), g.data(), DType::kF32, nullptr, DType::kBF16, n};
          auto run = [&](float lr, float wd) {
            if (opt == Opt::kLion)
              return lion_update(*k.value(), make_lion_coeffs(LionHyper{lr, 0.9f, 0.99f, wd, 1.0f}), {&t, 1});
            return adagrad_update(*k.value(), make_adagrad_coeffs(AdagradHyper{lr, 1e-10f, wd, 1.0f}), {&t, 1});
          };
          EXPECT_TRUE(run(1e-3f, 0.0f)) << n;
          pr.p[bad] = 3.0e38f;  // finite: Lion's decay 1 - lr * wd = -1e5, Adagrad's wd * p overflow
          EXPECT_FALSE(run(1000.0f, 100.0f)) << "n " << n << " bad " << bad;
          EXPECT_FALSE(std::isfinite(pr.p[bad])) << "the update still ran";
        }
      }
    }
  }
}

TEST(CpuLionAdagrad, RefusesBadHyperParametersByName) {
  Status s = validate_lion_hyper(LionHyper{1e-3f, 1.0f, 0.99f, 0.0f, 1.0f});
  EXPECT_NE(s.message().find("beta1 = 1"), std::string::npos) << s.message();
  s = validate_lion_hyper(LionHyper{NAN, 0.9f, 0.99f, 0.0f, 1.0f});
  EXPECT_NE(s.message().find("Lion hyper-parameter lr"), std::string::npos) << s.message();
  s = validate_adagrad_hyper(AdagradHyper{1e-2f, 0.0f, 0.0f, 1.0f});
  EXPECT_NE(s.message().find("Adagrad hyper-parameter eps = 0"), std::string::npos) << s.message();
  s = validate_adagrad_hyper(AdagradHyper{1e-2f, 1e-10f, -1.0f, 1.0f});
  EXPECT_NE(s.message().find("weight_decay"), std::string::npos) << s.message();
  std::vector<float> a(8), b(8);
  const OptTensor overlap{a.data(), a.data() + 4, b.data(), DType::kF32, nullptr, DType::kBF16, 8};
  s = validate_opt_tensors({&overlap, 1}, "exp_avg");
  EXPECT_NE(s.message().find("buffers overlap: tensor 0 params and tensor 0 exp_avg"), std::string::npos)
      << s.message();
  const OptTensor null_state{a.data(), nullptr, b.data(), DType::kF32, nullptr, DType::kBF16, 8};
  s = validate_opt_tensors({&null_state, 1}, "sum");
  EXPECT_NE(s.message().find("tensor 0: sum is NULL"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace strata::kernels
