// Gradient and cast kernels on the GPU (see grad_kernels.h). Grid-stride loops; the sum of
// squares uses fixed-size blocks so its result does not depend on scheduling.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/grad_kernels.h"
#include "src/common/cuda_check.h"

namespace strata::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kSumBlockElems = size_t{1} << 16;  // elements per partial sum

unsigned blocks_for(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, 1u << 16));
}

__device__ __forceinline__ float load_as_float(const void* p, DType d, size_t i) {
  if (d == DType::kF32) return static_cast<const float*>(p)[i];
  if (d == DType::kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return __half2float(static_cast<const __half*>(p)[i]);
}

__global__ void cast_from_fp32_kernel(const float* __restrict__ src, size_t n, DType d, void* __restrict__ dst) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    if (d == DType::kBF16) {
      static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
    } else if (d == DType::kF16) {
      static_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
    } else {
      static_cast<float*>(dst)[i] = src[i];
    }
  }
}

__global__ void cast_to_fp32_kernel(const void* __restrict__ src, DType d, size_t n, float scale,
                                    float* __restrict__ dst) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    dst[i] = load_as_float(src, d, i) * scale;
}

__global__ void unscale_check_kernel(float* g, size_t n, float scale, int* found) {
  bool bad = false;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    const float v = g[i] * scale;
    g[i] = v;
    bad |= !isfinite(v);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found = 1;
}

__global__ void accumulate_kernel(float* __restrict__ acc, const void* __restrict__ g, DType d, size_t n, float scale) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    acc[i] = fmaf(load_as_float(g, d, i), scale, acc[i]);
}

// One block per kSumBlockElems elements of one tensor; writes partial[blockIdx.x].
__global__ void sumsq_partial_kernel(const void* __restrict__ p, DType d, size_t n, double* __restrict__ partial) {
  __shared__ double lane[kThreads];
  const size_t begin = blockIdx.x * kSumBlockElems;
  const size_t end = begin + kSumBlockElems < n ? begin + kSumBlockElems : n;
  double s = 0.0;
  for (size_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double x = load_as_float(p, d, i);
    s = fma(x, x, s);
  }
  lane[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {  // fixed tree: same order every run
    if (threadIdx.x < w) lane[threadIdx.x] += lane[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = lane[0];
}

__global__ void sum_in_order_kernel(const double* partial, size_t n, double* out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += partial[i];
  *out = s;
}

Status launched() {
  STRATA_CUDA_CHECK(cudaGetLastError());
  return Status::ok();
}

}  // namespace

Status cast_from_fp32(const float* src, size_t n, DType dtype, void* dst, cudaStream_t stream) {
  if (n == 0) return Status::ok();
  cast_from_fp32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, n, dtype, dst);
  return launched();
}

Status cast_to_fp32(const TensorView& src, float scale, float* dst, cudaStream_t stream) {
  if (src.count == 0) return Status::ok();
  cast_to_fp32_kernel<<<blocks_for(src.count), kThreads, 0, stream>>>(src.data, src.dtype, src.count, scale, dst);
  return launched();
}

Status unscale_check(float* g, size_t n, float scale, int* found_nonfinite, cudaStream_t stream) {
  if (n == 0) return Status::ok();
  unscale_check_kernel<<<blocks_for(n), kThreads, 0, stream>>>(g, n, scale, found_nonfinite);
  return launched();
}

Status accumulate(float* acc, const TensorView& grad, float scale, cudaStream_t stream) {
  if (grad.count == 0) return Status::ok();
  accumulate_kernel<<<blocks_for(grad.count), kThreads, 0, stream>>>(acc, grad.data, grad.dtype, grad.count, scale);
  return launched();
}

size_t sumsq_workspace_doubles(const std::vector<TensorView>& views) {
  size_t n = 0;
  for (const TensorView& v : views) n += (v.count + kSumBlockElems - 1) / kSumBlockElems;
  return n;
}

Status multi_tensor_sumsq(const std::vector<TensorView>& views, double* workspace, double* out, cudaStream_t stream) {
  size_t at = 0;
  for (const TensorView& v : views) {
    const size_t blocks = (v.count + kSumBlockElems - 1) / kSumBlockElems;
    if (blocks == 0) continue;
    sumsq_partial_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(v.data, v.dtype, v.count,
                                                                                 workspace + at);
    STRATA_RETURN_IF_ERROR(launched());
    at += blocks;
  }
  sum_in_order_kernel<<<1, 1, 0, stream>>>(workspace, at, out);
  return launched();
}

}  // namespace strata::kernels::cuda
