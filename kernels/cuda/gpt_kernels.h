// The GPT layers' CUDA kernels apart from the matmuls (which go through cuBLAS, see
// src/train/gpt_cuda.cpp): the device twins of kernels/cpu/gpt_ops.h, same shapes and
// conventions (N = B * T rows, row-major, qkv rows laid out [3][NH][hs]). Activations are fp32;
// the inputs of matmuls are written as bf16 (`uint16_t` holds bf16 bits here), and the params
// arrive as bf16. Every reduction runs in a fixed order, so results do not change between runs.
// All pointers are device pointers; every call is asynchronous on `stream` and returns the
// launch error, if any.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "src/common/status.h"

namespace strata::kernels::gpt_cuda {

// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :].
Status encoder_forward(float* out, const int32_t* tokens, const uint16_t* wte, const uint16_t* wpe, int B, int T, int C,
                       cudaStream_t stream);
// dwte[v, :] += sum of dout over the positions holding token v, listed as
// positions[offsets[v] .. offsets[v + 1]) (ascending); dwpe[t, :] += sum over b of dout[b, t, :].
Status encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* offsets, const int32_t* positions,
                        int B, int T, int C, int V, cudaStream_t stream);

// out = (x - mean) * rstd * w + b, written as bf16; mean, rstd [N] kept for backward.
Status layernorm_forward(uint16_t* out, float* mean, float* rstd, const float* x, const uint16_t* w, const uint16_t* b,
                         int N, int C, cudaStream_t stream);
// dx += d(input) (accumulates: the residual's gradient is already there); dout_xhat[N, C] receives
// dout * xhat, whose column sums are dw (db is the column sums of dout).
Status layernorm_backward(float* dx, float* dout_xhat, const float* dout, const float* x, const uint16_t* w,
                          const float* mean, const float* rstd, int N, int C, cudaStream_t stream);

// out[n, :] += bias (bf16), n < N.
Status add_bias(float* out, const uint16_t* bias, int N, int OC, cudaStream_t stream);

// qkv [B, T, 3C] -> q, k, v [B, NH, T, hs].
Status attention_permute(float* q, float* k, float* v, const float* qkv, int B, int T, int C, int NH,
                         cudaStream_t stream);
// att = causal softmax(scale * preatt) per row of [B * NH * T, T]; zeros above the diagonal.
Status attention_softmax(float* att, const float* preatt, float scale, int rows, int T, cudaStream_t stream);
// y [B, NH, T, hs] -> out [B, T, C] as bf16.
Status attention_unpermute(uint16_t* out, const float* y, int B, int T, int C, int NH, cudaStream_t stream);
// dout [B, T, C] -> dy [B, NH, T, hs] (the transpose of attention_unpermute).
Status attention_unpermute_backward(float* dy, const float* dout, int B, int T, int C, int NH, cudaStream_t stream);
// dpreatt = scale * att * (datt - rowsum(att * datt)) on and below the diagonal, 0 above.
Status attention_softmax_backward(float* dpreatt, const float* datt, const float* att, float scale, int rows, int T,
                                  cudaStream_t stream);
// dq, dk, dv [B, NH, T, hs] -> dqkv [B, T, 3C].
Status attention_permute_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B, int T, int C,
                                  int NH, cudaStream_t stream);

// GPT-2's tanh GELU: out (bf16) = gelu(x); dx = dout * gelu'(x).
Status gelu_forward(uint16_t* out, const float* x, size_t n, cudaStream_t stream);
Status gelu_backward(float* dx, const float* dout, const float* x, size_t n, cudaStream_t stream);

// out = a + b.
Status residual_forward(float* out, const float* a, const float* b, size_t n, cudaStream_t stream);

// Per row: probs = softmax(logits), losses[n] = -log(probs[n, targets[n]]).
Status crossentropy_forward(float* probs, float* losses, const float* logits, const int32_t* targets, int N, int V,
                            cudaStream_t stream);
// dlogits = (probs - onehot(targets)) * dloss / N (the mean's gradient, as on the CPU path).
Status crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss, int N, int V,
                             cudaStream_t stream);

// dst = bf16(src), round to nearest even.
Status to_bf16(uint16_t* dst, const float* src, size_t n, cudaStream_t stream);

}  // namespace strata::kernels::gpt_cuda
