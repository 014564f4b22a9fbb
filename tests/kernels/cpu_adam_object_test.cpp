// CpuAdam, the optimizer object: step counter, argument checks (each names the problem and
// changes nothing), thread options and ISA selection.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/adam.h"
#include "kernels/reference/adam_ref.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

struct Buffers {
  explicit Buffers(size_t n) : p(n, 0.5f), m(n, 0.0f), v(n, 0.0f), g(n, 0.25f), out(n, 0) {}
  AdamTensor tensor() {
    return AdamTensor{p.data(), m.data(), v.data(), g.data(), DType::kF32, out.data(), DType::kBF16, p.size()};
  }
  std::vector<float> p, m, v, g;
  std::vector<uint16_t> out;
};

std::unique_ptr<CpuAdam> make(AdamMode mode = AdamMode::kAdamW) {
  auto r = CpuAdam::create(CpuAdamOptions{mode, true, 2, best_isa()});
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return std::move(r).value();
}

// Expects INVALID_ARGUMENT whose message contains `needle`, with buffers and counter untouched.
void expect_rejected(CpuAdam& opt, const AdamHyper& h, std::vector<AdamTensor> ts, const std::string& needle,
                     const Buffers& before, const Buffers& after) {
  const int64_t steps = opt.step_count();
  Status s = opt.step(h, ts);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos) << "message '" << s.message() << "' lacks '" << needle << "'";
  EXPECT_EQ(opt.step_count(), steps) << "a rejected step moved the counter";
  EXPECT_EQ(before.p, after.p);
  EXPECT_EQ(before.m, after.m);
  EXPECT_EQ(before.v, after.v);
  EXPECT_EQ(before.out, after.out);
}

TEST(CpuAdamObject, StepCounterDrivesBiasCorrection) {
  auto opt = make(AdamMode::kAdam);
  Buffers b(33);
  std::vector<double> rp(33, 0.5), rm(33, 0.0), rv(33, 0.0);
  AdamHyper h;
  h.weight_decay = 0.0f;
  AdamTensor t = b.tensor();
  for (int s = 1; s <= 4; ++s) {
    ASSERT_TRUE(opt->step(h, std::span<const AdamTensor>(&t, 1)).is_ok());
    EXPECT_EQ(opt->step_count(), s);
    reference::adam_step_ref(AdamMode::kAdam, true, s, {h.lr, h.beta1, h.beta2, h.eps, 0.0, 1.0}, rp.data(), rm.data(),
                             rv.data(), b.g.data(), DType::kF32, 33);
  }
  for (size_t i = 0; i < 33; ++i)
    EXPECT_TRUE(strata::testing::close(b.p[i], rp[i], 1e-7, 1e-6)) << b.p[i] << " " << rp[i];
  // Resume: the counter can be set, and the next step uses t = 11.
  ASSERT_TRUE(opt->set_step_count(10).is_ok());
  ASSERT_TRUE(opt->step(h, std::span<const AdamTensor>(&t, 1)).is_ok());
  EXPECT_EQ(opt->step_count(), 11);
  EXPECT_EQ(opt->set_step_count(-1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(opt->step_count(), 11);
}

TEST(CpuAdamObject, RejectsBadHyperParameters) {
  auto opt = make();
  Buffers b(8), same(8);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Bad {
    float AdamHyper::*field;
    float value;
    const char* name;
  };
  const Bad bads[] = {{&AdamHyper::lr, -1e-3f, "lr"},
                      {&AdamHyper::lr, nan, "lr"},
                      {&AdamHyper::lr, inf, "lr"},
                      {&AdamHyper::beta1, 1.0f, "beta1"},
                      {&AdamHyper::beta1, -0.1f, "beta1"},
                      {&AdamHyper::beta1, nan, "beta1"},
                      {&AdamHyper::beta2, 1.5f, "beta2"},
                      {&AdamHyper::beta2, nan, "beta2"},
                      {&AdamHyper::eps, 0.0f, "eps"},
                      {&AdamHyper::eps, nan, "eps"},
                      {&AdamHyper::weight_decay, -1.0f, "weight_decay"},
                      {&AdamHyper::weight_decay, nan, "weight_decay"},
                      {&AdamHyper::grad_scale, 0.0f, "grad_scale"},
                      {&AdamHyper::grad_scale, inf, "grad_scale"},
                      {&AdamHyper::grad_scale, nan, "grad_scale"}};
  for (const Bad& bad : bads) {
    AdamHyper h;
    h.*bad.field = bad.value;
    SCOPED_TRACE(bad.name);
    expect_rejected(*opt, h, {b.tensor()}, std::string(bad.name) + " = ", same, b);
  }
}

TEST(CpuAdamObject, RejectsBadTensors) {
  auto opt = make();
  Buffers b(64), same(64);
  AdamHyper h;
  {
    AdamTensor t = b.tensor();
    t.params = nullptr;
    expect_rejected(*opt, h, {t}, "tensor 0: params is NULL", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.grads = nullptr;
    expect_rejected(*opt, h, {t}, "tensor 0: grads is NULL", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.count = 0;
    expect_rejected(*opt, h, {t}, "count is 0", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.exp_avg = t.params + 3;  // overlaps params
    expect_rejected(*opt, h, {t}, "overlap", same, b);
  }
  {
    AdamTensor t = b.tensor();
    AdamTensor u = b.tensor();
    u.params = b.p.data() + 32;  // a second tensor reusing the first one's memory
    u.exp_avg = b.m.data() + 63;
    u.count = 1;
    expect_rejected(*opt, h, {t, u}, "overlap", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.exp_avg_sq = reinterpret_cast<float*>(reinterpret_cast<char*>(b.v.data()) + 1);
    t.count = 8;
    expect_rejected(*opt, h, {t}, "exp_avg_sq is not aligned", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.grad_dtype = static_cast<DType>(7);
    expect_rejected(*opt, h, {t}, "invalid grad dtype 7", same, b);
  }
  {
    AdamTensor t = b.tensor();
    t.out_dtype = DType::kF32;
    expect_rejected(*opt, h, {t}, "params_out dtype must be bf16 or fp16", same, b);
  }
  expect_rejected(*opt, h, {}, "no tensors", same, b);
}

TEST(CpuAdamObject, CreateChecksOptions) {
  auto r = CpuAdam::create(CpuAdamOptions{AdamMode::kAdamW, true, -2, Isa::kScalar});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("num_threads = -2"), std::string::npos);
  r = CpuAdam::create(CpuAdamOptions{static_cast<AdamMode>(3), true, 1, Isa::kScalar});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("mode"), std::string::npos);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    r = CpuAdam::create(CpuAdamOptions{AdamMode::kAdamW, true, 1, isa});
    EXPECT_EQ(r.is_ok(), isa_supported(isa)) << isa_name(isa);
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
      EXPECT_NE(r.status().message().find(std::string(isa_name(isa))), std::string::npos);
    }
  }
  // All threads by default.
  r = CpuAdam::create(CpuAdamOptions{});
  ASSERT_TRUE(r.is_ok());
  EXPECT_GE(r.value()->num_threads(), 1);
}

TEST(CpuAdamObject, ParseIsaNamesTheChoices) {
  EXPECT_EQ(parse_isa("avx2").value(), Isa::kAvx2);
  EXPECT_EQ(parse_isa("best").value(), best_isa());
  auto r = parse_isa("sse9");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("scalar, avx2, avx512"), std::string::npos);
}

}  // namespace
}  // namespace strata::kernels
