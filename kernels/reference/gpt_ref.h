// Reference layers of the GPT-style decoder (token + position embedding, pre-LayerNorm blocks with
// causal multi-head attention and a GELU MLP, residuals, final LayerNorm, tied LM head,
// cross-entropy): plain loops in double, forward and backward, written for clarity. The CPU and
// CUDA compute paths are tested against these; these are tested against finite differences.
// Shapes: N = B * T positions, C channels, NH heads (C % NH == 0), V vocabulary. Row-major.
// Every backward *adds* into the parameter gradients and *overwrites* the input gradient.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata::reference {

// out[B,T,C] = wte[tokens[b,t]] + wpe[t]
void encoder_forward(double* out, const int32_t* tokens, const double* wte, const double* wpe, int B, int T, int C);
void encoder_backward(double* dwte, double* dwpe, const double* dout, const int32_t* tokens, int B, int T, int C);

// out[N,C] = (x - mean) * rstd * w + b per row; mean[N], rstd[N] saved for backward (eps 1e-5).
void layernorm_forward(double* out, double* mean, double* rstd, const double* x, const double* w, const double* b,
                       int N, int C);
void layernorm_backward(double* dx, double* dw, double* db, const double* dout, const double* x, const double* w,
                        const double* mean, const double* rstd, int N, int C);

// out[N,OC] = x[N,C] @ w[OC,C]^T + bias[OC] (bias may be null)
void matmul_forward(double* out, const double* x, const double* w, const double* bias, int N, int C, int OC);
// dbias may be null.
void matmul_backward(double* dx, double* dw, double* dbias, const double* dout, const double* x, const double* w, int N,
                     int C, int OC);

// qkv[B,T,3C] (q, k, v each C, heads of C/NH) -> out[B,T,C]; att[B,NH,T,T] keeps the softmax for
// backward. Causal: position t attends to 0..t, scaled by 1/sqrt(C/NH).
void attention_forward(double* out, double* att, const double* qkv, int B, int T, int C, int NH);
void attention_backward(double* dqkv, const double* dout, const double* qkv, const double* att, int B, int T, int C,
                        int NH);

// GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void gelu_forward(double* out, const double* x, size_t n);
void gelu_backward(double* dx, const double* dout, const double* x, size_t n);

// Mean cross-entropy over N positions of softmax(logits[N,V]) against targets[N]; probs[N,V]
// saved. Returns the loss. Backward: dlogits = (probs - onehot) * dloss / N.
double crossentropy_forward(double* probs, const double* logits, const int32_t* targets, int N, int V);
void crossentropy_backward(double* dlogits, const double* probs, const int32_t* targets, double dloss, int N, int V);

}  // namespace strata::reference
