// The GPT layers' CUDA kernels (see gpt_kernels.h). Row-wise work (LayerNorm, softmax,
// cross-entropy) runs one warp per row and reduces with a butterfly of shuffles, so every lane
// holds the same, order-fixed sum; element-wise work uses grid-stride loops.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/gpt_kernels.h"
#include "src/common/cuda_check.h"

namespace strata::kernels::gpt_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)

unsigned blocks_for(size_t n) {
  return static_cast<unsigned>(std::min<size_t>((n + kThreads - 1) / kThreads, 1u << 20));
}
unsigned row_blocks(size_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

Status launched() {
  STRATA_CUDA_CHECK(cudaGetLastError());
  return Status::ok();
}

__device__ __forceinline__ float bf(uint16_t bits) { return __uint_as_float(static_cast<unsigned>(bits) << 16); }
__device__ __forceinline__ uint16_t to_bf(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < (n); i += size_t{gridDim.x} * blockDim.x)

__global__ void encoder_forward_kernel(float* out, const int32_t* tokens, const uint16_t* wte, const uint16_t* wpe,
                                       int T, int C, size_t n) {
  GRID_STRIDE(i, n) {
    const size_t row = i / C, c = i % C;
    const size_t t = row % T;
    out[i] = bf(wte[static_cast<size_t>(tokens[row]) * C + c]) + bf(wpe[t * C + c]);
  }
}

__global__ void encoder_backward_wte_kernel(float* dwte, const float* dout, const int32_t* offsets,
                                            const int32_t* positions, int C, size_t n) {
  GRID_STRIDE(i, n) {
    const size_t v = i / C, c = i % C;
    float s = 0.0f;
    for (int k = offsets[v]; k < offsets[v + 1]; ++k) s += dout[static_cast<size_t>(positions[k]) * C + c];
    dwte[i] += s;
  }
}

__global__ void encoder_backward_wpe_kernel(float* dwpe, const float* dout, int B, int T, int C, size_t n) {
  GRID_STRIDE(i, n) {  // i over [T, C]
    float s = 0.0f;
    for (int b = 0; b < B; ++b) s += dout[static_cast<size_t>(b) * T * C + i];
    dwpe[i] += s;
  }
}

__global__ void layernorm_forward_kernel(uint16_t* out, float* mean, float* rstd, const float* x, const uint16_t* w,
                                         const uint16_t* b, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + static_cast<size_t>(row) * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) s += xr[c];
  const float m = warp_sum(s) / C;
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
  const float r = rsqrtf(warp_sum(v) / C + 1e-5f);
  uint16_t* o = out + static_cast<size_t>(row) * C;
  for (int c = lane; c < C; c += 32) o[c] = to_bf((xr[c] - m) * r * bf(w[c]) + bf(b[c]));
  if (lane == 0) mean[row] = m, rstd[row] = r;
}

__global__ void layernorm_backward_kernel(float* dx, float* dout_xhat, const float* dout, const float* x,
                                          const uint16_t* w, const float* mean, const float* rstd, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  const float m = mean[row], r = rstd[row];
  float a = 0.0f, bsum = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (x[off + c] - m) * r, dn = dout[off + c] * bf(w[c]);
    a += dn, bsum += dn * xhat;
  }
  const float dn_mean = warp_sum(a) / C, dn_xhat_mean = warp_sum(bsum) / C;
  for (int c = lane; c < C; c += 32) {
    const float xhat = (x[off + c] - m) * r, d = dout[off + c];
    dx[off + c] += (d * bf(w[c]) - dn_mean - xhat * dn_xhat_mean) * r;
    dout_xhat[off + c] = d * xhat;
  }
}

__global__ void add_bias_kernel(float* out, const uint16_t* bias, int OC, size_t n) {
  GRID_STRIDE(i, n) out[i] += bf(bias[i % OC]);
}

// Index helpers: element i of [B, NH, T, hs] and its place in a [B, T, C] (or [B, T, 3C]) row.
struct HeadIndex {
  size_t b, h, t, d;
  __device__ HeadIndex(size_t i, int NH, int T, int hs) {
    d = i % hs, i /= hs;
    t = i % T, i /= T;
    h = i % NH, b = i / NH;
  }
};

__global__ void attention_permute_kernel(float* q, float* k, float* v, const float* qkv, int T, int C, int NH,
                                         size_t n) {
  const int hs = C / NH;
  GRID_STRIDE(i, n) {
    const HeadIndex x(i, NH, T, hs);
    const size_t base = (x.b * T + x.t) * 3 * C + x.h * hs + x.d;
    q[i] = qkv[base], k[i] = qkv[base + C], v[i] = qkv[base + 2 * static_cast<size_t>(C)];
  }
}

__global__ void attention_permute_backward_kernel(float* dqkv, const float* dq, const float* dk, const float* dv, int T,
                                                  int C, int NH, size_t n) {
  const int hs = C / NH;
  GRID_STRIDE(i, n) {
    const HeadIndex x(i, NH, T, hs);
    const size_t base = (x.b * T + x.t) * 3 * C + x.h * hs + x.d;
    dqkv[base] = dq[i], dqkv[base + C] = dk[i], dqkv[base + 2 * static_cast<size_t>(C)] = dv[i];
  }
}

__global__ void attention_unpermute_kernel(uint16_t* out, const float* y, int T, int C, int NH, size_t n) {
  const int hs = C / NH;
  GRID_STRIDE(i, n) {
    const HeadIndex x(i, NH, T, hs);
    out[(x.b * T + x.t) * C + x.h * hs + x.d] = to_bf(y[i]);
  }
}

__global__ void attention_unpermute_backward_kernel(float* dy, const float* dout, int T, int C, int NH, size_t n) {
  const int hs = C / NH;
  GRID_STRIDE(i, n) {
    const HeadIndex x(i, NH, T, hs);
    dy[i] = dout[(x.b * T + x.t) * C + x.h * hs + x.d];
  }
}

__global__ void attention_softmax_kernel(float* att, const float* preatt, float scale, int rows, int T) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = row % T;
  const float* p = preatt + static_cast<size_t>(row) * T;
  float* a = att + static_cast<size_t>(row) * T;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, p[j] * scale);
  mx = warp_max(mx);
  float s = 0.0f;
  for (int j = lane; j <= t; j += 32) s += __expf(p[j] * scale - mx);
  const float inv = 1.0f / warp_sum(s);
  for (int j = lane; j < T; j += 32) a[j] = j <= t ? __expf(p[j] * scale - mx) * inv : 0.0f;
}

__global__ void attention_softmax_backward_kernel(float* dpreatt, const float* datt, const float* att, float scale,
                                                  int rows, int T) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = row % T;
  const size_t off = static_cast<size_t>(row) * T;
  float s = 0.0f;
  for (int j = lane; j <= t; j += 32) s += att[off + j] * datt[off + j];
  s = warp_sum(s);
  for (int j = lane; j < T; j += 32) dpreatt[off + j] = j <= t ? scale * att[off + j] * (datt[off + j] - s) : 0.0f;
}

__device__ __forceinline__ float gelu_sigmoid(float v) {  // sigmoid(2u): 0.5 (1 + tanh u)
  return 1.0f / (1.0f + __expf(-2.0f * kGeluC * (v + 0.044715f * v * v * v)));
}

__global__ void gelu_forward_kernel(uint16_t* out, const float* x, size_t n) {
  GRID_STRIDE(i, n) out[i] = to_bf(x[i] * gelu_sigmoid(x[i]));
}

__global__ void gelu_backward_kernel(float* dx, const float* dout, const float* x, size_t n) {
  GRID_STRIDE(i, n) {
    const float v = x[i], sg = gelu_sigmoid(v);
    const float du = kGeluC * (1.0f + 3.0f * 0.044715f * v * v);
    dx[i] = dout[i] * (sg + v * sg * (1.0f - sg) * 2.0f * du);
  }
}

__global__ void residual_kernel(float* out, const float* a, const float* b, size_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void to_bf16_kernel(uint16_t* dst, const float* src, size_t n) { GRID_STRIDE(i, n) dst[i] = to_bf(src[i]); }

__global__ void crossentropy_forward_kernel(float* probs, float* losses, const float* logits, const int32_t* targets,
                                            int N, int V) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* l = logits + static_cast<size_t>(row) * V;
  float* p = probs + static_cast<size_t>(row) * V;
  float mx = -INFINITY;
  for (int v = lane; v < V; v += 32) mx = fmaxf(mx, l[v]);
  mx = warp_max(mx);
  float s = 0.0f;
  for (int v = lane; v < V; v += 32) s += expf(l[v] - mx);
  s = warp_sum(s);
  const float inv = 1.0f / s;
  for (int v = lane; v < V; v += 32) p[v] = expf(l[v] - mx) * inv;
  if (lane == 0) losses[row] = logf(s) - (l[targets[row]] - mx);
}

__global__ void crossentropy_backward_kernel(float* dlogits, const float* probs, const int32_t* targets, float dloss,
                                             int V, size_t n) {
  GRID_STRIDE(i, n) {
    const size_t row = i / V;
    const int v = static_cast<int>(i % V);
    dlogits[i] = (probs[i] - (v == targets[row] ? 1.0f : 0.0f)) * dloss;
  }
}

}  // namespace

Status encoder_forward(float* out, const int32_t* tokens, const uint16_t* wte, const uint16_t* wpe, int B, int T, int C,
                       cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  encoder_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, tokens, wte, wpe, T, C, n);
  return launched();
}

Status encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* offsets, const int32_t* positions,
                        int B, int T, int C, int V, cudaStream_t stream) {
  const size_t nv = static_cast<size_t>(V) * C, nt = static_cast<size_t>(T) * C;
  encoder_backward_wte_kernel<<<blocks_for(nv), kThreads, 0, stream>>>(dwte, dout, offsets, positions, C, nv);
  encoder_backward_wpe_kernel<<<blocks_for(nt), kThreads, 0, stream>>>(dwpe, dout, B, T, C, nt);
  return launched();
}

Status layernorm_forward(uint16_t* out, float* mean, float* rstd, const float* x, const uint16_t* w, const uint16_t* b,
                         int N, int C, cudaStream_t stream) {
  layernorm_forward_kernel<<<row_blocks(N), kThreads, 0, stream>>>(out, mean, rstd, x, w, b, N, C);
  return launched();
}

Status layernorm_backward(float* dx, float* dout_xhat, const float* dout, const float* x, const uint16_t* w,
                          const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  layernorm_backward_kernel<<<row_blocks(N), kThreads, 0, stream>>>(dx, dout_xhat, dout, x, w, mean, rstd, N, C);
  return launched();
}

Status add_bias(float* out, const uint16_t* bias, int N, int OC, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(N) * OC;
  add_bias_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, bias, OC, n);
  return launched();
}

Status attention_permute(float* q, float* k, float* v, const float* qkv, int B, int T, int C, int NH,
                         cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  attention_permute_kernel<<<blocks_for(n), kThreads, 0, stream>>>(q, k, v, qkv, T, C, NH, n);
  return launched();
}

Status attention_softmax(float* att, const float* preatt, float scale, int rows, int T, cudaStream_t stream) {
  attention_softmax_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(att, preatt, scale, rows, T);
  return launched();
}

Status attention_unpermute(uint16_t* out, const float* y, int B, int T, int C, int NH, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  attention_unpermute_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, y, T, C, NH, n);
  return launched();
}

Status attention_unpermute_backward(float* dy, const float* dout, int B, int T, int C, int NH, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  attention_unpermute_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dy, dout, T, C, NH, n);
  return launched();
}

Status attention_softmax_backward(float* dpreatt, const float* datt, const float* att, float scale, int rows, int T,
                                  cudaStream_t stream) {
  attention_softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(dpreatt, datt, att, scale, rows, T);
  return launched();
}

Status attention_permute_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B, int T, int C,
                                  int NH, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(B) * T * C;
  attention_permute_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dqkv, dq, dk, dv, T, C, NH, n);
  return launched();
}

Status gelu_forward(uint16_t* out, const float* x, size_t n, cudaStream_t stream) {
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, x, n);
  return launched();
}

Status gelu_backward(float* dx, const float* dout, const float* x, size_t n, cudaStream_t stream) {
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dx, dout, x, n);
  return launched();
}

Status residual_forward(float* out, const float* a, const float* b, size_t n, cudaStream_t stream) {
  residual_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, a, b, n);
  return launched();
}

Status crossentropy_forward(float* probs, float* losses, const float* logits, const int32_t* targets, int N, int V,
                            cudaStream_t stream) {
  crossentropy_forward_kernel<<<row_blocks(N), kThreads, 0, stream>>>(probs, losses, logits, targets, N, V);
  return launched();
}

Status crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss, int N, int V,
                             cudaStream_t stream) {
  const size_t n = static_cast<size_t>(N) * V;
  crossentropy_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dlogits, probs, targets,
                                                                       dloss / static_cast<float>(N), V, n);
  return launched();
}

Status to_bf16(uint16_t* dst, const float* src, size_t n, cudaStream_t stream) {
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  return launched();
}

}  // namespace strata::kernels::gpt_cuda
