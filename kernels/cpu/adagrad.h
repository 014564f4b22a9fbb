// CPU Adagrad (torch.optim.Adagrad with lr_decay 0 and a zero initial sum; DeepSpeed's CPU
// Adagrad): one fp32 accumulator of squared gradients per param, L2 weight decay. Fused gradient
// scale and bit16 copy as Adam's; parallel with oneTBB, vectorised per ISA.
#pragma once

#include <span>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

struct AdagradHyper {
  float lr = 1e-2f;
  float eps = 1e-10f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
};

// lr, weight_decay >= 0 and finite; eps > 0 and finite; grad_scale > 0 and finite.
Status validate_adagrad_hyper(const AdagradHyper& h);
AdagradCoeffs make_adagrad_coeffs(const AdagradHyper& h);
// Updates every tensor (state = sum) on the calling thread's task arena; no argument checks.
bool adagrad_update(const KernelTable& k, const AdagradCoeffs& c, std::span<const OptTensor> tensors);

}  // namespace strata::kernels
