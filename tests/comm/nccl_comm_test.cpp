// The NCCL backend on one GPU (world size 1; skipped without a GPU, and without NCCL in the build
// it must say so): each collective on device buffers against its closed form, the 128-byte id
// bootstrap, bad ranks refused. What one GPU cannot show (peers, timeouts across ranks) is
// covered by the MPI backend's tests and described in docs/comm.md.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace strata::comm {
namespace {

bool have_gpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  (void)cudaGetLastError();
  return ok;
}

TEST(NcclComm, OneRankCollectivesOnDeviceBuffers) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto id = nccl_unique_id();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  auto c = create_nccl(id.value(), 0, 1, 0);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c.value()->backend(), "nccl");
  EXPECT_EQ(c.value()->size(), 1);
  const size_t n = 1 << 20;
  std::vector<float> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(i % 1000) * 0.5f;
  float *a = nullptr, *b = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&a), n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&b), n * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a, h.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  std::vector<float> back(n);
  auto check = [&](const float* dev, const char* what) {
    ASSERT_EQ(cudaMemcpy(back.data(), dev, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(back, h) << what;
  };
  ASSERT_TRUE(c.value()->all_reduce_sync(a, b, n, Elem::kF32, ReduceOp::kSum, s).is_ok());
  check(b, "all_reduce");
  ASSERT_TRUE(c.value()->reduce_scatter(a, b, n, Elem::kF32, ReduceOp::kSum, s).value()->wait().is_ok());
  check(b, "reduce_scatter");
  ASSERT_TRUE(c.value()->all_gather(a, b, n, Elem::kF32, s).value()->wait().is_ok());
  check(b, "all_gather");
  ASSERT_TRUE(c.value()->broadcast_sync(a, n, Elem::kF32, 0, s).is_ok());
  check(a, "broadcast");
  EXPECT_TRUE(c.value()->barrier().is_ok());
  EXPECT_FALSE(c.value()->broadcast(a, n, Elem::kF32, 1, s).is_ok()) << "root 1 of a world of 1";
  cudaStreamDestroy(s);
  cudaFree(a);
  cudaFree(b);
}

// Host buffers (the engine's control values and checkpoint gathers) are staged through the device
// and have completed when the call returns; in-place use and a host / device mix work too.
TEST(NcclComm, OneRankCollectivesOnHostBuffers) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto id = nccl_unique_id();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  auto c = create_nccl(id.value(), 0, 1, 0);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  const size_t n = 4096;
  std::vector<float> h(n), out(n, -1.0f);
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(i) * 0.25f;
  ASSERT_TRUE(c.value()->all_reduce_sync(h.data(), out.data(), n, Elem::kF32, ReduceOp::kSum).is_ok());
  EXPECT_EQ(out, h) << "all_reduce, host to host";
  std::vector<float> inplace(h);
  ASSERT_TRUE(c.value()->all_reduce_sync(inplace.data(), inplace.data(), n, Elem::kF32, ReduceOp::kMax).is_ok());
  EXPECT_EQ(inplace, h) << "all_reduce in place";
  std::fill(out.begin(), out.end(), -1.0f);
  ASSERT_TRUE(c.value()->all_gather_sync(h.data(), out.data(), n, Elem::kF32).is_ok());
  EXPECT_EQ(out, h) << "all_gather";
  int32_t code = 7;
  ASSERT_TRUE(c.value()->broadcast_sync(&code, 1, Elem::kI32, 0).is_ok());
  EXPECT_EQ(code, 7);
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), n * 4), cudaSuccess);
  ASSERT_TRUE(c.value()->all_reduce_sync(h.data(), d, n, Elem::kF32, ReduceOp::kSum).is_ok());
  std::fill(out.begin(), out.end(), -1.0f);
  ASSERT_EQ(cudaMemcpy(out.data(), d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(out, h) << "host to device";
  cudaFree(d);
}

TEST(NcclComm, BadRanksAreRefusedAndNoGpuIsNamed) {
  NcclId id{};
  auto bad = create_nccl(id, 2, 2, 0);
  ASSERT_FALSE(bad.is_ok());
  if (have_gpu()) {
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().to_string();
  } else {
    auto none = create_nccl(id, 0, 1, 0);
    ASSERT_FALSE(none.is_ok());
    EXPECT_EQ(none.status().code(), StatusCode::kUnsupported) << none.status().to_string();
  }
}

}  // namespace
}  // namespace strata::comm
