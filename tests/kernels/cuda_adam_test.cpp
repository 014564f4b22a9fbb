// GPU Adam against the double reference (runs on a machine with a GPU, skips elsewhere), and the
// device probe, which must answer 0 devices rather than fail where there is no driver.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/adam.h"
#include "kernels/cuda/adam_cuda.h"
#include "kernels/cuda/cuda_runtime.h"
#include "kernels/reference/adam_ref.h"
#include "kernels/reference/half.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::close;
using strata::testing::encode;
using strata::testing::Rng;

int gpus() {
  auto n = cuda::device_count();
  EXPECT_TRUE(n.is_ok()) << n.status().to_string();
  return n.is_ok() ? n.value() : 0;
}

TEST(CudaProbe, CountsDevicesWithoutFailing) {
  const int n = gpus();
  EXPECT_GE(n, 0);
  if (n > 0) {
    auto d = cuda::device_description(0);
    ASSERT_TRUE(d.is_ok()) << d.status().to_string();
    EXPECT_FALSE(d.value().empty());
  }
}

template <class T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), h.size() * sizeof(T) + 1), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <class T>
void to_host(std::vector<T>& h, const T* d) {
  ASSERT_EQ(cudaMemcpy(h.data(), d, h.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
}

class CudaAdam : public ::testing::TestWithParam<std::tuple<DType, int, AdamMode>> {};

TEST_P(CudaAdam, TenStepsMatchReference) {
  if (gpus() == 0) GTEST_SKIP() << "no CUDA device";
  const auto [g, out, mode] = GetParam();
  const size_t n = (size_t{1} << 20) + 77;
  Rng rng(3);
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f);
  for (auto& x : p) x = rng.uniform(-1, 1);
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
  float* dp = to_device(p);
  float* dm = to_device(m);
  float* dv = to_device(v);
  void* dg = nullptr;
  uint16_t* dout = nullptr;
  ASSERT_EQ(cudaMalloc(&dg, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), n * 2), cudaSuccess);
  std::vector<uint16_t> bit16(n);
  for (int step = 1; step <= 10; ++step) {
    std::vector<float> gv(n);
    for (auto& x : gv) x = rng.uniform(-1, 1);
    const auto enc = encode(gv, g);
    ASSERT_EQ(cudaMemcpy(dg, enc.data(), enc.size(), cudaMemcpyHostToDevice), cudaSuccess);
    AdamHyper h;
    h.weight_decay = 0.01f;
    h.grad_scale = 0.5f;
    AdamTensor t{dp, dm, dv, dg, g, out < 0 ? nullptr : dout, out < 0 ? DType::kBF16 : static_cast<DType>(out), n};
    ASSERT_TRUE(cuda::adam_update(make_adam_coeffs(mode, true, step, h), t, nullptr).is_ok());
    reference::adam_step_ref(mode, true, step, {h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.grad_scale}, rp.data(),
                             rm.data(), rv.data(), enc.data(), g, n);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  to_host(p, dp);
  to_host(m, dm);
  to_host(v, dv);
  if (out >= 0) to_host(bit16, dout);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(close(p[i], rp[i], 2e-6, 1e-5) && close(m[i], rm[i], 1e-7, 1e-5) && close(v[i], rv[i], 1e-9, 1e-5))
        << i << ": " << p[i] << " vs " << rp[i];
    if (out >= 0) {
      const uint16_t want =
          static_cast<DType>(out) == DType::kBF16 ? reference::float_to_bf16(p[i]) : reference::float_to_fp16(p[i]);
      ASSERT_EQ(bit16[i], want) << i;
    }
  }
  for (void* d : {static_cast<void*>(dp), static_cast<void*>(dm), static_cast<void*>(dv), dg, static_cast<void*>(dout)})
    cudaFree(d);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, CudaAdam,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(-1, 1, 2),
                                            ::testing::Values(AdamMode::kAdam, AdamMode::kAdamW)),
                         [](const auto& p) {
                           std::string s = "g";
                           s += dtype_name(std::get<0>(p.param));
                           s += "_out";
                           const int out = std::get<1>(p.param);
                           s += out < 0 ? std::string_view("none") : dtype_name(static_cast<DType>(out));
                           s += std::get<2>(p.param) == AdamMode::kAdam ? "_adam" : "_adamw";
                           return s;
                         });

}  // namespace
}  // namespace strata::kernels
