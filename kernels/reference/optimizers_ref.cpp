// Reference Lion and Adagrad in double precision.
#include "kernels/reference/optimizers_ref.h"

#include <cmath>

#include "kernels/reference/adam_ref.h"

namespace strata::reference {

void lion_step_ref(const LionRefHyper& h, double* p, double* m, const void* grads, DType grad_dtype, size_t n,
                   double tie, bool* tied) {
  for (size_t i = 0; i < n; ++i) {
    const double g = load_as_double(grads, grad_dtype, i) * h.grad_scale;
    const double c = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    if (tied != nullptr && std::fabs(c) < tie) tied[i] = true;
    const double dir = c > 0 ? 1.0 : (c < 0 ? -1.0 : 0.0);
    p[i] = p[i] * (1.0 - h.lr * h.weight_decay) - h.lr * dir;
    m[i] = h.beta2 * m[i] + (1.0 - h.beta2) * g;
  }
}

void adagrad_step_ref(const AdagradRefHyper& h, double* p, double* s, const void* grads, DType grad_dtype, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double g = load_as_double(grads, grad_dtype, i) * h.grad_scale + h.weight_decay * p[i];
    s[i] += g * g;
    p[i] -= h.lr * g / (std::sqrt(s[i]) + h.eps);
  }
}

}  // namespace strata::reference
