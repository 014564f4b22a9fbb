// Reference Adam / AdamW and sum of squares in double precision.
#include "kernels/reference/adam_ref.h"

#include <cmath>

#include "kernels/reference/half.h"

namespace strata::reference {

double load_as_double(const void* data, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return fp16_to_float(static_cast<const uint16_t*>(data)[i]);
  }
  return NAN;
}

void adam_step_ref(kernels::AdamMode mode, bool bias_correction, int64_t step, const AdamRefHyper& h, double* p,
                   double* m, double* v, const void* grads, DType grad_dtype, size_t n) {
  const double t = static_cast<double>(step);
  const double bc1 = bias_correction ? 1.0 - std::pow(h.beta1, t) : 1.0;
  const double bc2 = bias_correction ? 1.0 - std::pow(h.beta2, t) : 1.0;
  for (size_t i = 0; i < n; ++i) {
    double g = load_as_double(grads, grad_dtype, i) * h.grad_scale;
    if (mode == kernels::AdamMode::kAdam) {
      g += h.weight_decay * p[i];
    } else {
      p[i] *= 1.0 - h.lr * h.weight_decay;
    }
    m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
    const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + h.eps;
    p[i] -= (h.lr / bc1) * m[i] / denom;
  }
}

double sumsq_ref(const void* data, DType dtype, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double x = load_as_double(data, dtype, i);
    s += x * x;
  }
  return s;
}

}  // namespace strata::reference
