// GPU Adam / AdamW kernel: one thread per element in a grid-stride loop, fp32 state, gradients in
// fp32 / bf16 / fp16, optional bf16 / fp16 copy of the updated params (round to nearest even).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/adam_cuda.h"
#include "src/common/cuda_check.h"

namespace strata::kernels::cuda {
namespace {

enum class Out : int { kNone, kBF16, kF16 };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class G, Out O, AdamMode M>
__global__ void adam_kernel(AdamCoeffs c, float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                            const G* __restrict__ g, void* __restrict__ out, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float gv = to_f32(g[i]) * c.grad_scale;
    float pv = p[i];
    if constexpr (M == AdamMode::kAdam) {
      gv = fmaf(c.weight_decay, pv, gv);
    } else {
      pv *= c.decay;
    }
    const float mv = fmaf(c.beta1, m[i], c.one_minus_beta1 * gv);
    const float vv = fmaf(c.beta2, v[i], c.one_minus_beta2 * gv * gv);
    const float denom = fmaf(sqrtf(vv), c.inv_sqrt_bc2, c.eps);
    pv = fmaf(-c.step_size, mv / denom, pv);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
    if constexpr (O == Out::kBF16) static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(pv);
    if constexpr (O == Out::kF16) static_cast<__half*>(out)[i] = __float2half_rn(pv);
  }
}

template <class G, Out O>
void launch_mode(const AdamCoeffs& c, const AdamTensor& t, cudaStream_t s) {
  constexpr int kThreads = 256;
  const size_t blocks = std::min<size_t>((t.count + kThreads - 1) / kThreads, size_t{1} << 16);
  const G* g = static_cast<const G*>(t.grads);
  if (c.mode == AdamMode::kAdam) {
    adam_kernel<G, O, AdamMode::kAdam><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        c, t.params, t.exp_avg, t.exp_avg_sq, g, t.params_out, t.count);
  } else {
    adam_kernel<G, O, AdamMode::kAdamW><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        c, t.params, t.exp_avg, t.exp_avg_sq, g, t.params_out, t.count);
  }
}

template <class G>
void launch_out(const AdamCoeffs& c, const AdamTensor& t, cudaStream_t s) {
  if (t.params_out == nullptr) {
    launch_mode<G, Out::kNone>(c, t, s);
  } else if (t.out_dtype == DType::kBF16) {
    launch_mode<G, Out::kBF16>(c, t, s);
  } else {
    launch_mode<G, Out::kF16>(c, t, s);
  }
}

}  // namespace

Status adam_update(const AdamCoeffs& c, const AdamTensor& t, cudaStream_t stream) {
  if (t.count == 0) return Status::ok();
  switch (t.grad_dtype) {
    case DType::kF32:
      launch_out<float>(c, t, stream);
      break;
    case DType::kBF16:
      launch_out<__nv_bfloat16>(c, t, stream);
      break;
    case DType::kF16:
      launch_out<__half>(c, t, stream);
      break;
    default:
      return invalid_argument("GPU Adam: invalid grad dtype");
  }
  STRATA_CUDA_CHECK(cudaGetLastError());
  return Status::ok();
}

}  // namespace strata::kernels::cuda
