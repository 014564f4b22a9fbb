// Plain data shared by the CPU kernels of every ISA: optimizer coefficients, tensor views and the table
// of kernel entry points one ISA provides. No functions here: the AVX2 / AVX-512 translation units
// include this header and must not emit inline code that baseline code could link to.
#pragma once

#include <cstddef>
#include <cstdint>

#include "src/common/dtype.h"

namespace strata::kernels {

enum class AdamMode : int {
  kAdam = 0,   // L2 penalty: grad += weight_decay * param (torch.optim.Adam)
  kAdamW = 1,  // decoupled: param *= 1 - lr * weight_decay (torch.optim.AdamW)
};

// Per-step constants, computed once in double and rounded to float (see make_adam_coeffs).
struct AdamCoeffs {
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.999f;
  float one_minus_beta2 = 0.001f;
  float eps = 1e-8f;
  float step_size = 1e-3f;    // lr / (1 - beta1^t), or lr without bias correction
  float inv_sqrt_bc2 = 1.0f;  // 1 / sqrt(1 - beta2^t), or 1
  float weight_decay = 0.0f;  // kAdam: the L2 factor added to the gradient
  float decay = 1.0f;         // kAdamW: 1 - lr * weight_decay
  float grad_scale = 1.0f;    // gradients are multiplied by this first (1/loss scale x clip coef)
  AdamMode mode = AdamMode::kAdamW;
};

// One tensor of an Adam step. params, exp_avg, exp_avg_sq: fp32 [count], updated in place.
// grads: [count] of grad_dtype, read only. params_out: [count] of out_dtype (bf16 or fp16),
// written with the updated params rounded to nearest even; nullptr for no copy.
struct AdamTensor {
  float* params = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  const void* grads = nullptr;
  DType grad_dtype = DType::kF32;
  void* params_out = nullptr;
  DType out_dtype = DType::kBF16;
  size_t count = 0;
};

// Lion (Chen et al. 2023; DeepSpeed's CPU Lion), per-step constants: with g = grad * grad_scale,
// p = p * decay - lr * sign(beta1 * m + (1 - beta1) * g), then m = beta2 * m + (1 - beta2) * g.
struct LionCoeffs {
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.999f;
  float one_minus_beta2 = 0.001f;
  float lr = 1e-3f;
  float decay = 1.0f;  // 1 - lr * weight_decay (decoupled)
  float grad_scale = 1.0f;
};

// Adagrad (torch.optim.Adagrad with lr_decay 0 and a zero initial accumulator; DeepSpeed's CPU
// Adagrad): g = grad * grad_scale + weight_decay * p, sum += g * g, p -= lr * g / (sqrt(sum) + eps).
struct AdagradCoeffs {
  float lr = 1e-2f;
  float eps = 1e-10f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
};

// One tensor of an optimizer with one fp32 state array per param (Lion's exp_avg, Adagrad's sum):
// params and state fp32 [count], updated in place; grads and params_out as in AdamTensor.
struct OptTensor {
  float* params = nullptr;
  float* state = nullptr;
  const void* grads = nullptr;
  DType grad_dtype = DType::kF32;
  void* params_out = nullptr;
  DType out_dtype = DType::kBF16;
  size_t count = 0;
};

// A read-only tensor: data is [count] of dtype.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  size_t count = 0;
};

// The kernels of one ISA. Each works on elements [begin, end) of its tensor, so a caller can split
// a tensor across threads anywhere: every element is computed the same way wherever it falls
// (tails are padded to a full vector, never handled by different scalar code).
struct KernelTable {
  const char* name;
  // One Adam update of elements [begin, end); false when an updated param is inf or NaN.
  bool (*adam)(const AdamCoeffs& c, const AdamTensor& t, size_t begin, size_t end);
  // Sum of squares of elements [begin, end), accumulated in double.
  double (*sumsq)(const TensorView& t, size_t begin, size_t end);
  // dst[i] = float(src[i]) * scale.
  void (*to_fp32)(const TensorView& src, float scale, float* dst, size_t begin, size_t end);
  // dst[i] = round-to-nearest-even(src[i]) in dtype (bf16 or fp16; fp32 copies).
  void (*from_fp32)(const float* src, DType dtype, void* dst, size_t begin, size_t end);
  // Benchmark limit: moves exactly the bytes an Adam update of t moves (reads p, g, m, v; writes
  // p, m, v and the bit16 copy) with trivial arithmetic.
  void (*stream_mix)(const AdamTensor& t, size_t begin, size_t end);
  // acc[i] += float(grad[i]) * scale: gradient accumulation across micro-batches.
  void (*accumulate)(float* acc, const TensorView& grad, float scale, size_t begin, size_t end);
  // Benchmark limit of sumsq: reads the same bytes and adds them in float lanes.
  double (*stream_read)(const TensorView& t, size_t begin, size_t end);
  // One Lion / Adagrad update of elements [begin, end); false when an updated param is inf or NaN.
  bool (*lion)(const LionCoeffs& c, const OptTensor& t, size_t begin, size_t end);
  bool (*adagrad)(const AdagradCoeffs& c, const OptTensor& t, size_t begin, size_t end);
  // Benchmark limit of a one-state optimizer: reads p, g, state; writes p, state and the bit16 copy.
  void (*stream_mix1)(const OptTensor& t, size_t begin, size_t end);
};

}  // namespace strata::kernels
