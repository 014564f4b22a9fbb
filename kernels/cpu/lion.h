// CPU Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023; DeepSpeed's CPU
// Lion): one fp32 moment per param, a sign update and decoupled weight decay. Fused gradient
// scale and bit16 copy as Adam's; parallel with oneTBB, vectorised per ISA.
#pragma once

#include <span>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

struct LionHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
};

// lr, weight_decay >= 0 and finite; betas in [0, 1); grad_scale > 0 and finite; the message names
// the field and value.
Status validate_lion_hyper(const LionHyper& h);
// decay = 1 - lr * weight_decay in double, rounded once.
LionCoeffs make_lion_coeffs(const LionHyper& h);
// Updates every tensor (state = exp_avg) on the calling thread's task arena; no argument checks.
// False when an updated param is inf or NaN. Results do not depend on the thread count.
bool lion_update(const KernelTable& k, const LionCoeffs& c, std::span<const OptTensor> tensors);

}  // namespace strata::kernels
