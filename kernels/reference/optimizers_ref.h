// Reference Lion and Adagrad: plain scalar loops in double precision, following the papers /
// torch.optim.Adagrad, for the tests to compare the optimised kernels against.
#pragma once

#include <cstddef>
#include <cstdint>

#include "src/common/dtype.h"

namespace strata::reference {

struct LionRefHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, weight_decay = 0.0, grad_scale = 1.0;
};

// One Lion step on p, m [n]: p = p * (1 - lr * wd) - lr * sign(beta1 * m + (1 - beta1) * g),
// m = beta2 * m + (1 - beta2) * g, with g = grad * grad_scale. Where |beta1 * m + (1 - beta1) * g|
// is below `tie` (a float kernel may round it to either sign), sets tied[i] (when tied is not null).
void lion_step_ref(const LionRefHyper& h, double* p, double* m, const void* grads, DType grad_dtype, size_t n,
                   double tie = 0.0, bool* tied = nullptr);

struct AdagradRefHyper {
  double lr = 1e-2, eps = 1e-10, weight_decay = 0.0, grad_scale = 1.0;
};

// One Adagrad step on p, s [n]: g = grad * grad_scale + wd * p; s += g * g; p -= lr * g / (sqrt(s) + eps).
void adagrad_step_ref(const AdagradRefHyper& h, double* p, double* s, const void* grads, DType grad_dtype, size_t n);

}  // namespace strata::reference
