// Reference Adam / AdamW and gradient norm: plain scalar loops in double precision, written for
// clarity, following torch.optim.Adam / AdamW. Tests and benchmarks compare the optimised kernels
// against these; nothing in the library's hot path calls them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/kernel_types.h"

namespace strata::reference {

struct AdamRefHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double grad_scale = 1.0;
};

// Decodes element i of a gradient buffer of `dtype` to double (exactly).
double load_as_double(const void* data, DType dtype, size_t i);

// One Adam step number `step` (1 for the first) on state p, m, v [n] in double; grads [n] of
// grad_dtype are multiplied by grad_scale first.
void adam_step_ref(kernels::AdamMode mode, bool bias_correction, int64_t step, const AdamRefHyper& h, double* p,
                   double* m, double* v, const void* grads, DType grad_dtype, size_t n);

// Sum of squares of [n] elements of dtype, sequentially in double.
double sumsq_ref(const void* data, DType dtype, size_t n);

}  // namespace strata::reference
