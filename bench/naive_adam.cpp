// The plain scalar Adam loop (see naive_adam.h). Built with the project's ordinary flags.
#include "naive_adam.h"

#include <cmath>
#include <cstdint>

#include "kernels/reference/half.h"

namespace strata::bench {

void naive_adam(const kernels::AdamCoeffs& c, const kernels::AdamTensor& t) {
  for (size_t i = 0; i < t.count; ++i) {
    float g;
    if (t.grad_dtype == DType::kF32) {
      g = static_cast<const float*>(t.grads)[i];
    } else if (t.grad_dtype == DType::kBF16) {
      g = reference::bf16_to_float(static_cast<const uint16_t*>(t.grads)[i]);
    } else {
      g = reference::fp16_to_float(static_cast<const uint16_t*>(t.grads)[i]);
    }
    g *= c.grad_scale;
    float p = t.params[i];
    if (c.mode == kernels::AdamMode::kAdam) {
      g += c.weight_decay * p;
    } else {
      p *= c.decay;
    }
    const float m = c.beta1 * t.exp_avg[i] + c.one_minus_beta1 * g;
    const float v = c.beta2 * t.exp_avg_sq[i] + c.one_minus_beta2 * g * g;
    p -= c.step_size * m / (std::sqrt(v) * c.inv_sqrt_bc2 + c.eps);
    t.params[i] = p;
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    if (t.params_out != nullptr) {
      static_cast<uint16_t*>(t.params_out)[i] =
          t.out_dtype == DType::kBF16 ? reference::float_to_bf16(p) : reference::float_to_fp16(p);
    }
  }
}

}  // namespace strata::bench
