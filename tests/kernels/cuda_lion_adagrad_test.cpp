// GPU Lion and Adagrad against the double reference (on a machine with a GPU; skips elsewhere).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/adagrad.h"
#include "kernels/cpu/lion.h"
#include "kernels/cuda/cuda_runtime.h"
#include "kernels/cuda/optimizers_cuda.h"
#include "kernels/reference/optimizers_ref.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::close;
using strata::testing::encode;
using strata::testing::Rng;

int gpus() {
  auto n = cuda::device_count();
  return n.is_ok() ? n.value() : 0;
}

class CudaLionAdagrad : public ::testing::TestWithParam<std::tuple<bool, DType, int>> {};

TEST_P(CudaLionAdagrad, TenStepsMatchReference) {
  if (gpus() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [lion, g, out] = GetParam();
  const size_t n = (size_t{1} << 20) + 77;
  Rng rng(5);
  std::vector<float> p(n), s(n, 0.0f);
  for (auto& x : p) x = rng.uniform(-1, 1);
  std::vector<double> rp(p.begin(), p.end()), rs(n, 0.0);
  std::vector<int> ties(n, 0);
  float *dp = nullptr, *ds = nullptr;
  void* dg = nullptr;
  uint16_t* dout = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dp), n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ds), n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dg, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), n * 2), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dp, p.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(ds, 0, n * 4), cudaSuccess);
  const DType od = out < 0 ? DType::kBF16 : static_cast<DType>(out);
  const float lr = lion ? 1e-4f : 1e-2f;
  for (int step = 1; step <= 10; ++step) {
    std::vector<float> gv(n);
    for (auto& x : gv) x = rng.uniform(-1, 1);
    const auto enc = encode(gv, g);
    ASSERT_EQ(cudaMemcpy(dg, enc.data(), enc.size(), cudaMemcpyHostToDevice), cudaSuccess);
    const OptTensor t{dp, ds, dg, g, out < 0 ? nullptr : dout, od, n};
    if (lion) {
      const LionHyper h{lr, 0.9f, 0.99f, 0.1f, 0.5f};
      ASSERT_TRUE(cuda::lion_update(make_lion_coeffs(h), t, nullptr).is_ok());
      std::unique_ptr<bool[]> tied(new bool[n]());
      reference::lion_step_ref({h.lr, h.beta1, h.beta2, h.weight_decay, h.grad_scale}, rp.data(), rs.data(), enc.data(),
                               g, n, 1e-6, tied.get());
      for (size_t i = 0; i < n; ++i) ties[i] += tied[i];
    } else {
      const AdagradHyper h{lr, 1e-10f, 0.01f, 0.5f};
      ASSERT_TRUE(cuda::adagrad_update(make_adagrad_coeffs(h), t, nullptr).is_ok());
      reference::adagrad_step_ref({h.lr, h.eps, h.weight_decay, h.grad_scale}, rp.data(), rs.data(), enc.data(), g, n);
    }
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> bit16(n);
  ASSERT_EQ(cudaMemcpy(p.data(), dp, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(s.data(), ds, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(bit16.data(), dout, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < n; ++i) {
    const double slack = 2.0 * lr * ties[i] * 1.01;
    ASSERT_TRUE(close(p[i], rp[i], 2e-6 + slack, 1e-5) && close(s[i], rs[i], 1e-7, 1e-5))
        << i << ": p " << p[i] << " vs " << rp[i] << ", state " << s[i] << " vs " << rs[i];
    if (out >= 0) {
      const uint16_t want = od == DType::kBF16 ? reference::float_to_bf16(p[i]) : reference::float_to_fp16(p[i]);
      ASSERT_EQ(bit16[i], want) << i;
    }
  }
  for (void* d : {static_cast<void*>(dp), static_cast<void*>(ds), dg, static_cast<void*>(dout)}) cudaFree(d);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, CudaLionAdagrad,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(-1, 1, 2)),
                         [](const auto& p) {
                           std::string s = std::get<0>(p.param) ? "lion_g" : "adagrad_g";
                           s += dtype_name(std::get<1>(p.param));
                           const int out = std::get<2>(p.param);
                           s += "_out";
                           s += out < 0 ? std::string_view("none") : dtype_name(static_cast<DType>(out));
                           return s;
                         });

}  // namespace
}  // namespace strata::kernels
