// The CUDA gradient kernels against their CPU twins and the reference: casts bit for bit,
// accumulate, unscale with its inf / NaN flag, and the multi-tensor sum of squares (close to the
// double reference, identical across runs). Runs on a GPU machine; skips elsewhere.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cuda/cuda_runtime.h"
#include "kernels/cuda/grad_kernels.h"
#include "kernels/reference/adam_ref.h"
#include "kernels/reference/half.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using strata::testing::encode;
using strata::testing::Rng;

bool have_gpu() {
  auto n = cuda::device_count();
  return n.is_ok() && n.value() > 0;
}

template <class T>
T* dev_copy(const T* h, size_t n) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(T) + 16), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <class T>
std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(CudaGradKernels, CastsAccumulateUnscaleAndNorm) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const size_t n = (size_t{1} << 20) + 333;
  Rng rng(5);
  std::vector<float> x(n);
  for (auto& v : x) v = rng.uniform(-70000.0f, 70000.0f) * (rng.uniform(0, 1) < 0.5f ? 1e-6f : 1.0f);
  float* dx = dev_copy(x.data(), n);
  for (DType d : {DType::kBF16, DType::kF16}) {
    uint16_t* dout = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), n * 2), cudaSuccess);
    ASSERT_TRUE(cuda::cast_from_fp32(dx, n, d, dout, nullptr).is_ok());
    const std::vector<uint16_t> got = host_copy(dout, n);
    for (size_t i = 0; i < n; ++i) {
      const uint16_t want = d == DType::kBF16 ? reference::float_to_bf16(x[i]) : reference::float_to_fp16(x[i]);
      ASSERT_EQ(got[i], want) << dtype_name(d) << " " << i << " " << x[i];
    }
    // Accumulate the bit16 values (scaled) into fp32 and compare with the double reference.
    std::vector<float> acc(n, 1.0f);
    float* dacc = dev_copy(acc.data(), n);
    ASSERT_TRUE(cuda::accumulate(dacc, TensorView{dout, d, n}, 0.25f, nullptr).is_ok());
    const std::vector<float> acc_back = host_copy(dacc, n);
    for (size_t i = 0; i < n; ++i) {
      const double want = 1.0 + reference::load_as_double(got.data(), d, i) * 0.25;
      if (std::isinf(want)) {  // fp16 overflowed (|x| > 65504): the infinity carries through
        ASSERT_EQ(static_cast<double>(acc_back[i]), want) << i;
      } else {
        ASSERT_TRUE(strata::testing::close(acc_back[i], want, 1e-30, std::ldexp(1.0, -23)))
            << dtype_name(d) << " " << i;
      }
    }
    cudaFree(dacc);
    cudaFree(dout);
  }
  // Unscale: the flag is raised by an inf, not by finite values.
  int* flag = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&flag), sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemset(flag, 0, sizeof(int)), cudaSuccess);
  ASSERT_TRUE(cuda::unscale_check(dx, n, 0.5f, flag, nullptr).is_ok());
  EXPECT_EQ(host_copy(flag, 1)[0], 0);
  const std::vector<float> halved = host_copy(dx, n);
  for (size_t i = 0; i < n; i += 997) ASSERT_EQ(halved[i], x[i] * 0.5f);
  const float inf = std::numeric_limits<float>::infinity();
  ASSERT_EQ(cudaMemcpy(dx + n / 2, &inf, 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(cuda::unscale_check(dx, n, 1.0f, flag, nullptr).is_ok());
  EXPECT_EQ(host_copy(flag, 1)[0], 1);
  cudaFree(flag);
  cudaFree(dx);

  // Sum of squares over three tensors of different dtypes.
  std::vector<std::vector<unsigned char>> host;
  std::vector<TensorView> views, dviews;
  const DType dts[] = {DType::kF32, DType::kBF16, DType::kF16};
  for (int t = 0; t < 3; ++t) {
    std::vector<float> v(200000 + 77 * t);
    for (auto& e : v) e = rng.uniform(-3, 3);
    host.push_back(encode(v, dts[t]));
  }
  double want = 0;
  for (int t = 0; t < 3; ++t) {
    const size_t cnt = host[t].size() / dtype_size(dts[t]);
    want += reference::sumsq_ref(host[t].data(), dts[t], cnt);
    dviews.push_back(TensorView{dev_copy(host[t].data(), host[t].size()), dts[t], cnt});
  }
  double* ws = nullptr;
  double* out = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ws), cuda::sumsq_workspace_doubles(dviews) * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&out), 8), cudaSuccess);
  ASSERT_TRUE(cuda::multi_tensor_sumsq(dviews, ws, out, nullptr).is_ok());
  const double first = host_copy(out, 1)[0];
  EXPECT_TRUE(strata::testing::close(first, want, 0, 1e-12)) << first << " vs " << want;
  ASSERT_TRUE(cuda::multi_tensor_sumsq(dviews, ws, out, nullptr).is_ok());
  EXPECT_EQ(host_copy(out, 1)[0], first) << "the sum must be the same every run";
  for (auto& v : dviews) cudaFree(const_cast<void*>(v.data));
  cudaFree(ws);
  cudaFree(out);
}

}  // namespace
}  // namespace strata::kernels
