// CUDA kernels for gradients and casts, each the device twin of a CPU kernel in kernels/cpu
// (casts.h, grad_norm.h) that HostDevice uses: fp32 <-> bf16 / fp16 casts, unscale with an
// inf / NaN flag, gradient accumulation, and a deterministic multi-tensor sum of squares.
// All pointers are device pointers; all calls are asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels::cuda {

// dst[i] = round-to-nearest-even(src[i]) in dtype (bf16 / fp16), i < n.
Status cast_from_fp32(const float* src, size_t n, DType dtype, void* dst, cudaStream_t stream);
// dst[i] = float(src[i]) * scale, i < src.count.
Status cast_to_fp32(const TensorView& src, float scale, float* dst, cudaStream_t stream);
// g[i] *= scale in place; *found_nonfinite (device int) is set to 1 if any result is inf / NaN
// (never cleared here: zero it once per step).
Status unscale_check(float* g, size_t n, float scale, int* found_nonfinite, cudaStream_t stream);
// acc[i] += float(grad[i]) * scale, i < grad.count.
Status accumulate(float* acc, const TensorView& grad, float scale, cudaStream_t stream);

// Sum of squares of many tensors in double, deterministic: fixed per-block partial sums, added in
// order by one block. `workspace` must hold sumsq_workspace_doubles(views) doubles; the result is
// written to *out (device double).
size_t sumsq_workspace_doubles(const std::vector<TensorView>& views);
Status multi_tensor_sumsq(const std::vector<TensorView>& views, double* workspace, double* out, cudaStream_t stream);

}  // namespace strata::kernels::cuda
