// GPU Lion and Adagrad: the same updates as the CPU kernels (kernels/cpu/simd_body.inc), for
// optimizer state that stays on the device. Pointers in the tensor are device pointers.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels::cuda {

// Enqueue one update of `t` on `stream`; return launch errors. Asynchronous.
Status lion_update(const LionCoeffs& c, const OptTensor& t, cudaStream_t stream);
Status adagrad_update(const AdagradCoeffs& c, const OptTensor& t, cudaStream_t stream);

}  // namespace strata::kernels::cuda
