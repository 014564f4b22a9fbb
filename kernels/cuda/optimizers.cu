// GPU Lion and Adagrad kernels: one thread per element in a grid-stride loop, fp32 param and
// state, gradients in fp32 / bf16 / fp16, optional bf16 / fp16 copy of the updated params (round to
// nearest even). Operation order as in the CPU kernels.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/optimizers_cuda.h"
#include "src/common/cuda_check.h"

namespace strata::kernels::cuda {
namespace {

enum class Out : int { kNone, kBF16, kF16 };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <Out O>
__device__ __forceinline__ void store_out(void* out, size_t i, float p) {
  if constexpr (O == Out::kBF16) static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(p);
  if constexpr (O == Out::kF16) static_cast<__half*>(out)[i] = __float2half_rn(p);
}

__device__ __forceinline__ float sign_of(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }

template <class G, Out O>
__global__ void lion_kernel(LionCoeffs c, float* __restrict__ p, float* __restrict__ m, const G* __restrict__ g,
                            void* __restrict__ out, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float gv = to_f32(g[i]) * c.grad_scale;
    const float mv = m[i];
    const float dir = sign_of(fmaf(c.beta1, mv, c.one_minus_beta1 * gv));
    const float pv = fmaf(-c.lr, dir, p[i] * c.decay);
    p[i] = pv;
    m[i] = fmaf(c.beta2, mv, c.one_minus_beta2 * gv);
    store_out<O>(out, i, pv);
  }
}

template <class G, Out O>
__global__ void adagrad_kernel(AdagradCoeffs c, float* __restrict__ p, float* __restrict__ s, const G* __restrict__ g,
                               void* __restrict__ out, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float pv = p[i];
    const float gv = fmaf(c.weight_decay, pv, to_f32(g[i]) * c.grad_scale);
    const float sv = fmaf(gv, gv, s[i]);
    pv = fmaf(-c.lr, gv / (sqrtf(sv) + c.eps), pv);
    p[i] = pv;
    s[i] = sv;
    store_out<O>(out, i, pv);
  }
}

unsigned blocks_for(size_t n) { return static_cast<unsigned>(std::min<size_t>((n + 255) / 256, size_t{1} << 16)); }

template <class C, class G, Out O>
void launch(const C& c, const OptTensor& t, cudaStream_t s) {
  const G* g = static_cast<const G*>(t.grads);
  if constexpr (std::is_same_v<C, LionCoeffs>) {
    lion_kernel<G, O><<<blocks_for(t.count), 256, 0, s>>>(c, t.params, t.state, g, t.params_out, t.count);
  } else {
    adagrad_kernel<G, O><<<blocks_for(t.count), 256, 0, s>>>(c, t.params, t.state, g, t.params_out, t.count);
  }
}

template <class C, class G>
void launch_out(const C& c, const OptTensor& t, cudaStream_t s) {
  if (t.params_out == nullptr) {
    launch<C, G, Out::kNone>(c, t, s);
  } else if (t.out_dtype == DType::kBF16) {
    launch<C, G, Out::kBF16>(c, t, s);
  } else {
    launch<C, G, Out::kF16>(c, t, s);
  }
}

template <class C>
Status launch_any(const C& c, const OptTensor& t, cudaStream_t s, const char* who) {
  if (t.count == 0) return Status::ok();
  switch (t.grad_dtype) {
    case DType::kF32:
      launch_out<C, float>(c, t, s);
      break;
    case DType::kBF16:
      launch_out<C, __nv_bfloat16>(c, t, s);
      break;
    case DType::kF16:
      launch_out<C, __half>(c, t, s);
      break;
    default:
      return invalid_argument(std::string(who) + ": invalid grad dtype");
  }
  STRATA_CUDA_CHECK(cudaGetLastError());
  return Status::ok();
}

}  // namespace

Status lion_update(const LionCoeffs& c, const OptTensor& t, cudaStream_t stream) {
  return launch_any(c, t, stream, "GPU Lion");
}

Status adagrad_update(const AdagradCoeffs& c, const OptTensor& t, cudaStream_t stream) {
  return launch_any(c, t, stream, "GPU Adagrad");
}

}  // namespace strata::kernels::cuda
