// The GPT layers' CPU compute path (fp32 activations and weights): matmuls through oneDNN, the
// rest as oneTBB-parallel loops the compiler vectorises. Same shapes and conventions as
// kernels/reference/gpt_ref.h (which the tests compare against): N = B * T rows, row-major,
// backward adds into parameter gradients and overwrites input gradients.
#pragma once

#include <cstddef>
#include <cstdint>

#include "src/common/status.h"

namespace strata::kernels::gpt {

void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C);
// Not parallel over tokens (two positions may share a token row); parallel over channels.
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C);

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                       int C);
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int C);

// out[N,OC] = x[N,C] @ w[OC,C]^T + bias (bias may be null). Errors: oneDNN's, as kInternal.
Status matmul_forward(float* out, const float* x, const float* w, const float* bias, int N, int C, int OC);
// dx = dout @ w (overwritten); dw += dout^T @ x; dbias += column sums (dbias may be null).
Status matmul_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w, int N,
                       int C, int OC);

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                        int NH);

void gelu_forward(float* out, const float* x, size_t n);
void gelu_backward(float* dx, const float* dout, const float* x, size_t n);

// out = a + b, n elements.
void residual_forward(float* out, const float* a, const float* b, size_t n);

// Mean cross-entropy (accumulated in double); probs[N,V] kept for backward.
double crossentropy_forward(float* probs, const float* logits, const int32_t* targets, int N, int V);
void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss, int N, int V);

}  // namespace strata::kernels::gpt
